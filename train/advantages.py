"""Group-relative advantages for GRPO (DeepSeekMath, arXiv:2402.03300 §4.1.2, outcome supervision).

Each completion's advantage is its reward minus the mean reward of its group (the G completions of the same prompt),
optionally divided by a standard deviation:  Â_i = (r_i - mean(r_group)) / (std + eps).

A group with a row whose reward is not applicable (NaN total from rewards.combine: e.g. an unusable gold answer) is
excluded: its advantages are exactly 0, its rewards are left out of the "batch" std, and :func:`kept_rows` gives the
per-row weight that also takes it out of the loss and its token/sequence normalisers.
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


def kept_rows(rewards: torch.Tensor, group_size: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """[N] bool: True for the rows of groups whose every row is valid (``valid`` [N] bool, e.g.
    ``rewards.combine.RewardOutput.applicable``; default and always: a finite reward). Multiply the completion mask by
    it (``completion_mask * kept[:, None]``) and count the loss normalisers on the result."""
    grouped = _grouped(rewards, group_size)
    if valid is not None and valid.shape != rewards.shape:
        raise ValueError(f"valid must be [N]={tuple(rewards.shape)}, got {tuple(valid.shape)}")
    ok = torch.isfinite(rewards) if valid is None else valid.to(torch.bool) & torch.isfinite(rewards)
    return ok.view_as(grouped).all(dim=1, keepdim=True).expand_as(grouped).reshape(-1)


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    *,
    scale: str = "group",
    eps: float = 1e-4,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """rewards: [N] with N = B*G, laid out group-major (completions of prompt b are rows b*G .. b*G+G-1). Returns [N].

    Stds are unbiased (Bessel, divide by n-1: torch's default, as TRL). A group whose rewards are all equal gets exactly
    0 (not NaN, not mean-rounding noise), and so does every row when group_size == 1. valid: see :func:`kept_rows`; an
    excluded group gets exactly 0 and is left out of the "batch" std (whatever its rewards, NaN included).
    """
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"scale must be one of {ADVANTAGE_SCALES}, got {scale!r}")
    if not rewards.is_floating_point():
        rewards = rewards.float()
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    kept = kept_rows(rewards, group_size, valid)  # [N]
    rewards = torch.where(kept, rewards, 0.0)  # excluded rows: any finite value; they are zeroed at the end
    grouped = _grouped(rewards, group_size)  # [B, G]
    advantages = grouped - grouped.mean(dim=1, keepdim=True)  # [B, G]
    if scale == "group" and group_size > 1:  # std of a 1-element group is NaN under Bessel; it is zeroed below
        advantages = advantages / (grouped.std(dim=1, keepdim=True) + eps)
    elif scale == "batch" and int(kept.sum()) > 1:
        advantages = advantages / (rewards[kept].std() + eps)
    # Equal rewards carry no learning signal: force exact zeros (not 0/0 = NaN when eps=0, not mean-rounding noise).
    constant = grouped.amax(dim=1, keepdim=True) == grouped.amin(dim=1, keepdim=True)  # [B, 1]
    advantages = torch.where(constant | ~kept.view_as(grouped), 0.0, advantages)
    return advantages.reshape(-1)


def zero_std_fraction(rewards: torch.Tensor, group_size: int, valid: torch.Tensor | None = None) -> float:
    """Fraction of the kept groups (see :func:`kept_rows`) whose rewards are all equal (zero advantage, no gradient).
    Logged as a metric; 1.0 if G=1, 0.0 if no group is kept."""
    grouped = _grouped(rewards, group_size)
    kept = kept_rows(rewards, group_size, valid).view_as(grouped)[:, 0]  # [B]
    constant = grouped.amax(dim=1) == grouped.amin(dim=1)
    return (constant & kept).sum().item() / max(int(kept.sum()), 1)


def informative_groups(rewards: torch.Tensor, group_size: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """[B] bool: the groups that carry a learning signal, i.e. kept (see :func:`kept_rows`) and with rewards not all
    equal. DAPO's dynamic sampling (arXiv:2503.14476 §3.2) trains only on these.

    >>> informative_groups(torch.tensor([1.0, 0.0, 1.0, 1.0, float("nan"), 0.0]), 2).tolist()
    [True, False, False]
    """
    grouped = _grouped(rewards, group_size)
    kept = kept_rows(rewards, group_size, valid).view_as(grouped)[:, 0]
    return kept & (grouped.amax(dim=1) != grouped.amin(dim=1))
