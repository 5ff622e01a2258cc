"""DAPO dynamic sampling (rollout.filter_groups, train/dynamic_sampling.py): which groups count as informative, how
rounds fill a batch, what happens at the bound, and the trainer end to end (exact resume, 2 ranks under ZeRO-3)."""

import pytest
import torch

from helpers import SMOKE, TORCHRUN, assert_same_run, read_jsonl, run_train
from rewards import RewardOutput
from train.advantages import informative_groups
from train.batch import RolloutBatch
from train.dynamic_sampling import ON_LIMIT, DynamicSamplingLimit, SampledGroups, concat_groups, fill_with_informative_groups

PAD = 0


def part(group_rewards: list[list[float]], *, prompt_length: int, completion_length: int, tag: str) -> SampledGroups:
    """B groups with the given rewards; prompt and completion token ids encode (group, row) so padding is checkable."""
    G = len(group_rewards[0])
    N = len(group_rewards) * G
    prompt = torch.arange(1, prompt_length + 1).repeat(N, 1)
    completion = torch.arange(100, 100 + completion_length).repeat(N, 1)
    mask = torch.ones(N, completion_length, dtype=torch.long)
    total = [r for group in group_rewards for r in group]
    return SampledGroups(
        prompt_texts=[f"{tag}{b}" for b in range(len(group_rewards))],
        columns={"answer": [f"{tag}{b}" for b in range(len(group_rewards))]},
        rollout=RolloutBatch(
            input_ids=torch.cat([prompt, completion], 1), attention_mask=torch.ones(N, prompt_length + completion_length, dtype=torch.long),
            completion_mask=mask, prompt_length=prompt_length, group_size=G,
            completion_texts=[f"{tag}{i // G}.{i % G}" for i in range(N)], truncated=torch.zeros(N, dtype=torch.bool),
        ),
        scored=RewardOutput(total=total, per_reward={"r": total}, failures={"r": 1}, timeouts={"r": 0},
                            skipped={"r": [False] * N}, applicable=[True] * N),
    )


def test_informative_groups_need_spread_and_every_row_judged():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 1.0, 0.0, 0.2, 0.3])
    valid = torch.tensor([True, True, True, True, True, False, True, True])
    assert informative_groups(rewards, 2, valid).tolist() == [True, False, False, True]
    assert informative_groups(rewards, 4).tolist() == [True, True]


def test_concat_pads_prompts_left_and_completions_right():
    a = part([[1.0, 0.0]], prompt_length=3, completion_length=2, tag="a")
    b = part([[0.0, 1.0]], prompt_length=5, completion_length=4, tag="b")
    joined = concat_groups([a, b], PAD)
    r = joined.rollout
    assert r.prompt_length == 5 and r.completion_mask.shape == (4, 4)
    assert r.input_ids[0].tolist() == [PAD, PAD, 1, 2, 3, 100, 101, PAD, PAD]
    assert r.attention_mask[0].tolist() == [0, 0, 1, 1, 1, 1, 1, 0, 0]
    assert r.completion_mask[0].tolist() == [1, 1, 0, 0]
    assert r.input_ids[2].tolist() == [1, 2, 3, 4, 5, 100, 101, 102, 103]
    assert joined.prompt_texts == ["a0", "b0"] and joined.columns["answer"] == ["a0", "b0"]
    assert joined.scored.total == [1.0, 0.0, 0.0, 1.0] and joined.scored.failures == {"r": 2}
    assert r.completion_ids.shape == (4, 4)


def test_rounds_fill_the_batch_with_informative_groups_first():
    rounds = iter([
        part([[1, 1], [0, 1], [0, 0]], prompt_length=2, completion_length=2, tag="a"),  # 1 informative (a1)
        part([[1, 0], [1, 1], [0, 1]], prompt_length=3, completion_length=3, tag="b"),  # 2 informative: b0, then b2
    ])
    batch, metrics = fill_with_informative_groups(lambda: next(rounds), max_num_gen_batches=4, on_limit="pad", pad_token_id=PAD)
    assert batch.prompt_texts == ["a1", "b0", "b2"]
    assert batch.rollout.completion_texts == ["a1.0", "a1.1", "b0.0", "b0.1", "b2.0", "b2.1"]
    assert informative_groups(torch.tensor(batch.scored.total, dtype=torch.float32), 2).all()
    assert metrics == {"filter_groups/rounds": 2.0, "filter_groups/groups_drawn": 6.0, "filter_groups/groups_informative": 3.0,
                       "filter_groups/groups_padded": 0.0, "filter_groups/hit_limit": 0.0}


def test_surplus_informative_groups_are_dropped():
    rounds = iter([part([[1, 0], [1, 0], [1, 0]], prompt_length=2, completion_length=2, tag="a")])
    batch, metrics = fill_with_informative_groups(lambda: next(rounds), max_num_gen_batches=1, on_limit="error", pad_token_id=PAD)
    assert batch.prompt_texts == ["a0", "a1", "a2"] and metrics["filter_groups/rounds"] == 1.0


def test_at_the_bound_pad_fills_with_zero_spread_groups_and_error_stops():
    def draws():
        return iter([part([[1, 1], [0, 1]], prompt_length=2, completion_length=2, tag="a"),
                     part([[0, 0], [2, 2]], prompt_length=2, completion_length=2, tag="b")])

    rounds = draws()
    batch, metrics = fill_with_informative_groups(lambda: next(rounds), max_num_gen_batches=2, on_limit="pad", pad_token_id=PAD)
    assert batch.prompt_texts == ["a1", "a0"]  # the informative group, then the first zero-spread one drawn
    assert metrics["filter_groups/hit_limit"] == 1.0 and metrics["filter_groups/groups_padded"] == 1.0
    assert metrics["filter_groups/groups_drawn"] == 4.0 and metrics["filter_groups/groups_informative"] == 1.0
    rounds = draws()
    with pytest.raises(DynamicSamplingLimit, match="max_num_gen_batches=2"):
        fill_with_informative_groups(lambda: next(rounds), max_num_gen_batches=2, on_limit="error", pad_token_id=PAD)


def test_tool_time_counts_every_round_once():
    """Tool seconds (tools/time, time/tool_wait) add up over every round drawn: once each, whether a round's groups
    were kept, kept as padding or dropped. Round a gives a kept group and a spare one; round b is dropped whole."""
    a = part([[1, 1], [0, 1]], prompt_length=2, completion_length=2, tag="a")
    b = part([[0, 0], [1, 1]], prompt_length=2, completion_length=2, tag="b")
    a.rollout.tool_seconds, b.rollout.tool_seconds = {"tools": 1.0, "tool_wait": 0.5}, {"tools": 2.0, "tool_wait": 0.25}
    rounds = iter([a, b])
    batch, _ = fill_with_informative_groups(lambda: next(rounds), max_num_gen_batches=2, on_limit="pad", pad_token_id=PAD)
    assert batch.prompt_texts == ["a1", "a0"]  # round a's groups twice over (kept, then padding), round b's not at all
    assert batch.rollout.tool_seconds == {"tools": 3.0, "tool_wait": 0.75}


def test_config_allows_the_modules_on_limit_values():
    from typing import get_args

    from train.config import FilterGroupsConfig

    assert get_args(FilterGroupsConfig.model_fields["on_limit"].annotation) == ON_LIMIT


FILTER = ["eval.source=null", "rewards.functions=[{name: 'tests.fault_rewards:half_the_prompts'}]", "optim.lr=3e-3",
          "rollout.filter_groups={enable: true, max_num_gen_batches: 4}"]


@pytest.mark.slow
def test_filter_groups_run_trains_on_informative_groups_and_resumes_exactly(tmp_path):
    common = ["--config", str(SMOKE), *FILTER, "max_steps=4", "checkpoint.every=2", f"output_dir={tmp_path}"]
    straight = run_train([*common, "run_name=straight"])
    assert straight.returncode == 0, straight.stderr[-3000:]
    records = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for r in records:
        assert r["filter_groups/groups_drawn"] == 4 * r["filter_groups/rounds"]
        if not r["filter_groups/hit_limit"]:
            assert r["zero_std_fraction"] == 0.0 and r["filter_groups/groups_informative"] >= 4
    assert sum(r["filter_groups/rounds"] for r in records) > 4, "half the groups have no spread: more rounds are needed"
    first = run_train([*common, "run_name=split", "max_steps=2"])
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_train([*common, "run_name=split", "checkpoint.resume=auto"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert_same_run(tmp_path / "straight", tmp_path / "split")  # the sampler's state counts the extra draws


@pytest.mark.slow
def test_filter_groups_bound_pads_or_stops(tmp_path):
    common = ["--config", str(SMOKE), *FILTER, "max_steps=2", f"output_dir={tmp_path}",
              "rollout.filter_groups.max_num_gen_batches=1", "checkpoint.export_hf=false", "log.report=false"]
    padded = run_train([*common, "run_name=pad"])
    assert padded.returncode == 0, padded.stderr[-3000:]
    records = read_jsonl(tmp_path / "pad" / "metrics.jsonl")
    assert any(r["filter_groups/hit_limit"] == 1.0 and r["filter_groups/groups_padded"] > 0 and r["zero_std_fraction"] > 0 for r in records)
    stopped = run_train([*common, "run_name=error", "rollout.filter_groups.on_limit=error"])
    assert stopped.returncode == 3
    assert stopped.stderr.strip().splitlines()[-1].startswith("thinkrl train: stopped: rollout.filter_groups:")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_filter_groups_on_two_ranks_under_zero3(tmp_path):
    """Ranks need different numbers of rounds for their own groups, yet make the same number (ZeRO-3 generation is
    lock-step: a rank that stopped early would hang the others)."""
    result = run_train(["--config", str(SMOKE), *FILTER, "max_steps=2", f"output_dir={tmp_path}", "run_name=z3",
                        "deepspeed.zero_stage=3", "checkpoint.export_hf=false", "log.report=false"], launcher=TORCHRUN, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_jsonl(tmp_path / "z3" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    for r in records:  # summed over 2 ranks of 2 prompts each: 4 groups per round
        assert r["filter_groups/groups_drawn"] == 4 * r["filter_groups/rounds"]
