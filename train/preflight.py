"""`thinkrl preflight --config X.yaml [key.sub=value ...]` (also `python -m train.preflight`): the reward preflight alone,
with its full report.

Loads the config's model, data and rewards exactly as the trainer does (train/builders.py), then

1. the gold check: every training and eval row's gold answer written as a perfect completion in the configured
   template, scored by every reward; counts of rows scoring 1, below 1 and not applicable on the accuracy reward, a
   few examples of each kind that is not 1, one perfect completion with every reward's score, each reward's mean;
2. the sample check: a few completions sampled from the configured model, each with every reward's score.

Exits 2 with one `thinkrl preflight: error:` line when more than `rewards.preflight_max_bad_fraction` of a split's
rows cannot score 1 on a built-in accuracy reward (train/preflight_checks.py explains how completions are written and
why; for a custom accuracy reward it warns). The trainer runs the same checks at start (unless
`rewards.preflight=false`) and prints two summary lines; this command ignores that switch. With an `sft` section the
trainer samples from the fine-tuned policy; this command samples from `model` before SFT.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

from train.builders import build_policy, build_rewards, gold_check, load_train_and_eval, read_sources, sample_check
from train.cli_args import CommandParser, add_config_arguments, print_error, program
from train.config import ConfigError, load_config
from train.distributed import local_device
from train.model import ModelLoadError
from train.preflight_checks import SAMPLE_GENERATIONS, SAMPLE_MAX_TOKENS, SAMPLE_PROMPTS, VERIFIED_REWARDS, GoldReport, shorten


COMMAND = "preflight"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = CommandParser(
        COMMAND,
        description="Check that the config's rewards can fire on its data (gold answers written as perfect "
        "completions) and show what the initial model's samples score.",
    )
    add_config_arguments(parser)
    parser.add_argument("--samples", type=int, default=SAMPLE_PROMPTS, help="prompts for the sample check (0 skips it)")
    parser.add_argument("--generations", type=int, default=SAMPLE_GENERATIONS, help="completions per sampled prompt")
    parser.add_argument("--max-tokens", type=int, default=SAMPLE_MAX_TOKENS,
                        help="longest sampled completion (capped by rollout.max_completion_length)")
    parser.add_argument("--examples", type=int, default=3, help="rows shown per kind of gold-check failure")
    return parser.parse_intermixed_args(argv)


def _score(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def gold_lines(report: GoldReport) -> list[str]:
    """The full report of one split's gold check."""
    if report.skipped is not None:
        return [f"  {report.split}: {report.skipped}"]
    lines = [f"  {report.split}: {report.num_rows} rows: {report.correct} score 1, {report.below_one} below 1, "
             f"{report.not_applicable} not applicable"]
    for kind, label in (("below_one", "scoring below 1"), ("not_applicable", "not applicable")):
        for e in report.examples[kind]:
            lines.append(f"    {label}: row {e['row']}: answer {shorten(e['answer'], 60)} -> completion "
                         f"{shorten(e['completion'], 80)} -> {_score(e['score'])}")
    if report.example is not None:
        e = report.example
        width = max(map(len, e["scores"]))
        lines.append(f"    row {e['row']}: prompt {shorten(e['prompt'], 50, tail=True)} + completion {shorten(e['completion'], 100)}")
        for name, value in e["scores"].items():
            failed = f"   ({report.failures[name]} calls failed)" if report.failures.get(name) else ""
            lines.append(f"      {name:<{width}}  {_score(value)}   (mean over all rows {_score(report.reward_means[name])}){failed}")
    return lines


def sample_lines(samples: list[dict], max_tokens: int) -> list[str]:
    lines = [f"sample check: {len(samples)} completions of the initial model (at most {max_tokens} tokens each)"]
    for i, s in enumerate(samples):
        cut = " [hit the length cap]" if s["truncated"] else ""
        lines.append(f"  [{i}] prompt {shorten(s['prompt'], 50, tail=True)}")
        lines.append(f"      completion {shorten(s['completion'], 160)}{cut}")
        lines.append("      " + " | ".join(f"{name} {_score(v)}" for name, v in s["scores"].items()))
    names = list(samples[0]["scores"]) if samples else []
    fired = " | ".join(f"{n} {sum(s['scores'][n] != 0 and not math.isnan(s['scores'][n]) for s in samples)}/{len(samples)}" for n in names)
    lines.append(f"  non-zero: {fired}")
    return lines


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    combiner, _, accuracy_reward = build_rewards(cfg)
    sources = read_sources(cfg)  # unreadable data stops the check before the model loads
    model, tokenizer = build_policy(cfg)
    train_set, dropped, eval_rows, _ = load_train_and_eval(cfg, tokenizer, rank=0, world=1, sources=sources)
    evaluated = f"{len(eval_rows['text'])} eval rows" if eval_rows is not None else "no eval set"
    print(f"{program(COMMAND)}: {args.config} | {len(train_set)} training rows ({dropped} over max_prompt_length "
          f"dropped), {evaluated} | accuracy reward {accuracy_reward} | "
          f"template {cfg.data.template}", flush=True)
    with combiner:
        reports, failure = gold_check(cfg, tokenizer, train_set, eval_rows, combiner, accuracy_reward, num_examples=args.examples)
        print("gold check: each row's gold answer written as a perfect completion, scored by every reward")
        for report in reports:
            print("\n".join(gold_lines(report)))
        if args.samples > 0:
            device = local_device()
            model.to(device)
            samples = sample_check(cfg, model, tokenizer, train_set, combiner, device, num_prompts=args.samples,
                                   num_generations=args.generations, max_tokens=args.max_tokens)
            print("\n".join(sample_lines(samples, min(cfg.rollout.max_completion_length, args.max_tokens))), flush=True)
    if failure is not None and accuracy_reward in VERIFIED_REWARDS:
        return print_error(COMMAND, failure)
    if failure is not None:  # as the trainer: a custom or shaping reward's perfect completion is a guess
        print(f"{program(COMMAND)}: warning: {failure} (not stopping: the perfect completion of {accuracy_reward} is a guess)",
              file=sys.stderr, flush=True)
    print(f"{program(COMMAND)}: ok (rewards.preflight_max_bad_fraction={cfg.rewards.preflight_max_bad_fraction:g})", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`thinkrl preflight` (also `python -m train.preflight`). Bad input, or a gold check that fails, exits 2 with one
    `thinkrl preflight: error:` line."""
    args = parse_args(argv)
    try:
        return run(args)
    except (ConfigError, ModelLoadError) as exc:
        return print_error(COMMAND, str(exc))


if __name__ == "__main__":
    sys.exit(main())
