"""Each shipped reference config runs one real step with its own data format, columns, template and rewards, on a
tiny model in place of the Qwen checkpoint (no hub, no GPU here) and local files in the format its header names."""

import pytest
from datasets import Dataset, DatasetDict

from data.synthetic import make_countdown, make_gsm8k_style, write_dataset
from helpers import REPO, read_jsonl, run_train

TINY_RUN = [
    "model.name_or_path=null", "model.tiny={}", "model.dtype=float32", "model.gradient_checkpointing=false",
    "deepspeed.zero_stage=0", "rollout.prompts_per_step=2", "rollout.num_generations=2", "rollout.max_completion_length=8",
    "optim.micro_batch_size=4", "max_steps=1", "log.wandb.mode=disabled", "checkpoint.resume=null",
    "checkpoint.export_hf=false", "data.max_prompt_length=2048", "rewards.num_workers=1",
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


@pytest.mark.slow
@pytest.mark.parametrize(
    "config, make_data",
    [("gsm8k_qwen2.5_1.5b.yaml", gsm8k_disk), ("math_qwen2.5_7b.yaml", math_jsonl), ("countdown_qwen2.5_3b.yaml", countdown_jsonl)],
)
def test_reference_config_wiring(tmp_path, config, make_data):
    data = make_data(tmp_path)
    result = run_train(["--config", str(REPO / "configs" / config), *TINY_RUN, f"data.source={data}", f"output_dir={tmp_path}", "run_name=r"])
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics,) = read_jsonl(tmp_path / "r" / "metrics.jsonl")
    rewards = [k for k in metrics if k.startswith("rewards/")]
    assert rewards and all(metrics[f"reward_failures/{k.split('/', 1)[1]}"] == 0 for k in rewards)
