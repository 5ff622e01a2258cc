"""Stop cleanly on SIGTERM / SIGUSR1 (SLURM pre-emption, `scancel`, a job timeout warning via `--signal=USR1@120`).

The handler only sets a flag. The trainer checks it between steps, after the ranks agree (one all-reduce of a 0/1
flag, since a signal may reach ranks at different moments), then saves a checkpoint and exits with 128 + signal
number, the conventional status of a process ended by that signal, so schedulers see the job as interrupted.
"""

from __future__ import annotations

import signal

import torch
import torch.distributed as dist

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """A stage stopped on a pre-emption signal after saving; the entry point exits with 128 + signal_number."""

    def __init__(self, signal_number: int, where: str) -> None:
        super().__init__(where)
        self.signal_number = signal_number


class PreemptionFlag:
    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous = {}

    def install(self) -> "PreemptionFlag":
        for sig in HANDLED_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        self.signal_number = signum

    def agreed(self, device: torch.device) -> int | None:
        """Collective: the signal number if any rank was signalled, else None."""
        local = torch.tensor([float(self.signal_number or 0)], device=device)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(local, op=dist.ReduceOp.MAX)
        number = int(local.item())
        return number or None
