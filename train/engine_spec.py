"""How to build a training engine (train/engine.py): parallelism, precision, the AdamW optimiser and its learning-rate
schedule, as one frozen value (built from the config by train/settings.py), and the DeepSpeed JSON it stands for."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from train.distributed import local_device


@dataclass(frozen=True)
class EngineSpec:
    """How to build an engine: parallelism, precision, and the AdamW optimiser with its LR schedule."""

    zero_stage: int
    micro_batch_size: int  # rows per forward on each rank
    grad_accum_steps: int  # micro-batches per optimiser step on each rank (DeepSpeed's bookkeeping; see optimizer_step)
    world_size: int
    max_grad_norm: float
    dtype: str  # float32 | bfloat16 | float16
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    total_steps: int = 1
    schedule: str = "constant"  # constant | linear | cosine (after the warmup)
    offload_optimizer: bool = False
    offload_param: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)  # deepspeed.config_file's JSON, applied over ours

    def deepspeed_config(self) -> dict[str, Any]:
        """The DeepSpeed JSON. Batch sizes always come from thinkrl's config, so they cannot disagree."""
        zero: dict[str, Any] = {"stage": self.zero_stage}
        if self.offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": local_device().type == "cuda"}
        if self.offload_param:
            zero["offload_param"] = {"device": "cpu", "pin_memory": local_device().type == "cuda"}
        if self.zero_stage == 3:
            zero["stage3_gather_16bit_weights_on_model_save"] = True
        config: dict[str, Any] = {
            "zero_optimization": zero,
            "gradient_clipping": self.max_grad_norm,
            "bf16": {"enabled": self.dtype == "bfloat16"},
            "fp16": {"enabled": self.dtype == "float16"},
            # We hand DeepSpeed a torch.optim.AdamW; with offload it would otherwise insist on its C++ CPUAdam.
            "zero_force_ds_cpu_optimizer": False,
            # DeepSpeed checks the optimizer's exact type against its list (torch AdamW is on it, a subclass is not);
            # train/optim.py's GuardedAdamW is an AdamW whose step() may skip, which every ZeRO stage calls the same way.
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        config.update(self.overrides)
        config["train_micro_batch_size_per_gpu"] = self.micro_batch_size
        config["gradient_accumulation_steps"] = self.grad_accum_steps
        config["train_batch_size"] = self.micro_batch_size * self.grad_accum_steps * self.world_size
        return config


def lr_lambda(step: int, *, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the peak LR at optimiser step `step`: linear warmup, then constant / linear / cosine decay to 0."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))
