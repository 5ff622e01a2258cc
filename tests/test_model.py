"""Model sources (HF directory, tiny config), the byte tokenizer, the LR schedule and the DeepSpeed config."""

import pytest
import torch

from train.engine import lr_lambda
from train.model import ModelLoadError, build_byte_tokenizer, frozen_copy, load_pretrained

from helpers import engine_spec, make_tiny_model
from helpers import SMOKE, read_jsonl, run_train


def test_byte_tokenizer_round_trips_any_text():
    tokenizer = build_byte_tokenizer()
    for text in ["12 + 30 = 42", "<think> x </think><answer>7</answer>", "émoji 🤖 and 漢字", ""]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    # Reasoning tags are single tokens; EOS is special and dropped by skip_special_tokens.
    assert len(tokenizer("<think>", add_special_tokens=False)["input_ids"]) == 1
    ids = tokenizer("hi", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "hi"
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False, add_generation_prompt=True)
    assert chat.endswith("<|im_start|>assistant\n")


def test_tiny_model_is_seeded(tokenizer):
    a, b, c = make_tiny_model(tokenizer, seed=3), make_tiny_model(tokenizer, seed=3), make_tiny_model(tokenizer, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    assert a.config.vocab_size == len(tokenizer)


def test_load_pretrained_directory_round_trip(tokenizer, tmp_path):
    model = make_tiny_model(tokenizer, seed=5)
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    loaded, loaded_tok = load_pretrained(str(tmp_path / "m"), dtype="float32", attn_implementation="eager", trust_remote_code=False)
    for (name, p), q in zip(model.named_parameters(), loaded.parameters()):
        assert torch.equal(p, q), name
    assert loaded_tok("<answer>", add_special_tokens=False)["input_ids"] == tokenizer("<answer>", add_special_tokens=False)["input_ids"]
    reference = frozen_copy(loaded)
    assert not any(p.requires_grad for p in reference.parameters()) and not reference.training


def test_load_pretrained_missing_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="no HF model directory there"):
        load_pretrained(str(tmp_path / "nope"), dtype="float32", attn_implementation="eager", trust_remote_code=False)


def test_lr_schedule():
    # warmup 4 steps: (s+1)/5, then the schedule over the remaining 6 of 10 steps
    assert [lr_lambda(s, warmup_steps=4, total_steps=10, schedule="constant") for s in range(4)] == [0.2, 0.4, 0.6, 0.8]
    assert lr_lambda(7, warmup_steps=4, total_steps=10, schedule="constant") == 1.0
    assert lr_lambda(4, warmup_steps=4, total_steps=10, schedule="linear") == 1.0
    assert lr_lambda(7, warmup_steps=4, total_steps=10, schedule="linear") == pytest.approx(0.5)
    assert lr_lambda(7, warmup_steps=4, total_steps=10, schedule="cosine") == pytest.approx(0.5)
    assert lr_lambda(10, warmup_steps=4, total_steps=10, schedule="cosine") == pytest.approx(0.0)


def test_deepspeed_config_batch_sizes_always_ours():
    config = engine_spec(
        zero_stage=2, micro_batch_size=4, grad_accum_steps=3, world_size=2, dtype="bfloat16",
        overrides={"train_batch_size": 999, "zero_optimization": {"stage": 1}},
    ).deepspeed_config()
    assert config["train_batch_size"] == 24 and config["gradient_accumulation_steps"] == 3
    assert config["zero_optimization"] == {"stage": 1}  # a config file's section replaces ours
    assert config["bf16"]["enabled"] and not config["fp16"]["enabled"]


@pytest.mark.slow
def test_train_from_hf_directory(tokenizer, tmp_path):
    """model.name_or_path: a local HF directory trains end to end like a tiny config does."""
    model = make_tiny_model(tokenizer, seed=2)
    model.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    result = run_train([
        "--config", str(SMOKE), "model.tiny=null", f"model.name_or_path={tmp_path / 'policy'}", "max_steps=1",
        f"output_dir={tmp_path}", "run_name=hf", "eval.source=null",
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(read_jsonl(tmp_path / "hf" / "metrics.jsonl")) == 1


def test_reference_is_placed_on_the_policy_engine_device(tokenizer, dist_single):
    """ZeRO 0-2: the reference goes where DeepSpeed put the policy, which the engine alone knows (`engine.device`).

    The real engine here is on the CPU; its device is set to "meta" to stand in for a GPU, where DeepSpeed moves the
    policy and (before this fix) the reference stayed on the CPU, so a beta > 0 run failed at its first step."""
    from helpers import build_engine

    model = make_tiny_model(tokenizer, seed=2)
    reference = frozen_copy(model)
    engine = build_engine(model, zero_stage=2)
    assert engine.zero_stage == 2 and not engine.sharded
    engine.ds.device = torch.device("meta")  # the accelerator DeepSpeed would have put the policy on
    placed = engine._place_reference(reference, dtype="float32")
    assert {p.device.type for p in placed.parameters()} == {"meta"}
    assert not any(p.requires_grad for p in placed.parameters()) and not placed.training
