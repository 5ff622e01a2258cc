"""The reward names a config may use, as one explicit dict (no decorator registry: TRL AGENTS.md), and their lookup.

Every value is a batch reward ``fn(completions, prompts, **columns_and_options) -> list[float | None]``.
"""

from __future__ import annotations

import importlib
from typing import Callable

from rewards.arithmetic import arithmetic_accuracy
from rewards.code_exec import code_exec
from rewards.countdown import countdown
from rewards.format import format_lenient, format_strict, reasoning_steps, tag_count
from rewards.gsm8k import gsm8k_accuracy
from rewards.length import cosine_length, overlong_penalty, repetition_penalty
from rewards.math_answer import math_accuracy
from rewards.gym_verifier import reasoning_gym
from rewards.tool_use import tool_errors

REWARD_FNS: dict[str, Callable[..., list]] = {
    "math_accuracy": math_accuracy,
    "gsm8k_accuracy": gsm8k_accuracy,
    "arithmetic_accuracy": arithmetic_accuracy,
    "countdown": countdown,
    "format_strict": format_strict,
    "format_lenient": format_lenient,
    "tag_count": tag_count,
    "reasoning_steps": reasoning_steps,
    "cosine_length": cosine_length,
    "overlong_penalty": overlong_penalty,
    "repetition_penalty": repetition_penalty,
    "code_exec": code_exec,
    "reasoning_gym": reasoning_gym,
    "tool_errors": tool_errors,
}


def _unknown(name: str, why: str) -> ValueError:
    allowed = ", ".join(sorted(REWARD_FNS))
    return ValueError(
        f"unknown reward {name!r} ({why}). Allowed names: {allowed}; "
        "or 'package.module:function' for a custom reward importable from the working directory"
    )


def resolve_reward(name: str) -> Callable[..., list]:
    """A registry name, or ``"package.module:function"`` for a user's custom batch reward (imported with importlib).

    Raises ``ValueError`` naming ``name`` and listing the allowed names when it cannot be resolved.

    >>> resolve_reward("countdown").__name__
    'countdown'
    """
    if not isinstance(name, str):
        raise _unknown(repr(name), "not a string")
    if name in REWARD_FNS:
        return REWARD_FNS[name]
    if ":" not in name:
        raise _unknown(name, "not a registry name")
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise _unknown(name, "expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as e:  # ImportError, or the module raising or calling sys.exit() while imported
        detail = " ".join(f"{type(e).__name__}: {e}".split())  # one line
        raise _unknown(name, f"cannot import {module_name!r}: {detail}") from e
    fn = module
    for part in attr.split("."):  # allows "module:Class.method"
        if not hasattr(fn, part):
            raise _unknown(name, f"module {module_name!r} has no attribute {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise _unknown(name, f"{attr!r} in {module_name!r} is not callable")
    return fn
