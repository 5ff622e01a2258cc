"""The training engine: the one place that knows how the policy is distributed (DeepSpeed ZeRO stage, device, LoRA).

`Engine.build(model, spec)` wraps `deepspeed.initialize` once, for the SFT stage and GRPO alike, from an `EngineSpec`
(train/engine_spec.py: plain values train/settings.py takes from the config). Everything else asks the engine instead of DeepSpeed:

* facts: `zero_stage`, `sharded` (ZeRO-3 partitions the parameters, so every forward is a collective), `lockstep`
  (ranks must generate in lock-step), `device`, `world_size`, `is_lora`;
* modules: `hf_module` (the transformers model log-probs and sampling call directly), `module` (what DeepSpeed wraps,
  a peft model under LoRA);
* weights: `generation_weights()` (the module to sample from: full weights gathered once under ZeRO-3, a merged
  W + s·B·A copy under LoRA),
  `full_state_dict()` (every weight in full on CPU; `merge_lora` turns it into W + s·B·A under LoRA), `reference()` (the frozen
  initial policy for the KL term);
* the optimiser step over micro-batches (`optimizer_step`, the single backward call site) and checkpoint I/O.

A second backend (FSDP2, say) would be one file beside this one with the same surface.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from train.distributed import all_reduce_sum
from train.engine_spec import EngineSpec, lr_lambda
from train.lora import (adapters_disabled, causal_lm, is_lora, lora_scalings, merged_linears, merged_model, merged_state_dict,
                        refresh_merged)
from train.model import activation_checkpointing, frozen_copy
from train.optim import GuardedAdamW


@dataclass
class StepResult:
    loss: float  # the step's loss: the micro-batch losses summed over micro-batches and ranks
    grad_norm: float  # global gradient norm before clipping (nan if DeepSpeed kept none)
    skipped: bool  # the optimiser refused non-finite gradients: the weights did not change
    lr: float  # learning rate used by this step


class Engine:
    """A model under DeepSpeed (module docstring). Build with `Engine.build`; `ds` is the DeepSpeed engine itself."""

    def __init__(self, ds_engine, *, reference=None):
        self.ds = ds_engine
        # beta > 0 without LoRA: the frozen initial policy, placed like the policy (see _place_reference); with LoRA
        # the reference is this engine with its adapters off, so nothing is stored.
        self._reference = reference
        self._has_reference = reference is not None
        # LoRA under ZeRO 0-2: a plain model of W + s·B·A to sample from (train/lora.py::merged_model), made at the
        # first generation and refreshed when an update has changed the adapters since (`_updates` counts them).
        self._merged = None
        self._updates = self._merged_at = 0

    # -- building ----------------------------------------------------------------------------------------------------

    @classmethod
    def build(cls, model: torch.nn.Module, spec: EngineSpec, *, with_reference: bool = False) -> "Engine":
        """deepspeed.initialize with a GuardedAdamW (a torch AdamW: DeepSpeed's own CPU Adam compiles C++ on first use,
        ~100 s on CPU) and a LambdaLR schedule. `with_reference`: keep the initial policy as the KL reference (a frozen
        copy made before DeepSpeed shards the policy; with LoRA, the adapters switched off)."""
        import deepspeed

        frozen = frozen_copy(model) if with_reference and not is_lora(model) else None
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = GuardedAdamW(trainable, lr=spec.lr, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_lambda(step, warmup_steps=spec.warmup_steps, total_steps=spec.total_steps,
                                              schedule=spec.schedule)
        )
        ds_engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                  config=spec.deepspeed_config())
        _run_zero_forward_bookkeeping_on_decoder(ds_engine)
        engine = cls(ds_engine)
        if with_reference:
            engine._has_reference = True
            engine._reference = None if frozen is None else engine._place_reference(frozen, dtype=spec.dtype)
        return engine

    def _place_reference(self, reference: torch.nn.Module, *, dtype: str):
        """The reference placed like the policy: under ZeRO-3 sharded too (inference only, no optimizer); under ZeRO
        0-2 a plain module on the policy's device (left on the CPU, a GPU run with beta > 0 failed at its first
        reference forward)."""
        if not self.sharded:
            return reference.to(self.device)
        import deepspeed

        config = {
            "zero_optimization": {"stage": 3},
            "bf16": {"enabled": dtype == "bfloat16"},
            "fp16": {"enabled": dtype == "float16"},
            "train_micro_batch_size_per_gpu": 1,
            "train_batch_size": self.world_size,
            "steps_per_print": 10**9,
        }
        reference_engine, *_ = deepspeed.initialize(model=reference, config=config)
        reference_engine.eval()
        self._reference_engine = reference_engine  # owns the ZeRO-3 hooks of the reference's parameters
        return reference_engine.module

    # -- facts -------------------------------------------------------------------------------------------------------

    @property
    def zero_stage(self) -> int:
        return self.ds.zero_optimization_stage()

    @property
    def sharded(self) -> bool:
        """ZeRO-3: each rank holds a shard of every parameter, so every forward all-gathers (a collective all ranks
        must make alike: train/logprobs.py then makes the same number of calls on every rank)."""
        return self.zero_stage == 3

    @property
    def lockstep(self) -> bool:
        """Whether ranks must generate in lock-step (`synced_gpus`): ZeRO-3 with more than one rank, gathered weights
        or not. A rank that finishes early must keep joining the collectives of the others (a forward's per-layer
        gathers, or DeepSpeed's hooks on re-entry), or a run deadlocks (tests/test_distributed.py)."""
        return self.sharded and self.world_size > 1

    @property
    def device(self) -> torch.device:
        return self.ds.device

    @property
    def world_size(self) -> int:
        return self.ds.world_size

    @property
    def is_lora(self) -> bool:
        return is_lora(self.ds.module)

    @property
    def module(self) -> torch.nn.Module:
        """What DeepSpeed wraps: the transformers model, or the peft model around it under LoRA."""
        return self.ds.module

    @property
    def hf_module(self) -> torch.nn.Module:
        """The transformers model (under LoRA the peft base model, adapters in place and active): sampling and
        log-probs call it directly, since its forward signature is the one they inspect."""
        return causal_lm(self.ds.module)

    @property
    def has_reference(self) -> bool:
        return self._has_reference

    # -- weights -----------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def generation_weights(self, *, gather: bool = True) -> Iterator[torch.nn.Module]:
        """The HF module to sample from. Under LoRA (ZeRO 0-2, float32) a plain model of the merged weights W + s·B·A, kept
        up to date with the adapters (train/lora.py::merged_model). Under ZeRO-3 each rank holds a shard of every weight; gathering them per
        forward would cost one all-gather per layer per generated token, so (like TRL's `unwrap_model_for_generation`)
        the full weights are gathered once for the whole block with DeepSpeed's fetch hooks detached. With
        `gather=False` each forward gathers per layer. Either way ranks generate in lock-step under ZeRO-3
        (`lockstep`). Collective under ZeRO-3."""
        if self.sharded and gather:
            from deepspeed.runtime.zero import unwrap_model_for_generation

            with unwrap_model_for_generation(self.ds):
                yield self.hf_module
        elif self._keeps_merged_copy:
            yield self._merged_copy()
        else:
            yield self.hf_module

    @property
    def _keeps_merged_copy(self) -> bool:
        # A peft model runs two small matmuls per adapted layer and decode step on top of the weights' own. The
        # merged copy costs the adapted layers' weights once more in memory. float32 only: in bf16/fp16, W + s·B·A
        # rounds most of a young adapter away (s·B·A is below half a bf16 step of W), so the copy would sample from
        # nearly the base model. Not under ZeRO-3 (each rank holds only shards of W).
        return self.is_lora and not self.sharded and self.hf_module.dtype == torch.float32

    def _merged_copy(self) -> torch.nn.Module:
        """The plain model of W + s·B·A (train/lora.py::merged_model), made on first use and refreshed when an update has
        changed the adapters since."""
        if self._merged is None:
            self._merged = merged_model(self.ds.module)
        elif self._merged_at != self._updates:
            refresh_merged(self.ds.module, self._merged)
        self._merged_at = self._updates
        return self._merged

    @contextlib.contextmanager
    def _training_forward(self) -> Iterator[None]:
        """Around a micro-batch's forward: under LoRA with a merged copy, each adapted linear computes x·(W + s·B·A)ᵀ in
        one matmul, with peft's gradients for A and B (train/lora.py::merged_linears). Not under activation
        checkpointing (its recomputation runs after the block)."""
        if self._keeps_merged_copy and not activation_checkpointing(self.hf_module):
            with merged_linears(self.ds.module, self._merged_copy()):
                yield
        else:
            yield

    def full_state_dict(self, *, every_rank: bool = True) -> dict[str, torch.Tensor] | None:
        """Every weight in full, on CPU. Collective under ZeRO-3: call on all ranks.

        every_rank: every rank gets the weights (gathered with GatheredParameters); False: only rank 0 does (DeepSpeed's
        consolidated state dict, gathered one parameter at a time to rank 0, for a save), the others get None.
        """
        module = self.ds.module
        if not every_rank and self.ds.global_rank != 0 and not self.sharded:
            return None
        if not self.sharded:
            state = _cpu_copy(module.state_dict())
        elif every_rank:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                state = _cpu_copy(module.state_dict())
        else:
            state = self.ds._zero3_consolidated_16bit_state_dict()  # collective; the weights land on rank 0 only
            if self.ds.global_rank != 0:
                return None
        return state

    def merge_lora(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Under LoRA, the plain transformers state dict of W + s·B·A from this engine's full (peft) state dict
        (train/lora.py's merged_state_dict); without LoRA, `state` unchanged."""
        return merged_state_dict(state, lora_scalings(self.ds.module)) if self.is_lora else state

    @contextlib.contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        """The frozen initial policy, as an HF module for log-probs (sharded like the policy: pass `sharded` along).
        Under LoRA it is this engine's own model with its adapters off for the block. Only with_reference engines."""
        if not self._has_reference:
            raise RuntimeError("this engine was built without a reference (with_reference=False)")
        if self._reference is not None:
            yield self._reference
        else:
            with adapters_disabled(self.ds):
                yield self.hf_module

    # -- training ----------------------------------------------------------------------------------------------------

    def optimizer_step(self, micro_batches: Iterable[Any], micro_loss: Callable[[Any], torch.Tensor], *,
                       zero_gradient: Callable[[Any], bool] | None = None) -> StepResult:
        """Backward every micro-batch's `micro_loss(micro)`, then the one DeepSpeed step at the accumulation boundary,
        the last micro-batch: the single backward call site of GRPO and SFT alike. Call on all ranks with the same
        number of micro-batches.

        `zero_gradient(micro)`: its loss has exactly zero gradient (GRPOLoss.gradient_is_zero); the forward runs (same loss
        and metrics), the backward (2/3 of the work) is left out where every rank leaves it out (ZeRO-2/3 reduce in each
        backward), never at the boundary. Bit-identical updates: tests/test_grad_accum.py, tests/test_equivalence.py.

        Normalisation (the part that silently goes wrong in many trainers): each micro-batch's loss arrives already
        divided by the token (or sequence) count of the WHOLE optimiser step on ALL ranks, so the per-micro-batch
        losses simply add up to the big-batch loss. DeepSpeed must therefore neither divide by the accumulation steps
        (`scale_wrt_gas=False`) nor average gradients over ranks: it does the latter unconditionally, so each rank's
        loss is multiplied by the world size to turn that mean into a sum (tests/test_grad_accum.py and
        tests/test_equivalence.py check both).

        Non-finite steps: train/optim.py's GuardedAdamW refuses non-finite gradients on every rank together and says
        so; under ZeRO-1/2 in fp32 DeepSpeed may refuse first and report a norm of inf. Either way the step is
        `skipped` (the weights did not change) and the caller decides what to do about it.
        """
        ds = self.ds
        guard = getattr(ds, "client_optimizer", None)  # train.optim.GuardedAdamW, handed to deepspeed.initialize
        if guard is not None:
            guard.last_step_skipped = False
        ds.train()
        total, unsharded_grad_norm = 0.0, None
        micro_batches = list(micro_batches)
        for index, micro in enumerate(micro_batches):
            # The boundary is the last micro-batch, however many there are (a token budget makes the count vary by
            # step), not DeepSpeed's fixed gradient_accumulation_steps; set before the forward, as DeepSpeed asks.
            boundary = index == len(micro_batches) - 1
            ds.set_gradient_accumulation_boundary(boundary)
            with self._training_forward():
                loss = micro_loss(micro)
            total += (value := loss.item())
            skippable = zero_gradient is not None and not boundary and zero_gradient(micro) and math.isfinite(value)
            if zero_gradient is None or boundary or not self._every_rank_agrees(skippable):
                ds.backward(loss * self.world_size, scale_wrt_gas=False)
            if ds.is_gradient_accumulation_boundary() and self.zero_stage == 0:
                # Without ZeRO, DeepSpeed clips fp32 gradients but does not keep their norm: measure it before the step.
                unsharded_grad_norm = _grad_norm(ds.module)
            ds.step()
            del loss  # a left-out backward leaves the graph alive: free it before the next forward
        grad_norm = unsharded_grad_norm if self.zero_stage == 0 else ds.get_global_grad_norm()
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        skipped = bool(getattr(guard, "last_step_skipped", False)) or not math.isfinite(grad_norm)
        loss = all_reduce_sum(torch.tensor([total], dtype=torch.float64)).item()
        self._updates += 1
        return StepResult(loss=loss, grad_norm=grad_norm, skipped=skipped, lr=ds.get_lr()[0])

    def _every_rank_agrees(self, local: bool) -> bool:
        return all_reduce_sum(torch.tensor([float(not local)], device=self.device)).item() == 0

    # -- state -------------------------------------------------------------------------------------------------------

    def save_state(self, directory: str, tag: str) -> None:
        """Weights, optimiser and schedule (ZeRO shards of this rank) under directory/tag. Collective."""
        self.ds.save_checkpoint(directory, tag=tag, save_latest=False)

    def load_state(self, directory: str, tag: str) -> str | None:
        """The inverse of save_state; the loaded path, or None when DeepSpeed found nothing. Collective."""
        path, _ = self.ds.load_checkpoint(directory, tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True)
        self._updates += 1  # the weights changed: a merged generation copy is stale
        return path

    def destroy(self) -> None:
        """Remove ZeRO's parameter hooks; the engine is not used again."""
        self.ds.destroy()


def _run_zero_forward_bookkeeping_on_decoder(ds_engine) -> None:
    """Make a direct call of the decoder do the ZeRO bookkeeping that `engine.forward` does at every forward.

    train/logprobs.py calls `module.get_decoder()` and the LM head itself (to apply the head in chunks), so
    `engine.forward` never runs. But that is where DeepSpeed (0.17+) calls `optimizer.clear_backward_seen_flag()`, and
    ZeRO-3 advances its micro-step counter there: without it every micro-batch's gradient partition is *copied* over
    the previous one instead of added, and with gradient accumulation only the last micro-batch's gradient is kept
    (grad norm and update silently wrong; tests/test_equivalence.py catches it). The flag is idempotent (a second call
    in the same forward does nothing), so a call through `engine(...)` that also reaches the decoder stays correct.
    """
    from deepspeed.runtime.base_optimizer import ZeROOptimizer

    optimizer = ds_engine.optimizer
    if not isinstance(optimizer, ZeROOptimizer):
        return
    causal_lm(ds_engine.module).get_decoder().register_forward_pre_hook(lambda module, args: optimizer.clear_backward_seen_flag())


def gathered_linear(linear: torch.nn.Module):
    """`linear`'s ZeRO-3 shards gathered (a collective) into a frozen plain-tensor copy: a callable x -> x W^T + b.
    train/logprobs.py uses it for a frozen LM head (LoRA), which ZeRO-3 does not re-gather when a checkpointed chunk is
    recomputed in the backward. Every gathering of ZeRO-3 shards lives in this module."""
    import functools

    import deepspeed

    with deepspeed.zero.GatheredParameters(list(linear.parameters()), modifier_rank=None):
        weight = linear.weight.detach().clone()
        bias = None if getattr(linear, "bias", None) is None else linear.bias.detach().clone()
    return functools.partial(torch.nn.functional.linear, weight=weight, bias=bias)


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` copied to CPU, keeping tied weights tied: entries that share storage (a tied embedding and LM head)
    share one copy, so `save_pretrained` still sees them as one tensor."""
    copies: dict[tuple, torch.Tensor] = {}
    out = {}
    for name, tensor in state.items():
        key = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
        if key not in copies:
            copies[key] = tensor.detach().to("cpu", copy=True)
        out[name] = copies[key]
    return out


@torch.no_grad()
def _grad_norm(module: torch.nn.Module) -> float:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads).item() if grads else 0.0
