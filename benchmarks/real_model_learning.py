"""GRPO on a real pretrained model, measured: configs/smollm2_basic_arithmetic.yaml end to end for a few seeds.

    python benchmarks/real_model_learning.py                  # seeds 0,1,2 one after the other, <= 30 min each on 2 cores
    python benchmarks/real_model_learning.py --seeds 0 --out /tmp/r.md max_steps=10

For each seed: wall time of `python -m train --config configs/smollm2_basic_arithmetic.yaml seed=S` (the whole process:
imports, dequantising the GGUF file, both held-out evaluations, GRPO, plots), held-out greedy accuracy on the eval set
(reasoning-gym's own verifier) before and after training, the gain in points, whether the bar holds (>= +20 points in
<= 30 minutes), and where the time went (model load, evaluations, rollout, rewards, update). The seed changes sampling
and the order of training prompts; the task's data sets are fixed by the config. Writes
benchmarks/results_real_model.md and copies seed 0's accuracy plot next to it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
from pathlib import Path

from quickstart_learning import ROOT, run_seed

CONFIG = ROOT / "configs" / "smollm2_basic_arithmetic.yaml"
BAR_POINTS, BAR_SECONDS = 0.20, 30 * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/thinkrl-real-model-bench"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_real_model.md")
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides, as the trainer takes them")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    shutil.rmtree(args.workdir, ignore_errors=True)
    results = []
    for seed in seeds:
        load = os.getloadavg()[0]
        r = {**run_seed(seed, args.workdir, args.overrides, config=args.config), "load": load}
        r["gain"] = r["after_grpo"] - r["after_sft"]
        r["bar"] = r["gain"] >= BAR_POINTS and r["wall_s"] <= BAR_SECONDS
        results.append(r)
        print(f"seed {seed}: {r['wall_s']:.0f} s, held-out greedy accuracy {r['after_sft']:.3f} -> {r['after_grpo']:.3f} "
              f"({100 * r['gain']:+.1f} pts; {'meets' if r['bar'] else 'MISSES'} the bar)", flush=True)

    extra = "".join(" " + o for o in args.overrides)
    config = args.config.resolve().relative_to(ROOT)
    steps = [step for step, _ in results[0]["evals"]]
    lines = [
        "# GRPO on a real model: SmolLM2-135M-Instruct on reasoning-gym's basic_arithmetic",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} (UTC); machine: {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()}, CPU only; Python {platform.python_version()}",
        f"- Command: `python benchmarks/real_model_learning.py --seeds {args.seeds}{extra}`, i.e. per seed "
        f"`python -m train --config {config}{extra} seed=S`",
        f"- Bar (issue 11): held-out greedy accuracy (eval/pass@1 on the config's eval set) up by >= {100 * BAR_POINTS:.0f} "
        f"points, in <= {BAR_SECONDS // 60} minutes wall time for the whole process on 2 CPU cores.",
        "- Wall time: the whole process (imports, GGUF dequantisation, every evaluation, GRPO, plots). Phase times are "
        "sums over the steps of the run's own `time/*` metrics. The 1-minute load average at the start is given because "
        "other jobs slow a 2-core machine.",
        "",
        "| seed | wall time | pass@1 before | " + " | ".join(f"step {s}" for s in steps[1:]) + " | gain | bar | "
        "steps | rollout | rewards | update | s/step | train reward first→last 3 | zero-spread groups | load |",
        "|" + "---|" * (12 + len(steps) - 1),
    ]
    for r in results:
        by_step = dict(r["evals"])
        train = r["steps"]
        phase = {name: sum(m.get(f"time/{name}", 0.0) for m in train) for name in ("rollout", "rewards", "update", "step")}
        first = sum(m["reward/mean"] for m in train[:3]) / max(len(train[:3]), 1)
        last = sum(m["reward/mean"] for m in train[-3:]) / max(len(train[-3:]), 1)
        zero = sum(m["zero_std_fraction"] for m in train) / max(len(train), 1)
        lines.append(
            f"| {r['seed']} | {r['wall_s']:.0f} s | {r['after_sft']:.3f} | "
            + " | ".join(f"{by_step.get(s, float('nan')):.3f}" for s in steps[1:])
            + f" | {100 * r['gain']:+.1f} pts | {'yes' if r['bar'] else 'NO'} | {len(train)} | {phase['rollout']:.0f} s | "
            f"{phase['rewards']:.0f} s | {phase['update']:.0f} s | {phase['step'] / max(len(train), 1):.1f} s | "
            f"{first:.3f}→{last:.3f} | {100 * zero:.0f}% | {r['load']:.2f} |"
        )
    report_dir = args.workdir / f"seed{seeds[0]}" / "report"
    if (report_dir / "accuracy.png").is_file():
        shutil.copy(report_dir / "accuracy.png", args.out.parent / f"{args.out.stem}_accuracy.png")
        lines += ["", f"Plot of seed {seeds[0]} (from its run report): `{args.out.stem}_accuracy.png`."]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
