"""Rejection sampling (`python -m train.sample`, issue 15 point 1): keep rules, rows independent of sharding (2 ranks
write what 1 rank writes), a killed run resumes with no duplicate and no gap, and the `sft:` section reads the rows."""

import signal
import subprocess
import sys
import time

import pytest

from helpers import REPO, SMOKE, TORCHRUN, child_env, read_jsonl, run_train
from train.sample import keep_samples

NAN = float("nan")
SAMPLE = ["--config", str(SMOKE), "--k", "4", "--limit", "10", "--keep", "all", "rollout.max_completion_length=24"]


def run_sample(args, launcher=None, timeout=600):
    return subprocess.run([*(launcher or [sys.executable]), "-m", "train.sample", *args], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_keep_rules():
    totals, accuracy, texts = [1.2, 0.2, 1.2, NAN, 0.7], [1.0, 0.0, 1.0, NAN, 0.0], ["a", "b", "a", "c", "d"]
    assert keep_samples(totals, accuracy, texts, rule="correct", dedup=False) == [0, 2]
    assert keep_samples(totals, accuracy, texts, rule="correct", dedup=True) == [0]
    assert keep_samples(totals, accuracy, texts, rule="best_of_k", dedup=False) == [0]  # first of the tied best
    assert keep_samples([NAN, NAN], [NAN, NAN], ["x", "y"], rule="best_of_k", dedup=False) == []
    assert keep_samples(totals, accuracy, texts, rule="all", dedup=True) == [0, 1, 3, 4]
    with pytest.raises(ValueError, match="keep rule"):
        keep_samples(totals, accuracy, texts, rule="most", dedup=False)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_ranks_write_the_rows_of_one_and_sft_reads_them(tmp_path):
    one = run_sample([*SAMPLE, "--output", str(tmp_path / "one.jsonl")])
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_sample([*SAMPLE, "--output", str(tmp_path / "two.jsonl")], launcher=TORCHRUN)
    assert two.returncode == 0, two.stderr[-3000:]
    rows_one, rows_two = read_jsonl(tmp_path / "one.jsonl"), read_jsonl(tmp_path / "two.jsonl")
    assert len(rows_one) == 40 and [(r["prompt_index"], r["sample_index"]) for r in rows_one] == [(i, j) for i in range(10) for j in range(4)]
    assert rows_two == rows_one
    assert {"prompt", "completion", "answer", "reward", "rewards", "seed", "model"} <= set(rows_one[0])
    assert len({r["completion"] for r in rows_one}) > 10  # sampled, not one completion repeated
    assert "10/10 prompts done" in one.stdout and "acceptance (score >= 1)" in one.stdout
    # The rows are an `sft:` source as they are (prompt and completion columns).
    sft = f"sft={{source: '{tmp_path / 'one.jsonl'}', max_steps: 2, batch_size: 4, micro_batch_size: 2, lr: 1.0e-3}}"
    trained = run_train(["--config", str(SMOKE), sft, "max_steps=0", "eval.source=null", f"output_dir={tmp_path}", "run_name=sft"])
    assert trained.returncode == 0, trained.stderr[-3000:]
    history = read_jsonl(tmp_path / "sft" / "sft_metrics.jsonl")
    assert len(history) == 2 and all(h["num_tokens"] > 0 for h in history)


@pytest.mark.slow
def test_killed_sampling_run_resumes_with_no_duplicate_and_no_gap(tmp_path):
    straight = run_sample([*SAMPLE, "--output", str(tmp_path / "straight.jsonl")])
    assert straight.returncode == 0, straight.stderr[-3000:]
    output = tmp_path / "killed.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "train.sample", *SAMPLE, "--output", str(output)], cwd=REPO, env=child_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = tmp_path / "killed.jsonl.parts" / "rank-0.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (part.exists() and part.read_text().count('"done"') >= 3):
        assert process.poll() is None, process.stderr.read()[-3000:]
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert not output.exists()
    with open(part, "a") as f:  # a kill in the middle of a write: a row of the next prompt, cut short
        f.write('{"prompt": "What is 1 + 1?", "completion": "<think> 2')
    resumed = run_sample([*SAMPLE, "--output", str(output)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "already done" in resumed.stdout and "0 already done" not in resumed.stdout
    assert read_jsonl(output) == read_jsonl(tmp_path / "straight.jsonl")


def test_exclude_skips_prompts_the_teacher_trained_on(tmp_path):
    """--exclude SOURCE: prompts also in SOURCE (compared as rendered) are not sampled; the summary file counts them;
    excluding every prompt is a one-line error."""
    import json

    from data.sources import load_prompt_dataset

    first = load_prompt_dataset("synthetic:arithmetic?n=1000&seed=0", limit=6).to_list()
    trained = tmp_path / "trained.jsonl"
    trained.write_text("".join(json.dumps(first[i]) + "\n" for i in (0, 2, 5)))
    args = ["--config", str(SMOKE), "--k", "1", "--limit", "6", "--keep", "all", "rollout.max_completion_length=4"]
    result = run_sample([*args, "--exclude", str(trained), "--output", str(tmp_path / "rows.jsonl")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["prompt"] for r in read_jsonl(tmp_path / "rows.jsonl")] == [first[i]["prompt"] for i in (1, 3, 4)]
    summary = json.loads((tmp_path / "rows.jsonl.summary.json").read_text())
    assert summary["prompts_excluded"] == 3 and summary["prompts"] == 3 and summary["kept_rows"] == 3
    every = run_sample([*args, "--exclude", "synthetic:arithmetic?n=1000&seed=0", "--output", str(tmp_path / "none.jsonl")])
    assert every.returncode == 2 and "--exclude: every prompt of data.source" in every.stderr, every.stderr[-2000:]


def test_sampled_rows_keep_their_tool_calls(tmp_path):
    """With rollout.tools, every row records the calls its completion made (a list, empty when it made none), so
    SFT on the rows can mask the tool's output (issue 25)."""
    tools = "rollout.tools={call_start: '(', call_end: ')', max_tool_response_length: 16}"
    result = run_sample([*SAMPLE, "--limit", "4", tools, "--output", str(tmp_path / "rows.jsonl")])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_jsonl(tmp_path / "rows.jsonl")
    assert len(rows) == 16 and all(isinstance(r["tool_calls"], list) for r in rows)
    for row in rows:
        for call in row["tool_calls"]:
            assert set(call) == {"code", "output", "status", "seconds"} and call["code"] in row["completion"]
