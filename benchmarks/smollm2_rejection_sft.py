"""R1's rejection sampling + SFT (arXiv:2501.12948 §2.3.3) on a real model, on a CPU: SmolLM2-135M-Instruct samples
reasoning-gym's basic_arithmetic, its correct answers are kept, and the model is fine-tuned on them.

    python benchmarks/smollm2_rejection_sft.py [--prompts 100] [--k 4] [--out benchmarks/results_smollm2_rejection_sft.md]

1. traces: `python -m train.sample --config configs/smollm2_basic_arithmetic.yaml --k K --keep correct --dedup` on
   `--prompts` fresh prompts of the task (seed 7: neither the config's training prompts, seed 0, nor its eval set,
   seed 1), scored by reasoning-gym's own verifier; the acceptance rate is the sampler's;
2. student: SFT of SmolLM2-135M-Instruct itself on the kept rows (`sft:` section, `max_steps=0`: SFT only), then the
   config's held-out greedy evaluation (200 prompts), against the model before SFT (the same evaluation, no SFT).
No smaller pretrained model of the same family is on this machine (no model hub), so the student is the model itself:
rejection-sampling fine-tuning, the stage R1 runs before its final RL. Wall times are whole processes.
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
CONFIG = ROOT / "configs" / "smollm2_basic_arithmetic.yaml"
TASK = ("reasoning_gym:basic_arithmetic?size={n}&seed=7&max_terms=2&max_digits=2&operators=+,-&allow_parentheses=false"
        "&allow_negation=false")
BASE_PASS1, BASE_TRUNCATED = 0.165, 0.30  # the config's step-0 evaluation (benchmarks/results_real_model.md, config header)


def run(command: list[str], what: str) -> float:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{what}: exited {result.returncode}:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def step0(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/thinkrl-smollm2-rft"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_smollm2_rejection_sft.md")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    python, traces = sys.executable, args.workdir / "traces.jsonl"
    load = os.getloadavg()[0]
    sample_s = run([python, "-m", "train.sample", "--config", str(CONFIG), "--output", str(traces), "--k", str(args.k), "--keep",
                    "correct", "--dedup", f"data.source={TASK.format(n=args.prompts)}"], "sampling")
    summary = json.loads(traces.with_name(traces.name + ".summary.json").read_text())
    sft = (f"sft={{source: '{traces}', packing: false, epochs: {args.epochs}, batch_size: 8, micro_batch_size: 8, lr: 1.0e-5, "
           "warmup_steps: 2, max_length: 256}")
    common = ["--config", str(CONFIG), f"output_dir={args.workdir}", "checkpoint.export_hf=false", "log.report=false"]
    student_s = run([python, "-m", "train", *common, "run_name=student", sft, "max_steps=0"], "student SFT")
    student = step0(args.workdir / "student")
    lines = [
        "# Rejection sampling + SFT on a real model: SmolLM2-135M-Instruct on reasoning-gym's basic_arithmetic",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} (UTC); machine: {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()}, CPU only; Python {platform.python_version()}; load average at the "
        f"start {load:.2f}",
        f"- Command: `python benchmarks/smollm2_rejection_sft.py --prompts {args.prompts} --k {args.k} --epochs {args.epochs}`",
        f"- Traces: {args.k} samples per prompt (temperature 1.0, <= 48 tokens, the config's direct-answer prompt) on "
        f"{args.prompts} fresh prompts (`{TASK.format(n=args.prompts)}`), kept when reasoning-gym's verifier scores 1, "
        "duplicates of a prompt dropped.",
        f"- Student: SmolLM2-135M-Instruct itself, SFT on the kept rows for {args.epochs} epochs (batch 8, lr 1e-5, "
        "completion tokens only); evaluated like the model before SFT (the config's 200 held-out prompts, greedy). "
        f"The before-SFT figures are the step-0 evaluation of the same config in benchmarks/results_real_model.md "
        f"(greedy, identical in its three seeds): pass@1 {BASE_PASS1}, {BASE_TRUNCATED:.0%} of answers cut at 48 tokens.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| prompts sampled | {summary['prompts']} |",
        f"| samples | {summary['samples_now']} |",
        f"| acceptance rate (verifier score 1) | {summary['acceptance_rate']['reasoning_gym']:.1%} |",
        f"| kept rows (correct, de-duplicated) | {summary['kept_rows']} |",
        f"| sampling: tokens/s, wall time | {summary['tokens_per_second']:.0f}, {sample_s:.0f} s |",
        f"| held-out greedy accuracy before SFT | {BASE_PASS1:.3f} |",
        f"| held-out greedy accuracy after SFT on the kept rows | {student['eval/pass@1']:.3f} |",
        f"| answers cut at 48 tokens, before / after | {BASE_TRUNCATED:.0%} / {student['eval/truncated_fraction']:.1%} |",
        f"| SFT: steps, time (process: {student_s:.0f} s) | {student['sft/steps']:.0f}, {student['sft/time']:.0f} s |",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
