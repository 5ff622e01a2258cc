"""One GRPO optimiser step on a TrainBatch: per micro-batch, log-probs -> the bound GRPOLoss; the backward and the
DeepSpeed step are Engine.optimizer_step's (train/engine.py, shared with SFT), including why the loss is multiplied by
the world size.

The normalisers of the loss are counted here, over the whole optimiser step on all ranks (`step_normalisers`), so the
per-micro-batch losses add up to the big-batch loss; which normaliser a `loss_type` uses is train/loss.py's business.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import torch

from train.batch import TrainBatch
from train.distributed import all_reduce_sum
from train.logprobs import completion_logprobs
from train.loss import GRPOLoss
from train.micro_batches import MicroBatching

if TYPE_CHECKING:
    from train.engine import Engine


def step_normalisers(completion_mask: torch.Tensor) -> tuple[float, float]:
    """(num_tokens, num_sequences) of one optimiser step: valid completion tokens and completions, over all ranks.
    A sampled completion always has a valid token (its EOS, or its first token if cut); a row whose mask is all zero
    is one the step left out (its group had a reward that did not apply) and is counted in neither."""
    rows = float((completion_mask.sum(dim=1) > 0).sum().item())
    counts = torch.tensor([completion_mask.sum().item(), rows], dtype=torch.float64)
    num_tokens, num_sequences = all_reduce_sum(counts).tolist()
    return max(num_tokens, 1.0), num_sequences


def policy_update(engine: "Engine", batch: TrainBatch, *, loss: GRPOLoss, micro_batching: MicroBatching, temperature: float,
                  logprob_chunk_size: int, skip_zero_gradient: bool = True) -> dict[str, float]:
    """One optimiser step over all rows of `batch` (this rank's share). Returns metrics over all ranks: `loss` is the
    step's global loss, the others are means over all valid completion tokens of all ranks; `skipped` is 1.0 when the
    optimiser step was skipped for non-finite gradients (the weights did not change). Micro-batches are
    `micro_batching`'s (rows, or a token budget: train/micro_batches.py), each trimmed to its own widths. A
    micro-batch whose gradient is exactly zero (every advantage 0, beta 0) gets no backward (Engine.optimizer_step);
    `skip_zero_gradient=False` runs it anyway (the tests compare both)."""
    num_tokens, num_sequences = step_normalisers(batch.completion_mask)
    sums: dict[str, float] = defaultdict(float)

    def micro_loss(micro: TrainBatch) -> torch.Tensor:
        logprobs, entropy = completion_logprobs(
            engine.hf_module, micro.input_ids, micro.attention_mask, micro.completion_mask.shape[1], temperature=temperature,
            chunk_size=logprob_chunk_size, sharded=engine.sharded,
        )
        # With one update per rollout the sampling policy IS the current one: ratio = 1 exactly, no recompute needed.
        old_logprobs = logprobs.detach() if micro.old_logprobs is None else micro.old_logprobs
        value, metrics = loss(logprobs, old_logprobs, micro.ref_logprobs, micro.advantages, micro.completion_mask,
                              step_tokens=num_tokens, num_sequences=num_sequences)
        valid = metrics["num_valid_tokens"].item()
        for name, metric in metrics.items():
            if name != "num_valid_tokens":
                sums[name] += metric.item() * valid
        sums["entropy"] += (entropy * micro.completion_mask).sum().item()
        sums["_tokens"] += valid
        return value

    micro_batches = [batch.select(rows) for rows in micro_batching.plan(batch.attention_mask, batch.completion_mask)]
    step = engine.optimizer_step(micro_batches, micro_loss, zero_gradient=(
        (lambda micro: loss.gradient_is_zero(micro.advantages, micro.completion_mask)) if skip_zero_gradient else None))
    names = list(sums)  # same order on every rank: the loss returns the same keys everywhere
    totals = dict(zip(names, all_reduce_sum(torch.tensor([sums[n] for n in names], dtype=torch.float64)).tolist()))
    tokens = max(totals.pop("_tokens"), 1.0)
    result = {name: value / tokens for name, value in totals.items()}
    result.update(loss=step.loss, grad_norm=step.grad_norm, skipped=float(step.skipped), lr=step.lr)
    return result
