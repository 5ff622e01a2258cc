"""DAPO dynamic sampling (Yu et al. 2025, arXiv:2503.14476 §3.2): train only on groups whose rewards differ.

A group whose G completions all get the same reward has zero advantage: it adds nothing to the policy gradient, yet
counts in the batch, so the effective batch shrinks as the model gets better (or stays hopeless) on a prompt. DAPO
over-samples and keeps only groups with spread until the batch is full. Here, per step and per rank: draw this
rank's B prompts, sample and score their groups, keep the informative ones (train/advantages.py::informative_groups),
and draw again while any rank still lacks B, at most `max_num_gen_batches` rounds (verl's name for the bound). Every
rank makes the same number of rounds (the decision is all-reduced), so ZeRO-3's lock-step generation stays matched,
and every rank's prompt sampler advances by the same draws, which its checkpointed state records: resume stays exact.

At the bound, `on_limit` decides: `pad` fills the batch with zero-spread groups from the rounds drawn (they train
nothing but keep the batch layout, and the step is logged as having hit the limit), `error` stops the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from rewards import RewardOutput
from train.advantages import informative_groups
from train.batch import RolloutBatch
from train.distributed import all_reduce_sum

ON_LIMIT = ("pad", "error")


class DynamicSamplingLimit(RuntimeError):
    """on_limit=error and the bound on rounds was reached with too few informative groups."""


@dataclass
class SampledGroups:
    """One rank's sampled and scored groups: B prompts, G completions each (group-major rows)."""

    prompt_texts: list[str]  # [B] rendered prompts
    columns: dict[str, list]  # [B] per-prompt dataset columns (answer, ...)
    rollout: RolloutBatch  # [B*G] completions
    scored: RewardOutput  # [B*G] rewards

    @property
    def num_groups(self) -> int:
        return len(self.prompt_texts)


def _pad_to(tensor: torch.Tensor, width: int, value: int, *, left: bool) -> torch.Tensor:
    missing = width - tensor.shape[1]
    if missing == 0:
        return tensor
    padding = tensor.new_full((tensor.shape[0], missing), value)
    return torch.cat([padding, tensor] if left else [tensor, padding], dim=1)


def select_groups(part: SampledGroups, groups: list[int]) -> SampledGroups:
    """The groups `groups` (indices into part's B prompts) of `part`, in that order."""
    G = part.rollout.group_size
    rows = [g * G + i for g in groups for i in range(G)]
    index = torch.tensor(rows, dtype=torch.long)
    rollout, scored = part.rollout, part.scored

    def pick(values: list) -> list:
        return [values[r] for r in rows]

    return SampledGroups(
        prompt_texts=[part.prompt_texts[g] for g in groups],
        columns={name: [values[g] for g in groups] for name, values in part.columns.items()},
        rollout=RolloutBatch(
            input_ids=rollout.input_ids[index.to(rollout.input_ids.device)],
            attention_mask=rollout.attention_mask[index.to(rollout.attention_mask.device)],
            completion_mask=rollout.completion_mask[index.to(rollout.completion_mask.device)],
            prompt_length=rollout.prompt_length, group_size=G, completion_texts=pick(rollout.completion_texts),
            truncated=rollout.truncated[index.to(rollout.truncated.device)],
        ),
        scored=RewardOutput(
            total=pick(scored.total), per_reward={name: pick(v) for name, v in scored.per_reward.items()},
            failures=dict(scored.failures), timeouts=dict(scored.timeouts),
            skipped={name: pick(v) for name, v in scored.skipped.items()}, applicable=pick(scored.applicable),
        ),
    )


def concat_groups(parts: list[SampledGroups], pad_token_id: int) -> SampledGroups:
    """The groups of `parts`, in order, as one batch: prompts left-padded and completions right-padded to the widest
    part (padding has attention and completion mask 0). Failure and timeout counts add up over the parts (every
    scored completion counts, kept or not)."""
    P = max(p.rollout.prompt_length for p in parts)
    L = max(p.rollout.completion_mask.shape[1] for p in parts)
    input_ids, attention_mask, completion_mask = [], [], []
    for part in parts:
        r = part.rollout
        prompt_ids, completion_ids = r.input_ids[:, : r.prompt_length], r.input_ids[:, r.prompt_length :]
        prompt_mask, completion_attention = r.attention_mask[:, : r.prompt_length], r.attention_mask[:, r.prompt_length :]
        input_ids.append(torch.cat([_pad_to(prompt_ids, P, pad_token_id, left=True), _pad_to(completion_ids, L, pad_token_id, left=False)], 1))
        attention_mask.append(torch.cat([_pad_to(prompt_mask, P, 0, left=True), _pad_to(completion_attention, L, 0, left=False)], 1))
        completion_mask.append(_pad_to(r.completion_mask, L, 0, left=False))

    def join(get) -> list:
        return [value for part in parts for value in get(part)]

    def add_counts(get) -> dict[str, int]:
        total: dict[str, int] = {}
        for part in parts:
            for name, count in get(part).items():
                total[name] = total.get(name, 0) + count
        return total

    first = parts[0]
    return SampledGroups(
        prompt_texts=join(lambda p: p.prompt_texts),
        columns={name: join(lambda p, n=name: p.columns[n]) for name in first.columns},
        rollout=RolloutBatch(
            input_ids=torch.cat(input_ids), attention_mask=torch.cat(attention_mask), completion_mask=torch.cat(completion_mask),
            prompt_length=P, group_size=first.rollout.group_size, completion_texts=join(lambda p: p.rollout.completion_texts),
            truncated=torch.cat([p.rollout.truncated for p in parts]),
        ),
        scored=RewardOutput(
            total=join(lambda p: p.scored.total),
            per_reward={name: join(lambda p, n=name: p.scored.per_reward[n]) for name in first.scored.per_reward},
            failures=add_counts(lambda p: p.scored.failures), timeouts=add_counts(lambda p: p.scored.timeouts),
            skipped={name: join(lambda p, n=name: p.scored.skipped[n]) for name in first.scored.skipped},
            applicable=join(lambda p: p.scored.applicable),
        ),
    )


def fill_with_informative_groups(
    draw: Callable[[], SampledGroups], *, max_num_gen_batches: int, on_limit: str, pad_token_id: int, device=None,
) -> tuple[SampledGroups, dict[str, float]]:
    """Call `draw` (one round: this rank's B prompts sampled and scored) until this rank holds B informative groups
    and so does every other rank, or `max_num_gen_batches` rounds were drawn. Collective: every rank calls it, and
    they all make the same number of rounds. Returns (B groups, informative ones first; metrics summed over ranks:
    rounds, groups drawn, informative groups drawn, zero-spread groups padded in, whether the bound was hit)."""
    if on_limit not in ON_LIMIT:
        raise ValueError(f"on_limit must be one of {ON_LIMIT}, got {on_limit!r}")
    kept: list[SampledGroups] = []
    spare: list[SampledGroups] = []  # zero-spread (or unjudgeable) groups, for padding at the bound
    have = drawn = informative_drawn = rounds = 0
    needed = None
    while True:
        part = draw()
        rounds += 1
        needed = part.num_groups if needed is None else needed
        informative = informative_groups(
            torch.tensor(part.scored.total, dtype=torch.float32), part.rollout.group_size,
            torch.tensor(part.scored.applicable, dtype=torch.bool) if part.scored.applicable else None,
        ).tolist()
        good = [g for g, ok in enumerate(informative) if ok]
        drawn, informative_drawn = drawn + part.num_groups, informative_drawn + len(good)
        take = good[: needed - have]
        if take:
            kept.append(select_groups(part, take))
            have += len(take)
        if have < needed:
            spare.append(select_groups(part, [g for g, ok in enumerate(informative) if not ok]))
        ranks_short = all_reduce_sum(torch.tensor([float(have < needed)], device=device)).item()
        if ranks_short == 0 or rounds >= max_num_gen_batches:
            break
    padded = needed - have
    if padded:
        if on_limit == "error":
            raise DynamicSamplingLimit(
                f"rollout.filter_groups: {have} of {needed} groups with reward spread on this rank after "
                f"max_num_gen_batches={max_num_gen_batches} rounds; raise it, or set rollout.filter_groups.on_limit=pad"
            )
        for part in spare:
            if padded == 0:
                break
            take = list(range(min(padded, part.num_groups)))
            if take:
                kept.append(select_groups(part, take))
                padded -= len(take)
    batch = concat_groups(kept, pad_token_id)
    counts = all_reduce_sum(torch.tensor([float(drawn), float(informative_drawn), float(needed - have), float(have < needed)], device=device))
    return batch, {
        "filter_groups/rounds": float(rounds), "filter_groups/groups_drawn": counts[0].item(),
        "filter_groups/groups_informative": counts[1].item(), "filter_groups/groups_padded": counts[2].item(),
        "filter_groups/hit_limit": float(counts[3].item() > 0),
    }
