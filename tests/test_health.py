"""Run health checks (train/health.py): each fires once, at the step its condition starts to hold, on hand-made
histories; and a real run made to go wrong prints the line, logs the flag and marks it in the report."""

from __future__ import annotations

import pytest

from train import health
from train.health import new_warnings

from helpers import SMOKE, read_jsonl, run_train


def _fired(records: list[dict]) -> list[tuple[int, str]]:
    """(step, check) of every warning over the history as the main loop sees it, one record at a time."""
    return [(records[end - 1]["step"], warning.check) for end in range(1, len(records) + 1) for warning in new_warnings(records[:end])]


def _train(step, entropy=2.0, truncated=0.1, zero_std=0.3, **extra):
    return {"step": step, "entropy": entropy, "truncated_fraction": truncated, "zero_std_fraction": zero_std, **extra}


def test_held_out_accuracy_below_its_start_fires_at_each_evaluation_below_it():
    records = [{"step": 0, "eval/pass@1": 0.160}]
    records += [_train(step) for step in range(1, 10)] + [_train(10, **{"eval/pass@1": 0.150})]  # within 2 points
    records += [_train(step) for step in range(11, 20)] + [_train(20, **{"eval/pass@1": 0.090})]
    records += [_train(21)]
    assert _fired(records) == [(20, "eval_below_start")]
    warning = health.eval_below_start(records[:21])  # up to step 20
    assert warning is not None and "0.090" in warning.message and "0.160" in warning.message and "optim.lr" in warning.message


def test_no_evaluation_at_step_zero_means_no_held_out_check():
    records = [_train(1), _train(2, **{"eval/pass@1": 0.0})]
    assert health.eval_below_start(records) is None


def test_entropy_and_truncation_rising_together():
    # issue 23's run: entropy 2.43 -> 2.78 while the cut share went 0.45 -> 0.59
    rising = [_train(step, entropy=2.43 + 0.06 * step, truncated=0.45 + 0.025 * step) for step in range(1, 9)]
    assert _fired(rising) == [(6, "entropy_and_truncation_rising")]  # the first step with 2 x 3 steps to compare
    only_entropy = [_train(step, entropy=2.43 + 0.06 * step, truncated=0.45) for step in range(1, 9)]
    noisy = [_train(step, entropy=2.4 + 0.05 * (step % 2), truncated=0.45 + 0.03 * (step % 2)) for step in range(1, 12)]
    assert _fired(only_entropy) == [] and _fired(noisy) == []
    message = health.entropy_and_truncation_rising(rising[:6]).message
    assert "max_completion_length" in message and "grpo.beta" in message


def test_entropy_and_truncation_rising_on_an_untrained_policy_is_not_drift():
    """Every group without reward spread trains nothing, so a rise is the prompts' (color_cube_rotation's runs in the
    task sweep: the same rise at the same step under LoRA and full fine-tuning, on an unchanged model); one step
    with a group to learn from in the compared steps makes it count again."""
    untrained = [_train(step, entropy=2.43 + 0.06 * step, truncated=0.45 + 0.025 * step, zero_std=1.0) for step in range(1, 9)]
    assert _fired(untrained) == [(3, "no_reward_spread")]
    untrained[4]["zero_std_fraction"] = 0.875  # step 5 had one group with spread: its update can have moved the policy
    assert (6, "entropy_and_truncation_rising") in _fired(untrained)


def test_no_reward_spread_for_several_steps_fires_once():
    records = [_train(1, zero_std=0.95), _train(2, zero_std=0.5)]  # one bad step is noise
    records += [_train(step, zero_std=1.0) for step in range(3, 9)]
    assert _fired(records) == [(5, "no_reward_spread")]  # the third step in a row, and not again while it holds
    records += [_train(9, zero_std=0.2)] + [_train(step, zero_std=0.9) for step in range(10, 13)]
    assert _fired(records) == [(5, "no_reward_spread"), (12, "no_reward_spread")]  # a new episode warns again
    assert "rollout.filter_groups.enable=true" in health.no_reward_spread(records[:5]).message


def test_the_hints_do_not_suggest_dynamic_sampling_to_a_run_that_uses_it():
    # A run with rollout.filter_groups logs its rounds each step; at the round limit its padded groups have no spread.
    plain = [_train(step, zero_std=1.0, top_opening_share=1.0) for step in range(1, 4)]
    sampled = [{**record, "filter_groups/rounds": 4.0} for record in plain]
    for check in (health.no_reward_spread, health.one_opening_for_all):
        assert "rollout.filter_groups.enable=true" in check(plain).message
        assert "rollout.filter_groups.enable=true" not in check(sampled).message and "sft:" in check(sampled).message
    assert "4 rounds" in health.no_reward_spread(sampled).message
    assert "max_num_gen_batches" in health.no_reward_spread(sampled).message
    assert "is on and did not prevent it" in health.one_opening_for_all(sampled).message


def test_one_opening_for_all_fires_when_the_policy_answers_every_prompt_alike():
    # The sweep's letter_counting run: the share of completions opening "1</answer>" went 0.2 -> 0.9 -> 1.0.
    records = [_train(step, top_opening_share=share) for step, share in enumerate([0.2, 0.85, 0.5, 0.8, 0.9, 1.0, 1.0], 1)]
    assert _fired(records) == [(6, "one_opening_for_all")]  # 3 steps in a row at >= 80%; one step at 85% is not enough
    assert "gives one answer whatever the question" in health.one_opening_for_all(records[:6]).message
    assert health.one_opening_for_all([_train(1)]) is None  # a history without the metric


def test_top_opening_share_of_completions_reads_how_they_open():
    from train.step_metrics import OPENING_CHARS, opening_line_key, top_share

    completions = ["1</answer>\nThe text ...", "\n1</answer>", "2</answer>", "1 </answer> and more", "",
                   "```python\nprint(12 * 34)\n```", "```python\nprint(12 * 35)\n```"]
    keys = [opening_line_key(text) for text in completions]
    assert keys[0] == keys[1] != keys[2] and keys[3] not in keys[:3]  # the answer counts, what follows it does not
    assert keys[5] != keys[6]  # tool calls open alike on their first line; their code differs
    same_start = "x" * OPENING_CHARS
    assert opening_line_key(same_start + "a") == opening_line_key(same_start + "b")
    assert top_share(keys) == 2 / 7 and top_share([]) != top_share([])  # NaN for none


@pytest.mark.slow
def test_a_run_whose_reward_never_pays_says_so(tmp_path):
    """The smoke model scored only by arithmetic accuracy (a random tiny model almost never answers right): groups have
    no reward spread; at the first step where 3 steps in a row had none the run prints the warning, logs
    health/no_reward_spread there (and only there), and the report marks that step."""
    result = run_train(["--config", str(SMOKE), f"output_dir={tmp_path}", "run_name=no_spread", "max_steps=6", "eval.source=null",
                        "rewards.functions=[{name: arithmetic_accuracy, weight: 1.0}]", "rewards.preflight=false"])
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(tmp_path / "no_spread" / "metrics.jsonl")
    no_spread = [r["zero_std_fraction"] for r in records]
    onset = next(step for step in range(3, len(records) + 1) if min(no_spread[step - 3 : step]) >= health.NO_SPREAD)
    assert f"thinkrl: warning: step {onset}: " in result.stdout + result.stderr
    assert "of the groups had no reward spread in each of the last 3 steps" in result.stdout + result.stderr
    assert [r["step"] for r in records if r.get("health/no_reward_spread") == 1] == [onset]
    from train.report import health_steps, read_metrics

    assert health_steps(read_metrics(tmp_path / "no_spread" / "metrics.jsonl")) == [onset]
    assert (tmp_path / "no_spread" / "report" / "summary.png").is_file()
