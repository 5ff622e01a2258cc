"""Hand-computed checks of train/advantages.py."""

import math

import pytest
import torch

from train.advantages import ADVANTAGE_SCALES, group_advantages, zero_std_fraction

# Two groups of G=3: group 0 = [0, 0, 3] (mean 1), group 1 = [2, 2, 2] (all equal).
REWARDS = torch.tensor([0.0, 0.0, 3.0, 2.0, 2.0, 2.0], dtype=torch.float64)
CENTERED = [-1.0, -1.0, 2.0, 0.0, 0.0, 0.0]


def test_scale_group_uses_unbiased_std():
    # group 0: centered [-1, -1, 2]; unbiased var = (1 + 1 + 4) / (3 - 1) = 3 -> std = sqrt(3) = 1.7320508
    # (the population std sqrt(2) = 1.414 would give -0.7071 instead of -0.5773).
    std = math.sqrt(3.0)
    expected = torch.tensor([-1.0, -1.0, 2.0, 0.0, 0.0, 0.0], dtype=torch.float64) / (std + 1e-4)
    torch.testing.assert_close(group_advantages(REWARDS, 3), expected)
    torch.testing.assert_close(group_advantages(REWARDS, 3, scale="group", eps=0.0)[:3], torch.tensor(
        [-0.5773502692, -0.5773502692, 1.1547005384], dtype=torch.float64))  # fmt: skip


def test_scale_batch_uses_std_of_all_rewards():
    # all 6 rewards: mean 1.5, squared deviations 3 * 2.25 + 3 * 0.25 = 7.5, unbiased var 7.5 / 5 = 1.5
    std = math.sqrt(1.5)  # 1.2247449
    expected = torch.tensor(CENTERED, dtype=torch.float64) / (std + 1e-4)
    torch.testing.assert_close(group_advantages(REWARDS, 3, scale="batch"), expected)


def test_scale_none_only_centers():
    torch.testing.assert_close(group_advantages(REWARDS, 3, scale="none"), torch.tensor(CENTERED, dtype=torch.float64))


@pytest.mark.parametrize("scale", ADVANTAGE_SCALES)
@pytest.mark.parametrize("eps", [1e-4, 0.0])
def test_all_equal_group_is_exactly_zero(scale, eps):
    # 0.1 is not representable: the float mean of [0.1]*3 need not equal 0.1, yet the advantages must be exactly 0.
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7, 0.7])
    adv = group_advantages(rewards, 3, scale=scale, eps=eps)
    assert torch.equal(adv, torch.zeros(6))


@pytest.mark.parametrize("scale", ADVANTAGE_SCALES)
def test_group_size_one_gives_zeros(scale):
    adv = group_advantages(torch.tensor([1.0, 0.0, 5.0]), 1, scale=scale)
    assert torch.equal(adv, torch.zeros(3))


def test_integer_rewards_are_accepted():
    adv = group_advantages(torch.tensor([1, 0]), 2, scale="none")
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5]))


@pytest.mark.parametrize(
    ("rewards", "group_size", "scale", "match"),
    [
        (torch.zeros(2, 3), 3, "group", "1-D"),
        (torch.zeros(5), 2, "group", "not divisible"),
        (torch.zeros(4), 0, "group", "group_size"),
        (torch.zeros(4), 2, "std", r"\('group', 'batch', 'none'\)"),
    ],
)
def test_bad_inputs_raise(rewards, group_size, scale, match):
    with pytest.raises(ValueError, match=match):
        group_advantages(rewards, group_size, scale=scale)


def test_zero_std_fraction():
    # groups [0,0,3] [2,2,2] [1,1,1] [0,1,0]: two of four are constant
    rewards = torch.tensor([0.0, 0.0, 3.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    assert zero_std_fraction(rewards, 3) == 0.5
    assert zero_std_fraction(rewards, 1) == 1.0
    with pytest.raises(ValueError, match="not divisible"):
        zero_std_fraction(rewards, 5)
