"""The quickstart's learning bar, measured: configs/quickstart.yaml end to end for a few seeds, as the README runs it.

    python benchmarks/quickstart_learning.py                  # seeds 0,1,2 one after the other, ~3 min each on 2 cores
    python benchmarks/quickstart_learning.py --seeds 0 --out /tmp/q.md

For each seed: wall time of `python -m train --config configs/quickstart.yaml seed=S` (the whole process: imports,
model build, SFT, evaluations, GRPO, export, report), the held-out greedy accuracy after SFT (step 0) and after GRPO
(last step), the ratio and the gain in points, and whether the issue's bar holds (after GRPO >= 2x after SFT and >=
+15 points). The seed changes the model init, SFT shuffling and sampling; the data sets are fixed by the config.
Writes benchmarks/results_quickstart.md and copies seed 0's accuracy and summary plots next to it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "quickstart.yaml"


def run_seed(seed: int, workdir: Path, overrides: list[str], config: Path = CONFIG) -> dict:
    """One `python -m train` run; its held-out greedy accuracy before (step 0) and after training, and its timings."""
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "train", "--config", str(config), *overrides, f"seed={seed}", f"output_dir={workdir}",
               f"run_name=seed{seed}"]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"seed {seed}: trainer exited {result.returncode}:\n{result.stderr[-3000:]}")
    records = [json.loads(line) for line in (workdir / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["eval/pass@1"]) for r in records if "eval/pass@1" in r]
    after_sft, after_grpo = evals[0][1], evals[-1][1]
    return {
        "seed": seed, "wall_s": wall, "sft_s": records[0].get("sft/time", float("nan")), "after_sft": after_sft,
        "after_grpo": after_grpo, "evals": evals, "sft_loss_last": records[0].get("sft/loss_last", float("nan")),
        "bar": after_grpo >= 2 * after_sft and after_grpo >= after_sft + 0.15,
        "steps": [r for r in records if r["step"] > 0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/thinkrl-quickstart-bench"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_quickstart.md")
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides, as the trainer takes them")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    shutil.rmtree(args.workdir, ignore_errors=True)
    results = []
    for seed in seeds:
        load = os.getloadavg()[0]
        results.append({**run_seed(seed, args.workdir, args.overrides), "load": load})
        r = results[-1]
        print(f"seed {seed}: {r['wall_s']:.0f} s, held-out greedy accuracy {r['after_sft']:.3f} after SFT -> "
              f"{r['after_grpo']:.3f} after GRPO ({'meets' if r['bar'] else 'MISSES'} the bar)", flush=True)

    steps = [step for step, _ in results[0]["evals"]]
    lines = [
        "# Quickstart learning bar",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} (UTC); machine: {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()}, CPU only; Python {platform.python_version()}",
        f"- Command: `python benchmarks/quickstart_learning.py --seeds {args.seeds}{''.join(' ' + o for o in args.overrides)}`, "
        f"i.e. per seed `python -m train --config configs/quickstart.yaml{''.join(' ' + o for o in args.overrides)} seed=S`",
        "- Bar (issue 6): held-out greedy accuracy (eval/pass@1, 200 prompts) after GRPO >= 2x the after-SFT accuracy "
        "and >= +15 points, in <= 10 minutes wall time.",
        "- Wall time: the whole process (imports, SFT, every evaluation, GRPO, export, plots); the 1-minute load "
        "average at its start is given because other jobs slow a 2-core machine.",
        "",
        "| seed | wall time | SFT time | SFT final loss | pass@1 after SFT | " + " | ".join(f"step {s}" for s in steps[1:]) + " | ratio | gain | bar | load at start |",
        "|" + "---|" * (9 + len(steps) - 1),
    ]
    for r in results:
        by_step = dict(r["evals"])
        lines.append(
            f"| {r['seed']} | {r['wall_s']:.0f} s | {r['sft_s']:.0f} s | {r['sft_loss_last']:.3f} | {r['after_sft']:.3f} | "
            + " | ".join(f"{by_step.get(s, float('nan')):.3f}" for s in steps[1:])
            + f" | {r['after_grpo'] / max(r['after_sft'], 1e-9):.2f}x | {100 * (r['after_grpo'] - r['after_sft']):+.1f} pts | "
            f"{'yes' if r['bar'] else 'NO'} | {r['load']:.2f} |"
        )
    report_dir = args.workdir / f"seed{seeds[0]}" / "report"
    for name in ("accuracy.png", "summary.png"):
        shutil.copy(report_dir / name, args.out.parent / f"results_quickstart_{name}")
    lines += ["", f"Plots of seed {seeds[0]} (from its run report): `results_quickstart_accuracy.png`, `results_quickstart_summary.png`.", ""]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
