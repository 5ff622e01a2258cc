"""ZeRO 0/1/2/3 on 2 processes, one process with the same global batch, and 1x4 vs 4x1 accumulation: same training.

tests/equivalence_worker.py trains the tiny model for 3 optimiser steps on a fixed global batch (each rank takes its
rows), through the production path (train/update.py::policy_update on train/model.py's DeepSpeed engine), and saves
per-step loss and gradient norm and the final full weights. Two launches cover every case: one process (ZeRO-0 with
one micro-batch of 8, the reference; ZeRO-3 with 4 micro-batches of 2) and one torchrun with 2 ranks that runs each
case in turn in the same process group. The worker's optimiser is linear in the gradients (see its ADAM_EPS) and its
gradient clipping is active, so equal final weights mean equal gradient directions and clip coefficients at every
step; the gradient norm, compared separately, pins their scale.
"""

import sys

import pytest
import torch

from helpers import TORCHRUN, assert_same_training, launch_worker

# Case names are the worker's STAGE:MICRO_BATCH_SIZE[:FLAG...] arguments (flags: see equivalence_worker.FLAGS). With
# 2 ranks each holds 4 rows: "4" is one micro-batch of 4 (1x4), "1" four micro-batches of 1 (4x1). One process holds 8.
ONE_PROCESS = ["0:8", "3:2", "0:8:bf16", "0:8:budget", "0:8:zeroadv"]
TWO_PROCESSES = [
    "0:4", "1:4", "2:4", "3:4", "0:1", "1:1", "2:1", "3:1",
    "1:4:json", "2:1:json", "3:1:json", "3:1:json:offload", "3:1:gc", "2:4:bf16", "3:1:bf16", "2:4:budget", "3:4:budget",
    "0:1:zeroadv", "1:1:zeroadv", "2:1:zeroadv", "3:1:zeroadv",
]
REFERENCE = "world1/0:8"
# bf16: the forward in bf16 moves loss and gradient norm by ~5e-4 of their value; a wrong scale or a lost micro-batch
# moves the norm by 1e-1 or more. The weight updates (~1e-5) are below bf16's resolution: weights are not compared.
BF16_TOL = 1e-2


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("equivalence")
    return {
        **launch_worker([sys.executable], root / "world1", ONE_PROCESS),
        **launch_worker(TORCHRUN, root / "world2", TWO_PROCESSES),
    }


@pytest.mark.slow
@pytest.mark.multiprocess
def test_reference_run_is_meaningful(results):
    """The comparison has teeth: every parameter moved, clipping of the ratio and of the gradient norm was active,
    and the loss depends on the weights (it changes from step to step)."""
    reference = results[REFERENCE]
    for name, final in reference["weights"].items():
        assert not torch.equal(final, reference["initial"][name]), f"{name} did not train"
    assert all(0 < c < 1 for c in reference["clip_ratio"])
    from equivalence_worker import MAX_GRAD_NORM

    assert all(g > MAX_GRAD_NORM for g in reference["grad_norm"])
    assert len(set(reference["loss"])) == len(reference["loss"])


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("zero_stage", [0, 1, 2, 3])
def test_two_ranks_match_one_process(results, zero_stage):
    """2 ranks x 4 rows under each ZeRO stage == 1 process x 8 rows (ZeRO-0, one micro-batch)."""
    assert_same_training(results[f"world2/{zero_stage}:4"], results[REFERENCE])


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("zero_stage", [0, 1, 2, 3])
def test_accumulation_four_by_one_matches_one_by_four(results, zero_stage):
    """Four micro-batches of 1 == one micro-batch of 4 per rank (ZeRO-0/1 all-reduce at the boundary, ZeRO-2
    reduce-scatters gradient buckets as each backward produces them, ZeRO-3 accumulates its gradient partitions)."""
    assert_same_training(results[f"world2/{zero_stage}:1"], results[f"world2/{zero_stage}:4"])
    assert_same_training(results[f"world2/{zero_stage}:1"], results[REFERENCE])


@pytest.mark.slow
@pytest.mark.multiprocess
def test_zero3_accumulation_in_one_process(results):
    """ZeRO-3 with 4 micro-batches on one process. DeepSpeed advances ZeRO-3's micro-step counter in engine.forward,
    which train/logprobs.py bypasses; without train/model.py's decoder hook each micro-batch overwrote the last."""
    assert_same_training(results["world1/3:2"], results[REFERENCE])


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("case", ["world2/1:4:json", "world2/2:1:json", "world2/3:1:json", "world2/3:1:json:offload"])
def test_deepspeed_json_configs_match(results, case):
    """configs/deepspeed/zero{1,2,3}.json and zero3_offload.json (overlapped communication, buckets, CPU offload of
    optimiser state and parameters) train exactly like the built configs."""
    assert_same_training(results[case], results[REFERENCE])


@pytest.mark.slow
@pytest.mark.multiprocess
def test_zero3_shards_every_parameter(results):
    """The ZeRO-3 cases really partition the weights (the worker sets stage3_param_persistence_threshold to 0: by
    default parameters under 1e5 elements, i.e. all of the tiny model's, stay whole on every rank)."""
    for case in ("world2/3:4", "world2/3:1", "world2/3:1:json", "world1/3:2"):
        assert set(results[case]["sharded"]) == set(results[case]["weights"]), case
    assert results["world2/2:4"]["sharded"] == []


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("case", ["world2/3:1:gc"])
def test_gradient_checkpointing_matches(results, case):
    """Activation checkpointing (model.gradient_checkpointing) recomputes the same gradients, here under ZeRO-3 with
    4 micro-batches per rank."""
    assert_same_training(results[case], results[REFERENCE])


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("case", ["world1/0:8:bf16", "world2/2:4:bf16", "world2/3:1:bf16"])
def test_bf16_matches_fp32_within_bf16_precision(results, case):
    """bf16 parameters with fp32 master weights (model.dtype=bfloat16; DeepSpeed's CPU accelerator supports it)."""
    run, reference = results[case], results[REFERENCE]
    assert run["loss"] == pytest.approx(reference["loss"], rel=BF16_TOL)
    assert run["grad_norm"] == pytest.approx(reference["grad_norm"], rel=BF16_TOL)


@pytest.mark.slow
def test_gradient_checkpointing_cli(tmp_path):
    """End to end through the config key: one step with and without model.gradient_checkpointing, same seed, so the
    same rollout; the logged loss, gradient norm and entropy agree (the worker's 3:1:gc case covers several steps)."""
    from helpers import SMOKE, read_jsonl, run_train

    runs = {}
    for flag in ("false", "true"):
        result = run_train(["--config", str(SMOKE), "max_steps=1", f"output_dir={tmp_path}", f"run_name=gc_{flag}",
                            f"model.gradient_checkpointing={flag}", "checkpoint.export_hf=false", "eval.source=null"])
        assert result.returncode == 0, result.stderr[-3000:]
        runs[flag] = [m for m in read_jsonl(tmp_path / f"gc_{flag}" / "metrics.jsonl") if "loss" in m]
    assert len(runs["false"]) == 1 and runs["false"][0]["grad_norm"] > 0
    for plain, checkpointed in zip(runs["false"], runs["true"], strict=True):
        for key in ("loss", "grad_norm", "entropy", "reward/mean"):
            assert checkpointed[key] == pytest.approx(plain[key], rel=1e-5, abs=1e-8), key


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("case", ["world1/0:8:budget", "world2/2:4:budget", "world2/3:4:budget"])
def test_token_budget_micro_batches_equal_the_big_batch(results, case):
    """optim.max_tokens_per_micro_batch: rows sorted by length into micro-batches of 1-3 rows, trimmed to their own
    widths, the count equalised over ranks (ZeRO-3's collectives need it): the same update as one batch of 8."""
    assert_same_training(results[case], results[REFERENCE])


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("zero_stage", [0, 1, 2, 3])
def test_micro_batches_of_zero_advantage_leave_out_their_backward(results, zero_stage):
    """beta 0 and some advantages exactly 0 (DAPO's padding groups): a micro-batch whose rows all have advantage 0 on
    every rank gets no backward (2 of 4 a step here: one is zero on rank 0 only, one is the boundary), and the
    training equals one process with one micro-batch of 8, which leaves out nothing."""
    from equivalence_worker import STEPS

    run, reference = results[f"world2/{zero_stage}:1:zeroadv"], results["world1/0:8:zeroadv"]
    assert run["backward_calls"] == 2 * STEPS and reference["backward_calls"] == STEPS
    assert_same_training(run, reference)
    assert max(abs(a - b) for a, b in zip(reference["loss"], results[REFERENCE]["loss"])) > 1e-3  # other rows, other loss
