"""One DeepSpeed optimiser step over micro-batches: the single backward call site of GRPO and SFT alike.

Normalisation (the part that silently goes wrong in many trainers): each micro-batch's loss arrives already divided by
the token (or sequence) count of the WHOLE optimiser step on ALL ranks, so the per-micro-batch losses simply add up
to the big-batch loss. DeepSpeed must therefore neither divide by the accumulation steps (`scale_wrt_gas=False`) nor
average gradients over ranks: it does the latter unconditionally, so each rank's loss is multiplied by the world size
to turn that mean into a sum (tests/test_grad_accum.py and tests/test_equivalence.py check both).

Non-finite steps: train/optim.py's GuardedAdamW refuses non-finite gradients on every rank together and says so; under
ZeRO-1/2 in fp32 DeepSpeed may refuse first and report a norm of inf. Either way the step is `skipped` (the weights did
not change) and the caller decides what to do about it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from train.distributed import all_reduce_sum


@dataclass
class StepResult:
    loss: float  # the step's loss: the micro-batch losses summed over micro-batches and ranks
    grad_norm: float  # global gradient norm before clipping (nan if DeepSpeed kept none)
    skipped: bool  # the optimiser refused non-finite gradients: the weights did not change
    lr: float  # learning rate used by this step


def optimizer_step(engine, micro_batches: Iterable[Any], micro_loss: Callable[[Any], torch.Tensor], *, world_size: int) -> StepResult:
    """Backward every micro-batch's `micro_loss(micro)` (already normalised by the step's global counts), then the one
    DeepSpeed step at the accumulation boundary, the last micro-batch. Call on all ranks with the same number of
    micro-batches."""
    guard = getattr(engine, "client_optimizer", None)  # train.optim.GuardedAdamW, handed to deepspeed.initialize
    if guard is not None:
        guard.last_step_skipped = False
    engine.train()
    stage = engine.zero_optimization_stage()
    total, unsharded_grad_norm = 0.0, None
    micro_batches = list(micro_batches)
    for index, micro in enumerate(micro_batches):
        # The boundary is the last micro-batch, however many there are (a token budget makes the count vary by step),
        # not DeepSpeed's fixed gradient_accumulation_steps; set before the forward, as DeepSpeed asks.
        engine.set_gradient_accumulation_boundary(index == len(micro_batches) - 1)
        loss = micro_loss(micro)
        # scale_wrt_gas=False: the loss is normalised by the step's global counts already; x world_size undoes
        # DeepSpeed's mean over data-parallel ranks (module docstring).
        engine.backward(loss * world_size, scale_wrt_gas=False)
        if engine.is_gradient_accumulation_boundary() and stage == 0:
            # Without ZeRO, DeepSpeed clips fp32 gradients but does not keep their norm: measure it before the step.
            unsharded_grad_norm = _grad_norm(engine.module)
        engine.step()
        total += loss.item()
    grad_norm = unsharded_grad_norm if stage == 0 else engine.get_global_grad_norm()
    grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
    skipped = bool(getattr(guard, "last_step_skipped", False)) or not math.isfinite(grad_norm)
    loss = all_reduce_sum(torch.tensor([total], dtype=torch.float64)).item()
    return StepResult(loss=loss, grad_norm=grad_norm, skipped=skipped, lr=engine.get_lr()[0])


@torch.no_grad()
def _grad_norm(module: torch.nn.Module) -> float:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads).item() if grads else 0.0
