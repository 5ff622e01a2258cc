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
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from rewards.extract import as_text, extract_answer_tag, last_code_block

logger = logging.getLogger(__name__)

MAX_CODE_CHARS = 100_000  # a longer "solution" is a dump, not code worth a process
MAX_RESULT_BYTES = 1 << 20  # how much of the results file is read back
FILE_SIZE_LIMIT_BYTES = 16 << 20  # RLIMIT_FSIZE: the largest file the program may write
TMPFS_BYTES = 64 << 20  # size of the sandbox's private /tmp (memory-backed, and not counted in RLIMIT_AS)
PROCESS_LIMIT = 0  # processes or threads a sandboxed program may start besides itself
SANDBOX_UID_BASE, SANDBOX_UID_SPAN = 1 << 30, 1 << 29  # root: the program runs as a random uid in this range
BWRAP_ENV, UNSAFE_ENV = "THINKRL_BWRAP", "THINKRL_UNSAFE_NO_SANDBOX"
INSTALL_HINT = ("apt-get install bubblewrap (Debian/Ubuntu), dnf install bubblewrap (Fedora/RHEL), "
                "pacman -S bubblewrap (Arch); Linux only")
_SANDBOX_START_S = 10.0  # how long bwrap may take to create the namespaces before the call gives up on it

# Runs in the sandboxed interpreter. Reads {"code", "tests", "alarm_s", "sandbox"} as JSON after a nonce line from
# stdin. In the sandbox it first becomes its own unprivileged uid (when bwrap ran as root) and sets the rlimits,
# RLIMIT_NPROC from the tasks that uid has now (in this PID namespace: bwrap's init when bwrap mapped a user, and
# itself). Then it frees stdin, points fds 1/2 at /dev/null (prints are not results and cannot fill the disk),
# installs the guard, and writes "<nonce> <test index> <0|1>" lines to a private dup of the original stdout after every
# test, so a later hang or crash keeps the results reported before it.
_HARNESS = r"""
import json, os, signal, sys
_nonce = sys.stdin.readline().strip()
_payload = json.loads(sys.stdin.read())
_sandbox = _payload["sandbox"]
if _sandbox is not None:
    import resource
    if os.getuid() == 0:
        _id = _sandbox["uid"]
        os.setgroups([])
        os.setresgid(_id, _id, _id)
        os.setresuid(_id, _id, _id)  # clears every capability
        if os.getresuid() != (_id, _id, _id) or os.getgroups():
            os._exit(111)
    _tasks = 0
    for _pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/status" % _pid) as _f:
                _status = dict(_l.split(":", 1) for _l in _f.read().splitlines() if ":" in _l)
            if int(_status["Uid"].split()[0]) == os.getuid():
                _tasks += int(_status["Threads"])
        except (OSError, KeyError, ValueError):
            pass
    _nproc = _tasks + _sandbox["process_limit"]
    for _res, _soft, _hard in _sandbox["rlimits"] + [[resource.RLIMIT_NPROC, _nproc, _nproc]]:
        resource.setrlimit(_res, (_soft, _hard))
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
del _payload, _sandbox
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


# ---------------------------------------------------------------------------------------------------------- sandbox
def _unsafe(unsafe_no_sandbox: bool) -> bool:
    return bool(unsafe_no_sandbox) or os.environ.get(UNSAFE_ENV, "") == "1"


def _interpreter() -> str:
    """The base interpreter (not a venv's wrapper), resolved, so that its installation is all the sandbox needs."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _readonly_paths(interpreter: str) -> list[str]:
    """Host directories the sandbox sees read-only: /usr, and the interpreter's installation prefix when it is
    elsewhere (pyenv, conda, uv), parents first (a later bind would hide an earlier one below it)."""
    paths = ["/usr"]
    for path in (sys.base_prefix, sys.base_exec_prefix, os.path.dirname(os.path.dirname(interpreter))):
        path = os.path.realpath(path)
        if path != "/" and not any(path == p or path.startswith(p + "/") for p in paths):
            paths.append(path)
    return sorted(paths, key=len)


@functools.lru_cache(maxsize=None)
def _bwrap_has(bwrap: str, option: str) -> bool:
    try:
        usage = subprocess.run([bwrap, "--help"], capture_output=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return option.encode() in usage


def _bwrap_argv(bwrap: str, interpreter: str, info_fd: int | None) -> list[str]:
    """The bwrap command line up to and including ``interpreter -I``."""
    argv = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
            "--setenv", "LANG", "C.UTF-8", "--setenv", "HOME", "/tmp"]
    if os.geteuid() == 0:  # no user namespace; the harness drops to its own uid with these two capabilities
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user"] + (["--disable-userns"] if _bwrap_has(bwrap, "--disable-userns") else [])
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):  # symlinks into /usr on merged-/usr systems
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for path in _readonly_paths(interpreter):
        parents = []
        parent = os.path.dirname(path)
        while parent != "/":
            parents.insert(0, parent)
            parent = os.path.dirname(parent)
        for parent in parents:  # bwrap would create them 0700, closed to the sandbox's uid
            argv += ["--perms", "0755", "--dir", parent]
        argv += ["--ro-bind", path, path]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",  # how /usr/local Pythons find libpython
             "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp",
             "--chdir", "/tmp", "--remount-ro", "/dev", "--remount-ro", "/"]
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]  # reports the host pid of the sandbox's PID 1
    return argv + ["--", interpreter, "-I"]


_BWRAP_ENV_VARS = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # bwrap's own environment: /proc/1/environ inside


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


def _sandbox_init(info_fd: int) -> int | None:
    """A pidfd of the sandbox's PID 1, from bwrap's ``--info-fd`` report (written right after it forks); ``None`` if
    there is none (bwrap failed early, or a kernel without pidfds)."""
    data, deadline = b"", time.monotonic() + _SANDBOX_START_S
    try:
        while b"}" not in data:
            ready, _, _ = select.select([info_fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(info_fd, 4096) if ready else b""
            if not chunk:
                break
            data += chunk
        return os.pidfd_open(int(json.loads(data)["child-pid"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    finally:
        os.close(info_fd)


def _end(proc: subprocess.Popen, init_pidfd: int | None) -> None:
    """Kill the sandbox (or unsandboxed process group) and wait until every process of it is gone."""
    if init_pidfd is not None:
        try:  # PID 1 of the namespace: the kernel kills every other process in it before PID 1 is reported dead
            signal.pidfd_send_signal(init_pidfd, signal.SIGKILL)
        except OSError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session=True: the group id is the child's pid
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except OSError:
        pass
    proc.wait()
    if init_pidfd is not None:
        try:
            select.select([init_pidfd], [], [], _SANDBOX_START_S)  # readable once PID 1 and the namespace are gone
        finally:
            os.close(init_pidfd)


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
                        [sys.executable, "-I", "-c", _HARNESS], stdin=stdin, stdout=out, stderr=subprocess.DEVNULL,
                        cwd=tmp, env=env, close_fds=True, start_new_session=True,
                        preexec_fn=functools.partial(_apply_rlimits, limits),
                    )
                else:
                    info_r, info_w = os.pipe()
                    try:
                        proc = subprocess.Popen(
                            _bwrap_argv(bwrap, _interpreter(), info_w) + ["-c", _HARNESS], stdin=stdin, stdout=out,
                            stderr=err, cwd="/", env=_BWRAP_ENV_VARS, close_fds=True, pass_fds=(info_w,),
                            start_new_session=True,
                        )
                    except BaseException:
                        os.close(info_r)
                        raise
                    finally:
                        os.close(info_w)
                    init_pidfd = _sandbox_init(info_r)  # closes info_r
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
                _end(proc, init_pidfd)  # also ends whatever the program left running
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
