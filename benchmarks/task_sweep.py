"""GRPO on tasks nobody tuned it for: SmolLM2-135M-Instruct on several reasoning-gym tasks (issue 23).

    python benchmarks/task_sweep.py                                    # every task x {full, lora} x seeds 0,1
    python benchmarks/task_sweep.py --tasks spell_backward --modes lora --seeds 0
    python benchmarks/task_sweep.py --tasks gcd --seeds 0 --label "lr 3e-4" optim.lr=3e-4 max_steps=15   # an ablation
    python benchmarks/task_sweep.py --render                           # rewrite the table from the records only
    python benchmarks/task_sweep.py --model models/smollm2 ...         # a converted model: no GGUF dequantising

Every run is `python -m train --config configs/smollm2_gym.yaml` with the task as its one override (data.source on the
task's training seed 0, eval.source on 200 prompts of seed 1), LoRA's four options for `--modes lora`, then `seed=S`
and any extra overrides. Each run appends one JSON record (held-out greedy pass@1 before and after, the evaluations
between, wall time, mean seconds per phase, the health warnings it printed, the load average at its start) to
benchmarks/results_task_sweep.jsonl, and the markdown table benchmarks/results_task_sweep.md is rewritten from all
records, so a sweep can be run a task at a time and nothing measured is lost. The task list and why each task was
picked are TASKS below, written before the first training run; every task stays in the table whatever it gives.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "smollm2_gym.yaml"
RECORDS = ROOT / "benchmarks" / "results_task_sweep.jsonl"
TABLE = ROOT / "benchmarks" / "results_task_sweep.md"
LORA = ["model.lora.r=16", "model.lora.alpha=32", "model.lora.dropout=0", "model.lora.target_modules=all-linear",
        "optim.lr=1e-4"]
GAIN_BAR, DROP_BAR, SECONDS_BAR = 0.10, 0.02, 20 * 60

# name -> why it is in the sweep. Chosen before any training run, from a step-0 screen of 16 tasks (100 held-out
# prompts each, greedy, recorded in the results file): a short answer (a number or a word, well inside
# max_completion_length), prompts inside max_prompt_length, a nonzero step-0 reward (GRPO needs some spread), and
# different skills, 4 of 5 not arithmetic. Default task options throughout. Left out: number_sorting, word_sorting,
# number_filtering, coin_flip (answers or explanations longer than 48 tokens: 75-100% cut), family_relationships,
# leg_counting (reward 0.000 at step 0).
TASKS: dict[str, str] = {
    "gcd": "arithmetic (number theory): the greatest common divisor of two numbers; a number. Step 0: pass@1 0.10 "
           "without the answer prefill (last number), 0.00 with it (reward 0.028)",
    "letter_counting": "counting in text (strings, not arithmetic): how often a letter occurs in a sentence; a "
                       "number. Step 0: pass@1 0.02 / 0.00 (reward 0.009)",
    "syllogism": "logic: does a conclusion follow from two premises; Yes or No. Step 0: pass@1 0.00 (reward 0.042): "
                 "the model answers Yes/No first, then explains",
    "color_cube_rotation": "spatial state tracking: a cube's face colour after rotations; one colour word. Step 0: "
                           "pass@1 0.00 (reward 0.010)",
    "spell_backward": "strings: a word spelled backward; one word. Step 0: pass@1 0.00 (reward 0.100, partial "
                      "credit)",
}

# The step-0 screen (2026-12-06 21:00-21:30 UTC, `python -m train.evaluate` on 100 prompts of seed 1, greedy, L 48):
# task -> (pass@1 and cut share with configs/smollm2_basic_arithmetic.yaml's prompt and reward, i.e. no prefill and
# the last number as the answer; pass@1, mean reward and cut share with configs/smollm2_gym.yaml, i.e. the answer
# prefill). None: not screened that way (basic_arithmetic with its default options, 2-5 terms of up to 4 digits).
SCREEN: dict[str, tuple] = {
    "basic_arithmetic": (None, None, 0.00, 0.002, 0.35), "gcd": (0.10, 0.22, 0.00, 0.028, 0.07),
    "chain_sum": (0.04, 0.12, 0.00, 0.014, 0.13), "letter_counting": (0.02, 0.02, 0.00, 0.009, 0.09),
    "count_bits": (0.01, 0.61, 0.00, 0.008, 0.00), "coin_flip": (0.02, 1.00, 0.00, 0.000, 0.33),
    "leg_counting": (0.00, 0.32, 0.00, 0.000, 0.17), "spell_backward": (0.00, 0.08, 0.00, 0.100, 0.01),
    "family_relationships": (0.00, 0.08, 0.00, 0.000, 0.04), "syllogism": (None, None, 0.00, 0.042, 0.54),
    "color_cube_rotation": (None, None, 0.00, 0.010, 0.01), "word_sorting": (0.00, 0.18, 0.00, 0.071, 0.55),
    "number_sorting": (0.00, 1.00, None, None, None), "number_filtering": (0.00, 0.75, 0.00, 0.000, 0.62),
    "largest_island": (None, None, 0.00, 0.000, 0.63), "letter_jumble": (None, None, 0.00, 0.028, 0.10),
    "base_conversion": (0.00, 0.36, None, None, None),
}

# What the runs showed, kept with the table (update when a run changes the picture): one finding per line, each a
# markdown list item, copied into the table as it stands.
FINDINGS = ROOT / "benchmarks" / "task_sweep_findings.md"


# The versions of configs/smollm2_gym.yaml the records were made with (first 12 hex digits of its SHA-256), oldest
# first: the tables keep each version's runs and means apart, so a new default is compared with the one it replaced.
CONFIGS: dict[str, str] = {
    "ed6141d4de36": "v1: partial credit, 30 steps",
    "aa91a96f4a52": "v2: exact answers only, 30 steps",
    "a0125b364ee6": "v3: v2 + dynamic sampling (rollout.filter_groups), 20 steps",
}
# (config, overrides) -> the config they resolve to, field for field: ablations of an older version that are exactly
# a later version's settings count as that version's runs. v3 is v2 with the two overrides of the filter_groups
# ablations: config_to_dict(load_config(v2, those overrides)) == config_to_dict(load_config(v3)), and the code
# those runs ran (049464e) and v3 (a17ab90) differ in warning texts only.
RESOLVES_TO: dict[tuple[str, tuple[str, ...]], str] = {
    ("aa91a96f4a52", ("rollout.filter_groups.enable=true", "max_steps=20")): "a0125b364ee6",
}


def version_of(record: dict) -> tuple[str, str]:
    """The config a record ran with, and its label (empty when it is a run of that config's sweep)."""
    key = (record.get("config_sha", ""), tuple(record.get("overrides", [])))
    if key in RESOLVES_TO:
        return RESOLVES_TO[key], ""
    return record.get("config_sha", ""), record.get("label", "")


def config_order(sha: str) -> int:
    return list(CONFIGS).index(sha) if sha in CONFIGS else len(CONFIGS)


def config_sha() -> str:
    """The first 12 hex digits of the config file's SHA-256: rows made with an older config stay told apart."""
    return hashlib.sha256(CONFIG.read_bytes()).hexdigest()[:12]


def task_overrides(task: str) -> list[str]:
    return [f"data.source=reasoning_gym:{task}?size=2000&seed=0", f"eval.source=reasoning_gym:{task}?size=200&seed=1"]


def run_one(task: str, mode: str, seed: int, extra: list[str], workdir: Path, label: str, model: str | None) -> dict:
    """One training run; its record."""
    name = f"{task}_{mode}_seed{seed}" + (f"_{label}".replace(" ", "_") if label else "")
    where = [f"model.name_or_path={model}", "model.gguf_file=null"] if model else []
    overrides = [*where, *task_overrides(task), *(LORA if mode == "lora" else []), f"seed={seed}", *extra,
                 f"output_dir={workdir}", f"run_name={name}"]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false"}
    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "train", "--config", str(CONFIG), *overrides], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    wall = time.perf_counter() - start
    (workdir / f"{name}.log").write_text(result.stdout + result.stderr)
    record = {"task": task, "mode": mode, "seed": seed, "label": label, "overrides": extra, "wall_s": round(wall, 1),
              "load": round(load, 2), "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}",
              "returncode": result.returncode, "config_sha": config_sha(),
              "warnings": [line for line in (result.stdout + result.stderr).splitlines() if ": warning: step " in line]}
    metrics_path = workdir / name / "metrics.jsonl"
    if result.returncode != 0 or not metrics_path.exists():
        return {**record, "error": (result.stderr or result.stdout)[-2000:]}
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    evals = [(r["step"], r["eval/pass@1"]) for r in rows if "eval/pass@1" in r]
    steps = [r for r in rows if "time/step" in r]

    def mean(key: str) -> float:
        values = [r[key] for r in steps if key in r]
        return round(sum(values) / len(values), 2) if values else float("nan")

    phases = sorted({key for r in steps for key in r if key.startswith("time/")})
    return {**record, "evals": evals, "before": evals[0][1], "after": evals[-1][1], "steps": len(steps),
            "seconds": {key.removeprefix("time/"): mean(key) for key in phases},
            "truncated": [steps[0].get("truncated_fraction"), steps[-1].get("truncated_fraction")],
            "reward": [steps[0].get("reward/mean"), steps[-1].get("reward/mean")],
            "entropy": [steps[0].get("entropy"), steps[-1].get("entropy")],
            "top_opening_share": [steps[0].get("top_opening_share"), steps[-1].get("top_opening_share")]}


@functools.lru_cache(maxsize=None)  # render() runs after every run, and once per mode of a task
def majority_share(task: str) -> float | None:
    """Held-out pass@1 of a policy that always writes the most common gold answer of the eval set: the bar a gain
    must clear to be more than learning the format and the prior (syllogism: "Yes" is right on 71% of prompts)."""
    try:
        import reasoning_gym
    except ImportError:
        return None
    answers = [str(entry["answer"]) for entry in reasoning_gym.create_dataset(task, size=200, seed=1)]
    return max(answers.count(a) for a in set(answers)) / len(answers)


def render(records: list[dict]) -> str:
    """The results table: one row per run (latest record per task, mode, config, seed and label), then the means."""
    latest: dict[tuple, dict] = {}
    for r in records:
        sha, label = version_of(r)
        latest[(r["task"], r["mode"], config_order(sha), r["seed"], label)] = {**r, "config_sha": sha}
    lines = [
        "# Task sweep: SmolLM2-135M-Instruct on reasoning-gym tasks nobody tuned it for (issue 23)",
        "",
        "- Command: `python benchmarks/task_sweep.py` (see its docstring); config `configs/smollm2_gym.yaml`, the task its "
        "one override; LoRA: " + " ".join(LORA) + ".",
        f"- Bar: the mean of the 2 seeds gains >= {100 * GAIN_BAR:.0f} points of held-out greedy pass@1 (200 prompts of "
        f"seed 1) in both modes; no seed ends > {100 * DROP_BAR:.0f} points below its start; <= {SECONDS_BAR // 60} min "
        "per run on 2 idle cores.",
        "",
        "## Tasks, and why (written before the first training run)",
        "",
        *[f"- `{task}`: {why}" for task, why in TASKS.items()],
        "",
        "The step-0 screen they were chosen from (100 held-out prompts, greedy, L 48; `-`: not screened that way):",
        "",
        "| task | pass@1, last number, no prefill | cut | pass@1, answer prefill | reward | cut |",
        "|---|---|---|---|---|---|",
        *[f"| {task} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in values) + " |"
          for task, values in SCREEN.items()],
        "",
        "## Findings so far",
        "",
        *FINDINGS.read_text().splitlines(),
        "",
        "## Runs",
        "",
        f"Configs (`{config_sha()}` is configs/smollm2_gym.yaml now): "
        + "; ".join(f"`{sha}` {what}" for sha, what in CONFIGS.items()) + ". "
        + "".join(f"Runs of `{old}` with overrides {list(extra)} count as `{new}` (the same settings). "
                  for (old, extra), new in RESOLVES_TO.items()),
        "",
        "| task | mode | seed | label | config | pass@1 before | after | gain | evaluations (step: pass@1) | wall | "
        "s/step (rollout / update) | warnings | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (task, mode, _, seed, label), r in sorted(latest.items()):
        if "error" in r:
            lines.append(f"| {task} | {mode} | {seed} | {label} | {r['config_sha']} | failed (exit {r['returncode']}) | | | | "
                         f"{r['wall_s']:.0f} s | | | {r['load']} |")
            continue
        sec = r["seconds"]
        evals = ", ".join(f"{s}: {v:.3f}" for s, v in r["evals"])
        lines.append(
            f"| {task} | {mode} | {seed} | {label} | {r['config_sha']} | {r['before']:.3f} | {r['after']:.3f} | "
            f"{100 * (r['after'] - r['before']):+.1f} | {evals} | {r['wall_s']:.0f} s | {sec.get('step', float('nan')):.1f} "
            f"({sec.get('rollout', float('nan')):.1f} / {sec.get('update', float('nan')):.1f}) | "
            f"{len(r['warnings'])} | {r['load']} |")
    lines += ["", "## Per task, mode and config (label-less runs, mean of the seeds)", "",
              "| task | mode | config | seeds | mean pass@1 before -> after | always the commonest answer | mean gain | "
              "worst seed's change | longest run | bar |", "|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for (task, mode, order, _, label), r in sorted(latest.items()):
        if not label and "error" not in r:
            groups.setdefault((task, mode, order), []).append(r)
    for (task, mode, _), runs in groups.items():
        gains = [r["after"] - r["before"] for r in runs]
        mean_gain, worst, longest = sum(gains) / len(gains), min(gains), max(r["wall_s"] for r in runs)
        ok = len(runs) >= 2 and mean_gain >= GAIN_BAR and worst >= -DROP_BAR and longest <= SECONDS_BAR
        before, after = (sum(r[key] for r in runs) / len(runs) for key in ("before", "after"))
        majority = majority_share(task)
        verdict = "yes" if ok else (f"not yet: {len(runs)} of 2 seeds" if len(runs) < 2 else "no")
        lines.append(f"| {task} | {mode} | {runs[0]['config_sha']} | {len(runs)} | {before:.3f} -> {after:.3f} | "
                     f"{'-' if majority is None else f'{majority:.3f}'} | {100 * mean_gain:+.1f} | {100 * worst:+.1f} | "
                     f"{longest:.0f} s | {verdict} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated reasoning-gym task names")
    parser.add_argument("--modes", default="full,lora", help="full and/or lora")
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    parser.add_argument("--label", default="", help="names an ablation (its rows stay apart from the sweep's)")
    parser.add_argument("--model", default=None, help="a converted SmolLM2 directory (python -m train.convert), which "
                        "skips dequantising the GGUF file at every start (default: the config's)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/thinkrl-task-sweep"))
    parser.add_argument("--render", action="store_true", help="only rewrite the table from the records")
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides, after the sweep's own")
    args = parser.parse_args()
    records = [json.loads(line) for line in RECORDS.read_text().splitlines()] if RECORDS.exists() else []
    if not args.render:
        args.workdir.mkdir(parents=True, exist_ok=True)
        for task in args.tasks.split(","):
            for mode in args.modes.split(","):
                for seed in (int(s) for s in args.seeds.split(",")):
                    record = run_one(task, mode, seed, args.overrides, args.workdir, args.label, args.model)
                    records.append(record)
                    with RECORDS.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                    TABLE.write_text(render(records))
                    print(f"{task} {mode} seed {seed}: {record.get('before', float('nan')):.3f} -> "
                          f"{record.get('after', float('nan')):.3f} in {record['wall_s']:.0f} s"
                          + (f" (FAILED: {record['error'][-300:]})" if "error" in record else ""), flush=True)
    TABLE.write_text(render(records))


if __name__ == "__main__":
    main()
