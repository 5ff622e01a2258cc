"""Reasoning traces for supervised fine-tuning: seeded synthetic ones for the synthetic tasks, or a JSONL of a bigger
model's completions (distillation). An SFT example is a row ``{prompt, completion}``: ``prompt`` is the question (no
template; ``data/templates.py`` renders it), ``completion`` what the policy should write after the rendered prompt.

Completion convention, the one ``rewards/format.py`` scores by: a trace is written in full,
``"<think> ...working... </think> <answer>522</answer>"``. When the rendered prompt already ends with ``<think>``
(``r1_zero`` with ``prefill_think``) the opening tag belongs to the prompt, so :func:`strip_prefilled_think` drops it
from the completion; the format rewards' ``prefix=None`` auto-detection adds it back when scoring. The same rule
(``prompt.rstrip().endswith("<think>")``) is used in both places, so SFT outputs score 1.0 on ``format_strict``.

Synthetic traces (:data:`TRACE_FNS`; :func:`add_traces` applies them to generator rows):

* ``arithmetic``: column addition / subtraction digit by digit, least significant column first, each column a true
  equation with its carry (``7+5+0=12``) or borrow (``13-8-1=4``: the ``1`` in front of ``3`` is the borrowed ten,
  so the next column subtracts a borrow of 1). Operands are first restated zero-padded to the same width so that
  column ``i`` of both sits at a fixed distance. The answer digits are the units of the columns read backwards:
  ``"<think> 037+485 7+5+0=12 3+8+1=12 0+4+1=05 =522 </think> <answer>522</answer>"``. A byte-level model emits
  one token per character, so the layout is compact and identical for every question of the same width. ``*`` and
  ``/`` get a shorter partial-product / check-by-multiplication trace (valid text, not meant to be learnable by a
  tiny model).
* ``countdown``: the solution equation evaluated one operation at a time, innermost first.
* ``gsm8k_style``: the generator's reasoning lines (calculator annotations removed), then the number.

Distillation: :func:`load_sft_rows` reads any source ``data.sources.load_prompt_dataset`` reads (JSONL, parquet, a
saved dataset, ...) with a prompt column and a completion column; ``synthetic:<kind>?n=&seed=`` sources get traces.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Callable

THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE = "<think>", "</think>", "<answer>", "</answer>"

_ARITHMETIC_RE = re.compile(r"^What is (-?\d+) ([-+*/]) (-?\d+)\?$")
_CALCULATOR_RE = re.compile(r"<<[^<>]*>>")  # GSM8K's "<<48/2=24>>" annotations


def wrap_trace(working: str, answer: str) -> str:
    """The full completion for ``working`` and ``answer``: ``"<think> working </think> <answer>answer</answer>"``.

    >>> wrap_trace("2+2=4", "4")
    '<think> 2+2=4 </think> <answer>4</answer>'
    """
    return f"{THINK_OPEN} {working} {THINK_CLOSE} {ANSWER_OPEN}{answer}{ANSWER_CLOSE}"


def strip_prefilled_think(completion: str, rendered_prompt: str) -> str:
    """``completion`` as the policy writes it after ``rendered_prompt``: without a leading ``<think>`` when the
    prompt already ends with one (the same test as ``rewards.format``'s prefix auto-detection). Whitespace before the
    dropped tag goes too; the whitespace after it is kept (the prompt ends right at the tag).

    >>> strip_prefilled_think("<think> 1+1=2 </think> <answer>2</answer>", "Assistant: <think>")
    ' 1+1=2 </think> <answer>2</answer>'
    >>> strip_prefilled_think("<think> x </think>", "Assistant:")
    '<think> x </think>'
    """
    stripped = completion.lstrip()
    if rendered_prompt.rstrip().endswith(THINK_OPEN) and stripped.startswith(THINK_OPEN):
        return stripped[len(THINK_OPEN) :]
    return completion


# ---------------------------------------------------------------------------------------------------------------------
# Arithmetic


def _column_add(a: int, b: int, slip: Callable[[], bool]) -> tuple[str, int]:
    """Working for a + b with a, b >= 0: restated operands, one equation per column; returns (working, result).
    A carry that `slip()` drops is not passed on (the next column adds 0; a final carry loses its leading 1)."""
    width = max(len(str(a)), len(str(b)))
    x, y = str(a).zfill(width), str(b).zfill(width)
    steps, carry, digits = [f"{x}+{y}"], 0, []
    for dx, dy in zip(reversed(x), reversed(y)):
        total = int(dx) + int(dy) + carry
        steps.append(f"{dx}+{dy}+{carry}={total:02d}")
        digits.append(str(total % 10))
        carry = total // 10 if not (total >= 10 and slip()) else 0
    return " ".join(steps), int(str(carry) + "".join(reversed(digits)))


def _column_sub(a: int, b: int, slip: Callable[[], bool]) -> tuple[str, int]:
    """Working for a - b with a >= b >= 0: a borrowed ten is written in front of the column's digit (13-8-1=4).
    A borrow that `slip()` drops is not taken from the next column. Returns (working, result)."""
    width = len(str(a))
    x, y = str(a), str(b).zfill(width)
    steps, borrow, digits = [f"{x}-{y}"], 0, []
    for dx, dy in zip(reversed(x), reversed(y)):
        top = int(dx)
        lent = top - int(dy) - borrow < 0
        digit = top + 10 * lent - int(dy) - borrow
        steps.append(f"{'1' if lent else ''}{dx}-{dy}-{borrow}={digit}")
        digits.append(str(digit))
        borrow = int(lent and not slip())
    return " ".join(steps), int("".join(reversed(digits)))


def arithmetic_trace(question: str, answer: str, *, carry_slip: float = 0.0, rng: random.Random | None = None) -> str:
    """The completion for a ``data.synthetic.make_arithmetic`` row (``"What is 37 + 485?"``, ``"522"``).

    carry_slip: an imperfect teacher. Each carry (``+``) or borrow (``-``) is dropped with this probability, the
    classic multi-digit slip (Brown & Burton 1978, "Diagnostic models for procedural bugs in basic mathematical
    skills"); the rest of the working, the final ``=N`` and the answer follow the slipped computation, so the trace
    stays self-consistent but its answer is wrong. Draws come from ``rng``. 0 (default): always correct.

    Raises ValueError when the question is not in the generator's form or, with no slips, ``answer`` disagrees with
    the working (traces are built from our own data, so this is a bug, never model output).

    >>> arithmetic_trace("What is 37 + 485?", "522")
    '<think> 037+485 7+5+0=12 3+8+1=12 0+4+1=05 =522 </think> <answer>522</answer>'
    >>> arithmetic_trace("What is 52 - 7?", "45")
    '<think> 52-07 12-7-0=5 5-0-1=4 =45 </think> <answer>45</answer>'
    >>> arithmetic_trace("What is 7 - 52?", "-45")
    '<think> 07-52=-(52-07) 12-7-0=5 5-0-1=4 =-45 </think> <answer>-45</answer>'
    >>> arithmetic_trace("What is 37 + 485?", "522", carry_slip=1.0, rng=random.Random(0))  # every carry dropped
    '<think> 037+485 7+5+0=12 3+8+0=11 0+4+0=04 =412 </think> <answer>412</answer>'
    """
    match = _ARITHMETIC_RE.match(question.strip())
    if match is None:
        raise ValueError(f"not an arithmetic question of the form 'What is A op B?': {question!r}")
    a, op, b = int(match[1]), match[2], int(match[3])
    if carry_slip > 0 and rng is None:
        raise ValueError("carry_slip > 0 needs an rng")
    slip = (lambda: rng.random() < carry_slip) if carry_slip > 0 else (lambda: False)
    if op in "+-" and a >= 0 and b >= 0:
        if op == "+":
            working, value = _column_add(a, b, slip)
        elif a >= b:
            working, value = _column_sub(a, b, slip)
        else:  # a - b = -(b - a): restate the swap, then subtract the smaller from the larger
            inner, magnitude = _column_sub(b, a, slip)
            swapped, columns = inner.split(" ", 1)
            working, value = f"{str(a).zfill(len(str(b)))}-{b}=-({swapped}) {columns}", -magnitude
    elif op == "*":
        digits = str(abs(b))[::-1]
        parts = [a * int(d) * 10**i for i, d in enumerate(digits) if d != "0"] or [0]
        sign = -1 if b < 0 else 1
        products = " ".join(f"{a}*{int(d) * 10**i}={a * int(d) * 10**i}" for i, d in enumerate(digits) if d != "0")
        working, value = f"{products or f'{a}*0=0'} {'+'.join(map(str, parts))}={sum(parts)}", sign * sum(parts)
    elif op == "/" and b != 0 and a % b == 0:
        working, value = f"{b}*{a // b}={a}", a // b
    else:  # negative operands or an inexact division: the generator makes neither
        working, value = f"{a}{op}{b}", int(answer)
    if carry_slip == 0 and str(value) != answer.strip():
        raise ValueError(f"trace for {question!r} gives {value}, but the answer is {answer!r}")
    return wrap_trace(f"{working} ={value}", str(value))


# ---------------------------------------------------------------------------------------------------------------------
# Countdown and GSM8K-style


def countdown_trace(question: str, answer: str) -> str:
    """The completion for a ``make_countdown`` row: each operation of the solution ``answer`` evaluated innermost
    first, then the solution itself as the answer.

    >>> countdown_trace("Using the numbers [3, 5, 2], create an equation that equals 16. ...", "(3 + 5) * 2")
    '<think> 3+5=8 8*2=16 </think> <answer>(3 + 5) * 2</answer>'
    """
    steps: list[str] = []

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPS:
            left, right = walk(node.left), walk(node.right)
            symbol, fn = _AST_OPS[type(node.op)]
            value = fn(left, right)
            steps.append(f"{left}{symbol}{right}={value}")
            return value
        raise ValueError(f"countdown answer {answer!r} is not an integer + - * / expression")

    walk(ast.parse(answer.strip(), mode="eval").body)
    return wrap_trace(" ".join(steps), answer.strip())


_AST_OPS: dict[type, tuple[str, Callable[[int, int], int]]] = {
    ast.Add: ("+", lambda x, y: x + y),
    ast.Sub: ("-", lambda x, y: x - y),
    ast.Mult: ("*", lambda x, y: x * y),
    ast.Div: ("/", lambda x, y: x // y),  # the generator divides only exactly
}


def gsm8k_style_trace(question: str, answer: str) -> str:
    """The completion for a ``make_gsm8k_style`` row (``answer`` = reasoning lines, then ``#### N``).

    >>> gsm8k_style_trace("...", "The pens cost 3*2 = <<3*2=6>>6 dollars.\\n#### 6")
    '<think> The pens cost 3*2 = 6 dollars. </think> <answer>6</answer>'
    """
    reasoning, sep, final = answer.rpartition("####")
    if not sep:
        raise ValueError(f"gsm8k-style answer has no '####': {answer!r}")
    working = " ".join(line.strip() for line in _CALCULATOR_RE.sub("", reasoning).splitlines() if line.strip())
    return wrap_trace(working, final.strip())


TRACE_FNS: dict[str, Callable[[str, str], str]] = {
    "arithmetic": arithmetic_trace,
    "countdown": countdown_trace,
    "gsm8k_style": gsm8k_style_trace,
}
"""Synthetic kind (``data.synthetic.SYNTHETIC_KINDS``) -> ``trace(question, answer) -> completion``."""


def add_traces(rows: list[dict], kind: str, *, carry_slip: float = 0.0, seed: int = 0) -> list[dict]:
    """``rows`` of a synthetic generator, each with a ``completion`` (its full trace, see module docstring) added.

    carry_slip (arithmetic only): the imperfect teacher of :func:`arithmetic_trace`, drawing from
    ``random.Random(seed)``; the rows' ``answer`` stays the true one."""
    if kind not in TRACE_FNS:
        raise ValueError(f"no synthetic traces for {kind!r}; available: {', '.join(TRACE_FNS)}")
    if not 0.0 <= carry_slip <= 1.0:
        raise ValueError(f"carry_slip must be in [0, 1], got {carry_slip}")
    if carry_slip > 0 and kind != "arithmetic":
        raise ValueError(f"carry_slip applies to arithmetic traces only, not {kind!r}")
    if carry_slip > 0:
        rng = random.Random(seed)
        return [{**row, "completion": arithmetic_trace(row["prompt"], str(row["answer"]), carry_slip=carry_slip, rng=rng)}
                for row in rows]
    trace = TRACE_FNS[kind]
    return [{**row, "completion": trace(row["prompt"], str(row["answer"]))} for row in rows]


def load_sft_rows(
    source: str,
    *,
    split: str = "train",
    prompt_column: str = "prompt",
    completion_column: str = "completion",
    data_format: str = "auto",
    limit: int | None = None,
    subset: str | None = None,
    carry_slip: float = 0.0,
    seed: int = 0,
) -> list[dict]:
    """SFT rows ``{prompt, completion}`` from ``source``.

    ``synthetic:<kind>[?n=N&seed=S]`` generates the task with ``data.sources`` and adds :data:`TRACE_FNS` traces
    (the ``answer`` column is kept too; ``carry_slip`` and ``seed`` as in :func:`add_traces`). Anything else is read by ``data.sources.load_prompt_dataset`` (same formats,
    errors and hub rules as the prompt data): ``completion_column`` holds the target text, e.g. a bigger model's
    ``<think>…</think><answer>…</answer>`` output, used verbatim (a leading ``<think>`` is dropped at tokenisation
    time when the rendered prompt ends with one).
    """
    from data.sources import load_prompt_dataset

    if source.startswith("synthetic:"):
        kind = source[len("synthetic:") :].partition("?")[0]
        dataset = load_prompt_dataset(source, keep_columns=[], limit=limit)
        return add_traces(dataset.to_list(), kind, carry_slip=carry_slip, seed=seed)
    if carry_slip:
        raise ValueError(f"carry_slip applies to synthetic arithmetic traces only, not to {source!r}")
    dataset = load_prompt_dataset(
        source, split=split, prompt_column=prompt_column, answer_column=completion_column, data_format=data_format,
        limit=limit, subset=subset,
    )
    return [{"prompt": row["prompt"], "completion": row["answer"]} for row in dataset.to_list()]
