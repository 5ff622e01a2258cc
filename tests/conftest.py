"""Shared fixtures: a tiny random-init causal LM and a byte-level tokenizer, built offline on CPU."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_SHAPE = dict(
    arch="qwen2", hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    intermediate_size=64, max_position_embeddings=256, tie_word_embeddings=True,
)


@pytest.fixture(scope="session")
def tokenizer():
    from train.model import build_byte_tokenizer, prepare_tokenizer_for_generation

    tok = build_byte_tokenizer()
    prepare_tokenizer_for_generation(tok)
    return tok


def make_tiny_model(tokenizer, seed: int = 0, **overrides):
    from train.model import build_tiny_model

    shape = {**TINY_SHAPE, **overrides}
    return build_tiny_model(tokenizer, **shape, dtype="float32", attn_implementation="eager", seed=seed)


@pytest.fixture(scope="session")
def dist_single():
    """torch.distributed initialised for this one process (world size 1, gloo), as `python -m train` does."""
    from train.distributed import init_distributed

    return init_distributed()
