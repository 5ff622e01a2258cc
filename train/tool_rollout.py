"""Multi-turn rollouts with the Python tool (issue 25): decode in rounds; a row pauses the step it closes a tool call,
the call runs while the other rows decode, its output is appended as tokens, and the paused rows go on in the next
round. Everything downstream sees one completion per row: model and tool tokens in order, `model_token_mask` marking
the model's (the only ones trained: train/main.py) and `tool_calls` listing what ran.

Rounds, and why:
- Round 0 is the single-turn rollout with a stop rule (train/tools.py::CallDetector): the prompts' prefill is shared
  by the G rows as usual. Round r > 0 decodes the rows paused in round r-1, each from the left-padded prefix
  `prompt + completion so far` (a fresh prefill of the very sequence the trainer recomputes, so positions and
  attention are the log-prob forward's), with G = 1 and the row's remaining budget.
- A row that pauses leaves the decode batch like a finished one (the lean sampler compacts it away); its call was
  submitted when it closed and runs on a worker thread meanwhile. Only calls still running when a round ends are
  waited for (`time/tool_wait`).
- The number of rounds, rows and steps depends on tokens only, never on how long a tool took, so the random stream
  is consumed the same way on every run: the lean sampler and HF `generate` draw the same tokens (as for single
  turns), a resumed run repeats an uninterrupted one, and ZeRO-3 ranks agree on the rounds (an all-reduce; a rank with
  nothing left decodes a dummy row with its random state saved and restored).
- `max_completion_length` bounds model and tool tokens together (TRL's meaning): a response that does not fit is cut
  there, and the row ends truncated. At most `max_tool_calling_iterations` calls run per row; later code is text.

Considered and left out: resuming a row as soon as its own result arrives (its tokens would depend on the tool's wall
time, breaking exact resume and rank equality); appending tool tokens into the KV cache instead of a new prefill
(saves one prefill per round, but the lean sampler would no longer equal `generate` token for token).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from train.tools import CallDetector, ToolRunner, ToolSettings, wait_for

# single_turn(prompt rows, num_generations, max_new_tokens, stop) -> completion ids [rows * G, L'], pad after the end
SingleTurn = Callable[[list[list[int]], int, int, CallDetector], torch.Tensor]


@dataclass
class ToolRollout:
    completion_ids: torch.Tensor  # [N, L'] model and tool tokens, pad after the end
    completion_mask: torch.Tensor  # [N, L'] 1 for every real token (model and tool), up to and including EOS
    model_token_mask: torch.Tensor  # [N, L'] 1 for tokens the model sampled
    truncated: torch.Tensor  # [N] bool: no EOS within max_completion_length
    tool_calls: list[list[dict]]  # [N] per row: {code, output (as shown), status, seconds}
    tool_wait_seconds: float = 0.0
    tool_seconds: float = 0.0


@dataclass
class _Row:
    prompt: list[int]
    ids: list[int] = field(default_factory=list)
    model_mask: list[int] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)
    done: bool = False
    truncated: bool = False


def tool_rollouts(single_turn: SingleTurn, tokenizer, prompt_ids: list[list[int]], *, num_generations: int,
                  max_completion_length: int, settings: ToolSettings, synced_gpus: bool = False) -> ToolRollout:
    """G completions per prompt (group-major rows), calling the tool as the module docstring says."""
    rows = [_Row(prompt=list(ids)) for ids in prompt_ids for _ in range(num_generations)]
    eos, protocol, budget = tokenizer.eos_token_id, settings.protocol, max_completion_length
    runner, waited = ToolRunner(settings), 0.0
    try:
        active, first = list(range(len(rows))), True
        while True:
            budgets = [budget - len(rows[i].ids) for i in active]
            detector = CallDetector(
                tokenizer, settings, runner, budgets=budgets, eos_token_id=eos,
                calls_left=[settings.max_tool_calling_iterations - len(rows[i].calls) for i in active],
                earlier_cells=[[c["code"] for c in rows[i].calls if c["status"] in ("ok", "error")] for i in active])
            if first:
                out = single_turn(prompt_ids, num_generations, budget, detector)
            elif active:
                out = single_turn([rows[i].prompt + rows[i].ids for i in active], 1, max(budgets), detector)
            else:  # ZeRO-3: the other ranks still decode; keep their lock-step without touching our random stream
                with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
                    single_turn([prompt_ids[0]], 1, 1, None)
            first, paused = False, {}
            for k, i in enumerate(active):
                tokens, row = out[k].tolist(), rows[i]
                if k in detector.closed_at:
                    new = tokens[: detector.closed_at[k] + 1]
                    paused[i] = k
                else:
                    within = tokens[: budgets[k]]
                    new = within[: within.index(eos) + 1] if eos in within else within
                    row.done, row.truncated = True, eos not in within
                row.ids += new
                row.model_mask += [1] * len(new)
            results, seconds = wait_for({i: detector.futures[k] for i, k in paused.items()})
            waited += seconds
            for i, result in results.items():
                row = rows[i]
                body = protocol.response_body(result.output, result.status, time_limit_s=settings.time_limit_s)
                row.calls.append({"code": detector.code[paused[i]], "output": body, "status": result.status,
                                  "seconds": round(result.seconds, 4)})
                response = protocol.response_ids(tokenizer, body)[: budget - len(row.ids)]
                row.ids += response
                row.model_mask += [0] * len(response)
                if len(row.ids) >= budget:
                    row.done, row.truncated = True, True
            active = [i for i in paused if not rows[i].done]
            if not _any_rank(bool(active), synced_gpus):
                break
        tool_seconds = runner.seconds()
    finally:
        runner.close()
    return _assemble(rows, tokenizer.pad_token_id, waited, tool_seconds)


def _any_rank(flag: bool, synced_gpus: bool) -> bool:
    if not synced_gpus:
        return flag
    from train.distributed import all_reduce_max

    # NCCL reduces device tensors only: the flag goes where the rank's decoding runs (as dist_info.device).
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    return bool(all_reduce_max(torch.tensor([float(flag)], device=device)).item())


def _assemble(rows: list[_Row], pad_token_id: int, waited: float, tool_seconds: float) -> ToolRollout:
    width = max(1, max(len(row.ids) for row in rows))
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    model_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        n = len(row.ids)
        ids[r, :n] = torch.tensor(row.ids, dtype=torch.long)
        mask[r, :n] = 1
        model_mask[r, :n] = torch.tensor(row.model_mask, dtype=torch.long)
    return ToolRollout(ids, mask, model_mask, torch.tensor([row.truncated for row in rows]),
                       [row.calls for row in rows], waited, tool_seconds)
