"""Exact-match accuracy for arithmetic tasks (integer or decimal answers).

Prediction: the last number inside ``<answer>…</answer>`` if present, else the last number in the completion.
Gold (column ``answer``): an int, float or numeric string. Comparison is exact in decimal arithmetic (``"2.50"`` ==
``2.5``, but ``2.4999999`` != ``2.5``); use ``gsm8k_accuracy`` when a tolerance is wanted.
"""

from __future__ import annotations

from rewards.extract import as_text, extract_answer_tag, last_number, parse_decimal


def score(completion: str, answer: object) -> float:
    """1.0 if the completion's final number equals ``answer`` exactly, else 0.0.

    >>> score("<answer>-12.50</answer>", "-12.5"), score("12 + 30 = 42", 42), score("<answer>41</answer> 42", 42)
    (1.0, 1.0, 0.0)
    """
    gold = parse_decimal(answer if not isinstance(answer, str) else answer.strip())
    if gold is None:
        return 0.0
    text = as_text(completion)
    tagged = extract_answer_tag(text)
    number = last_number(text if tagged is None else tagged)
    pred = None if number is None else parse_decimal(number)
    return 1.0 if pred is not None and pred == gold else 0.0


def arithmetic_accuracy(completions: list, prompts: list | None = None, *, answer: list | None = None, **_) -> list:
    """Batch reward. Column ``answer``: the exact number. ``None`` where the gold is not a number."""
    if answer is None:
        raise ValueError("arithmetic_accuracy needs the dataset column 'answer'")
    return [
        None if parse_decimal(gold) is None else score(completion, gold)
        for completion, gold in zip(completions, answer, strict=True)
    ]
