"""Two processes on CPU (gloo) under torchrun: ZeRO-2 and ZeRO-3 train a few steps end to end."""

import sys

import pytest

from test_cli import QUICKSTART, assert_trained_run, read_jsonl, run_train

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("zero_stage", [2, 3])
def test_torchrun_two_ranks(tmp_path, zero_stage):
    result = run_train(
        ["--config", str(QUICKSTART), "max_steps=2", f"output_dir={tmp_path}", "run_name=dist",
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
