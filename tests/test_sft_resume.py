"""The SFT stage survives pre-emption: atomic keep-last-K SFT checkpoints, and `checkpoint.resume=auto` continues a
run stopped in the middle of SFT (SIGKILL, SIGTERM; SIGUSR1 to one of 2 ranks) with the same SFT losses, the same
GRPO steps after it and the same final weights as a run that was never stopped."""

import json
import signal
import subprocess
import sys
import time

import psutil
import pytest

from helpers import REPO, SMOKE, TORCHRUN, assert_same_run, child_env, comparable, read_jsonl, run_train

SFT_STEPS = 80
SFT = ("sft={source: 'synthetic:arithmetic?n=400&seed=2&max_digits=2&ops=add', max_steps: %d, batch_size: 4, "
       "micro_batch_size: 2, lr: 1.0e-3, warmup_steps: 5, checkpoint_every: 10}" % SFT_STEPS)
COMMON = ["--config", str(SMOKE), SFT, "eval.source=null", "max_steps=2", "rewards.preflight=false", "checkpoint.keep_last=2"]


def start(args, launcher=None):
    return subprocess.Popen([*(launcher or [sys.executable]), "-m", "train", *args], cwd=REPO, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def saved_sft_step(run_dir):
    """The SFT step of the run's latest SFT checkpoint (0: none yet)."""
    latest = run_dir / "sft_checkpoints" / "latest"
    return int(latest.read_text().removeprefix("step_")) if latest.is_file() else 0


def wait_for_sft_checkpoint(process, run_dir, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if saved_sft_step(run_dir):
            return
        if process.poll() is not None:
            raise AssertionError(f"trainer exited early: {process.stderr.read()[-3000:]}")
        time.sleep(0.02)
    raise AssertionError("timed out waiting for the first SFT checkpoint")


def assert_same_sft(a, b):
    sa, sb = comparable(read_jsonl(a / "sft_metrics.jsonl")), comparable(read_jsonl(b / "sft_metrics.jsonl"))
    assert [r["sft_step"] for r in sa] == list(range(1, SFT_STEPS + 1)) == [r["sft_step"] for r in sb]
    for x, y in zip(sa, sb):
        assert x == pytest.approx(y, rel=1e-5, abs=1e-7), x["sft_step"]


def assert_stopped_mid_sft(run_dir):
    step = saved_sft_step(run_dir)
    assert 0 < step < SFT_STEPS, f"stopped at SFT step {step}: not in the middle of the stage"
    assert not (run_dir / "sft_metrics.jsonl").exists() and not (run_dir / "checkpoints").exists()
    return step


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One process, never stopped: SFT_STEPS SFT steps, then 2 GRPO steps."""
    out = tmp_path_factory.mktemp("sft_straight")
    result = run_train([*COMMON, f"output_dir={out}", "run_name=straight"])
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "straight"


@pytest.mark.slow
# SIGKILL on 1 process here; SIGTERM: the 2-rank SIGUSR1 test below takes the same handler path, and GRPO's SIGTERM
# path is tests/test_multinode.py's (kept to one run each to fit CI's time budget).
@pytest.mark.parametrize("how", ["sigkill"])
def test_sft_stage_resumes_exactly_after_a_kill(tmp_path, straight, how):
    args = [*COMMON, f"output_dir={tmp_path}", "run_name=killed", "checkpoint.resume=auto"]
    process = start(args)
    wait_for_sft_checkpoint(process, tmp_path / "killed")
    process.send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    if how == "sigterm":  # saved where it was, said so, exited as a pre-empted job does
        assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
        assert f"thinkrl train: signal {int(signal.SIGTERM)}: SFT checkpoint saved at SFT step" in stdout
    else:
        assert process.returncode == -signal.SIGKILL
    step = assert_stopped_mid_sft(tmp_path / "killed")
    kept = sorted(p.name for p in (tmp_path / "killed" / "sft_checkpoints").glob("step_*"))
    assert 1 <= len(kept) <= 2 and kept[-1] == f"step_{step:08d}", kept  # keep_last=2, latest kept

    # Another sft section cannot continue this stage exactly: refused, nothing written.
    changed = run_train([*args, "sft.max_steps=%d" % (SFT_STEPS + 1)])
    assert changed.returncode == 2 and "exact resume needs the same sft section" in changed.stderr, changed.stderr[-2000:]
    assert saved_sft_step(tmp_path / "killed") == step
    resumed = run_train(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_sft(straight, tmp_path / "killed")
    assert_same_run(straight, tmp_path / "killed")  # step 0's SFT summary, the GRPO steps, the exported weights


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_rank_sft_stage_resumes_exactly_after_sigusr1_to_one_rank(tmp_path):
    """SLURM's --signal may reach one rank first: the ranks agree, both save the same step, and the resumed run
    equals an uninterrupted 2-rank run under ZeRO-2."""
    common = [*COMMON, f"output_dir={tmp_path}", "deepspeed.zero_stage=2"]
    reference = run_train([*common, "run_name=straight"], launcher=TORCHRUN)
    assert reference.returncode == 0, reference.stderr[-3000:]

    args = [*common, "run_name=signalled", "checkpoint.resume=auto"]
    process = start(args, launcher=TORCHRUN)
    wait_for_sft_checkpoint(process, tmp_path / "signalled")
    workers = [p for p in psutil.Process(process.pid).children(recursive=True) if "train" in p.cmdline()]
    assert len(workers) == 2, [p.cmdline() for p in workers]
    rank_one = next(p for p in workers if p.environ().get("RANK") == "1")
    rank_one.send_signal(signal.SIGUSR1)
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode != 0
    assert f"thinkrl train: signal {int(signal.SIGUSR1)}: SFT checkpoint saved at SFT step" in stdout, (stdout + stderr)[-3000:]
    step = assert_stopped_mid_sft(tmp_path / "signalled")
    marker = json.loads((tmp_path / "signalled" / "sft_checkpoints" / f"step_{step:08d}" / "COMPLETE").read_text())
    assert marker == {"step": step, "world_size": 2, "stage": "sft"}

    resumed = run_train(args, launcher=TORCHRUN)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_sft(tmp_path / "straight", tmp_path / "signalled")
    assert_same_run(tmp_path / "straight", tmp_path / "signalled")


def test_an_sft_checkpoint_needs_an_sft_section(tmp_path):
    """Resuming a run stopped during SFT with a config that lost its sft section is a one-line error."""
    from train.checkpoint import CheckpointError, resume_point

    checkpoint = tmp_path / "run" / "sft_checkpoints" / "step_00000010"
    checkpoint.mkdir(parents=True)
    (checkpoint / "COMPLETE").write_text(json.dumps({"step": 10, "world_size": 1, "stage": "sft"}))
    (checkpoint.parent / "latest").write_text(checkpoint.name)
    assert resume_point("auto", tmp_path / "run", has_sft=True) == (None, checkpoint)
    assert resume_point(str(tmp_path / "run"), tmp_path / "other", has_sft=True) == (None, checkpoint)
    with pytest.raises(CheckpointError, match="SFT-stage checkpoint, but the config has no sft section"):
        resume_point("auto", tmp_path / "run", has_sft=False)
    grpo = tmp_path / "run" / "checkpoints" / "step_00000001"  # a GRPO checkpoint wins: it holds the SFT'd weights
    grpo.mkdir(parents=True)
    (grpo / "COMPLETE").write_text(json.dumps({"step": 1, "world_size": 1}))  # written before stages were recorded
    (grpo.parent / "latest").write_text(grpo.name)
    assert resume_point("auto", tmp_path / "run", has_sft=False) == (grpo, None)


def test_a_run_stopped_during_sft_is_not_started_over_by_mistake(tmp_path):
    from train.config import ConfigError
    from train.tracking import check_run_dir

    (tmp_path / "run" / "sft_checkpoints").mkdir(parents=True)
    with pytest.raises(ConfigError, match="sft_checkpoints"):
        check_run_dir(tmp_path / "run", resume=None)
