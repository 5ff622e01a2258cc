"""The bubblewrap command line and lifecycle of one sandboxed program (rewards/code_exec.py says what is isolated and
why). Here: which host paths the sandbox sees, the `bwrap` argv, and ending a sandbox so that nothing it started
survives (SIGKILL its PID 1 through a pidfd, then wait for the namespace to go). The harness that runs inside is
rewards/sandbox_harness.py; one call of it is rewards/code_run.py.
"""

from __future__ import annotations

import functools
import json
import os
import select
import signal
import subprocess
import sys
import time

TMPFS_BYTES = 64 << 20  # size of the sandbox's private /tmp (memory-backed, and not counted in RLIMIT_AS)
SANDBOX_START_S = 10.0  # how long bwrap may take to create the namespaces before the call gives up on it


def interpreter() -> str:
    """The base interpreter (not a venv's wrapper), resolved, so that its installation is all the sandbox needs."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def readonly_paths(interpreter: str) -> list[str]:
    """Host directories the sandbox sees read-only: /usr, and the interpreter's installation prefix when it is
    elsewhere (pyenv, conda, uv), parents first (a later bind would hide an earlier one below it)."""
    paths = ["/usr"]
    for path in (sys.base_prefix, sys.base_exec_prefix, os.path.dirname(os.path.dirname(interpreter))):
        path = os.path.realpath(path)
        if path != "/" and not any(path == p or path.startswith(p + "/") for p in paths):
            paths.append(path)
    return sorted(paths, key=len)


@functools.lru_cache(maxsize=None)
def bwrap_has(bwrap: str, option: str) -> bool:
    try:
        usage = subprocess.run([bwrap, "--help"], capture_output=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return option.encode() in usage


def bwrap_argv(bwrap: str, interpreter: str, info_fd: int | None, hash_seed: int | None = None) -> list[str]:
    """The bwrap command line up to and including ``interpreter -I`` (``-s`` with PYTHONHASHSEED when `hash_seed` is
    given: the environment is cleared, so that variable is the only one Python could read)."""
    argv = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
            "--setenv", "LANG", "C.UTF-8", "--setenv", "HOME", "/tmp"]
    if os.geteuid() == 0:  # no user namespace; the harness drops to its own uid with these two capabilities
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user"] + (["--disable-userns"] if bwrap_has(bwrap, "--disable-userns") else [])
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):  # symlinks into /usr on merged-/usr systems
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for path in readonly_paths(interpreter):
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
    if hash_seed is not None:
        return argv + ["--setenv", "PYTHONHASHSEED", str(hash_seed), "--", interpreter, "-s"]
    return argv + ["--", interpreter, "-I"]


BWRAP_ENV_VARS = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # bwrap's own environment: /proc/1/environ inside


def sandbox_init_pidfd(info_fd: int) -> int | None:
    """A pidfd of the sandbox's PID 1, from bwrap's ``--info-fd`` report (written right after it forks); ``None`` if
    there is none (bwrap failed early, or a kernel without pidfds)."""
    data, deadline = b"", time.monotonic() + SANDBOX_START_S
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


def end_sandbox(proc: subprocess.Popen, init_pidfd: int | None) -> None:
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
            select.select([init_pidfd], [], [], SANDBOX_START_S)  # readable once PID 1 and the namespace are gone
        finally:
            os.close(init_pidfd)
