"""Rule-based rewards for GRPO: one module per family, an explicit registry and a weighted combiner.

Every reward is a batch function ``fn(completions, prompts, **columns) -> list[float | None]`` (TRL reward-function
shape; ``None`` = not applicable) built on a pure, never-raising per-sample ``score`` function. See ``registry.py`` for
the names and ``combine.py`` for how they are run, timed out and summed.
"""

from rewards.combine import CORRECT_SCORE, RewardCombiner, RewardOutput, RewardSpec, is_correct
from rewards.registry import REWARD_FNS, resolve_reward

__all__ = ["CORRECT_SCORE", "REWARD_FNS", "RewardCombiner", "RewardOutput", "RewardSpec", "is_correct", "resolve_reward"]
