"""The Python tool during rollouts (issue 25): its settings as one value, the runner that executes calls on worker
threads while decoding goes on, and the detector that pauses a row the step its call closes.

The round loop that uses them is train/tool_rollout.py; the markers and the response text are data/tool_protocol.py;
one call is rewards/python_tool.py (a sandboxed notebook replay).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from data.tool_protocol import ToolProtocol
from rewards.python_tool import CellResult, run_cells


@dataclass(frozen=True)
class ToolSettings:
    """rollout.tools, resolved (train/settings.py builds it): what a sampler needs to run tool calls."""

    protocol: ToolProtocol
    max_tool_calling_iterations: int = 2  # TRL's name: calls run per completion; a later call stays text
    time_limit_s: float = 2.0  # wall clock of one call, its replay of earlier cells included
    memory_mb: int = 256
    num_workers: int = 2  # calls run at once (threads waiting on sandbox processes)
    unsafe_no_sandbox: bool = False


class ToolRunner:
    """Runs calls on `num_workers` threads from the moment they are submitted. Within one rollout, identical cell lists
    run once (rows of a group often write the same code). Keeps the seconds spent in calls (each distinct call once)."""

    def __init__(self, settings: ToolSettings):
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=settings.num_workers, thread_name_prefix="thinkrl-tool")
        self._futures: dict[tuple[str, ...], Future] = {}

    def submit(self, cells: list[str]) -> Future:
        key = tuple(cells)
        if key not in self._futures:
            s = self.settings
            self._futures[key] = self._pool.submit(run_cells, list(cells), time_limit_s=s.time_limit_s,
                                                   memory_mb=s.memory_mb, unsafe_no_sandbox=s.unsafe_no_sandbox)
        return self._futures[key]

    def seconds(self) -> float:
        return sum(f.result().seconds for f in self._futures.values() if f.done())

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def may_close_mask(tokenizer, call_end: str) -> torch.Tensor:
    """[V] bool: tokens whose text holds the last character of `call_end`, the only tokens that can close a call
    (so the detector decodes a row only at those steps). Cached on the tokenizer."""
    cache = tokenizer.__dict__.setdefault("_thinkrl_may_close", {})
    if call_end not in cache:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False)
        cache[call_end] = torch.tensor([call_end[-1] in text for text in texts], dtype=torch.bool)
    return cache[call_end]


class CallDetector:
    """The per-step stop rule of one decoding round: a row stops the step its model text since the round began closes a
    tool call (while it has calls left), or when it reaches its token budget. Applied after the step's token is
    appended, by the lean sampler and by HF `generate` (as a StoppingCriteria) alike, and a function of the tokens
    only, so both samplers draw the same tokens whatever the tools' timing. A closed call is submitted to the runner
    at once, so it runs while the other rows keep decoding."""

    def __init__(self, tokenizer, settings: ToolSettings, runner: ToolRunner, *, budgets: list[int],
                 calls_left: list[int], earlier_cells: list[list[str]], eos_token_id: int):
        self.tokenizer, self.protocol, self.runner = tokenizer, settings.protocol, runner
        self.budgets = torch.tensor(budgets, dtype=torch.long)
        self.calls_left, self.earlier_cells, self.eos_token_id = calls_left, earlier_cells, eos_token_id
        self.may_close = may_close_mask(tokenizer, settings.protocol.call_end)
        self.closed_at: dict[int, int] = {}  # row -> index of the token that closed its call
        self.code: dict[int, str] = {}
        self.futures: dict[int, Future] = {}

    def __call__(self, tokens: torch.Tensor, unfinished: torch.Tensor | None = None) -> torch.Tensor:
        """tokens [N, t]: the round's tokens so far -> [N] bool, rows to stop at this step."""
        t = tokens.shape[1]
        stop = self.budgets.to(tokens.device) <= t
        newest = tokens[:, -1].cpu()
        candidates = self.may_close[newest.clamp(max=len(self.may_close) - 1)].nonzero().flatten().tolist()
        for row in candidates:
            if (row in self.closed_at or self.calls_left[row] <= 0 or t >= self.budgets[row]
                    or (unfinished is not None and not unfinished[row])):
                continue  # a row stopping at its budget is cut there: a call it closes with the last token is not run
            ids = tokens[row].tolist()
            if self.eos_token_id in ids:  # finished rows carry pad after EOS; nothing after EOS is model text
                continue
            code = self.protocol.find_call(self.tokenizer.decode(ids, skip_special_tokens=False))
            if code is not None:
                self.closed_at[row], self.code[row] = t - 1, code
                self.futures[row] = self.runner.submit(self.earlier_cells[row] + [code])
                stop[row] = True
        return stop


def wait_for(futures: dict[int, Future]) -> tuple[dict[int, CellResult], float]:
    """The results of the rows' calls, and the seconds spent waiting for those still running."""
    start = time.perf_counter()
    results = {row: future.result() for row, future in futures.items()}
    return results, time.perf_counter() - start


def tool_metrics(tool_calls: list[list[dict]]) -> dict[str, float]:
    """Per-completion tool counts of one batch (this rank's rows): sums, for all-rank means in train/step_metrics.py."""
    calls = [call for row in tool_calls for call in row]
    return {
        "calls": float(len(calls)),
        "errors": float(sum(call["status"] in ("error", "crash", "no_sandbox") for call in calls)),
        "timeouts": float(sum(call["status"] == "timeout" for call in calls)),
        "completions_with_calls": float(sum(bool(row) for row in tool_calls)),
    }
