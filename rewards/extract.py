"""Answer extraction shared by every reward family (the one place these helpers live).

Model output is untrusted (TitanRL `examples/dapo_math/rubric.py`: "Model output is untrusted"), so every helper here is
total: it returns ``None`` instead of raising, and runs in linear time in the length of the text. That is why tag and
``\\boxed{}`` extraction use ``str.rfind`` / a single brace-counting scan instead of non-greedy regexes such as
``<answer>(.*?)</answer>``: with many unclosed openers (an adversarial 1 MB completion) the regex engine retries the
scan from every opener, which is quadratic.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"

# A number as models and GSM8K write it: optional sign, thousands groups ("1,234") or plain digits, optional decimals.
# No nested quantifiers, so matching is linear. "1,2,3" is read as three numbers, not 123; "12,3456" as 12 and 3456.
_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|-?\.\d+")


def as_text(completion: object) -> str:
    """Coerce a completion to text: ``str`` as is, a chat message list (TRL conversational format) to its last
    ``content``, ``None`` to ``""``, anything else to ``str()``. Never raises.

    >>> as_text([{"role": "assistant", "content": "hi"}])
    'hi'
    """
    if isinstance(completion, str):
        return completion
    if completion is None:
        return ""
    try:
        if isinstance(completion, (list, tuple)) and completion and isinstance(completion[-1], dict):
            return as_text(completion[-1].get("content", ""))
        if isinstance(completion, dict):
            return as_text(completion.get("content", ""))
        return str(completion)
    except Exception:  # a hostile __str__; nothing to score
        return ""


def opens_answer(prompt: object) -> bool:
    """Whether a rendered prompt ends with an opened ``<answer>`` (``data.prefill_answer``)."""
    return isinstance(prompt, str) and prompt.rstrip().endswith(ANSWER_OPEN)


def with_prefilled_answer(completion: object, prompt: object) -> object:
    """The completion as rewards read it when its prompt ends with an opened ``<answer>`` (``data.prefill_answer``): the
    tag, the completion, and a closing tag where the completion has none (EOS or the length cap ended the answer).
    Any other completion is returned unchanged.

    >>> with_prefilled_answer("42", "... assistant\\n<answer>"), with_prefilled_answer("42</answer>", "<answer>")
    ('<answer>42</answer>', '<answer>42</answer>')
    >>> with_prefilled_answer("42", "Assistant: <think>")
    '42'
    """
    if not opens_answer(prompt):
        return completion
    text = as_text(completion)
    return ANSWER_OPEN + text + ("" if ANSWER_CLOSE in text else ANSWER_CLOSE)


def extract_answer_tag(text: str) -> str | None:
    """Content of the last complete ``<answer>…</answer>`` pair, stripped; ``None`` when there is none.

    With nested or stray tags the innermost content before the last closing tag is returned.

    >>> extract_answer_tag("<think>2+2</think> <answer> 4 </answer>")
    '4'
    >>> extract_answer_tag("<answer><answer>1</answer></answer>")
    '1'
    >>> extract_answer_tag("<answer>unclosed") is None
    True
    """
    close = text.rfind(ANSWER_CLOSE)
    if close < 0:
        return None
    start = text.rfind(ANSWER_OPEN, 0, close)
    if start < 0:
        return None
    content = text[start + len(ANSWER_OPEN) : close]
    inner_close = content.find(ANSWER_CLOSE)  # "<answer>a</answer>b</answer>" -> "a"
    if inner_close >= 0:
        content = content[:inner_close]
    return content.strip()


def _box_at(text: str, start: int, limit: int) -> tuple[str, int] | None:
    """``(content, end)`` of the ``\\boxed``/``\\fbox`` command at ``start``, scanning no further than ``limit``;
    ``end`` is the offset just past the box. ``None`` when its braces do not close before ``limit``."""
    i = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    if i < limit and text[i] == " ":  # "\boxed 5": the argument is the next whitespace/$-delimited token
        j = i + 1
        while j < limit and not text[j].isspace() and text[j] != "$":
            j += 1
        token = text[i + 1 : j]
        return (token, j) if token else None
    if i >= limit or text[i] != "{":
        return None
    depth = 0
    for j in range(i, limit):
        ch = text[j]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j], j + 1
    return None


def _last_box_start(text: str, end: int) -> int:
    return max(text.rfind("\\boxed", 0, end), text.rfind("\\fbox", 0, end))


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` (or ``\\fbox{…}``), braces balanced; ``None`` if absent or unbalanced.

    Also accepts the brace-less form ``\\boxed 5``. Only the last occurrence is tried, which keeps the scan linear.

    >>> last_boxed(r"so \\boxed{1} or rather \\boxed{\\frac{1}{2}}")
    '\\\\frac{1}{2}'
    >>> last_boxed(r"\\boxed 7$") , last_boxed(r"\\boxed{oops") is None
    ('7', True)
    """
    start = _last_box_start(text, len(text))
    box = None if start < 0 else _box_at(text, start, len(text))
    return None if box is None else box[0]


# Parts of one boxed answer at most (math-verify's connected-boxes regex takes 6; a 16-part answer is already rare). A
# longer chain keeps its last 16 boxes, which then no longer match a 17-part gold.
MAX_CHAINED_BOXES = 16
# Longest text allowed between two boxes of one multi-part answer ("$ or $x = " is 10 characters).
MAX_BOX_GAP_CHARS = 40
# Filler between the boxes of one answer: whitespace, $ and \( \) \[ \] delimiters, LaTeX spacing (\, \; \quad).
# Each alternative starts with a distinct character, so the regex cannot backtrack explosively.
_FILLER = r"(?:\s|\$|\\[()\[\],;:! ]|\\q?quad(?![A-Za-z]))*"
_BOX_CONNECTOR_RE = re.compile(
    _FILLER
    + r"(?:,|;|\band\b|\bor\b|\\text\{\s*(?:and|or)\s*\})"  # exactly one connector
    + _FILLER
    + r"(?:[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*=)?"  # the next box may be introduced as "x =" or "x_2 ="
    + _FILLER
)


def final_boxed(text: str) -> tuple[list[str], int] | None:
    """The final boxed answer: the contents of the last ``\\boxed{}`` and of the boxes chained before it, in reading
    order, and the offset just past the last box; ``None`` when there is no (balanced) box.

    Boxes are chained when the text between two of them is only a connector (``,`` ``;`` ``and`` ``or``), optionally
    with ``$``/``\\(``…``\\)`` delimiters, LaTeX spacing and an ``x =`` before the next box: ``x = \\boxed{-2}`` or
    ``x = \\boxed{4}`` is one two-part answer. Any other text ends the chain, so intermediate results boxed earlier
    (``\\boxed{-2} and \\boxed{4}, so the sum is \\boxed{2}``) are not part of the final answer. Stricter than
    math-verify, which also joins boxes less than 10 characters apart (``\\boxed{1} no wait \\boxed{2}`` -> {1, 2}).
    Linear: each scan covers text between two boxes once.

    >>> final_boxed(r"x = \\boxed{-2} or x = \\boxed{4}.")
    (['-2', '4'], 31)
    >>> final_boxed(r"\\boxed{-2} and \\boxed{4}, so the sum is \\boxed{2}")[0], final_boxed("none") is None
    (['2'], True)
    """
    start = _last_box_start(text, len(text))
    last = None if start < 0 else _box_at(text, start, len(text))
    if last is None:
        return None
    contents, end = [last[0]], last[1]
    while len(contents) < MAX_CHAINED_BOXES:
        prev = _last_box_start(text, start)
        box = None if prev < 0 else _box_at(text, prev, start)
        if box is None or not box[0].strip():
            break
        gap = text[box[1] : start]
        if len(gap) > MAX_BOX_GAP_CHARS or not _BOX_CONNECTOR_RE.fullmatch(gap):
            break
        contents.append(box[0])
        start = prev
    return contents[::-1], end


def last_number(text: str) -> str | None:
    """The last number in ``text`` with thousands separators removed (``"1,234.5"`` -> ``"1234.5"``); ``None`` if none.

    >>> last_number("I have 3 apples and $1,200.50 left.")
    '1200.50'
    >>> last_number("no digits") is None
    True
    """
    last = None
    for last in _NUMBER_RE.finditer(text):
        pass
    return None if last is None else last.group(0).replace(",", "")


def parse_decimal(value: object) -> Decimal | None:
    """A number from a gold label or extracted answer: ``42``, ``"42"``, ``"$1,234.50"``, ``"7."``; else ``None``.

    Decimal (not float) so that exact-match rewards compare ``"0.1"`` and ``"0.10"`` exactly and huge integers do not
    lose digits.

    >>> parse_decimal("$1,234.50") == Decimal("1234.5")
    True
    >>> parse_decimal("twelve") is None
    True
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if value == value and abs(value) != float("inf") else None
    if not isinstance(value, str):
        return None
    s = value.strip().replace(",", "").replace("$", "").strip()
    if s.endswith("."):
        s = s[:-1]
    if not s or len(s) > 4096 or not _NUMBER_RE.fullmatch(s):
        return None
    try:
        d = Decimal(s)
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


# A Markdown fence opening a Python block, at a line start. Anchored and without spanning quantifiers: linear.
_PY_FENCE_RE = re.compile(r"^[ \t]*```[ \t]*(?:python3?|py)[ \t]*\r?$", re.MULTILINE | re.IGNORECASE)


def last_code_block(text: str) -> str | None:
    """Body of the last fenced ```` ```python ```` (or ```` ```py ````) block; an unclosed last block (truncated
    generation) runs to the end of the text. ``None`` when there is no Python fence.

    >>> last_code_block("Here:\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
    'def f():\\n    return 1\\n'
    """
    last = None
    for last in _PY_FENCE_RE.finditer(text):
        pass
    if last is None:
        return None
    body_start = text.find("\n", last.end())
    body_start = len(text) if body_start < 0 else body_start + 1
    close = text.find("```", body_start)
    return text[body_start:] if close < 0 else text[body_start:close]
