"""Checkpoints that resume exactly and survive a crash mid-save.

Layout under `<run_dir>/checkpoints/` (GRPO) and `<run_dir>/sft_checkpoints/` (the SFT stage, the same layout):
    step_00000010/            DeepSpeed state (weights, optimiser, scheduler, ZeRO shards of every rank)
        trainer_state_rank{r}.pt   step, prompt-sampler position, RNG states of rank r, W&B run id
        COMPLETE                   written last: a directory without it is not a checkpoint; {step, world_size, stage}
    latest                    name of the newest complete checkpoint, replaced atomically

A checkpoint is written under `.staging_<tag>/` and renamed into place only after every rank has finished, and
`latest` is switched after the rename, so a crash at any moment leaves the previous checkpoint as `latest`. `latest` is
the truth: pruning keeps the `keep_last` newest checkpoints up to it and deletes any newer one (written by an attempt
that died before switching `latest`, or abandoned by resuming from an older one), never `latest` itself. A save that
fails on the filesystem (a full disk, a quota) removes its staging directory and raises a one-line CheckpointError;
the previous checkpoint stays `latest`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from train.distributed import barrier
from train.files import write_atomic

LATEST = "latest"
COMPLETE = "COMPLETE"
SFT_CHECKPOINTS = "sft_checkpoints"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names its path."""


def checkpoint_tag(step: int) -> str:
    return f"step_{step:08d}"


def capture_rng() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(engine, root: Path, step: int, trainer_state: dict[str, Any], *, rank: int, world_size: int, keep_last: int,
                    stage: str = "grpo") -> Path:
    """Collective: every rank calls it. Returns the final checkpoint directory. `stage` ("grpo" or "sft") is written
    in the COMPLETE marker, so a resume knows which stage the checkpoint continues."""
    tag = checkpoint_tag(step)
    staging = root / f".staging_{tag}"
    final = root / tag
    if rank == 0:
        with _write_errors(root, staging, tag):
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
    barrier()
    with _write_errors(root, staging, tag):
        engine.save_state(str(staging), tag)
        torch.save(trainer_state, staging / tag / f"trainer_state_rank{rank}.pt")
    barrier()
    if rank == 0:
        with _write_errors(root, staging, tag):
            write_atomic(staging / tag / COMPLETE, json.dumps({"step": step, "world_size": world_size, "stage": stage}))
            _remove(final)  # a checkpoint of the same step from an earlier attempt
            os.replace(staging / tag, final)
            shutil.rmtree(staging, ignore_errors=True)
            write_atomic(root / LATEST, tag)
        _prune(root, keep_last)
    barrier()
    return final


@contextmanager
def _write_errors(root: Path, staging: Path, tag: str) -> Iterator[None]:
    """A write that fails (OSError; torch.save reports a full disk as a RuntimeError) becomes one CheckpointError
    line; the partial staging directory is removed so the space is free again, and `latest` is left as it was."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        try:
            free = f"{shutil.disk_usage(root).free / 2**20:.1f} MiB free there"
        except OSError:
            free = "free space unknown"
        latest = root / LATEST
        kept = f"{latest.read_text().strip()} stays the latest checkpoint" if latest.is_file() else "no earlier checkpoint exists"
        raise CheckpointError(f"checkpoint: cannot save {tag} in {root} ({exception_line(exc)}; {free}); {kept}") from None


def _remove(checkpoint: Path) -> None:
    # The marker goes first, so a deletion cut short never leaves something that looks like a complete checkpoint.
    (checkpoint / COMPLETE).unlink(missing_ok=True)
    shutil.rmtree(checkpoint, ignore_errors=True)


def _step_of(path: Path) -> int:
    try:
        return int(path.name.removeprefix("step_"))
    except ValueError:
        return -1


def _prune(root: Path, keep_last: int) -> None:
    latest = _step_of(root / (root / LATEST).read_text().strip())
    candidates = sorted(root.glob("step_*"), key=_step_of)
    kept = [p for p in candidates if (p / COMPLETE).is_file() and 0 <= _step_of(p) <= latest][-keep_last:]
    for old in candidates:
        if old not in kept:  # older than the last keep_last, newer than latest, or incomplete
            _remove(old)
    for stale in root.glob(".staging_*"):  # left by a crash mid-save
        shutil.rmtree(stale, ignore_errors=True)


def exception_line(exc: BaseException) -> str:
    """`Type: message` on one line: the first two non-empty lines of the message, and how many more there were (a
    state-dict mismatch lists every tensor)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:2]) + (f" (... {len(lines) - 2} more lines)" if len(lines) > 2 else "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def find_checkpoint(path: Path) -> Path | None:
    """A checkpoint directory from: a checkpoint itself, a `checkpoints/` root (its `latest`), or a run directory."""
    for candidate_root in (path, path / "checkpoints"):
        latest = candidate_root / LATEST
        if latest.is_file():
            return candidate_root / latest.read_text().strip()
    if (path / COMPLETE).is_file():
        return path
    return None


def read_marker(checkpoint_dir: Path) -> dict[str, Any]:
    """The COMPLETE marker of `checkpoint_dir` ({step, world_size, stage}; checkpoints from before SFT checkpoints
    existed have no stage and are GRPO's)."""
    marker = checkpoint_dir / COMPLETE
    if not marker.is_file():
        raise CheckpointError(f"checkpoint.resume: {checkpoint_dir}: not a complete checkpoint (no {COMPLETE} marker)")
    try:
        saved = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint.resume: {checkpoint_dir}: unreadable {COMPLETE} marker ({exception_line(exc)})") from None
    return {"stage": "grpo", **saved}


def load_checkpoint(engine, checkpoint_dir: Path, *, rank: int, world_size: int) -> dict[str, Any]:
    """Restore DeepSpeed state into `engine` and return this rank's trainer state. Collective."""
    saved = read_marker(checkpoint_dir)
    if saved.get("world_size") != world_size:
        raise CheckpointError(
            f"checkpoint.resume: {checkpoint_dir}: saved with world size {saved.get('world_size')}, now {world_size}; "
            "exact resume needs the same number of ranks"
        )
    try:
        path = engine.load_state(str(checkpoint_dir.parent), checkpoint_dir.name)
        state = torch.load(checkpoint_dir / f"trainer_state_rank{rank}.pt", weights_only=False)
    except Exception as exc:  # DeepSpeed and torch raise many types on a damaged file: report them all the same way
        shape = "; it was saved for a model of another shape than model.* describes" if "size mismatch" in str(exc) else ""
        raise CheckpointError(f"checkpoint.resume: {checkpoint_dir}: cannot load ({exception_line(exc)}){shape}") from None
    if path is None:
        raise CheckpointError(f"checkpoint.resume: {checkpoint_dir}: DeepSpeed found no checkpoint there")
    return state


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint that `checkpoint.resume` asks for: None for a fresh start (also `auto` with nothing saved yet).
    `auto` prefers the run's GRPO checkpoint and falls back to its SFT stage's (a run stopped during SFT, or after
    it and before GRPO's first save); `read_marker(...)["stage"]` tells which one was found."""
    if resume is None:
        return None
    if resume == "auto":
        return find_checkpoint(run_dir) or find_checkpoint(run_dir / SFT_CHECKPOINTS)
    found = find_checkpoint(Path(resume)) or find_checkpoint(Path(resume) / SFT_CHECKPOINTS)
    if found is None:
        raise CheckpointError(f"checkpoint.resume: {resume}: no checkpoint there (no 'latest' file or {COMPLETE} marker)")
    return found


def resume_point(resume: str | None, run_dir: Path, *, has_sft: bool) -> tuple[Path | None, Path | None]:
    """(GRPO checkpoint, SFT-stage checkpoint) that `checkpoint.resume` asks for; at most one is not None."""
    found = resolve_resume(resume, run_dir)
    if found is None or read_marker(found)["stage"] == "grpo":
        return found, None
    if not has_sft:
        raise CheckpointError(f"checkpoint.resume: {found} is an SFT-stage checkpoint, but the config has no sft section")
    return None, found


def export_policy(engine, tokenizer, out_dir: Path, *, is_main: bool, adapter_dir: Path | None = None) -> None:
    """Write the policy (a train/engine.py Engine) as an HF directory (`from_pretrained`-loadable). Collective: under
    ZeRO-3 every rank takes part in gathering the shards. A LoRA policy is written merged (W + s·B·A, train/lora.py), a
    plain model that needs no peft to load; with `adapter_dir`, the adapter alone too (peft's format, loadable onto
    the base model)."""
    full = engine.full_state_dict(every_rank=False)  # rank 0's; None elsewhere
    if is_main:
        if engine.is_lora:
            engine.hf_module.save_pretrained(out_dir, state_dict=engine.merge_lora(full), safe_serialization=True)
            if adapter_dir is not None:
                engine.module.save_pretrained(adapter_dir, state_dict=full, safe_serialization=True)
                tokenizer.save_pretrained(adapter_dir)
        else:
            engine.module.save_pretrained(out_dir, state_dict=full, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
    barrier()
