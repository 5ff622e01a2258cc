"""Code-execution reward: run the completion's Python against assert-style tests in a bubblewrap sandbox.

Code: the last fenced ```` ```python ```` block, else the ``<answer>`` content. Tests (column ``tests``): a list of
Python statements, usually ``assert`` lines, each one test (a single string is one test). The solution is executed as
module ``__solution__`` (so an ``if __name__ == "__main__":`` block does not run), then each test is executed in the
solution's namespace. Score = fraction of tests that ran without raising; ``all_or_nothing=True`` gives 1.0 only when
all pass. A program that raises on load fails every test; one that exits early (``exit(0)`` before the tests, a known
reward hack) gets credit only for tests reported before it exited, i.e. none.

The boundary is the operating system, not Python (a policy optimised against this reward learns whatever it allows;
probes of the previous rlimit-only sandbox read /etc/shadow and the trainer's tokens, SIGKILLed the trainer, reached
host loopback services and left daemons running). Each program runs in its own bubblewrap (``bwrap``) sandbox:

* New PID, network, IPC, UTS and cgroup namespaces and a new mount namespace whose read-only root holds only /usr,
  /lib*, the interpreter's installation prefix (its stdlib; not the trainer's venv) and /etc/ld.so.cache, plus a fresh
  /proc that lists only the sandbox's processes, a minimal /dev and a private ``TMPFS_BYTES`` tmpfs /tmp as the
  working directory. Host files (/home, /root, /work, the host's /tmp, run directories), host processes and any
  network, loopback and abstract unix sockets included, do not exist inside.
* An empty environment, for bwrap itself too (so no /proc/PID/environ inside holds the trainer's tokens), and
  ``--new-session``, no_new_privs and nosuid mounts.
* An unprivileged user. Started as root, bwrap keeps only CAP_SETUID/CAP_SETGID and the harness switches to a random
  uid >= 2**30 of its own before it reads the program (no user namespace: root's would map to host uid 0, for which
  RLIMIT_NPROC is not enforced); started as a user, bwrap maps that user into a new user namespace.
* Limits set by the harness inside: RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_FSIZE, RLIMIT_CORE = 0 and RLIMIT_NPROC =
  the tasks its uid has + ``PROCESS_LIMIT`` (0: no new process or thread). RLIMIT_NPROC counts per uid, per user
  namespace: the sandbox's own uid is what makes it count only this program.
* ``--die-with-parent``, and at the end of every call the sandbox's PID 1 is SIGKILLed and the call waits for it: the
  kernel then kills every process in the PID namespace, so nothing the program started (forked, setsid) survives.

Not isolated: the kernel itself (an exploit of a kernel bug escapes any namespace sandbox; use a VM for that threat),
CPU time and memory within the limits, and the results channel: code that finds the result nonce by frame
introspection or passes asserts with an always-equal ``__eq__`` forges its score. Those are reward hacks within the
program, not escapes; hidden tests and ``all_or_nothing`` make them harder. Inside the sandbox a best-effort Python
guard (after OpenAI human-eval ``human_eval/execution.py::reliability_guard``) still disables fork/exec/kill/socket
and signal functions, and ``SIGALRM`` is armed as a backstop; they stop accidents, the namespaces stop the rest.

Without a working bubblewrap (not installed, e.g. macOS, or user namespaces forbidden in a container) the batch
reward raises ``ValueError`` when it is configured, saying how to install it. ``unsafe_no_sandbox=True`` (or
``THINKRL_UNSAFE_NO_SANDBOX=1``) runs programs without it, isolated only by rlimits, a new session and the guard:
that is NO security boundary. ``THINKRL_BWRAP`` names the bwrap binary (default: ``bwrap`` on PATH).

Timing: each call costs a sandbox start (~10-30 ms) and an interpreter start (~30-150 ms) plus the program's run
time, at most ``time_limit_s``. In the combiner this reward runs in a worker process whose own limit
(``RewardCombiner(timeout_s=...)``) must exceed ``time_limit_s``; if it does not, the sandbox dies with the killed
worker (``--die-with-parent``).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile

from rewards.extract import as_text, extract_answer_tag, last_code_block
from rewards.sandbox import (
    BWRAP_ENV_VARS, HARNESS, TMPFS_BYTES, bwrap_argv, end_sandbox, interpreter, sandbox_init_pidfd,  # noqa: F401 (TMPFS_BYTES: re-export)
)

logger = logging.getLogger(__name__)

MAX_CODE_CHARS = 100_000  # a longer "solution" is a dump, not code worth a process
MAX_RESULT_BYTES = 1 << 20  # how much of the results file is read back
FILE_SIZE_LIMIT_BYTES = 16 << 20  # RLIMIT_FSIZE: the largest file the program may write
PROCESS_LIMIT = 0  # processes or threads a sandboxed program may start besides itself
SANDBOX_UID_BASE, SANDBOX_UID_SPAN = 1 << 30, 1 << 29  # root: the program runs as a random uid in this range
BWRAP_ENV, UNSAFE_ENV = "THINKRL_BWRAP", "THINKRL_UNSAFE_NO_SANDBOX"
INSTALL_HINT = ("apt-get install bubblewrap (Debian/Ubuntu), dnf install bubblewrap (Fedora/RHEL), "
                "pacman -S bubblewrap (Arch); Linux only")



# ---------------------------------------------------------------------------------------------------------- sandbox
def _unsafe(unsafe_no_sandbox: bool) -> bool:
    return bool(unsafe_no_sandbox) or os.environ.get(UNSAFE_ENV, "") == "1"


@functools.lru_cache(maxsize=None)
def _probe(bwrap: str, executable: str, euid: int) -> str | None:
    """Run one trivial program the way every program runs; a one-line reason when that fails. (The arguments are
    the cache key: the answer holds for this bwrap, interpreter and user.)"""
    passed, status, bwrap_error = _execute("x = 1", ["assert x == 1"], time_limit_s=30.0, memory_mb=1024, bwrap=bwrap)
    if passed == [True]:
        return None
    detail = bwrap_error.splitlines()[-1] if bwrap_error else f"a test program ended with status {status!r}"
    return (f"bubblewrap ({bwrap}) cannot run the code_exec sandbox here: {detail} (bubblewrap 0.8 is tested; in a "
            f"container, namespaces must be allowed, e.g. docker run --privileged or a seccomp profile that permits "
            f"them)")


def sandbox_problem() -> str | None:
    """``None`` when the bubblewrap sandbox works on this machine, else a one-line reason saying how to fix it.
    The answer is cached per bwrap binary and interpreter (a first call runs one program in a sandbox, ~0.2 s)."""
    name = os.environ.get(BWRAP_ENV) or "bwrap"
    opt_out = (f"or set the code_exec option unsafe_no_sandbox: true (or {UNSAFE_ENV}=1) to run model-written code "
               f"unisolated, with the trainer's permissions")
    bwrap = shutil.which(name)
    if bwrap is None:
        where = f"${BWRAP_ENV}={name}" if os.environ.get(BWRAP_ENV) else "bwrap on PATH"
        return (f"code_exec runs model-written code in a bubblewrap sandbox, but {where} was not found; install it "
                f"({INSTALL_HINT}), {opt_out}")
    problem = _probe(bwrap, sys.executable, os.geteuid())
    return None if problem is None else f"{problem}; {opt_out}"


_warned: set[str] = set()


def _warn_once(key: str, message: str, *args) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


# ---------------------------------------------------------------------------------------------------- running code
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


def _rlimits(cpu_s: int, memory_bytes: int, nproc: bool) -> list[tuple[int, int, int]]:
    """The limits for the program, computed in the parent and clamped to our own hard limits (an unprivileged
    process may not raise a hard limit, and a failing setrlimit would lose the sample)."""
    wanted = [
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),  # soft: SIGXCPU, hard: SIGKILL one second later
        (resource.RLIMIT_AS, memory_bytes, memory_bytes),
        (resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT_BYTES, FILE_SIZE_LIMIT_BYTES),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    if nproc:  # unsandboxed: 0 = no new process or thread, counted per user (and not enforced for root)
        wanted.append((resource.RLIMIT_NPROC, 0, 0))
    limits = []
    for res, soft, hard in wanted:
        _, current_hard = resource.getrlimit(res)
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        limits.append((res, soft, hard))
    return limits


def _apply_rlimits(limits: list[tuple[int, int, int]]) -> None:
    # Unsandboxed only. Runs in the child between fork and exec (preexec_fn): only setrlimit calls, no
    # allocation-heavy Python, which is the documented hazard of preexec_fn in a threaded parent.
    for res, soft, hard in limits:
        resource.setrlimit(res, (soft, hard))


def run_tests(
    code: str, tests: list[str], *, time_limit_s: float = 5.0, memory_mb: int = 1024, unsafe_no_sandbox: bool = False
) -> tuple[list[bool], str]:
    """Run ``code`` then each test in a sandboxed subprocess. Returns ``(passed per test, status)`` with status
    "ok", "timeout" (wall clock exceeded, the sandbox killed), "crash" (the program ended without reporting all
    tests, e.g. ``os._exit``, a signal, or the memory limit) or "no_sandbox" (no working bubblewrap and no opt-out:
    nothing ran). Never raises for any code text."""
    if _unsafe(unsafe_no_sandbox):
        _warn_once("unsafe", "code_exec runs model-written code WITHOUT a sandbox (unsafe_no_sandbox / %s=1): it can "
                   "read, change and kill whatever this user can", UNSAFE_ENV)
        bwrap = None
    elif sandbox_problem() is not None:
        return [False] * len(tests), "no_sandbox"
    else:
        bwrap = shutil.which(os.environ.get(BWRAP_ENV) or "bwrap")
    passed, status, bwrap_error = _execute(code, tests, time_limit_s=time_limit_s, memory_mb=memory_mb, bwrap=bwrap)
    if bwrap_error and not any(passed):  # bwrap's own messages (the program's stderr is /dev/null)
        _warn_once("bwrap", "code_exec sandbox failed to run a program: %s", bwrap_error.splitlines()[-1])
    return passed, status


def _execute(
    code: str, tests: list[str], *, time_limit_s: float, memory_mb: int, bwrap: str | None
) -> tuple[list[bool], str, str]:
    """:func:`run_tests` in the sandbox of ``bwrap``, or unsandboxed when ``bwrap`` is None; also returns what bwrap
    wrote to stderr."""
    passed = [False] * len(tests)
    nonce = secrets.token_hex(16)
    limits = _rlimits(math.ceil(time_limit_s), memory_mb << 20, nproc=bwrap is None)
    uid = SANDBOX_UID_BASE + secrets.randbelow(SANDBOX_UID_SPAN)
    sandbox = None if bwrap is None else {"uid": uid, "rlimits": limits, "process_limit": PROCESS_LIMIT}
    payload = json.dumps({"code": code, "tests": tests, "alarm_s": math.ceil(time_limit_s) + 2, "sandbox": sandbox})
    with tempfile.TemporaryDirectory(prefix="thinkrl_exec_") as tmp:
        stdin_path, out_path = os.path.join(tmp, ".stdin"), os.path.join(tmp, ".results")
        with open(stdin_path, "w", encoding="ascii") as f:  # json.dumps output is ASCII-only
            f.write(nonce + "\n" + payload)
        with open(stdin_path, "rb") as stdin, open(out_path, "w+b") as out, tempfile.TemporaryFile() as err:
            init_pidfd = None
            try:
                if bwrap is None:
                    env = {"PATH": os.defpath, "HOME": tmp, "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
                    proc = subprocess.Popen(
                        [sys.executable, "-I", "-c", HARNESS], stdin=stdin, stdout=out, stderr=subprocess.DEVNULL,
                        cwd=tmp, env=env, close_fds=True, start_new_session=True,
                        preexec_fn=functools.partial(_apply_rlimits, limits),
                    )
                else:
                    info_r, info_w = os.pipe()
                    try:
                        proc = subprocess.Popen(
                            bwrap_argv(bwrap, interpreter(), info_w) + ["-c", HARNESS], stdin=stdin, stdout=out,
                            stderr=err, cwd="/", env=BWRAP_ENV_VARS, close_fds=True, pass_fds=(info_w,),
                            start_new_session=True,
                        )
                    except BaseException:
                        os.close(info_r)
                        raise
                    finally:
                        os.close(info_w)
                    init_pidfd = sandbox_init_pidfd(info_r)  # closes info_r
            except (OSError, subprocess.SubprocessError) as e:
                return passed, "crash", f"{type(e).__name__}: {e}"
            # The child holds both files open; unlinking hides them from the program's cwd listing (unsandboxed).
            for path in (stdin_path, out_path):
                os.unlink(path)
            status = "ok"
            try:
                proc.wait(timeout=time_limit_s)
            except subprocess.TimeoutExpired:
                status = "timeout"
            finally:
                end_sandbox(proc, init_pidfd)  # also ends whatever the program left running
            out.seek(0)
            lines = out.read(MAX_RESULT_BYTES).decode("ascii", "replace").splitlines()
            err.seek(0)
            bwrap_error = err.read(4000).decode(errors="replace").strip()
    reported = 0
    for line in lines:
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] == nonce and parts[1].isdigit() and int(parts[1]) < len(tests):
            passed[int(parts[1])] = parts[2] == "1"
            reported += 1
    if status == "ok" and reported < len(tests):
        # Killed by its CPU limit (SIGXCPU, then SIGKILL at the hard limit) or its SIGALRM backstop: a time-out too.
        # bwrap reports its child's death by signal N as exit status 128 + N.
        signum = -proc.returncode if bwrap is None else proc.returncode - 128
        status = "timeout" if signum in (signal.SIGXCPU, signal.SIGKILL, signal.SIGALRM) else "crash"
    return passed, status, bwrap_error


def score_with_status(
    completion: str, tests: object, *, time_limit_s: float = 5.0, memory_mb: int = 1024, all_or_nothing: bool = False,
    unsafe_no_sandbox: bool = False,
) -> tuple[float, str]:
    """``(score, status)``; status is "ok", "timeout", "crash", "no_sandbox", "no_code" or "no_tests". Never raises."""
    test_list = _as_tests(tests)
    if not test_list:
        return 0.0, "no_tests"
    code = extract_code(as_text(completion))
    if code is None or len(code) > MAX_CODE_CHARS:
        return 0.0, "no_code"
    passed, status = run_tests(code, test_list, time_limit_s=time_limit_s, memory_mb=memory_mb,
                               unsafe_no_sandbox=unsafe_no_sandbox)
    fraction = sum(passed) / len(passed)
    return (float(fraction == 1.0) if all_or_nothing else fraction), status


def score(completion: str, tests: object, *, time_limit_s: float = 5.0, memory_mb: int = 1024,
          all_or_nothing: bool = False, unsafe_no_sandbox: bool = False) -> float:
    """Fraction of ``tests`` (assert statements) that pass against the completion's code.

    >>> score("```python\\ndef add(a, b):\\n    return a + b\\n```", ["assert add(1, 2) == 3", "assert add(1, 1) == 3"])
    0.5
    """
    return score_with_status(completion, tests, time_limit_s=time_limit_s, memory_mb=memory_mb,
                             all_or_nothing=all_or_nothing, unsafe_no_sandbox=unsafe_no_sandbox)[0]


def code_exec(
    completions: list,
    prompts: list | None = None,
    *,
    tests: list | None = None,
    time_limit_s: float = 5.0,
    memory_mb: int = 1024,
    all_or_nothing: bool = False,
    unsafe_no_sandbox: bool = False,
    **_,
) -> list[float | None]:
    """Batch reward. Column ``tests``: per row a list of assert statements (or one string). ``None`` for a row with no
    tests. Completions run one after another; the combiner parallelises across its workers.

    Raises ``ValueError`` (a configuration error, also on the combiner's dry run with an empty batch) for a missing
    ``tests`` column, invalid limits, or no working bubblewrap without ``unsafe_no_sandbox``."""
    if tests is None:
        raise ValueError("code_exec needs the dataset column 'tests'")
    if time_limit_s <= 0 or memory_mb <= 0:
        raise ValueError(f"code_exec needs time_limit_s > 0 and memory_mb > 0, got {time_limit_s}, {memory_mb}")
    if not isinstance(unsafe_no_sandbox, bool):  # the YAML string "false" would be true
        raise ValueError(f"code_exec option unsafe_no_sandbox must be true or false, got {unsafe_no_sandbox!r}")
    if not _unsafe(unsafe_no_sandbox):
        problem = sandbox_problem()
        if problem is not None:
            raise ValueError(problem)
    return [
        None if not _as_tests(t) else score(c, t, time_limit_s=time_limit_s, memory_mb=memory_mb,
                                            all_or_nothing=all_or_nothing, unsafe_no_sandbox=unsafe_no_sandbox)
        for c, t in zip(completions, tests, strict=True)
    ]
