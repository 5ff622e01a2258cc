"""reasoning-gym as a data source (`reasoning_gym:TASK?...`, composite) and as a reward (its tasks' own verifiers)."""

import doctest
import json

import pytest

pytest.importorskip("reasoning_gym")

import rewards.gym_verifier as rg_reward
from data.gym_tasks import SEED_STRIDE, load_reasoning_gym
from data.sources import load_prompt_dataset
from rewards import REWARD_FNS, RewardCombiner, RewardSpec
from rewards.combine import INLINE_REWARDS

from helpers import ADVERSARIAL, SMOKE, run_train

ARITHMETIC = "reasoning_gym:basic_arithmetic?size=40&seed=0&max_terms=2&max_digits=1&operators=+,-&allow_negation=false"


def tagged(answer: str) -> str:
    return f"<think>easy</think> <answer>{answer}</answer>"


def test_source_rows_are_plain_and_carry_the_entry():
    ds = load_prompt_dataset(ARITHMETIC)
    assert ds.column_names == ["prompt", "answer", "rg_task", "rg_entry"] and len(ds) == 40
    row = ds[0]
    record = json.loads(row["rg_entry"])
    assert row["rg_task"] == record["task"] == "basic_arithmetic"
    assert record["entry"]["question"] == row["prompt"] and record["entry"]["answer"] == row["answer"]
    # Options are applied, and "+" in the query is a plus sign, not a space (parse_qsl would decode it to " ").
    assert record["options"]["operators"] == "+,-"
    assert all(json.loads(e)["entry"]["metadata"]["num_terms"] == 2 for e in ds["rg_entry"])
    assert not any("*" in p or "/" in p for p in ds["prompt"])
    # The same source is the same data.
    assert load_prompt_dataset(ARITHMETIC)["prompt"] == ds["prompt"]


def test_seeds_are_disjoint_streams():
    """reasoning-gym draws row i from Random(seed + i): its seeds 1 and 2 share all rows but one. Ours do not."""
    import reasoning_gym

    native = [e["question"] for e in reasoning_gym.create_dataset("basic_arithmetic", size=20, seed=1)]
    native_next = [e["question"] for e in reasoning_gym.create_dataset("basic_arithmetic", size=20, seed=2)]
    assert native[1:] == native_next[:-1]  # the pitfall
    train = load_reasoning_gym("reasoning_gym:basic_arithmetic?size=200&seed=0")
    held_out = load_reasoning_gym("reasoning_gym:basic_arithmetic?size=200&seed=1")
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held_out}
    assert held_out[0]["prompt"] == reasoning_gym.create_dataset("basic_arithmetic", size=1, seed=SEED_STRIDE)[0]["question"]


def test_composite_mixes_tasks_by_weight_with_their_own_options():
    rows = load_reasoning_gym(
        "reasoning_gym:composite?tasks=leg_counting:1,basic_arithmetic:3&size=200&seed=0"
        "&leg_counting.min_animals=1&leg_counting.max_animals=2&basic_arithmetic.max_terms=2"
    )
    tasks = [r["rg_task"] for r in rows]
    assert set(tasks) == {"leg_counting", "basic_arithmetic"}
    assert 0.6 < tasks.count("basic_arithmetic") / len(tasks) < 0.9  # weight 3 of 4
    for row in rows:
        record = json.loads(row["rg_entry"])
        assert record["entry"]["metadata"]["source_dataset"] == row["rg_task"] == record["task"]
        if row["rg_task"] == "leg_counting":
            assert record["options"] == {"min_animals": "1", "max_animals": "2"}
            assert record["entry"]["metadata"]["num_animals"] <= 2
        else:
            assert record["options"] == {"max_terms": "2"} and record["entry"]["metadata"]["num_terms"] == 2
    # Every row scores 1.0 with its own answer, through the reward.
    scores = rg_reward.reasoning_gym([tagged(r["answer"]) for r in rows], rg_entry=[r["rg_entry"] for r in rows])
    assert scores == [1.0] * len(rows)


@pytest.mark.parametrize(
    "source, message",
    [
        ("reasoning_gym:leg_countin", "unknown reasoning_gym task 'leg_countin'; allowed: ab, acre"),
        ("reasoning_gym:leg_counting?max_legs=4", "no option 'max_legs'; allowed: size, seed, min_animals, max_animals"),
        ("reasoning_gym:leg_counting?max_animals=two", "option 'max_animals' of task 'leg_counting': cannot read 'two'"),
        ("reasoning_gym:leg_counting?min_animals=5&max_animals=2", "task 'leg_counting' rejects options"),
        ("reasoning_gym:basic_arithmetic?format_style=fancy", "allowed: simple, natural"),
        ("reasoning_gym:leg_counting?size=0", "size must be in [1, "),
        ("reasoning_gym:composite?size=10", "composite needs tasks=TASK:WEIGHT"),
        ("reasoning_gym:composite?tasks=leg_counting:1,nope:2", "unknown reasoning_gym task 'nope'"),
        ("reasoning_gym:composite?tasks=leg_counting:0", "weight of task 'leg_counting' must be > 0"),
        ("reasoning_gym:composite?tasks=leg_counting:1&gcd.max_value=3", "a task in tasks (leg_counting); got 'gcd.max_value'"),
        ("reasoning_gym:composite?tasks=leg_counting:1&leg_counting.max_legs=3", "task 'leg_counting' has no option 'max_legs'"),
        ("reasoning_gym:arc_agi?size=2", "its entries do not survive JSON"),
    ],
)
def test_bad_sources_are_one_clear_value_error(source, message):
    with pytest.raises(ValueError) as info:
        load_prompt_dataset(source)
    assert message in str(info.value) and str(info.value).startswith(source.split("?")[0])


def test_reward_scores_with_the_tasks_own_verifier_and_never_raises():
    rows = load_reasoning_gym("reasoning_gym:number_sorting?size=4&seed=0&max_numbers=3")
    entry, gold = rows[0]["rg_entry"], rows[0]["answer"]
    assert REWARD_FNS["reasoning_gym"] is rg_reward.reasoning_gym
    assert rg_reward.score(tagged(gold), entry) == 1.0
    assert rg_reward.score(tagged(gold.replace("'", '"')), entry) == 1.0  # the verifier's own leniency
    hostile = [gold, "<answer>", "<answer>[1, 2</answer>", tagged("x" * 100_000), tagged("__import__('os')"),
               None, [{"role": "assistant", "content": "<answer>[]</answer>"}], 42, tagged("<answer>" * 1000)]
    assert rg_reward.reasoning_gym(hostile, rg_entry=[entry] * len(hostile)) == [0.0] * len(hostile)
    for source in ("reasoning_gym:number_sorting?size=1", ARITHMETIC):
        entry = load_reasoning_gym(source)[0]["rg_entry"]
        for fallback in ("none", "last_number"):
            scores = rg_reward.reasoning_gym(list(ADVERSARIAL.values()), rg_entry=[entry] * len(ADVERSARIAL), fallback=fallback)
            assert all(s is not None and 0.0 <= s <= 1.0 for s in scores), scores
    # An unusable row is "not applicable" (None, counted by the combiner), not a wrong answer.
    unusable = ["", "{", json.dumps({"task": "nope", "options": {}, "entry": {}}), json.dumps([1]), None]
    assert rg_reward.reasoning_gym([tagged(gold)] * 5, rg_entry=unusable) == [None] * 5
    with pytest.raises(ValueError, match="needs the dataset column 'rg_entry'"):
        rg_reward.reasoning_gym([tagged(gold)])
    result = doctest.testmod(rg_reward)
    assert result.failed == 0 and result.attempted > 0


def test_last_number_fallback_for_models_that_ignore_the_tags():
    rows = load_reasoning_gym("reasoning_gym:leg_counting?size=2&seed=0")
    entry, gold = rows[0]["rg_entry"], rows[0]["answer"]
    untagged = [f"2 cats have 8 legs, so {gold}.", f"{gold} legs", "no number", tagged("0") + f" {gold}"]
    assert rg_reward.reasoning_gym(untagged, rg_entry=[entry] * 4) == [0.0] * 4
    assert rg_reward.reasoning_gym(untagged, rg_entry=[entry] * 4, fallback="last_number") == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="reasoning_gym: reward 'reasoning_gym' rejects its options|fallback must be"):
        RewardCombiner([RewardSpec("reasoning_gym", kwargs={"fallback": "first_number"})])


def test_partial_credit_can_be_switched_off():
    # letter_counting's default verifier pays len(gold) / len(answer) for a gold inside a longer answer: "12" takes 0.5
    # when the count is 1 or 2 (what a LoRA run of the task sweep learned to write to every prompt).
    rows = load_reasoning_gym("reasoning_gym:letter_counting?size=40&seed=1")
    entries = [row["rg_entry"] for row in rows if row["answer"] in ("1", "2")][:4]
    golds = [json.loads(entry)["entry"]["answer"] for entry in entries]
    assert len(entries) == 4
    assert rg_reward.reasoning_gym([tagged("12")] * 4, rg_entry=entries) == [0.5] * 4
    assert rg_reward.reasoning_gym([tagged("12")] * 4, rg_entry=entries, partial_credit=False) == [0.0] * 4
    assert rg_reward.reasoning_gym([tagged(g) for g in golds], rg_entry=entries, partial_credit=False) == [1.0] * 4


def test_reward_runs_in_the_pool_with_its_timeout():
    rows = load_reasoning_gym("reasoning_gym:leg_counting?size=3&seed=0")
    assert "reasoning_gym" not in INLINE_REWARDS
    completions = [tagged(rows[0]["answer"]), tagged("0"), "no tag"]
    columns = {"answer": [r["answer"] for r in rows], "rg_task": [r["rg_task"] for r in rows],
               "rg_entry": [r["rg_entry"] for r in rows]}
    with RewardCombiner([RewardSpec("reasoning_gym")], timeout_s=30, num_workers=1) as combiner:
        assert combiner._pooled == [True]
        out = combiner(completions, ["p"] * 3, columns)
    assert out.per_reward["reasoning_gym"] == [1.0, 0.0, 0.0] and out.failures["reasoning_gym"] == 0
    with pytest.raises(ValueError, match="unknown option"):
        RewardCombiner([RewardSpec("reasoning_gym", kwargs={"task": "x"})])


@pytest.mark.slow
def test_trainer_reports_a_bad_task_as_a_data_source_error(tmp_path):
    result = run_train(["--config", str(SMOKE), "data.source=reasoning_gym:leg_countin", f"output_dir={tmp_path}"])
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("thinkrl train: error:")]
    assert errors and errors[0].startswith("thinkrl train: error: data.source: reasoning_gym:leg_countin: unknown reasoning_gym task")


@pytest.mark.slow
def test_grpo_step_on_a_reasoning_gym_task(tmp_path):
    """The generic wiring: a reasoning_gym source keeps rg_entry, the reward scores it in the pool, eval uses a seed."""
    result = run_train([
        "--config", str(SMOKE), "max_steps=1", f"output_dir={tmp_path}", "run_name=rg", "log.report=false",
        "checkpoint.export_hf=false", "data.source=reasoning_gym:basic_arithmetic?size=64&seed=0&max_terms=2",
        "eval.source=reasoning_gym:basic_arithmetic?size=8&seed=1&max_terms=2", "eval.k=1",
        "rewards.functions=[{name: reasoning_gym}, {name: tag_count, weight: 0.25}]",
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = [json.loads(line) for line in (tmp_path / "rg" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 1 and metrics[-1]["reward_failures/reasoning_gym"] == 0
    assert "rewards/reasoning_gym" in metrics[-1]
