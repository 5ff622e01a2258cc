"""The SFT -> GRPO pipeline through the command line: configs/quickstart.yaml (shrunk, and once in full with its
learning bar), SFT-only runs, eval prompts kept out of SFT data, resume past SFT, and 2 ranks under ZeRO-3."""

import json
import math

import pytest
import torch

from helpers import REPO, SMOKE, initial_tiny_weights, read_jsonl, run_train

QUICKSTART = REPO / "configs" / "quickstart.yaml"
SMALL_SFT = "sft={source: 'synthetic:arithmetic?n=48&seed=2&max_digits=2&ops=add', max_steps: 2, batch_size: 4, micro_batch_size: 2, lr: 1.0e-3, warmup_steps: 0}"


def exported_weights(run_dir):
    from transformers import AutoModelForCausalLM

    return dict(AutoModelForCausalLM.from_pretrained(run_dir / "final_model").named_parameters())


def assert_moved_from_init(run_dir, cfg_tiny, seed):
    initial = initial_tiny_weights(cfg_tiny, seed)
    unchanged = [n for n, p in exported_weights(run_dir).items() if torch.equal(p.detach(), initial[n])]
    assert not unchanged, f"parameters that did not train: {unchanged}"


@pytest.mark.slow
def test_quickstart_wiring_sft_then_grpo(tmp_path):
    """The quickstart with its SFT stage cut to 3 steps and GRPO to 2: step 0 is the held-out eval after SFT."""
    from train.config import load_config

    result = run_train([
        "--config", str(QUICKSTART), f"output_dir={tmp_path}", "run_name=qs", "sft.max_steps=3",
        "sft.source=synthetic:arithmetic?n=64&seed=2&min_digits=2&max_digits=2&ops=add", "max_steps=2", "eval.limit=16", "eval.k=2",
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 0 (after SFT)" in result.stdout
    run_dir = tmp_path / "qs"
    sft_lines = read_jsonl(run_dir / "sft_metrics.jsonl")
    assert [line["sft_step"] for line in sft_lines] == [1, 2, 3]
    assert all(math.isfinite(line["loss"]) and line["num_tokens"] > 0 for line in sft_lines)
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2]
    start = records[0]
    assert start["sft/steps"] == 3 and start["sft/loss_last"] == pytest.approx(sft_lines[-1]["loss"])
    assert 0 < start["sft/examples"] <= 64 and start["eval/num_prompts"] == 16 and "loss" not in start
    assert all("loss" in r and "eval/pass@1" not in r for r in records[1:-1]) and "eval/pass@1" in records[-1]
    cfg = load_config(run_dir / "config.yaml")  # the resolved config, sft section included, is a valid experiment file
    assert cfg.sft.max_steps == 3 and cfg.sft.carry_slip == 0.65
    assert_moved_from_init(run_dir, cfg.model.tiny.model_dump(), cfg.seed)


@pytest.mark.slow
def test_sft_only_run_drops_eval_prompts_and_exports_the_model(tmp_path):
    """max_steps=0: SFT alone (distillation). A JSONL of prompt/completion rows, 2 of whose prompts are in the eval set:
    those 2 are not trained on, and the exported model is the fine-tuned one."""
    eval_rows = [{"prompt": f"What is {a} + 1?", "answer": str(a + 1)} for a in (3, 4, 5)]
    sft_rows = [{"prompt": f"What is {a} + 1?", "completion": f"<think> {a}+1={a + 1} </think> <answer>{a + 1}</answer>"}
                for a in (1, 2, 3, 4, 6, 7)]
    for name, rows in (("eval.jsonl", eval_rows), ("traces.jsonl", sft_rows)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    sft = f"sft={{source: '{tmp_path / 'traces.jsonl'}', max_steps: 2, batch_size: 2, micro_batch_size: 1, lr: 1.0e-3}}"
    result = run_train([
        "--config", str(SMOKE), f"output_dir={tmp_path}", "run_name=sft_only", "max_steps=0", sft,
        f"eval.source={tmp_path / 'eval.jsonl'}", "eval.k=1",
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "sft_only"
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [0] and "loss" not in records[0]
    assert records[0]["sft/examples"] == 4  # 6 rows minus the prompts "What is 3 + 1?" and "What is 4 + 1?"
    assert records[0]["eval/num_prompts"] == 3
    from train.config import load_config

    cfg = load_config(SMOKE)
    assert_moved_from_init(run_dir, cfg.model.tiny.model_dump(), cfg.seed)


@pytest.mark.slow
def test_resume_continues_grpo_without_repeating_sft(tmp_path):
    common = ["--config", str(SMOKE), f"output_dir={tmp_path}", "run_name=r", SMALL_SFT, "eval.source=null",
              "checkpoint.every=1", "checkpoint.resume=auto"]
    first = run_train([*common, "max_steps=2"])
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "r"
    sft_log = (run_dir / "sft_metrics.jsonl").read_text()
    assert len(sft_log.splitlines()) == 2
    resumed = run_train([*common, "max_steps=3"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "SFT" not in resumed.stderr  # no SFT progress bar: the checkpoint has it
    assert (run_dir / "sft_metrics.jsonl").read_text() == sft_log
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [0, 1, 2, 3]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_ranks_zero3_sft_then_grpo(tmp_path):
    """SFT and GRPO each on their own ZeRO-3 engine across 2 gloo ranks under torchrun."""
    launcher = ["torchrun", "--standalone", "--nproc_per_node", "2"]
    result = run_train([
        "--config", str(SMOKE), f"output_dir={tmp_path}", "run_name=z3", SMALL_SFT, "deepspeed.zero_stage=3",
        "max_steps=1", "eval.source=null", "rollout.prompts_per_step=2", "rollout.num_generations=4", "optim.micro_batch_size=4",
    ], launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "z3"
    assert len(read_jsonl(run_dir / "sft_metrics.jsonl")) == 2
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1] and math.isfinite(records[1]["loss"])
    from train.config import load_config

    cfg = load_config(SMOKE)
    assert_moved_from_init(run_dir, cfg.model.tiny.model_dump(), cfg.seed)


@pytest.mark.slow
def test_quickstart_meets_its_learning_bar(tmp_path):
    """The README's quickstart as shipped (~7 min on 2 cores): held-out greedy accuracy after GRPO is at least twice
    the after-SFT accuracy and at least 15 points higher (measured here: seed 0 0.295 -> 0.980, 3.32x; the weakest of
    five seeds 2.32x, so another CPU's trajectory clears it too: README "Quickstart results")."""
    result = run_train(["--config", str(QUICKSTART), f"output_dir={tmp_path}", "run_name=qs"], timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_jsonl(tmp_path / "qs" / "metrics.jsonl")
    after_sft, after_grpo = records[0]["eval/pass@1"], records[-1]["eval/pass@1"]
    assert records[0]["step"] == 0 and records[-1]["step"] == 100
    assert after_grpo >= 2 * after_sft and after_grpo >= after_sft + 0.15, (after_sft, after_grpo)
    assert sorted(p.name for p in (tmp_path / "qs" / "report").glob("*.png"))[:2] == ["accuracy.png", "completion_length.png"]
