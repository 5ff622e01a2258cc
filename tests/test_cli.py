"""End to end through the command line: `python -m train` on configs/smoke.yaml, and bad input."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from helpers import REPO, SMOKE, assert_trained_run, read_jsonl, run_train



@pytest.mark.slow
def test_smoke_cli_trains_and_writes_run_dir(tmp_path):
    result = run_train(["--config", str(SMOKE), "max_steps=3", f"output_dir={tmp_path}", "run_name=smoke", "log.num_samples=2"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "thinkrl: done" in result.stdout
    metrics = assert_trained_run(tmp_path / "smoke", steps=3)
    assert metrics[0]["lr"] < metrics[-1]["lr"]  # warmup_steps=2 in configs/smoke.yaml
    # Held-out evaluation before training (step 0) and at the end, on 64 prompts.
    baseline = read_jsonl(tmp_path / "smoke" / "metrics.jsonl")[0]
    assert baseline["step"] == 0 and "loss" not in baseline
    for record in (baseline, metrics[-1]):
        assert record["eval/num_prompts"] == 64
        assert 0 <= record["eval/pass@1"] <= record["eval/pass@4"] <= 1
    assert "eval/pass@1" not in metrics[0]  # eval.every=0: only at the start and the end
    assert sorted(p.name for p in (tmp_path / "smoke" / "report").glob("*.png"))[:2] == ["accuracy.png", "completion_length.png"]


@pytest.mark.slow
def test_beta_and_iterations_cli(tmp_path):
    """The KL path (reference model) and num_iterations=2 (old log-probs kept) run end to end."""
    result = run_train([
        "--config", str(SMOKE), "max_steps=2", f"output_dir={tmp_path}", "run_name=kl", "grpo.beta=0.04",
        "grpo.num_iterations=2", "grpo.loss_type=grpo", "grpo.scale_rewards=batch", "eval.source=null",
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_jsonl(tmp_path / "kl" / "metrics.jsonl")
    assert all("kl" in m and m["kl"] >= 0 for m in metrics)
    assert metrics[-1]["kl"] > 0  # after the first update the policy has moved away from the reference


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["grpo.loss_type=ppo"], "grpo.loss_type"),
        (["model.tiny=null", "model.name_or_path=/nonexistent/model"], "/nonexistent/model"),
        (["data.source=/nonexistent/data.jsonl"], "/nonexistent/data.jsonl"),
        (["rewards.functions=[{name: no_such_reward}]"], "no_such_reward"),
        (["data.answer_column=solution"], "solution"),
        (["data.max_prompt_length=40"], "longer than data.max_prompt_length=40 tokens (row 0:"),
        (["checkpoint.resume=/nonexistent/ckpt"], "no checkpoint there"),
        pytest.param(["model.dtype=float16"], "model.dtype: float16 needs a GPU",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 works on GPU")),
        (["deepspeed.config_file=configs/deepspeed/zero3.json"], "sets zero_optimization.stage=3"),
    ],
)
def test_bad_input_exits_with_one_clear_line(tmp_path, overrides, message):
    result = run_train(["--config", str(SMOKE), f"output_dir={tmp_path}", *overrides], timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("thinkrl: error:")]
    assert errors and message in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir()), "nothing is written when the input is bad"


@pytest.mark.parametrize(
    "env, message",
    [({"RANK": "0", "WORLD_SIZE": "two", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"}, "WORLD_SIZE='two' is not an integer"),
     ({"RANK": "3", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"}, "RANK=3 is outside"),
     ({"RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR is not set")],
)
def test_bad_launcher_environment(tmp_path, env, message):
    command = [sys.executable, "-m", "train", "--config", str(SMOKE), f"output_dir={tmp_path}"]
    full_env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    result = subprocess.run(command, cwd=REPO, env={**full_env, **env}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not any(tmp_path.iterdir())


@pytest.mark.slow
def test_rows_with_an_unusable_gold_answer_are_left_out_not_scored_zero(tmp_path):
    """Half the prompts carry a gold answer no reward can read ("see the figure"): their groups are counted in
    reward_skipped/NAME and excluded_group_fraction, the run trains on the rest with finite metrics, and held-out
    prompts with such a gold are left out of the eval means (issue 13, point 1, through the trainer)."""
    rows = [{"prompt": f"What is {a} + {a + 1}?", "answer": str(2 * a + 1) if a % 2 else "see the figure"} for a in range(40)]
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run_train([
        "--config", str(SMOKE), f"output_dir={tmp_path}", "run_name=mixed", "max_steps=3", f"data.source={data}",
        f"eval.source={data}", "eval.limit=8", "eval.k=1", "data.limit=40",
        "rewards.preflight_max_bad_fraction=0.5",  # the reward preflight would stop a run with this many unusable golds
        "rewards.functions=[{name: arithmetic_accuracy, weight: 1.0}, {name: tag_count, weight: 0.25}]",
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_jsonl(tmp_path / "mixed" / "metrics.jsonl")
    steps = [r for r in records if r["step"] > 0]
    assert sum(r["reward_skipped/arithmetic_accuracy"] for r in steps) > 0
    assert all(r["reward_skipped/arithmetic_accuracy"] == 4 * round(r["excluded_group_fraction"] * 4) for r in steps)
    for r in steps:
        assert math.isfinite(r["loss"]) and r["reward_failures/arithmetic_accuracy"] == 0
        assert r["excluded_group_fraction"] == 1.0 or math.isfinite(r["reward/mean"])
    assert records[0]["eval/num_not_applicable"] > 0
    assert records[0]["eval/num_prompts"] + records[0]["eval/num_not_applicable"] == 8
