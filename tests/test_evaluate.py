"""Held-out evaluation: the pass@k estimator and the aggregation on hand-worked numbers, evaluate() on the tiny model,
and the `python -m train.evaluate` CLI on a saved tiny checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rewards import RewardCombiner, RewardSpec
from train.evaluate import evaluate, main, metrics_from_sums, pass_at_k, prompt_metrics, sum_per_prompt
from train.rollout import SamplingParams, generate_rollouts

from helpers import child_env, encode_prompts, make_tiny_model

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
PROMPTS = ["What is 2 + 3? <think>", "What is 10 + 7? <think>", "What is 4 + 4? <think>"]
COLUMNS = {"answer": ["5", "17", "8"]}


# --- pass@k: Chen et al. 2021 eq. 1, pass@k = 1 - C(n-c, k) / C(n, k)

@pytest.mark.parametrize("n, c, k, expected", [
    (5, 2, 2, 0.7),          # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (4, 2, 2, 5 / 6),        # 1 - C(2,2)/C(4,2) = 1 - 1/6
    (10, 3, 1, 0.3),         # k = 1: c/n
    (4, 0, 4, 0.0),          # nothing correct
    (4, 1, 4, 1.0),          # n = k: 1 as soon as one sample is correct
    (200, 1, 100, 0.5),      # 1 - C(199,100)/C(200,100) = 1 - 100/200; large n stays stable (product form)
])
def test_pass_at_k_hand_worked(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n, c, k", [(4, 5, 2), (4, 1, 0), (4, 1, 5), (3, -1, 1)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


# --- aggregation, model-free

def _per_prompt(greedy_correct, sampled_correct):
    B = len(greedy_correct)
    return prompt_metrics(
        greedy_correct=greedy_correct, greedy_total=[1.5 * c for c in greedy_correct],
        greedy_rewards={"acc": [float(c) for c in greedy_correct]}, greedy_lengths=[4] * B,
        greedy_truncated=[False] * B, sampled_correct=sampled_correct,
    )


def test_perfect_model_scores_one_everywhere():
    per_prompt = _per_prompt([True] * 3, [[True] * 4] * 3)
    metrics = metrics_from_sums(*sum_per_prompt(per_prompt))
    assert metrics["eval/pass@1"] == metrics["eval/pass@4"] == metrics["eval/mean@4"] == 1.0
    assert metrics["eval/rewards/acc"] == 1.0 and metrics["eval/reward"] == 1.5
    assert metrics["eval/truncated_fraction"] == 0.0 and metrics["eval/completion_length"] == 4.0
    assert metrics["eval/num_prompts"] == 3


def test_mixed_correctness_hand_worked():
    # Prompt 0: greedy right, samples 1/4 right; prompt 1: greedy wrong, 0/4; prompt 2: greedy wrong, 3/4.
    per_prompt = _per_prompt([True, False, False], [[True, False, False, False], [False] * 4, [True, True, False, True]])
    metrics = metrics_from_sums(*sum_per_prompt(per_prompt))
    assert per_prompt["eval/pass@4"] == [1.0, 0.0, 1.0]
    assert metrics["eval/pass@1"] == pytest.approx(1 / 3)
    assert metrics["eval/pass@4"] == pytest.approx(2 / 3)  # 2 of 3 prompts have >= 1 correct sample
    assert metrics["eval/mean@4"] == pytest.approx((1 / 4 + 0 + 3 / 4) / 3)  # = 1/3


def test_no_sampling_has_no_pass_at_k_keys():
    metrics = metrics_from_sums(*sum_per_prompt(_per_prompt([True, False], None)))
    assert not any(key.startswith(("eval/pass@4", "eval/mean@")) for key in metrics)
    assert metrics["eval/pass@1"] == 0.5


def test_shards_of_unequal_size_combine_exactly():
    """What the trainer does across ranks: all-reduce the sums and counts, then divide."""
    greedy = [True, False, False, True, True]
    sampled = [[True, False], [False, False], [True, True], [False, True], [True, True]]
    full = metrics_from_sums(*sum_per_prompt(_per_prompt(greedy, sampled)))
    shard_a, count_a = sum_per_prompt(_per_prompt(greedy[:2], sampled[:2]))  # rank 0: 2 prompts
    shard_b, count_b = sum_per_prompt(_per_prompt(greedy[2:], sampled[2:]))  # rank 1: 3 prompts
    combined = metrics_from_sums({key: shard_a[key] + shard_b[key] for key in shard_a}, count_a + count_b)
    assert combined == full


def test_metrics_from_sums_needs_prompts():
    with pytest.raises(ValueError, match="no prompts"):
        metrics_from_sums({}, 0)


# --- evaluate() with the tiny model

@pytest.fixture(scope="module")
def tiny(tokenizer):
    return make_tiny_model(tokenizer, max_position_embeddings=1024)


def _combiner():
    return RewardCombiner([RewardSpec("arithmetic_accuracy"), RewardSpec("format_lenient", weight=0.5), RewardSpec("tag_count")])


def _evaluate(model, tokenizer, **overrides):
    kwargs = dict(accuracy_reward="arithmetic_accuracy", k=3, batch_size=4, device="cpu", num_samples=2,
                  sampling=SamplingParams(max_completion_length=8, temperature=1.0, top_p=1.0, top_k=0))
    kwargs.update(overrides)
    with _combiner() as combiner:
        return evaluate(model, tokenizer, encode_prompts(tokenizer, PROMPTS), PROMPTS, COLUMNS, combiner, **kwargs)


def test_evaluate_metrics_keys_and_shapes(tokenizer, tiny):
    result = _evaluate(tiny, tokenizer)
    expected = {"eval/pass@1", "eval/pass@3", "eval/mean@3", "eval/reward", "eval/rewards/arithmetic_accuracy",
                "eval/rewards/format_lenient", "eval/rewards/tag_count", "eval/completion_length",
                "eval/truncated_fraction", "eval/num_prompts"}
    assert set(result.metrics) == expected
    assert result.num_prompts == 3 and result.metrics["eval/num_prompts"] == 3
    assert set(result.per_prompt) == set(result.sums) == expected - {"eval/num_prompts"}
    assert all(len(values) == 3 for values in result.per_prompt.values())
    for key in ("eval/pass@1", "eval/pass@3", "eval/mean@3", "eval/truncated_fraction"):
        assert 0.0 <= result.metrics[key] <= 1.0
    assert 1 <= result.metrics["eval/completion_length"] <= 8
    assert result.metrics["eval/pass@3"] >= result.metrics["eval/mean@3"]  # any-correct >= average-correct
    assert len(result.samples) == 2
    assert {"prompt", "completion", "reward", "correct", "arithmetic_accuracy", "tag_count"} <= set(result.samples[0])
    assert result.samples[0]["prompt"] == PROMPTS[0]


def test_evaluate_k1_skips_sampling(tokenizer, tiny):
    result = _evaluate(tiny, tokenizer, k=1)
    assert not any("@" in key and key != "eval/pass@1" for key in result.metrics)


def test_greedy_is_deterministic_and_leaves_rng_alone(tokenizer, tiny):
    rng_before = torch.get_rng_state()
    first = _evaluate(tiny, tokenizer, seed=0, k=1, num_samples=3)
    assert torch.equal(torch.get_rng_state(), rng_before)  # sampling ran under fork_rng
    second = _evaluate(tiny, tokenizer, seed=123, k=1, num_samples=3, batch_size=1)  # other seed and batching
    assert [s["completion"] for s in first.samples] == [s["completion"] for s in second.samples]
    # ... and it is really greedy: the same text as transformers' own greedy decoding.
    encoded = tokenizer(PROMPTS[1:2], return_tensors="pt")
    out = tiny.generate(**encoded, do_sample=False, max_new_tokens=8, temperature=None, top_p=None, top_k=None)
    assert first.samples[1]["completion"] == tokenizer.decode(out[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True)


def _sampled_texts(monkeypatch, model, tokenizer, seed):
    """The k sampled completions [B*k] of one evaluate() call, as its generation path (generate_rollouts) made them."""
    import train.evaluate

    sampled = []

    def recording(*args, do_sample, **kwargs):
        batch = generate_rollouts(*args, do_sample=do_sample, **kwargs)
        if do_sample:  # the pass@k samples; the greedy pass has do_sample=False
            sampled.extend(batch.completion_texts)
        return batch

    monkeypatch.setattr(train.evaluate, "generate_rollouts", recording)
    _evaluate(model, tokenizer, seed=seed)
    assert len(sampled) == len(PROMPTS) * 3  # k=3 per prompt
    return sampled


def test_sampling_is_seeded(monkeypatch, tokenizer, tiny):
    """The same seed gives the same sampled texts, another seed other texts (a random model gets every prompt wrong,
    so comparing correctness would pass whatever the seeding did)."""
    a = _sampled_texts(monkeypatch, tiny, tokenizer, seed=7)
    assert len(set(a)) > 1  # really sampled: not one text repeated
    assert _sampled_texts(monkeypatch, tiny, tokenizer, seed=7) == a
    assert _sampled_texts(monkeypatch, tiny, tokenizer, seed=8) != a


def test_evaluate_rejects_unknown_accuracy_reward(tokenizer, tiny):
    with pytest.raises(ValueError, match="accuracy_reward"):
        _evaluate(tiny, tokenizer, accuracy_reward="math_accuracy")


def test_greedy_wrapper_matches_generate_rollouts_layout(tokenizer, tiny):
    """evaluate's completion lengths are generate_rollouts' mask sums (EOS included), not recomputed elsewhere."""
    result = _evaluate(tiny, tokenizer, k=1)
    batch = generate_rollouts(tiny, tokenizer, encode_prompts(tokenizer, PROMPTS), num_generations=1, device=torch.device("cpu"),
                              sampling=SamplingParams(max_completion_length=8, temperature=1.0, top_p=1.0, top_k=1))  # top_k=1 = greedy
    assert result.per_prompt["eval/completion_length"] == [float(n) for n in batch.completion_lengths.tolist()]


# --- CLI

@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, tokenizer, tiny):
    path = tmp_path_factory.mktemp("ckpt") / "final_model"
    tiny.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_cli_evaluates_saved_model(saved_model, tmp_path):
    out = tmp_path / "eval" / "out.json"
    result = subprocess.run(
        [sys.executable, "-m", "train.evaluate", "--model", str(saved_model), "--config", str(SMOKE),
         "eval.source=synthetic:arithmetic?n=16&seed=1", "rollout.max_completion_length=8", "--k", "2", "--limit", "6",
         "--output", str(out)],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "eval/pass@1" in result.stdout  # the printed table
    record = json.loads(out.read_text())
    assert record["k"] == 2 and record["accuracy_reward"] == "arithmetic_accuracy"
    assert record["source"] == "synthetic:arithmetic?n=16&seed=1"  # the eval section, as overridden
    assert record["metrics"]["eval/num_prompts"] == 6  # --limit
    assert {"eval/pass@1", "eval/pass@2", "eval/mean@2", "eval/rewards/format_lenient"} <= set(record["metrics"])
    assert len(record["per_prompt"]["eval/pass@1"]) == 6 and record["samples"]


def test_cli_bad_model_path_is_one_line_error(tmp_path, capsys):
    code = main(["--model", str(tmp_path / "nope"), "--config", str(SMOKE)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(f"thinkrl eval: error: --model {tmp_path / 'nope'}: no such file or directory") and "\n" not in err
