"""Token-budget micro-batches (optim.max_tokens_per_micro_batch, train/micro_batches.py) and trimmed micro-batches:
the partition respects the budget, covers every row once, and a trimmed micro-batch computes the same log-probs. That
the update equals the big-batch one on 1 and 2 ranks is tests/test_equivalence.py's budget cases."""

import torch

from helpers import make_tiny_model
from train.batch import TrainBatch
from train.logprobs import completion_logprobs, sequence_logprobs
from train.micro_batches import MicroBatching, micro_batch_plan, split_to_count, token_budget_plan


def test_plan_respects_the_budget_and_covers_every_row_once():
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, 20, (40,), generator=gen).tolist()
    completions = torch.randint(1, 60, (40,), generator=gen).tolist()
    plan = token_budget_plan(prompts, completions, max_tokens=256)
    assert sorted(r for rows in plan for r in rows) == list(range(40))
    for rows in plan:
        cost = len(rows) * (max(prompts[r] for r in rows) + max(completions[r] for r in rows))
        assert cost <= 256 or len(rows) == 1
    assert len(plan) < 40 and max(len(rows) for rows in plan) > 3  # short rows share a micro-batch
    # Longest first: a micro-batch never holds a row longer than one of an earlier micro-batch.
    longest = [max(prompts[r] + completions[r] for r in rows) for rows in plan]
    assert longest == sorted(longest, reverse=True)


def test_a_row_over_the_budget_gets_its_own_micro_batch_and_counts_can_be_raised():
    plan = token_budget_plan([2, 2, 2], [100, 3, 3], max_tokens=16)
    assert plan == [[0], [1, 2]]
    assert split_to_count(plan, 3, [2, 2, 2], [100, 3, 3]) == [[0], [1], [2]]


def test_fixed_plan_is_consecutive_rows():
    mask = torch.ones(6, 5, dtype=torch.long)
    assert micro_batch_plan(mask, mask[:, -2:], micro_batch_size=4, max_tokens=None) == [[0, 1, 2, 3], [4, 5]]


def test_a_row_with_tool_output_costs_its_width_not_its_loss_tokens():
    """Tool output inside a completion is masked from the loss but still runs in the forward: a row whose loss mask is
    [1, 0, 0, ..., 0, 1] over 10 columns costs 10 completion columns, so it does not share a 20-token budget."""
    attention = torch.ones(3, 2 + 10, dtype=torch.long)
    loss_mask = torch.zeros(3, 10)
    loss_mask[0, 0] = loss_mask[0, 9] = 1  # model tokens around 8 tool tokens
    loss_mask[1, :2] = 1
    loss_mask[2, :2] = 1
    # Counted by the mask's sum, row 0 would cost 2 + 2 = 4 and all three rows would share one micro-batch (3 x 4 = 12).
    assert micro_batch_plan(attention, loss_mask, micro_batch_size=1, max_tokens=20) == [[0], [1, 2]]


def _padded_rows(tokenizer):
    """4 rows: prompts of 2-4 tokens left-padded to 6, completions of 1-3 tokens right-padded to 5."""
    gen = torch.Generator().manual_seed(1)
    P, L = 6, 5
    ids = torch.randint(0, 256, (4, P + L), generator=gen)
    attention = torch.zeros(4, P + L, dtype=torch.long)
    for row, (prompt, completion) in enumerate([(2, 1), (3, 3), (4, 2), (2, 2)]):
        attention[row, P - prompt : P + completion] = 1
    ids = ids.masked_fill(attention == 0, tokenizer.pad_token_id)
    return ids, attention, L


def test_trimmed_micro_batch_gives_the_same_logprobs(tokenizer):
    model = make_tiny_model(tokenizer).eval()
    ids, attention, L = _padded_rows(tokenizer)
    completion_mask = attention[:, -L:].float()
    batch = TrainBatch(ids, attention, completion_mask, torch.zeros(4), None, None)
    micro = batch.select([0, 3])  # prompts of 2 tokens, completions of 1-2: 4 of 6 prompt columns, 3 of 5 go
    assert micro.input_ids.shape == (2, 2 + 2) and micro.completion_mask.shape == (2, 2)
    with torch.no_grad():
        full, _ = completion_logprobs(model, ids, attention, L, temperature=1.0, chunk_size=0)
        trimmed, _ = completion_logprobs(model, micro.input_ids, micro.attention_mask, 2, temperature=1.0, chunk_size=0)
    valid = micro.completion_mask.bool()
    torch.testing.assert_close(trimmed[valid], full[[0, 3], :2][valid], rtol=1e-5, atol=1e-6)


def test_sequence_logprobs_with_a_token_budget_match_fixed_micro_batches(tokenizer):
    model = make_tiny_model(tokenizer).eval()
    ids, attention, L = _padded_rows(tokenizer)
    fixed = sequence_logprobs(model, ids, attention, L, micro_batching=MicroBatching(4), temperature=0.8, chunk_size=0)
    budget = sequence_logprobs(model, ids, attention, L, micro_batching=MicroBatching(4, max_tokens_per_micro_batch=12),
                               temperature=0.8, chunk_size=0)
    valid = attention[:, -L:].bool()
    torch.testing.assert_close(budget[valid], fixed[valid], rtol=1e-5, atol=1e-6)
    assert (budget[~valid] == 0).all()
