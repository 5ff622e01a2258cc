"""The reward preflight (train/preflight_checks.py, train/preflight.py): perfect completions per template, the gold
report's counts, the one-line stop on a broken dataset (command and trainer), the sample check."""

import json
import math
import subprocess
import sys
from types import SimpleNamespace

import pytest

from data.synthetic import make_countdown
from data.templates import render_prompt
from helpers import REPO, SMOKE, make_tiny_model, run_train
from rewards import RewardCombiner, RewardSpec
from rewards.registry import REWARD_FNS
from train.preflight_checks import (
    GoldReport, gold_failure, gold_report, gold_summary, perfect_completion, sample_report, sample_summary,
)
from train.rollout import SamplingParams


@pytest.mark.parametrize(
    "template, prefill_think, expected",
    [
        # r1_zero: the prompt ends "... Assistant: <think>"; spaces as in the R1-Zero instruction.
        ("r1_zero", True, " reasoning </think> <answer>4</answer>"),
        ("r1_zero", False, "<think> reasoning </think> <answer>4</answer>"),
        # plain: the prompt ends "...\n<think>"; newlines.
        ("plain", True, "\nreasoning\n</think>\n<answer>4</answer>"),
        ("plain", False, "<think>\nreasoning\n</think>\n<answer>4</answer>"),
        # chat: the prompt ends "<|im_start|>assistant\n<think>\n": the completion starts with the reasoning itself.
        ("chat", True, "reasoning\n</think>\n<answer>4</answer>"),
        ("chat", False, "<think>\nreasoning\n</think>\n<answer>4</answer>"),
    ],
)
def test_perfect_completion_per_template(template, prefill_think, expected):
    assert perfect_completion("4", template=template, prefill_think=prefill_think) == expected


@pytest.mark.parametrize("template", ["r1_zero", "plain", "chat"])
@pytest.mark.parametrize("reward, gold", [("arithmetic_accuracy", "-12.5"), ("gsm8k_accuracy", "3 boxes of 4 is 12.\n#### 1,212")])
def test_a_prefilled_answer_prompt_scores_its_perfect_completion_through_the_combiner(tokenizer, template, reward, gold):
    # The prompt opens <answer>: the completion is the answer and its closing tag, and the combiner hands rewards
    # "<answer>" + completion (a completion without the closing tag, ended by EOS, is closed there).
    prompt = render_prompt("What is it?", tokenizer, template=template, prefill_think=False, prefill_answer=True)
    completion = perfect_completion(gold, template=template, prefill_think=False, prefill_answer=True)
    final = gold.rsplit("####", 1)[-1].strip()
    assert completion == f"{final}</answer>"
    combiner = RewardCombiner([RewardSpec(reward)])
    scored = combiner([completion, final, "The answer is 7.", f"{final}</answer> 7"], [prompt] * 4, {"answer": [gold] * 4})
    assert scored.per_reward[reward] == [1.0, 1.0, 0.0, 1.0]


def test_perfect_completion_of_a_gsm8k_gold_puts_the_final_number_in_the_tag():
    gold = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
    assert (perfect_completion(gold, template="r1_zero", prefill_think=True)
            == " Natalia sold 48/2 = <<48/2=24>>24 clips in May. </think> <answer>72</answer>")


@pytest.mark.parametrize("template", ["r1_zero", "plain", "chat"])
@pytest.mark.parametrize("prefill_think", [True, False])
@pytest.mark.parametrize(
    "reward, gold, columns",
    [
        ("arithmetic_accuracy", "-12.5", {}),
        ("gsm8k_accuracy", "3 boxes of 4 is 12.\n#### 1,212", {}),
        ("math_accuracy", "\\frac{1}{2}", {}),
        ("math_accuracy", "17 apples", {}),  # a word: boxed, math-verify would read a product of symbols
        ("countdown", "(6 - 2) * 6", {"numbers": [6, 2, 6], "target": 24}),
    ],
)
def test_perfect_completions_score_one_on_the_accuracy_and_strict_format_rewards(tokenizer, template, prefill_think, reward, gold, columns):
    prompt = render_prompt("What is it?", tokenizer, template=template, prefill_think=prefill_think)
    completion = perfect_completion(gold, template=template, prefill_think=prompt.rstrip().endswith("<think>"))
    column_lists = {"answer": [gold], **{name: [value] for name, value in columns.items()}}
    assert REWARD_FNS[reward]([completion], [prompt], **column_lists) == [1.0]
    assert REWARD_FNS["format_strict"]([completion], [prompt]) == [1.0]


def _countdown_rows(tokenizer):
    """3 good rows, one whose `answer` holds the target instead of an equation (the wrong column), one whose numbers
    are unusable. Hand-checked: 3 score 1, row 3 scores countdown's format_score 0.1, row 4 is not applicable."""
    rows = make_countdown(5, seed=0)
    rows[3]["answer"] = str(rows[3]["target"])
    rows[4]["numbers"] = []
    text = [render_prompt(r["prompt"], tokenizer, template="r1_zero", prefill_think=True) for r in rows]
    return {"text": text, **{key: [r[key] for r in rows] for key in rows[0]}}


def test_gold_report_counts_on_a_small_dataset(tokenizer):
    rows = _countdown_rows(tokenizer)
    combiner = RewardCombiner([RewardSpec("countdown"), RewardSpec("format_strict", weight=0.1)])  # inline: no pool
    report = gold_report("training", rows, combiner, "countdown", template="r1_zero", count_tokens=lambda texts: [len(t) for t in texts])
    assert report.counts() == [5, 3, 1, 1]
    assert [e["row"] for e in report.examples["below_one"]] == [3] and report.examples["below_one"][0]["score"] == 0.1
    assert [e["row"] for e in report.examples["not_applicable"]] == [4] and math.isnan(report.examples["not_applicable"][0]["score"])
    assert report.example["scores"] == {"countdown": 1.0, "format_strict": 1.0}
    assert report.example["completion"] == f" reasoning </think> <answer>{rows['answer'][0]}</answer>"
    assert report.reward_means["countdown"] == pytest.approx((3 + 0.1) / 4)  # the n/a row is left out of the mean
    assert report.reward_means["format_strict"] == 1.0
    # 2 bad rows of 5: within a 0.4 tolerance, not within 0.3; the message names the counts and an example.
    assert gold_failure([report], 0.4) is None
    message = gold_failure([report], 0.3)
    assert message.startswith("rewards.preflight: 2 of 5 training rows cannot score 1 on countdown")
    assert "(1 score below 1, 1 not applicable; rewards.preflight_max_bad_fraction=0.3)" in message
    assert "training row 4" in message and "\n" not in message
    assert gold_summary([report]).startswith("gold answers as perfect completions score 1 on countdown: training 3/5 (1 below 1, 1 not applicable)")


def test_eval_counts_summed_over_ranks_decide_too():
    shard = GoldReport("eval", "arithmetic_accuracy", 4, 4, 0, 0, {"below_one": [], "not_applicable": []}, None, {}, {})
    assert gold_failure([shard], 0.0) is None
    summed = shard.with_counts([8, 5, 0, 3])  # another rank's shard had 3 unusable golds
    assert summed.counts() == [8, 5, 0, 3] and "3 of 8 eval rows" in gold_failure([summed], 0.0)


def test_a_reward_whose_perfect_completion_cannot_be_written_skips_the_gold_check():
    combiner = SimpleNamespace(specs=[RewardSpec("code_exec"), RewardSpec("format_strict")])  # never called
    report = gold_report("training", {"text": ["p"], "answer": ["a"]}, combiner, "code_exec", template="r1_zero")
    assert report.skipped.startswith("code_exec is configured") and report.num_rows == 0
    assert gold_failure([report], 0.0) is None and "skipped" in gold_summary([report])


def test_sample_report_scores_every_sample(tokenizer):
    from data.prompts import prepare_prompts

    prepared = prepare_prompts(["What is 2 + 2?", "What is 3 + 5?"], tokenizer, template="r1_zero", system_prompt=None, prefill_think=True)
    rows = {"text": prepared.texts, "prompt_ids": prepared.ids, "answer": ["4", "8"]}
    combiner = RewardCombiner([RewardSpec("arithmetic_accuracy"), RewardSpec("tag_count", weight=0.25)])
    samples = sample_report(make_tiny_model(tokenizer), tokenizer, rows, combiner, num_generations=2, device="cpu",
                            sampling=SamplingParams(max_completion_length=6, temperature=1.0, top_p=1.0, top_k=0))
    assert [s["prompt"] for s in samples] == [prepared.texts[0]] * 2 + [prepared.texts[1]] * 2
    assert all(set(s["scores"]) == {"arithmetic_accuracy", "tag_count"} for s in samples)
    assert all(s["scores"]["arithmetic_accuracy"] in (0.0, 1.0) and 0 <= s["scores"]["tag_count"] <= 1 for s in samples)
    assert all(isinstance(s["completion"], str) and isinstance(s["truncated"], bool) for s in samples)
    assert sample_summary(samples).startswith("4 samples of the initial policy")


def _broken_dataset(path, bad_every=1):
    """Arithmetic questions whose `answer` holds a GSM8K-style solution (`... #### 7`): arithmetic_accuracy cannot read
    such a gold (not applicable). Every `bad_every`-th row is broken, the others hold the bare number."""
    with open(path, "w") as f:
        for a in range(40):
            answer = f"{a} plus {a + 1} is {2 * a + 1}.\n#### {2 * a + 1}" if a % bad_every == 0 else str(2 * a + 1)
            f.write(json.dumps({"prompt": f"What is {a} + {a + 1}?", "answer": answer}) + "\n")
    return path


def _error_lines(stderr, command):
    return [line for line in stderr.splitlines() if line.startswith(f"thinkrl {command}: error:")]


def test_preflight_command_stops_on_a_broken_dataset(tmp_path):
    data = _broken_dataset(tmp_path / "broken.jsonl")
    command = [sys.executable, "-m", "train.preflight", "--config", str(SMOKE), "--samples", "0", f"data.source={data}", "eval.source=null"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    (error,) = _error_lines(result.stderr, "preflight")
    assert "40 of 40 training rows cannot score 1 on arithmetic_accuracy" in error and "40 not applicable" in error
    assert "Traceback" not in result.stderr
    assert "training: 40 rows: 0 score 1, 0 below 1, 40 not applicable" in result.stdout  # the full report first
    assert "not applicable: row 0: answer '0 plus 1 is 1.\\n#### 1'" in result.stdout


def test_preflight_command_tolerance(tmp_path, capsys):
    from train.preflight import main

    data = _broken_dataset(tmp_path / "half.jsonl", bad_every=2)  # 20 of 40 rows unusable
    args = ["--config", str(SMOKE), "--samples", "0", f"data.source={data}", "eval.source=null"]
    assert main([*args, "rewards.preflight_max_bad_fraction=0.5"]) == 0
    assert "training: 40 rows: 20 score 1, 0 below 1, 20 not applicable" in capsys.readouterr().out
    assert main([*args, "rewards.preflight_max_bad_fraction=0.4"]) == 2
    assert "20 of 40 training rows" in capsys.readouterr().err


@pytest.mark.slow
def test_trainer_stops_on_a_broken_dataset_before_writing_anything(tmp_path):
    data = _broken_dataset(tmp_path / "broken.jsonl")
    out = tmp_path / "runs"
    result = run_train(["--config", str(SMOKE), f"output_dir={out}", f"data.source={data}", "eval.source=null"], timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    (error,) = _error_lines(result.stderr, "train")
    assert "40 of 40 training rows cannot score 1 on arithmetic_accuracy" in error and "Traceback" not in result.stderr
    assert not out.exists(), "nothing is written when the gold check fails"
    # rewards.preflight=false: the same data trains (its groups are left out as not applicable), no preflight lines.
    result = run_train(["--config", str(SMOKE), f"output_dir={out}", f"data.source={data}", "eval.source=null",
                        "max_steps=1", "rewards.preflight=false", "checkpoint.export_hf=false", "log.report=false"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "preflight" not in result.stdout


def test_a_custom_accuracy_reward_warns_instead_of_stopping(tmp_path, capsys):
    """Its perfect completion is a guess: `alternating` scores min(len, 40) / 40, and short completions score below 1."""
    from train.preflight import main

    args = ["--config", str(SMOKE), "--samples", "0", "eval.source=null", "data.limit=20", "rewards.num_workers=1",
            "rewards.functions=[{name: 'tests.fault_rewards:alternating'}]"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "thinkrl preflight: warning: rewards.preflight:" in captured.err and "is a guess" in captured.err
    assert "thinkrl preflight: ok" in captured.out
