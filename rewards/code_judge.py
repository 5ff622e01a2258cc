"""The verdict on a sandboxed program, computed outside the sandbox: the harness's report read back and decoded into
plain data, and the checks that judge what the program produced against expected values that never entered it
(rewards/code_exec.py says why the verdict cannot be the harness's).

A value counts only as plain data (None, bool, int, float, complex, str, bytes, and list, tuple, dict, set, frozenset of
those), with exact types, rebuilt here from its encoding: an object with a forged ``__eq__`` is not plain data and
fails, and a forged report can only claim values, which must then equal the hidden ones. The harness's encoding
(tagged JSON, rewards/sandbox_harness.py) is decoded by :func:`decode_value`; the two must agree. rewards/code_tests.py
binds the checks below to each test's expected values.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections import Counter
from decimal import Decimal
from typing import Callable

FLOAT_TOLERANCE = 1e-6  # absolute or relative error allowed between two real tokens (testlib's rcmp6 checker)
MAX_VALUE_DEPTH = 100  # nesting of a produced value; deeper is not plain data (the harness stops at the same depth)
# ASCII digits only, and no nested optional parts: a token of a million digits and a letter fails in linear time
# (the earlier `\d+\.?\d*` backtracked quadratically on program output).
_INTEGER = re.compile(r"[+-]?[0-9]+")
_REAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# A decoded set or dict whose elements share one hash more often than this is refused: int hashes are not randomised
# (every multiple of 2**61 - 1 hashes to 0), and building a set of N colliding elements costs N^2 comparisons.
MAX_SAME_HASH = 8


# ---------------------------------------------------------------------------------------------------------- judging
def compare(op: Callable, expected: object, value_first: bool, value: object) -> bool:
    return bool(op(value, expected) if value_first else op(expected, value))


def truthy(want: bool, value: object) -> bool:
    return bool(value) is want


def isclose(expected: float, rel_tol: float, abs_tol: float, value: object) -> bool:
    return type(value) in (int, float) and math.isclose(value, expected, rel_tol=rel_tol, abs_tol=abs_tol)


def within(expected: float, op: Callable, tolerance: float, value: object) -> bool:
    return type(value) in (int, float) and bool(op(abs(value - expected), tolerance))


def as_json(value: object) -> object:
    """``value`` as JSON would store it: tuples as lists, at any depth."""
    if type(value) in (list, tuple):
        return [as_json(v) for v in value]
    if type(value) is dict:
        return {k: as_json(v) for k, v in value.items()}
    return value


def call_matches(expected: object, unwrap: bool, value: object) -> bool:
    """A returned value against a JSON-stored one; ``unwrap``: also against the element of a one-element list (APPS)."""
    got = as_json(value)
    if got == expected:
        return True
    return unwrap and type(expected) is list and len(expected) == 1 and got == expected[0]


def _token_matches(got: str, want: str) -> bool:
    if got == want:
        return True
    if not (_REAL.fullmatch(got) and _REAL.fullmatch(want)):
        return False
    if _INTEGER.fullmatch(want):  # an integer answer is exact: "3.0" and "3e0" are 3, "1000001.0" is not 1000000
        try:
            return Decimal(got) == Decimal(want)
        except ArithmeticError:
            return False
    a, b = float(got), float(want)
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= FLOAT_TOLERANCE * max(1.0, abs(b))


def stdout_matches(expected: str, output: object) -> bool:
    """The stdin/stdout judge: the two texts split on whitespace must have as many tokens, each equal, or both numbers
    that agree: an expected integer exactly (as a decimal number: "3.0" is 3), reals within ``FLOAT_TOLERANCE``
    absolute or relative error.

    This is Codeforces/testlib's ``wcmp`` (tokens) with ``rcmp6`` (reals) folded in. Line breaks and spacing do not
    count, as in APPS/TACO's lenient fallbacks; LiveCodeBench (``grade_stdio``) also wants the same lines and compares
    numbers exactly (as decimals), so an answer that only agrees within 1e-6 passes here and not there.

    >>> stdout_matches("3\\n0.333333", "3 0.3333333333\\n"), stdout_matches("3", "3 4"), stdout_matches("10", "1e1")
    (True, False, True)
    >>> stdout_matches("1000000", "1000001.0"), stdout_matches("0", "1e-7"), stdout_matches("3", "\u0663")
    (False, False, False)
    """
    if type(output) is not str:
        return False
    got, want = output.split(), expected.split()
    return len(got) == len(want) and all(_token_matches(g, w) for g, w in zip(got, want))


def decode_value(tree: object, depth: int = 0) -> object:
    """A produced value from the harness's encoding: JSON null/bool/number/string as themselves, and ``[tag, ...]``
    for the rest ("L" list, "T" tuple, "S" set, "F" frozenset, "D" dict of [key, value] pairs, "I" int in hex,
    "B" bytes in hex, "C" complex). Raises ``ValueError`` (or ``TypeError`` for an unhashable key) on anything else."""
    kind = type(tree)
    if tree is None or kind in (bool, int, float, str):
        return tree
    if kind is not list or not tree or type(tree[0]) is not str or depth >= MAX_VALUE_DEPTH:
        raise ValueError("not an encoded value")
    tag, items = tree[0], tree[1:]
    if tag in ("L", "T", "S", "F"):
        values = [decode_value(v, depth + 1) for v in items]
        if tag in ("S", "F"):
            _refuse_colliding_hashes(values)
        return {"L": list, "T": tuple, "S": set, "F": frozenset}[tag](values)
    if tag == "D":
        if not all(type(p) is list and len(p) == 2 for p in items):
            raise ValueError("not an encoded dict")
        pairs = [(decode_value(k, depth + 1), decode_value(v, depth + 1)) for k, v in items]
        _refuse_colliding_hashes([k for k, _ in pairs])
        return dict(pairs)
    if len(items) == 1 and type(items[0]) is str and tag in ("I", "B"):
        return int(items[0], 16) if tag == "I" else bytes.fromhex(items[0])
    if tag == "C" and len(items) == 2 and all(type(x) in (int, float) for x in items):
        return complex(items[0], items[1])
    raise ValueError(f"unknown value tag {tag!r}")


def _refuse_colliding_hashes(elements: list) -> None:
    """ValueError when more than MAX_SAME_HASH of `elements` share one hash (TypeError for an unhashable one)."""
    counts = Counter(hash(element) for element in elements)
    if counts and max(counts.values()) > MAX_SAME_HASH:
        raise ValueError("a set or dict of elements with colliding hashes")


# ------------------------------------------------------------------------------------------------ the harness's report
def read_records(data: bytes, nonce: str, num_tests: int) -> tuple[dict, dict]:
    """The harness's lines, as ``({(test, step): ("value", v) | ("output", text, clean) | ("error",)},
    {test: ran without raising})``. Anything the program may have written is untrusted: malformed lines are skipped,
    and the first record of a kind for a test or step counts."""
    produced: dict[tuple[int, int], tuple] = {}
    ended: dict[int, bool] = {}
    prefix = nonce.encode() + b" "
    for line in data.split(b"\n"):
        if not line.startswith(prefix):
            continue
        try:
            record = json.loads(line[len(prefix):])
        except (ValueError, RecursionError):
            continue
        if type(record) is not dict or type(record.get("t")) is not int or not 0 <= record["t"] < num_tests:
            continue
        test = record["t"]
        if "end" in record:
            ended.setdefault(test, record["end"] == 1 and type(record["end"]) is int)
            continue
        key = (test, record.get("s"))
        if type(key[1]) is not int or key in produced:
            continue
        try:
            if "v" in record:
                produced[key] = ("value", decode_value(record["v"]))
            elif type(record.get("o")) is str:
                text = base64.b64decode(record["o"], validate=True).decode("utf-8", "replace")
                produced[key] = ("output", text, record.get("x") == 1 and type(record.get("x")) is int)
            else:
                produced[key] = ("error",)
        except (ValueError, TypeError, RecursionError, binascii.Error):
            produced[key] = ("error",)
    return produced, ended


def judge(step, got: tuple | None) -> bool:
    """One step's verdict: an "exec" step has none (its test's end record says whether it raised); a value must be
    reported and satisfy the check; a stdin case must have ended normally with matching stdout."""
    if step.check is None:
        return True
    if got is None:
        return False
    try:
        if step.kind == "stdio":
            return got[0] == "output" and got[2] and step.check(got[1]) is True
        return got[0] == "value" and step.check(got[1]) is True
    except Exception:  # e.g. comparing a list with an int by <: the value does not satisfy the check
        return False
