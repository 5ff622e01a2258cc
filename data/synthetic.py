"""Offline, seeded generators of verifiable reasoning prompts, so that training and tests need no dataset hub.

Every generator returns ``list[dict]`` rows with ``prompt`` (the question text, no template: see ``data/templates.py``)
and ``answer`` (a string), plus task extras. The same ``seed`` gives identical rows; each generator owns its own
``random.Random(seed)``, so nothing depends on or disturbs global RNG state.

* :func:`make_countdown`: TinyZero's Countdown task (Jiayi Pan, TinyZero ``examples/data_preprocess/countdown.py`` at
  f36b1b8; that script reads the hub set ``Jiayi-Pan/Countdown-Tasks-3to4``). We *build* each target from a random
  expression over the numbers instead, so every row is solvable and ``answer`` holds one solution. Extras ``numbers``
  (list[int]) and ``target`` (int). Like TinyZero's reward (``verl/utils/reward_score/countdown.py``), the solution uses
  *every* number exactly once. Other solutions exist, so a countdown reward must check an equation against
  ``numbers``/``target``, not compare it with ``answer``.
* :func:`make_arithmetic`: "What is 37 + 485?" -> ``"522"``.
* :func:`make_gsm8k_style` (in data/word_problems.py): templated word problems. ``answer`` is in GSM8K's format, reasoning lines with
  ``<<48/2=24>>`` calculator annotations, then ``#### 24``, so a GSM8K reward that splits on ``####`` works unchanged.
  The bare number is also in ``final_answer`` (str).

Rows may repeat (small arithmetic spaces do); :func:`exclude_questions` removes eval questions that occur in train.

CLI (file format from the suffix: .jsonl, .json, .parquet, .csv)::

    python -m data.synthetic countdown --n 1000 --seed 0 --out data_out/countdown_train.jsonl
    python -m data.synthetic countdown --n 200 --seed 1 --out data_out/countdown_eval.jsonl \\
        --exclude data_out/countdown_train.jsonl
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from data.word_problems import make_gsm8k_style

# ---------------------------------------------------------------------------------------------------------------------
# Countdown

COUNTDOWN_QUESTION = (
    "Using the numbers {numbers}, create an equation that equals {target}. You can use basic arithmetic operations "
    "(+, -, *, /) and each number can only be used once."
)
# Random expressions miss a small target range often (products grow fast); each try costs microseconds, and with the
# defaults ~1 in 4 tries lands in range. The cap only turns impossible settings into an error instead of a hang.
_MAX_TRIES_PER_ROW = 10_000


def make_countdown(
    n: int,
    seed: int,
    *,
    num_numbers: tuple[int, int] = (3, 4),
    max_number: int = 100,
    target_range: tuple[int, int] = (1, 100),
) -> list[dict]:
    """``n`` solvable Countdown puzzles: rows ``{prompt, answer, numbers, target}``.

    ``num_numbers`` and ``target_range`` are inclusive ``(low, high)``; numbers are drawn from ``1..max_number``.
    Intermediate results stay non-negative integers (``-`` subtracts the smaller from the larger, ``/`` only divides
    exactly), as in the Countdown game, so the ``answer`` evaluates to exactly ``target``.
    """
    lo_k, hi_k = num_numbers
    lo_t, hi_t = target_range
    if not 2 <= lo_k <= hi_k:
        raise ValueError(f"num_numbers must be (low, high) with 2 <= low <= high, got {num_numbers}")
    if max_number < 1 or lo_t > hi_t:
        raise ValueError(f"need max_number >= 1 and target_range low <= high, got {max_number}, {target_range}")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        for _ in range(_MAX_TRIES_PER_ROW):
            numbers = [rng.randint(1, max_number) for _ in range(rng.randint(lo_k, hi_k))]
            equation, value = _random_expression(numbers, rng)
            if lo_t <= value <= hi_t:
                break
        else:
            raise ValueError(f"no target in {target_range} after {_MAX_TRIES_PER_ROW} tries; widen target_range")
        question = COUNTDOWN_QUESTION.format(numbers=numbers, target=value)
        rows.append({"prompt": question, "answer": equation, "numbers": numbers, "target": value})
    return rows


def _random_expression(numbers: list[int], rng: random.Random) -> tuple[str, int]:
    """Combine random pairs of ``numbers`` until one expression is left; returns ``(text, value)``."""
    items = [(str(x), x, True) for x in numbers]  # (text, value, is_atom)
    rng.shuffle(items)  # so the solution's order does not reveal the order shown in the question
    while len(items) > 1:
        i, j = rng.sample(range(len(items)), 2)
        a, b = items[i], items[j]
        items = [it for k, it in enumerate(items) if k not in (i, j)]
        op = rng.choice("+-*/")
        if op == "/" and not (b[1] != 0 and a[1] % b[1] == 0):
            a, b = b, a
            if not (b[1] != 0 and a[1] % b[1] == 0):
                op = rng.choice("+-*")  # no exact division either way
        if op == "-" and a[1] < b[1]:
            a, b = b, a
        value = {"+": a[1] + b[1], "-": a[1] - b[1], "*": a[1] * b[1], "/": a[1] // b[1] if op == "/" else 0}[op]
        items.append((f"{_wrap(a)} {op} {_wrap(b)}", value, False))
    return items[0][0], items[0][1]


def _wrap(item: tuple[str, int, bool]) -> str:
    return item[0] if item[2] else f"({item[0]})"


# ---------------------------------------------------------------------------------------------------------------------
# Arithmetic

ARITHMETIC_OPS = ("+", "-", "*", "/")


def make_arithmetic(
    n: int, seed: int, *, min_digits: int = 1, max_digits: int = 3, ops: tuple[str, ...] = ("+", "-", "*")
) -> list[dict]:
    """``n`` rows ``{prompt: "What is 37 + 485?", answer: "522"}``.

    Each operand first draws a digit count in ``[min_digits, max_digits]``, then a number with that many digits, so
    short and long operands are equally common. ``-`` may give negative answers (``"-12"``); ``/`` is generated as an
    exact division (dividend = divisor * quotient) so answers stay integers.
    """
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
    unknown = [op for op in ops if op not in ARITHMETIC_OPS]
    if not ops or unknown:
        raise ValueError(f"ops must be a non-empty subset of {ARITHMETIC_OPS}, got {ops}")
    rng = random.Random(seed)

    def operand() -> int:
        digits = rng.randint(min_digits, max_digits)
        return rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1)

    rows = []
    for _ in range(n):
        op, a, b = rng.choice(ops), operand(), operand()
        if op == "/":
            b = b or 1
            a, value = a * b, a
        else:
            value = {"+": a + b, "-": a - b, "*": a * b}[op]
        rows.append({"prompt": f"What is {a} {op} {b}?", "answer": str(value)})
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# Dispatch, disjointness, files

SYNTHETIC_GENERATORS: dict[str, Callable[[int, int], list[dict]]] = {
    "countdown": make_countdown,
    "arithmetic": make_arithmetic,
    "gsm8k_style": make_gsm8k_style,
}
SYNTHETIC_KINDS = tuple(SYNTHETIC_GENERATORS)


def make_synthetic(kind: str, n: int, seed: int, **options: Any) -> list[dict]:
    """Rows from the generator named ``kind`` (one of :data:`SYNTHETIC_KINDS`); ``options`` are its keyword
    arguments (e.g. ``max_digits=2`` for arithmetic), its defaults otherwise."""
    if kind not in SYNTHETIC_GENERATORS:
        raise ValueError(f"unknown synthetic kind {kind!r}; allowed: {', '.join(SYNTHETIC_KINDS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return SYNTHETIC_GENERATORS[kind](n, seed, **options)


def exclude_questions(rows: list[dict], reference: Iterable[dict], *, key: str = "prompt") -> list[dict]:
    """``rows`` without those whose ``key`` occurs in ``reference`` (e.g. eval rows minus any train question)."""
    seen = {json.dumps(r[key], sort_keys=True) for r in reference}
    return [r for r in rows if json.dumps(r[key], sort_keys=True) not in seen]


def write_dataset(rows: list[dict], path: str | Path) -> Path:
    """Write ``rows`` to ``path`` as .jsonl, .json (one array), .parquet or .csv, by suffix; creates parent folders.

    CSV has no lists, so list/dict values (countdown's ``numbers``) are written as JSON text and read back as strings.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".jsonl":
        with path.open("w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif suffix == ".csv":
        columns = list(dict.fromkeys(k for row in rows for k in row))
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})
    else:
        raise ValueError(f"cannot write {path}: suffix must be one of .jsonl, .json, .parquet, .csv")
    return path


def read_rows(path: str | Path) -> list[dict]:
    """Read rows back from a file written by :func:`write_dataset` (any of its formats)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if suffix == ".json":
        return json.loads(path.read_text())
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix == ".csv":
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    raise ValueError(f"cannot read {path}: suffix must be one of .jsonl, .json, .parquet, .csv")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m data.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=SYNTHETIC_KINDS)
    parser.add_argument("--n", type=int, default=1000, help="number of rows to generate (before --exclude)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output file: .jsonl, .json, .parquet or .csv")
    parser.add_argument("--exclude", nargs="*", default=[], help="drop rows whose prompt occurs in these files")
    args = parser.parse_args(argv)

    rows = make_synthetic(args.kind, args.n, args.seed)
    for other in args.exclude:
        rows = exclude_questions(rows, read_rows(other))
    out = write_dataset(rows, args.out)
    print(f"wrote {len(rows)} {args.kind} rows (seed {args.seed}) to {out}")


if __name__ == "__main__":
    main()
