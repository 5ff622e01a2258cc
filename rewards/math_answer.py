r"""Math answer accuracy checked with math-verify (boxed answers, LaTeX, fractions, sets, intervals).

What is compared: the model's answer is taken from the last ``<answer>…</answer>`` if present, else from the last
``\boxed{}``, else math-verify searches the (tail of the) whole completion. It is checked against the gold ``answer``
column with ``math_verify.verify`` (symbolic and numeric equivalence), as TRL ``trl/rewards/accuracy_rewards.py`` and
open-r1 ``src/open_r1/rewards.py::accuracy_reward`` do. As in TRL, a gold answer math-verify cannot parse gives ``None``
("not applicable") instead of a free 1.0 (open-r1) or a silent 0.0.

Timeouts: math-verify's own timeout uses ``signal.alarm``, which raises off the main thread, so both calls pass it as
disabled (``parsing_timeout=None``, ``timeout_seconds=None``; see ``math_verify/parser.py::parse`` and
``math_verify/grader.py::verify`` in math-verify 0.9). A pathological expression can therefore run for a long time in
this function: the hard per-call limit is enforced by ``rewards.combine.RewardCombiner``, which runs this reward in a
worker process and kills it past ``timeout_s``. Calling ``math_accuracy`` directly (outside the combiner) has no limit.
"""

from __future__ import annotations

import logging

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from rewards.extract import as_text, extract_answer_tag, last_boxed

# When neither <answer> nor \boxed is present math-verify scans the whole completion. The final answer sits at the end,
# so only the tail is parsed: this bounds the cost of a 1 MB completion (parsing is super-linear in places).
WHOLE_TEXT_TAIL_CHARS = 5_000
# Longer extracted answers are not a final answer but a dump; do not hand them to sympy.
MAX_ANSWER_CHARS = 2_000

_CONFIGS = (LatexExtractionConfig(), ExprExtractionConfig())


def _drop_timeout_disabled_warning(record: logging.LogRecord) -> bool:
    # math-verify warns "Timeout is disabled ... you must provide the logic for timeout interuption yourself" once per
    # process; we do (see module docstring), and every reward worker would print it again.
    return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_drop_timeout_disabled_warning)


def _parse(text: str) -> list:
    # parsing_timeout=None: no signal.alarm (see module docstring). raise_on_error=False already, but sympy can raise
    # from odd places (RecursionError, MemoryError), hence the broad except: model output must never raise.
    try:
        return parse(text, extraction_config=_CONFIGS, parsing_timeout=None)
    except Exception:
        return []


def _parse_answer(text: str) -> list:
    """Parse a bare answer such as ``\frac12``, ``[1,2)`` or ``x=3``: as the argument of ``\boxed{}`` first (math-verify
    then knows where the answer is), else as free text (handles answers already in ``$…$``)."""
    return _parse("\\boxed{" + text + "}") or _parse(text)


def parse_gold(answer: object) -> list:
    """Parsed gold answer, ``[]`` when math-verify cannot parse it. A raw GSM8K label (``…#### 42``) uses what follows
    the last ``####``."""
    text = as_text(answer) if not isinstance(answer, (int, float)) else repr(answer)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    text = text.strip()
    if not text:
        return []
    if "\\boxed" in text or "$" in text:
        return _parse(text) or _parse_answer(text)
    return _parse_answer(text)


def parse_prediction(completion: str) -> list:
    """Parsed model answer: ``<answer>`` content, else last ``\boxed{}``, else the completion's tail."""
    tagged = extract_answer_tag(completion)
    if tagged is not None:
        boxed = last_boxed(tagged)
        candidate = boxed if boxed is not None else tagged
    else:
        candidate = last_boxed(completion)
    if candidate is not None:
        if not candidate.strip() or len(candidate) > MAX_ANSWER_CHARS:
            return []
        return _parse_answer(candidate)
    return _parse(completion[-WHOLE_TEXT_TAIL_CHARS:])


def is_correct(completion: str, gold: list) -> bool:
    """Whether the completion's answer matches an already parsed gold answer. Never raises."""
    if not gold:
        return False
    pred = parse_prediction(as_text(completion))
    if not pred:
        return False
    try:
        return bool(verify(gold, pred, timeout_seconds=None))  # timeout disabled: see module docstring
    except Exception:
        return False


def score(completion: str, answer: object) -> float:
    r"""1.0 if the completion's final answer is mathematically equivalent to ``answer``, else 0.0.

    >>> score(r"<think>half</think><answer>\frac{1}{2}</answer>", "0.5")
    1.0
    >>> score(r"The answer is \boxed{[1, 2)}", r"[1,2)"), score("I think it is 3", "4")
    (1.0, 0.0)
    """
    return 1.0 if is_correct(completion, parse_gold(answer)) else 0.0


def math_accuracy(
    completions: list, prompts: list | None = None, *, answer: list | None = None, **_
) -> list[float | None]:
    """Batch reward. Column ``answer``: gold answer (LaTeX, number, or raw GSM8K ``… #### 42``). ``None`` where the
    gold answer cannot be parsed."""
    if answer is None:
        raise ValueError("math_accuracy needs the dataset column 'answer'")
    out: list[float | None] = []
    for completion, gold_text in zip(completions, answer, strict=True):
        gold = parse_gold(gold_text)
        out.append(None if not gold else (1.0 if is_correct(completion, gold) else 0.0))
    return out
