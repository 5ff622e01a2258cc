"""data.sampler.PromptSampler: rank-disjoint, deterministic, exactly resumable, rolls over epochs."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from data.sampler import PromptSampler


def _ranks(num_rows=12, prompts_per_rank=2, world_size=3, seed=0, **kw) -> list[PromptSampler]:
    return [
        PromptSampler(num_rows, prompts_per_rank, seed=seed, rank=r, world_size=world_size, **kw)
        for r in range(world_size)
    ]


def test_ranks_take_disjoint_slices_of_one_shared_permutation():
    samplers = _ranks(num_rows=12, prompts_per_rank=2, world_size=3, seed=5)
    epoch0 = []
    for _ in range(2):  # 12 rows / global batch 6 = 2 steps per epoch
        per_rank = [s.next_indices() for s in samplers]
        assert all(len(ix) == 2 for ix in per_rank)
        epoch0 += [i for ix in per_rank for i in ix]
    # Rank slices laid end to end are exactly the epoch-0 permutation from seed + 0.
    assert epoch0 == torch.randperm(12, generator=torch.Generator().manual_seed(5 + 0)).tolist()


def test_same_seed_same_order_other_seed_other_order():
    a, b, c = (PromptSampler(50, 4, seed=s, rank=0, world_size=1) for s in (1, 1, 2))
    draws_a = [a.next_indices() for _ in range(30)]
    assert draws_a == [b.next_indices() for _ in range(30)]
    assert draws_a != [c.next_indices() for _ in range(30)]


def test_resume_mid_epoch_continues_exactly():
    original = PromptSampler(23, 3, seed=0, rank=1, world_size=2)  # global batch 6, 3 steps per epoch
    for _ in range(5):  # stop in the middle of epoch 1
        original.next_indices()
    state = original.state_dict()
    assert state == {"epoch": 1, "position": 12, "num_rows": 23, "seed": 0}

    resumed = PromptSampler(23, 3, seed=0, rank=1, world_size=2)
    resumed.load_state_dict(state)
    assert resumed.epoch == original.epoch
    assert [resumed.next_indices() for _ in range(10)] == [original.next_indices() for _ in range(10)]


def test_resume_onto_another_world_size_keeps_the_global_order():
    one_rank = PromptSampler(20, 4, seed=3, rank=0, world_size=1)
    one_rank.next_indices()
    two_ranks = _ranks(num_rows=20, prompts_per_rank=2, world_size=2, seed=3)
    for s in two_ranks:
        s.load_state_dict(one_rank.state_dict())
    assert [i for s in two_ranks for i in s.next_indices()] == one_rank.next_indices()


def test_drop_last_rollover_starts_a_new_permutation():
    sampler = PromptSampler(10, 4, seed=0, rank=0, world_size=1)  # 2 full batches, 2 rows dropped per epoch
    assert sampler.steps_per_epoch == 2
    epochs = []
    for _ in range(3):
        assert sampler.epoch == len(epochs)
        epoch = sampler.next_indices() + sampler.next_indices()
        assert len(set(epoch)) == 8  # no repeats within an epoch
        epochs.append(epoch)
    assert sampler.epoch == 3
    assert epochs[1] == torch.randperm(10, generator=torch.Generator().manual_seed(1)).tolist()[:8]
    assert epochs[0] != epochs[1]


def test_without_drop_last_every_row_is_seen_once_per_epoch():
    sampler = PromptSampler(10, 4, seed=0, rank=0, world_size=1, drop_last=False)
    drawn = [i for _ in range(5) for i in sampler.next_indices()]  # 20 draws = exactly 2 epochs
    assert Counter(drawn) == Counter({i: 2 for i in range(10)})
    assert sampler.state_dict()["epoch"] == 2 and sampler.state_dict()["position"] == 0


def test_errors():
    with pytest.raises(ValueError, match="fewer than one global batch of 8"):
        PromptSampler(7, 4, seed=0, rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        PromptSampler(10, 1, seed=0, rank=2, world_size=2)
    sampler = PromptSampler(10, 2, seed=0, rank=0, world_size=1)
    with pytest.raises(ValueError, match="num_rows=11"):
        sampler.load_state_dict({"epoch": 0, "position": 0, "num_rows": 11, "seed": 0})
    with pytest.raises(ValueError, match="seed=1"):
        sampler.load_state_dict({"epoch": 0, "position": 0, "num_rows": 10, "seed": 1})
