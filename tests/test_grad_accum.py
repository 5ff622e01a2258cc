"""Micro-batching through DeepSpeed gives the same update as one big batch (loss, gradient norm and new weights).

AdamW's first step is ~lr*sign(g), which would hide a wrong gradient scale; with adam_eps far above |g| the update is
lr*g/eps instead, linear in the gradient, so comparing weights compares gradients.
"""

import pytest
import torch

from helpers import N, make_batch, run_update

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


@pytest.mark.parametrize("zero_stage", [0, 2])
@pytest.mark.parametrize("zero_rows", [[2, 3, 4, 5], list(range(N))], ids=["two-micro-batches", "every-row"])
def test_micro_batches_of_zero_advantage_skip_the_backward_bit_for_bit(tokenizer, dist_single, zero_stage, zero_rows):
    """Rows of advantage 0 at beta 0 (DAPO pads with such groups): micro-batches [2,3] and [4,5] (or every one but the
    boundary) get no backward, and the update, loss and every metric are bit-identical to running them."""
    batch = make_batch(tokenizer)
    batch.advantages[zero_rows] = 0.0
    skipped_calls, full_calls = [], []
    skipped_metrics, skipped_delta = run_update(tokenizer, batch, 2, "dapo", zero_stage=zero_stage, backward_calls=skipped_calls)
    full_metrics, full_delta = run_update(tokenizer, batch, 2, "dapo", zero_stage=zero_stage, skip_zero_gradient=False,
                                          backward_calls=full_calls)
    assert len(full_calls) == N // 2 and len(skipped_calls) == N // 2 - (2 if len(zero_rows) < N else N // 2 - 1)
    assert skipped_metrics == full_metrics
    for name, delta in full_delta.items():
        assert torch.equal(skipped_delta[name], delta), name
    if len(zero_rows) < N:
        assert full_metrics["grad_norm"] > 0 and all(d.abs().max() > 0 for d in full_delta.values())
    else:
        assert full_metrics["grad_norm"] == 0
