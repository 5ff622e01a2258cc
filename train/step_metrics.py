"""The metrics and samples of one GRPO step, gathered over ranks (README "Logged metrics" explains each key).

Every value is over the whole step on all ranks: rewards, lengths and flags are all-gathered here (the loss and
gradient metrics arrive already reduced from train/update.py). Call on every rank: the gathers are collectives.
"""

from __future__ import annotations

import zlib
from collections import Counter

import torch

from rewards import CORRECT_SCORE, RewardOutput
from train.advantages import zero_std_fraction
from train.batch import RolloutBatch
from train.distributed import all_gather_tensor, all_reduce_sum
from train.tools import tool_metrics


def step_metrics(
    rollout: RolloutBatch,
    scored: RewardOutput,
    all_rewards: torch.Tensor,
    all_kept: torch.Tensor,
    update: dict[str, float],
    *,
    reward_names: list[str],
    accuracy_reward: str,
    skipped_updates: int,
    seconds: dict[str, float],
) -> dict[str, float]:
    """rollout, scored: this rank's completions and their rewards; all_rewards, all_kept: [N * world] total
    rewards of the step (NaN where a reward did not apply) and whether the step kept each row's group
    (train.advantages.kept_rows); update: the last policy update's
    metrics; seconds: rollout / rewards / update wall time of this step. Rewards and accuracy are means over the rows
    that were scored; `excluded_group_fraction` is the share of groups the step left out."""
    per_reward = {name: all_gather_tensor(torch.tensor(values, dtype=torch.float32)) for name, values in scored.per_reward.items()}
    lengths = all_gather_tensor(rollout.completion_lengths)
    skipped = scored.skipped_counts()
    counts = torch.tensor([[float(table.get(n, 0)) for table in (scored.failures, scored.timeouts, skipped) for n in reward_names]])
    failures, timeouts, skips = all_gather_tensor(counts).sum(0).split(len(reward_names))
    scored_rewards = all_rewards[all_kept]
    empty = torch.tensor([not text.strip() for text in rollout.completion_texts])
    openings = all_gather_tensor(torch.tensor([opening_line_key(text) for text in rollout.completion_texts], dtype=torch.int64))
    step_seconds = sum(seconds.values())
    return {
        "reward/mean": scored_rewards.mean().item() if scored_rewards.numel() else float("nan"),
        "reward/std": scored_rewards.std().item() if scored_rewards.numel() > 1 else float("nan"),
        "accuracy": _accuracy(per_reward[accuracy_reward]),
        "zero_std_fraction": zero_std_fraction(all_rewards, rollout.group_size, all_kept),
        "excluded_group_fraction": 1.0 - all_kept.float().mean().item(),
        "completion_length/mean": lengths.float().mean().item(),
        "completion_length/min": lengths.min().item(),
        "completion_length/max": lengths.max().item(),
        "truncated_fraction": all_gather_tensor(rollout.truncated).float().mean().item(),
        "empty_completion_fraction": all_gather_tensor(empty).float().mean().item(),
        "top_opening_share": top_share(openings.tolist()),
        **{f"rewards/{name}": values.nanmean().item() for name, values in per_reward.items()},
        **{f"reward_failures/{name}": failures[i].item() for i, name in enumerate(reward_names)},
        **{f"reward_timeouts/{name}": timeouts[i].item() for i, name in enumerate(reward_names)},
        **{f"reward_skipped/{name}": skips[i].item() for i, name in enumerate(reward_names)},
        **update,
        "skipped_updates": skipped_updates,
        **{f"time/{phase}": value for phase, value in seconds.items()},
        "time/step": step_seconds,
        "tokens_per_second": lengths.sum().item() / step_seconds,
        **(tool_step_metrics(rollout, lengths.numel()) if rollout.tool_calls is not None else {}),
    }


def tool_step_metrics(rollout: RolloutBatch, num_completions: int) -> dict[str, float]:
    """With the Python tool (TRL's tools/call_frequency is calls_per_completion): per-completion means over all ranks,
    and this rank's seconds in calls and waiting for them (README "Logged metrics"). A collective."""
    counts = tool_metrics(rollout.tool_calls)
    totals = all_reduce_sum(torch.tensor(list(counts.values()), dtype=torch.float64)).tolist()
    means = {name: total / max(num_completions, 1) for name, total in zip(counts, totals)}
    seconds = rollout.tool_seconds or {}
    return {
        "tools/calls_per_completion": means["calls"], "tools/errors": means["errors"],
        "tools/timeouts": means["timeouts"], "tools/completions_with_calls": means["completions_with_calls"],
        "tools/time": seconds.get("tools", 0.0), "time/tool_wait": seconds.get("tool_wait", 0.0),
    }


OPENING_CHARS = 64


def opening_line_key(text: str) -> int:
    """How a completion opens, as a CRC-32 gathered over ranks as an integer: its first OPENING_CHARS characters with
    whitespace collapsed, cut after the first "</answer>". With the answer prefilled (data.prefill_answer) that is
    the answer; otherwise how the completion starts, far enough to hold what it read from its prompt (a tool call's
    code, the first step of a trace): a policy that opens every completion the same way has stopped reading its
    prompts. (The first line alone would call every tool call, "```python", the same opening.)

    >>> opening_line_key("\\n 1</answer>\\nmore") == opening_line_key("1</answer>")
    True
    >>> opening_line_key("```python\\nprint(12 * 34)") == opening_line_key("```python\\nprint(12 * 35)")
    False
    """
    opening = " ".join(text.split())
    end = opening.find("</answer>")
    opening = opening if end < 0 else opening[: end + len("</answer>")]
    return zlib.crc32(opening[:OPENING_CHARS].encode("utf-8", "replace"))


def top_share(keys: list[int]) -> float:
    """Share of the commonest key; NaN for none.

    >>> top_share([7, 7, 7, 2])
    0.75
    """
    return Counter(keys).most_common(1)[0][1] / len(keys) if keys else float("nan")


def _accuracy(scores: torch.Tensor) -> float:
    """Fraction of the completions the accuracy reward judged (not NaN) that score >= 1."""
    judged = scores[~scores.isnan()]
    return (judged >= CORRECT_SCORE).float().mean().item() if judged.numel() else float("nan")  # rewards.is_correct


def step_samples(prompt_texts: list[str], rollout: RolloutBatch, scored: RewardOutput, num_samples: int) -> list[dict]:
    """The first `num_samples` of this rank's completions with their prompt and every reward (samples.jsonl)."""
    prompts = rollout.per_completion(prompt_texts)
    return [
        {"prompt": prompts[i], "completion": rollout.completion_texts[i], "reward": scored.total[i],
         **{name: values[i] for name, values in scored.per_reward.items()},
         **({"tool_calls": rollout.tool_calls[i]} if rollout.tool_calls is not None else {})}
        for i in range(min(num_samples, len(rollout.completion_texts)))
    ]
