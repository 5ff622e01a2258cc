"""DAPO dynamic sampling (Yu et al. 2025, arXiv:2503.14476 §3.2): train only on groups whose rewards differ.

A group whose G completions all get the same reward has zero advantage: it adds nothing to the policy gradient, yet
counts in the batch, so the effective batch shrinks as the model gets better (or stays hopeless) on a prompt. DAPO
over-samples and keeps only groups with spread until the batch is full. Here, per step and per rank: draw this
rank's b = B/W prompts, sample and score their groups, keep the informative ones (train/advantages.py::informative_groups),
and draw again while any rank still lacks b, at most `max_num_gen_batches` rounds (verl's name for the bound). Every
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
    """One rank's sampled and scored groups: b = B/W prompts, G completions each (group-major rows)."""

    prompt_texts: list[str]  # [b] rendered prompts
    columns: dict[str, list]  # [b] per-prompt dataset columns (answer, ...)
    rollout: RolloutBatch  # [B*G] completions
    scored: RewardOutput  # [B*G] rewards

    @property
    def num_groups(self) -> int:
        return len(self.prompt_texts)


def select_groups(part: SampledGroups, groups: list[int]) -> SampledGroups:
    """The groups `groups` (indices into part's b prompts) of `part`, in that order."""
    G = part.rollout.group_size
    return SampledGroups(
        prompt_texts=[part.prompt_texts[g] for g in groups],
        columns={name: [values[g] for g in groups] for name, values in part.columns.items()},
        rollout=part.rollout.select_groups(groups),
        scored=part.scored.select([g * G + i for g in groups for i in range(G)]),
    )


def concat_groups(parts: list[SampledGroups], pad_token_id: int) -> SampledGroups:
    """The groups of `parts`, in order, as one batch (RolloutBatch.concat pads to the widest part). Failure and
    timeout counts add up over the parts (every scored completion counts, kept or not)."""
    return SampledGroups(
        prompt_texts=[text for part in parts for text in part.prompt_texts],
        columns={name: [v for part in parts for v in part.columns[name]] for name in parts[0].columns},
        rollout=RolloutBatch.concat([part.rollout for part in parts], pad_token_id),
        scored=RewardOutput.concat([part.scored for part in parts]),
    )


def fill_with_informative_groups(
    draw: Callable[[], SampledGroups], *, max_num_gen_batches: int, on_limit: str, pad_token_id: int, device=None,
) -> tuple[SampledGroups, dict[str, float]]:
    """Call `draw` (one round: this rank's b = B/W prompts sampled and scored) until this rank holds b informative groups
    and so does every other rank, or `max_num_gen_batches` rounds were drawn. Collective: every rank calls it, and
    they all make the same number of rounds. Returns (B groups, informative ones first; metrics summed over ranks:
    rounds, groups drawn, informative groups drawn, zero-spread groups padded in, whether the bound was hit)."""
    if on_limit not in ON_LIMIT:
        raise ValueError(f"on_limit must be one of {ON_LIMIT}, got {on_limit!r}")
    kept: list[SampledGroups] = []
    spare: list[SampledGroups] = []  # zero-spread (or unjudgeable) groups, for padding at the bound
    have = drawn = informative_drawn = rounds = 0
    needed = None
    tool_seconds: dict[str, float] = {}  # every round's tool time once, whether its groups are kept, spare or dropped
    while True:
        part = draw()
        rounds += 1
        for name, seconds in (part.rollout.tool_seconds or {}).items():
            tool_seconds[name] = tool_seconds.get(name, 0.0) + seconds
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
    batch.rollout.tool_seconds = tool_seconds or None
    counts = all_reduce_sum(torch.tensor([float(drawn), float(informative_drawn), float(needed - have), float(have < needed)], device=device))
    return batch, {
        "filter_groups/rounds": float(rounds), "filter_groups/groups_drawn": counts[0].item(),
        "filter_groups/groups_informative": counts[1].item(), "filter_groups/groups_padded": counts[2].item(),
        "filter_groups/hit_limit": float(counts[3].item() > 0),
    }
