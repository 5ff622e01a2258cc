"""Micro-batching through DeepSpeed gives the same update as one big batch (loss, gradient norm and new weights).

AdamW's first step is ~lr*sign(g), which would hide a wrong gradient scale; with adam_eps far above |g| the update is
lr*g/eps instead, linear in the gradient, so comparing weights compares gradients.
"""

import pytest
import torch

from train.batch import TrainBatch
from train.model import build_engine, deepspeed_config
from train.update import policy_update

from conftest import make_tiny_model

N, PROMPT, WIDTH = 8, 5, 6


def make_batch(tokenizer, seed=0):
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 256, (N, PROMPT + WIDTH), generator=gen)
    completion_mask = torch.ones(N, WIDTH)
    for row, length in enumerate([6, 1, 3, 6, 2, 5, 4, 6]):  # unequal lengths make the normaliser matter
        completion_mask[row, length:] = 0
        input_ids[row, PROMPT + length :] = tokenizer.pad_token_id
    attention_mask = torch.cat([torch.ones(N, PROMPT, dtype=torch.long), completion_mask.long()], 1)
    advantages = torch.randn(N, generator=gen)
    return TrainBatch(input_ids, attention_mask, completion_mask, advantages, old_logprobs=None, ref_logprobs=None)


def run_update(tokenizer, batch, micro_batch_size, loss_type):
    model = make_tiny_model(tokenizer, seed=1)
    config = deepspeed_config(
        zero_stage=0, micro_batch_size=micro_batch_size, grad_accum_steps=N // micro_batch_size, world_size=1,
        max_grad_norm=1e9, dtype="float32", offload_optimizer=False, offload_param=False,
    )
    engine = build_engine(model, config, lr=1.0, betas=(0.9, 0.999), eps=1e3, weight_decay=0.0, warmup_steps=0, total_steps=1, schedule="constant")
    before = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
    metrics = policy_update(
        engine, batch, micro_batch_size=micro_batch_size, world_size=1, temperature=1.0, logprob_chunk_size=4,
        loss_type=loss_type, epsilon=0.2, epsilon_high=0.28, beta=0.0, max_completion_length=WIDTH, importance_sampling_level="token",
    )
    delta = {n: p.detach() - before[n] for n, p in engine.module.named_parameters()}
    return metrics, delta


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_micro_batches_equal_one_batch(tokenizer, dist_single, loss_type):
    batch = make_batch(tokenizer)
    big_metrics, big_delta = run_update(tokenizer, batch, micro_batch_size=N, loss_type=loss_type)
    micro_metrics, micro_delta = run_update(tokenizer, batch, micro_batch_size=2, loss_type=loss_type)
    assert big_metrics["grad_norm"] > 0
    assert micro_metrics["loss"] == pytest.approx(big_metrics["loss"], rel=1e-5, abs=1e-7)
    assert micro_metrics["grad_norm"] == pytest.approx(big_metrics["grad_norm"], rel=1e-4)
    assert micro_metrics["entropy"] == pytest.approx(big_metrics["entropy"], rel=1e-5)
    moved = 0
    for name, delta in big_delta.items():
        # Relative to the tensor's norm: float32 sums in another order differ by ~1e-7 of the norm, a wrong
        # normaliser (e.g. a factor 1/4 from accumulation) by far more.
        error = (micro_delta[name] - delta).norm() / delta.norm()
        assert error < 1e-4, f"{name}: relative error {error:.2e}"
        moved += int(delta.abs().max() > 0)
    assert moved == len(big_delta), "every parameter should receive a gradient"


def test_bnpo_depends_on_micro_batch(tokenizer, dist_single):
    """bnpo normalises per micro-batch (TRL's definition): with unequal lengths it differs from one batch."""
    batch = make_batch(tokenizer)
    big, _ = run_update(tokenizer, batch, micro_batch_size=N, loss_type="bnpo")
    micro, _ = run_update(tokenizer, batch, micro_batch_size=2, loss_type="bnpo")
    assert micro["grad_norm"] != pytest.approx(big["grad_norm"], rel=1e-3)
