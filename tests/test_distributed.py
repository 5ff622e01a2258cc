"""Two processes on CPU (gloo) under torchrun: ZeRO-2 and ZeRO-3 train a few steps end to end; ZeRO-3 generation
(weights gathered once per rollout, ranks that stop at different lengths); the DeepSpeed JSON files in configs/deepspeed/."""

import json
import math
import sys
from pathlib import Path

import pytest

from helpers import SMOKE, assert_trained_run, read_jsonl, run_train

REPO = Path(__file__).resolve().parents[1]

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("zero_stage", [2, 3])
def test_torchrun_two_ranks(tmp_path, zero_stage):
    result = run_train(
        ["--config", str(SMOKE), "max_steps=2", f"output_dir={tmp_path}", "run_name=dist",
         f"deepspeed.zero_stage={zero_stage}", "rollout.prompts_per_step=4", "optim.micro_batch_size=4"],
        launcher=TORCHRUN,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = assert_trained_run(tmp_path / "dist", steps=2)
    # Each rank sampled its own 2 prompts x 4 completions; the logged statistics cover both ranks' 16 completions.
    assert all(m["completion_length/max"] >= m["completion_length/mean"] for m in metrics)
    # The held-out set is sharded over the ranks and the sums all-reduced: all 64 prompts are counted once.
    records = read_jsonl(tmp_path / "dist" / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2]
    assert records[0]["eval/num_prompts"] == 64 and records[-1]["eval/num_prompts"] == 64


# --- ZeRO-3 generation: weights gathered once per rollout, ranks of unequal lengths -----------------------------------

@pytest.fixture(scope="module")
def generation(tmp_path_factory):
    from helpers import TORCHRUN, launch_worker as _launch

    return _launch(TORCHRUN, tmp_path_factory.mktemp("generation") / "world2",
                   ["generate:gather", "generate:synced", "generate:tools"])


@pytest.mark.slow
@pytest.mark.multiprocess
def test_zero3_generation_gathers_once_per_rollout(generation):
    """rollout.gather_zero3_params=true: one all-gather per parameter when the rollout starts, none while tokens are
    generated; rank 0 stops after one token while rank 1 samples 12, and nothing hangs; the samples are those of an
    unsharded copy of the model; the engine trains afterwards (its ZeRO-3 hooks are back)."""
    from equivalence_worker import GEN_TOKENS

    ranks = generation["world2/generate:gather"]["per_rank"]
    assert [r["completion_width"] for r in ranks] == [1, GEN_TOKENS]
    for r in ranks:
        assert 0 < r["on_entry"].get("_allgather_base_", 0) <= r["num_parameters"], r
        assert not any("allgather" in name for name in r["during_generate"]), r
        assert r["same_tokens_as_unsharded"]
        assert math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0


@pytest.mark.slow
@pytest.mark.multiprocess
def test_zero3_generation_without_gather_runs_in_lock_step(generation):
    """rollout.gather_zero3_params=false: shards are all-gathered in every forward (the memory-light, slow path), so
    rank 0, done after one token, keeps stepping with rank 1 (synced_gpus) until rank 1 has its 12 tokens."""
    from equivalence_worker import GEN_TOKENS

    ranks = generation["world2/generate:synced"]["per_rank"]
    assert [r["completion_width"] for r in ranks] == [1, GEN_TOKENS]
    gathers = [r["during_generate"].get("_allgather_base_", 0) for r in ranks]
    assert gathers[0] == gathers[1] >= GEN_TOKENS  # at least one per forward, the same on both ranks
    for r in ranks:
        assert r["same_tokens_as_unsharded"]
        assert math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0


@pytest.mark.slow
@pytest.mark.multiprocess
def test_zero3_tool_rollout_equals_one_process(generation):
    """Tool rollouts under ZeRO-3 lock-step (issue 25): rank 0's rows call the tool over several rounds while rank 1's
    never do (it decodes dummy rounds to keep the lock-step, its random stream untouched); each rank's tokens, masks
    and calls equal one unsharded process sampling its prompts with its seed; the update on the tool batch trains."""
    ranks = generation["world2/generate:tools"]["per_rank"]
    assert ranks[0]["calls"] >= 2 and ranks[1]["calls"] == 0
    for r in ranks:
        assert r["same_as_unsharded"], r
        assert math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0


# --- configs/deepspeed/*.json ----------------------------------------------------------------------------------------

DS_CONFIGS = sorted((REPO / "configs" / "deepspeed").glob("*.json"))


@pytest.mark.parametrize("path", DS_CONFIGS, ids=lambda p: p.name)
def test_deepspeed_json_is_valid(dist_single, path):
    """Each file parses, merges through deepspeed.config_file (batch sizes stay thinkrl's) and passes DeepSpeed's own
    validation; its ZeRO stage is the one in its name."""
    from deepspeed.runtime.config import DeepSpeedConfig

    from helpers import engine_spec

    overrides = json.loads(path.read_text())
    stage = int(path.stem[len("zero")])
    config = engine_spec(zero_stage=stage, micro_batch_size=2, grad_accum_steps=3, overrides=overrides).deepspeed_config()
    assert config["train_batch_size"] == 6 and config["zero_force_ds_cpu_optimizer"] is False
    parsed = DeepSpeedConfig(config)
    assert parsed.zero_optimization_stage == stage
    assert parsed.zero_config.offload_optimizer is not None if "offload" in path.stem else True


def test_deepspeed_json_set_covers_the_stages():
    assert [p.name for p in DS_CONFIGS] == ["zero1.json", "zero2.json", "zero3.json", "zero3_offload.json"]


@pytest.mark.slow
def test_zero3_offload_json_trains_one_process(tmp_path):
    """configs/deepspeed/zero3_offload.json through the CLI (its 2-rank equivalence is in tests/test_equivalence.py)."""
    result = run_train([
        "--config", str(SMOKE), "max_steps=1", f"output_dir={tmp_path}", "run_name=offload", "eval.source=null",
        "deepspeed.zero_stage=3", "deepspeed.config_file=configs/deepspeed/zero3_offload.json",
    ])
    assert result.returncode == 0, result.stderr[-4000:]
    assert "ZeRO-3" in result.stdout
    assert_trained_run(tmp_path / "offload", steps=1)
