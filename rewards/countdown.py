r"""Countdown numbers game (TinyZero): combine the given numbers with + - * / and parentheses to reach the target.

Scoring follows TinyZero ``verl/utils/reward_score/countdown.py::compute_score`` (Jiayi-Pan/TinyZero @ 95df88f):
1.0 when the equation in the last ``<answer>…</answer>`` uses every given number exactly once and evaluates to
``target``; ``format_score`` (default 0.1) for a well-formed arithmetic expression that is wrong, uses the numbers
wrongly or divides by zero; 0.0 when there is no answer or it is not an arithmetic expression at all. A row whose
``numbers`` or ``target`` are unusable gets ``None`` (not applicable: the group is left out of training).

Deliberate differences from TinyZero, for anyone porting a recipe (the README has the same table):

* Operators: only + - * /, unary +/- and parentheses count. TinyZero ``eval``s anything made of digits, ``+-*/().``
  and spaces, so ``**`` (power) and ``//`` (floor division) work there; here they make the answer "not arithmetic"
  (0.0, not even ``format_score``). ``×``/``÷`` are read as ``*``/``/`` (TinyZero: ``format_score``).
* ``expr = 24``: only the left side of the first ``=`` is judged (the right side is ignored, even if wrong). TinyZero
  gives ``format_score``: ``=`` fails its whitelist and 24 counts as an extra number.
* Where the answer is read: the last ``<answer>…</answer>`` anywhere in the completion, its whole content (it may span
  lines). TinyZero reads only the last line of the response, with a single-line regex: an answer followed by a
  newline, or spread over two lines, scores 0 there.
* Numbers are the expression's literals (``6.5`` is one number, matching no given integer); TinyZero's ``\d+`` reads
  ``6.5`` as 6 and 5. Arithmetic is exact (``Fraction``, tolerance 1e-6) instead of float (tolerance 1e-5).
* ``format_score`` only for expressions that parse: TinyZero gives it to any ``<answer>`` content, so
  ``<answer>idk</answer>`` earns 0.1 there and nothing here.

Safety: TinyZero ``eval``s the model text behind a character whitelist. Here the text is never executed: after the
whitelist it is parsed with ``ast.parse(mode="eval")`` and a small interpreter walks only number literals, + - * /,
unary +/- and parentheses, in exact ``Fraction`` arithmetic (so ``(4/3)*3`` is exactly 4). ``**`` is rejected, and the
length bound caps both the nesting depth (parser and interpreter recursion) and the size of any intermediate value.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction

from rewards.extract import as_text, extract_answer_tag

# Countdown uses 3-6 numbers below 100 (TinyZero's dataset), so real answers are < 60 characters. 300 leaves room for
# spaces and redundant parentheses while keeping nesting well below CPython's parser limit (200 nested parentheses).
MAX_EQUATION_CHARS = 300
TOLERANCE = 1e-6
_ALLOWED_CHARS = re.compile(r"[\d+\-*/().\s]+")
_BINOPS = {
    ast.Add: Fraction.__add__,
    ast.Sub: Fraction.__sub__,
    ast.Mult: Fraction.__mul__,
    ast.Div: Fraction.__truediv__,
}


class _NotArithmetic(Exception):
    """The expression contains something other than numbers, + - * / and parentheses."""


def _evaluate(node: ast.AST, literals: list) -> Fraction:
    """Exact value of an arithmetic AST; appends every number literal to ``literals``. ZeroDivisionError propagates."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, literals)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):  # type(): bool is an int subclass
        literals.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_evaluate(node.left, literals), _evaluate(node.right, literals))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _evaluate(node.operand, literals)
        return -value if isinstance(node.op, ast.USub) else value
    raise _NotArithmetic(type(node).__name__)


def parse_equation(equation: str) -> tuple[Fraction | None, list] | None:
    """``(value, literals)`` for a well-formed arithmetic expression (``value`` is ``None`` on division by zero);
    ``None`` when it is not one. Never executes anything.

    >>> parse_equation("(4 / 3) * 3")
    (Fraction(4, 1), [4, 3, 3])
    >>> parse_equation("__import__('os').system('ls')") is None
    True
    """
    expr = equation.replace("×", "*").replace("÷", "/").split("=", 1)[0].strip()
    if not expr or len(expr) > MAX_EQUATION_CHARS or not _ALLOWED_CHARS.fullmatch(expr):
        return None
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    literals: list = []
    try:
        value = _evaluate(tree, literals)
    except ZeroDivisionError:
        return None, literals
    except (_NotArithmetic, RecursionError, MemoryError, OverflowError, ValueError, TypeError):
        return None
    return value, literals


def _as_ints(numbers: object) -> list[int] | None:
    try:
        values = [int(x) for x in numbers]  # type: ignore[union-attr]  # list, tuple or numpy array
    except (TypeError, ValueError, OverflowError):
        return None
    return values if values else None


def _as_target(target: object) -> Fraction | None:
    try:
        return Fraction(target) if not isinstance(target, bool) else None  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        return None


def score(completion: str, numbers: list[int], target: int, *, format_score: float = 0.1) -> float:
    """1.0 for a correct equation, ``format_score`` for a well-formed but wrong one, 0.0 for none/garbage.

    >>> score("<answer>(6 - 2) * 6</answer>", [6, 2, 6], 24), score("<answer>6 * 2 + 6</answer>", [6, 2, 6], 24)
    (1.0, 0.1)
    >>> score("<answer>6 * 4</answer>", [6, 2, 6], 24), score("<answer>__import__('os')</answer>", [1], 1)
    (0.1, 0.0)
    """
    nums, goal = _as_ints(numbers), _as_target(target)
    equation = extract_answer_tag(as_text(completion))
    if nums is None or goal is None or equation is None:
        return 0.0
    parsed = parse_equation(equation)
    if parsed is None:
        return 0.0
    value, literals = parsed
    if value is None or sorted(literals) != sorted(nums):
        return format_score
    return 1.0 if abs(value - goal) <= TOLERANCE else format_score


def countdown(
    completions: list,
    prompts: list | None = None,
    *,
    numbers: list | None = None,
    target: list | None = None,
    format_score: float = 0.1,
    **_,
) -> list[float | None]:
    """Batch reward. Columns ``numbers`` (list[int] per row) and ``target`` (int per row); ``None`` for a row whose
    numbers/target are unusable."""
    if numbers is None or target is None:
        raise ValueError("countdown needs the dataset columns 'numbers' and 'target'")
    if not 0.0 <= format_score <= 1.0:
        raise ValueError(f"countdown format_score must be in [0, 1], got {format_score}")
    return [
        None if _as_ints(nums) is None or _as_target(goal) is None else score(c, nums, goal, format_score=format_score)
        for c, nums, goal in zip(completions, numbers, target, strict=True)
    ]
