"""The Python tool (rewards/python_tool.py): notebook replay semantics, deterministic output, and hostile cells that
must neither escape the sandbox nor outlast their time limit. Runs the real bubblewrap sandbox, as tests/test_sandbox.py
does."""

import os
import time

import pytest

from rewards.code_exec import sandbox_problem
from rewards.python_tool import run_cells

pytestmark = pytest.mark.skipif(sandbox_problem() is not None, reason=f"no working bubblewrap: {sandbox_problem()}")


def test_output_value_and_replay():
    assert run_cells(["print(4821 * 9377)"]).output == "45206517\n"
    result = run_cells(["x = 5\nprint('not shown')", "x * 2"])  # earlier cells replay silently; a last expression shows
    assert (result.output, result.status) == ("10\n", "ok")
    assert run_cells(["y = None", "y"]).output == ""


def test_errors_show_the_cells_traceback():
    result = run_cells(["def f(a):\n    return a.y\n", "print('before')\nf(3)"])
    assert result.status == "error"
    assert result.output.startswith("before\nTraceback (most recent call last):\n")
    assert 'File "<cell 1>", line 2, in f\n    return a.y' in result.output
    assert result.output.endswith("AttributeError: 'int' object has no attribute 'y'\n")
    assert "sandbox_harness" not in result.output and "<string>" not in result.output  # no harness frames
    syntax = run_cells(["print(1"])
    assert syntax.status == "error" and "SyntaxError" in syntax.output and "<cell 1>" in syntax.output
    # An earlier cell that raised stops where it stopped the first time; the replay goes on.
    assert run_cells(["a = 1\n1/0\na = 2", "print(a)"]).output == "1\n"


def test_output_is_deterministic():
    """str hashes and `random` are fixed, so a replay, a resumed run or another rank sees the same text."""
    cells = ["import random\nprint({'pear', 'fig', 'kiwi', 'plum'}, random.random())"]
    assert run_cells(cells).output == run_cells(cells).output


@pytest.mark.parametrize("cell", ["while True: pass", "import time\ntime.sleep(1000)"])
def test_a_hanging_cell_is_stopped_at_its_limit(cell):
    start = time.perf_counter()
    result = run_cells([cell], time_limit_s=1.0)
    assert result.status == "timeout" and time.perf_counter() - start < 1.0 + 2.0


@pytest.mark.parametrize("cell, expected", [
    ("import os\nos.fork()", "PermissionError"),
    ("import subprocess\nsubprocess.run(['ls'])", "PermissionError"),
    ("import socket\nsocket.create_connection(('127.0.0.1', 22))", "PermissionError"),
    ("import os\nos.kill(os.getppid(), 9)", "PermissionError"),
    ("import threading\nthreading.Thread(target=print).start()", "RuntimeError"),
    ("bytearray(10**10)", "MemoryError"),
])
def test_hostile_cells_are_refused(cell, expected):
    result = run_cells([cell])
    assert result.status == "error" and expected in result.output


def test_host_files_and_other_calls_are_invisible(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("token")
    for path in (str(secret), os.path.abspath(__file__), "/etc/shadow"):
        result = run_cells([f"print(open({path!r}).read())"])
        assert result.status == "error" and "token" not in result.output
    run_cells(["open('/tmp/left.txt', 'w').write('x')"])
    assert "FileNotFoundError" in run_cells(["print(open('/tmp/left.txt').read())"]).output  # a fresh /tmp per call


def test_flooding_and_exiting_end_only_the_cell():
    flood = run_cells(["print('x' * 10**7)"])
    assert flood.status == "error" and len(flood.output) <= 64 << 10
    assert run_cells(["import os\nos._exit(3)"]).status == "ok"  # os._exit ends the cell like sys.exit
    assert run_cells(["import sys\nsys.exit(3)"]).status == "ok"
