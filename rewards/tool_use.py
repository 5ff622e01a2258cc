"""The tool_errors reward (issue 25): reads the calls a tool-integrated rollout made (the `tool_calls` column that
train/main.py adds when rollout.tools is set) and penalises the ones that failed, e.g. as a small shaping term next to
the accuracy reward so that a policy does not learn to throw code at the sandbox.

Each call is a dict {code, output (as the model saw it), status, seconds}; status is one of
rewards/python_tool.py's STATUSES ("ok", "error", "timeout", "crash", "no_sandbox").
"""

from __future__ import annotations

FAILED = ("error", "timeout", "crash", "no_sandbox")


def score(calls: object, *, penalty: float = 1.0) -> float:
    """-penalty x the share of a completion's calls that failed; 0.0 without calls (or an unreadable entry).

    >>> score([{"status": "ok"}, {"status": "error"}]), score([]), score("not a list")
    (-0.5, 0.0, 0.0)
    """
    if not isinstance(calls, (list, tuple)) or not calls:
        return 0.0
    failed = sum(isinstance(call, dict) and call.get("status") in FAILED for call in calls)
    return -penalty * failed / len(calls)


def tool_errors(completions: list, prompts: list | None = None, *, tool_calls: list | None = None,
                penalty: float = 1.0, **_) -> list:
    """Batch reward. Column ``tool_calls`` (present when rollout.tools is set; the config refuses this reward without
    it). Without the column (the preflight's gold answers, written without calls) no call failed: 0.0."""
    if tool_calls is None:
        return [0.0] * len(completions)
    return [score(calls, penalty=penalty) for calls in tool_calls]
