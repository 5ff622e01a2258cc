"""RewardCombiner and RewardPool: weighting, failure accounting, hard timeouts, threads and worker processes.

The module-level functions below are custom rewards used through the ``"tests.test_rewards_combine:<name>"`` path, as a
user's YAML would name them; they run in the combiner's worker processes.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import threading
import time

import pytest

from rewards import RewardCombiner, RewardOutput, RewardSpec
from rewards.executor import RewardPool

HERE = "tests.test_rewards_combine"


# ----------------------------------------------------------------------------------------------------- custom rewards
def sleepy(completions, prompts, **_):
    time.sleep(60)
    return [1.0] * len(completions)


def buggy(completions, prompts, **_):
    raise RuntimeError("buggy reward")


def not_applicable(completions, prompts, **_):
    return [None] * len(completions)


def nan_reward(completions, prompts, **_):
    return [float("nan")] * len(completions)


def wrong_length(completions, prompts, **_):
    return []


def crash(completions, prompts, **_):
    os._exit(3)


def scaled_length(completions, prompts, *, answer, scale=1.0, **_):
    """Checks that columns and YAML options both arrive."""
    return [scale * len(c) + float(a) for c, a in zip(completions, answer)]


# --------------------------------------------------------------------------------------------------------- weighting
def test_weighted_total_hand_computed():
    specs = [RewardSpec("format_strict", weight=0.5), RewardSpec("arithmetic_accuracy", weight=2.0)]
    completions = ["<think>a</think><answer>4</answer>", "<answer>4</answer>", "<think>a</think><answer>5</answer>"]
    with RewardCombiner(specs) as combine:
        out = combine(completions, ["p"] * 3, {"answer": ["4", "4", "4"]})
    # format: [1, 0, 1]; arithmetic: [1, 1, 0]  ->  total = 0.5*format + 2*arithmetic
    assert out.per_reward == {"format_strict": [1.0, 0.0, 1.0], "arithmetic_accuracy": [1.0, 1.0, 0.0]}
    assert out.total == [2.5, 2.0, 0.5]
    assert out.failures == {"format_strict": 0, "arithmetic_accuracy": 0}
    assert combine._pool is None  # only inline rewards: no worker process was started


def test_none_is_not_applicable_not_a_failure():
    specs = [RewardSpec("arithmetic_accuracy", weight=2.0), RewardSpec("tag_count")]
    combine = RewardCombiner(specs, on_error=-1.0)
    out = combine(["<answer>4</answer>", "<answer>4</answer>"], ["p", "p"], {"answer": ["4", "not a number"]})
    # row 0: 2 * 1 (arithmetic) + 0.5 (tag_count: answer tags only) = 2.5
    # row 1: arithmetic is None (unusable gold): skipped, NOT on_error (-1) and not a failure; the row's total is NaN
    # (not applicable) although tag_count applies, so that its group is kept out of the advantages.
    assert out.total[0] == 2.5 and math.isnan(out.total[1])
    assert out.applicable == [True, False]
    assert out.skipped == {"arithmetic_accuracy": [False, True], "tag_count": [False, False]}
    assert out.skipped_counts() == {"arithmetic_accuracy": 1, "tag_count": 0}
    assert out.per_reward["arithmetic_accuracy"][0] == 1.0 and math.isnan(out.per_reward["arithmetic_accuracy"][1])
    assert out.per_reward["tag_count"] == [0.5, 0.5]
    assert out.failures == {"arithmetic_accuracy": 0, "tag_count": 0}
    combine.close()


def test_skipped_reward_of_weight_zero_is_only_logged():
    # A weight-0 reward is logged, not trained on: its None does not make the row inapplicable.
    specs = [RewardSpec("arithmetic_accuracy", weight=0.0), RewardSpec("tag_count")]
    with RewardCombiner(specs) as combine:
        out = combine(["<answer>4</answer>"], ["p"], {"answer": ["n/a"]})
    assert out.total == [0.5] and out.applicable == [True] and out.skipped["arithmetic_accuracy"] == [True]


def test_not_applicable_group_drops_out_of_advantages():
    # 2 prompts x G=2. Prompt 0 (gold 4): rewards [1, 0] -> centred [0.5, -0.5], unbiased std sqrt(0.5) = 0.70711,
    # advantages ±0.5 / (0.70711 + 1e-4) = ±0.70700. Prompt 1's gold "seventeen" is unusable: advantages exactly 0.
    import torch

    from train.advantages import group_advantages, kept_rows

    completions = ["<answer>4</answer>", "<answer>5</answer>", "<answer>17</answer>", "<answer>3</answer>"]
    with RewardCombiner([RewardSpec("arithmetic_accuracy")]) as combine:
        out = combine(completions, ["p"] * 4, {"answer": ["4", "4", "seventeen", "seventeen"]})
    rewards = torch.tensor(out.total, dtype=torch.float64)
    valid = torch.tensor(out.applicable)
    adv = group_advantages(rewards, 2, valid=valid)
    a = 0.5 / (math.sqrt(0.5) + 1e-4)
    torch.testing.assert_close(adv, torch.tensor([a, -a, 0.0, 0.0], dtype=torch.float64))
    assert kept_rows(rewards, 2, valid).tolist() == [True, True, False, False]


def test_empty_batch():
    with RewardCombiner([RewardSpec("math_accuracy"), RewardSpec("format_strict")]) as combine:
        out = combine([], [], {"answer": []})
    assert out == RewardOutput(total=[], per_reward={"math_accuracy": [], "format_strict": []},
                               failures={"math_accuracy": 0, "format_strict": 0},
                               timeouts={"math_accuracy": 0, "format_strict": 0},
                               skipped={"math_accuracy": [], "format_strict": []}, applicable=[])


# --------------------------------------------------------------------------------------------------- pooled rewards
def test_pooled_math_code_and_custom_rewards():
    specs = [
        RewardSpec("math_accuracy"),
        RewardSpec("code_exec", kwargs={"time_limit_s": 2.0}),
        RewardSpec(f"{HERE}:scaled_length", weight=0.5, kwargs={"scale": 2.0}),
    ]
    completions = [r"<answer>\frac{1}{2}</answer>", "```python\ndef f():\n    return 1\n```"]
    columns = {"answer": ["0.5", "3"], "tests": [["assert False"], ["assert f() == 1", "assert f() == 2"]]}
    with RewardCombiner(specs, timeout_s=10, num_workers=2) as combine:
        out = combine(completions, ["p", "p"], columns)
    assert out.per_reward["math_accuracy"] == [1.0, 0.0]
    assert out.per_reward["code_exec"] == [0.0, 0.5]  # no code in row 1; one of two asserts in row 2
    assert out.per_reward[f"{HERE}:scaled_length"] == [2.0 * len(completions[0]) + 0.5, 2.0 * len(completions[1]) + 3]
    assert sum(out.failures.values()) == 0


def test_hanging_reward_costs_at_most_its_timeout():
    specs = [RewardSpec("format_lenient"), RewardSpec(f"{HERE}:sleepy")]
    with RewardCombiner(specs, timeout_s=1.0, num_workers=2) as combine:
        combine.start()  # pay the one-off worker start outside the measurement
        start = time.monotonic()
        out = combine(["<think>a</think><answer>1</answer>"] * 2, ["p", "p"], {})
        elapsed = time.monotonic() - start
        assert elapsed < 3.0, elapsed  # the 60 s sleeps cost 1 s (both run in parallel, one per worker)
        assert out.failures[f"{HERE}:sleepy"] == 2 and out.timeouts[f"{HERE}:sleepy"] == 2
        assert out.per_reward["format_lenient"] == [1.0, 1.0] and out.total == [1.0, 1.0]
        assert len(combine._pool._workers) == 2  # the killed workers were replaced


def test_pool_timeout_clock_starts_when_a_worker_takes_the_call():
    # 3 hanging calls on 1 worker: each gets its own full second (not 1 s for all from submission), then is killed.
    pool = RewardPool(1)
    try:
        pool.start()
        start = time.monotonic()
        results = pool.run([(f"{HERE}:sleepy", {}, "x", "p", {})] * 3, timeout_s=1.0)
        elapsed = time.monotonic() - start
    finally:
        pool.close()
    assert [r.status for r in results] == ["timeout"] * 3
    assert 3.0 <= elapsed < 3.0 + 3 * 1.5, elapsed  # 3 x 1 s plus a worker restart after each kill


def test_raising_reward_is_counted_and_logged_once(caplog):
    specs = [RewardSpec(f"{HERE}:buggy"), RewardSpec("tag_count")]
    with RewardCombiner(specs, on_error=-0.5) as combine, caplog.at_level(logging.WARNING, logger="rewards.combine"):
        out = combine(["a", "b", "c"], ["p"] * 3, {})
        out2 = combine(["a"], ["p"], {})
    assert out.failures[f"{HERE}:buggy"] == 3 and out2.failures[f"{HERE}:buggy"] == 1
    assert out.total == [-0.5, -0.5, -0.5]
    warnings = [r for r in caplog.records if "buggy" in r.getMessage()]
    assert len(warnings) == 1 and "RuntimeError: buggy reward" in warnings[0].getMessage()


@pytest.mark.parametrize("fn", ["nan_reward", "wrong_length", "crash"])
def test_invalid_results_are_failures(fn, caplog):
    with RewardCombiner([RewardSpec(f"{HERE}:{fn}")], on_error=0.25) as combine, caplog.at_level(logging.WARNING):
        out = combine(["a", "b"], ["p", "p"], {})
        assert out.per_reward[f"{HERE}:{fn}"] == [0.25, 0.25] and out.failures[f"{HERE}:{fn}"] == 2
        assert out.applicable == [True, True] and out.skipped[f"{HERE}:{fn}"] == [False, False]
        assert any(fn in r.getMessage() for r in caplog.records)
        if fn == "crash":  # dead workers were replaced
            ok = RewardCombiner([RewardSpec("math_accuracy")])
            assert ok(["\\boxed{2}"], ["p"], {"answer": ["2"]}).total == [1.0]
            ok.close()


def test_pooled_none_is_skipped_silently(caplog):
    # A custom (pooled) reward returning None and math_accuracy with an unusable gold: skipped, no failure, no warning.
    specs = [RewardSpec(f"{HERE}:not_applicable", weight=0.0), RewardSpec("math_accuracy")]
    with RewardCombiner(specs, on_error=0.25) as combine, caplog.at_level(logging.WARNING):
        out = combine([r"\boxed{2}", r"\boxed{17}"], ["p", "p"], {"answer": ["2", "see the figure"]})
    assert out.skipped == {f"{HERE}:not_applicable": [True, True], "math_accuracy": [False, True]}
    assert out.total[0] == 1.0 and math.isnan(out.total[1]) and out.applicable == [True, False]
    assert sum(out.failures.values()) == 0 and not caplog.records


def test_combiner_from_a_non_main_thread():
    specs = [RewardSpec("math_accuracy"), RewardSpec(f"{HERE}:sleepy")]
    result: dict = {}

    def target():
        with RewardCombiner(specs, timeout_s=1.0) as combine:
            start = time.monotonic()
            result["out"] = combine([r"\boxed{\frac{2}{4}}"], ["p"], {"answer": ["1/2"]})
            result["elapsed"] = time.monotonic() - start

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    out = result["out"]
    assert out.per_reward["math_accuracy"] == [1.0] and out.timeouts[f"{HERE}:sleepy"] == 1
    assert result["elapsed"] < 5.0  # includes the lazy start of 2 workers


def _combine_in_worker(queue):
    specs = [RewardSpec("math_accuracy"), RewardSpec(f"{HERE}:sleepy")]
    with RewardCombiner(specs, timeout_s=1.0) as combine:
        combine.start()
        start = time.monotonic()
        out = combine([r"\boxed{3}"], ["p"], {"answer": ["3"]})
        queue.put((out.total, out.timeouts, time.monotonic() - start))


def test_combiner_inside_a_daemonic_worker_process():
    # Daemonic multiprocessing workers may not start multiprocessing children; our Popen workers are fine.
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_combine_in_worker, args=(queue,), daemon=True)
    proc.start()
    total, timeouts, elapsed = queue.get(timeout=60)
    proc.join(timeout=10)
    assert total == [1.0] and timeouts[f"{HERE}:sleepy"] == 1 and elapsed < 3.0


def test_pooled_rewards_survive_adversarial_text():
    from tests.test_rewards import ADVERSARIAL

    specs = [
        RewardSpec("math_accuracy"),
        RewardSpec("cosine_length"),
        RewardSpec("code_exec", kwargs={"time_limit_s": 1.0}),
    ]
    texts = list(ADVERSARIAL.values())
    n = len(texts)
    columns = {"answer": ["42"] * n, "tests": [["assert add(1, 2) == 3"]] * n}
    with RewardCombiner(specs, timeout_s=5.0, num_workers=2) as combine:
        start = time.monotonic()
        out = combine(texts, ["p"] * n, columns)
        elapsed = time.monotonic() - start
    for name, scores in out.per_reward.items():
        assert len(scores) == n and all(math.isfinite(s) for s in scores), name
    assert out.per_reward["code_exec"] == [0.0] * n  # no text defines add(); loops time out, forks are denied
    assert out.per_reward["math_accuracy"][list(ADVERSARIAL).index("chat_messages")] == 1.0
    assert elapsed < 30.0


# ------------------------------------------------------------------------------------------------------ config errors
@pytest.mark.parametrize(
    "specs, kwargs, message",
    [
        ([RewardSpec("math_acuracy")], {}, "Allowed names"),
        ([RewardSpec("tag_count"), RewardSpec("tag_count")], {}, "unique"),
        ([RewardSpec("overlong_penalty", kwargs={"max_lenn": 10})], {}, "unknown option"),
        ([RewardSpec("repetition_penalty", kwargs={"max_penalty": 1.0})], {}, "max_penalty"),
        ([RewardSpec("cosine_length", kwargs={"correctness": "vibes"})], {}, "correctness"),
        ([RewardSpec("tag_count", weight=float("nan"))], {}, "weight"),
        ([RewardSpec("tag_count")], {"timeout_s": 0}, "timeout_s"),
    ],
)
def test_config_errors_raise_at_construction(specs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        RewardCombiner(specs, **kwargs)


def test_column_length_mismatch_is_a_caller_error():
    with RewardCombiner([RewardSpec("tag_count")]) as combine:
        with pytest.raises(ValueError, match="answer"):
            combine(["a", "b"], ["p", "p"], {"answer": ["1"]})
        with pytest.raises(ValueError, match="prompts"):
            combine(["a", "b"], ["p"], {})


def test_close_stops_workers():
    combine = RewardCombiner([RewardSpec("math_accuracy")], num_workers=2)
    combine.start()
    procs = [w.proc for w in combine._pool._workers]
    assert len(procs) == 2 and all(p.poll() is None for p in procs)
    combine.close()
    assert all(p.poll() is not None for p in procs)
