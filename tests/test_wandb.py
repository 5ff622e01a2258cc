"""W&B in offline mode: config, every metric, the samples table, and a resumed run logging into the same W&B run."""

import pytest

from helpers import SMOKE, read_jsonl, run_train
from wandb_reader import read_run


@pytest.mark.slow
def test_offline_wandb_contents_and_resume(tmp_path):
    common = ["--config", str(SMOKE), f"output_dir={tmp_path}", "run_name=wb", "log.wandb.mode=offline",
              "log.wandb.project=thinkrl-test", "log.wandb.tags=[ci, offline]", "checkpoint.resume=auto", "grpo.beta=0.01", "eval.source=null"]
    first = run_train([*common, "max_steps=2"])
    assert first.returncode == 0, first.stderr[-3000:]
    run_files = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    run = read_run(run_files[0])
    assert run["config"]["grpo"]["beta"] == 0.01 and run["config"]["rollout"]["num_generations"] == 4
    assert set(run["tags"]) == {"ci", "offline"}
    metrics = read_jsonl(tmp_path / "wb" / "metrics.jsonl")
    history = [row for row in run["history"] if "reward/mean" in row]
    assert [row["_step"] for row in history] == [1, 2]
    for logged, row in zip(metrics, history):
        for key in ("reward/mean", "loss", "kl", "entropy", "accuracy", "completion_length/mean", "grad_norm"):
            assert row[key] == pytest.approx(logged[key]), key
    samples = [row for row in run["history"] if any(k.startswith("samples") for k in row)]
    assert samples, "the completions table was not logged"
    tables = list((run_files[0].parent / "files" / "media" / "table").glob("samples_*.table.json"))
    assert tables and "completion" in tables[0].read_text()

    second = run_train([*common, "max_steps=3"])
    assert second.returncode == 0, second.stderr[-3000:]
    run_files = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 2
    resumed = read_run(run_files[1])
    assert resumed["run_id"] == run["run_id"], "the resumed run must log into the same W&B run"
    assert [row["_step"] for row in resumed["history"] if "reward/mean" in row] == [3]
