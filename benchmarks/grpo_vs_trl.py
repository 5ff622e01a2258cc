"""thinkrl against TRL's GRPOTrainer on CPU: same task, same tiny model, same hyper-parameters, one run, alternating.

    pip install -r benchmarks/requirements.txt        # TRL, pinned
    python benchmarks/grpo_vs_trl.py                  # ~25-40 min on 2 cores; writes benchmarks/results_grpo_vs_trl.md

For each setting in {beta 0, beta 0.04} x {num_iterations 1, 2} and each repeat, thinkrl (`python -m train`, its real
entry point, on a generated YAML) and TRL (benchmarks/trl_grpo_run.py) run one after the other, each in its own
process, in alternating order (A B, then B A). Both load the same random-init model directory (built here once from
train.model.build_tiny_model, fixed seed), train on the same synthetic arithmetic prompts (r1_zero template) with the
same rewards and weights, B prompts x G completions per step in micro-batches of the same size, the same sampler
settings, loss (dapo, clip 0.2 / 0.28, plain k3 KL), optimiser (AdamW, constant LR, same betas, clipping) and seed.

Measured per run, after `--warmup` GRPO steps (a GRPO step = one generation batch and its num_iterations optimiser
steps; TRL counts optimiser steps, converted here):
  steps/s         GRPO steps per wall-clock second, from the arrival times of each step's metrics line (thinkrl:
                  metrics.jsonl; TRL: its per-step log), polled every 50 ms by this process; includes logging;
  tokens/s        generated completion tokens (up to and including EOS) per wall-clock second over the same steps;
  peak RSS        the child process's maximum resident set size (os.wait4 rusage), i.e. including imports;
  reward          mean total reward over the last `--reward-window` steps (the weighted sum both trainers log);
  CPU s/step      CPU time the trainer process used per GRPO step over the same steps: with 1 thread it barely moves
                  when other jobs compete for the cores, so it is the steadier figure on a shared machine.
Reported: the median over repeats, and thinkrl/TRL ratios. Repeat r trains with seed r in both trainers.

Separately (`--profile-steps`, 0 to skip), one profiled run per trainer and setting splits a step's time into
generation, rewards, old/ref log-prob forward (no grad), policy log-prob forward, backward, optimiser step and the rest
(benchmarks/thinkrl_profiled.py, and timers inside trl_grpo_run.py).

Load: other people's jobs skew CPU timings. Before each run this waits (up to --max-wait s) until the 1-minute load
average is below --max-load or other processes are idle (see wait_for_quiet), and it records the load average at the
start of every run and the CPU time that other processes used during it ("foreign cores"); both go into the results
file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The quickstart model (configs/quickstart.yaml) with its byte-level tokenizer (V = 263).
MODEL_SHAPE = dict(
    arch="qwen2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    intermediate_size=128, max_position_embeddings=512, tie_word_embeddings=True,
)
ATTN_IMPLEMENTATION = "sdpa"
DATA_SOURCE = "synthetic:arithmetic?n=1000&seed=0"
HPARAMS = dict(
    prompts_per_step=4, num_generations=4, max_completion_length=32, temperature=1.0, top_p=1.0, top_k=0,
    micro_batch_size=8, lr=1e-3, adam_betas=[0.9, 0.99], adam_eps=1e-8, weight_decay=0.0, max_grad_norm=1.0,
    epsilon=0.2, epsilon_high=0.28,
)
REWARDS = [("arithmetic_accuracy", 1.0), ("format_lenient", 0.5), ("tag_count", 0.25)]
SETTINGS = [(0.0, 1), (0.0, 2), (0.04, 1), (0.04, 2)]  # (beta, num_iterations)
PHASES = ["generation", "rewards", "old/ref log-prob forward", "policy log-prob forward", "backward", "optimizer step"]


@dataclass
class Contender:
    name: str
    kind: str  # "thinkrl" or "trl"
    root: Path  # checkout to run thinkrl from (TRL runs from this repo)


@dataclass
class RunResult:
    contender: str
    beta: float
    num_iterations: int
    repeat: int
    steps_per_s: float
    tokens_per_s: float
    peak_rss_mib: float
    reward: float
    load_at_start: float
    foreign_cores: float
    cpu_s_per_step: float  # CPU time (user + system) of the trainer process per GRPO step: robust to other load
    profile: dict[str, float] = field(default_factory=dict)
    step_s: float = 0.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="measured GRPO steps per run (after the warmup)")
    p.add_argument("--warmup", type=int, default=2, help="GRPO steps run first and not timed")
    p.add_argument("--repeats", type=int, default=2, help="runs per trainer and setting (median reported)")
    p.add_argument("--reward-window", type=int, default=5, help="reward = mean over this many last steps")
    p.add_argument("--profile-steps", type=int, default=4, help="measured steps of the profiled runs; 0 skips them")
    p.add_argument("--settings", default="all", help="comma list of beta:num_iterations, e.g. '0:1,0.04:2'; or all")
    p.add_argument("--hidden-size", type=int, default=MODEL_SHAPE["hidden_size"])
    p.add_argument("--num-layers", type=int, default=MODEL_SHAPE["num_hidden_layers"])
    p.add_argument("--max-completion-length", type=int, default=HPARAMS["max_completion_length"])
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for both trainers (default: unset)")
    p.add_argument("--baseline-root", type=Path, default=None,
                   help="also run thinkrl from this checkout (e.g. `git archive HEAD | tar -x -C DIR`), as 'thinkrl@base'")
    p.add_argument("--max-load", type=float, default=1.0, help="wait for the 1-minute load average to drop below this")
    p.add_argument("--max-wait", type=float, default=150.0, help="seconds to wait for --max-load before a run")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/thinkrl-bench"))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_grpo_vs_trl.md")
    return p.parse_args()


def prepare(workdir: Path, shape: dict) -> tuple[Path, Path, int]:
    """The shared model directory and TRL's prompt file (rendered r1_zero text + answer). Returns (model, prompts, V)."""
    from data import load_prompt_dataset, render_prompt
    from train.model import build_byte_tokenizer, build_tiny_model, prepare_tokenizer_for_generation

    tokenizer = build_byte_tokenizer()
    prepare_tokenizer_for_generation(tokenizer)
    model = build_tiny_model(tokenizer, **shape, dtype="float32", attn_implementation=ATTN_IMPLEMENTATION, seed=0)
    model_dir = workdir / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    dataset = load_prompt_dataset(DATA_SOURCE)
    prompts_file = workdir / "prompts.jsonl"
    with open(prompts_file, "w") as f:
        for row in dataset:
            text = render_prompt(row["prompt"], tokenizer, template="r1_zero", prefill_think=True)
            f.write(json.dumps({"prompt": text, "answer": row["answer"]}) + "\n")
    return model_dir, prompts_file, len(tokenizer)


def thinkrl_config(model_dir: Path, hp: dict, *, beta: float, num_iterations: int, seed: int, max_steps: int, out: Path) -> dict:
    return {
        "model": {"name_or_path": str(model_dir), "dtype": "float32", "attn_implementation": ATTN_IMPLEMENTATION},
        "data": {"source": DATA_SOURCE, "template": "r1_zero", "max_prompt_length": 512},
        "rollout": {k: hp[k] for k in ("prompts_per_step", "num_generations", "max_completion_length", "temperature", "top_p", "top_k")},
        "grpo": {"loss_type": "dapo", "beta": beta, "epsilon": hp["epsilon"], "epsilon_high": hp["epsilon_high"],
                 "num_iterations": num_iterations, "scale_rewards": "group"},
        "rewards": {"functions": [{"name": n, "weight": w} for n, w in REWARDS]},
        "eval": {"source": None},
        "optim": {"lr": hp["lr"], "micro_batch_size": hp["micro_batch_size"], "warmup_steps": 0, "lr_scheduler": "constant",
                  "adam_betas": hp["adam_betas"], "adam_eps": hp["adam_eps"], "weight_decay": hp["weight_decay"],
                  "max_grad_norm": hp["max_grad_norm"]},
        "deepspeed": {"zero_stage": 0},
        "log": {"num_samples": 0, "report": False, "wandb": {"mode": "disabled"}},
        "checkpoint": {"export_hf": False, "every": 0, "keep_last": 1},
        "max_steps": max_steps,
        "seed": seed,
        "output_dir": str(out.parent),
        "run_name": out.name,
    }


def wait_for_quiet(max_load: float, max_wait: float) -> float:
    """Wait until the 1-minute load average is below `max_load`, or other processes use under a quarter of a core
    over 3 s (between our runs every busy cycle is someone else's; the load average still remembers our last run
    for a minute or two), or `max_wait` seconds have passed. Returns the load average then."""
    start = time.monotonic()
    while time.monotonic() - start < max_wait:
        if os.getloadavg()[0] < max_load or psutil.cpu_percent(interval=3) * psutil.cpu_count() / 100 < 0.25:
            break
        time.sleep(2)
    return os.getloadavg()[0]


def run_child(cmd: list[str], cwd: Path, env: dict, log_path: Path, metrics_path: Path) -> tuple[int, float, dict[int, tuple[float, float]], float]:
    """Run `cmd`; poll `metrics_path` for new JSON lines every 50 ms. Returns (exit code, peak RSS MiB,
    {step: (arrival time, CPU seconds the child had used by then)}, cores used by other processes during the run)."""
    arrivals: dict[int, tuple[float, float]] = {}
    offset = 0
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        me = psutil.Process(proc.pid)
        cpu_start, wall_start = psutil.cpu_times(), time.monotonic()
        child_cpu = 0.0
        while True:
            try:
                t = me.cpu_times()
                child_cpu = t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if metrics_path.exists():
                with open(metrics_path) as f:
                    f.seek(offset)
                    chunk = f.read()
                complete = chunk[: chunk.rfind("\n") + 1]
                offset += len(complete)
                now = time.time()
                for line in complete.splitlines():
                    record = json.loads(line)
                    if "step" in record and not record.get("summary"):
                        arrivals.setdefault(int(record["step"]), (now, child_cpu))
            if pid:
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        cpu_end, wall = psutil.cpu_times(), time.monotonic() - wall_start
    busy = sum(getattr(cpu_end, k) - getattr(cpu_start, k) for k in ("user", "system", "nice", "irq", "softirq"))
    foreign_cores = max(0.0, busy - child_cpu) / wall
    return proc.returncode, rusage.ru_maxrss / 1024, arrivals, foreign_cores


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def grpo_steps(records: list[dict], num_iterations: int, kind: str) -> dict[int, dict]:
    """{GRPO step: merged metrics}. thinkrl logs one line per GRPO step; TRL one per optimiser step (mu per GRPO
    step: the first carries the generation's reward and lengths, profile phases are summed)."""
    out: dict[int, dict] = {}
    for record in records:
        if record.get("summary") or "step" not in record:
            continue
        step = int(record["step"])
        key = step if kind == "thinkrl" else (step - 1) // num_iterations + 1
        merged = out.setdefault(key, {"last_step": step})
        for name, value in record.items():
            if name.startswith("profile/") or name == "time/step_inner":
                merged[name] = merged.get(name, 0.0) + value
            elif name not in merged:
                merged[name] = value
        merged["last_step"] = max(merged["last_step"], step)
    return out


def summarise(kind: str, records: list[dict], arrivals: dict[int, tuple[float, float]], *, num_iterations: int, warmup: int,
              steps: int, completions: int, reward_window: int) -> tuple[float, float, float, float]:
    """(GRPO steps/s, generated tokens/s, mean reward over the last steps, CPU seconds per step)."""
    merged = grpo_steps(records, num_iterations, kind)
    last_opt = {g: m["last_step"] for g, m in merged.items()}
    if not warmup:
        raise ValueError("--warmup must be at least 1")
    (t0, cpu0), (t1, cpu1) = arrivals[last_opt[warmup]], arrivals[last_opt[warmup + steps]]
    measured = range(warmup + 1, warmup + steps + 1)
    length_key = "completion_length/mean" if kind == "thinkrl" else "completions/mean_length"
    reward_key = "reward/mean" if kind == "thinkrl" else "reward"
    tokens = sum(merged[g][length_key] * completions for g in measured)
    rewards = [merged[g][reward_key] for g in range(warmup + steps - reward_window + 1, warmup + steps + 1)]
    return steps / (t1 - t0), tokens / (t1 - t0), statistics.fmean(rewards), (cpu1 - cpu0) / steps


def run_one(contender: Contender, *, beta: float, num_iterations: int, repeat: int, args, model_dir: Path, prompts_file: Path,
            hp: dict, env: dict, profile: bool) -> RunResult:
    total_steps = args.warmup + (args.profile_steps if profile else args.steps)
    tag = f"{contender.name.replace('@', '-')}_b{beta}_mu{num_iterations}_r{repeat}{'_prof' if profile else ''}"
    run_dir = args.workdir / "runs" / tag
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    if contender.kind == "thinkrl":
        config = thinkrl_config(model_dir, hp, beta=beta, num_iterations=num_iterations, seed=repeat, max_steps=total_steps, out=run_dir / "run")
        config_path = run_dir / "config.yaml"
        import yaml

        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        overrides = ["eval.source=null", "checkpoint.export_hf=false", "log.report=false"]
        if profile:
            cmd = [sys.executable, str(ROOT / "benchmarks" / "thinkrl_profiled.py"), str(run_dir / "profile.jsonl"), "--config", str(config_path), *overrides]
        else:
            cmd = [sys.executable, "-m", "train", "--config", str(config_path), *overrides]
        metrics_path = run_dir / "run" / "metrics.jsonl"
        cwd = contender.root
    else:
        spec = {
            "model_dir": str(model_dir), "prompts_file": str(prompts_file), "attn_implementation": ATTN_IMPLEMENTATION,
            "hparams": {**hp, "beta": beta, "num_iterations": num_iterations}, "rewards": REWARDS, "seed": repeat,
            "grpo_steps": total_steps, "output_dir": str(run_dir / "trl_out"), "log_file": str(run_dir / "log.jsonl"),
            "profile": profile,
        }
        (run_dir / "spec.json").write_text(json.dumps(spec, indent=1))
        cmd = [sys.executable, str(ROOT / "benchmarks" / "trl_grpo_run.py"), str(run_dir / "spec.json")]
        metrics_path = run_dir / "log.jsonl"
        cwd = ROOT
    load = wait_for_quiet(args.max_load, args.max_wait)
    code, rss, arrivals, foreign = run_child(cmd, cwd, env, run_dir / "stdout.log", metrics_path)
    if code != 0:
        tail = (run_dir / "stdout.log").read_text()[-3000:]
        raise RuntimeError(f"{contender.name} beta={beta} mu={num_iterations} exited {code}:\n{tail}")
    records = read_jsonl(metrics_path)
    completions = hp["prompts_per_step"] * hp["num_generations"]
    measured = args.profile_steps if profile else args.steps
    sps, tps, reward, cpu = summarise(contender.kind, records, arrivals, num_iterations=num_iterations, warmup=args.warmup,
                                 steps=measured, completions=completions, reward_window=min(args.reward_window, measured))
    result = RunResult(contender.name, beta, num_iterations, repeat, sps, tps, rss, reward, load, foreign, cpu)
    if profile:
        source = read_jsonl(run_dir / "profile.jsonl") if contender.kind == "thinkrl" else records
        merged = grpo_steps(source, num_iterations, contender.kind)
        steps = [merged[g] for g in range(args.warmup + 1, args.warmup + measured + 1)]
        result.step_s = statistics.fmean(s["time/step_inner"] for s in steps)
        result.profile = {phase: statistics.fmean(s.get(f"profile/{phase}", 0.0) for s in steps) for phase in PHASES}
    print(f"  {tag}: {sps:.3f} steps/s, {tps:.1f} tok/s, {cpu:.3f} CPU s/step, {rss:.0f} MiB, reward {reward:.3f}, load {load:.2f}, "
          f"foreign {foreign:.2f} cores", flush=True)
    return result


def versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ["torch", "transformers", "trl", "deepspeed", "accelerate", "datasets"]
    return {"python": platform.python_version(), **{n: version(n) for n in names}}


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, {platform.system()} {platform.release()}, no GPU"


def fmt_ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def report(results: list[RunResult], profiles: list[RunResult], contenders: list[Contender], args, vocab: int, hp: dict,
           shape: dict, started: str, command: str) -> str:
    med = lambda xs: statistics.median(xs)  # noqa: E731
    settings = sorted({(r.beta, r.num_iterations) for r in results})
    lines = [
        "# thinkrl vs TRL GRPOTrainer on CPU",
        "",
        f"- Date: {started} (UTC); machine: {machine()}",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in versions().items())}",
        f"- Command: `{command}`",
        f"- Model: random-init Qwen2 {shape['num_hidden_layers']} layers, hidden {shape['hidden_size']}, intermediate "
        f"{shape['intermediate_size']}, {shape['num_attention_heads']} heads / {shape['num_key_value_heads']} KV heads, tied "
        f"embeddings, byte-level tokenizer (V = {vocab}), float32, {ATTN_IMPLEMENTATION} attention; one directory loaded by both.",
        f"- Task: `{DATA_SOURCE}`, r1_zero template (prompts ~380 tokens); rewards "
        f"{', '.join(f'{n} x{w}' for n, w in REWARDS)}.",
        f"- Hyper-parameters (both): B = {hp['prompts_per_step']} prompts x G = {hp['num_generations']} per step, "
        f"L <= {hp['max_completion_length']}, temperature {hp['temperature']}, top_p {hp['top_p']}, top_k off, "
        f"micro-batch {hp['micro_batch_size']} (one optimiser step = all {hp['prompts_per_step'] * hp['num_generations']} completions), "
        f"loss dapo, epsilon {hp['epsilon']} / {hp['epsilon_high']}, k3 KL without importance-ratio correction, AdamW lr {hp['lr']} constant, betas {tuple(hp['adam_betas'])}, "
        f"grad clip {hp['max_grad_norm']}, no gradient checkpointing, ZeRO-0 (thinkrl), seed = repeat index.",
        f"- Per run: {args.warmup} warmup GRPO steps, then {args.steps} timed; {args.repeats} repeats per trainer and "
        f"setting, alternating order; medians reported. Threads: "
        f"{'OMP_NUM_THREADS=' + str(args.threads) if args.threads else 'torch default (= cores)'}.",
        f"- Load: 1-minute load average at the start of the timed runs: min {min(r.load_at_start for r in results):.2f}, "
        f"median {med([r.load_at_start for r in results]):.2f}, max {max(r.load_at_start for r in results):.2f} "
        f"(runs wait up to {args.max_wait:.0f} s for < {args.max_load}); CPU used by other processes during the runs: "
        f"median {med([r.foreign_cores for r in results]):.2f} cores, max {max(r.foreign_cores for r in results):.2f}.",
        "",
        "A GRPO step = one batch of B x G completions and its num_iterations optimiser steps (TRL's `global_step` "
        "counts optimiser steps). steps/s and tokens/s are wall-clock over the timed steps, logging included. CPU s per "
        "step: CPU time (user + system) the trainer process used per step over the same steps; unlike wall-clock it "
        "hardly moves when other processes compete for the cores (with 1 thread; OpenMP threads spin while waiting). "
        "Peak RSS is the whole process (Python, torch, imports). Reward = mean total reward over the last "
        f"{min(args.reward_window, args.steps)} steps.",
        "",
        "## Results (median over repeats)",
        "",
        "| beta | num_iterations | trainer | GRPO steps/s | generated tokens/s | CPU s per step | peak RSS (MiB) | reward (last steps) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    table: dict[tuple, dict[str, float]] = {}
    for beta, mu in settings:
        for c in contenders:
            rs = [r for r in results if (r.beta, r.num_iterations, r.contender) == (beta, mu, c.name)]
            if not rs:
                continue
            row = {k: med([getattr(r, k) for r in rs]) for k in ("steps_per_s", "tokens_per_s", "cpu_s_per_step", "peak_rss_mib", "reward")}
            table[(beta, mu, c.name)] = row
            lines.append(f"| {beta} | {mu} | {c.name} | {row['steps_per_s']:.3f} | {row['tokens_per_s']:.1f} | "
                         f"{row['cpu_s_per_step']:.3f} | {row['peak_rss_mib']:.0f} | {row['reward']:.3f} |")
    lines += ["", "## Ratios (thinkrl / TRL)", "",
              "| beta | num_iterations | trainer | steps/s | tokens/s | steps per CPU-second | peak RSS | reward difference |",
              "|---|---|---|---|---|---|---|---|"]
    for beta, mu in settings:
        trl = table.get((beta, mu, "trl"))
        for c in contenders:
            mine = table.get((beta, mu, c.name))
            if c.kind != "thinkrl" or trl is None or mine is None:
                continue
            lines.append(f"| {beta} | {mu} | {c.name} | {fmt_ratio(mine['steps_per_s'], trl['steps_per_s'])} | "
                         f"{fmt_ratio(mine['tokens_per_s'], trl['tokens_per_s'])} | {fmt_ratio(trl['cpu_s_per_step'], mine['cpu_s_per_step'])} | "
                         f"{fmt_ratio(mine['peak_rss_mib'], trl['peak_rss_mib'])} | "
                         f"{mine['reward'] - trl['reward']:+.3f} |")
    if profiles:
        lines += ["", f"## Where a GRPO step's time goes (one profiled run each, mean of {args.profile_steps} steps after "
                  f"{args.warmup} warmup; seconds per GRPO step, share of the in-loop step time)", ""]
        lines += ["| beta | num_iterations | trainer | step (in loop) | " + " | ".join(PHASES) + " | other |",
                  "|---|---|---|---|" + "---|" * (len(PHASES) + 1)]
        for p in profiles:
            other = p.step_s - sum(p.profile.values())
            cells = [f"{p.profile[ph]:.3f} ({100 * p.profile[ph] / p.step_s:.0f}%)" for ph in PHASES]
            lines.append(f"| {p.beta} | {p.num_iterations} | {p.contender} | {p.step_s:.3f} | " + " | ".join(cells)
                         + f" | {other:.3f} ({100 * other / p.step_s:.0f}%) |")
        lines += ["", "generation: thinkrl `generate_rollouts` / TRL `_generate_single_turn` (sampling + masks); "
                  "old/ref log-prob forward: no-grad forwards for pi_old (num_iterations > 1) and the reference "
                  "(beta > 0); policy log-prob forward: the forward under autograd in the update; backward: "
                  "`engine.backward` / `accelerator.backward`; optimizer step: `engine.step` / clip + `AdamW.step`; "
                  "other: data, tokenisation, advantages, loss, metrics, framework overhead inside the step."]
    lines += ["", "## Every timed run", "", "| beta | num_iterations | trainer | repeat | steps/s | tokens/s | CPU s/step | peak RSS (MiB) | "
              "reward | load at start | foreign cores |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.beta} | {r.num_iterations} | {r.contender} | {r.repeat} | {r.steps_per_s:.3f} | {r.tokens_per_s:.1f} | {r.cpu_s_per_step:.3f} | "
                     f"{r.peak_rss_mib:.0f} | {r.reward:.3f} | {r.load_at_start:.2f} | {r.foreign_cores:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    script = Path(sys.argv[0]).resolve()
    command = " ".join(["python", str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else str(script), *sys.argv[1:]])
    shape = {**MODEL_SHAPE, "hidden_size": args.hidden_size, "num_hidden_layers": args.num_layers,
             "intermediate_size": 2 * args.hidden_size}
    hp = {**HPARAMS, "max_completion_length": args.max_completion_length}
    settings = SETTINGS if args.settings == "all" else [(float(b), int(m)) for b, m in (s.split(":") for s in args.settings.split(","))]
    args.workdir.mkdir(parents=True, exist_ok=True)
    model_dir, prompts_file, vocab = prepare(args.workdir, shape)
    contenders = [Contender("thinkrl", "thinkrl", ROOT), Contender("trl", "trl", ROOT)]
    if args.baseline_root is not None:
        contenders.insert(1, Contender("thinkrl@base", "thinkrl", args.baseline_root.resolve()))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled",
           "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    results, profiles = [], []
    for repeat in range(args.repeats):
        for beta, mu in settings:
            order = contenders if repeat % 2 == 0 else contenders[::-1]
            print(f"repeat {repeat}, beta {beta}, num_iterations {mu}", flush=True)
            for c in order:
                results.append(run_one(c, beta=beta, num_iterations=mu, repeat=repeat, args=args, model_dir=model_dir,
                                       prompts_file=prompts_file, hp=hp, env=env, profile=False))
    if args.profile_steps:
        for beta, mu in settings:
            print(f"profile, beta {beta}, num_iterations {mu}", flush=True)
            for c in contenders:
                profiles.append(run_one(c, beta=beta, num_iterations=mu, repeat=0, args=args, model_dir=model_dir,
                                        prompts_file=prompts_file, hp=hp, env=env, profile=True))
    text = report(results, profiles, contenders, args, vocab, hp, shape, started, command)
    args.out.write_text(text)
    print("\n" + text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
