r"""Math answer accuracy checked with math-verify (boxed answers, LaTeX, fractions, sets, intervals).

What is compared, the model's side (:func:`parse_prediction`): inside the last ``<answer>…</answer>`` if there is one,
else in the whole completion,

1. the final boxed answer: the last ``\boxed{}`` together with the boxes chained before it by a bare connector, so
   ``x = \boxed{-2}`` or ``x = \boxed{4}`` is the two-part answer {-2, 4} (math-verify joins such boxes the same way),
   while ``\boxed{-2} and \boxed{4}, so the sum is \boxed{2}`` answers 2 (see ``rewards.extract.final_boxed``);
2. unless a "final answer is …" / "Final answer: …" sentence follows the last box: then that sentence is the answer
   (intermediate values were boxed, the final one was given in words);
3. with no box: the ``<answer>`` content, else math-verify's own reading of the tail of the completion.

A single-part gold therefore never matches a multi-part prediction (a set is not a number): boxing two candidates
(``\boxed{3}`` or ``\boxed{5}``) does not hedge.

The gold's side (:func:`parse_gold`): a bare label such as ``\frac12``, ``-2, 4`` or ``[1,2)`` is read as if it were
the content of a ``\boxed{}``, unless it contains an English word (3+ letters that are not a LaTeX command, ``\text{}``
content, ``and`` or ``sqrt``): math-verify would read "seventeen" inside a box as the product s·e·v·e·n·t·e·e·n, so such
a label is read as free text instead, exactly as TRL ``trl/rewards/accuracy_rewards.py`` (1.16) reads every gold
(``parse(solution)``): "17 apples" gives 17, "seventeen" or "see the figure" give nothing. A gold that gives nothing is
unusable and :func:`math_accuracy` returns ``None`` ("not applicable", as TRL and open-r1
``src/open_r1/rewards.py::accuracy_reward`` do) instead of scoring every completion 0; ``rewards.combine`` then keeps
that prompt's group out of the advantages and the loss. Equivalence is ``math_verify.verify`` (symbolic and numeric).

Timeouts: math-verify's own timeout uses ``signal.alarm``, which raises off the main thread, so both calls pass it as
disabled (``parsing_timeout=None``, ``timeout_seconds=None``; see ``math_verify/parser.py::parse`` and
``math_verify/grader.py::verify`` in math-verify 0.9). A pathological expression can therefore run for a long time in
this function: the hard per-call limit is enforced by ``rewards.combine.RewardCombiner``, which runs this reward in a
worker process and kills it past ``timeout_s``. Calling ``math_accuracy`` directly (outside the combiner) has no limit.
"""

from __future__ import annotations

import logging
import re

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from rewards.extract import as_text, extract_answer_tag, final_boxed

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
    r"""Parse a bare answer such as ``\frac12``, ``[1,2)`` or ``x=3``: as the argument of ``\boxed{}`` first (math-verify
    then knows where the answer is), else as free text (handles answers already in ``$…$``)."""
    return _parse("\\boxed{" + text + "}") or _parse(text)


# An English word: 3+ ASCII letters not preceded by a backslash or another letter (so not "\frac" nor its "rac").
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")
# Words math-verify reads inside a box: a connector of multi-part answers, sqrt(2), inf/infinity.
_MATH_WORDS = frozenset({"and", "sqrt", "inf", "infinity"})
# Text the author marked as text (\text{ cm}, \mathrm{DNE}): not scanned for words.
_TEXT_GROUP_RE = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|operatorname|mbox)\s*\{[^{}]*\}")


def has_word(text: str) -> bool:
    r"""Whether ``text`` contains an English word that math-verify would misread as a product of symbols.

    >>> has_word("seventeen"), has_word(r"\frac{1}{2} \text{ apples}"), has_word("x = -2 and x = 4")
    (True, False, False)
    """
    return any(m.group(0).lower() not in _MATH_WORDS for m in _WORD_RE.finditer(_TEXT_GROUP_RE.sub(" ", text)))


def read_answer(text: str) -> list:
    r"""Parse an answer written without a box (a gold label, ``<answer>`` content, a "final answer is" sentence): LaTeX
    in ``$``/``\boxed`` as math-verify reads it; text with an English word as free text (as TRL reads golds); anything
    else as the content of a ``\boxed{}``. A sentence's final full stop is dropped ("7." is 7). ``[]`` if unreadable."""
    text = text.strip()
    if text.endswith("."):
        text = text[:-1].rstrip()
    if not text:
        return []
    if "\\boxed" in text or "$" in text:
        return _parse(text) or _parse_answer(text)
    return _parse(text) if has_word(text) else _parse_answer(text)


def parse_gold(answer: object) -> list:
    """Parsed gold answer, ``[]`` when math-verify cannot read it (empty, or words such as "seventeen"; see the module
    docstring). A raw GSM8K label (``…#### 42``) uses what follows the last ``####``.

    >>> parse_gold("seventeen"), parse_gold("see the figure"), parse_gold("17 apples")[0], parse_gold("-2, 4")[0]
    ([], [], 17, {-2, 4})
    """
    text = as_text(answer) if not isinstance(answer, (int, float)) else repr(answer)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    return read_answer(text)


# "The final answer is 7", "**Final Answer:** $7$": a sentence after the last box that states the final answer.
_FINAL_ANSWER_RE = re.compile(r"final answer[\s*_]*(?:is\b|:)[\s*_:]*", re.IGNORECASE)
# Longest "final answer is …" sentence read (up to the end of its line).
FINAL_SENTENCE_CHARS = 500


def parse_prediction(completion: str) -> list:
    """Parsed model answer (see the module docstring): the final boxed answer, a "final answer is" sentence after it,
    else the ``<answer>`` content, else math-verify's reading of the completion's tail."""
    tagged = extract_answer_tag(completion)
    region = tagged if tagged is not None else completion
    final = final_boxed(region)
    if final is not None:
        contents, end = final
        after = region[end:]
        stated = None
        for stated in _FINAL_ANSWER_RE.finditer(after):
            pass
        if stated is not None:
            parsed = read_answer(after[stated.end() : stated.end() + FINAL_SENTENCE_CHARS].split("\n", 1)[0])
            if parsed:
                return parsed
        parts = list(dict.fromkeys(c.strip() for c in contents))  # "\boxed{4}, i.e. \boxed{4}" is one answer
        if not all(parts) or sum(map(len, parts)) > MAX_ANSWER_CHARS:
            return []
        if len(parts) == 1:
            return _parse_answer(parts[0])
        return _parse(", ".join("\\boxed{" + p + "}" for p in parts))  # math-verify's own multi-box form -> a set
    if tagged is not None:
        if len(tagged) > MAX_ANSWER_CHARS:
            return []
        return read_answer(tagged)
    return _parse(completion[-WHOLE_TEXT_TAIL_CHARS:])


def answer_matches(completion: str, gold: list) -> bool:
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
    r"""1.0 if the completion's final answer is mathematically equivalent to ``answer``, else 0.0 (also for an
    unusable gold: the batch reward :func:`math_accuracy` is the one that says ``None``).

    >>> score(r"<think>half</think><answer>\frac{1}{2}</answer>", "0.5")
    1.0
    >>> score(r"The answer is \boxed{[1, 2)}", r"[1,2)"), score("I think it is 3", "4")
    (1.0, 0.0)
    >>> score(r"$x = \boxed{-2}$ or $x = \boxed{4}$", "-2, 4"), score(r"\boxed{-2} or \boxed{4}", "4")
    (1.0, 0.0)
    """
    return 1.0 if answer_matches(completion, parse_gold(answer)) else 0.0


def math_accuracy(
    completions: list, prompts: list | None = None, *, answer: list | None = None, **_
) -> list[float | None]:
    r"""Batch reward. Column ``answer``: gold answer (LaTeX, number, or raw GSM8K ``… #### 42``). ``None`` ("not
    applicable") where math-verify cannot read the gold answer.

    >>> math_accuracy([r"\boxed{17}", r"\boxed{seventeen}"], answer=["17", "seventeen"])
    [1.0, None]
    """
    if answer is None:
        raise ValueError("math_accuracy needs the dataset column 'answer'")
    out: list[float | None] = []
    for completion, gold_text in zip(completions, answer, strict=True):
        gold = parse_gold(gold_text)
        out.append(None if not gold else (1.0 if answer_matches(completion, gold) else 0.0))
    return out
