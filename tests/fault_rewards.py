"""Rewards that misbehave on purpose, referenced from test configs as `tests.fault_rewards:NAME`."""


def overflow(completions, prompts=None, **_):
    """Finite per completion (so the combiner accepts it), but x10 weight overflows float32 to inf in the total of
    completions of even length: group means become inf, advantages NaN, and so do the loss and the gradients.
    (Custom rewards run one completion per call in the reward pool, so the choice must depend on the text.)"""
    return [1e38 if len(c) % 2 == 0 else 0.0 for c in completions]


def alternating(completions, prompts=None, **_):
    """A learnable signal for a random model: longer completions score higher."""
    return [min(len(c), 40) / 40 for c in completions]
