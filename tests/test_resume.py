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



# The tool-integrated recipe (configs/tool_multiply.yaml), shrunk: a short SFT on correct tool traces of 2-digit
# products teaches the tiny model to open and close a ```python call, so GRPO's rollouts call the sandbox.
TOOL_RUN = ["--config", str(REPO / "configs" / "tool_multiply.yaml"), "eval.source=null", "max_steps=6", "checkpoint.every=2",
            "sft.max_steps=60", "sft.tool_slip=0", "rollout.prompts_per_step=4", "rollout.num_generations=4",
            "rollout.max_completion_length=64", "log.report=false",
            "data.source=synthetic:arithmetic?n=200&seed=0&min_digits=2&max_digits=2&ops=mul",
            "sft.source=synthetic:arithmetic?n=400&seed=2&min_digits=2&max_digits=2&ops=mul"]


@pytest.mark.slow
def test_killed_tool_run_resumes_exactly(tmp_path):
    """Tool outputs are a function of the cells and draws do not depend on tool timing, so a run killed mid-GRPO and
    resumed logs and trains what an uninterrupted one does (issue 25)."""
    reference = run_train([*TOOL_RUN, f"output_dir={tmp_path}", "run_name=straight"])
    assert reference.returncode == 0, reference.stderr[-3000:]
    calls = [m["tools/calls_per_completion"] for m in read_jsonl(tmp_path / "straight" / "metrics.jsonl") if m["step"] > 0]
    assert len(calls) == 6 and min(calls) > 0, calls

    args = [*TOOL_RUN, f"output_dir={tmp_path}", "run_name=killed", "checkpoint.resume=auto"]
    process = start_train(args)
    wait_for_step(process, tmp_path / "killed" / "metrics.jsonl", 3)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=120)
    assert not (tmp_path / "killed" / "final_model").exists(), "the run should have been interrupted"
    resumed = run_train(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    assert_same_run(tmp_path / "straight", tmp_path / "killed")
