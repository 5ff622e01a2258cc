"""Hand-computed checks of train/advantages.py."""

import math

import pytest
import torch

from train.advantages import ADVANTAGE_SCALES, group_advantages, kept_rows, zero_std_fraction

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


# --------------------------------------------------------------------------------------- groups that are not applicable
# Group 1 is not applicable (NaN total from rewards.combine: its gold answer is unusable). It must get exactly 0 and
# must not enter the "batch" std, which is then the std of group 0 alone: [0, 0, 3], mean 1, unbiased var
# (1 + 1 + 4) / 2 = 3 -> std sqrt(3), not the sqrt(1.5) of test_scale_batch_uses_std_of_all_rewards.
NAN = float("nan")
EXCLUDED = torch.tensor([0.0, 0.0, 3.0, NAN, NAN, NAN], dtype=torch.float64)


@pytest.mark.parametrize(
    ("scale", "divisor"), [("group", math.sqrt(3.0) + 1e-4), ("batch", math.sqrt(3.0) + 1e-4), ("none", 1.0)]
)
def test_excluded_group_is_zero_and_leaves_the_batch_std(scale, divisor):
    expected = torch.tensor([-1.0, -1.0, 2.0, 0.0, 0.0, 0.0], dtype=torch.float64) / divisor
    adv = group_advantages(EXCLUDED, 3, scale=scale)
    torch.testing.assert_close(adv, expected)
    assert torch.equal(adv[3:], torch.zeros(3, dtype=torch.float64))  # exactly 0, not NaN


def test_explicit_valid_mask_excludes_the_whole_group():
    # Same rewards as REWARDS (all finite); row 4 is marked not applicable, so all of group 1 goes, and the batch std
    # is sqrt(3) as above. Marking one row of group 0 instead removes group 0: group 1 is constant -> all zeros.
    valid = torch.tensor([True, True, True, True, False, True])
    expected = torch.tensor([-1.0, -1.0, 2.0, 0.0, 0.0, 0.0], dtype=torch.float64) / (math.sqrt(3.0) + 1e-4)
    torch.testing.assert_close(group_advantages(REWARDS, 3, scale="batch", valid=valid), expected)
    assert kept_rows(REWARDS, 3, valid).tolist() == [True, True, True, False, False, False]
    valid0 = torch.tensor([False, True, True, True, True, True])
    assert torch.equal(group_advantages(REWARDS, 3, scale="batch", valid=valid0), torch.zeros(6, dtype=torch.float64))
    assert kept_rows(REWARDS, 3, valid0).tolist() == [False, False, False, True, True, True]


def test_nan_rows_are_invalid_by_default_and_even_if_marked_valid():
    assert kept_rows(EXCLUDED, 3).tolist() == [True] * 3 + [False] * 3
    assert kept_rows(EXCLUDED, 3, torch.ones(6, dtype=torch.bool)).tolist() == [True] * 3 + [False] * 3


@pytest.mark.parametrize("scale", ADVANTAGE_SCALES)
def test_every_group_excluded_gives_zeros(scale):
    adv = group_advantages(torch.full((4,), NAN), 2, scale=scale)
    assert torch.equal(adv, torch.zeros(4))


def test_zero_std_fraction_counts_kept_groups_only():
    # groups [0,0,3] [2,2,2] [nan x3]: one of the two kept groups is constant
    rewards = torch.tensor([0.0, 0.0, 3.0, 2.0, 2.0, 2.0, NAN, NAN, NAN])
    assert zero_std_fraction(rewards, 3) == 0.5
    assert zero_std_fraction(torch.full((3,), NAN), 3) == 0.0


def test_valid_mask_shape_is_checked():
    with pytest.raises(ValueError, match="valid must be"):
        group_advantages(REWARDS, 3, valid=torch.ones(5, dtype=torch.bool))
