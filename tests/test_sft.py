"""train.sft and data.sft_examples: completion-only labels (hand-checked), packing = separate examples, micro-batched = one batch through
DeepSpeed, and a few SFT steps lower the loss and hand back a clean module with the trained weights."""

from __future__ import annotations

import pytest
import torch

from data.traces import add_traces
from data.synthetic import make_arithmetic
from data.sft_examples import (
    IGNORE_INDEX, PAD_SEGMENT, SFTExample, block_causal_mask, build_examples, collate_rows, pack_examples, step_rows,
    tokenize_example,
)
from train.sft import label_logprobs, sft_loss, sft_stage, sft_update

from helpers import TINY_SHAPE, build_engine, child_env, engine_spec

TEMPLATE = dict(template="plain", system_prompt=None, prefill_think=True)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matmuls: one thread is several times faster than two on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_tiny_model(tokenizer, seed=0, attn_implementation="sdpa"):
    from train.model import build_tiny_model

    return build_tiny_model(tokenizer, **TINY_SHAPE, dtype="float32", attn_implementation=attn_implementation, seed=seed)


def _examples(tokenizer, n=6, seed=0):
    rows = add_traces(make_arithmetic(n, seed, ops=("+", "-")), "arithmetic")
    examples, dropped = build_examples(rows, tokenizer, **TEMPLATE, max_length=256)
    assert dropped == 0
    return examples


def test_completion_only_labels_hand_checked(tokenizer):
    example = tokenize_example("What is 1 + 2?", "<think> 1+2=3 </think> <answer>3</answer>", tokenizer, **TEMPLATE)
    # Prompt "What is 1 + 2?\n<think>": 15 bytes + the <think> token; the completion loses its leading <think>
    # (the prompt ends with one) and is " 1+2=3 " (7 bytes), </think>, " " , <answer>, "3", </answer>, EOS.
    prompt_len, completion_len = 15 + 1, 7 + 1 + 1 + 1 + 1 + 1 + 1
    assert len(example.input_ids) == prompt_len + completion_len
    assert example.labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert example.labels[prompt_len:] == example.input_ids[prompt_len:]
    assert example.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(example.input_ids[:prompt_len]) == "What is 1 + 2?\n<think>"
    assert tokenizer.decode(example.input_ids[prompt_len:-1]) == " 1+2=3 </think> <answer>3</answer>"


def test_chat_template_example_trains_only_the_assistant_turn(tokenizer):
    """An instruct-style example: the prompt is the tokenizer's chat template (system + user turn + the assistant
    header), exactly as GRPO renders it; labels cover only the assistant's completion and EOS."""
    from data.templates import render_prompt

    messages = [{"role": "user", "content": "What is 1 + 2?"}]
    rendered = render_prompt(messages, tokenizer, template="chat", system_prompt="Be brief.", prefill_think=False)
    assert rendered == tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, *messages], tokenize=False, add_generation_prompt=True)
    completion = "<think> 1+2=3 </think> <answer>3</answer>"
    example = tokenize_example(messages, completion, tokenizer, template="chat", system_prompt="Be brief.", prefill_think=False)
    prompt_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]  # the template writes its own specials
    assert example.input_ids[: len(prompt_ids)] == prompt_ids
    assert example.labels == [IGNORE_INDEX] * len(prompt_ids) + example.input_ids[len(prompt_ids) :]
    assert tokenizer.decode(example.input_ids[len(prompt_ids) : -1]) == completion
    assert example.input_ids[-1] == tokenizer.eos_token_id


def test_too_long_examples_are_dropped_not_cut(tokenizer):
    rows = [{"prompt": "What is 1 + 2?", "completion": "<think> 1+2=3 </think> <answer>3</answer>"},
            {"prompt": "What is 1 + 2?", "completion": "<think> " + "x" * 100 + " </think> <answer>3</answer>"}]
    examples, dropped = build_examples(rows, tokenizer, **TEMPLATE, max_length=40)
    assert (len(examples), dropped) == (1, 1)


def test_packing_layout(tokenizer):
    examples = [SFTExample([1, 2, 3], [IGNORE_INDEX, 2, 3]), SFTExample([4, 5], [IGNORE_INDEX, 5]), SFTExample([6] * 4, [IGNORE_INDEX] + [6] * 3)]
    rows = pack_examples(examples, max_length=6)
    assert [[len(e.input_ids) for e in row] for row in rows] == [[3, 2], [4]]
    batch = collate_rows(rows, pad_token_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5], [6, 6, 6, 6, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert batch.segment_ids.tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 0, PAD_SEGMENT]]
    assert batch.labels.tolist() == [[IGNORE_INDEX, 2, 3, IGNORE_INDEX, 5], [IGNORE_INDEX, 6, 6, 6, IGNORE_INDEX]]
    mask = block_causal_mask(batch.segment_ids, torch.float32)[0, 0]
    assert (mask == 0).int().tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_rows_give_the_same_per_token_logprobs_as_separate_examples(tokenizer, attn):
    model = make_tiny_model(tokenizer, attn_implementation=attn)
    examples = _examples(tokenizer)
    separate = torch.cat([label_logprobs(model, collate_rows([[ex]], tokenizer.pad_token_id), chunk_size=0) for ex in examples])
    rows = pack_examples(examples, max_length=256)
    assert len(rows) < len(examples)  # several examples really share a row
    packed = label_logprobs(model, collate_rows(rows, tokenizer.pad_token_id), chunk_size=7)  # chunked LM head too
    assert packed.shape == separate.shape
    torch.testing.assert_close(packed, separate, atol=1e-5, rtol=1e-5)
    # Without the block mask the second example would attend to the first: the test above would notice.
    unmasked = collate_rows(rows, tokenizer.pad_token_id)
    unmasked.segment_ids.zero_()
    assert not torch.allclose(label_logprobs(model, unmasked, chunk_size=0), separate, atol=1e-4)


def test_sft_loss_hand_computed():
    # Two tokens with p = 1/2 and 1/4, normalised by 4 tokens of the whole step: (ln 2 + ln 4) / 4 = 3 ln 2 / 4.
    loss = sft_loss(torch.log(torch.tensor([0.5, 0.25])), num_tokens=4.0)
    assert loss.item() == pytest.approx(3 * torch.log(torch.tensor(2.0)).item() / 4)


def _engine(tokenizer, micro_batch_size, rows_per_step, zero_stage=0):
    model = make_tiny_model(tokenizer, seed=3, attn_implementation="sdpa")
    # eps far above |g|: AdamW's first step is lr*g/eps, linear in the gradient (tests/test_grad_accum.py's trick).
    return build_engine(model, zero_stage=zero_stage, micro_batch_size=micro_batch_size,
                        grad_accum_steps=rows_per_step // micro_batch_size, max_grad_norm=1e9, lr=1.0, betas=(0.9, 0.999),
                        eps=1e3, total_steps=1)


def test_micro_batches_equal_one_batch(tokenizer, dist_single):
    rows = [[ex] for ex in _examples(tokenizer, n=4)]  # unequal completion lengths: the normaliser matters
    batch = collate_rows(rows, tokenizer.pad_token_id)
    results = []
    for micro in (4, 1):
        engine = _engine(tokenizer, micro, 4)
        before = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
        metrics = sft_update(engine, batch, micro_batch_size=micro, chunk_size=0)
        results.append((metrics, {n: p.detach() - before[n] for n, p in engine.module.named_parameters()}))
    (big, big_delta), (small, small_delta) = results
    assert small["loss"] == pytest.approx(big["loss"], rel=1e-5)
    assert small["num_tokens"] == big["num_tokens"] == batch.completion_mask[:, 1:].sum().item()
    assert small["grad_norm"] == pytest.approx(big["grad_norm"], rel=1e-4)
    for name, delta in big_delta.items():
        assert (small_delta[name] - delta).norm() <= 1e-4 * delta.norm() + 1e-12, name


def test_step_rows_cover_each_row_once_per_epoch_and_are_seeded():
    stream = [i for step in range(5) for i in step_rows(10, step, 4, seed=1)]  # 20 = two epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    assert step_rows(10, 3, 4, seed=1) == step_rows(10, 3, 4, seed=1) != step_rows(10, 3, 4, seed=2)


@pytest.mark.parametrize("zero_stage,packing,steps", [(0, True, 12), (2, False, 6), (3, True, 6)])
def test_sft_stage_lowers_the_loss_and_returns_a_clean_trained_module(tokenizer, dist_single, zero_stage, packing, steps):
    model = make_tiny_model(tokenizer, seed=0, attn_implementation="sdpa")
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = add_traces(make_arithmetic(64, 0, min_digits=2, max_digits=2, ops=("+",)), "arithmetic")
    trained, result = sft_stage(
        model, tokenizer, rows, **TEMPLATE, max_length=128, packing=packing, max_steps=steps, epochs=1.0,
        batch_size=4 if packing else 8, seed=0, rank=0, show_progress=False,
        engine_spec=engine_spec(zero_stage=zero_stage, micro_batch_size=2 if packing else 4, lr=3e-3),
    )
    losses = [m["loss"] for m in result.history]
    assert len(losses) == steps and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.9 * losses[0]
    assert result.metrics["sft/steps"] == steps and result.metrics["sft/skipped_steps"] == 0
    assert trained is not model
    assert not any(module._forward_pre_hooks or module._forward_hooks for module in trained.modules())
    params = dict(trained.named_parameters())
    assert all(p.device.type == "cpu" and p.numel() == initial[n].numel() for n, p in params.items())
    assert all(not torch.equal(params[n], initial[n]) for n in initial), "every parameter should have been trained"
    # The trained module is the policy that gave the last loss: recompute that step's loss without an engine.
    examples, _ = build_examples(rows, tokenizer, **TEMPLATE, max_length=128)
    batch = collate_rows([[ex] for ex in examples[:8]], tokenizer.pad_token_id)
    with torch.no_grad():
        loss = sft_loss(label_logprobs(trained, batch, chunk_size=0), num_tokens=batch.completion_mask[:, 1:].sum().item())
    assert loss.item() < losses[0]


# ---------------------------------------------------------------------------------------------------------------------
# Two ranks under torchrun (ZeRO-2): the same global batches give the same losses and weights as one process.

TWO_RANK_STEPS = 3


def _two_rank_case(world_size: int, rank: int, zero_stage: int):
    """Shared by both sides: the same rows, seed and global batch (8 rows per step) whatever the world size."""
    from train.model import build_byte_tokenizer

    tokenizer = build_byte_tokenizer()
    model = make_tiny_model(tokenizer, seed=0)
    rows = add_traces(make_arithmetic(48, 0, min_digits=1, max_digits=2, ops=("+", "-")), "arithmetic")
    return sft_stage(
        model, tokenizer, rows, **TEMPLATE, max_length=128, packing=False, max_steps=TWO_RANK_STEPS, epochs=1.0,
        batch_size=8, seed=0, rank=rank, show_progress=False,
        engine_spec=engine_spec(zero_stage=zero_stage, micro_batch_size=2, world_size=world_size, lr=3e-3, max_grad_norm=0.5),
    )


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_ranks_zero2_match_one_process(tmp_path, dist_single):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = child_env({"OMP_NUM_THREADS": "1", "PYTHONPATH": f"{repo}{os.pathsep}{repo / 'tests'}"})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__, str(tmp_path)]
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    one_model, one_result = _two_rank_case(world_size=1, rank=0, zero_stage=0)
    for rank in (0, 1):
        saved = torch.load(tmp_path / f"rank{rank}.pt")
        assert saved["losses"] == pytest.approx([m["loss"] for m in one_result.history], rel=1e-5)
        assert saved["num_tokens"] == [m["num_tokens"] for m in one_result.history]
        for name, weight in one_model.state_dict().items():  # every rank holds the full trained weights
            torch.testing.assert_close(saved["weights"][name], weight, atol=1e-5, rtol=1e-4)


if __name__ == "__main__":  # the torchrun worker of test_two_ranks_zero2_match_one_process
    import sys

    from train.distributed import init_distributed

    info = init_distributed()
    trained, result = _two_rank_case(world_size=info.world_size, rank=info.rank, zero_stage=2)
    torch.save({"losses": [m["loss"] for m in result.history], "num_tokens": [m["num_tokens"] for m in result.history],
                "weights": trained.state_dict()}, f"{sys.argv[1]}/rank{info.rank}.pt")
