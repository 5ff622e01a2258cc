"""The run directory and experiment tracking: resolved config, metrics.jsonl, samples.jsonl and W&B (rank 0 only).

Every line is flushed as it is written, so a crash loses nothing already logged. The logs always match the weights:
a run resumed from the checkpoint of step k drops the lines the interrupted attempt wrote after step k, and a fresh
start (also `checkpoint.resume=auto` with nothing saved yet) starts them empty, so each step is logged exactly once
whenever the process was killed. A directory that already holds a run is never started over (`check_run_dir`).
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from train.config import ConfigError
from train.files import write_atomic


def make_run_dir(output_dir: str, run_name: str | None, config_stem: str) -> Path:
    """`output_dir/run_name`, or `output_dir/<config stem>-<timestamp>` when no name is given."""
    name = run_name or f"{config_stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return Path(output_dir) / name


MIN_FREE_MIB = 64
"""Below this much free space on output_dir's filesystem a run is refused before the model loads: the first
checkpoint or even metrics.jsonl would fail hours later (a real checkpoint needs far more; this catches a full disk)."""
RUN_FILES = ("config.yaml", "metrics.jsonl", "samples.jsonl", "checkpoints", "sft_checkpoints")
"""What marks a directory as holding a run, for `check_run_dir`."""


def check_output_dir(output_dir: str, *, min_free_mib: int = MIN_FREE_MIB) -> None:
    """output_dir (or, when it does not exist yet, its nearest existing parent) is a writable directory with at least
    `min_free_mib` free. Writes nothing that stays: an existing output_dir gets a probe file, deleted at once, since
    permission bits alone do not show a read-only mount or, for root, anything at all."""
    path = Path(output_dir).expanduser().absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"output_dir: {output_dir}: {existing} is not a directory")
    try:
        if existing == path:
            tempfile.TemporaryFile(dir=path).close()
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "cannot create directories here", str(existing))
    except OSError as exc:
        raise ConfigError(f"output_dir: {output_dir}: not writable ({exc.strerror or exc}: {exc.filename or existing})") from None
    free_mib = shutil.disk_usage(existing).free / 2**20
    if free_mib < min_free_mib:
        raise ConfigError(f"output_dir: {output_dir}: only {free_mib:.1f} MiB free on its filesystem (at least {min_free_mib} MiB "
                          "needed for logs and checkpoints); free some space or choose another output_dir")


def check_run_dir(run_dir: Path, *, resume: str | None) -> None:
    """Refuse to start a fresh run (no `checkpoint.resume`) in a directory that already holds one: its metrics would
    be appended to and keep-last pruning would delete checkpoints. Nothing is written or removed."""
    if resume is not None or not run_dir.is_dir():
        return
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if found:
        raise ConfigError(f"run_name: {run_dir} already holds a run ({', '.join(found)}); pass checkpoint.resume=auto to "
                          "continue it, or choose another run_name")


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
    write_atomic(path, "".join(line + "\n" for line in kept))


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
        write_atomic(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        if resume_step is not None:
            # Lines past the checkpoint were logged by the interrupted run after its last save; the resumed run
            # writes those steps again, so drop them to keep one line per step.
            for name in ("metrics.jsonl", "samples.jsonl"):
                _truncate_after(run_dir / name, resume_step)
        # A fresh start writes every step from 0 again: lines of an earlier attempt that died before its first
        # checkpoint (`checkpoint.resume=auto` found nothing to resume) are dropped, as resuming drops those after k.
        mode = "a" if resume_step is not None else "w"
        self._metrics = open(run_dir / "metrics.jsonl", mode, buffering=1)
        self._samples = open(run_dir / "samples.jsonl", mode, buffering=1)
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
