"""Bad input is one `thinkrl train: error:` line and exit 2, before anything heavy runs (issue 12, point 5): unreadable data
named by file and line, a non-finite float in the config, malformed YAML, an unusable output_dir, a reward module
that exits on import, a checkpoint of another model shape. A disk that fills up during a checkpoint is one line too,
and the checkpoint before it stays `latest`. The same one-line format for every other command (sample, eval, preflight,
convert, report) through the `thinkrl` script: tests/test_cli.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import REPO, SMOKE, child_env, make_tiny_model, run_train

# On the old code several of these cases trained instead of failing: keep any such run to one short step.
FAST = ["eval.source=null", "max_steps=1", "rollout.max_completion_length=8", "log.report=false"]
# Where the data or output_dir check must come first: a model path that cannot load. Reporting the data or the
# directory rather than the model shows the check ran before the model was loaded.
NO_MODEL = ["model.tiny=null", "model.name_or_path=/nonexistent/model"]


def error_lines(result) -> list[str]:
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("thinkrl train: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    # Nothing else on stderr continues the message: the next line after it is not part of it.
    tail = result.stderr[result.stderr.index(lines[0]) + len(lines[0]):].strip()
    assert not tail, f"the error continues past its line: {tail[:500]!r}"
    return lines


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@contextlib.contextmanager
def tmpfs(path, size: str, read_only: bool = False):
    """A real small filesystem at `path` (root only; skipped where mount is not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


# --- data -----------------------------------------------------------------------------------------------------------


def _empty(tmp_path):
    return write_jsonl(tmp_path / "empty.jsonl", [])


def _broken_line(tmp_path):
    rows = [{"prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(5000)]
    lines = [json.dumps(row) for row in rows]
    lines[1233] = '{"prompt": "What is 1233 + 1?", "answer": "1234"'  # line 1234 lost its closing brace
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _latin1_csv(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"prompt,answer\nWhat is 1 + 1?,2\nCombien font 2 + 2 \xe0 la caf\xe9?,4\n")
    return path


@pytest.mark.parametrize(
    "key, make, expected",
    [
        ("data.source", _empty, ["empty.jsonl: the file is empty"]),
        ("eval.source", _empty, ["eval.source:", "empty.jsonl: the file is empty"]),
        ("data.source", _broken_line, ["big.jsonl: line 1234: not valid JSON ("]),
        ("data.source", _latin1_csv, ["latin1.csv: line 3: not valid UTF-8 (byte 0xe0"]),
    ],
    ids=["empty-data", "empty-eval", "broken-jsonl-line", "non-utf8-csv"],
)
def test_unreadable_data_is_one_line_naming_file_and_line(tmp_path, key, make, expected):
    path = make(tmp_path)
    out = tmp_path / "runs"
    result = run_train(["--config", str(SMOKE), *FAST, *NO_MODEL, f"{key}={path}", f"output_dir={out}"], timeout=300)
    [line] = error_lines(result)
    assert line.startswith(f"thinkrl train: error: {key}: {path}"), line
    for fragment in expected:
        assert fragment in line, line
    assert not out.exists(), "nothing is written when the input is bad"


# --- config -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    ["optim.lr=.inf", "optim.lr=1e400", "grpo.beta=.nan", "optim.adam_betas=[0.9, .inf]", "rewards.on_error=.nan",
     "rewards.timeout_s=.inf", "sft.lr=.inf", "rewards.functions=[{name: tag_count, weight: -.inf}]"],
)
def test_non_finite_floats_are_rejected_by_the_config(override):
    from train.config import ConfigError, load_config

    extra = ["sft.source=synthetic:arithmetic"] if override.startswith("sft.") else []
    with pytest.raises(ConfigError, match="finite number"):
        load_config(SMOKE, [override, *extra])


def test_malformed_yaml_is_one_line_naming_file_and_line(tmp_path):
    from train.config import ConfigError, load_config

    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE.read_text().replace("  dtype: float32", " dtype: float32", 1))  # one key out of its block
    line_number = 1 + SMOKE.read_text().splitlines().index("  dtype: float32")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert "\n" not in str(info.value) and f"not valid YAML: line {line_number}," in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(SMOKE, ["optim.adam_betas=[0.9, 0.99"])
    assert "\n" not in str(info.value) and "optim.adam_betas: cannot parse value" in str(info.value)


@pytest.mark.parametrize(
    "setup, expected",
    [("yaml", "bad.yaml: not valid YAML: line "), ("inf-lr", "optim.lr: Input should be a finite number (got inf)"),
     ("exit-on-import", "cannot import 'quitter': SystemExit: 3")],
)
def test_bad_config_through_the_cli(tmp_path, setup, expected):
    config, args, env = SMOKE, [], None
    if setup == "yaml":
        config = tmp_path / "bad.yaml"
        config.write_text(SMOKE.read_text().replace("  dtype: float32", " dtype: float32", 1))
    elif setup == "inf-lr":
        args = ["optim.lr=.inf"]
    else:  # a custom reward module that calls sys.exit() while imported
        (tmp_path / "quitter.py").write_text("import sys\nsys.exit(3)\n\ndef score(completions, **_):\n    return [0.0] * len(completions)\n")
        args, env = ["rewards.functions=[{name: 'quitter:score'}]"], {"PYTHONPATH": str(tmp_path)}
    out = tmp_path / "runs"
    [line] = error_lines(run_train(["--config", str(config), *FAST, *args, f"output_dir={out}"], env=env, timeout=300))
    assert expected in line, line
    assert not out.exists()


# --- output_dir ---------------------------------------------------------------------------------------------------------


def test_read_only_output_dir_is_refused_before_the_model_loads(tmp_path):
    out = tmp_path / "readonly"
    with contextlib.ExitStack() as stack:
        if os.geteuid() == 0:  # root writes through permission bits: only a read-only mount stops it
            stack.enter_context(tmpfs(out, "16m", read_only=True))
        else:
            out.mkdir()
            out.chmod(0o555)
            stack.callback(out.chmod, 0o755)
        result = run_train(["--config", str(SMOKE), *FAST, *NO_MODEL, f"output_dir={out}"], timeout=300)
        [line] = error_lines(result)
        assert f"thinkrl train: error: output_dir: {out}: not writable" in line, line


def test_nearly_full_output_dir_is_refused_before_the_model_loads(tmp_path):
    with tmpfs(tmp_path / "small", "8m") as out:
        result = run_train(["--config", str(SMOKE), *FAST, *NO_MODEL, f"output_dir={out}"], timeout=300)
        [line] = error_lines(result)
        assert f"output_dir: {out}: only " in line and "MiB free" in line, line
        assert not any(out.iterdir())


@pytest.mark.slow
def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path):
    """A real filesystem fills up after the step-2 checkpoint (the trainer is stopped meanwhile, so the moment is
    exact): the step-4 save fails as one line, its partial files are removed, and step 2 stays `latest`."""
    with tmpfs(tmp_path / "disk", "80m") as disk:
        args = ["--config", str(SMOKE), *FAST, "max_steps=6", "checkpoint.every=2", "checkpoint.keep_last=2",
                "rollout.prompts_per_step=2", "rollout.num_generations=2", "optim.micro_batch_size=4",
                f"output_dir={disk}", "run_name=r"]
        process = subprocess.Popen([sys.executable, "-m", "train", *args], cwd=REPO, env=child_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        latest = disk / "r" / "checkpoints" / "latest"
        deadline = time.time() + 300
        while not latest.is_file():
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.time() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGSTOP)
        try:
            fd = os.open(disk / "filler", os.O_CREAT | os.O_WRONLY)
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            os.posix_fallocate(fd, 0, free - 256 * 1024)  # room for a few log lines, not for a checkpoint
            os.close(fd)
        finally:
            process.send_signal(signal.SIGCONT)
        _, stderr = process.communicate(timeout=300)
        result = subprocess.CompletedProcess(args, process.returncode, "", stderr)
        [line] = error_lines(result)
        assert "checkpoint: cannot save step_00000004" in line and "step_00000002 stays the latest checkpoint" in line, line
        checkpoints = disk / "r" / "checkpoints"
        assert latest.read_text() == "step_00000002"
        assert (checkpoints / "step_00000002" / "COMPLETE").is_file()
        assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_00000002"], "partial files are removed"


# --- checkpoints ------------------------------------------------------------------------------------------------------


def test_checkpoint_of_another_model_shape_is_one_line(tokenizer, dist_single, tmp_path):
    from train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from helpers import build_engine

    def engine(hidden_size):
        return build_engine(make_tiny_model(tokenizer, hidden_size=hidden_size, intermediate_size=2 * hidden_size))

    final = save_checkpoint(engine(32), tmp_path / "checkpoints", 1, {"step": 1}, rank=0, world_size=1, keep_last=1)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(engine(64), final, rank=0, world_size=1)
    message = str(info.value)
    assert "\n" not in message and len(message) < 800, message
    assert message.startswith(f"checkpoint.resume: {final}: cannot load") and "size mismatch" in message
    assert "another shape" in message
