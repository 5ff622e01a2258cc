"""Group-relative advantages for GRPO (DeepSeekMath, arXiv:2402.03300 §4.1.2, outcome supervision).

Each completion's advantage is its reward minus the mean reward of its group (the G completions of the same prompt),
optionally divided by a standard deviation:  Â_i = (r_i - mean(r_group)) / (std + eps).
"""

import torch

ADVANTAGE_SCALES = ("group", "batch", "none")
"""group: std of the group (DeepSeekMath). batch: std of all N rewards (TRL `scale_rewards="batch"`; "Tricks or Traps?"
arXiv:2508.08221). none: no division (Dr. GRPO arXiv:2503.20783 §3: std scaling up-weights too easy/hard questions)."""


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Validate and reshape rewards [N] (group-major: rows b*G .. b*G+G-1 belong to prompt b) to [B, G]."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B*G], got shape {tuple(rewards.shape)}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if rewards.numel() % group_size != 0:
        raise ValueError(f"len(rewards)={rewards.numel()} is not divisible by group_size={group_size}")
    return rewards.view(-1, group_size)


def group_advantages(
    rewards: torch.Tensor, group_size: int, *, scale: str = "group", eps: float = 1e-4
) -> torch.Tensor:
    """rewards: [N] with N = B*G, laid out group-major (completions of prompt b are rows b*G .. b*G+G-1). Returns [N].

    Stds are unbiased (Bessel, divide by n-1: torch's default, as TRL). A group whose rewards are all equal gets exactly
    0 (not NaN, not mean-rounding noise), and so does every row when group_size == 1.
    """
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"scale must be one of {ADVANTAGE_SCALES}, got {scale!r}")
    if not rewards.is_floating_point():
        rewards = rewards.float()
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    grouped = _grouped(rewards, group_size)  # [B, G]
    advantages = grouped - grouped.mean(dim=1, keepdim=True)  # [B, G]
    if scale == "group" and group_size > 1:  # std of a 1-element group is NaN under Bessel; it is zeroed below
        advantages = advantages / (grouped.std(dim=1, keepdim=True) + eps)
    elif scale == "batch" and rewards.numel() > 1:
        advantages = advantages / (rewards.std() + eps)
    # Equal rewards carry no learning signal: force exact zeros (not 0/0 = NaN when eps=0, not mean-rounding noise).
    constant = grouped.amax(dim=1, keepdim=True) == grouped.amin(dim=1, keepdim=True)  # [B, 1]
    advantages = torch.where(constant, 0.0, advantages)
    return advantages.reshape(-1)


def zero_std_fraction(rewards: torch.Tensor, group_size: int) -> float:
    """Fraction of groups whose rewards are all equal (zero advantage, no gradient). Logged as a metric; 1.0 if G=1."""
    grouped = _grouped(rewards, group_size)
    return (grouped.amax(dim=1) == grouped.amin(dim=1)).float().mean().item()
