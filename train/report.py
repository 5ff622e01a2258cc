"""Plots of a run: read `RUN_DIR/metrics.jsonl`, write one PNG per metric group and a `summary.png` grid to `RUN_DIR/report/`.

    thinkrl report runs/quickstart [--smoothing 0.6]        (also `python -m train.report`)

Panels (a panel whose metrics are absent from the file is skipped): SFT loss (from `sft_metrics.jsonl`, when the
run had an SFT stage; step 0 of the other panels is then the policy after SFT), reward (total and each `rewards/NAME`, with
`eval/reward` points), accuracy (train `accuracy` with `eval/pass@K` / `eval/mean@K` points), completion length
(mean with the min-max band, `eval/completion_length` points), truncated fraction, KL, entropy, loss, grad norm.

Each metric is read from the lines that carry it, so eval metrics may sit on the training line of their step or on a
line of their own. `null` (how the tracker writes NaN/inf) leaves a gap in the line. With `smoothing` > 0 a line is
drawn faint as logged with an exponential moving average on top (TensorBoard's debiased EMA; weight = `smoothing`).

Figures are built with `matplotlib.figure.Figure` and rendered by Agg: no pyplot, so no GUI backend and no global
state, and it is safe to call from the training process.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from train.cli_args import CommandParser, print_error, program

COMMAND = "report"
REPORT_DIR = "report"
SUMMARY = "summary.png"
_MARKER_MAX_POINTS = 30  # draw point markers on short series, so a single step still shows up
_MIN_POINTS_FOR_EMA = 5  # below this a smoothed line only hides the data
_LEGEND_INSIDE_MAX = 3  # longer legends go beside the axes
_EVAL_PREFIX = "eval/"


class ReportError(ValueError):
    """metrics.jsonl is missing, empty, malformed, or has nothing to plot; the message names the file."""


@dataclass(frozen=True)
class Panel:
    """One axes: lines over training steps, optional eval points and a low-high band."""

    name: str  # PNG file stem
    title: str
    ylabel: str
    lines: tuple[str, ...] = ()  # exact metric keys drawn as lines
    line_prefixes: tuple[str, ...] = ()  # ... and every key starting with one of these (e.g. "rewards/")
    point_prefixes: tuple[str, ...] = ()  # sparse metrics (eval) drawn as markers, keys starting with these
    band: tuple[str, str] | None = None  # (low key, high key) shaded between
    ylim: tuple[float, float] | None = None
    xlabel: str = "step"


PANELS = (
    Panel("reward", "Reward", "reward", lines=("reward/mean",), line_prefixes=("rewards/",), point_prefixes=("eval/reward",)),
    Panel("accuracy", "Accuracy", "fraction correct", lines=("accuracy",), point_prefixes=("eval/pass@", "eval/mean@"),
          ylim=(-0.03, 1.03)),
    Panel("completion_length", "Completion length", "tokens", lines=("completion_length/mean",),
          point_prefixes=("eval/completion_length",), band=("completion_length/min", "completion_length/max")),
    Panel("truncated", "Truncated completions", "fraction", lines=("truncated_fraction",),
          point_prefixes=("eval/truncated_fraction",), ylim=(-0.03, 1.03)),
    Panel("kl", "KL to reference (k3)", "KL", lines=("kl",)),
    Panel("entropy", "Policy entropy", "nats / token", lines=("entropy",)),
    Panel("loss", "GRPO loss", "loss", lines=("loss",)),
    Panel("grad_norm", "Gradient norm (before clipping)", "L2 norm", lines=("grad_norm",)),
)
# Drawn from sft_metrics.jsonl (one line per SFT optimiser step), when the run had an SFT stage.
SFT_PANEL = Panel("sft_loss", "SFT loss (completion tokens)", "NLL / token", lines=("loss",), xlabel="SFT step")
SFT_METRICS = "sft_metrics.jsonl"


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl. A malformed *last* line (a run killed mid-write) is skipped; any other is an error."""
    if not path.is_file():
        raise ReportError(f"{path}: not found")
    lines = [(i + 1, line) for i, line in enumerate(path.read_text().splitlines()) if line.strip()]
    records = []
    for index, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if index == len(lines) - 1 and records:
                print(f"{program(COMMAND)}: warning: {path}:{number}: skipped an incomplete last line ({exc})", file=sys.stderr)
                continue
            raise ReportError(f"{path}:{number}: not valid JSON ({exc})") from None
        if not isinstance(record, dict):
            raise ReportError(f"{path}:{number}: expected a JSON object per line, got {type(record).__name__}")
        records.append(record)
    if not records:
        raise ReportError(f"{path}: no metrics (the file is empty)")
    return records


def _number(value) -> float:
    """A float for plotting; null, strings and other non-numbers become NaN (a gap)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of `key` over the records that carry it; a record without `step` counts as its line number."""
    steps, values = [], []
    for i, record in enumerate(records):
        if key in record:
            steps.append(_number(record.get("step", i + 1)))
            values.append(_number(record[key]))
    return steps, values


def ema(values: list[float], smoothing: float) -> list[float]:
    """Debiased exponential moving average (TensorBoard's): s_t = w*s_{t-1} + (1-w)*x_t, divided by 1 - w^t.
    NaNs stay NaN and do not update the average.

    >>> [round(v, 3) for v in ema([0.0, 1.0, 1.0], 0.5)]
    [0.0, 0.667, 0.857]
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    out, state, seen = [], 0.0, 0
    for x in values:
        if math.isnan(x):
            out.append(math.nan)
            continue
        seen += 1
        state = smoothing * state + (1.0 - smoothing) * x
        out.append(state / (1.0 - smoothing**seen))
    return out


def _keys(panel_keys: tuple[str, ...], prefixes: tuple[str, ...], all_keys: list[str]) -> list[str]:
    keys = [k for k in panel_keys if k in all_keys]
    keys += [k for k in all_keys if k.startswith(prefixes) and k not in keys] if prefixes else []
    return keys


def _all_keys(records: list[dict]) -> list[str]:
    return list(dict.fromkeys(key for record in records for key in record if key != "step"))


def _has_data(records: list[dict], key: str) -> bool:
    return any(not math.isnan(v) for v in series(records, key)[1])


def _panel_keys(panel: Panel, records: list[dict], all_keys: list[str]) -> tuple[list[str], list[str]]:
    """(line keys, point keys) of `panel` that have at least one finite value."""
    lines = [k for k in _keys(panel.lines, panel.line_prefixes, all_keys) if _has_data(records, k)]
    points = [k for k in _keys((), panel.point_prefixes, all_keys) if _has_data(records, k)]
    return lines, points


def _legend_entries(panel: Panel, lines: list[str], points: list[str]) -> int:
    return len(lines) + len(points) + bool(panel.band)


def _draw(ax, panel: Panel, records: list[dict], lines: list[str], points: list[str], smoothing: float) -> None:
    if panel.band and all(_has_data(records, k) for k in panel.band):
        (steps, low), (_, high) = series(records, panel.band[0]), series(records, panel.band[1])
        if len(low) == len(high):
            ax.fill_between(steps, low, high, alpha=0.15, color="C0", linewidth=0, label="min-max")
    colors = {key: f"C{index % 10}" for index, key in enumerate(lines)}
    for key in lines:
        steps, values = series(records, key)
        marker = "o" if len(steps) <= _MARKER_MAX_POINTS else None
        finite = sum(not math.isnan(v) for v in values)
        if smoothing > 0 and finite >= _MIN_POINTS_FOR_EMA:
            ax.plot(steps, values, color=colors[key], alpha=0.3, linewidth=1.0, marker=marker, markersize=2.5)
            ax.plot(steps, ema(values, smoothing), color=colors[key], linewidth=1.8, label=key)
        else:
            ax.plot(steps, values, color=colors[key], linewidth=1.5, marker=marker, markersize=3.5, label=key)
    for key in points:
        # eval/rewards/NAME takes the colour of rewards/NAME, so a train curve and its eval points read as a pair.
        color = colors.get(key.removeprefix(_EVAL_PREFIX)) or f"C{len(colors) % 10}"
        colors.setdefault(key, color)
        steps, values = series(records, key)
        ax.plot(steps, values, color=color, linestyle="--", linewidth=1.0, marker="D", markersize=5, label=key)
    for step in health_steps(records):  # train/health.py: where a check said the run was going wrong
        ax.axvline(step, color="red", alpha=0.5, linestyle=":", linewidth=1.2)
    ax.set_title(panel.title)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    drawn_steps = [x for key in (*lines, *points) for x in series(records, key)[0] if not math.isnan(x)]
    if drawn_steps and max(drawn_steps) - min(drawn_steps) < 2:  # one or two steps: whole-number ticks around them
        ax.set_xlim(min(drawn_steps) - 1, max(drawn_steps) + 1)
    if panel.ylim is not None:
        ax.set_ylim(*panel.ylim)
    ax.grid(alpha=0.3)
    entries = _legend_entries(panel, lines, points)
    if entries > _LEGEND_INSIDE_MAX:  # beside the axes: a long legend inside would cover the curves
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    elif entries > 1:
        ax.legend(fontsize="small")


def health_steps(records: list[dict]) -> list[float]:
    """Steps at which a health check fired (a `health/<check>` key logged as 1), marked on every plot."""
    return sorted({record["step"] for record in records if "step" in record
                   and any(key.startswith("health/") and value == 1 for key, value in record.items())})


def metric_panels(records: list[dict]) -> list[Panel]:
    """PANELS, with the x axis saying that step 0 is the policy after SFT when the run had an SFT stage."""
    if any("sft/steps" in record and record.get("step") == 0 for record in records):
        return [replace(panel, xlabel="GRPO step (0 = after SFT)") for panel in PANELS]
    return list(PANELS)


def make_report(run_dir: Path, *, smoothing: float = 0.6, dpi: int = 110) -> list[Path]:
    """Write `run_dir/report/<panel>.png` for every panel with data, then `summary.png`; returns the paths written."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    all_keys = _all_keys(records)
    sources = [(panel, records) for panel in metric_panels(records)]
    if (run_dir / SFT_METRICS).is_file():
        sources.insert(0, (SFT_PANEL, read_metrics(run_dir / SFT_METRICS)))
    drawn = [(panel, rows, *_panel_keys(panel, rows, _all_keys(rows))) for panel, rows in sources]
    drawn = [(panel, rows, lines, points) for panel, rows, lines, points in drawn if lines or points]
    if not drawn:
        raise ReportError(f"{run_dir / 'metrics.jsonl'}: no plottable metrics (keys: {', '.join(all_keys) or 'none'})")
    out_dir = run_dir / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for panel, rows, lines, points in drawn:
        wide = _legend_entries(panel, lines, points) > _LEGEND_INSIDE_MAX  # room for the legend beside the axes
        fig = Figure(figsize=(8.8 if wide else 6.4, 4.0), layout="constrained")
        _draw(fig.subplots(), panel, rows, lines, points, smoothing)
        written.append(out_dir / f"{panel.name}.png")
        fig.savefig(written[-1], dpi=dpi)
    ncols = min(3, len(drawn))
    nrows = math.ceil(len(drawn) / ncols)
    fig = Figure(figsize=(5.2 * ncols, 3.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (panel, rows, lines, points) in zip(axes, drawn):
        _draw(ax, panel, rows, lines, points, smoothing)
    for ax in axes[len(drawn):]:
        ax.set_visible(False)
    fig.suptitle(f"{run_dir.name}: {len(records)} logged line{'' if len(records) == 1 else 's'}", fontweight="bold")
    written.append(out_dir / SUMMARY)
    fig.savefig(written[-1], dpi=dpi)
    return written


def main(argv: list[str] | None = None) -> int:
    """`thinkrl report RUN_DIR` (also `python -m train.report`). A missing/empty/malformed metrics.jsonl exits 2 with
    one `thinkrl report: error:` line."""
    parser = CommandParser(COMMAND, description="Plot a run's metrics.jsonl into RUN_DIR/report/ (one PNG per metric "
                           "group and a summary.png grid).")
    parser.add_argument("run_dir", type=Path, help="run directory holding metrics.jsonl, e.g. runs/quickstart")
    parser.add_argument("--smoothing", type=float, default=0.6, help="EMA weight in [0, 1); 0 draws the raw lines only")
    args = parser.parse_args(argv)
    if not 0.0 <= args.smoothing < 1.0:
        parser.error(f"--smoothing {args.smoothing}: must be in [0, 1)")
    try:
        paths = make_report(args.run_dir, smoothing=args.smoothing)
    except ReportError as exc:
        return print_error(COMMAND, str(exc))
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
