"""Rewards that misbehave on purpose, referenced from test configs as `tests.fault_rewards:NAME`."""


def overflow(completions, prompts=None, **_):
    """Finite per completion and in the total (so the combiner and the not-applicable rule accept it: a non-finite
    total would leave its group out of the step), but 3e38 is near float32's limit, so a group with two such
    completions has an infinite mean: advantages -inf, and the loss and gradients non-finite.
    (Custom rewards run one completion per call in the reward pool, so the choice must depend on the text.)"""
    return [3e38 if len(c) % 2 == 0 else 0.0 for c in completions]


def alternating(completions, prompts=None, **_):
    """A learnable signal for a random model: longer completions score higher."""
    return [min(len(c), 40) / 40 for c in completions]


def brevity(completions, prompts=None, **_):
    """Shorter completions score higher (1 for an empty one, 0 from 200 characters): a signal that differs between
    almost any two completions, so a group has a reward spread whatever the model samples."""
    return [1.0 - min(len(c), 200) / 200 for c in completions]


def half_the_prompts(completions, prompts=None, **_):
    """Zero spread for prompts of even length (every completion scores 0.5), brevity for the others: about half the
    groups carry a learning signal, whatever the model samples (for rollout.filter_groups)."""
    return [0.5 if len(p) % 2 == 0 else 1.0 - min(len(c), 200) / 200 for c, p in zip(completions, prompts)]
