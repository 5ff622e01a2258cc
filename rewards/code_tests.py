"""The tests of a code task, read from a dataset row, as steps the sandbox runs and checks judged outside it.

The judged program shares its interpreter with the harness that runs it (rewards/sandbox_harness.py), so whatever the
harness reports can be forged by the program. The harness therefore reports only *what the program produced* (a value,
or what it wrote to stdout), and the verdict is computed outside, by the checks built here (rewards/code_judge.py),
against expected values that never enter the sandbox.

Formats (a row may carry several; their tests add up):

* ``tests`` (this project's own, e.g. MBPP-style): a list of Python statements, usually ``assert`` lines, each one test.
  An assert of the forms below is rewritten so that only EXPR runs inside and the comparison is made outside; LIT is a
  literal (``ast.literal_eval``, plus ``set(...)``, ``frozenset(...)``, ``tuple(...)``, ``list(...)``, ``dict(...)``,
  ``float(...)`` of one and a unary minus), on either side:

  - ``assert EXPR <op> LIT`` with one of ``== != < <= > >= in not in`` (``is``/``is not`` with None, True, False);
  - ``assert abs(EXPR - LIT) < TOL`` (or ``<=``) and ``assert math.isclose(EXPR, LIT, rel_tol=..., abs_tol=...)``;
  - ``assert EXPR`` and ``assert not EXPR`` (truthiness of a plain value).

  EXPR must not itself compare (``==``, ``<``, ``in`` ...): a comparison inside the sandbox is the program's to answer.
  Its value must be plain data, even for a truthiness or ``is not None`` check: ``assert re.match(p, f(x))`` or
  ``assert make_tree() is not None`` now fail (before this change they passed); ``assert bool(EXPR)`` is plain.
  Hiding the expected side hides the polarity too: the sandbox sees ``is_prime(8)``, not ``assert not``.
  Every other statement (a chained comparison, an assert against a computed value, a ``def check(candidate)``
  block) runs inside as before, and its pass/fail comes from the harness: **weaker**, a program that finds the results
  channel can forge it, and an always-equal object passes it.
* ``input_output`` (APPS ``codeparrot/apps``, TACO ``BAAI/TACO``): a JSON string ``{"inputs": [...], "outputs": [...]}``
  with an optional ``"fn_name"``. Without it each case is stdin/stdout (input and output strings, or lists of lines
  joined with newlines); with it each case calls ``fn_name(*inputs[i])`` (a method of ``Solution()`` when the program
  defines ``class Solution``) and the value must equal ``outputs[i]`` or, as APPS stores one return value wrapped in a
  list, its single element (APPS ``eval/testing_util.py`` @ 5dcfdf2 accepts ``outputs[i][0]`` of any non-empty list,
  and turns string keys of dict arguments into ints; neither is copied).
* LiveCodeBench (``livecodebench/code_generation_lite``): ``public_test_cases`` and ``private_test_cases``, JSON lists
  of ``{"input", "output", "testtype": "stdin" | "functional"}`` (private ones may be stored compressed: base64 of zlib
  of a pickled JSON string, read here with an unpickler that accepts only a string), and ``metadata``, a JSON object
  whose ``func_name`` names the function of functional cases. A functional input is one JSON value per line (the
  arguments), its output one JSON value, compared as in ``lcb_runner/evaluation/testing_util.py::grade_call_based``
  @ 15808c7 (the layout: ``lcb_runner/benchmarks/code_generation.py``).

A program with call-based cases is loaded after :data:`CALL_PRELUDE` (the imports LeetCode-style code assumes).

Values returned by calls (both datasets) are compared as JSON stores them: tuples become lists, as the reference
graders do for a returned tuple (here at any depth). Each stdin case runs the program afresh (a new ``__main__``
namespace; stdin, stdout and fds 0/1 are the case's own) and its stdout is judged by
rewards/code_judge.py::stdout_matches.
"""

from __future__ import annotations

import ast
import base64
import binascii
import functools
import io
import json
import operator
import pickle
import zlib
from dataclasses import dataclass, field
from typing import Callable

from rewards.code_judge import call_matches, compare, isclose, stdout_matches, truthy, within

# Run in the program's module namespace before a program with call-based cases: LeetCode-style solutions use `List`,
# `deque` or `heappush` without importing them, because LeetCode's Python (and LiveCodeBench's `import_string`, APPS's
# `sol` prefix) provides them. A subset of LiveCodeBench's list: no `from math import *` (it shadows `pow`).
CALL_PRELUDE = ("from typing import *\nfrom collections import *\nfrom heapq import *\nfrom bisect import *\n"
                "from itertools import *\nfrom functools import *\n"
                "import bisect, collections, functools, heapq, itertools, math, re, string\n")
_LITERAL_CALLS = {"set": set, "frozenset": frozenset, "tuple": tuple, "list": list, "dict": dict, "float": float}
_OPS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
        ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
        ast.Is: operator.is_, ast.IsNot: operator.is_not}


@dataclass(frozen=True)
class Step:
    """One thing the sandbox does. ``kind``: "exec" (run statements; judged inside: passes if nothing raised), "eval"
    (report an expression's value), "call" (report ``fn_name(*args)``), "stdio" (run the program on an input, report
    its stdout). ``check`` judges what was reported: a value, or for "stdio" the stdout text."""

    kind: str
    payload: tuple  # what the sandbox gets besides the kind: (source,), (fn_name, argument list), (stdin text,)
    check: Callable[[object], bool] | None = None

    def wire(self) -> list:
        return [self.kind, *self.payload]


@dataclass(frozen=True)
class CodeTest:
    """One test: its steps run in order; it passes when none raised and every check holds."""

    steps: tuple[Step, ...] = field(default_factory=tuple)


# ------------------------------------------------------------------------------------------------ assert-style tests
def _literal(node: ast.expr) -> tuple[bool, object]:
    """``(True, value)`` when ``node`` is a literal (see the module docstring), else ``(False, None)``."""
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, OverflowError):
        pass
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        ok, value = _literal(node.operand)
        if ok and type(value) in (int, float):
            return True, -value
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _LITERAL_CALLS
          and not node.keywords and len(node.args) <= 1):
        ok, arg = _literal(node.args[0]) if node.args else (True, None)
        if ok:
            try:
                make = _LITERAL_CALLS[node.func.id]
                return True, make(arg) if node.args else make()
            except (TypeError, ValueError, OverflowError):  # float() of an int literal over 309 digits
                pass
    return False, None


def _compares(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Compare) for n in ast.walk(node))


def _is_name(node: ast.expr, name: str, module: str) -> bool:
    """``name`` or ``module.name`` (not numpy's ``isclose``, whose defaults differ)."""
    return (isinstance(node, ast.Name) and node.id == name) or (
        isinstance(node, ast.Attribute) and node.attr == name and isinstance(node.value, ast.Name)
        and node.value.id == module)


def _one_side(a: ast.expr, b: ast.expr) -> tuple[ast.expr, object, bool] | None:
    """Of two operands, the one to evaluate inside, the other's literal value, and whether the evaluated one is first;
    ``None`` unless exactly one is a literal and the other does not compare."""
    a_lit, a_value = _literal(a)
    b_lit, b_value = _literal(b)
    if a_lit == b_lit:
        return None
    expr, expected, first = (a, b_value, True) if b_lit else (b, a_value, False)
    return None if _compares(expr) else (expr, expected, first)


def _judged(test: ast.expr) -> tuple[ast.expr, Callable[[object], bool]] | None:
    """The expression to evaluate inside and the check of its value, for the assert forms judged outside."""
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        left, op, right = test.left, test.ops[0], test.comparators[0]
        if (isinstance(op, (ast.Lt, ast.LtE)) and isinstance(left, ast.Call) and _is_name(left.func, "abs", "builtins")
                and len(left.args) == 1 and not left.keywords and isinstance(left.args[0], ast.BinOp)
                and isinstance(left.args[0].op, ast.Sub)):
            ok, tolerance = _literal(right)
            side = _one_side(left.args[0].left, left.args[0].right)
            if ok and side and type(tolerance) in (int, float) and type(side[1]) in (int, float):
                return side[0], functools.partial(within, side[1], _OPS[type(op)], tolerance)
        side = _one_side(left, right)
        if side is None:
            return None
        expr, expected, first = side
        if isinstance(op, (ast.Is, ast.IsNot)) and not (expected is None or type(expected) is bool):
            return None
        return expr, functools.partial(compare, _OPS[type(op)], expected, first)
    if isinstance(test, ast.Call) and _is_name(test.func, "isclose", "math") and len(test.args) == 2:
        side = _one_side(test.args[0], test.args[1])
        options = {"rel_tol": 1e-9, "abs_tol": 0.0}
        for keyword in test.keywords:
            ok, value = _literal(keyword.value)
            if keyword.arg not in options or not ok or type(value) not in (int, float):
                return None
            options[keyword.arg] = value
        if side is None or type(side[1]) not in (int, float):
            return None
        return side[0], functools.partial(isclose, side[1], options["rel_tol"], options["abs_tol"])
    want = True
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        test, want = test.operand, False
    if _literal(test)[0] or _compares(test):
        return None
    return test, functools.partial(truthy, want)


def _source(src: str, node: ast.AST) -> str:
    return ast.get_source_segment(src, node) or ast.unparse(node)


@functools.lru_cache(maxsize=4096)  # the G completions of a prompt share its tests
def assert_test(src: str) -> CodeTest:
    """One test from the ``tests`` column: its top-level asserts of the judged forms become "eval" steps, the other
    statements "exec" steps; a test with no judged assert runs unchanged, as one "exec" step.

    >>> [(s.kind, s.payload) for s in assert_test("assert add(1, 2) == 3").steps]
    [('eval', ('(add(1, 2)\\n)',))]
    """
    try:
        body = ast.parse(src).body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        body = []
    steps: list[Step] = []
    pending: list[ast.stmt] = []
    for stmt in body:
        judged = _judged(stmt.test) if isinstance(stmt, ast.Assert) else None
        if judged is None:
            pending.append(stmt)
            continue
        if pending:
            steps.append(Step("exec", (ast.unparse(ast.Module(pending, [])),)))
            pending = []
        expr, check = judged
        # Parenthesised on lines of its own: a multi-line expression evaluates, a trailing comment cannot swallow ")".
        steps.append(Step("eval", (f"({_source(src, expr)}\n)",), check))
    if not any(s.kind == "eval" for s in steps):
        return CodeTest((Step("exec", (src,)),))
    if pending:
        steps.append(Step("exec", (ast.unparse(ast.Module(pending, [])),)))
    return CodeTest(tuple(steps))


def assert_tests(tests: object) -> list[CodeTest]:
    """The ``tests`` column: a list of statements (each one test) or one string (one test)."""
    if isinstance(tests, str):
        tests = [tests]
    try:
        return [assert_test(str(t)) for t in tests]  # type: ignore[union-attr]
    except TypeError:
        return []


# ------------------------------------------------------------------------------------------ stdin and call-based cases
def stdio_test(stdin: str, expected: str) -> CodeTest:
    return CodeTest((Step("stdio", (stdin,), functools.partial(stdout_matches, expected)),))


def call_test(fn_name: str, args: list, expected: object, *, unwrap: bool) -> CodeTest:
    return CodeTest((Step("call", (fn_name, args), functools.partial(call_matches, expected, unwrap)),))


def _lines(value: object, what: str) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string or a list of lines, got {type(value).__name__}")
    return value


def _json_cell(cell: object, what: str) -> object:
    if isinstance(cell, (bytes, bytearray)):
        cell = cell.decode()
    if not isinstance(cell, str):
        return cell
    try:
        return json.loads(cell)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{what} is not valid JSON: {e}") from None


def apps_tests(input_output: object) -> list[CodeTest]:
    """The APPS/TACO ``input_output`` column (a JSON string, or the object it holds)."""
    spec = _json_cell(input_output, "input_output")
    if spec in (None, "", {}):
        return []
    if not isinstance(spec, dict) or not isinstance(spec.get("inputs"), list) or not isinstance(
            spec.get("outputs"), list) or len(spec["inputs"]) != len(spec["outputs"]):
        raise ValueError("input_output must hold equally long lists 'inputs' and 'outputs'")
    fn_name = spec.get("fn_name")
    if fn_name is None:
        return [stdio_test(_lines(i, "an input"), _lines(o, "an output"))
                for i, o in zip(spec["inputs"], spec["outputs"])]
    if not isinstance(fn_name, str) or not fn_name.isidentifier():
        raise ValueError(f"input_output fn_name must be a function name, got {fn_name!r}")
    tests = []
    for args, expected in zip(spec["inputs"], spec["outputs"]):
        if not isinstance(args, list):
            raise ValueError(f"input_output inputs of a call must be argument lists, got {type(args).__name__}")
        tests.append(call_test(fn_name, args, expected, unwrap=True))
    return tests


class _OnlyStrings(pickle.Unpickler):
    """LiveCodeBench pickles a JSON string; refusing every global keeps a crafted pickle from running code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refused global {module}.{name} in a compressed test list")


@functools.lru_cache(maxsize=8)  # the G completions of one prompt share the cell (decoded, it can be large)
def _lcb_cases_text(cell: str) -> object:
    try:
        return json.loads(cell)
    except ValueError:
        pass
    try:
        text = _OnlyStrings(io.BytesIO(zlib.decompress(base64.b64decode(cell.encode(), validate=True)))).load()
        if not isinstance(text, str):
            raise ValueError(f"it unpickles to {type(text).__name__}, not a JSON string")
        return json.loads(text)
    except (ValueError, binascii.Error, zlib.error, pickle.UnpicklingError, EOFError, RecursionError,
            AttributeError, TypeError, KeyError, IndexError, MemoryError) as e:  # what a malformed pickle can raise
        raise ValueError(f"test cases are neither JSON nor LiveCodeBench's compressed form: {e}") from None


def livecodebench_tests(public_test_cases: object, private_test_cases: object, metadata: object) -> list[CodeTest]:
    """LiveCodeBench's ``public_test_cases``, ``private_test_cases`` and ``metadata`` columns."""
    cases = []
    for cell in (public_test_cases, private_test_cases):
        if isinstance(cell, (bytes, bytearray)):
            cell = cell.decode()
        value = _lcb_cases_text(cell) if isinstance(cell, str) and cell else cell
        if value in (None, ""):
            continue
        if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
            raise ValueError("LiveCodeBench test cases must be a list of {input, output, testtype}")
        cases += value
    meta = _json_cell(metadata, "metadata") if metadata not in (None, "") else {}
    fn_name = meta.get("func_name") if isinstance(meta, dict) else None
    tests = []
    for case in cases:
        stdin, expected, kind = case.get("input"), case.get("output"), case.get("testtype")
        if not isinstance(stdin, str) or not isinstance(expected, str):
            raise ValueError("LiveCodeBench test case input and output must be strings")
        if kind == "stdin":
            tests.append(stdio_test(stdin, expected))
        elif kind == "functional":
            if not isinstance(fn_name, str) or not fn_name.isidentifier():
                raise ValueError("a functional LiveCodeBench case needs metadata with a func_name")
            try:
                args = [json.loads(line) for line in stdin.split("\n")]
                want = json.loads(expected)
            except (ValueError, RecursionError) as e:
                raise ValueError(f"functional LiveCodeBench case is not JSON: {e}") from None
            tests.append(call_test(fn_name, args, want, unwrap=False))
        else:
            raise ValueError(f"unknown LiveCodeBench testtype {kind!r}")
    return tests


def row_tests(tests: object = None, input_output: object = None, public_test_cases: object = None,
              private_test_cases: object = None, metadata: object = None) -> list[CodeTest]:
    """Every test a dataset row carries, in column order. Raises ``ValueError`` for a malformed cell.

    >>> len(row_tests(input_output='{"inputs": ["1 2\\\\n"], "outputs": ["3\\\\n"]}', tests=["assert f(1) == 2"]))
    2
    """
    found = assert_tests(tests) if tests is not None else []
    if input_output is not None:
        found += apps_tests(input_output)
    if public_test_cases is not None or private_test_cases is not None:
        found += livecodebench_tests(public_test_cases, private_test_cases, metadata)
    return found
