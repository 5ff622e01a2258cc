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

# Bootstraps a worker: adopt the caller's sys.path, then serve. argv: task fd, result fd, sys.path json, preload json.
_BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[3]); "
    "from rewards.executor import _serve; _serve(int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[4]))"
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


def _serve(task_fd: int, result_fd: int, preload: list[str]) -> None:
    """Worker main loop: receive ``(name, kwargs, completion, prompt, row)``, send ``(status, value, error)``."""
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
class _Worker:
    def __init__(self, preload: list[str]):
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(task_r), str(result_w), json.dumps([str(p) for p in sys.path]),
                 json.dumps(preload)],
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
    time (a lock serialises callers from several threads).
    """

    def __init__(self, num_workers: int, *, preload: list[str] | tuple[str, ...] = ()):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.num_workers = num_workers
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
                self._workers.append(_Worker(self._preload))
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
                w.task = None
        now = time.monotonic()
        for w in list(self._workers):
            if w.task is not None and now >= w.deadline:
                results[w.task] = CallResult("timeout", error="reward call timed out")
                self._discard(w)
            elif not w.ready and now >= w.start_deadline:
                start_failures += 1
                self._discard(w)
        return start_failures

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
                failed_starts += self._poll(results, timeout=min(wait_s, 1.0))
                if any(w.ready for w in self._workers):
                    failed_starts = 0
                if failed_starts >= MAX_START_FAILURES:
                    logger.warning("reward workers fail to start; failing %d pending reward calls", len(pending))
                    while pending:
                        results[pending.popleft()] = CallResult("crash", error="reward workers fail to start")
            self._fill()  # replace killed workers now, so they are warm for the next call
        return [results[i] for i in range(len(tasks))]
