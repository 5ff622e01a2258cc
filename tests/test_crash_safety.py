"""A run survives SIGKILL at any moment and never writes over another run (issue 12, points 2 and 3).

Fault injection: one run is killed at seeded random moments (during start-up, before its first checkpoint, between
saves, in the middle of a save) and restarted each time with `checkpoint.resume=auto`; in the end its metrics.jsonl
and samples.jsonl hold every step exactly once and equal an uninterrupted run's, and so do its final weights.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import REPO, SMOKE, child_env, comparable, final_weights, read_jsonl, run_train

# Small and quick: 2 prompts x 2 completions, 8 tokens; checkpoints at steps 3, 6 and 7, only the newest kept.
FAST = ["eval.source=null", "rollout.prompts_per_step=2", "rollout.num_generations=2", "optim.micro_batch_size=4",
        "rollout.max_completion_length=8", "log.report=false", "max_steps=7", "checkpoint.every=3", "checkpoint.keep_last=1"]


def start(args):
    return subprocess.Popen([sys.executable, "-m", "train", *args], cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def written_since(path, started: float) -> bool:
    try:
        return path.stat().st_mtime >= started
    except FileNotFoundError:
        return False


def logged_lines(run_dir, started: float) -> int:
    """Complete lines in metrics.jsonl once this attempt has opened it (a fresh start empties it, a resume rewrites
    it), so lines of an earlier attempt never count."""
    path = run_dir / "metrics.jsonl"
    if not written_since(path, started):
        return 0
    return sum(line.endswith("}") for line in path.read_text().splitlines())


def kill_when(process, condition, delay: float, timeout: float = 300) -> None:
    """SIGKILL `process` `delay` seconds after `condition()` first holds (polled every 2 ms)."""
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, f"the trainer ended before the kill: {process.stderr.read()[-3000:]}"
        assert time.time() < deadline, "timed out waiting for the moment to kill"
        time.sleep(0.002)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the trainer finished before it could be killed"


def latest(run_dir) -> str | None:
    path = run_dir / "checkpoints" / "latest"
    return path.read_text() if path.is_file() else None


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_exact(tmp_path):
    rng = random.Random(20261202)
    common = ["--config", str(SMOKE), *FAST, f"output_dir={tmp_path}"]
    straight = run_train([*common, "run_name=straight"])
    assert straight.returncode == 0, straight.stderr[-3000:]

    # The extra delays are fractions of the quickest step of the uninterrupted run (~70 ms here), so a kill meant to
    # land before the step-3 checkpoint (after step 1 or 2 is logged) or between the step-3 and step-6 checkpoints
    # (after step 4 or 5) cannot slip past the next save on a fast machine.
    quickest_step = min(m["time/step"] for m in read_jsonl(tmp_path / "straight" / "metrics.jsonl"))
    run_dir = tmp_path / "killed"
    args = [*common, "run_name=killed", "checkpoint.resume=auto"]
    started = 0.0
    startup_delay = rng.uniform(2.0, 15.0)
    first_lines, later_lines = rng.randint(1, 2), rng.randint(4, 5)
    moments = [  # (what, when, extra delay)
        ("during start-up", lambda: time.time() - started > startup_delay or written_since(run_dir / "config.yaml", started), 0.0),
        ("before the first checkpoint", lambda: logged_lines(run_dir, started) >= first_lines, rng.uniform(0.0, 0.4) * quickest_step),
        ("between two checkpoints", lambda: logged_lines(run_dir, started) >= later_lines, rng.uniform(0.0, 0.4) * quickest_step),
        ("during the step-6 save", lambda: (run_dir / "checkpoints" / ".staging_step_00000006").exists(), 0.0),
    ]
    for what, condition, delay in moments:
        started = time.time()
        kill_when(start(args), condition, delay)
        if what == "before the first checkpoint":
            assert latest(run_dir) is None, f"killed {what}, yet a checkpoint exists"
        if what == "during the step-6 save":  # the save in flight never replaces `latest` with something partial
            assert latest(run_dir) in ("step_00000003", "step_00000006")
            assert (run_dir / "checkpoints" / latest(run_dir) / "COMPLETE").is_file()
        steps = [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")] if (run_dir / "metrics.jsonl").exists() else []
        leftovers = sorted(p.name for p in (run_dir / "checkpoints").iterdir()) if (run_dir / "checkpoints").is_dir() else []
        print(f"killed {what} after {time.time() - started:.1f} s: steps logged {steps}, checkpoints/ {leftovers}")
        assert steps == sorted(set(steps)), f"killed {what}: a step logged twice: {steps}"

    resumed = run_train(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout

    expected, got = comparable(read_jsonl(tmp_path / "straight" / "metrics.jsonl")), comparable(read_jsonl(run_dir / "metrics.jsonl"))
    assert [m["step"] for m in got] == list(range(1, 8)), "every step exactly once"
    assert [m["step"] for m in expected] == list(range(1, 8))
    for x, y in zip(expected, got):
        assert x.keys() == y.keys()
        for key in x:
            assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-7, nan_ok=True), (x["step"], key)
    samples, reference_samples = read_jsonl(run_dir / "samples.jsonl"), read_jsonl(tmp_path / "straight" / "samples.jsonl")
    assert [s["step"] for s in samples] == [s["step"] for s in reference_samples]
    assert sorted({s["step"] for s in samples}) == list(range(1, 8))
    assert [(s["prompt"], s["completion"]) for s in samples] == [(s["prompt"], s["completion"]) for s in reference_samples]
    wa, wb = final_weights(tmp_path / "straight"), final_weights(run_dir)
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-5, atol=1e-7, msg=name)
    assert latest(run_dir) == "step_00000007"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["latest", "step_00000007"]


# --- run names cannot collide ----------------------------------------------------------------------------------------


def fake_run(run_dir, *names):
    """A run directory as an earlier run leaves it (only the named parts)."""
    run_dir.mkdir(parents=True)
    for name in names:
        if name == "checkpoints":
            (run_dir / "checkpoints" / "step_00000020").mkdir(parents=True)
            (run_dir / "checkpoints" / "step_00000020" / "COMPLETE").write_text(json.dumps({"step": 20, "world_size": 1}))
            (run_dir / "checkpoints" / "latest").write_text("step_00000020")
        else:
            (run_dir / name).write_text('{"step": 1, "loss": 0.5}\n' if name.endswith(".jsonl") else "max_steps: 20\n")
    return run_dir


def snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("names", [("config.yaml",), ("metrics.jsonl", "samples.jsonl"), ("checkpoints",)])
def test_a_directory_holding_a_run_is_not_started_over(tmp_path, names):
    from train.config import ConfigError
    from train.tracking import check_run_dir

    run_dir = fake_run(tmp_path / "r", *names)
    with pytest.raises(ConfigError) as info:
        check_run_dir(run_dir, resume=None)
    assert str(info.value).startswith(f"run_name: {run_dir} already holds a run ({names[0]}")
    assert "checkpoint.resume=auto" in str(info.value) and "another run_name" in str(info.value)
    check_run_dir(run_dir, resume="auto")  # continuing it is what resume is for
    check_run_dir(tmp_path / "new", resume=None)
    (tmp_path / "empty").mkdir()
    check_run_dir(tmp_path / "empty", resume=None)  # e.g. made by hand, or by a launcher script


def test_rerunning_a_run_name_without_resume_is_one_line_and_touches_nothing(tmp_path):
    run_dir = fake_run(tmp_path / "smoke", "config.yaml", "metrics.jsonl", "samples.jsonl", "checkpoints")
    before = snapshot(tmp_path)
    result = run_train(["--config", str(SMOKE), *FAST, "max_steps=1", f"output_dir={tmp_path}", "run_name=smoke"], timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("thinkrl train: error:")]
    assert errors == [f"thinkrl train: error: run_name: {run_dir} already holds a run (config.yaml, metrics.jsonl, samples.jsonl, "
                      "checkpoints); pass checkpoint.resume=auto to continue it, or choose another run_name"], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert snapshot(tmp_path) == before, "nothing of the earlier run is written over or pruned"


def test_pruning_keeps_latest_and_drops_checkpoints_newer_than_it(tokenizer, dist_single, tmp_path):
    """A step_9 left by an attempt that died before switching `latest` (or a run resumed from an older checkpoint) is
    newer than the step now saved: keep-last must keep the new `latest`, not the stale step_9."""
    from train.checkpoint import find_checkpoint, save_checkpoint
    from helpers import build_engine, make_tiny_model

    engine = build_engine(make_tiny_model(tokenizer))
    root = tmp_path / "checkpoints"
    save_checkpoint(engine, root, 1, {"step": 1}, rank=0, world_size=1, keep_last=1)
    stale = root / "step_00000009"
    stale.mkdir()
    (stale / "COMPLETE").write_text(json.dumps({"step": 9, "world_size": 1}))
    save_checkpoint(engine, root, 2, {"step": 2}, rank=0, world_size=1, keep_last=1)
    assert find_checkpoint(tmp_path) == root / "step_00000002"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000002"]
