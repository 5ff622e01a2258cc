"""The Python tool of tool-integrated rollouts (issue 25): the code cells of one trajectory, run in code_exec's sandbox.

A call is a notebook replayed. Each call starts a fresh sandbox that runs the trajectory's earlier cells (their output
discarded) and then the new cell, all in one ``__main__`` namespace. The call's output is what the new cell writes to
stdout and stderr, then the ``repr`` of its final expression when that is not None (as a notebook shows it). An
exception in the new cell prints its traceback (the cells' frames only, with their source lines) and gives status
"error"; an exception in an earlier cell stops that cell where it stopped the first time, and the replay goes on.

Why replay rather than one live interpreter per trajectory (TRL and verl keep tools stateless too; SimpleTIR replays):
- the output is a function of the cell list alone (str hashes fixed with PYTHONHASHSEED=0, ``random`` seeded with 0),
  so a resumed run, another rank or a retry sees the same text, and identical cell lists can be run once (the cache
  in train/tools.py); except for cells that read the clock, memory addresses (``id``, a default ``repr``) or
  ``os.urandom``, which no replay or live interpreter makes repeatable;
- each call is bounded by itself: ``time_limit_s`` (wall clock, the replay included), ``memory_mb`` (RLIMIT_AS), and
  nothing the program started outlives the call; no interpreter waits between calls of a rollout.
The cost is re-running earlier cells, cheap for the short cells of arithmetic reasoning (timings in the README).

Isolation is rewards/code_exec.py's, unchanged (bwrap namespaces, a random uid of its own, rlimits, no network, no
host files, the fork/exec/socket guard): the tool runs model-written code exactly as the code reward does. The
sandbox holds the base interpreter's standard library only (not the trainer's venv). Without a working bubblewrap the
call returns status "no_sandbox" (the config refuses to start before that: train/tools.py), unless
``unsafe_no_sandbox`` (or THINKRL_UNSAFE_NO_SANDBOX=1) runs it unisolated.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass

from rewards.code_exec import BWRAP_ENV, _unsafe, sandbox_problem
from rewards.code_run import run_program

MAX_OUTPUT_BYTES = 64 << 10  # output read back from one call (the model is shown far less: train/tools.py truncates)
STATUSES = ("ok", "error", "timeout", "crash", "no_sandbox")

# Runs as __main__ in the sandbox (one "stdio" step of rewards/sandbox_harness.py: stdout is captured, stdin empty).
# Leading underscores keep the driver's names out of the way; the cells run in their own namespace, _namespace.
_DRIVER = r'''
import ast as _ast, linecache as _linecache, random as _random, sys as _sys, traceback as _traceback
_random.seed(0)
_cells = __CELLS__
_namespace = {"__name__": "__main__", "__builtins__": __builtins__}
class _Discard:
    def write(self, text):
        return len(text)
    def flush(self):
        pass
_shown, _failed = _sys.stdout, False
for _index, _source in enumerate(_cells):
    _name, _last = "<cell %d>" % (_index + 1), _index == len(_cells) - 1
    _linecache.cache[_name] = (len(_source), None, _source.splitlines(True), _name)  # source lines in tracebacks
    _sys.stdout = _sys.stderr = _shown if _last else _Discard()
    try:
        _tree, _display = _ast.parse(_source, _name), None
        if _last and _tree.body and isinstance(_tree.body[-1], _ast.Expr):
            _display = _ast.Expression(_tree.body.pop().value)
        exec(compile(_tree, _name, "exec"), _namespace)
        if _display is not None:
            _value = eval(compile(_display, _name, "eval"), _namespace)
            if _value is not None:
                print(repr(_value))
    except SystemExit:
        pass
    except BaseException as _error:
        if _last:
            _frames = [_f for _f in _traceback.extract_tb(_error.__traceback__) if _f.filename.startswith("<cell ")]
            print("Traceback (most recent call last):\n" * bool(_frames) + "".join(_traceback.format_list(_frames))
                  + "".join(_traceback.format_exception_only(type(_error), _error)), end="")
            _failed = True
try:
    _sys.stdout.flush()
except BaseException:
    pass
_sys.stdout = _sys.stderr = _shown
if _failed:
    raise SystemExit(1)
'''


@dataclass(frozen=True)
class CellResult:
    """One tool call: the last cell's output (see the module docstring), how it ended, and its wall time."""

    output: str
    status: str  # one of STATUSES
    seconds: float


def run_cells(cells: list[str], *, time_limit_s: float = 2.0, memory_mb: int = 256,
              unsafe_no_sandbox: bool = False) -> CellResult:
    """Run ``cells[-1]`` after replaying ``cells[:-1]`` in a fresh sandbox. Never raises for any code text."""
    start = time.perf_counter()
    if _unsafe(unsafe_no_sandbox):
        bwrap = None
    elif sandbox_problem() is not None:
        return CellResult("", "no_sandbox", 0.0)
    else:
        bwrap = shutil.which(os.environ.get(BWRAP_ENV) or "bwrap")
    program = _DRIVER.replace("__CELLS__", repr([str(cell) for cell in cells]))
    produced, _, status, _ = run_program(program, [[["stdio", ""]]], time_limit_s=time_limit_s, memory_mb=memory_mb,
                                         bwrap=bwrap, max_bytes=MAX_OUTPUT_BYTES, hash_seed=0)
    output = ""
    got = produced.get((0, 0))
    if got is not None and got[0] == "output":
        output = got[1]
        if status == "ok" and not got[2]:
            status = "error"  # the driver's SystemExit(1): the last cell raised (or its output overflowed)
    elif status == "ok":
        status = "crash"  # the harness ended without reporting (e.g. the program closed or flooded its output)
    return CellResult(output, status, time.perf_counter() - start)
