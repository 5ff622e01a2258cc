"""Never lose a run: exact resume after a kill, atomic checkpoints, pre-emption signals, the non-finite guard."""

import json
import signal
import subprocess
import sys
import time

import pytest

from helpers import SMOKE, REPO, assert_same_run, child_env, read_jsonl, run_train

def start_train(args, launcher=None):
    command = (launcher or [sys.executable]) + ["-m", "train", *args]
    return subprocess.Popen(command, cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(process, metrics_path, step, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metrics_path.is_file() and any(json.loads(l)["step"] >= step for l in metrics_path.read_text().splitlines() if l.endswith("}")):
            return
        if process.poll() is not None:
            raise AssertionError(f"trainer exited early: {process.stderr.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the trainer")


COMMON = ["eval.source=null", "max_steps=6", "checkpoint.every=2", "rewards.functions=[{name: 'tests.fault_rewards:alternating'}]", "optim.lr=3e-3"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigkill"])  # SIGTERM: tests/test_multinode.py (2 nodes), tests/test_sft_resume.py
def test_killed_run_resumes_exactly(tmp_path, how):
    reference = run_train(["--config", str(SMOKE), *COMMON, f"output_dir={tmp_path}", "run_name=straight"])
    assert reference.returncode == 0, reference.stderr[-3000:]

    args = ["--config", str(SMOKE), *COMMON, f"output_dir={tmp_path}", "run_name=killed", "checkpoint.resume=auto"]
    process = start_train(args)
    wait_for_step(process, tmp_path / "killed" / "metrics.jsonl", 3)
    process.send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    if how == "sigterm":
        assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    else:
        assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "final_model").exists(), "the run should have been interrupted"

    resumed = run_train(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    assert_same_run(tmp_path / "straight", tmp_path / "killed")


@pytest.mark.slow
def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    args = ["--config", str(SMOKE), "max_steps=1", f"output_dir={tmp_path}", "run_name=r", "checkpoint.export_hf=false"]
    assert run_train(args).returncode == 0
    checkpoint = tmp_path / "r" / "checkpoints" / "step_00000001"
    for path in checkpoint.rglob("*model_states.pt"):
        path.write_bytes(path.read_bytes()[:100])  # truncated, as after a disk-full crash
    metrics_before = (tmp_path / "r" / "metrics.jsonl").read_text()
    result = run_train([*args, "max_steps=2", "checkpoint.resume=auto"])
    assert result.returncode == 2
    assert "thinkrl train: error: checkpoint.resume:" in result.stderr and "step_00000001" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == metrics_before, "nothing written over"


def test_resume_from_missing_path_is_a_clear_error(tmp_path):
    result = run_train(["--config", str(SMOKE), f"output_dir={tmp_path}", f"checkpoint.resume={tmp_path / 'nope'}"], timeout=300)
    assert result.returncode == 2 and "no checkpoint there" in result.stderr


@pytest.mark.slow
def test_non_finite_updates_are_skipped_then_stop_the_run(tmp_path):
    result = run_train([
        "--config", str(SMOKE), "max_steps=6", f"output_dir={tmp_path}", "run_name=nan", "eval.source=null", "optim.max_consecutive_skips=2",
        "rewards.functions=[{name: 'tests.fault_rewards:overflow', weight: 1.0}]", "rewards.preflight=false",
    ])
    assert result.returncode == 3, result.stderr[-3000:]
    assert "2 updates in a row had a non-finite loss or gradient" in result.stderr
    metrics = read_jsonl(tmp_path / "nan" / "metrics.jsonl")
    assert [m["skipped_updates"] for m in metrics] == [1, 1]  # both steps were logged, then the run stopped

