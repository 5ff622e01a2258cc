"""data.traces: synthetic reasoning traces are correct, self-consistent, scored 1.0 by the project's own rewards after
the prompt's prefilled <think>, and the imperfect-teacher option slips exactly the carries it should."""

from __future__ import annotations

import random
import re

import pytest

from data.synthetic import make_arithmetic, make_countdown, make_gsm8k_style, write_dataset
from data.templates import render_prompt
from data.traces import add_traces, arithmetic_trace, load_sft_rows, strip_prefilled_think
from rewards.arithmetic import arithmetic_accuracy
from rewards.countdown import countdown
from rewards.format import format_strict
from rewards.gsm8k import gsm8k_accuracy

_COLUMN = re.compile(r"^(1?\d)([+-])(\d)[+-](\d)=(\d+)$")  # "7+5+0=12", "13-8-1=4"


def _working(completion: str) -> list[str]:
    return completion.split("</think>")[0].removeprefix("<think>").split()


def test_hand_checked_addition_and_subtraction():
    assert arithmetic_trace("What is 985 + 37?", "1022") == (
        "<think> 985+037 5+7+0=12 8+3+1=12 9+0+1=10 =1022 </think> <answer>1022</answer>"
    )
    assert arithmetic_trace("What is 503 - 78?", "425") == (
        "<think> 503-078 13-8-0=5 10-7-1=2 5-0-1=4 =425 </think> <answer>425</answer>"
    )


def test_every_generated_row_gets_a_true_trace_that_the_rewards_accept():
    rows = make_arithmetic(500, 3, ops=("+", "-", "*", "/"))
    traced = add_traces(rows, "arithmetic")
    completions = [r["completion"] for r in traced]
    assert arithmetic_accuracy(completions, answer=[r["answer"] for r in rows]) == [1.0] * len(rows)
    assert format_strict(completions, [None] * len(rows)) == [1.0] * len(rows)
    for row in traced:
        if not re.fullmatch(r"What is \d+ [+-] \d+\?", row["prompt"]):
            continue
        for step in _working(row["completion"])[1:-1]:  # between the restated operands and "=N"
            top, op, a, carry, result = _COLUMN.fullmatch(step).groups()
            value = int(top) + int(a) + int(carry) if op == "+" else int(top) - int(a) - int(carry)
            assert value == int(result), (row["prompt"], step)


@pytest.mark.parametrize("prefill_think", [True, False])
def test_completion_after_the_rendered_prompt_scores_full_format(prefill_think):
    row = add_traces(make_arithmetic(1, 0), "arithmetic")[0]
    prompt = render_prompt(row["prompt"], None, template="r1_zero", prefill_think=prefill_think)
    completion = strip_prefilled_think(row["completion"], prompt)
    assert completion.lstrip().startswith("<think>") is not prefill_think
    # format rewards put the prefilled "<think>" back (prefix auto-detection), so both layouts score 1.0
    assert format_strict([completion], [prompt]) == [1.0]


def test_strip_prefilled_think_only_strips_a_leading_tag():
    assert strip_prefilled_think("  <think> x </think>", "Q\n<think>") == " x </think>"
    assert strip_prefilled_think("x <think> y", "Q\n<think>") == "x <think> y"
    assert strip_prefilled_think("<think> x", "Q") == "<think> x"


def test_carry_slip_one_drops_every_carry_and_stays_self_consistent():
    rows = make_arithmetic(300, 5, min_digits=2, max_digits=3, ops=("+",))
    slipped = add_traces(rows, "arithmetic", carry_slip=1.0, seed=0)
    for row, trace in zip(rows, slipped):
        a, b = map(int, re.findall(r"\d+", row["prompt"]))
        no_carry = sum(int(d) for d in str(a + b)) == sum(int(d) for d in str(a)) + sum(int(d) for d in str(b))
        tagged = trace["completion"].split("<answer>")[1].split("</answer>")[0]
        assert _working(trace["completion"])[-1] == f"={tagged}"  # the answer follows the (slipped) working
        assert (tagged == row["answer"]) is no_carry, (row["prompt"], trace["completion"])
        assert trace["answer"] == row["answer"]  # the gold answer is untouched
        assert all("+1=" not in step for step in _working(trace["completion"]))  # no carry ever passed on


def test_carry_slip_is_seeded_and_partial():
    rows = make_arithmetic(400, 1, min_digits=2, max_digits=2, ops=("+", "-"))
    first = add_traces(rows, "arithmetic", carry_slip=0.5, seed=7)
    assert first == add_traces(rows, "arithmetic", carry_slip=0.5, seed=7)
    assert first != add_traces(rows, "arithmetic", carry_slip=0.5, seed=8)
    correct = sum(arithmetic_accuracy([r["completion"] for r in first], answer=[r["answer"] for r in rows]))
    assert 0.4 * len(rows) < correct < 0.95 * len(rows)
    with pytest.raises(ValueError, match="arithmetic traces only"):
        add_traces(make_countdown(2, 0), "countdown", carry_slip=0.5)


def test_countdown_and_gsm8k_style_traces_score_correct():
    rows = make_countdown(100, 2)
    traced = add_traces(rows, "countdown")
    scores = countdown([r["completion"] for r in traced], numbers=[r["numbers"] for r in rows], target=[r["target"] for r in rows])
    assert scores == [1.0] * len(rows)
    assert _working(traced[0]["completion"])[-1].endswith(f"={rows[0]['target']}")
    rows = make_gsm8k_style(100, 2)
    traced = add_traces(rows, "gsm8k_style")
    assert gsm8k_accuracy([r["completion"] for r in traced], answer=[r["answer"] for r in rows]) == [1.0] * len(rows)
    assert "<<" not in traced[0]["completion"]


def test_unparseable_question_is_an_error():
    with pytest.raises(ValueError, match="not an arithmetic question"):
        arithmetic_trace("What is two plus two?", "4")
    with pytest.raises(ValueError, match="gives 4"):
        arithmetic_trace("What is 2 + 2?", "5")


def test_load_sft_rows_reads_a_distillation_file_and_synthetic_sources(tmp_path):
    path = write_dataset(
        [{"question": "What is 1 + 1?", "teacher": "<think> 1+1=2 </think> <answer>2</answer>", "x": 1}] * 3,
        tmp_path / "teacher.jsonl",
    )
    rows = load_sft_rows(str(path), prompt_column="question", completion_column="teacher", limit=2)
    assert rows == [{"prompt": "What is 1 + 1?", "completion": "<think> 1+1=2 </think> <answer>2</answer>"}] * 2
    with pytest.raises(ValueError, match="column 'completion' not found"):
        load_sft_rows(str(path), prompt_column="question")
    synthetic = load_sft_rows("synthetic:arithmetic?n=5&seed=3")
    assert [r["prompt"] for r in synthetic] == [r["prompt"] for r in make_arithmetic(5, 3)]
    assert all(r["completion"].endswith(f"<answer>{r['answer']}</answer>") for r in synthetic)


def test_rng_draws_only_on_carries():
    """A trace without carries consumes no random draws, so adding easy rows never shifts later rows' slips."""
    rng = random.Random(0)
    arithmetic_trace("What is 12 + 34?", "46", carry_slip=0.5, rng=rng)
    assert rng.random() == random.Random(0).random()
