"""code_exec's bubblewrap sandbox against the escapes found by probing the old rlimit sandbox (issue 12).

Each test runs a real hostile program (ctypes and raw syscalls included, since a policy optimised against the reward
finds them) and checks, from the host, that it did not get out: it must still *run* (status "ok"), so a sandbox that
merely crashes every program does not pass. Each of these failed against the pre-bubblewrap code_exec.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rewards import RewardCombiner, RewardSpec, code_exec, code_run, sandbox

REPO = Path(__file__).resolve().parents[1]


# Every escape is tried through both ways model-written code runs: the code_exec reward, and the Python tool of
# tool-integrated rollouts (rewards/python_tool.py: the program as an earlier cell, replayed, then the tests as the
# cell that runs; issue 25). Tests that take the `runner` fixture run once for each.
RUNNERS = ("code_exec", "python_tool")
_runner = {"name": "code_exec"}


@pytest.fixture(params=RUNNERS)
def runner(request):
    _runner["name"] = request.param
    yield request.param
    _runner["name"] = "code_exec"


def run_as_tool(program: str, tests: list[str], time_limit_s: float) -> tuple[float, str]:
    """code_exec's (score, status) for the program run as the tool runs it: 1.0 when every assert held."""
    from rewards.python_tool import run_cells

    result = run_cells([program, "\n".join(tests) + "\nprint('PASSED')"], time_limit_s=time_limit_s, memory_mb=1024)
    passed = result.output.rstrip().endswith("PASSED") and result.status == "ok"
    return (1.0 if passed else 0.0), ("ok" if result.status in ("ok", "error") else result.status)


def run(program: str, tests: list[str], time_limit_s: float = 10.0) -> tuple[float, str]:
    # A generous time limit: the limit is not under test here, and the machine may be loaded.
    if _runner["name"] == "python_tool":
        return run_as_tool(program, tests, time_limit_s)
    return code_exec.score_with_status(f"```python\n{program}\n```", tests, time_limit_s=time_limit_s)


def test_sandbox_is_available():
    assert code_exec.sandbox_problem() is None  # the other tests need it; this says why they fail


def test_cannot_read_files_outside(tmp_path, monkeypatch, runner):
    secret = secrets.token_hex(8)
    canary = tmp_path / "run" / "canary.txt"  # stands for the run directory, checkpoints, configs
    home = tmp_path / "home"
    for path in (canary, home / ".netrc"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secret)
    monkeypatch.setenv("HOME", str(home))
    paths = [str(canary), str(home / ".netrc"), "/etc/shadow", str(REPO / "pyproject.toml"),
             f"/proc/1/root{canary}", f"/proc/{os.getpid()}/root{canary}"]
    program = f"""
import os
seen = []
for path in {paths!r}:
    try:
        with open(path, 'rb') as f:
            seen.append((path, f.read(64)))
    except OSError:
        pass
for d in {[str(tmp_path), str(home), str(REPO)]!r}:
    try:
        seen.append((d, os.listdir(d)))
    except OSError:
        pass
"""
    assert run(program, ["assert seen == []"]) == (1.0, "ok")


def test_cannot_delete_files_outside(tmp_path, runner):
    canary = tmp_path / "keep" / "canary.txt"
    canary.parent.mkdir()
    canary.write_text("keep me")
    program = f"""
import os, shutil
damage = []
for action in (lambda: os.remove({str(canary)!r}), lambda: os.rename({str(canary)!r}, {str(canary)!r} + '.x'),
               lambda: shutil.rmtree({str(canary.parent)!r}), lambda: open({str(canary)!r}, 'w').close()):
    try:
        action()
        damage.append(action)
    except OSError:
        pass
"""
    assert run(program, ["assert damage == []"]) == (1.0, "ok")
    assert canary.read_text() == "keep me"


# A stand-in trainer: a separate process (the test process must survive a successful escape) that calls the reward.
TRAINER = """
import json, sys
sys.path.insert(0, 'tests')
if sys.argv[3] == 'python_tool':
    from test_sandbox import run_as_tool
    print(json.dumps(run_as_tool(sys.argv[1], json.loads(sys.argv[2]), 10.0)))
else:
    from rewards import code_exec
    print(json.dumps(code_exec.score_with_status('```python\\n' + sys.argv[1] + '\\n```', json.loads(sys.argv[2]), time_limit_s=10.0)))
"""


def run_in_trainer(program: str, tests: list[str], *argv: str, env: dict | None = None) -> tuple[float, str]:
    trainer = subprocess.run([sys.executable, "-c", TRAINER, program, json.dumps(tests), _runner["name"], *argv],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert trainer.returncode == 0, (trainer.returncode, trainer.stderr[-2000:])
    return tuple(json.loads(trainer.stdout))  # the trainer survived and got its result back


def test_cannot_kill_the_trainer(runner):
    marker = "thinkrl-trainer-" + secrets.token_hex(4)  # in the trainer's argv, for the /proc scan
    program = f"""
import ctypes, os, signal
libc = ctypes.CDLL(None)
for pid in (os.getppid(), 1):
    libc.kill(pid, signal.SIGKILL)
    try:
        os.kill(pid, signal.SIGKILL)
    except Exception:
        pass
for pid in os.listdir('/proc'):
    try:
        with open('/proc/%s/cmdline' % pid, 'rb') as f:
            if {marker.encode()!r} in f.read():
                libc.kill(int(pid), signal.SIGKILL)
    except OSError:
        pass
"""
    run_in_trainer(program, ["assert True"], marker)


def test_cannot_read_the_trainer_environment(monkeypatch, runner):
    # /proc/PID/environ shows a process's environment as it was at exec, so the secret goes into the environment the
    # stand-in trainer starts with, like a W&B or hub token exported before a launch.
    secret = "hf_" + secrets.token_hex(8)
    monkeypatch.setenv("THINKRL_TEST_TOKEN", secret)
    program = f"""
import os
found = [k for k, v in os.environ.items() if {secret!r} in v]
for pid in ['self', '1', '2'] + os.listdir('/proc'):
    for path in ('/proc/%s/environ' % pid, '/proc/%s/cmdline' % pid):
        try:
            with open(path, 'rb') as f:
                if {secret.encode()!r} in f.read():
                    found.append(path)
        except OSError:
            pass
"""
    assert run_in_trainer(program, ["assert found == []"], env=dict(os.environ)) == (1.0, "ok")


def test_cannot_reach_a_host_loopback_listener(runner):
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))  # loopback only
    tcp.listen(8)
    abstract_name = b"\0thinkrl-test-" + secrets.token_hex(4).encode()
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(abstract_name)
    unix.listen(8)
    port = tcp.getsockname()[1]
    program = f"""
import ctypes, socket, _socket, struct
connected = []
def attempt(label, make, address):
    try:
        s = make()
        s.settimeout(2)
        s.connect(address)
        connected.append(label)
    except Exception:
        pass
attempt('socket', lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM), ('127.0.0.1', {port}))
attempt('_socket', lambda: _socket.SocketType(_socket.AF_INET, _socket.SOCK_STREAM), ('127.0.0.1', {port}))
attempt('unix', lambda: _socket.SocketType(_socket.AF_UNIX, _socket.SOCK_STREAM), {abstract_name!r})
libc = ctypes.CDLL(None)
fd = libc.socket(2, 1, 0)  # AF_INET, SOCK_STREAM
addr = struct.pack('=HH4s8x', 2, socket.htons({port}), bytes([127, 0, 0, 1]))
if fd >= 0 and libc.connect(fd, addr, len(addr)) == 0:
    connected.append('ctypes')
"""
    try:
        assert run(program, ["assert connected == []"]) == (1.0, "ok")
        for listener in (tcp, unix):
            listener.settimeout(0.2)
            with pytest.raises(socket.timeout):
                listener.accept()[0].close()
    finally:
        tcp.close()
        unix.close()


FORK_BOMB = """
import ctypes, os, threading, time
libc = ctypes.CDLL(None)
forked = 0
for _ in range(64):
    pid = libc.fork()
    if pid == 0:  # a child holds its slot for a while, then leaves without running anything else
        time.sleep(5)
        os._exit(0)
    forked += pid > 0
threads = 0
try:
    threading.Thread(target=time.sleep, args=(1,), daemon=True).start()
    threads += 1
except RuntimeError:
    pass
"""


@pytest.mark.parametrize("limit", [0, 5])
def test_fork_bomb_stops_at_the_process_limit(limit, monkeypatch, runner):
    monkeypatch.setattr(code_run, "PROCESS_LIMIT", limit, raising=False)
    tests = [f"assert forked == {limit}"] + (["assert threads == 0"] if limit == 0 else [])
    assert run(FORK_BOMB, tests) == (1.0, "ok")


def _host_pids_running(comm: str) -> list[int]:
    """Host processes whose name (/proc/PID/comm, set by prctl PR_SET_NAME) is ``comm``."""
    pids = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == comm:
                    pids.append(int(pid))
        except (OSError, ValueError):
            pass
    return pids


@pytest.mark.parametrize("ending", ["exits", "times_out"])
def test_nothing_outlives_the_call(ending, monkeypatch, runner):
    # Allow forks, so that what is under test is the teardown of the whole sandbox, not the process limit.
    monkeypatch.setattr(code_run, "PROCESS_LIMIT", 4, raising=False)
    comm = "tkrl" + secrets.token_hex(5)  # at most 15 characters
    program = f"""
import ctypes, os, time
libc = ctypes.CDLL(None)
if libc.fork() == 0:  # a daemon: own session, survives its parent, shows up on the host under a unique name
    libc.setsid()
    libc.prctl(15, {comm.encode()!r}, 0, 0, 0)
    time.sleep(60)
    os._exit(0)
time.sleep(0.5)
""" + ("while True:\n    pass\n" if ending == "times_out" else "")
    try:
        result = run(program, ["assert True"], time_limit_s=2.0)
        assert result == ((1.0, "ok") if ending == "exits" else (0.0, "timeout"))
        assert _host_pids_running(comm) == []
    finally:
        for pid in _host_pids_running(comm):  # an escaped daemon of this test (pre-sandbox code): end it
            os.kill(pid, signal.SIGKILL)


def test_sandbox_sees_a_minimal_filesystem():
    program = """
import os, sys
top = sorted(os.listdir('/'))
writable = []
for d in ['/', '/usr', '/dev', sys.prefix, os.getcwd()]:
    try:
        with open(os.path.join(d, 'w'), 'w') as f:
            f.write('x')
        writable.append(d)
    except OSError:
        pass
big = 0
try:
    for i in range(100):  # 100 files of 10 MiB each: more than the private tmpfs holds
        with open('f%d' % i, 'wb') as f:
            f.write(b'x' * (10 << 20))
        big += 1
except OSError:
    pass
"""
    tests = ["assert set(top) <= {'bin', 'dev', 'etc', 'lib', 'lib32', 'lib64', 'libx32', 'proc', 'root', 'sbin', "
             "'tmp', 'usr', 'opt', 'home', 'nix'}",
             "assert 'work' not in top",
             "assert writable == ['/tmp']",
             f"assert 0 < big * 10 <= {sandbox.TMPFS_BYTES >> 20}"]
    assert run(program, tests) == (1.0, "ok")


# -------------------------------------------------------------------------------------------- missing bubblewrap
def test_missing_bwrap_refuses_at_configuration(tmp_path, monkeypatch):
    monkeypatch.setenv("THINKRL_BWRAP", str(tmp_path / "no-such-bwrap"))
    monkeypatch.delenv("THINKRL_UNSAFE_NO_SANDBOX", raising=False)
    with pytest.raises(ValueError, match="apt-get install bubblewrap") as info:
        RewardCombiner([RewardSpec("code_exec")])
    assert "\n" not in str(info.value) and "unsafe_no_sandbox" in str(info.value)
    # Scoring directly never raises on model output: without a sandbox nothing runs.
    assert code_exec.score_with_status("```python\nx = 1\n```", ["assert x == 1"]) == (0.0, "no_sandbox")


def test_unusable_bwrap_refuses_at_configuration(tmp_path, monkeypatch):
    # A bwrap that cannot create namespaces, as in a container that forbids them: refused with its own message.
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: Creating new namespace failed: Operation not permitted' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("THINKRL_BWRAP", str(fake))
    monkeypatch.delenv("THINKRL_UNSAFE_NO_SANDBOX", raising=False)
    with pytest.raises(ValueError, match="Operation not permitted") as info:
        RewardCombiner([RewardSpec("code_exec")])
    assert "\n" not in str(info.value) and "unsafe_no_sandbox" in str(info.value)


@pytest.mark.parametrize("how", ["kwarg", "env"])
def test_explicit_unsafe_opt_out_runs_without_sandbox(how, tmp_path, monkeypatch):
    monkeypatch.setenv("THINKRL_BWRAP", str(tmp_path / "no-such-bwrap"))
    monkeypatch.delenv("THINKRL_UNSAFE_NO_SANDBOX", raising=False)
    with pytest.raises(ValueError, match="bubblewrap"):
        RewardCombiner([RewardSpec("code_exec")])
    kwargs = {"unsafe_no_sandbox": True} if how == "kwarg" else {}
    if how == "env":
        monkeypatch.setenv("THINKRL_UNSAFE_NO_SANDBOX", "1")
    with RewardCombiner([RewardSpec("code_exec", kwargs=kwargs)], num_workers=1) as combine:
        out = combine(["```python\nx = 1\n```"], ["p"], {"tests": [["assert x == 1"]]})
    assert out.per_reward["code_exec"] == [1.0]
    assert code_exec.code_exec(["```python\nx = 1\n```"], ["p"], tests=[["assert x == 1"]], **kwargs) == [1.0]
