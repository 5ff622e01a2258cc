"""Each shipped reference config runs one real step with its own data format, columns, template and rewards, on a
tiny model in place of the Qwen checkpoint (no hub, no GPU here) and local files in the format its header names."""

import re

import pytest
from datasets import Dataset, DatasetDict

from data.synthetic import make_countdown, make_gsm8k_style, write_dataset
from helpers import REPO, read_jsonl, run_train

TINY_RUN = [
    "model.name_or_path=null", "model.tiny={}", "model.dtype=float32", "model.gradient_checkpointing=false",
    "deepspeed.zero_stage=0", "rollout.prompts_per_step=2", "rollout.num_generations=2", "rollout.max_completion_length=8",
    "optim.micro_batch_size=4", "max_steps=1", "log.wandb.mode=disabled", "checkpoint.resume=null",
    "checkpoint.export_hf=false", "data.max_prompt_length=2048", "rewards.num_workers=1", "model.gguf_file=null",
]


def gsm8k_disk(tmp_path):
    rows = [{"question": r["prompt"], "answer": r["answer"]} for r in make_gsm8k_style(8, seed=0)]
    path = tmp_path / "gsm8k"
    DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[:2])}).save_to_disk(str(path))
    return path


def math_jsonl(tmp_path):
    rows = [{"problem": f"What is $\\frac{{{i}}}{{2}} + \\frac{{{i}}}{{2}}$?", "answer": str(i)} for i in range(1, 9)]
    return write_dataset(rows, tmp_path / "math.jsonl")


def countdown_jsonl(tmp_path):
    return write_dataset(make_countdown(8, seed=0), tmp_path / "countdown.jsonl")


def basic_arithmetic_gym(tmp_path):
    """The smollm2 config's own reasoning-gym task (generated offline), 8 rows; the tiny model replaces SmolLM2."""
    return ("reasoning_gym:basic_arithmetic?size=8&seed=0&max_terms=2&max_digits=2&operators=+,-&allow_parentheses=false"
            "&allow_negation=false")


def syllogism_gym(tmp_path):
    """A word-answer task for the gym config, whose prompts open the <answer> tag; the tiny model replaces SmolLM2."""
    return "reasoning_gym:syllogism?size=8&seed=0"


# The local stand-in for each shipped config's data (None: its own synthetic source runs as is, with its own model).
STAND_INS = {
    "gsm8k_qwen2.5_1.5b.yaml": gsm8k_disk, "math_qwen2.5_7b.yaml": math_jsonl, "countdown_qwen2.5_3b.yaml": countdown_jsonl,
    "smollm2_basic_arithmetic.yaml": basic_arithmetic_gym, "quickstart.yaml": None, "smoke.yaml": None,
    "distill_student.yaml": None, "smollm2_gym.yaml": syllogism_gym, "tool_multiply.yaml": None,
}
REFERENCE = [name for name, make_data in STAND_INS.items() if make_data is not None]


def test_every_shipped_config_has_a_stand_in():
    assert set(STAND_INS) == {path.name for path in (REPO / "configs").glob("*.yaml")}


@pytest.mark.parametrize("config", list(STAND_INS))
def test_gold_check_passes_on_every_shipped_config(tmp_path, capsys, config):
    """The reward preflight's gold check (train/preflight.py): every row's gold answer, written as a perfect completion
    in the config's template, scores 1 on its accuracy reward, on the data each config is tested with here."""
    from train.preflight import main

    make_data = STAND_INS[config]
    overrides = [*TINY_RUN, f"data.source={make_data(tmp_path)}"] if make_data is not None else []
    assert main(["--config", str(REPO / "configs" / config), "--samples", "0", *overrides]) == 0, capsys.readouterr().err
    splits = re.findall(r"^  (training|eval): (\d+) rows: (\d+) score 1, (\d+) below 1, (\d+) not applicable$", capsys.readouterr().out, re.M)
    assert splits and all(int(rows) > 0 and rows == correct and (below, n_a) == ("0", "0") for _, rows, correct, below, n_a in splits), splits


@pytest.mark.slow
@pytest.mark.parametrize("config", REFERENCE)
def test_reference_config_wiring(tmp_path, config):
    data = STAND_INS[config](tmp_path)
    result = run_train(["--config", str(REPO / "configs" / config), *TINY_RUN, f"data.source={data}", f"output_dir={tmp_path}", "run_name=r"])
    assert result.returncode == 0, result.stderr[-3000:]
    # The preflight ran in the trainer: all 8 gold answers score 1, and the sample check scored the initial policy.
    assert "thinkrl: preflight: gold answers as perfect completions score 1 on" in result.stdout
    # Every training row scores 1 (8, or fewer where a row is also in the config's own eval set and was dropped).
    assert re.search(r"training ([5-8])/\1[ ,]", result.stdout) and "samples of the initial policy" in result.stdout
    (metrics,) = [r for r in read_jsonl(tmp_path / "r" / "metrics.jsonl") if r["step"] > 0]  # step 0: eval, if any
    rewards = [k for k in metrics if k.startswith("rewards/")]
    assert rewards and all(metrics[f"reward_failures/{k.split('/', 1)[1]}"] == 0 for k in rewards)
