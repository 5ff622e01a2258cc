"""Code-execution reward: run the completion's Python against assert-style tests in a resource-limited subprocess.

Code: the last fenced ```` ```python ```` block, else the ``<answer>`` content. Tests (column ``tests``): a list of
Python statements, usually ``assert`` lines, each one test (a single string is one test). The solution is executed as
module ``__solution__`` (so an ``if __name__ == "__main__":`` block does not run), then each test is executed in the
solution's namespace. Score = fraction of tests that ran without raising; ``all_or_nothing=True`` gives 1.0 only when
all pass. A program that raises on load fails every test; one that exits early (``exit(0)`` before the tests, a known
reward hack) gets credit only for tests reported before it exited, i.e. none.

Isolation, per completion: a fresh ``python -I`` (no user site, no PYTHON* env) in a new session (process group), cwd a
fresh temporary directory, environment reduced to PATH/HOME/LANG, stdin/stdout/stderr not shared with the trainer, and
resource limits set in ``preexec_fn``: RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_FSIZE (disk fill), RLIMIT_NPROC = 0
(no fork/threads), RLIMIT_CORE = 0. The wall-clock limit kills the whole process group. Tests and code go in through
stdin (not a file in cwd the program could read), and the harness reports each result with a random nonce so printing
"passed" does not count. Before the solution runs, a best-effort guard (after OpenAI human-eval
``human_eval/execution.py::reliability_guard``) replaces fork/exec/spawn/kill, ``_posixsubprocess.fork_exec`` and the
socket constructors with functions that raise, and ``SIGALRM`` is armed as a backstop that ends the program even if the
parent that should kill it died.

THIS IS NOT A SECURITY BOUNDARY. It stops accidents (infinite loops, fork bombs, memory or disk blow-ups, stray network
calls), not a deliberately adversarial program: ``ctypes``, frame introspection to find the nonce, objects whose
``__eq__`` always returns True, and writes anywhere the trainer's user can write all get through. RLIMIT_NPROC is not
enforced for root (so, as root, fork protection is only the guard and the process-group kill). Run untrusted workloads
in a container/VM sandbox.

Timing: each call costs one interpreter start (~30-50 ms) plus the program's run time, at most ``time_limit_s``. In the
combiner this reward runs in a worker process whose own limit (``RewardCombiner(timeout_s=...)``) must exceed
``time_limit_s``; if it does not, the program is still ended by its SIGALRM/RLIMIT_CPU backstop.
"""

from __future__ import annotations

import functools
import json
import math
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile

from rewards.extract import as_text, extract_answer_tag, last_code_block

MAX_CODE_CHARS = 100_000  # a longer "solution" is a dump, not code worth a process
MAX_RESULT_BYTES = 1 << 20  # how much of the results file is read back
FILE_SIZE_LIMIT_BYTES = 16 << 20  # RLIMIT_FSIZE: the largest file the program may write

# Runs in the sandboxed interpreter. Reads {"code", "tests", "alarm_s"} as JSON after a nonce line from stdin, then
# frees stdin, points fds 1/2 at /dev/null (prints are not results and cannot fill the disk), installs the guard, and
# writes "<nonce> <test index> <0|1>" lines to a private dup of the original stdout after every test, so a later hang or
# crash keeps the results reported before it.
_HARNESS = r"""
import json, os, signal, sys
_nonce = sys.stdin.readline().strip()
_payload = json.loads(sys.stdin.read())
_null = os.open(os.devnull, os.O_RDWR)
_out = os.dup(1)
for _fd in (0, 1, 2):
    os.dup2(_null, _fd)
signal.alarm(int(_payload["alarm_s"]))
_write, _exit, _exec, _compile = os.write, os._exit, exec, compile

def _deny(*args, **kwargs):
    raise PermissionError("disabled in the thinkrl reward sandbox")

import posix, _posixsubprocess, _socket, socket, resource
for _mod in (os, posix):
    for _name in ("fork", "forkpty", "vfork", "system", "popen", "posix_spawn", "posix_spawnp", "execv", "execve",
                  "execl", "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp",
                  "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "kill", "killpg", "setsid", "setpgid",
                  "setpgrp", "register_at_fork"):
        if hasattr(_mod, _name):
            setattr(_mod, _name, _deny)
_posixsubprocess.fork_exec = _deny
for _mod in (socket, _socket):
    for _name in ("socket", "socketpair", "fromfd", "create_connection", "create_server"):
        if hasattr(_mod, _name):
            setattr(_mod, _name, _deny)
for _name in ("alarm", "setitimer", "signal", "pthread_kill", "pthread_sigmask", "sigwait"):
    setattr(signal, _name, _deny)
resource.setrlimit = _deny

_code, _tests = _payload["code"], _payload["tests"]
del _payload
_ns = {"__name__": "__solution__", "__builtins__": __builtins__}
try:
    _exec(_compile(_code, "solution.py", "exec"), _ns)
    _loaded = True
except SystemExit:
    _loaded = True
except BaseException:
    _loaded = False
for _i, _test in enumerate(_tests):
    _ok = False
    if _loaded:
        try:
            _exec(_compile(_test, "test_%d.py" % _i, "exec"), _ns)
            _ok = True
        except BaseException:
            _ok = False
    _write(_out, ("%s %d %d\n" % (_nonce, _i, _ok)).encode())
_exit(0)
"""


def extract_code(completion: str) -> str | None:
    """The program to run: last ```` ```python ```` block, else ``<answer>`` content; ``None`` if neither."""
    code = last_code_block(completion)
    if code is None:
        code = extract_answer_tag(completion)
    return code if code and code.strip() else None


def _as_tests(tests: object) -> list[str]:
    if isinstance(tests, str):
        return [tests]
    try:
        return [str(t) for t in tests]  # type: ignore[union-attr]
    except TypeError:
        return []


def _rlimits(cpu_s: int, memory_bytes: int) -> list[tuple[int, tuple[int, int]]]:
    """The limits for the child, computed in the parent and clamped to our own hard limits (a non-root process may not
    raise a hard limit, and a failing preexec_fn would lose the sample)."""
    wanted = [
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),  # soft: SIGXCPU, hard: SIGKILL one second later
        (resource.RLIMIT_AS, memory_bytes, memory_bytes),
        (resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT_BYTES, FILE_SIZE_LIMIT_BYTES),
        (resource.RLIMIT_NPROC, 0, 0),  # counted per user: 0 means no new process or thread (not enforced for root)
        (resource.RLIMIT_CORE, 0, 0),
    ]
    limits = []
    for res, soft, hard in wanted:
        _, current_hard = resource.getrlimit(res)
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        limits.append((res, (soft, hard)))
    return limits


def _apply_rlimits(limits: list[tuple[int, tuple[int, int]]]) -> None:
    # Runs in the child between fork and exec (preexec_fn): only setrlimit calls, no allocation-heavy Python, which is
    # the documented hazard of preexec_fn in a threaded parent; a child stuck here is still killed by the wall clock.
    for res, value in limits:
        resource.setrlimit(res, value)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session=True: the group id is the child's pid
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except OSError:
        pass


def run_tests(
    code: str, tests: list[str], *, time_limit_s: float = 5.0, memory_mb: int = 1024
) -> tuple[list[bool], str]:
    """Run ``code`` then each test in a sandboxed subprocess. Returns ``(passed per test, status)`` with status
    "ok", "timeout" (wall clock exceeded, process group killed) or "crash" (the program ended without reporting all
    tests, e.g. ``os._exit``, a signal, or the memory limit). Never raises for any code text."""
    nonce = secrets.token_hex(16)
    payload = json.dumps({"code": code, "tests": tests, "alarm_s": math.ceil(time_limit_s) + 2})  # ASCII-only
    passed = [False] * len(tests)
    limits = _rlimits(math.ceil(time_limit_s), memory_mb << 20)
    with tempfile.TemporaryDirectory(prefix="thinkrl_exec_") as tmp:
        stdin_path, out_path = os.path.join(tmp, ".stdin"), os.path.join(tmp, ".results")
        with open(stdin_path, "w", encoding="ascii") as f:
            f.write(nonce + "\n" + payload)
        with open(stdin_path, "rb") as stdin, open(out_path, "w+b") as out:
            env = {"PATH": os.defpath, "HOME": tmp, "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-c", _HARNESS],
                    stdin=stdin,
                    stdout=out,
                    stderr=subprocess.DEVNULL,
                    cwd=tmp,
                    env=env,
                    close_fds=True,
                    start_new_session=True,
                    preexec_fn=functools.partial(_apply_rlimits, limits),
                )
            except (OSError, subprocess.SubprocessError):
                return passed, "crash"
            # The child holds both files open; unlinking hides them from the program's cwd listing.
            for path in (stdin_path, out_path):
                os.unlink(path)
            status = "ok"
            try:
                proc.wait(timeout=time_limit_s)
            except subprocess.TimeoutExpired:
                status = "timeout"
            finally:
                _kill_group(proc)  # also reaps stragglers the program left in its group
                proc.wait()
            out.seek(0)
            lines = out.read(MAX_RESULT_BYTES).decode("ascii", "replace").splitlines()
    reported = 0
    for line in lines:
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] == nonce and parts[1].isdigit() and int(parts[1]) < len(tests):
            passed[int(parts[1])] = parts[2] == "1"
            reported += 1
    if status == "ok" and reported < len(tests):
        # Killed by its CPU limit (SIGXCPU, then SIGKILL at the hard limit) or its SIGALRM backstop: a time-out too.
        time_signals = (-signal.SIGXCPU, -signal.SIGKILL, -signal.SIGALRM)
        status = "timeout" if proc.returncode in time_signals else "crash"
    return passed, status


def score_with_status(
    completion: str, tests: object, *, time_limit_s: float = 5.0, memory_mb: int = 1024, all_or_nothing: bool = False
) -> tuple[float, str]:
    """``(score, status)``; status is "ok", "timeout", "crash", "no_code" or "no_tests". Never raises."""
    test_list = _as_tests(tests)
    if not test_list:
        return 0.0, "no_tests"
    code = extract_code(as_text(completion))
    if code is None or len(code) > MAX_CODE_CHARS:
        return 0.0, "no_code"
    passed, status = run_tests(code, test_list, time_limit_s=time_limit_s, memory_mb=memory_mb)
    fraction = sum(passed) / len(passed)
    return (float(fraction == 1.0) if all_or_nothing else fraction), status


def score(completion: str, tests: object, *, time_limit_s: float = 5.0, memory_mb: int = 1024,
          all_or_nothing: bool = False) -> float:
    """Fraction of ``tests`` (assert statements) that pass against the completion's code.

    >>> score("```python\\ndef add(a, b):\\n    return a + b\\n```", ["assert add(1, 2) == 3", "assert add(1, 1) == 3"])
    0.5
    """
    return score_with_status(
        completion, tests, time_limit_s=time_limit_s, memory_mb=memory_mb, all_or_nothing=all_or_nothing
    )[0]


def code_exec(
    completions: list,
    prompts: list | None = None,
    *,
    tests: list | None = None,
    time_limit_s: float = 5.0,
    memory_mb: int = 1024,
    all_or_nothing: bool = False,
    **_,
) -> list[float | None]:
    """Batch reward. Column ``tests``: per row a list of assert statements (or one string). ``None`` for a row with no
    tests. Completions run one after another; the combiner parallelises across its workers."""
    if tests is None:
        raise ValueError("code_exec needs the dataset column 'tests'")
    if time_limit_s <= 0 or memory_mb <= 0:
        raise ValueError(f"code_exec needs time_limit_s > 0 and memory_mb > 0, got {time_limit_s}, {memory_mb}")
    return [
        None if not _as_tests(t) else score(c, t, time_limit_s=time_limit_s, memory_mb=memory_mb,
                                            all_or_nothing=all_or_nothing)
        for c, t in zip(completions, tests, strict=True)
    ]
