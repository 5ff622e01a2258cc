"""Settings as values: each stage's settings built once from the config into a frozen value the component that gives
them meaning defines (SamplingParams in train/rollout.py, GRPOLoss in train/loss.py, MicroBatching in
train/micro_batches.py, EngineSpec in train/engine_spec.py), then handed down. Nothing between the config and that component
passes a knob on by hand: a new loss option is a key in train/config.py's GRPOConfig and a field of GRPOLoss, and
`values_from` carries it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, TypeVar

from data.tool_protocol import ToolProtocol
from rewards.code_exec import UNSAFE_ENV, sandbox_problem
from train.config import ConfigError, ToolsConfig, TrainConfig
from train.engine_spec import EngineSpec
from train.loss import GRPOLoss
from train.micro_batches import MicroBatching
from train.rollout import SamplingParams
from train.tools import ToolSettings

Settings = TypeVar("Settings")


def values_from(settings: type[Settings], *sections: Any) -> Settings:
    """The frozen dataclass `settings` (SamplingParams, GRPOLoss, MicroBatching, ...) filled from the config keys of
    the same names, looked up in `sections` in order. This is how settings become values once, at set-up: a new
    option is a key in train/config.py and a field in the module that gives it meaning, and nothing in between
    passes it on by hand."""
    values = {}
    for field in dataclasses.fields(settings):
        owner = next((section for section in sections if field.name in type(section).model_fields), None)
        if owner is None:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise TypeError(f"{settings.__name__}.{field.name}: no config key of that name in the sections given")
            continue
        values[field.name] = getattr(owner, field.name)
    return settings(**values)


def sampling_params(cfg: TrainConfig) -> SamplingParams:
    """rollout.max_completion_length, temperature, top_p, top_k (and rollout.tools) as one value for every sampler of
    the run: training rollouts, evaluation, `thinkrl sample` and the preflight all call the tool when it is set."""
    return dataclasses.replace(values_from(SamplingParams, cfg.rollout), tools=tool_settings(cfg.rollout.tools))


def trace_protocol(cfg: TrainConfig) -> ToolProtocol | None:
    """The markers sft.traces: tool writes: rollout.tools' own, or the markdown preset when tools are off (the no-tool
    ablation trains on the same text). None for reasoning traces."""
    if cfg.sft is None or cfg.sft.traces != "tool":
        return None
    tools = tool_settings(cfg.rollout.tools) if cfg.rollout.tools is not None else None
    return tools.protocol if tools is not None else ToolProtocol.preset("markdown")


def tool_settings(tools: ToolsConfig | None) -> ToolSettings | None:
    """rollout.tools as the value the samplers use; refuses a tool without a working sandbox before anything loads."""
    if tools is None:
        return None
    if not tools.unsafe_no_sandbox and os.environ.get(UNSAFE_ENV, "") != "1":
        problem = sandbox_problem()
        if problem is not None:
            raise ConfigError(f"rollout.tools: {problem.replace('code_exec option unsafe_no_sandbox', 'option rollout.tools.unsafe_no_sandbox')}")
    protocol = ToolProtocol.preset(tools.format, call_start=tools.call_start, call_end=tools.call_end,
                                   response_template=tools.response_template,
                                   max_tool_response_length=tools.max_tool_response_length,
                                   tool_response_truncate_side=tools.tool_response_truncate_side)
    return ToolSettings(protocol=protocol, max_tool_calling_iterations=tools.max_tool_calling_iterations,
                        time_limit_s=tools.time_limit_s, memory_mb=tools.memory_mb, num_workers=tools.num_workers,
                        unsafe_no_sandbox=tools.unsafe_no_sandbox)


def grpo_loss_fn(cfg: TrainConfig) -> GRPOLoss:
    """The GRPO loss with every grpo.* option bound (and rollout.max_completion_length, dr_grpo's constant)."""
    return values_from(GRPOLoss, cfg.grpo, cfg.rollout)


def micro_batching(cfg: TrainConfig) -> MicroBatching:
    """optim.micro_batch_size rows, or an optim.max_tokens_per_micro_batch token budget."""
    return values_from(MicroBatching, cfg.optim)


def engine_spec(cfg: TrainConfig, *, world_size: int, rows_per_rank: int, overrides: dict | None) -> EngineSpec:
    """The GRPO engine's spec: deepspeed.*, the optim.* optimiser and schedule, `rows_per_rank` completions per step
    in optim.micro_batch_size micro-batches. The SFT stage takes it with sft.*'s micro-batch and optimiser values
    (cold_start; sft_stage sets its step count and accumulation)."""
    optim = cfg.optim
    return EngineSpec(
        zero_stage=cfg.deepspeed.zero_stage, micro_batch_size=optim.micro_batch_size,
        grad_accum_steps=rows_per_rank // optim.micro_batch_size, world_size=world_size,
        max_grad_norm=optim.max_grad_norm, dtype=cfg.model.dtype, lr=optim.lr, betas=tuple(optim.adam_betas),
        eps=optim.adam_eps, weight_decay=optim.weight_decay, warmup_steps=optim.warmup_steps,
        total_steps=cfg.max_steps * cfg.grpo.num_iterations, schedule=optim.lr_scheduler,
        offload_optimizer=cfg.deepspeed.offload_optimizer, offload_param=cfg.deepspeed.offload_param,
        overrides=overrides or {},
    )
