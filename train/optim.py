"""AdamW that skips a step whose gradients are not finite, agreed across ranks.

DeepSpeed skips non-finite steps only in fp16 (via its loss scaler). In fp32 and bf16 one NaN/inf gradient would be
written into every weight by the optimiser. This guard runs inside `optimizer.step()`, which DeepSpeed calls on every
rank at the same point for every ZeRO stage (with the rank's shard of the gradients under ZeRO-1/2/3), so one
all-reduce of a 0/1 flag makes all ranks skip together.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class GuardedAdamW(torch.optim.AdamW):
    """torch.optim.AdamW whose step is a no-op (weights and moments untouched) when any rank has a non-finite gradient.

    `last_step_skipped` tells the caller; counting is the trainer's job (ZeRO-1/2 in fp32 skip such steps inside
    DeepSpeed before this optimiser is reached, reporting an infinite grad norm instead).
    """

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        self.last_step_skipped = False

    @torch.no_grad()
    def _local_grads_finite(self) -> bool:
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None and not torch.isfinite(param.grad).all():
                    return False
        return True

    def step(self, closure=None):
        finite = torch.tensor([1.0 if self._local_grads_finite() else 0.0])
        if dist.is_initialized() and dist.get_world_size() > 1:
            if dist.get_backend() == "nccl":
                finite = finite.cuda()
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        self.last_step_skipped = finite.item() < 1.0
        if self.last_step_skipped:
            return None
        return super().step(closure)
