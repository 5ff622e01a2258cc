"""Run report: PNGs from a synthetic metrics.jsonl, the EMA on hand-worked numbers, and the edge cases (nulls, one step,
missing metrics, empty or malformed files, the CLI)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.image import imread

from train.report import SUMMARY, ReportError, ema, main, make_report, read_metrics, series

REPO = Path(__file__).resolve().parents[1]


def write_metrics(run_dir: Path, records: list[dict]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def training_records(steps: int = 12, *, eval_every: int = 4) -> list[dict]:
    records = []
    for step in range(1, steps + 1):
        record = {
            "step": step, "reward/mean": 0.1 * step, "reward/std": 0.2, "accuracy": step / steps,
            "rewards/arithmetic_accuracy": step / steps, "rewards/format_lenient": 0.5,
            "completion_length/mean": 20.0 + step, "completion_length/min": 5, "completion_length/max": 32,
            "truncated_fraction": 0.25, "kl": 0.01 * step, "entropy": 3.0 - 0.1 * step, "loss": -0.01 * step,
            "grad_norm": 1.0 / step, "lr": 1e-3, "time/step": 0.5,
        }
        if step == 3:
            record["kl"] = None  # NaN is written as null
        records.append(record)
        if step % eval_every == 0:  # eval metrics on a line of their own, as the trainer may log them
            records.append({"step": step, "eval/pass@1": step / (2 * steps), "eval/pass@4": step / steps, "eval/mean@4": 0.3})
    return records


def assert_valid_png(path: Path):
    assert path.is_file() and path.stat().st_size > 0
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0  # not a blank canvas


def test_full_report_writes_every_panel(tmp_path):
    write_metrics(tmp_path, training_records())
    paths = make_report(tmp_path)
    names = [p.name for p in paths]
    assert names == ["reward.png", "accuracy.png", "completion_length.png", "truncated.png", "kl.png", "entropy.png",
                     "loss.png", "grad_norm.png", SUMMARY]
    assert all(p.parent == tmp_path / "report" for p in paths)
    for path in paths:
        assert_valid_png(path)
    summary = imread(paths[-1])
    assert summary.shape[1] > imread(paths[0]).shape[1]  # the grid is wider than one panel


def test_sft_stage_gets_its_own_loss_panel_and_step_0_is_labelled(tmp_path):
    from matplotlib.figure import Figure

    from train.report import SFT_PANEL, _draw, metric_panels

    records = [{"step": 0, "sft/steps": 3.0, "sft/loss_last": 0.4, "eval/pass@1": 0.3}, *training_records(steps=4)]
    write_metrics(tmp_path, records)
    (tmp_path / "sft_metrics.jsonl").write_text("".join(json.dumps({"sft_step": i, "loss": 2.0 / i}) + "\n" for i in (1, 2, 3)))
    paths = make_report(tmp_path)
    assert paths[0].name == "sft_loss.png" and paths[-1].name == SUMMARY
    for path in paths:
        assert_valid_png(path)
    sft_rows = read_metrics(tmp_path / "sft_metrics.jsonl")
    assert series(sft_rows, "loss") == ([1.0, 2.0, 3.0], [2.0, 1.0, 2.0 / 3])  # x = line number = SFT step
    ax = Figure().subplots()
    _draw(ax, SFT_PANEL, sft_rows, ["loss"], [], smoothing=0.0)
    assert ax.get_xlabel() == "SFT step"
    assert {panel.xlabel for panel in metric_panels(records)} == {"GRPO step (0 = after SFT)"}
    # Without an SFT stage there is no SFT panel and no "after SFT" label.
    (tmp_path / "sft_metrics.jsonl").unlink()
    write_metrics(tmp_path, training_records(steps=4))
    assert "sft_loss.png" not in {p.name for p in make_report(tmp_path)}
    assert {panel.xlabel for panel in metric_panels(training_records(steps=4))} == {"step"}


def test_missing_metrics_are_skipped(tmp_path):
    """A beta = 0 run logs no kl; an old run has no entropy; null-only metrics count as missing."""
    records = [{"step": s, "reward/mean": 0.5, "loss": 0.1, "grad_norm": 1.0, "entropy": None} for s in (1, 2, 3)]
    write_metrics(tmp_path, records)
    names = {p.name for p in make_report(tmp_path)}
    assert names == {"reward.png", "loss.png", "grad_norm.png", SUMMARY}


def test_single_step(tmp_path):
    write_metrics(tmp_path, training_records(steps=1, eval_every=1))
    for path in make_report(tmp_path):
        assert_valid_png(path)


def test_nulls_are_gaps_not_errors(tmp_path):
    records = training_records(steps=6)
    for record in records[::2]:
        record.update({k: None for k in record if k != "step"})
    write_metrics(tmp_path, records)
    assert (tmp_path / "report" / "kl.png") in make_report(tmp_path)
    steps, values = series(read_metrics(tmp_path / "metrics.jsonl"), "kl")
    assert len(steps) == len(values) and math.isnan(values[0])


def test_empty_file_is_a_clear_error(tmp_path):
    write_metrics(tmp_path, [])
    with pytest.raises(ReportError, match="empty"):
        make_report(tmp_path)


def test_missing_file_and_nothing_to_plot(tmp_path):
    with pytest.raises(ReportError, match="not found"):
        make_report(tmp_path / "nope")
    write_metrics(tmp_path, [{"step": 1, "time/step": 0.3}])
    with pytest.raises(ReportError, match="no plottable metrics"):
        make_report(tmp_path)


def test_malformed_lines(tmp_path):
    path = write_metrics(tmp_path, training_records(steps=3))
    path.write_text(path.read_text() + '{"step": 4, "reward/me')  # run killed mid-write: last line skipped
    assert len(read_metrics(path)) == len(training_records(steps=3))
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ReportError, match=r"metrics.jsonl:2: not valid JSON"):
        read_metrics(path)


def test_ema_hand_worked():
    # w = 0.5: s1 = 0.5*0 + 0.5*0 = 0 -> 0/(1-0.5) = 0; s2 = 0.5 -> 0.5/0.75; s3 = 0.75 -> 0.75/0.875
    assert ema([0.0, 1.0, 1.0], 0.5) == pytest.approx([0.0, 2 / 3, 6 / 7])
    smoothed = ema([1.0, math.nan, 3.0], 0.5)  # NaN stays a gap and does not move the average
    assert smoothed[0] == 1.0 and math.isnan(smoothed[1]) and smoothed[2] == pytest.approx((0.25 + 1.5) / 0.75)
    assert ema([2.0, 4.0], 0.0) == [2.0, 4.0]
    with pytest.raises(ValueError):
        ema([1.0], 1.0)


def test_cli(tmp_path, capsys):
    write_metrics(tmp_path, training_records(steps=4))
    assert main([str(tmp_path), "--smoothing", "0"]) == 0
    assert (tmp_path / "report" / SUMMARY).is_file() and SUMMARY in capsys.readouterr().out
    assert main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("thinkrl report: error:")


def test_cli_subprocess(tmp_path):
    write_metrics(tmp_path, training_records(steps=4))
    result = subprocess.run([sys.executable, "-m", "train.report", str(tmp_path)], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report" / "accuracy.png").is_file()
