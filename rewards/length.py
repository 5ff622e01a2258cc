"""Length-shaped rewards: cosine length scaling, DAPO overlong punishment, n-gram repetition penalty.

Length unit: without a tokenizer in the reward process, a completion's length is its number of characters (``unit=
"chars"``) or of whitespace-separated words (``unit="words"``), so ``max_len``/``cache_len`` must be given in that unit.
When the trainer passes the dataset-style column ``completion_length`` (one int per completion, in tokens), it is used
instead and the limits are in tokens. Rule of thumb for English/maths: 1 token ≈ 4 characters ≈ 0.75 words.
"""

from __future__ import annotations

import math

from rewards import arithmetic, gsm8k, math_answer
from rewards.extract import as_text

_CORRECTNESS = {"math": math_answer.score, "gsm8k": gsm8k.score, "arithmetic": arithmetic.score}
_UNITS = ("chars", "words")


def measure(completion: object, unit: str = "chars") -> int:
    """Length of a completion in ``unit`` ("chars" or "words").

    >>> measure("two words"), measure("two words", "words")
    (9, 2)
    """
    text = as_text(completion)
    return len(text) if unit == "chars" else len(text.split())


def _lengths(completions: list, unit: str, completion_length: list | None) -> list[int]:
    if unit not in _UNITS:
        raise ValueError(f"unit must be one of {_UNITS}, got {unit!r}")
    if completion_length is not None:
        return [int(n) for n in completion_length]
    return [measure(c, unit) for c in completions]


def score_cosine(
    length: int,
    correct: bool,
    *,
    min_value_wrong: float = -1.0,
    max_value_wrong: float = -0.5,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
    max_len: int = 1000,
    exceed_length: float | None = None,
) -> float:
    """Cosine length-scaled correctness reward, Yeo et al. 2025 "Demystifying Long Chain-of-Thought Reasoning in LLMs"
    (arXiv:2502.03373) eq. 1: ``CosFn(t, T, a, b) = a + (b - a)(1 + cos(t·π/T)) / 2``. Correct answers get
    ``max_value_correct`` at length 0 falling to ``min_value_correct`` at ``max_len`` (short and right is best); wrong
    answers get ``min_value_wrong`` at 0 rising to ``max_value_wrong`` at ``max_len`` (if wrong, think longer).
    Defaults are open-r1's ``get_cosine_scaled_reward``. Past ``max_len`` the paper gives a fixed ``exceed_length``
    reward; with ``exceed_length=None`` the length is clamped to ``max_len`` (open-r1 does not clamp, so its cosine
    starts rising again past ``max_len``).

    >>> score_cosine(0, True), score_cosine(1000, True), score_cosine(500, False), score_cosine(5000, True)
    (1.0, 0.5, -0.75, 0.5)
    """
    if length > max_len and exceed_length is not None:
        return float(exceed_length)
    progress = min(max(length, 0), max_len) / max_len
    if correct:
        start, end = max_value_correct, min_value_correct
    else:
        start, end = min_value_wrong, max_value_wrong
    return end + 0.5 * (start - end) * (1.0 + math.cos(progress * math.pi))


def cosine_length(
    completions: list,
    prompts: list | None = None,
    *,
    answer: list | None = None,
    correctness: str = "math",
    unit: str = "chars",
    completion_length: list | None = None,
    min_value_wrong: float = -1.0,
    max_value_wrong: float = -0.5,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
    max_len: int = 1000,
    exceed_length: float | None = None,
    **_,
) -> list[float | None]:
    """Batch :func:`score_cosine`. Column ``answer``; optional column ``completion_length`` (tokens). Option
    ``correctness`` picks the checker: "math" (math-verify, default), "gsm8k" or "arithmetic". A row whose gold answer
    the checker cannot use still gets the wrong-answer curve (not ``None``): the length shaping stays informative."""
    if answer is None:
        raise ValueError("cosine_length needs the dataset column 'answer'")
    if correctness not in _CORRECTNESS:
        raise ValueError(f"cosine_length correctness must be one of {sorted(_CORRECTNESS)}, got {correctness!r}")
    if max_len <= 0:
        raise ValueError(f"cosine_length max_len must be > 0, got {max_len}")
    check = _CORRECTNESS[correctness]
    lengths = _lengths(completions, unit, completion_length)
    return [
        score_cosine(
            n,
            check(c, gold) == 1.0,
            min_value_wrong=min_value_wrong,
            max_value_wrong=max_value_wrong,
            min_value_correct=min_value_correct,
            max_value_correct=max_value_correct,
            max_len=max_len,
            exceed_length=exceed_length,
        )
        for c, gold, n in zip(completions, answer, lengths, strict=True)
    ]


def score_overlong(length: int, *, max_len: int, cache_len: int) -> float:
    """DAPO soft overlong punishment (Yu et al. 2025, arXiv:2503.14476, eq. 13), with ``L_max = max_len`` and
    ``L_cache = cache_len``: 0 up to ``max_len - cache_len``, then linear down to -1 at ``max_len``, -1 beyond.

    >>> score_overlong(100, max_len=1000, cache_len=200), score_overlong(900, max_len=1000, cache_len=200)
    (0.0, -0.5)
    >>> score_overlong(1000, max_len=1000, cache_len=200), score_overlong(1001, max_len=1000, cache_len=200)
    (-1.0, -1.0)
    """
    expected = max_len - cache_len
    if length <= expected:
        return 0.0
    if length <= max_len:
        return (expected - length) / cache_len
    return -1.0


def overlong_penalty(
    completions: list,
    prompts: list | None = None,
    *,
    max_len: int = 4096,
    cache_len: int = 1024,
    unit: str = "chars",
    completion_length: list | None = None,
    **_,
) -> list[float]:
    """Batch :func:`score_overlong`; returns values in [-1, 0]. Optional column ``completion_length`` (tokens): when
    present, ``max_len``/``cache_len`` are in tokens (DAPO uses ``L_max`` = 20480, ``L_cache`` = 4096 tokens)."""
    if not 0 < cache_len <= max_len:
        raise ValueError(f"overlong_penalty needs 0 < cache_len <= max_len, got {cache_len=}, {max_len=}")
    lengths = _lengths(completions, unit, completion_length)
    return [score_overlong(n, max_len=max_len, cache_len=cache_len) for n in lengths]


def score_repetition(completion: str, *, ngram_size: int = 3, max_penalty: float = -1.0) -> float:
    """N-gram repetition penalty, Yeo et al. 2025 (arXiv:2502.03373) App. C.2 as in open-r1
    ``get_repetition_penalty_reward``: ``(1 - unique_ngrams / total_ngrams) * max_penalty`` over lower-cased
    whitespace words; 0.0 for texts shorter than one n-gram. Returns a value in [max_penalty, 0].

    >>> score_repetition("a b c d e f"), score_repetition("go go go go go", ngram_size=2)
    (0.0, -0.75)
    """
    words = as_text(completion).lower().split()
    if len(words) < ngram_size:
        return 0.0
    ngrams = list(zip(*(words[i:] for i in range(ngram_size))))
    repeated = 1.0 - len(set(ngrams)) / len(ngrams)
    return repeated * max_penalty if repeated > 0 else 0.0


def repetition_penalty(
    completions: list, prompts: list | None = None, *, ngram_size: int = 3, max_penalty: float = -1.0, **_
) -> list[float]:
    """Batch :func:`score_repetition`. No dataset columns. ``max_penalty`` must be <= 0, ``ngram_size`` >= 1."""
    if max_penalty > 0:
        raise ValueError(f"repetition_penalty max_penalty must be <= 0, got {max_penalty}")
    if ngram_size < 1:
        raise ValueError(f"repetition_penalty ngram_size must be >= 1, got {ngram_size}")
    return [score_repetition(c, ngram_size=ngram_size, max_penalty=max_penalty) for c in completions]
