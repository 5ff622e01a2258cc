"""Which rows go into which micro-batch of the log-prob and update passes: a fixed row count, or a token budget.

Fixed (optim.micro_batch_size): consecutive rows, micro_batch_size at a time. Token budget (optim.max_tokens_per_micro_batch,
verl's use_dynamic_bsz / ppo_max_token_len_per_gpu): rows sorted by length, longest first, and cut into micro-batches
whose padded size (rows x (longest prompt + longest completion) of the micro-batch, since each one is trimmed to its
own widths, TrainBatch.trimmed) stays within the budget. Short completions then share a forward and a long one gets one
to itself, instead of every micro-batch being as wide as the longest completion of the step.

Every rank must make the same number of forwards and backwards (DeepSpeed's ZeRO collectives, and the gradient
accumulation boundary, which Engine.optimizer_step in train/engine.py sets at the last micro-batch): the count is the maximum over ranks,
and a rank that needs fewer splits its largest micro-batches until it has as many. The update stays the big-batch
update whatever the partition, because the loss is normalised by the step's token count, not per micro-batch
(train/update.py; tests/test_equivalence.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from train.distributed import all_reduce_max


def padding_bounds(prompt_mask: torch.Tensor, completion_mask: torch.Tensor) -> tuple[int, int]:
    """(first prompt column any row uses, completion columns up to the last one any row uses, at least 1) of a
    left-padded prompt mask [R, P] and a right-padded completion mask [R, L]: the columns worth running.

    >>> padding_bounds(torch.tensor([[0, 0, 1], [0, 1, 1]]), torch.tensor([[1, 0, 0], [1, 1, 0]]))
    (1, 2)
    """
    used_prompt = prompt_mask.any(dim=0).nonzero()
    first = int(used_prompt[0]) if used_prompt.numel() else prompt_mask.shape[1]
    used_completion = completion_mask.any(dim=0).nonzero()
    return first, max(1, int(used_completion[-1]) + 1 if used_completion.numel() else 1)


def completion_widths(completion_mask: torch.Tensor) -> torch.Tensor:
    """Per row, the columns up to and including its last nonzero mask entry (0 for an empty row).

    >>> completion_widths(torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 0, 0]])).tolist()
    [3, 0, 2]
    """
    positions = torch.arange(1, completion_mask.shape[1] + 1, device=completion_mask.device)
    return (completion_mask.ne(0).long() * positions).amax(dim=1)


def _cost(rows: list[int], prompt_lengths: list[int], completion_lengths: list[int]) -> int:
    return len(rows) * (max(prompt_lengths[r] for r in rows) + max(completion_lengths[r] for r in rows))


def token_budget_plan(prompt_lengths: list[int], completion_lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Row indices per micro-batch: longest rows first, each micro-batch's padded size <= max_tokens (a row longer than
    the budget alone gets a micro-batch of its own).

    >>> token_budget_plan([2, 2, 2, 2], [6, 1, 2, 8], max_tokens=16)
    [[3], [0, 2], [1]]
    """
    order = sorted(range(len(prompt_lengths)), key=lambda r: (-(prompt_lengths[r] + completion_lengths[r]), r))
    plan: list[list[int]] = []
    for row in order:
        if plan and _cost(plan[-1] + [row], prompt_lengths, completion_lengths) <= max_tokens:
            plan[-1].append(row)
        else:
            plan.append([row])
    return plan


def split_to_count(plan: list[list[int]], count: int, prompt_lengths: list[int], completion_lengths: list[int]) -> list[list[int]]:
    """`plan` with its costliest splittable micro-batches halved until it has `count` micro-batches.

    >>> split_to_count([[0, 1, 2, 3], [4]], 3, [1] * 5, [1] * 5)
    [[0, 1], [2, 3], [4]]
    """
    plan = [list(rows) for rows in plan]
    while len(plan) < count:
        splittable = [i for i, rows in enumerate(plan) if len(rows) > 1]
        if not splittable:
            raise ValueError(f"cannot make {count} micro-batches from {sum(map(len, plan))} rows")
        i = max(splittable, key=lambda j: (_cost(plan[j], prompt_lengths, completion_lengths), -j))
        half = len(plan[i]) // 2
        plan[i: i + 1] = [plan[i][:half], plan[i][half:]]
    return plan


def micro_batch_plan(attention_mask: torch.Tensor, completion_mask: torch.Tensor, *, micro_batch_size: int,
                     max_tokens: int | None) -> list[list[int]]:
    """Row indices of each micro-batch of a [N, P+L] batch whose last L columns are the completion. Collective with
    `max_tokens` (every rank gets the same number of micro-batches); without it, consecutive rows micro_batch_size at
    a time (the same count on every rank, as the batch layout checks make N equal)."""
    num_rows = attention_mask.shape[0]
    if max_tokens is None:
        return [list(range(start, min(start + micro_batch_size, num_rows))) for start in range(0, num_rows, micro_batch_size)]
    width = completion_mask.shape[1]
    prompt_lengths = attention_mask[:, :-width].sum(dim=1).tolist()
    # A row runs up to its last loss token, whatever lies before it: tool output inside a row is masked from the loss
    # but still in the forward, so the width, not the mask's sum, is its cost. A left-out row still runs one column.
    completion_lengths = [max(1, n) for n in completion_widths(completion_mask).tolist()]
    plan = token_budget_plan(prompt_lengths, completion_lengths, max_tokens)
    count = int(all_reduce_max(torch.tensor([len(plan)], dtype=torch.float64, device=attention_mask.device)).item())
    return split_to_count(plan, count, prompt_lengths, completion_lengths)


@dataclass(frozen=True)
class MicroBatching:
    """How a step's rows are cut into micro-batches: `micro_batch_size` rows at a time, or with
    `max_tokens_per_micro_batch` a token budget (the optim.* keys of the same names). Built once from the config, used
    by the log-prob and update passes alike."""

    micro_batch_size: int
    max_tokens_per_micro_batch: int | None = None

    def plan(self, attention_mask: torch.Tensor, completion_mask: torch.Tensor) -> list[list[int]]:
        """Row indices per micro-batch (micro_batch_plan); collective with a token budget."""
        return micro_batch_plan(attention_mask, completion_mask, micro_batch_size=self.micro_batch_size,
                                max_tokens=self.max_tokens_per_micro_batch)
