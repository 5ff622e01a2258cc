"""data.synthetic: generators are deterministic per seed and every row's answer is actually correct."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from data.synthetic import (
    exclude_questions,
    make_arithmetic,
    make_countdown,
    make_gsm8k_style,
    make_synthetic,
    read_rows,
    write_dataset,
)

GENERATORS = [make_countdown, make_arithmetic, make_gsm8k_style]


def _eval_own_expression(expr: str) -> float:
    """Evaluate an arithmetic string *we generated*; the character whitelist keeps eval to + - * / ( ) and digits."""
    assert re.fullmatch(r"[\d+\-*/() .]+", expr), expr
    return eval(expr, {"__builtins__": {}}, {})


@pytest.mark.parametrize("make", GENERATORS)
def test_same_seed_same_rows_other_seed_other_rows(make):
    assert make(50, 7) == make(50, 7)
    assert make(50, 7) != make(50, 8)
    assert make(20, 7) == make(50, 7)[:20]  # row i does not depend on n


def test_countdown_answers_reach_the_target_using_each_number_once():
    rows = make_countdown(300, 0)
    for row in rows:
        numbers, target, answer = row["numbers"], row["target"], row["answer"]
        assert 3 <= len(numbers) <= 4 and all(1 <= x <= 100 for x in numbers)
        assert 1 <= target <= 100
        assert abs(_eval_own_expression(answer) - target) < 1e-9, row
        assert sorted(int(x) for x in re.findall(r"\d+", answer)) == sorted(numbers), row
        assert row["prompt"] == (
            f"Using the numbers {numbers}, create an equation that equals {target}. You can use basic arithmetic "
            "operations (+, -, *, /) and each number can only be used once."
        )
    assert any("/" in r["answer"] for r in rows) and any("*" in r["answer"] for r in rows)


def test_countdown_options():
    rows = make_countdown(50, 1, num_numbers=(4, 4), max_number=20, target_range=(10, 20))
    assert all(len(r["numbers"]) == 4 and max(r["numbers"]) <= 20 and 10 <= r["target"] <= 20 for r in rows)
    with pytest.raises(ValueError):
        make_countdown(1, 0, num_numbers=(1, 2))
    with pytest.raises(ValueError, match="widen target_range"):
        make_countdown(1, 0, num_numbers=(2, 2), max_number=1, target_range=(50, 60))  # 1 and 1 never make 50


def test_arithmetic_answers_are_right():
    rows = make_arithmetic(300, 0, min_digits=2, max_digits=3, ops=("+", "-", "*", "/"))
    for row in rows:
        a, op, b = re.fullmatch(r"What is (\d+) ([-+*/]) (\d+)\?", row["prompt"]).groups()
        assert int(row["answer"]) == _eval_own_expression(f"{a} {op} {b}"), row
        if op != "/":  # a division's dividend is divisor * quotient, so only the operands of the others are bounded
            assert all(10 <= int(x) <= 999 for x in (a, b))
    assert {r["prompt"].split()[3] for r in rows} == {"+", "-", "*", "/"}
    assert any(r["answer"].startswith("-") for r in rows)
    with pytest.raises(ValueError, match="subset of"):
        make_arithmetic(1, 0, ops=("^",))
    with pytest.raises(ValueError):
        make_arithmetic(1, 0, min_digits=3, max_digits=2)


def test_gsm8k_style_answers_parse_after_hashes_and_annotations_are_right():
    rows = make_gsm8k_style(400, 0)
    for row in rows:
        reasoning, final = row["answer"].split("####")
        assert int(final.strip()) == int(row["final_answer"]) >= 0
        for expr, value in re.findall(r"<<([^=]+)=(-?\d+)>>", reasoning):
            assert _eval_own_expression(expr) == int(value), row
    assert len({r["prompt"].split()[0] for r in rows}) > 10  # many templates and names are in use
    assert all("<<" in r["answer"] for r in rows)


def test_make_synthetic_dispatches_and_rejects_unknown_kinds():
    assert make_synthetic("arithmetic", 5, 2) == make_arithmetic(5, 2)
    with pytest.raises(ValueError, match="countdown, arithmetic, gsm8k_style"):
        make_synthetic("sudoku", 5, 0)


def test_exclude_questions_makes_eval_disjoint_from_train():
    train = make_arithmetic(500, 0, max_digits=1)  # 1-digit sums repeat, so another seed overlaps
    evaluation = make_arithmetic(200, 1, max_digits=1)
    assert {r["prompt"] for r in train} & {r["prompt"] for r in evaluation}
    kept = exclude_questions(evaluation, train)
    assert kept and not {r["prompt"] for r in train} & {r["prompt"] for r in kept}


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_write_and_read_round_trip(tmp_path, suffix):
    rows = make_countdown(5, 0)
    back = read_rows(write_dataset(rows, tmp_path / "sub" / f"cd{suffix}"))
    if suffix == ".csv":  # CSV is text: lists come back as JSON strings, ints as strings
        assert back[0]["numbers"] == str(rows[0]["numbers"]) and back[0]["target"] == str(rows[0]["target"])
        assert [r["prompt"] for r in back] == [r["prompt"] for r in rows]
    else:
        assert back == rows
    with pytest.raises(ValueError, match=".jsonl, .json, .parquet, .csv"):
        write_dataset(rows, tmp_path / "cd.xlsx")


def test_cli_writes_files_and_excludes(tmp_path):
    train, evaluation = tmp_path / "train.jsonl", tmp_path / "eval.parquet"
    base = [sys.executable, "-m", "data.synthetic", "arithmetic"]
    done = subprocess.run([*base, "--n", "300", "--seed", "0", "--out", str(train)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "wrote 300 arithmetic rows" in done.stdout and "Warning" not in done.stderr
    assert read_rows(train) == make_arithmetic(300, 0)

    cmd = [*base, "--n", "300", "--seed", "1", "--out", str(evaluation), "--exclude", str(train)]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert not {r["prompt"] for r in read_rows(train)} & {r["prompt"] for r in read_rows(evaluation)}
