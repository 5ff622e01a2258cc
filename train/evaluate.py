"""Evaluation on held-out prompts: greedy pass@1, sampled pass@k / mean@k, per-reward means, lengths.

Metrics (all are means over prompts of a per-prompt value, so shards of a prompt set combine exactly, see below):

| key | per-prompt value |
|---|---|
| `eval/pass@1` | 1 if the greedy completion scores >= 1 on `accuracy_reward`, else 0 |
| `eval/pass@K` | unbiased pass@K estimate from n = K samples (Chen et al. 2021, eq. 1): 1 if any of the K is correct |
| `eval/mean@K` | fraction of the K samples that are correct (= the unbiased pass@1 estimate from sampling) |
| `eval/reward`, `eval/rewards/NAME` | weighted total reward / each reward's unweighted score of the greedy completion |
| `eval/completion_length`, `eval/truncated_fraction` | greedy completion tokens (incl. EOS); 1 if it hit the length cap |

`eval/pass@K` and `eval/mean@K` are present only when k > 1 (K is the number, e.g. `eval/pass@4`).
`eval/num_prompts` is the number of prompts evaluated.

Combining shards (one per rank): every metric is `sums[key] / num_prompts`, so all-reduce-sum the vector of
`EvalResult.sums` values and `num_prompts`, then call `metrics_from_sums`. The result equals evaluating the union of the
shards on one process, given the same completions; it does not depend on how prompts were split (shard sizes may differ,
except with `synced_gpus`, see `evaluate`). Float64 sums of 0/1 values are exact.

CLI `thinkrl eval` (also `python -m train.evaluate`; one process, nothing distributed): a saved model (any `--model`
form of train/model_source.py: HF directory, .gguf file, run directory, checkpoint) on the config's eval: section;
the flags override eval.split, eval.limit, eval.k and eval.batch_size, and eval.source=SOURCE another prompt set:
    thinkrl eval --model runs/quickstart --config configs/quickstart.yaml [--split test] [--k 4] [--limit 200] \\
        [eval.source=data_out/arithmetic_eval.jsonl] [--output eval.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from rewards.combine import is_correct
from train.cli_args import CommandParser, add_config_arguments, print_error, program
from train.files import write_atomic
from train.rollout import SamplingParams, generate_rollouts

if TYPE_CHECKING:
    from rewards import RewardCombiner

PREFIX = "eval/"


@dataclass
class EvalResult:
    metrics: dict[str, float]  # eval/... -> mean over this call's prompts (metrics_from_sums(sums, num_prompts))
    samples: list[dict]  # the first `num_samples` greedy completions: prompt, completion, reward, correct, each reward
    sums: dict[str, float]  # eval/... -> sum over prompts of the per-prompt value; all-reduce these to combine ranks
    num_prompts: int  # B, the prompts this call evaluated and could judge
    per_prompt: dict[str, list[float]] = field(default_factory=dict)  # eval/... -> [B] per-prompt values, prompt order
    num_not_applicable: int = 0  # prompts left out because a reward could not judge them (e.g. an unusable gold)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Chen et al. 2021, "Evaluating Large Language Models Trained on Code", arXiv:2107.03374, eq. 1, computed as the
    paper's numerically stable product 1 - prod_{i=n-c+1}^{n} (1 - k/i) (its Figure 3), which avoids huge binomials.

    >>> pass_at_k(5, 2, 2)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    0.7
    """
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def prompt_metrics(
    *,
    greedy_correct: list[bool],
    greedy_total: list[float],
    greedy_rewards: dict[str, list[float]],
    greedy_lengths: list[int],
    greedy_truncated: list[bool],
    sampled_correct: list[list[bool]] | None,
    samples_per_prompt: int = 0,
) -> dict[str, list[float]]:
    """Per-prompt values of every metric. Greedy lists are [B]; `sampled_correct` is [B][n] (None: no sampling).

    With n samples, pass@n and mean@n are reported (here n = k)."""
    per_prompt = {
        f"{PREFIX}pass@1": [float(c) for c in greedy_correct],
        f"{PREFIX}reward": [float(r) for r in greedy_total],
        **{f"{PREFIX}rewards/{name}": [float(v) for v in values] for name, values in greedy_rewards.items()},
        f"{PREFIX}completion_length": [float(n) for n in greedy_lengths],
        f"{PREFIX}truncated_fraction": [float(t) for t in greedy_truncated],
    }
    if sampled_correct is not None:
        n = len(sampled_correct[0]) if sampled_correct else samples_per_prompt  # no prompt: the same keys, empty
        if any(len(row) != n for row in sampled_correct):
            raise ValueError("every prompt needs the same number of samples")
        if n > 1:
            per_prompt[f"{PREFIX}pass@{n}"] = [pass_at_k(n, sum(row), n) for row in sampled_correct]
            per_prompt[f"{PREFIX}mean@{n}"] = [sum(row) / n for row in sampled_correct]
    return per_prompt


def sum_per_prompt(per_prompt: dict[str, list[float]]) -> tuple[dict[str, float], int]:
    """(sums over prompts, number of prompts); the form that adds up across ranks."""
    counts = {len(values) for values in per_prompt.values()}
    if len(counts) > 1:
        raise ValueError(f"per-prompt lists differ in length: {sorted(counts)}")
    return {key: math.fsum(values) for key, values in per_prompt.items()}, counts.pop() if counts else 0


def metrics_from_sums(sums: dict[str, float], num_prompts: int) -> dict[str, float]:
    """Means over prompts, plus eval/num_prompts. Pass sums and counts all-reduced over ranks to get global metrics."""
    if num_prompts <= 0:
        raise ValueError("no prompts were evaluated")
    return {**{key: value / num_prompts for key, value in sums.items()}, f"{PREFIX}num_prompts": float(num_prompts)}


def _chunks(n: int, size: int) -> list[range]:
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def _generate(model, tokenizer, prompt_ids, *, greedy: bool, num_generations: int, batch_size: int, desc: str,
              show_progress: bool, **generation_kwargs):
    """Completions for every prompt, `num_generations` each, group-major; `batch_size` rows per generate call."""
    prompts_per_call = max(1, batch_size // num_generations)
    texts, lengths, truncated, tool_calls = [], [], [], []
    for rows in tqdm(_chunks(len(prompt_ids), prompts_per_call), desc=desc, disable=not show_progress, leave=False):
        batch = generate_rollouts(model, tokenizer, [prompt_ids[i] for i in rows], num_generations=num_generations,
                                  do_sample=not greedy, **generation_kwargs)
        texts += batch.completion_texts
        lengths += batch.completion_lengths.tolist()
        truncated += batch.truncated.tolist()
        tool_calls += batch.tool_calls or []
    return texts, lengths, truncated, (tool_calls or None)


def _score(combiner, prompts, columns, texts, lengths, num_generations, tool_calls=None):
    """RewardCombiner output for completions [B*G] of prompts [B] with per-prompt `columns` (repeated G times)."""
    repeated = {name: [v for v in values for _ in range(num_generations)] for name, values in columns.items()}
    repeated["completion_length"] = lengths  # length-shaping rewards read it, as in training
    if tool_calls is not None:  # with rollout.tools, as in training
        repeated["tool_calls"] = tool_calls
    return combiner(texts, [p for p in prompts for _ in range(num_generations)], repeated)


@torch.no_grad()
def evaluate(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    prompts: list[str],
    columns: dict[str, list],
    combiner: RewardCombiner,
    *,
    accuracy_reward: str,
    k: int,
    sampling: SamplingParams,
    batch_size: int,
    device,
    seed: int = 0,
    num_samples: int = 4,
    show_progress: bool = False,
    synced_gpus: bool = False,
) -> EvalResult:
    """Evaluate `model` on B rendered `prompts` (this rank's shard). The model is left in the train/eval mode it had.

    Args:
        prompt_ids: [B] token ids of the prompts (the `prompt_ids` column of `train.builders.load_prompts`, made by
            data/prompts.py: the same tokenisation as in training).
        prompts: [B] the rendered prompt strings (the `text` column), handed to the rewards and the samples.
        columns: dataset columns for the rewards, each a list of B values (answer, numbers, ...; not `text`).
        combiner: scores completions; `accuracy_reward` is one of its reward names, and a completion is correct when
            that reward's score is >= 1 (the trainer's `accuracy` rule).
        k: samples per prompt for pass@k / mean@k (n = k); k <= 1 skips sampling.
        sampling: max_completion_length for both passes; temperature, top-p and top-k for the k samples (the greedy
            pass ignores them).
        batch_size: completions (rows) per `generate` call, for greedy and sampled passes alike.
        seed: sampling runs under `torch.random.fork_rng` seeded with this, so evaluation is reproducible and leaves
            the caller's RNG (the training sampler's) untouched. Give each rank its own seed if shards should not
            share random streams.
        synced_gpus: ZeRO-3 without gathered weights: ranks generate in lock-step, so every rank must make the same
            number of `generate` calls; give every rank the same number of prompts.
    """
    names = [spec.name for spec in combiner.specs]
    if accuracy_reward not in names:
        raise ValueError(f"accuracy_reward {accuracy_reward!r} is not one of the combiner's rewards {names}")
    if not prompts:
        raise ValueError("evaluate needs at least one prompt")
    if len(prompt_ids) != len(prompts):
        raise ValueError(f"{len(prompt_ids)} prompt_ids for {len(prompts)} prompts")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for name, values in columns.items():
        if len(values) != len(prompts):
            raise ValueError(f"column {name!r} has {len(values)} values for {len(prompts)} prompts")
    device = torch.device(device)
    generation_kwargs = dict(sampling=sampling, device=device, synced_gpus=synced_gpus, batch_size=batch_size,
                             show_progress=show_progress)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        texts, lengths, truncated, tool_calls = _generate(model, tokenizer, prompt_ids, greedy=True, num_generations=1,
                                              desc="eval greedy", **generation_kwargs)
        sampled = None
        if k > 1:
            sampled = _generate(model, tokenizer, prompt_ids, greedy=False, num_generations=k, desc=f"eval pass@{k}",
                                **generation_kwargs)

    greedy = _score(combiner, prompts, columns, texts, lengths, 1, tool_calls)
    greedy_correct = [is_correct(score) for score in greedy.per_reward[accuracy_reward]]
    sampled_correct = None
    if sampled is not None:
        s_texts, s_lengths, _, s_calls = sampled
        scores = _score(combiner, prompts, columns, s_texts, s_lengths, k, s_calls).per_reward[accuracy_reward]
        sampled_correct = [[is_correct(score) for score in scores[b * k : (b + 1) * k]] for b in range(len(prompts))]

    # A prompt that a reward could not judge (its gold answer is unusable: the reward said None) is neither right nor
    # wrong: it is left out of every mean and counted instead.
    judged = [i for i, ok in enumerate(greedy.applicable) if ok]
    pick = lambda values: [values[i] for i in judged]  # noqa: E731
    per_prompt = prompt_metrics(
        greedy_correct=pick(greedy_correct), greedy_total=pick(greedy.total),
        greedy_rewards={name: pick(values) for name, values in greedy.per_reward.items()},
        greedy_lengths=pick(lengths), greedy_truncated=pick(truncated),
        sampled_correct=pick(sampled_correct) if sampled_correct is not None else None, samples_per_prompt=k,
    )
    sums, num_prompts = sum_per_prompt(per_prompt)
    samples = [
        {"prompt": prompts[i], "completion": texts[i], "reward": greedy.total[i], "correct": greedy_correct[i],
         **{name: values[i] for name, values in greedy.per_reward.items()},
         **({"tool_calls": tool_calls[i]} if tool_calls is not None else {})}
        for i in range(min(num_samples, len(prompts)))
    ]
    return EvalResult(metrics=metrics_from_sums(sums, num_prompts) if num_prompts else {}, samples=samples, sums=sums,
                      num_prompts=num_prompts, per_prompt=per_prompt, num_not_applicable=len(prompts) - len(judged))


# ---------------------------------------------------------------------------------------------------------------------
# CLI: evaluate a saved checkpoint alone.


COMMAND = "eval"
_FROM_EVAL_SECTION = {"split": "eval.split", "limit": "eval.limit", "k": "eval.k", "batch_size": "eval.batch_size"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from train.model_source import MODEL_HELP

    parser = CommandParser(
        COMMAND,
        description="Evaluate a model on the config's held-out set (its eval: section), prompted with its data "
        "template and scored by its rewards: greedy pass@1, sampled pass@k and mean@k at the rollout section's "
        "temperature, top_p, top_k and max_completion_length. Each eval setting comes from, first to last: its flag, "
        "a `key.sub=value` override, the config's eval: section (source, split, limit, k, batch_size), the built-in "
        "default. The prompts are eval.source; evaluate another set with eval.source=SOURCE.",
    )
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    add_config_arguments(parser, config_help="YAML experiment file: its eval, data (template, columns), rewards and "
                         "rollout sections")
    parser.add_argument("--split", default=None, help="dataset split (default: eval.split)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate at most this many prompts (default: eval.limit)")
    parser.add_argument("--k", type=int, default=None, help="samples per prompt for pass@k and mean@k; 1 skips sampling "
                        "(default: eval.k)")
    parser.add_argument("--batch-size", type=int, default=None, help="completions per generate call (default: eval.batch_size)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (default: the config's seed)")
    parser.add_argument("--num-samples", type=int, default=4, help="greedy completions written to the JSON")
    parser.add_argument("--output", default=None, help="write metrics, samples and per-prompt values here as JSON")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    return parser.parse_intermixed_args(argv)


def eval_overrides(args: argparse.Namespace) -> list[str]:
    """The config overrides, then the eval flags given as overrides of the eval: section (so they win)."""
    flags = [f"{key}={getattr(args, name)}" for name, key in _FROM_EVAL_SECTION.items() if getattr(args, name) is not None]
    return [*args.overrides, *flags]


def run(args: argparse.Namespace) -> dict:
    """Load config, model, data and rewards as the trainer does, evaluate, print a table; returns the JSON record."""
    from train.builders import build_rewards, load_prompts, read_prompt_rows
    from train.distributed import local_device
    from train.settings import sampling_params
    from train.config import ConfigError, load_config
    from train.model_source import load_model, resolve_model

    source = resolve_model(args.model)  # before any heavy loading: a typo fails at once
    overrides = eval_overrides(args)
    cfg = load_config(args.config, overrides)
    if cfg.eval.source is None:
        raise ConfigError(f"eval.source: {args.config} has no held-out set to evaluate; name one with eval.source=SOURCE")
    combiner, _, accuracy_reward = build_rewards(cfg)
    rows = read_prompt_rows(cfg.data, source=cfg.eval.source, split=cfg.eval.split, limit=cfg.eval.limit, key="eval.source")
    model, tokenizer = load_model(source, dtype=cfg.model.dtype, attn_implementation=cfg.model.attn_implementation,
                                  trust_remote_code=cfg.model.trust_remote_code)
    device = local_device()
    model.to(device)
    dataset, dropped = load_prompts(cfg.data, tokenizer, rows, source=cfg.eval.source, min_prompts=1, key="eval.source")
    rows = dataset.to_dict()
    prompts, prompt_ids = rows.pop("text"), rows.pop("prompt_ids")
    k = cfg.eval.k
    seed = cfg.seed if args.seed is None else args.seed
    print(f"{program(COMMAND)}: {source.label}: {len(prompts)} prompts from {cfg.eval.source} (split {cfg.eval.split}; "
          f"{dropped} over max_prompt_length dropped) | k={k} | {device}", flush=True)
    with combiner:
        result = evaluate(
            model, tokenizer, prompt_ids, prompts, rows, combiner, accuracy_reward=accuracy_reward, k=k,
            sampling=sampling_params(cfg), batch_size=cfg.eval.batch_size, device=device,
            seed=seed, num_samples=args.num_samples,
            show_progress=args.progress,
        )
    width = max(len(key) for key in result.metrics)
    for key, value in result.metrics.items():
        print(f"  {key:<{width}}  {value:.4f}")
    return {
        "model": source.label, "config": args.config, "overrides": overrides, "source": cfg.eval.source,
        "split": cfg.eval.split, "k": k, "seed": seed, "accuracy_reward": accuracy_reward, "metrics": result.metrics,
        "samples": result.samples, "per_prompt": result.per_prompt,
    }


def main(argv: list[str] | None = None) -> int:
    """`thinkrl eval` (also `python -m train.evaluate`). Bad input (config, model path, data) exits 2 with one
    `thinkrl eval: error:` line."""
    args = parse_args(argv)
    from train.config import ConfigError
    from train.model import ModelLoadError

    try:
        record = run(args)
    except (ConfigError, ModelLoadError) as exc:
        return print_error(COMMAND, str(exc))
    if args.output is not None:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, json.dumps(record, indent=2) + "\n")
        print(f"{program(COMMAND)}: wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
