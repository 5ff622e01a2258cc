"""R1's distillation (arXiv:2501.12948 §2.4) on a CPU, end to end, for a few seeds: teacher -> traces -> student.

    python benchmarks/distillation.py                        # seeds 0,1,2, ~10 min each on 2 cores
    python benchmarks/distillation.py --seeds 0 --out /tmp/d.md

Per seed S, the README's three commands (configs/distill_student.yaml's header):
  1. teacher: `python -m train --config configs/quickstart.yaml seed=S` (cold-start SFT, then GRPO); its held-out greedy
     accuracy at the end is the teacher's;
  2. traces: `python -m train.sample` from the teacher's final_model, k samples on fresh prompts with the quickstart's
     GRPO, SFT and eval prompts excluded (--exclude, read from configs/quickstart.yaml), correct ones kept, de-duplicated;
  3. student: `python -m train --config configs/distill_student.yaml sft.source=TRACES seed=S`: a model with half the
     layers of the teacher's, SFT on the traces (held-out accuracy at step 0), then GRPO.
The bar (issue 15): the student's held-out greedy accuracy after SFT >= 90% of the teacher's. Every stage's wall time
is the whole process (imports, model build, evaluations). Writes benchmarks/results_distillation.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEACHER_CONFIG = ROOT / "configs" / "quickstart.yaml"
STUDENT_CONFIG = ROOT / "configs" / "distill_student.yaml"
FRESH_PROMPTS = "synthetic:arithmetic?n=2000&seed=7&min_digits=2&max_digits=2&ops=add"
BAR = 0.9


def run(command: list[str], what: str) -> tuple[float, str]:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{what}: exited {result.returncode}:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start, result.stdout


def evals(run_dir: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["eval/pass@1"]) for r in records if "eval/pass@1" in r]


def step0(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])


def params(run_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(run_dir / "final_model" / "model.safetensors", "pt") as f:
        return sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())


def one_seed(seed: int, workdir: Path, k: int, teachers: Path | None) -> dict:
    from train.config import load_config

    teacher_cfg = load_config(TEACHER_CONFIG)
    python = sys.executable
    traces, student_dir = workdir / f"traces{seed}.jsonl", workdir / f"student{seed}"
    if teachers is not None:  # the quickstart benchmark's runs (benchmarks/quickstart_learning.py: seedS/)
        teacher_dir, teacher_s = teachers / f"seed{seed}", float("nan")
    else:
        teacher_dir = workdir / f"teacher{seed}"
        teacher_s, _ = run([python, "-m", "train", "--config", str(TEACHER_CONFIG), f"seed={seed}", f"output_dir={workdir}",
                            f"run_name=teacher{seed}"], f"seed {seed} teacher")
    excluded = [teacher_cfg.data.source, teacher_cfg.sft.source, teacher_cfg.eval.source]
    sample_s, _ = run([python, "-m", "train.sample", "--config", str(TEACHER_CONFIG), "--model", str(teacher_dir / "final_model"),
                       "--output", str(traces), "--k", str(k), "--keep", "correct", "--dedup", "--seed", str(seed),
                       *[arg for source in excluded for arg in ("--exclude", source)], f"data.source={FRESH_PROMPTS}"],
                      f"seed {seed} sampling")
    summary = json.loads(traces.with_name(traces.name + ".summary.json").read_text())
    student_s, _ = run([python, "-m", "train", "--config", str(STUDENT_CONFIG), f"sft.source={traces}", f"seed={seed}",
                        f"output_dir={workdir}", f"run_name=student{seed}"], f"seed {seed} student")
    teacher_evals, student_evals = evals(teacher_dir), evals(student_dir)
    teacher_acc, distilled, after_grpo = teacher_evals[-1][1], student_evals[0][1], student_evals[-1][1]
    return {
        "seed": seed, "teacher_s": teacher_s, "teacher_after_sft": teacher_evals[0][1], "teacher": teacher_acc,
        "teacher_params": params(teacher_dir), "student_params": params(student_dir),
        "sample_s": sample_s, "prompts": summary["prompts"], "excluded": summary["prompts_excluded"],
        "samples": summary["samples_now"], "kept": summary["kept_rows"],
        "acceptance": summary["acceptance_rate"]["arithmetic_accuracy"], "tokens_per_second": summary["tokens_per_second"],
        "student_s": student_s, "student_sft_s": step0(student_dir)["sft/time"], "student_sft_steps": step0(student_dir)["sft/steps"],
        "distilled": distilled, "ratio": distilled / max(teacher_acc, 1e-9), "student_after_grpo": after_grpo,
        "student_evals": student_evals,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--k", type=int, default=4, help="teacher samples per prompt")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/thinkrl-distillation"))
    parser.add_argument("--teachers", type=Path, default=None, help="reuse the quickstart runs of "
                        "benchmarks/quickstart_learning.py (its --workdir, with seedS/ for each seed) as the teachers")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_distillation.md")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        load = os.getloadavg()[0]
        r = {**one_seed(seed, args.workdir, args.k, args.teachers), "load": load}
        results.append(r)
        print(f"seed {seed}: teacher {r['teacher']:.3f} | {r['kept']} traces ({r['acceptance']:.1%} accepted) | student "
              f"{r['distilled']:.3f} after SFT ({r['ratio']:.0%} of the teacher) -> {r['student_after_grpo']:.3f} after GRPO",
              flush=True)

    r0 = results[0]
    lines = [
        "# Distillation on CPU: quickstart teacher -> correct traces -> a student half as deep",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} (UTC); machine: {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()}, CPU only; Python {platform.python_version()}",
        f"- Command: `python benchmarks/distillation.py --seeds {args.seeds} --k {args.k}"
        f"{' --teachers ' + str(args.teachers) if args.teachers else ''}`; per seed S the three commands in "
        "`configs/distill_student.yaml`'s header with `seed=S` (`--seed S` for the sampler)"
        + (": the teachers are the quickstart benchmark's runs of the same seeds (benchmarks/results_quickstart.md has "
           "their wall times)." if args.teachers else "."),
        f"- Teacher: `configs/quickstart.yaml` ({r0['teacher_params']:,} parameters), SFT then GRPO. Student: "
        f"`configs/distill_student.yaml` ({r0['student_params']:,} parameters), SFT on the traces, then GRPO.",
        f"- Traces: the teacher samples k={args.k} completions per prompt of `{FRESH_PROMPTS}` minus every prompt of the "
        "quickstart's GRPO, SFT and eval sources (`--exclude`); correct ones (arithmetic_accuracy = 1) are kept, "
        "duplicates of a prompt dropped.",
        "- Accuracy: greedy pass@1 on the quickstart's 200 held-out prompts (never trained on, never sampled for traces).",
        f"- Bar (issue 15): student after SFT >= {BAR:.0%} of the teacher's final accuracy.",
        "- Wall time: each whole process; the 1-minute load average at the start of the seed is given.",
        "",
        "| seed | teacher after SFT | teacher (after GRPO) | teacher time | prompts (excluded) | samples | kept traces | "
        "acceptance | sampling time | tokens/s | student SFT steps | student SFT time | student after SFT | of teacher | "
        "bar | student after GRPO | student time | load |",
        "|" + "---|" * 18,
    ]
    for r in results:
        lines.append(
            f"| {r['seed']} | {r['teacher_after_sft']:.3f} | {r['teacher']:.3f} | "
            f"{'see quickstart' if math.isnan(r['teacher_s']) else format(r['teacher_s'], '.0f') + ' s'} | "
            f"{r['prompts']} ({r['excluded']}) | {r['samples']} | {r['kept']} | {r['acceptance']:.1%} | {r['sample_s']:.0f} s | "
            f"{r['tokens_per_second']:.0f} | {r['student_sft_steps']:.0f} | {r['student_sft_s']:.0f} s | {r['distilled']:.3f} | "
            f"{r['ratio']:.0%} | {'yes' if r['ratio'] >= BAR else 'NO'} | {r['student_after_grpo']:.3f} | {r['student_s']:.0f} s | "
            f"{r['load']:.2f} |"
        )
    lines += ["", "Student held-out accuracy during GRPO (step: pass@1):", ""]
    for r in results:
        lines.append(f"- seed {r['seed']}: " + ", ".join(f"{step}: {acc:.3f}" for step, acc in r["student_evals"]))
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
