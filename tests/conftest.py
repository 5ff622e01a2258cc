"""Shared fixtures: a tiny random-init causal LM and a byte-level tokenizer, built offline on CPU."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

@pytest.fixture(scope="session")
def tokenizer():
    from train.model import build_byte_tokenizer

    return build_byte_tokenizer()


@pytest.fixture(scope="session")
def dist_single():
    """torch.distributed initialised for this one process (world size 1, gloo), as `python -m train` does."""
    from train.distributed import init_distributed

    return init_distributed()
