"""One run of a program on its tests (rewards/code_exec.py says what is isolated and why): the payload the harness
reads (the program and the steps to run, never the expected values), the rlimits, the harness started in bwrap's
sandbox (rewards/sandbox.py) or unsandboxed, the wall-clock limit and the call's status, and each test's verdict from
what the harness reported (rewards/code_judge.py).
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

from rewards.code_judge import judge, read_records
from rewards.code_tests import CALL_PRELUDE, CodeTest
from rewards.sandbox import BWRAP_ENV_VARS, bwrap_argv, end_sandbox, interpreter, sandbox_init_pidfd
from rewards.sandbox_harness import HARNESS

FILE_SIZE_LIMIT_BYTES = 16 << 20  # RLIMIT_FSIZE: the largest file the program may write, the results file included
MAX_RESULT_BYTES = FILE_SIZE_LIMIT_BYTES  # how much of the results file is read back
MAX_PRODUCED_BYTES = 4 << 20  # one reported value (encoded) or one case's stdout; a larger one fails its test
PROCESS_LIMIT = 0  # processes or threads a sandboxed program may start besides itself
SANDBOX_UID_BASE, SANDBOX_UID_SPAN = 1 << 30, 1 << 29  # root: the program runs as a random uid in this range


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



def _spawn(bwrap: str | None, tmp: str, limits: list, stdin, out, err, hash_seed: int | None) -> tuple[subprocess.Popen, int | None]:
    """Start the harness: in bwrap's sandbox (also returning a pidfd of the sandbox's PID 1), or unsandboxed. With
    `hash_seed`, str hashes (set and dict order) are fixed (PYTHONHASHSEED, which -I would ignore: the environment
    is built here and holds nothing else that Python reads, so -s is all of -I that is left to ask for)."""
    flags = ["-I"] if hash_seed is None else ["-s"]
    if bwrap is None:
        env = {"PATH": os.defpath, "HOME": tmp, "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
        if hash_seed is not None:
            env["PYTHONHASHSEED"] = str(hash_seed)
        proc = subprocess.Popen(
            [sys.executable, *flags, "-c", HARNESS], stdin=stdin, stdout=out, stderr=subprocess.DEVNULL, cwd=tmp,
            env=env, close_fds=True, start_new_session=True, preexec_fn=functools.partial(_apply_rlimits, limits),
        )
        return proc, None
    info_r, info_w = os.pipe()
    try:
        proc = subprocess.Popen(
            bwrap_argv(bwrap, interpreter(), info_w, hash_seed=hash_seed) + ["-c", HARNESS], stdin=stdin, stdout=out, stderr=err,
            cwd="/", env=BWRAP_ENV_VARS, close_fds=True, pass_fds=(info_w,), start_new_session=True,
        )
    except BaseException:
        os.close(info_r)
        raise
    finally:
        os.close(info_w)
    return proc, sandbox_init_pidfd(info_r)  # closes info_r


def run_program(code: str, wire_tests: list[list], *, time_limit_s: float, memory_mb: int, bwrap: str | None,
                prelude: str = "", max_bytes: int = MAX_PRODUCED_BYTES, hash_seed: int | None = None) -> tuple[dict, dict, str, str]:
    """One harness call: ``code`` and its tests' steps (rewards/code_tests.py::Step.wire) in the sandbox of ``bwrap``,
    or unsandboxed when ``bwrap`` is None. Returns (what the program produced, which tests ended: both as
    rewards/code_judge.py::read_records reads them, the call's status "ok" | "timeout" | "crash", bwrap's stderr).
    Never raises for any code text."""
    nonce = secrets.token_hex(16)  # frames the harness's lines; not a secret from the program (it can read it)
    limits = _rlimits(math.ceil(time_limit_s), memory_mb << 20, nproc=bwrap is None)
    uid = SANDBOX_UID_BASE + secrets.randbelow(SANDBOX_UID_SPAN)
    sandbox = None if bwrap is None else {"uid": uid, "rlimits": limits, "process_limit": PROCESS_LIMIT}
    payload = json.dumps({"code": code, "prelude": prelude, "tests": wire_tests, "max_bytes": max_bytes,
                          "alarm_s": math.ceil(time_limit_s) + 2, "sandbox": sandbox})
    with tempfile.TemporaryDirectory(prefix="thinkrl_exec_") as tmp:
        stdin_path, out_path = os.path.join(tmp, ".stdin"), os.path.join(tmp, ".results")
        with open(stdin_path, "w", encoding="ascii") as f:  # json.dumps output is ASCII-only
            f.write(nonce + "\n" + payload)
        with open(stdin_path, "rb") as stdin, open(out_path, "w+b") as out, tempfile.TemporaryFile() as err:
            try:
                proc, init_pidfd = _spawn(bwrap, tmp, limits, stdin, out, err, hash_seed)
            except (OSError, subprocess.SubprocessError) as e:
                return {}, {}, "crash", f"{type(e).__name__}: {e}"
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
            produced, ended = read_records(out.read(MAX_RESULT_BYTES), nonce, len(wire_tests))
            err.seek(0)
            bwrap_error = err.read(4000).decode(errors="replace").strip()
    if status == "ok" and len(ended) < len(wire_tests):
        # Killed by its CPU limit (SIGXCPU, then SIGKILL at the hard limit) or its SIGALRM backstop: a time-out too.
        # bwrap reports its child's death by signal N as exit status 128 + N.
        signum = -proc.returncode if bwrap is None else proc.returncode - 128
        status = "timeout" if signum in (signal.SIGXCPU, signal.SIGKILL, signal.SIGALRM) else "crash"
    return produced, ended, status, bwrap_error


def execute(
    code: str, tests: list[CodeTest], *, time_limit_s: float, memory_mb: int, bwrap: str | None
) -> tuple[list[bool], str, str]:
    """rewards/code_exec.py::run_tests in the sandbox of ``bwrap``, or unsandboxed when ``bwrap`` is None; also
    returns what bwrap wrote to stderr."""
    # Only the steps go in (code, expressions, inputs); the checks and their expected values stay in this process.
    prelude = CALL_PRELUDE if any(step.kind == "call" for t in tests for step in t.steps) else ""
    produced, ended, status, bwrap_error = run_program(
        code, [[step.wire() for step in t.steps] for t in tests], time_limit_s=time_limit_s, memory_mb=memory_mb,
        bwrap=bwrap, prelude=prelude)
    passed = [ended.get(i) is True and all(judge(step, produced.get((i, j))) for j, step in enumerate(t.steps))
              for i, t in enumerate(tests)]
    return passed, status, bwrap_error
