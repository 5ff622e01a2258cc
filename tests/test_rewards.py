"""Table-driven tests for the reward families: correct, wrong, malformed, empty and adversarial completions.

Sandbox (code_exec) tests are in test_rewards_code_exec.py, combiner/pool/timeout tests in test_rewards_combine.py.
"""

from __future__ import annotations

import doctest
import importlib
import math
import time
from decimal import Decimal

import pytest

from helpers import ADVERSARIAL

from rewards import REWARD_FNS, resolve_reward
from rewards import arithmetic, countdown, format as fmt, gsm8k, length, math_answer
from rewards.extract import (as_text, extract_answer_tag, final_boxed, last_boxed, last_code_block, last_number,
                             parse_decimal)

# Untrusted model output that every reward must survive (no exception, a float/None per completion, bounded time).
ROW = {"answer": ["42"], "numbers": [[1, 2, 3]], "target": [6], "tests": [["assert True"]]}
# Rewards that run model text through an interpreter or math-verify are exercised on adversarial input through the
# combiner (hard timeout) in test_rewards_combine.py; the rest must be fast inline. reasoning_gym (pooled, needs its
# rg_entry column) gets the same adversarial texts in test_reasoning_gym.py.
INLINE_NAMES = sorted(set(REWARD_FNS) - {"code_exec", "math_accuracy", "cosine_length", "reasoning_gym"})


@pytest.mark.parametrize("name", INLINE_NAMES)
def test_inline_rewards_survive_adversarial_text(name):
    fn = REWARD_FNS[name]
    start = time.monotonic()
    for label, text in ADVERSARIAL.items():
        out = fn([text], ["prompt <think>"], **ROW)
        assert len(out) == 1, label
        assert out[0] is None or (isinstance(out[0], float) and math.isfinite(out[0])), (label, out)
    assert time.monotonic() - start < 5.0  # linear-time checks: all 22 inputs well under a second in practice


@pytest.mark.parametrize("label", ["1MB", "unclosed_boxed", "deep_frac", "emoji_rtl", "control_chars", "not_a_string"])
def test_math_accuracy_survives_adversarial_text_directly(label):
    assert math_answer.math_accuracy([ADVERSARIAL[label]], ["p"], answer=["42"]) in ([0.0], [1.0])


def test_score_functions_never_raise_on_adversarial_text():
    for text in ADVERSARIAL.values():
        assert gsm8k.score(text, "#### 42") in (0.0, 1.0)
        assert arithmetic.score(text, 42) in (0.0, 1.0)
        assert countdown.score(text, [1, 2, 3], 6) in (0.0, 0.1, 1.0)
        for score in (fmt.score_strict, fmt.score_lenient, fmt.score_tag_count, fmt.score_reasoning_steps):
            assert 0.0 <= score(text) <= 1.0
        assert -1.0 <= length.score_repetition(text) <= 0.0


# --------------------------------------------------------------------------------------------------------- extraction
@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>x</think><answer> 4 </answer>", "4"),
        ("<answer>1</answer> then <answer>2</answer>", "2"),  # last pair wins
        ("<answer><answer>1</answer></answer>", "1"),  # innermost of nested tags
        ("<answer>a</answer>b</answer>", "a"),
        ("<answer>unclosed", None),
        ("</answer><answer>", None),
        ("", None),
    ],
)
def test_extract_answer_tag(text, expected):
    assert extract_answer_tag(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"\boxed{1} and \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),
        (r"\fbox{7}", "7"),
        (r"\boxed 7$", "7"),
        (r"\boxed{unbalanced", None),
        (r"\boxed", None),
        ("no box", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    "text, parts",
    [
        (r"x = \boxed{-2} or x = \boxed{4}", ["-2", "4"]),
        (r"$x = \boxed{-2}$ and $x = \boxed{4}$.", ["-2", "4"]),  # $ delimiters, "x =" before the next box
        (r"x_1 = \boxed{1}, \quad x_{2} = \boxed{2}", ["1", "2"]),
        (r"\boxed{-2}\quad\text{or}\quad\boxed{4}", ["-2", "4"]),
        (r"\boxed{-2} and \boxed{4}, so the sum is \boxed{2}", ["2"]),  # intermediate results: not chained
        (r"\boxed{1} no wait \boxed{2}", ["2"]),  # no connector (math-verify would join these: < 10 characters apart)
        (r"\boxed{1}\boxed{2}", ["2"]),
        (r"\boxed{a \boxed{b}}", ["b"]),  # nested: the outer box does not close before the inner one
        (r"\boxed 7", ["7"]),
        (r"\boxed{unbalanced", None),
        ("no box", None),
    ],
)
def test_final_boxed(text, parts):
    got = final_boxed(text)
    assert (got if got is None else got[0]) == parts
    if got is not None:
        assert text[: got[1]].rstrip("}").endswith(parts[-1])  # offset just past the last box


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3 apples, $1,200.50 left", "1200.50"),
        ("from -3 to -7.5", "-7.5"),
        ("1,2,3", "3"),  # a list, not 123
        ("12,3456", "3456"),
        ("none", None),
    ],
)
def test_last_number(text, expected):
    assert last_number(text) == expected


@pytest.mark.parametrize(
    "value, expected",
    [(42, Decimal(42)), ("$1,234.50", Decimal("1234.5")), (" 7. ", Decimal(7)), (0.1, Decimal("0.1")),
     ("1e5", None), ("NaN", None), (float("nan"), None), (True, None), (None, None), ("", None)],
)
def test_parse_decimal(value, expected):
    assert parse_decimal(value) == expected


def test_last_code_block_and_as_text():
    assert last_code_block("```python\na = 1\n```\n```py\nb = 2\n```") == "b = 2\n"
    assert last_code_block("```python\ntruncated = 1") == "truncated = 1"
    assert last_code_block("```js\nx\n```") is None
    assert as_text([{"role": "assistant", "content": "hi"}]) == "hi" and as_text(None) == "" and as_text(3) == "3"


# --------------------------------------------------------------------------------------------------------------- math
@pytest.mark.parametrize(
    "completion, gold, expected",
    [
        (r"<think>half</think><answer>\frac{1}{2}</answer>", "0.5", 1.0),  # fraction vs decimal
        (r"so the answer is $\boxed{\dfrac{1}{2}}$.", r"\frac12", 1.0),  # last \boxed, \dfrac
        (r"<answer>$x = 3$</answer>", "3", 1.0),  # assignment form
        (r"\boxed{[1, 2)}", "[1,2)", 1.0),  # interval
        (r"\boxed{\{2, 1\}}", r"\{1,2\}", 1.0),  # set, order-free
        (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", 1.0),  # symbolic equivalence
        ("... and the final answer is 12.", "12", 1.0),  # whole-text fallback
        ("Final: #### 18", "Janet sells 16 - 3 - 4 = 9 eggs... #### 18", 1.0),  # raw GSM8K gold
        (r"\boxed{1} no wait \boxed{2}", "1", 0.0),  # last box counts
        (r"\boxed{(1, 2]}", "[1,2)", 0.0),
        (r"<answer>3</answer>", "4", 0.0),
        (r"<answer></answer>", "4", 0.0),
        ("", "4", 0.0),
        (r"\boxed{\frac{1}{0}}", "1", 0.0),
    ],
)
def test_math_accuracy(completion, gold, expected):
    assert math_answer.score(completion, gold) == expected
    assert math_answer.math_accuracy([completion], ["p"], answer=[gold]) == [expected]


# Multi-part answers (issue 13 point 2): several chained boxes are one answer, judged as a set as math-verify does;
# intermediate boxes followed by a final answer (in a last box or in words) are judged by that final answer.
@pytest.mark.parametrize(
    "completion, gold, expected",
    [
        (r"x = \boxed{-2} or x = \boxed{4}", "-2, 4", 1.0),  # was 0.0: only the last box (4) was read
        (r"$x = \boxed{-2}$ and $x = \boxed{4}$.", r"\{-2, 4\}", 1.0),  # gold as a set
        (r"\boxed{4} or \boxed{-2}", "x=-2, x=4", 1.0),  # order-free; gold as equations
        (r"\boxed{(1, 2)}, \boxed{(3, 4)}", "(1,2),(3,4)", 1.0),  # several tuples
        (r"\boxed{[1,2)} or \boxed{(3,4]}", "[1,2), (3,4]", 1.0),  # interval list
        (r"\boxed{-2, 4}", "-2, 4", 1.0),  # one box, unchanged
        (r"\boxed{-2}", "-2, 4", 0.0),  # half an answer
        (r"\boxed{-2} or \boxed{4} or \boxed{5}", "-2, 4", 0.0),  # an extra root
        (r"\boxed{-2} or \boxed{4}", "-2", 0.0),  # two candidates do not hedge a single answer
        (r"\boxed{4}, i.e. \boxed{4}", "4", 1.0),  # the same box twice is one answer
        # intermediate values boxed, final answer in a last box:
        (r"we get \boxed{-2} and \boxed{4}, so the sum is \boxed{2}", "2", 1.0),
        (r"we get \boxed{-2} and \boxed{4}, so the sum is \boxed{2}", "-2, 4", 0.0),
        # ... or in words after the last box (was: judged by the last box, 5):
        (r"First \boxed{3}. Then \boxed{5}. The final answer is 7.", "7", 1.0),
        (r"First \boxed{3}. Then \boxed{5}. The final answer is 7.", "5", 0.0),
        ("Roots \\boxed{-2} and \\boxed{4}.\n**Final Answer:** $-2$ and $4$", "-2, 4", 1.0),
        (r"\boxed{5}. I checked the final answer: it is right.", "5", 1.0),  # no number after it: the box stands
        (r"\boxed{1} no wait \boxed{2}", "1, 2", 0.0),  # a correction, not a two-part answer
    ],
)
def test_math_multi_part_answers(completion, gold, expected):
    assert math_answer.score(completion, gold) == expected


def test_math_accuracy_unparseable_gold_is_not_applicable():
    assert math_answer.math_accuracy(["\\boxed{1}", "\\boxed{1}"], ["p", "p"], answer=["", "1"]) == [None, 1.0]
    with pytest.raises(ValueError, match="answer"):
        math_answer.math_accuracy(["x"], ["p"])


@pytest.mark.parametrize("gold", ["seventeen", "see the figure", "Tuesday", "  ", "#### seventeen", None])
def test_math_accuracy_word_gold_is_not_applicable(gold):
    # Issue 13 point 1: wrapped in \boxed{}, "seventeen" used to parse as the product s*e*v*e*n*t*e*e*n, so every
    # completion scored 0.0, and one that boxed the same letters scored 1.0. Now: None, like TRL and open-r1.
    completions = [r"\boxed{17}", r"\boxed{seventeen}", "<answer>see the figure</answer>"]
    assert math_answer.math_accuracy(completions, ["p"] * 3, answer=[gold] * 3) == [None] * 3
    assert math_answer.parse_gold(gold) == []


@pytest.mark.parametrize(
    "gold, completion",
    [
        ("17 apples", r"\boxed{17}"),  # free text with a number: math-verify reads 17, as TRL does
        (r"17 \text{ apples}", r"\boxed{17}"),  # \text{} content is not a word
        (r"\frac{1}{2}", r"\boxed{0.5}"),  # LaTeX commands are not words
        ("x = -2 and x = 4", r"x = \boxed{-2} or x = \boxed{4}"),  # "and" is a connector
        ("sqrt(2)", r"\boxed{\sqrt{2}}"),
        ("Janet sells 16 - 3 - 4 = 9 eggs... #### 18", "#### 18"),
    ],
)
def test_math_accuracy_gold_with_words_that_math_verify_reads(gold, completion):
    assert math_answer.math_accuracy([completion], ["p"], answer=[gold]) == [1.0]


def test_math_answer_tag_in_words():
    # <answer> content with words is read as free text: "\boxed{The answer is 7}" would be t*h*E*...*7.
    assert math_answer.score("<answer>The answer is 7</answer>", "7") == 1.0


# -------------------------------------------------------------------------------------------------------------- gsm8k
@pytest.mark.parametrize(
    "completion, gold, expected",
    [
        ("<think>6*7</think><answer>42</answer>", "Six times seven.\n#### 42", 1.0),
        ("<answer>The total is $1,234.</answer>", "#### 1,234", 1.0),  # commas and $ both sides
        ("She pays 18.00 dollars", "18", 1.0),  # last number, numeric equality
        ("work... #### 72\nSo that is it, 3 times.", "#### 72", 1.0),  # '####' beats the later stray 3
        ("<answer>41.9999999</answer>", "42", 1.0),  # within tol=1e-6
        ("<answer>41.99</answer>", "42", 0.0),
        ("<answer>42</answer> 7", "43", 0.0),  # the tag wins over the later number
        ("<answer>forty-two</answer>", "42", 0.0),
        ("", "42", 0.0),
    ],
)
def test_gsm8k(completion, gold, expected):
    assert gsm8k.score(completion, gold) == expected


def test_gsm8k_batch_gold_without_number_is_none():
    assert gsm8k.gsm8k_accuracy(["42", "42"], ["p", "p"], answer=["#### 42", "no number"]) == [1.0, None]
    assert gsm8k.score("<answer>41.99</answer>", "42", tol=0.05) == 1.0


@pytest.mark.parametrize(
    "fn, columns",
    [
        (gsm8k.gsm8k_accuracy, {"answer": ["seventeen", "see the figure", "#### seventeen", None, ""]}),
        (arithmetic.arithmetic_accuracy, {"answer": ["seventeen", "see the figure", "1e5", None, ""]}),
        (countdown.countdown, {"numbers": [[1, 2]] * 5, "target": ["twenty-four", None, float("nan"), "", [3]]}),
        (countdown.countdown, {"numbers": [[], None, "bad", ["a"], [1.5, "x"]], "target": [3] * 5}),
    ],
)
def test_unusable_labels_are_not_applicable(fn, columns):
    # Every accuracy reward that takes a reference answer says None ("not applicable") for a label it cannot use,
    # never 0.0: rewards.combine then keeps the prompt's group out of training.
    completions = ["<answer>17</answer>", "17", "<answer>1 + 2</answer>", "", "<answer>3</answer>"]
    assert fn(completions, ["p"] * 5, **columns) == [None] * 5


# --------------------------------------------------------------------------------------------------------- arithmetic
@pytest.mark.parametrize(
    "completion, gold, expected",
    [
        ("<answer>-12.50</answer>", "-12.5", 1.0),
        ("12 + 30 = 42", 42, 1.0),
        ("<answer>1,000,000</answer>", 1000000, 1.0),
        ("<answer>0.30000000000000004</answer>", 0.3, 0.0),  # exact, no tolerance
        ("<answer>41</answer> 42", 42, 0.0),
        ("<answer>x</answer>", 42, 0.0),
        ("", 42, 0.0),
    ],
)
def test_arithmetic(completion, gold, expected):
    assert arithmetic.score(completion, gold) == expected


# ---------------------------------------------------------------------------------------------------------- countdown
@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think>..</think><answer>(6 - 2) * 6</answer>", 1.0),
        ("<answer>6 * (6 - 2) = 24</answer>", 1.0),  # 'expr = target' judged on expr
        ("<answer>6 × (6 − 2)</answer>".replace("−", "-"), 1.0),  # × accepted
        ("<answer>6 / (2 / 8) - 0</answer>", 0.1),  # uses numbers that were not given
        ("<answer>6 * 2 + 6</answer>", 0.1),  # well-formed, wrong value
        ("<answer>6 * 4</answer>", 0.1),  # numbers used wrongly
        ("<answer>2 / (6 - 6)</answer>", 0.1),  # division by zero: well-formed, wrong
        ("<answer>6 ** 2 - 6 * 2</answer>", 0.0),  # ** is not allowed
        ("<answer>6 // 2 * 6 + 6</answer>", 0.0),  # // is not allowed
        ("<answer>__import__('os').system('touch /tmp/pwned')</answer>", 0.0),  # never executed
        ("<answer>" + "(" * 150 + "6-2" + ")" * 150 + "*6</answer>", 0.0),  # too long / too deep
        ("<answer>idk</answer>", 0.0),
        ("<answer></answer>", 0.0),
        ("(6 - 2) * 6", 0.0),  # no answer tag
    ],
)
def test_countdown(completion, expected):
    assert countdown.score(completion, [6, 2, 6], 24) == expected


def test_countdown_exact_fractions_and_options():
    assert countdown.score("<answer>(4 / 3) * 3</answer>", [4, 3, 3], 4) == 1.0  # exact, no float error
    assert countdown.score("<answer>1 + 1</answer>", [1, 1], 3, format_score=0.0) == 0.0
    out = countdown.countdown(["<answer>1+2</answer>"] * 2, ["p", "p"], numbers=[[1, 2], "bad"], target=[3, 3])
    assert out == [1.0, None]
    with pytest.raises(ValueError, match="format_score"):
        countdown.countdown([], [], numbers=[], target=[], format_score=2.0)


def test_countdown_does_not_execute(tmp_path):
    marker = tmp_path / "pwned"
    text = f"<answer>__import__('pathlib').Path('{marker}').touch()</answer>"
    assert countdown.score(text, [1], 1) == 0.0 and not marker.exists()


# ------------------------------------------------------------------------------------------------------------- format
@pytest.mark.parametrize(
    "completion, strict, lenient, tags",
    [
        ("<think>\n2+2\n</think>\n<answer>4</answer>", 1.0, 1.0, 1.0),
        ("  <think>a</think><answer>4</answer>\n", 1.0, 1.0, 1.0),  # leading/trailing whitespace ok
        ("<think>a</think><answer>4</answer> extra", 0.0, 1.0, 1.0),  # text after the answer
        ("Sure! <think>a</think><answer>4</answer>", 0.0, 1.0, 1.0),  # text before think
        ("<think>a</think> b <answer>4</answer>", 0.0, 1.0, 1.0),  # text between
        ("<think>a</think><answer></answer>", 0.0, 1.0, 1.0),  # empty answer
        ("<answer>4</answer><think>a</think>", 0.0, 0.0, 1.0),  # wrong order
        ("<think><think>a</think></think><answer>4</answer>", 0.0, 1.0, 0.5),  # nested think
        ("<think>a</think>", 0.0, 0.0, 0.5),
        ("", 0.0, 0.0, 0.0),
    ],
)
def test_format_rewards(completion, strict, lenient, tags):
    assert fmt.score_strict(completion) == strict
    assert fmt.score_lenient(completion) == lenient
    assert fmt.score_tag_count(completion) == tags


def test_format_prefix_for_prompts_ending_in_think():
    mid_think = "2+2 is 4.</think> <answer>4</answer>"
    # Auto (prefix=None): the prompt ends with <think>, so the completion is scored as "<think>" + completion.
    assert fmt.format_strict([mid_think, mid_think], ["Assistant: <think>", "Assistant:"]) == [1.0, 0.0]
    assert fmt.tag_count([mid_think], ["Assistant: <think>\n"]) == [1.0]
    assert fmt.format_strict([mid_think], ["Assistant: <think>"], prefix="") == [0.0]  # disabled
    assert fmt.format_lenient([mid_think], ["Assistant:"], prefix="<think>") == [1.0]  # explicit


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("Step 1: add. Step 2: carry. Step 3: done.", 1.0),
        ("1. read\n2. add\n", 2 / 3),
        ("  - a\n  * b\n", 2 / 3),
        ("First, x. Next, y. Finally, z.", 1.0),
        ("The answer is 4.", 0.0),
        ("---\n", 0.0),  # a horizontal rule is not a bullet
        ("", 0.0),
    ],
)
def test_reasoning_steps(completion, expected):
    assert fmt.score_reasoning_steps(completion) == pytest.approx(expected)


# ------------------------------------------------------------------------------------------------------------- length
def test_cosine_hand_computed():
    # CosFn(t, T, a, b) = a + (b - a)(1 + cos(pi t / T)) / 2, open-r1 defaults, T = 1000.
    assert length.score_cosine(0, True) == 1.0  # max_value_correct
    assert length.score_cosine(1000, True) == 0.5  # min_value_correct
    assert length.score_cosine(500, True) == pytest.approx(0.75)  # cos(pi/2) = 0: midpoint
    assert length.score_cosine(0, False) == -1.0  # min_value_wrong: short and wrong is worst
    assert length.score_cosine(1000, False) == -0.5
    assert length.score_cosine(250, False) == pytest.approx(-0.5 - 0.25 * (1 + math.cos(math.pi / 4)))
    assert length.score_cosine(3000, True) == 0.5  # clamped: open-r1 would give cos(3 pi) -> 0.5 too, but
    assert length.score_cosine(2000, True) == 0.5  # ... here open-r1's unclamped cos(2 pi) would give 1.0
    assert length.score_cosine(2000, True, exceed_length=-1.0) == -1.0


def test_cosine_length_batch():
    right, wrong = "<answer>4</answer>", "<answer>5</answer>"  # 18 characters each
    out = length.cosine_length([right, wrong], ["p", "p"], answer=["4", "4"], correctness="arithmetic", max_len=36)
    assert out == [pytest.approx(0.75), pytest.approx(-0.75)]  # t/T = 1/2
    out = length.cosine_length([right], ["p"], answer=["4"], correctness="math", completion_length=[0], max_len=36)
    assert out == [1.0]  # the token-count column overrides the character count
    with pytest.raises(ValueError, match="correctness"):
        length.cosine_length([right], ["p"], answer=["4"], correctness="nope")


@pytest.mark.parametrize(
    "n, expected",
    [(0, 0.0), (800, 0.0), (801, -1 / 200), (900, -0.5), (1000, -1.0), (1001, -1.0), (10**9, -1.0)],
)
def test_overlong_dapo_eq13(n, expected):
    # max_len (L_max) = 1000, cache_len (L_cache) = 200: penalty ((L_max - L_cache) - |y|) / L_cache inside the cache.
    assert length.score_overlong(n, max_len=1000, cache_len=200) == pytest.approx(expected)


def test_overlong_units_and_column():
    text = "word " * 900  # 4500 characters, 900 words
    assert length.overlong_penalty([text], ["p"], max_len=1000, cache_len=200, unit="words") == [-0.5]
    assert length.overlong_penalty([text], ["p"], max_len=1000, cache_len=200) == [-1.0]  # chars
    assert length.overlong_penalty([text], ["p"], max_len=1000, cache_len=200, completion_length=[100]) == [0.0]
    with pytest.raises(ValueError):
        length.overlong_penalty([text], ["p"], max_len=100, cache_len=200)
    with pytest.raises(ValueError, match="unit"):
        length.overlong_penalty([text], ["p"], unit="tokens")


@pytest.mark.parametrize(
    "text, ngram, expected",
    [
        ("a b c d e f", 3, 0.0),
        ("go go go go go", 2, -0.75),  # 4 bigrams, 1 unique: (1 - 1/4) * -1
        ("A b a B a b", 2, -0.6),  # lower-cased: 5 bigrams, 2 unique ("a b", "b a"): (1 - 2/5) * -1
        ("too short", 3, 0.0),
        ("", 3, 0.0),
    ],
)
def test_repetition_penalty(text, ngram, expected):
    assert length.score_repetition(text, ngram_size=ngram) == pytest.approx(expected)
    assert length.repetition_penalty([text], ["p"], ngram_size=ngram, max_penalty=-0.5) == [pytest.approx(expected / 2)]


def test_repetition_penalty_rejects_positive_max_penalty():
    with pytest.raises(ValueError, match="max_penalty"):
        length.repetition_penalty(["x"], ["p"], max_penalty=1.0)


# ----------------------------------------------------------------------------------------------------------- registry
def test_registry_names():
    assert set(REWARD_FNS) == {
        "math_accuracy", "gsm8k_accuracy", "arithmetic_accuracy", "countdown", "format_strict", "format_lenient",
        "tag_count", "reasoning_steps", "cosine_length", "overlong_penalty", "repetition_penalty", "code_exec",
        "reasoning_gym", "tool_errors",
    }
    assert resolve_reward("countdown") is countdown.countdown
    assert resolve_reward("rewards.gsm8k:gsm8k_accuracy") is gsm8k.gsm8k_accuracy
    assert resolve_reward("tests.test_rewards_combine:sleepy").__name__ == "sleepy"


@pytest.mark.parametrize(
    "name, message",
    [
        ("math_acuracy", "not a registry name"),
        ("no_such_package.mod:fn", "cannot import"),
        ("rewards.gsm8k:no_such_fn", "no attribute"),
        ("rewards.countdown:MAX_EQUATION_CHARS", "not callable"),
        (":fn", "expected 'package.module:function'"),
        (None, "not a string"),
    ],
)
def test_resolve_reward_errors(name, message):
    with pytest.raises(ValueError) as info:
        resolve_reward(name)
    text = str(info.value)
    assert message in text and "math_accuracy" in text and "code_exec" in text  # names the allowed rewards
    if isinstance(name, str):
        assert repr(name) in text  # and the bad name


@pytest.mark.parametrize(
    "module",
    ["extract", "math_answer", "gsm8k", "arithmetic", "countdown", "format", "length", "code_exec", "registry"],
)
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(f"rewards.{module}"))
    assert result.failed == 0 and result.attempted > 0
