"""The run directory and experiment tracking: resolved config, metrics.jsonl, samples.jsonl and W&B (rank 0 only).

Every line is flushed as it is written, so a crash loses nothing already logged.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml


def make_run_dir(output_dir: str, run_name: str | None, config_stem: str) -> Path:
    """`output_dir/run_name`, or `output_dir/<config stem>-<timestamp>` when no name is given."""
    name = run_name or f"{config_stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return Path(output_dir) / name


def _finite(value: Any) -> Any:
    # JSON has no NaN/inf; write null so every line stays parseable by strict readers (jq, pandas).
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _truncate_after(path: Path, step: int) -> None:
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line torn by the crash
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


class RunTracker:
    """Writes the run directory on rank 0 and mirrors metrics and samples to W&B; on other ranks every call is a no-op."""

    def __init__(
        self,
        run_dir: Path,
        config: dict[str, Any],
        *,
        enabled: bool,
        wandb_mode: str,
        wandb_project: str,
        wandb_entity: str | None,
        wandb_name: str | None,
        wandb_tags: list[str],
        resume_step: int | None = None,
        wandb_run_id: str | None = None,
    ):
        self.run_dir = run_dir
        self.enabled = enabled
        self._wandb = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        if resume_step is not None:
            # Lines past the checkpoint were logged by the interrupted run after its last save; the resumed run
            # writes those steps again, so drop them to keep one line per step.
            for name in ("metrics.jsonl", "samples.jsonl"):
                _truncate_after(run_dir / name, resume_step)
        self._metrics = open(run_dir / "metrics.jsonl", "a", buffering=1)
        self._samples = open(run_dir / "samples.jsonl", "a", buffering=1)
        if wandb_mode != "disabled":
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self._wandb = wandb.init(
                project=wandb_project,
                entity=wandb_entity,
                name=wandb_name or run_dir.name,
                tags=wandb_tags,
                config=config,
                mode=wandb_mode,
                dir=str(run_dir),
                id=wandb_run_id,
                resume="allow" if wandb_run_id else None,
            )

    @property
    def wandb_run_id(self) -> str | None:
        """Saved in checkpoints so a resumed run logs into the same W&B run."""
        return None if self._wandb is None else self._wandb.id

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: _finite(v) for k, v in metrics.items()}}
        self._metrics.write(json.dumps(record) + "\n")
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def log_sft_history(self, history: list[dict[str, float]]) -> None:
        """The SFT stage's per-step metrics, one line per SFT optimiser step, to `sft_metrics.jsonl` (its own file:
        SFT steps are not GRPO steps). W&B gets the SFT summary with the step-0 metrics instead."""
        if not self.enabled:
            return
        with open(self.run_dir / "sft_metrics.jsonl", "w") as out:
            for step, metrics in enumerate(history, start=1):
                out.write(json.dumps({"sft_step": step, **{k: _finite(v) for k, v in metrics.items()}}) + "\n")

    def log_samples(self, step: int, samples: list[dict[str, Any]], table: str = "samples") -> None:
        """samples: dicts with the same keys (prompt, completion, reward, per-reward scores); `table` names the W&B
        table (training and evaluation samples have different columns, so they go to different tables)."""
        if not self.enabled or not samples:
            return
        for sample in samples:
            self._samples.write(json.dumps({"step": step, **sample}) + "\n")
        if self._wandb is not None:
            import wandb

            columns = ["step", *samples[0].keys()]
            wandb_table = wandb.Table(columns=columns, data=[[step, *(str(v) if isinstance(v, (list, dict)) else v for v in s.values())] for s in samples])
            self._wandb.log({table: wandb_table}, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._metrics.close()
        self._samples.close()
        if self._wandb is not None:
            self._wandb.finish()
