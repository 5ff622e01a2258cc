"""Checkpoint files in-process: atomic save (a crash mid-save keeps the previous one usable), keep-last-K, the guard."""

import pytest
import torch

from train.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, save_checkpoint
from helpers import N, build_engine, make_batch, make_tiny_model, run_update


def make_engine(tokenizer, seed=0):
    return build_engine(make_tiny_model(tokenizer, seed=seed))


def weights(engine):
    return {n: p.detach().clone() for n, p in engine.module.named_parameters()}


def test_crash_mid_save_keeps_previous_checkpoint(tokenizer, dist_single, tmp_path):
    engine = make_engine(tokenizer, seed=0)
    root = tmp_path / "checkpoints"
    save_checkpoint(engine, root, 1, {"step": 1, "note": "first"}, rank=0, world_size=1, keep_last=2)
    saved = weights(engine)
    with torch.no_grad():
        for p in engine.module.parameters():
            p.add_(1.0)
    # The trainer state cannot be pickled: the save dies after DeepSpeed wrote its files, before the rename.
    with pytest.raises(Exception):
        save_checkpoint(engine, root, 2, {"step": 2, "bad": lambda: None}, rank=0, world_size=1, keep_last=2)
    assert (root / ".staging_step_00000002").exists() and not (root / "step_00000002").exists()
    assert find_checkpoint(tmp_path) == root / "step_00000001"  # `latest` still names the good one

    fresh = make_engine(tokenizer, seed=7)
    state = load_checkpoint(fresh, find_checkpoint(root), rank=0, world_size=1)
    assert state == {"step": 1, "note": "first"}
    for name, value in weights(fresh).items():
        assert torch.equal(value, saved[name]), name


def test_keep_last_and_stale_staging_pruned(tokenizer, dist_single, tmp_path):
    engine = make_engine(tokenizer)
    root = tmp_path / "checkpoints"
    (root / ".staging_step_00000009").mkdir(parents=True)
    for step in (1, 2, 3):
        save_checkpoint(engine, root, step, {"step": step}, rank=0, world_size=1, keep_last=2)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000002", "step_00000003"]
    assert (root / "latest").read_text() == "step_00000003"


def test_load_refuses_incomplete_or_other_world_size(tokenizer, dist_single, tmp_path):
    engine = make_engine(tokenizer)
    root = tmp_path / "checkpoints"
    final = save_checkpoint(engine, root, 1, {"step": 1}, rank=0, world_size=1, keep_last=2)
    with pytest.raises(CheckpointError, match="saved with world size 1, now 2"):
        load_checkpoint(engine, final, rank=0, world_size=2)
    (final / "COMPLETE").unlink()
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        load_checkpoint(engine, final, rank=0, world_size=1)


def test_non_finite_gradients_skip_the_update(tokenizer, dist_single):
    batch = make_batch(tokenizer)
    batch.advantages[3] = float("nan")
    metrics, delta = run_update(tokenizer, batch, micro_batch_size=N // 2, loss_type="dapo")
    assert metrics["skipped"] == 1.0
    assert all(d.abs().max() == 0 for d in delta.values()), "a skipped step must not move any weight"
    clean, clean_delta = run_update(tokenizer, make_batch(tokenizer), micro_batch_size=N // 2, loss_type="dapo")
    assert clean["skipped"] == 0.0 and any(d.abs().max() > 0 for d in clean_delta.values())
