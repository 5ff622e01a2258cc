"""reasoning-gym's own verifiers: the ``<answer>`` content scored by the task's ``score_answer(answer, entry)``.

Rows come from a ``reasoning_gym:`` data source (data/gym_tasks.py), whose column ``rg_entry`` holds JSON of
``{"task", "options", "entry"}``. The task is rebuilt from its name and options once per process (cached) and its
``score_answer`` called on the content of the last complete ``<answer>...</answer>`` (reasoning-gym's own
``extract_answer`` also takes the last tag). Scores are the task's: 1.0 correct, 0.0 wrong, and some tasks give
partial credit (the default verifier gives ``len(gold) / len(answer)`` when the gold answer is a substring of a longer
answer), so ``accuracy`` (the fraction scoring >= 1) counts exact answers only.

``partial_credit=False`` pays only exact answers (a score below 1 becomes 0.0). The default verifier's substring credit
can be farmed: in the task sweep (benchmarks/results_task_sweep.md) a LoRA run on letter_counting, whose answers are
mostly 1 or 2, learned to answer "12" to every prompt, which takes 0.5 whenever the count is 1 or 2.

``fallback="last_number"`` scores a completion without a complete ``<answer>`` pair by its last number instead of 0.0:
for tasks whose answer is one number, with a model that answers but ignores the tag instruction (SmolLM2-135M-Instruct
never writes the tags when asked, so with tags required every reward is 0 and GRPO has nothing to learn from).

Model output is untrusted: no ``<answer>`` tag scores 0.0 (by default), and a verifier that raises on an answer scores
0.0 too (some parse it with ``eval`` or sympy). Not in ``INLINE_REWARDS``: it runs in the reward pool, one completion per call with
the hard ``rewards.timeout_s``, since a task's verifier may take arbitrarily long. The package is imported on a
worker's first call (~1 s on an idle 2-core CPU), not when ``rewards`` is imported.
"""

from __future__ import annotations

import functools
import json
import math

from rewards.extract import as_text, extract_answer_tag, last_number

FALLBACKS = ("none", "last_number")


@functools.lru_cache(maxsize=64)
def _task(task: str, options_json: str):
    from data.gym_tasks import make_task

    return make_task(task, size=1, seed=0, options=json.loads(options_json))


def _record(rg_entry: object) -> dict | None:
    """The row's ``{"task", "options", "entry"}``; ``None`` when the column value is unusable."""
    try:
        record = json.loads(rg_entry) if isinstance(rg_entry, str) else None
    except ValueError:
        return None
    if not (isinstance(record, dict) and isinstance(record.get("task"), str) and isinstance(record.get("entry"), dict)
            and isinstance(record.get("options", {}), dict)):
        return None
    return record


def score(completion: object, rg_entry: str, *, fallback: str = "none", partial_credit: bool = True) -> float | None:
    """The task's score of the completion's ``<answer>``; without one 0.0, or with ``fallback="last_number"`` the score of
    its last number; ``None`` when ``rg_entry`` is unusable.

    >>> entry = json.dumps({"task": "leg_counting", "options": {}, "entry": {"question": "?", "answer": "8", "metadata": {}}})
    >>> score("<answer>8</answer>", entry), score("<answer>7</answer>", entry), score("4 + 4 = 8", entry)
    (1.0, 0.0, 0.0)
    >>> score("4 + 4 = 8", entry, fallback="last_number"), score("<answer>7</answer> 8", entry, fallback="last_number")
    (1.0, 0.0)
    >>> score("<answer>88</answer>", entry), score("<answer>88</answer>", entry, partial_credit=False)
    (0.5, 0.0)
    """
    record = _record(rg_entry)
    if record is None:
        return None
    try:
        dataset = _task(record["task"], json.dumps(record.get("options", {}), sort_keys=True))
    except (ValueError, ImportError):  # a task or option this reasoning-gym does not know: the row, not the model
        return None
    text = as_text(completion)
    answer = extract_answer_tag(text)
    if answer is None and fallback == "last_number":
        answer = last_number(text)
    if answer is None:
        return 0.0
    try:
        value = float(dataset.score_answer(answer, record["entry"]))
    except Exception:  # noqa: BLE001 - the verifier failing on model output is a wrong answer, not an error
        return 0.0
    if not math.isfinite(value):
        return 0.0
    return value if partial_credit or value >= 1.0 else 0.0


def reasoning_gym(
    completions: list, prompts: list | None = None, *, rg_entry: list | None = None, fallback: str = "none",
    partial_credit: bool = True, **_
) -> list[float | None]:
    """Batch reward. Column ``rg_entry`` (JSON, from a ``reasoning_gym:`` source); ``None`` for an unusable row.
    Options: ``fallback``: ``"none"`` (no tag scores 0.0) or ``"last_number"``; ``partial_credit``: ``False`` pays
    exact answers only (see module docstring)."""
    if fallback not in FALLBACKS:
        raise ValueError(f"reasoning_gym fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
    if rg_entry is None:
        raise ValueError("reasoning_gym needs the dataset column 'rg_entry' (from a reasoning_gym: data source)")
    return [score(completion, entry, fallback=fallback, partial_credit=partial_credit)
            for completion, entry in zip(completions, rg_entry, strict=True)]
