"""GSM8K-style numeric answer accuracy.

Gold (column ``answer``): a raw GSM8K solution ending in ``#### 42`` (the number after the last ``####``, commas and
``$`` stripped, as in the GSM8K reference grader ``grade_school_math/dataset.py::extract_answer``) or a bare number.
Prediction: the last number inside ``<answer>…</answer>`` if present, else the last number after a ``####`` marker,
else the last number in the completion (the usual GSM8K fallback, e.g. TRL/verl ``gsm8k.py`` "flexible" mode).
Equality is numeric with an absolute tolerance ``tol`` (default 1e-6), so ``"18.00"`` equals ``18``. A gold with no
number ("see the figure") makes the batch reward return ``None`` (not applicable: the group is left out of training).

Deliberate differences from ``####`` extraction as in verl ``verl/utils/reward_score/gsm8k.py::extract_solution``
(Jiayi-Pan/TinyZero @ 95df88f), for anyone porting a recipe:

* an ``<answer>…</answer>`` tag wins over ``####``: ``<answer>42</answer>`` scores even without ``#### 42``;
* verl ``method="strict"`` takes the FIRST ``#### <number>`` and scores 0 without one; here the LAST ``####`` counts
  and, failing a tag or ``####``, the last number of the completion (verl's ``method="flexible"``);
* verl compares strings (``"18.00" != "18"``); here numbers are compared within ``tol``.
"""

from __future__ import annotations

from decimal import Decimal

from rewards.extract import as_text, extract_answer_tag, last_number, parse_decimal


def parse_gold(answer: object) -> Decimal | None:
    """Gold number from a raw GSM8K answer (``… #### 1,234``) or a bare number; ``None`` if there is none.

    >>> parse_gold("Natalia sold 48/2 = 24 clips in May.\\n#### 72")
    Decimal('72')
    """
    if not isinstance(answer, str):
        return parse_decimal(answer)
    text = answer.rsplit("####", 1)[1] if "####" in answer else answer
    direct = parse_decimal(text)
    if direct is not None:
        return direct
    number = last_number(text)
    return None if number is None else parse_decimal(number)


def extract_prediction(completion: str) -> Decimal | None:
    """The model's numeric answer: ``<answer>`` tag, else after the last ``####``, else the last number."""
    tagged = extract_answer_tag(completion)
    if tagged is not None:
        segment = tagged
    elif "####" in completion:
        segment = completion.rsplit("####", 1)[1].lstrip().split("\n", 1)[0]
    else:
        segment = completion
    number = last_number(segment)
    return None if number is None else parse_decimal(number)


def score(completion: str, answer: object, *, tol: float = 1e-6) -> float:
    """1.0 if the completion's final number equals the gold number within ``tol``, else 0.0.

    >>> score("<think>6*7</think><answer>42</answer>", "#### 42"), score("so #### 1,000.0", "1000"), score("41", "42")
    (1.0, 1.0, 0.0)
    """
    gold = parse_gold(answer)
    if gold is None:
        return 0.0
    pred = extract_prediction(as_text(completion))
    if pred is None:
        return 0.0
    try:
        return 1.0 if abs(pred - gold) <= Decimal(repr(float(tol))) else 0.0
    except (ArithmeticError, ValueError):  # e.g. decimal Overflow on absurd exponents
        return 0.0


def gsm8k_accuracy(
    completions: list, prompts: list | None = None, *, answer: list | None = None, tol: float = 1e-6, **_
) -> list[float | None]:
    """Batch reward. Column ``answer``: raw GSM8K answer or bare number. ``None`` where the gold has no number."""
    if answer is None:
        raise ValueError("gsm8k_accuracy needs the dataset column 'answer'")
    return [
        None if parse_gold(gold) is None else score(completion, gold, tol=tol)
        for completion, gold in zip(completions, answer, strict=True)
    ]
