"""grpo.mask_truncated_completions (TrainBatch.from_rollout, as train/main.py calls it): a completion cut at
max_completion_length is left out of the loss and of its token counts, while its reward has already shaped its
group's advantages (TRL's option of this name; DAPO's overlong filtering, arXiv:2503.14476 §3.4)."""

import pytest
import torch

from train.batch import RolloutBatch, TrainBatch
from train.update import step_normalisers

from helpers import N, PROMPT, WIDTH, make_batch, run_update

LENGTHS = [6, 1, 3, 6, 2, 5, 4, 6]  # make_batch's completion lengths; WIDTH 6 is the cap, so rows 0, 3 and 7 are cut


def _rollout(tokenizer) -> tuple[RolloutBatch, torch.Tensor]:
    fixed = make_batch(tokenizer)
    assert fixed.completion_mask.sum(1).tolist() == LENGTHS
    truncated = torch.tensor([length == WIDTH for length in LENGTHS])
    rollout = RolloutBatch(input_ids=fixed.input_ids, attention_mask=fixed.attention_mask,
                           completion_mask=fixed.completion_mask.long(), prompt_length=PROMPT, group_size=4,
                           completion_texts=[""] * N, truncated=truncated)
    return rollout, fixed.advantages


def test_cut_completions_leave_the_loss_and_its_token_counts(tokenizer):
    rollout, advantages = _rollout(tokenizer)
    kept = torch.ones(N, dtype=torch.bool)
    masked = TrainBatch.from_rollout(rollout, kept, advantages, mask_truncated=True)
    assert masked.completion_mask.sum(1).tolist() == [0, 1, 3, 0, 2, 5, 4, 0]
    assert step_normalisers(masked.completion_mask) == (15.0, 5.0)  # 1 + 3 + 2 + 5 + 4 tokens in 5 completions
    torch.testing.assert_close(masked.advantages, advantages)  # the advantages are the caller's, untouched
    unmasked = TrainBatch.from_rollout(rollout, kept, advantages)
    assert step_normalisers(unmasked.completion_mask) == (33.0, 8.0)
    # A row its group already left out stays out either way.
    partly_kept = torch.tensor([True, False, True, True, True, True, True, True])
    assert TrainBatch.from_rollout(rollout, partly_kept, advantages, mask_truncated=True).completion_mask.sum(1).tolist() \
        == [0, 0, 3, 0, 2, 5, 4, 0]


@pytest.mark.parametrize("micro_batch_size", [8, 2])
def test_the_update_trains_on_the_uncut_completions_only(tokenizer, dist_single, micro_batch_size):
    """At ratio 1 (the first update on a rollout) the dapo loss is -sum_i A_i * len_i / tokens over the trained rows:
    with the mask, the cut rows add nothing to the sum nor to its 15 tokens, in one batch or in micro-batches; and
    the weights move differently from an update that trains on them."""
    rollout, advantages = _rollout(tokenizer)
    kept = torch.ones(N, dtype=torch.bool)
    lengths = torch.tensor(LENGTHS, dtype=torch.float32)
    uncut = ~rollout.truncated

    masked = TrainBatch.from_rollout(rollout, kept, advantages, mask_truncated=True)
    metrics, masked_delta = run_update(tokenizer, masked, micro_batch_size, "dapo")
    assert metrics["loss"] == pytest.approx(-(advantages * lengths)[uncut].sum().item() / 15.0, rel=1e-5)

    every_row = TrainBatch.from_rollout(rollout, kept, advantages)
    metrics, delta = run_update(tokenizer, every_row, micro_batch_size, "dapo")
    assert metrics["loss"] == pytest.approx(-(advantages * lengths).sum().item() / 33.0, rel=1e-5)
    assert any(not torch.allclose(masked_delta[name], delta[name]) for name in delta)
