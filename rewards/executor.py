"""A small process pool with a hard per-call timeout, for reward calls that may hang (math-verify, code, custom code).

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot stop one running call. On a timeout the only remedy is
to kill every worker, which breaks the pool (``BrokenProcessPool``) and fails the innocent calls running beside the
hung one, and its futures start their clock at submission, so a call waiting in the queue is charged for the calls
ahead of it. Here each worker runs one call at a time and the clock starts when the call is handed to an idle worker,
so **a hanging call costs at most ``timeout_s``** (plus milliseconds of polling): at the deadline its worker's process
group is SIGKILLed, the call is reported as "timeout", and a replacement worker is started in the background.

Workers are plain ``subprocess.Popen([sys.executable, "-c", …])`` interpreters talking over two pipes with
``multiprocessing.connection.Connection`` framing (pickle). Compared with ``multiprocessing`` spawn/forkserver this:
never forks the trainer (which holds torch/NCCL/gloo threads), never re-imports the trainer's ``__main__`` (no
``if __name__ == "__main__"`` guard needed), and works from a non-main thread and from inside a daemonic
multiprocessing worker (which may not have multiprocessing children). No signals are used in the calling process.
The worker gets the caller's ``sys.path`` and cwd, so ``package.module:function`` custom rewards import the same way.

Cost: a worker start is an interpreter start plus ``import rewards`` (math-verify, sympy): ~0.5 s on a 2-core CPU,
paid lazily on the first call (or up front with :meth:`RewardPool.start`) and again in the background after each kill.
A worker whose parent dies exits on its own (it polls its parent pid once a second).

Bounded workers: a reward that leaks or allocates without bound must cost one call, not the machine. Each worker
caps its private memory with RLIMIT_DATA = ``memory_mb`` (set by the worker itself before it serves; an allocation past
it raises ``MemoryError`` in the reward: that call is an "error" and the worker is replaced, since it may be full of
leaked memory). Memory that RLIMIT_DATA does not count (shared mappings) is caught by the parent, which
reads each busy worker's RSS every ``MEMORY_POLL_S`` and after each call: over ``memory_mb``, the worker is killed,
its call is a "crash" and a new worker starts. RLIMIT_AS is not used: it counts reserved address space, which e.g.
``import torch`` in a custom reward reserves in gigabytes. Children of a worker (code_exec's sandbox has its own
limits) are not counted. After ``max_calls`` calls a worker is replaced anyway, which bounds slow leaks before they
cost a call.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

logger = logging.getLogger(__name__)

WORKER_START_TIMEOUT_S = 120.0  # a worker that is not ready by then is killed (e.g. an import that hangs)
MAX_START_FAILURES = 3  # consecutive failed starts with no worker alive: give up on this call, fail its tasks
_ORPHAN_POLL_S = 1.0
MEMORY_POLL_S = 0.1  # how often a busy worker's RSS is read
MIN_WORKER_MEMORY_MB = 256  # a worker at rest (interpreter + math-verify + sympy) uses ~60-100 MiB
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")

# Bootstraps a worker: adopt the caller's sys.path, then serve. argv: task fd, result fd, sys.path json, preload json,
# memory limit in MiB (0: none).
_BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[3]); from rewards.executor import _serve; "
    "_serve(int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[4]), int(sys.argv[5]))"
)


@dataclass
class CallResult:
    status: str  # "ok" | "error" (the reward raised) | "timeout" | "crash" (the worker died or never started)
    value: float | None = None  # the reward's value when status == "ok" (None = "not applicable")
    error: str = ""


# ---------------------------------------------------------------------------------------------------------- worker side
def _exit_when_orphaned(parent_pid: int) -> None:
    while True:
        time.sleep(_ORPHAN_POLL_S)
        if os.getppid() != parent_pid:
            os._exit(0)


def _call(task: tuple, cache: dict) -> tuple:
    name, kwargs, completion, prompt, row = task
    try:
        from rewards.registry import resolve_reward

        fn = cache.get(name) or cache.setdefault(name, resolve_reward(name))
        out = fn([completion], [prompt], **{**{k: [v] for k, v in row.items()}, **kwargs})
        if not isinstance(out, (list, tuple)) or len(out) != 1:
            return ("error", None, f"expected a list of 1 score for 1 completion, got {type(out).__name__}")
        value = out[0]
        return ("ok", None if value is None else float(value), "")
    except BaseException as e:  # noqa: BLE001 - a reward calling sys.exit must not take the worker down silently
        return ("error", None, f"{type(e).__name__}: {e}"[:1000])


def _serve(task_fd: int, result_fd: int, preload: list[str], memory_mb: int = 0) -> None:
    """Worker main loop: receive ``(name, kwargs, completion, prompt, row)``, send ``(status, value, error)``."""
    if memory_mb:
        import resource

        limit = memory_mb << 20
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit if hard == resource.RLIM_INFINITY else min(limit, hard)))
    tasks, results = Connection(task_fd, writable=False), Connection(result_fd, readable=False)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    cache: dict = {}
    from rewards.registry import resolve_reward  # imports every reward module (math-verify, sympy) before "ready"

    for name in preload:
        try:
            cache[name] = resolve_reward(name)
        except Exception:  # reported per call, where the combiner counts it
            pass
    results.send(("ready", None, ""))
    while True:
        try:
            task = tasks.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        results.send(_call(task, cache))


# ---------------------------------------------------------------------------------------------------------- parent side
def check_worker_limits(memory_mb: int, max_calls: int) -> None:
    """``ValueError`` unless ``memory_mb`` is 0 (no limit) or >= ``MIN_WORKER_MEMORY_MB`` and ``max_calls`` >= 0."""
    if not isinstance(memory_mb, int) or not (memory_mb == 0 or memory_mb >= MIN_WORKER_MEMORY_MB):
        raise ValueError(f"worker_memory_mb must be 0 (no limit) or >= {MIN_WORKER_MEMORY_MB}, got {memory_mb!r}")
    if not isinstance(max_calls, int) or max_calls < 0:
        raise ValueError(f"worker_max_calls must be >= 0 (0: never recycle), got {max_calls!r}")


def _rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE_BYTES / (1 << 20)
    except (OSError, ValueError, IndexError):
        return 0.0


class _Worker:
    def __init__(self, preload: list[str], memory_mb: int):
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(task_r), str(result_w), json.dumps([str(p) for p in sys.path]),
                 json.dumps(preload), str(memory_mb)],
                pass_fds=(task_r, result_w),
                stdin=subprocess.DEVNULL,
                cwd=os.getcwd(),
                start_new_session=True,  # own process group (killed as a whole), no terminal Ctrl-C
            )
        finally:
            os.close(task_r)
            os.close(result_w)
        self.tasks = Connection(task_w, readable=False)
        self.results = Connection(result_r, writable=False)
        self.ready = False
        self.start_deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        self.task: int | None = None  # index of the running call
        self.deadline = 0.0
        self.calls = 0  # calls served

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for conn in (self.tasks, self.results):
            try:
                conn.close()
            except OSError:
                pass


def _shutdown(workers: list[_Worker], owner_pid: int) -> None:
    if os.getpid() != owner_pid:  # a forked copy of the trainer must not kill its parent's workers
        return
    for w in workers:
        try:
            w.tasks.send(None)
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + 1.0
    for w in workers:
        try:
            w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        w.kill()
    workers.clear()


class RewardPool:
    """``num_workers`` reward worker processes; :meth:`run` maps calls over them with a hard per-call timeout.

    A call is ``(reward name, kwargs, completion, prompt, row)`` where ``row`` maps column name -> this sample's value;
    the worker runs ``resolve_reward(name)([completion], [prompt], **{col: [value]}, **kwargs)``. One :meth:`run` at a
    time (a lock serialises callers from several threads). ``memory_mb``: per-worker memory limit (0: none);
    ``max_calls``: replace a worker after this many calls (0: never). See the module docstring.
    """

    def __init__(self, num_workers: int, *, preload: list[str] | tuple[str, ...] = (), memory_mb: int = 2048,
                 max_calls: int = 1000):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        check_worker_limits(memory_mb, max_calls)
        self.num_workers = num_workers
        self.memory_mb, self.max_calls = memory_mb, max_calls
        self._preload = list(preload)
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, os.getpid())

    # -- lifecycle
    def start(self, timeout_s: float = WORKER_START_TIMEOUT_S) -> None:
        """Start the workers and wait until they are ready (optional: :meth:`run` starts them lazily)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("RewardPool.start after close()")
            self._fill()
            deadline, failed_starts = time.monotonic() + timeout_s, 0
            while not all(w.ready for w in self._workers) and time.monotonic() < deadline:
                failed_starts += self._poll({}, timeout=0.1)
                if failed_starts >= MAX_START_FAILURES:
                    logger.warning("reward workers fail to start (%d attempts); will retry on the next call",
                                   failed_starts)
                    return
                self._fill()

    def close(self) -> None:
        """Stop the workers (idempotent). The pool cannot be used afterwards."""
        with self._lock:
            self._closed = True
            self._finalizer()

    # -- internals
    def _fill(self) -> None:
        while len(self._workers) < self.num_workers:
            try:
                self._workers.append(_Worker(self._preload, self.memory_mb))
            except OSError as e:  # e.g. out of file descriptors or processes
                logger.warning("could not start a reward worker: %s", e)
                return

    def _discard(self, w: _Worker) -> None:
        w.kill()
        self._workers.remove(w)

    def _poll(self, results: dict, timeout: float | None) -> int:
        """Wait for worker messages up to ``timeout``; record results. Returns the number of failed worker starts."""
        by_conn = {w.results: w for w in self._workers}
        start_failures = 0
        try:
            readable = wait(list(by_conn), timeout)
        except OSError:
            readable = []
        for conn in readable:
            w = by_conn[conn]
            try:
                status, value, error = conn.recv()
            except Exception:  # EOFError/OSError: the pipe closed
                # Worker died: segfault, OOM kill, os._exit in a reward... The running call is not retried.
                if w.task is not None:
                    results[w.task] = CallResult("crash", error="reward worker died")
                elif not w.ready:
                    start_failures += 1
                self._discard(w)
                continue
            if status == "ready":
                w.ready = True
            elif w.task is not None:
                results[w.task] = CallResult(status, value, error)
                if self._over_memory(w):  # what the call left behind counts against it
                    results[w.task] = self._memory_failure()
                    self._discard(w)
                    continue
                w.task, w.calls = None, w.calls + 1
                at_limit = status == "error" and error.startswith("MemoryError")  # maybe full of leaked memory
                if at_limit or (self.max_calls and w.calls >= self.max_calls):
                    self._discard(w)  # recycled; _fill starts a fresh one
        now = time.monotonic()
        for w in list(self._workers):
            if w.task is not None and now >= w.deadline:
                results[w.task] = CallResult("timeout", error="reward call timed out")
                self._discard(w)
            elif w.task is not None and self._over_memory(w):
                results[w.task] = self._memory_failure()
                self._discard(w)
            elif not w.ready and now >= w.start_deadline:
                start_failures += 1
                self._discard(w)
        return start_failures

    def _over_memory(self, w: _Worker) -> bool:
        return bool(self.memory_mb) and _rss_mb(w.proc.pid) > self.memory_mb

    def _memory_failure(self) -> CallResult:
        return CallResult("crash", error=f"reward worker went over its memory limit of {self.memory_mb} MiB "
                                         "(rewards.worker_memory_mb); worker replaced")

    def run(self, tasks: list[tuple], timeout_s: float) -> list[CallResult]:
        """Run every call; each gets at most ``timeout_s`` seconds of a worker. Never raises for a call's behaviour."""
        results: dict[int, CallResult] = {}
        pending = deque(range(len(tasks)))
        with self._lock:
            if self._closed:
                raise RuntimeError("RewardPool.run after close()")
            failed_starts = 0
            while pending or any(w.task is not None for w in self._workers):
                self._fill()
                now = time.monotonic()
                for w in self._workers:
                    if not pending:
                        break
                    if w.ready and w.task is None:
                        i = pending.popleft()
                        try:
                            data = pickle.dumps(tasks[i], protocol=pickle.HIGHEST_PROTOCOL)
                        except Exception as e:  # e.g. a column value that cannot be pickled
                            results[i] = CallResult("error", error=f"cannot send reward call: {e}"[:1000])
                            continue
                        try:
                            w.tasks.send_bytes(data)
                        except OSError:  # the worker died while idle: not the call's fault, requeue it
                            pending.appendleft(i)
                            w.ready = False
                            w.start_deadline = now  # discarded (and counted as a failed start) by the next _poll
                            continue
                        w.task, w.deadline = i, now + timeout_s
                deadlines = [w.deadline if w.task is not None else w.start_deadline for w in self._workers]
                if not deadlines and pending:  # no worker could be started at all
                    failed_starts = MAX_START_FAILURES
                wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else 0.0
                busy = self.memory_mb and any(w.task is not None for w in self._workers)
                failed_starts += self._poll(results, timeout=min(wait_s, MEMORY_POLL_S if busy else 1.0))
                if any(w.ready for w in self._workers):
                    failed_starts = 0
                if failed_starts >= MAX_START_FAILURES:
                    logger.warning("reward workers fail to start; failing %d pending reward calls", len(pending))
                    while pending:
                        results[pending.popleft()] = CallResult("crash", error="reward workers fail to start")
            self._fill()  # replace killed workers now, so they are warm for the next call
        return [results[i] for i in range(len(tasks))]
