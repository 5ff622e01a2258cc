"""One optimiser step on a TrainBatch: micro-batches of log-probs -> grpo_loss -> engine.backward, then engine.step.

Normalisation (the part that silently goes wrong in many trainers): grpo_loss divides by the token/sequence counts of
the WHOLE optimiser step on ALL ranks, so the per-micro-batch losses simply add up to the big-batch loss. DeepSpeed
must therefore neither divide by the accumulation steps (`scale_wrt_gas=False`) nor average gradients over ranks: it
does the latter unconditionally, so each rank's loss is multiplied by the world size to turn that mean into a sum.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from train.batch import TrainBatch
from train.distributed import all_reduce_sum
from train.logprobs import completion_logprobs
from train.loss import grpo_loss


def step_normalisers(completion_mask: torch.Tensor) -> tuple[float, float]:
    """(num_tokens, num_sequences) for one optimiser step, summed over all ranks.

    bnpo normalises by the tokens of each micro-batch (TRL's definition), so its num_tokens is per micro-batch and
    is computed in the loop instead; the value returned here is used by dapo.
    """
    counts = torch.tensor([completion_mask.sum().item(), float(completion_mask.shape[0])], dtype=torch.float64)
    num_tokens, num_sequences = all_reduce_sum(counts).tolist()
    return max(num_tokens, 1.0), num_sequences


def policy_update(
    engine,
    batch: TrainBatch,
    *,
    micro_batch_size: int,
    world_size: int,
    temperature: float,
    logprob_chunk_size: int,
    loss_type: str,
    epsilon: float,
    epsilon_high: float,
    beta: float,
    max_completion_length: int,
    importance_sampling_level: str,
) -> dict[str, float]:
    """One optimiser step over all rows of `batch` (this rank's share). Returns metrics over all ranks: `loss` is the
    step's global loss, the others are means over all valid completion tokens of all ranks; `skipped` is 1.0 when the
    optimiser step was skipped for non-finite gradients (the weights did not change)."""
    completion_length = batch.completion_mask.shape[1]
    num_tokens, num_sequences = step_normalisers(batch.completion_mask)
    sums: dict[str, float] = defaultdict(float)
    total_loss = 0.0
    unsharded_grad_norm = None
    guard = getattr(engine, "client_optimizer", None)  # train.optim.GuardedAdamW, handed to deepspeed.initialize
    if guard is not None:
        guard.last_step_skipped = False
    engine.train()
    for start in range(0, len(batch), micro_batch_size):
        micro = batch.rows(start, start + micro_batch_size)
        logprobs, entropy = completion_logprobs(
            engine,
            micro.input_ids,
            micro.attention_mask,
            completion_length,
            temperature=temperature,
            chunk_size=logprob_chunk_size,
        )
        # With one update per rollout the sampling policy IS the current one: ratio = 1 exactly, no recompute needed.
        old_logprobs = logprobs.detach() if micro.old_logprobs is None else micro.old_logprobs
        micro_tokens = max(float(micro.completion_mask.sum().item()), 1.0)
        loss, metrics = grpo_loss(
            logprobs,
            old_logprobs,
            micro.ref_logprobs,
            micro.advantages,
            micro.completion_mask,
            loss_type=loss_type,
            epsilon=epsilon,
            epsilon_high=epsilon_high,
            beta=beta,
            num_tokens=micro_tokens if loss_type == "bnpo" else num_tokens,
            num_sequences=num_sequences,
            max_completion_length=max_completion_length,
            importance_sampling_level=importance_sampling_level,
        )
        # The single backward call site: scale_wrt_gas=False because the loss is already normalised by the step's
        # global counts; x world_size undoes DeepSpeed's mean over data-parallel ranks (see module docstring).
        engine.backward(loss * world_size, scale_wrt_gas=False)
        if engine.is_gradient_accumulation_boundary() and engine.zero_optimization_stage() == 0:
            # Without ZeRO, DeepSpeed clips fp32 gradients but does not keep their norm: measure it before the step.
            unsharded_grad_norm = _grad_norm(engine.module)
        engine.step()
        total_loss += loss.item()
        valid = metrics["num_valid_tokens"].item()
        for name, value in metrics.items():
            if name != "num_valid_tokens":
                sums[name] += value.item() * valid
        sums["entropy"] += (entropy * micro.completion_mask).sum().item()
        sums["_tokens"] += valid
    names = list(sums)  # same order on every rank: the loss returns the same keys everywhere
    reduced = all_reduce_sum(torch.tensor([sums[n] for n in names] + [total_loss], dtype=torch.float64)).tolist()
    totals = dict(zip(names, reduced[:-1]))
    tokens = max(totals.pop("_tokens"), 1.0)
    result = {name: value / tokens for name, value in totals.items()}
    result["loss"] = reduced[-1]
    grad_norm = unsharded_grad_norm if engine.zero_optimization_stage() == 0 else engine.get_global_grad_norm()
    result["grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
    # Skipped: our optimiser refused non-finite gradients, or (ZeRO-1/2 fp32) DeepSpeed did and reported norm inf.
    result["skipped"] = float(bool(getattr(guard, "last_step_skipped", False)) or not math.isfinite(result["grad_norm"]))
    result["lr"] = engine.get_lr()[0]
    return result


@torch.no_grad()
def _grad_norm(module: torch.nn.Module) -> float:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads).item() if grads else 0.0


@torch.no_grad()
def sequence_logprobs(model, batch_input_ids, batch_attention_mask, completion_length: int, *, micro_batch_size: int, temperature: float, chunk_size: int) -> torch.Tensor:
    """[N, L] log-probs under `model` without grad (old policy or reference), computed in micro-batches."""
    parts = []
    for start in range(0, batch_input_ids.shape[0], micro_batch_size):
        logprobs, _ = completion_logprobs(
            model,
            batch_input_ids[start : start + micro_batch_size],
            batch_attention_mask[start : start + micro_batch_size],
            completion_length,
            temperature=temperature,
            chunk_size=chunk_size,
        )
        parts.append(logprobs)
    return torch.cat(parts)
