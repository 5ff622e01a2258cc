"""Structure rewards for the DeepSeek-R1 ``<think>…</think><answer>…</answer>`` format.

References: open-r1 ``src/open_r1/rewards.py`` (``format_reward``, ``tag_count_reward``, ``reasoning_steps_reward``) and
DeepSeek-R1 (arXiv:2501.12948, §2.2.2 "format rewards").

The R1-Zero prompt usually ends with ``<think>`` so the completion starts mid-thought. Choice made here: every format
reward takes a ``prefix`` option. ``prefix=None`` (default) auto-detects: if the row's prompt, right-stripped, ends with
``<think>``, the completion is scored as ``"<think>" + completion``; ``prefix=""`` disables this; any other string is
prepended verbatim. So the same YAML works for prompts with and without the trailing ``<think>``.

All checks use ``str.count``/``str.find`` or regexes without nested or line-spanning quantifiers, so they are linear in
the completion length (a non-greedy ``^<think>.*?</think>\\s*<answer>.*?</answer>$`` can go quadratic on adversarial
text with many tags).
"""

from __future__ import annotations

import re

from rewards.extract import ANSWER_CLOSE, ANSWER_OPEN, as_text

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

# open-r1 reasoning_steps_reward pattern, with two fixes: its "^\d+\." has no MULTILINE flag so it only ever matched at
# the very start of the text, and "\n-"/"\n\*" also counted horizontal rules and emphasis. "[ \t]*" (not "\s*") after
# "^" keeps the scan linear on runs of blank lines.
_STEP_RE = re.compile(
    r"Step \d+:|^[ \t]*\d+\.[ \t]|^[ \t]*[-*][ \t]|\b(?:First|Second|Third|Next|Then|Finally),", re.MULTILINE
)
# open-r1: "Magic number 3 to encourage 3 steps and more, otherwise partial reward".
FULL_CREDIT_STEPS = 3


def _apply_prefix(completion: object, prompt: object, prefix: str | None) -> str:
    text = as_text(completion)
    if prefix is None:
        ends_with_think = isinstance(prompt, str) and prompt.rstrip().endswith(THINK_OPEN)
        prefix = THINK_OPEN if ends_with_think else ""
    return prefix + text


def score_strict(completion: str) -> float:
    """1.0 iff the text is exactly ``<think>…</think>`` then ``<answer>…</answer>``: each tag once, in order, only
    whitespace before ``<think>``, between ``</think>`` and ``<answer>`` and after ``</answer>`` (a trailing newline
    from decoding is not content). Non-empty answer required.

    >>> score_strict("<think>\\n2+2=4\\n</think>\\n<answer>4</answer>\\n")
    1.0
    >>> score_strict("<think>x</think><answer>4</answer>!")
    0.0
    """
    text = as_text(completion)
    if any(text.count(tag) != 1 for tag in _TAGS):
        return 0.0
    t_open, t_close = text.find(THINK_OPEN), text.find(THINK_CLOSE)
    a_open, a_close = text.find(ANSWER_OPEN), text.find(ANSWER_CLOSE)
    if not t_open < t_close < a_open < a_close:
        return 0.0
    gaps = (text[:t_open], text[t_close + len(THINK_CLOSE) : a_open], text[a_close + len(ANSWER_CLOSE) :])
    if any(gap.strip() for gap in gaps):
        return 0.0
    return 1.0 if text[a_open + len(ANSWER_OPEN) : a_close].strip() else 0.0


def score_lenient(completion: str) -> float:
    """1.0 if ``<think>``, ``</think>``, ``<answer>``, ``</answer>`` occur in this order anywhere, else 0.0.

    >>> score_lenient("Sure! <think>hm</think> so <answer>4</answer> done"), score_lenient("<answer>4</answer>")
    (1.0, 0.0)
    """
    text = as_text(completion)
    pos = 0
    for tag in _TAGS:
        found = text.find(tag, pos)
        if found < 0:
            return 0.0
        pos = found + len(tag)
    return 1.0


def score_tag_count(completion: str) -> float:
    """0.25 for each of the four tags that occurs exactly once (open-r1 ``tag_count_reward``, itself from willccbb's
    GRPO demo). Deviation: open-r1 counts ``"<think>\\n"``, ``"\\n</think>\\n"`` etc.; we count the bare tags because
    our strict format allows any whitespace around them.

    >>> score_tag_count("<think>a</think><answer>b</answer>"), score_tag_count("<think>a</think></think>")
    (1.0, 0.25)
    """
    text = as_text(completion)
    return 0.25 * sum(text.count(tag) == 1 for tag in _TAGS)


def score_reasoning_steps(completion: str) -> float:
    """``min(1, steps / 3)`` where steps counts "Step 1:", numbered or bulleted list lines and "First,"/"Next,"/
    "Finally,"-style transitions (open-r1 ``reasoning_steps_reward``).

    >>> score_reasoning_steps("Step 1: add. Step 2: carry."), score_reasoning_steps("1. a\\n2. b\\n3. c\\nFinally, d")
    (0.6666666666666666, 1.0)
    """
    count = 0
    for count, _ in enumerate(_STEP_RE.finditer(as_text(completion)), start=1):
        if count >= FULL_CREDIT_STEPS:
            break
    return min(1.0, count / FULL_CREDIT_STEPS)


def _batch(fn, completions: list, prompts: list | None, prefix: str | None) -> list[float]:
    rows = prompts if prompts is not None else [None] * len(completions)
    return [fn(_apply_prefix(c, p, prefix)) for c, p in zip(completions, rows, strict=True)]


def format_strict(completions: list, prompts: list | None = None, *, prefix: str | None = None, **_) -> list[float]:
    """Batch :func:`score_strict`. No dataset columns. ``prefix``: see module docstring."""
    return _batch(score_strict, completions, prompts, prefix)


def format_lenient(completions: list, prompts: list | None = None, *, prefix: str | None = None, **_) -> list[float]:
    """Batch :func:`score_lenient`. No dataset columns. ``prefix``: see module docstring."""
    return _batch(score_lenient, completions, prompts, prefix)


def tag_count(completions: list, prompts: list | None = None, *, prefix: str | None = None, **_) -> list[float]:
    """Batch :func:`score_tag_count`. No dataset columns. ``prefix``: see module docstring."""
    return _batch(score_tag_count, completions, prompts, prefix)


def reasoning_steps(completions: list, prompts: list | None = None, **_) -> list[float]:
    """Batch :func:`score_reasoning_steps`. No dataset columns, no options."""
    return [score_reasoning_steps(c) for c in completions]
