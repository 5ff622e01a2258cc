"""Rejection sampling (DeepSeek-R1 arXiv:2501.12948 §2.3.3): k completions per prompt from a model, scored by the
config's rewards, the ones that pass a keep rule written as JSONL rows that an `sft:` section reads as they are.

    thinkrl sample --config configs/quickstart.yaml --model runs/quickstart \\
        --output traces.jsonl --k 8 --keep correct [--dedup] [--limit 500] [key.sub=value ...]
    torchrun --nproc_per_node 2 -m train.sample ...        # disjoint shards of the prompts, one file in the end

The model is `--model` in any form of train/model_source.py (an HF directory, a .gguf file, a run directory: its
`final_model/`, a checkpoint of a run, an HF Hub name), or, without `--model`, the config's own `model` section.
Prompts come from `data.source` (rendered with the data section's template, tokenised by the one prompt preparation,
data/prompts.py); sampling uses the rollout section (temperature, top_p, top_k, max_completion_length); rewards the
rewards section.

Keep rules (`--keep`): `correct` keeps the samples scoring >= 1 on the accuracy reward (rewards.accuracy_reward, else
the first); `best_of_k` the highest-total sample of each prompt (the first on ties; none if no reward applied);
`all` every sample. `--dedup` drops repeated completion texts of a prompt.

Each prompt is sampled alone, from its own seed (`--seed` x 1000003 + its index), so the rows do not depend on how
prompts are sharded over ranks, batched, or interrupted: a 2-rank run writes the rows of a 1-rank run, and a resumed
run the rows of an uninterrupted one. Progress is kept per rank in `OUTPUT.parts/rank-R.jsonl`, one line per sample
and one `{"done": INDEX}` line per finished prompt, each prompt's lines written in one call and fsynced; a run started
again with the same arguments continues after the prompts marked done (rows of an unfinished prompt are dropped), so
nothing is duplicated or lost. At the end rank 0 writes OUTPUT (rows sorted by prompt and sample index) and prints a
summary: prompts, samples, kept rows, each reward's acceptance rate (score >= 1), tokens per second (also written
to OUTPUT.summary.json). `--exclude SOURCE` (repeatable) skips prompts that appear in SOURCE, e.g. a teacher's
training prompts.

Row: prompt (as in the source: text or chat messages), completion, answer (and data.keep_columns), reward (weighted
total), rewards {name: score}, prompt_index, sample_index, seed, model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from rewards.combine import is_correct
from train.cli_args import CommandParser, add_config_arguments, print_error, program
from train.files import write_atomic

COMMAND = "sample"
KEEP_RULES = ("correct", "best_of_k", "all")
SEED_STRIDE = 1_000_003


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from train.model_source import MODEL_HELP

    parser = CommandParser(COMMAND, description="Rejection sampling: k completions per prompt of data.source from a "
                           "model, scored by the config's rewards; the kept ones (--keep) written as JSONL rows that an "
                           "sft: section reads as they are. Sampling settings: the rollout section. Resumable; "
                           "`torchrun ... -m train.sample` shards the prompts.")
    add_config_arguments(parser, accepts_local_rank=True,
                         config_help="YAML experiment file (data, template, rollout, rewards; model unless --model)")
    parser.add_argument("--output", required=True, help="JSONL file to write the kept rows to")
    parser.add_argument("--model", default=None, help=f"{MODEL_HELP}; default: the config's model section")
    parser.add_argument("--gguf-file", default=None, help="a GGUF file inside the directory --model (the same as "
                        "--model DIR/NAME.gguf)")
    parser.add_argument("--k", type=int, default=8, help="samples per prompt")
    parser.add_argument("--keep", choices=KEEP_RULES, default="correct", help="which samples to write")
    parser.add_argument("--dedup", action="store_true", help="drop repeated completion texts of a prompt")
    parser.add_argument("--limit", type=int, default=None, help="sample at most this many prompts (data.limit)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (default: the config's seed)")
    parser.add_argument("--exclude", action="append", default=[], metavar="SOURCE",
                        help="skip prompts that also appear in SOURCE (a data.source spec; repeatable), e.g. the "
                        "teacher's training prompts, so traces come from prompts it never trained on")
    args = parser.parse_intermixed_args(argv)
    if args.k < 1:
        parser.error(f"--k {args.k}: must be at least 1")
    if args.gguf_file is not None and args.model is None:
        parser.error(f"--gguf-file {args.gguf_file}: needs --model, the directory holding it")
    return args


def keep_samples(totals: list[float], accuracy: list[float], texts: list[str], *, rule: str, dedup: bool) -> list[int]:
    """Indices of the samples of one prompt to keep. totals: weighted totals (NaN where a reward did not apply);
    accuracy: the accuracy reward's scores (NaN where it did not apply).

    >>> keep_samples([1.2, 0.2, 1.2, float("nan")], [1.0, 0.0, 1.0, float("nan")], ["a", "b", "a", "c"], rule="correct", dedup=True)
    [0]
    >>> keep_samples([0.2, 0.7, 0.7], [0.0, 0.0, 0.0], ["a", "b", "c"], rule="best_of_k", dedup=False)
    [1]
    """
    if rule not in KEEP_RULES:
        raise ValueError(f"keep rule must be one of {KEEP_RULES}, got {rule!r}")
    candidates = list(range(len(texts)))
    if dedup:
        seen: set[str] = set()
        candidates = [i for i in candidates if not (texts[i] in seen or seen.add(texts[i]))]
    if rule == "correct":
        return [i for i in candidates if is_correct(accuracy[i])]
    if rule == "best_of_k":
        scored = [i for i in candidates if not math.isnan(totals[i])]
        return [max(scored, key=lambda i: (totals[i], -i))] if scored else []
    return candidates


def _number(value: float) -> float | None:
    """NaN (a reward that did not apply) as null: JSON readers such as pyarrow's reject NaN."""
    return None if math.isnan(value) else value


def read_progress(parts: Path) -> tuple[dict[int, list[dict]], set[int]]:
    """Rows and finished prompt indices in every part file; rows of unfinished prompts are left out, and a last line
    cut short by a kill is ignored."""
    rows: dict[int, list[dict]] = {}
    done: set[int] = set()
    for part in sorted(parts.glob("rank-*.jsonl")):
        for line in part.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the tail of a write interrupted by a kill
            if "done" in record:
                done.add(int(record["done"]))
            else:
                rows.setdefault(int(record["prompt_index"]), []).append(record)
    return {i: r for i, r in rows.items() if i in done}, done


def clean_part(part: Path, done: set[int]) -> None:
    """Rewrite `part` with only the lines of finished prompts (atomically), so appending continues from a clean end."""
    if not part.exists():
        return
    kept = []
    for line in part.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(record.get("done", record.get("prompt_index", -1))) in done:
            kept.append(line)
    write_atomic(part, "".join(f"{line}\n" for line in kept))


def exclude_prompts(cfg, tokenizer, dataset, sources: list[str]):
    """(`dataset` without the prompts that also appear in any of `sources`, how many were dropped). Prompts are
    compared as rendered with the data section's template, as the trainer keeps eval prompts out of training."""
    from train.builders import load_prompts, read_prompt_rows

    seen: set[str] = set()
    for source in sources:
        rows = read_prompt_rows(cfg.data, source=source, split=cfg.data.split, limit=None, key="--exclude")
        seen |= set(load_prompts(cfg.data, tokenizer, rows, source=source, min_prompts=0, key="--exclude")[0]["text"])
    if not seen:
        return dataset, 0
    kept = dataset.filter(lambda row: row["text"] not in seen)
    if len(kept) == 0:
        from train.config import ConfigError

        raise ConfigError(f"--exclude: every prompt of data.source={cfg.data.source} is in {', '.join(sources)}")
    return kept, len(dataset) - len(kept)


def sample(args: argparse.Namespace) -> dict:
    from train.builders import build_policy, build_rewards, load_prompts, read_prompt_rows
    from train.settings import sampling_params
    from train.config import load_config
    from train.distributed import all_reduce_sum, barrier, init_distributed
    from train.model_source import load_model, resolve_model
    from train.rollout import generate_rollouts

    # --model before anything loads, so a typo fails at once; without it, the config's model section.
    model_source = resolve_model(args.model, args.gguf_file) if args.model is not None else None
    overrides = list(args.overrides)
    if args.limit is not None:
        overrides.append(f"data.limit={args.limit}")
    cfg = load_config(args.config, overrides)
    seed = cfg.seed if args.seed is None else args.seed
    dist_info = init_distributed(args.local_rank)
    rank, world = dist_info.rank, dist_info.world_size
    combiner, reward_names, accuracy_reward = build_rewards(cfg)
    source_rows = read_prompt_rows(cfg.data, source=cfg.data.source, split=cfg.data.split, limit=cfg.data.limit, key="data.source")
    if model_source is None:
        model, tokenizer = build_policy(cfg)
    else:
        model, tokenizer = load_model(model_source, dtype=cfg.model.dtype, attn_implementation=cfg.model.attn_implementation,
                                      trust_remote_code=cfg.model.trust_remote_code)
    model.to(dist_info.device).eval()
    dataset, dropped = load_prompts(cfg.data, tokenizer, source_rows, source=cfg.data.source, min_prompts=1, key="data.source")
    dataset, excluded = exclude_prompts(cfg, tokenizer, dataset, args.exclude)
    # A prompt's index is its position among the prepared prompts (the source's order, after data.max_prompt_length
    # and --exclude).
    keep_columns = [c for c in dataset.column_names if c not in ("text", "prompt_ids")]
    columns = dataset.to_dict()
    num_prompts = len(dataset)

    output = Path(args.output)
    parts = output.with_name(output.name + ".parts")
    if rank == 0:
        parts.mkdir(parents=True, exist_ok=True)
    barrier()
    _, done = read_progress(parts)
    barrier()  # every rank has read the progress before any part is rewritten
    my_part = parts / f"rank-{rank}.jsonl"
    clean_part(my_part, done)
    if rank == 0:  # parts of ranks a smaller restart no longer has: only their finished prompts stay
        for part in parts.glob("rank-*.jsonl"):
            if int(part.stem.split("-")[1]) >= world:
                clean_part(part, done)
    todo = [i for i in range(num_prompts) if i not in done][rank::world]
    model_name = model_source.label if model_source is not None else (cfg.model.name_or_path or "model.tiny")
    if dist_info.is_main:
        print(f"{program(COMMAND)}: {num_prompts} prompts from {cfg.data.source} ({dropped} over max_prompt_length dropped; "
              f"{excluded} in --exclude sources skipped; {len(done)} already done) | k={args.k} | keep={args.keep}{' +dedup' if args.dedup else ''} | "
              f"world size {world} | {dist_info.device}", flush=True)

    tokens = kept_count = sampled = 0
    accepted = {name: 0 for name in reward_names}
    start = time.perf_counter()
    sampling = sampling_params(cfg)
    with combiner, open(my_part, "a") as sink:
        progress = tqdm(todo, desc="sample", disable=not dist_info.is_main, dynamic_ncols=True, unit="prompt")
        for index in progress:
            torch.manual_seed(seed * SEED_STRIDE + index)
            batch = generate_rollouts(model, tokenizer, [columns["prompt_ids"][index]], num_generations=args.k,
                                      sampling=sampling, device=dist_info.device)
            row_columns = {name: [columns[name][index]] * args.k for name in keep_columns}
            row_columns["completion_length"] = batch.completion_lengths.tolist()
            if batch.tool_calls is not None:
                row_columns["tool_calls"] = batch.tool_calls
            scored = combiner(batch.completion_texts, [columns["text"][index]] * args.k, row_columns)
            accuracy = scored.per_reward[accuracy_reward]
            keep = keep_samples(scored.total, accuracy, batch.completion_texts, rule=args.keep, dedup=args.dedup)
            lines = []
            for j in keep:
                record = {
                    "prompt": columns["prompt"][index], "completion": batch.completion_texts[j],
                    **{name: columns[name][index] for name in keep_columns if name != "prompt"},
                    "reward": _number(scored.total[j]), "rewards": {name: _number(scored.per_reward[name][j]) for name in reward_names},
                    "prompt_index": index, "sample_index": j, "seed": seed, "model": model_name,
                    **({"tool_calls": batch.tool_calls[j]} if batch.tool_calls is not None else {}),
                }
                lines.append(json.dumps(record))
            lines.append(json.dumps({"done": index}))
            sink.write("".join(f"{line}\n" for line in lines))  # one call per prompt: rows and their done marker
            sink.flush()
            os.fsync(sink.fileno())
            tokens += int(batch.completion_lengths.sum())
            sampled += args.k
            kept_count += len(keep)
            for name in reward_names:
                accepted[name] += sum(1 for value in scored.per_reward[name] if is_correct(value))
            elapsed = time.perf_counter() - start
            progress.set_postfix(kept=kept_count, tok_s=f"{tokens / max(elapsed, 1e-9):.0f}")
    elapsed = time.perf_counter() - start
    counts = all_reduce_sum(torch.tensor([len(todo), sampled, kept_count, tokens, *accepted.values()], dtype=torch.float64,
                                         device=dist_info.device)).tolist()
    barrier()
    summary = {
        "prompts": num_prompts, "prompts_sampled_now": int(counts[0]), "samples_now": int(counts[1]),
        "kept_now": int(counts[2]), "tokens_per_second": counts[3] / max(elapsed, 1e-9),
        "acceptance_rate": {name: counts[4 + i] / max(counts[1], 1) for i, name in enumerate(reward_names)},
    }
    if dist_info.is_main:
        rows, finished = read_progress(parts)
        ordered = [row for i in sorted(rows) for row in sorted(rows[i], key=lambda r: r["sample_index"])]
        write_atomic(output, "".join(json.dumps(row) + "\n" for row in ordered))
        summary.update(kept_rows=len(ordered), prompts_done=len(finished), prompts_excluded=excluded)
        write_atomic(output.with_name(output.name + ".summary.json"), json.dumps(summary, indent=1) + "\n")
        rates = ", ".join(f"{name} {rate:.1%}" for name, rate in summary["acceptance_rate"].items())
        print(f"{program(COMMAND)}: {len(finished)}/{num_prompts} prompts done; {summary['samples_now']} samples this run, "
              f"{summary['kept_now']} kept ({args.keep}); acceptance (score >= 1): {rates}; "
              f"{summary['tokens_per_second']:.0f} tokens/s; {len(ordered)} rows in {output}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    """`thinkrl sample` (also `python -m train.sample`). Bad input exits 2 with one `thinkrl sample: error:` line."""
    args = parse_args(argv)
    from train.config import ConfigError
    from train.distributed import LauncherError, destroy
    from train.model import ModelLoadError

    try:
        sample(args)
        return 0
    except (ConfigError, ModelLoadError, LauncherError) as exc:
        return print_error(COMMAND, str(exc))
    finally:
        destroy()


if __name__ == "__main__":
    sys.exit(main())
