"""Tool-integrated reasoning's learning bar, measured (issue 25): configs/tool_multiply.yaml for a few seeds, with the
Python tool and without it (the same recipe, rollout.tools=null).

    python benchmarks/tool_learning.py                  # seeds 0,1,2, each with and without the tool (~11-14 min a run)
    python benchmarks/tool_learning.py --seeds 0 --out /tmp/t.md
    python benchmarks/tool_learning.py --seeds 1 --recipes "no tool" --out /tmp/t.md

For each seed and recipe: wall time of the whole `python -m train` process, held-out greedy pass@1 after SFT (step 0)
and after GRPO (the last step), tool calls per completion at the last step, and the issue's bar: with the tool, after
GRPO >= 2x after SFT and >= +20 points, and >= +20 points above the same seed without the tool. The trained tool
model is also evaluated with the tool switched off (`thinkrl eval ... rollout.tools=null`), which shows whether its
answers come from the tool. Writes benchmarks/results_tool_learning.md.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from quickstart_learning import run_seed  # noqa: E402

CONFIG = ROOT / "configs" / "tool_multiply.yaml"
RECIPES = {"tool": [], "no tool": ["rollout.tools=null"]}


def pass_at_1_without_tool(run_dir: Path, workdir: Path) -> float:
    """Held-out greedy pass@1 of a run's exported model with rollout.tools=null (`thinkrl eval`)."""
    out = workdir / f"{run_dir.name}_no_tool_eval.json"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "train.evaluate", "--config", str(CONFIG), "--model", str(run_dir),
               "--output", str(out), "--k", "1", "rollout.tools=null"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"eval of {run_dir} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return json.loads(out.read_text())["metrics"]["eval/pass@1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {list(RECIPES)}")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/thinkrl-tool-bench"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_tool_learning.md")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    recipes = {name: RECIPES[name] for name in args.recipes.split(",")}  # an unknown name is a KeyError naming it
    shutil.rmtree(args.workdir, ignore_errors=True)
    rows = []
    for seed in seeds:
        for recipe, overrides in recipes.items():
            load = os.getloadavg()[0]
            result = run_seed(seed, args.workdir / recipe.replace(" ", "_"), overrides, config=CONFIG)
            last = result["steps"][-1]
            result.update(recipe=recipe, load=load, calls=last.get("tools/calls_per_completion", 0.0),
                          step_s=sum(s["time/step"] for s in result["steps"]) / len(result["steps"]))
            if recipe == "tool":
                result["without_tool"] = pass_at_1_without_tool(args.workdir / "tool" / f"seed{seed}", args.workdir)
            rows.append(result)
            print(f"seed {seed} {recipe}: {result['after_sft']:.3f} -> {result['after_grpo']:.3f} in {result['wall_s']:.0f} s",
                  flush=True)
            write_table(rows, args.out)  # after every run: a sweep stopped half-way keeps what it measured
    print(args.out.read_text())


def write_table(rows: list[dict], out: Path) -> None:
    by = {(r["seed"], r["recipe"]): r for r in rows}
    lines = [
        "# Tool-integrated reasoning: a tiny model learns to multiply by running Python (issue 25)",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; one run at a time, nothing else running torch (load average at each run's start below)",
        "- Command: `python benchmarks/tool_learning.py` (configs/tool_multiply.yaml, `seed=S`; the no-tool recipe adds "
        "`rollout.tools=null`)",
        "- Task: `What is A * B?` with 3-digit A and B; 200 held-out prompts (seed 1) never seen in SFT or GRPO. SFT: "
        "76,800 fresh tool traces (1,200 steps of 64, each trace seen once), 60% of them the teacher's wrong mental "
        "answer (`sft.tool_slip: 0.6`); GRPO: 40 steps of 16 prompts x 8.",
        "- Bar (issue 25): with the tool, held-out greedy pass@1 after GRPO >= 2x after SFT and >= +20 points, and >= +20 "
        "points above the same recipe without the tool; <= 15 minutes a run.",
        "",
        "| seed | recipe | pass@1 after SFT | after GRPO | gain | tool model, tool off | calls / completion (last step) | s / GRPO step | wall | load | bar |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        bar = ""
        if r["recipe"] == "tool":
            other = by.get((r["seed"], "no tool"))
            ok = (r["after_grpo"] >= 2 * r["after_sft"] and r["after_grpo"] >= r["after_sft"] + 0.20
                  and other is not None and r["after_grpo"] >= other["after_grpo"] + 0.20 and r["wall_s"] <= 900)
            bar = "yes" if ok else "no"
        off = f"{r['without_tool']:.3f}" if "without_tool" in r else "-"
        lines.append(f"| {r['seed']} | {r['recipe']} | {r['after_sft']:.3f} | {r['after_grpo']:.3f} | "
                     f"{100 * (r['after_grpo'] - r['after_sft']):+.1f} | {off} | {r['calls']:.2f} | {r['step_s']:.1f} | "
                     f"{r['wall_s']:.0f} s | {r['load']:.2f} | {bar} |")
    lines += ["", "Evaluations (step: held-out greedy pass@1):", ""]
    lines += [f"- seed {r['seed']}, {r['recipe']}: " + ", ".join(f"{s}: {p:.3f}" for s, p in r["evals"]) for r in rows]
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
