"""Which prompt rows each rank takes at each step: an endless, epoch-based, seeded shuffle, disjoint across ranks.

Each epoch ``e`` is one permutation of ``range(num_rows)`` from ``torch.Generator().manual_seed(seed + e)``, the same
on every rank (a CPU generator, so the device does not matter). A step consumes one *global batch* of
``prompts_per_rank * world_size`` consecutive permutation entries, and rank ``r`` takes the ``r``-th slice of it, so
ranks never share a row within a step and together cover the epoch. The state is two integers, ``(epoch, position)``
with ``position`` the number of permutation entries already consumed this epoch; a run restored from
:meth:`PromptSampler.state_dict` draws exactly the indices the original run would have drawn next (like torchdata's
``StatefulDistributedSampler``, without a DataLoader around it: rows are few and small, the model is the bottleneck).

``drop_last=True`` (default) skips the ``num_rows % global_batch`` leftover rows of an epoch; each epoch's leftovers
differ, so nothing is starved over a run. ``drop_last=False`` completes the last batch with the start of the next
epoch's permutation, which is then continued from there; every row is then seen once per epoch, but one batch at the
seam may hold the same row twice.
"""

from __future__ import annotations

import torch


class PromptSampler:
    """Seeded, rank-disjoint, resumable index sampler. Call :meth:`next_indices` once per step."""

    def __init__(
        self, num_rows: int, prompts_per_rank: int, *, seed: int, rank: int, world_size: int, drop_last: bool = True
    ) -> None:
        if prompts_per_rank < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need prompts_per_rank >= 1, world_size >= 1 and 0 <= rank < world_size; got "
                f"prompts_per_rank={prompts_per_rank}, rank={rank}, world_size={world_size}"
            )
        self.global_batch = prompts_per_rank * world_size
        if num_rows < self.global_batch:
            raise ValueError(
                f"dataset has {num_rows} rows, fewer than one global batch of {self.global_batch} "
                f"(prompts_per_rank={prompts_per_rank} x world_size={world_size}); use more data or smaller batches"
            )
        self.num_rows = num_rows
        self.prompts_per_rank = prompts_per_rank
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self._epoch = 0
        self._position = 0
        self._perm_cache: tuple[int, list[int]] | None = None  # (epoch, permutation)

    @property
    def epoch(self) -> int:
        """Epoch the next call to :meth:`next_indices` starts in (after a rollover, the new one)."""
        if self.drop_last and self._position + self.global_batch > self.num_rows:
            return self._epoch + 1
        return self._epoch

    @property
    def steps_per_epoch(self) -> int:
        """Global batches per epoch (with ``drop_last=False`` on average: ``num_rows / global_batch``)."""
        return self.num_rows // self.global_batch

    def next_indices(self) -> list[int]:
        """Row indices for this rank's ``prompts_per_rank`` prompts at the next step."""
        if self.drop_last and self._position + self.global_batch > self.num_rows:
            self._epoch, self._position = self._epoch + 1, 0
        batch = self._permutation(self._epoch)[self._position : self._position + self.global_batch]
        self._position += self.global_batch
        if len(batch) < self.global_batch:  # drop_last=False: continue into the next epoch
            self._epoch, self._position = self._epoch + 1, self.global_batch - len(batch)
            batch = batch + self._permutation(self._epoch)[: self._position]
        elif self._position == self.num_rows:
            self._epoch, self._position = self._epoch + 1, 0
        start = self.rank * self.prompts_per_rank
        return batch[start : start + self.prompts_per_rank]

    def state_dict(self) -> dict[str, int]:
        """Resumable state; ``num_rows`` and ``seed`` are stored to catch resuming onto different data."""
        return {"epoch": self._epoch, "position": self._position, "num_rows": self.num_rows, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state``. World size may change between runs; the dataset and seed may not."""
        for key in ("num_rows", "seed"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"sampler state was saved with {key}={state[key]} but this sampler has {key}={getattr(self, key)}; "
                    "resuming would replay a different order"
                )
        if not 0 <= state["position"] <= self.num_rows or state["epoch"] < 0:
            raise ValueError(f"invalid sampler state {state}")
        self._epoch, self._position = int(state["epoch"]), int(state["position"])

    def _permutation(self, epoch: int) -> list[int]:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._perm_cache = (epoch, torch.randperm(self.num_rows, generator=generator).tolist())
        return self._perm_cache[1]
