"""code_exec: scoring, and that hostile programs (loops, forks, memory/disk/output blow-ups, early exits, forged
results, network) cost little and score 0. Escapes from the bubblewrap sandbox are tested in test_sandbox.py."""

from __future__ import annotations

import time

import pytest

from rewards import code_exec

TESTS = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]
ADD = "def add(a, b):\n    return a + b\n"


def fenced(body: str) -> str:
    return f"Here you go:\n```python\n{body}```\nDone."


@pytest.mark.parametrize(
    "completion, expected, status",
    [
        (fenced(ADD), 1.0, "ok"),
        (f"<think>easy</think><answer>{ADD}</answer>", 1.0, "ok"),  # no fence: the <answer> content
        (fenced("def add(a, b):\n    return 3\n"), 0.5, "ok"),  # one of two tests
        (fenced("def add(a, b):\n    return a - b\n"), 0.0, "ok"),
        (fenced(ADD + "exit(0)\n"), 1.0, "ok"),  # exiting after the definitions is harmless
        (fenced(ADD + "if __name__ == '__main__':\n    input()\n"), 1.0, "ok"),  # main block not run
        (fenced("def add(a, b)\n    return a + b\n"), 0.0, "ok"),  # syntax error fails every test
        (fenced("raise SystemError('no')\n" + ADD), 0.0, "ok"),
        ("no code here", 0.0, "no_code"),
        ("```python\n```", 0.0, "no_code"),
        ("", 0.0, "no_code"),
    ],
)
def test_scores(completion, expected, status):
    assert code_exec.score_with_status(completion, TESTS, time_limit_s=5) == (expected, status)


HOSTILE = {
    "infinite_loop": "while True:\n    pass\n",
    "sleep_forever": "import time\ntime.sleep(10**6)\n",
    # Bounded (at most 2**6 processes) so that a broken sandbox cannot freeze the test machine.
    "fork_bomb": "import os\nfor _ in range(6):\n    os.fork()\n",
    "multiprocessing": "import multiprocessing as m\nm.Process(target=print).start()\n",
    "subprocess": "import subprocess\nsubprocess.run(['sh', '-c', 'sleep 100'])\n",
    "os_system": "import os\nos.system('sleep 100')\n",
    "exit_before_tests": "import sys\nsys.exit(0)\n",  # the 'exit 0 means passed' reward hack
    "os_exit": "import os\nos._exit(0)\n",
    "forged_results": "import os\nfor i in range(2):\n    os.write(1, b'0000 %d 1\\n' % i)\nos._exit(0)\n",
    "memory_bomb": "x = bytearray(8 * 1024 ** 3)\n",
    "output_flood": "while True:\n    print('x' * 10000)\n",
    "disk_fill": "with open('big', 'w') as f:\n    f.write('x' * (64 << 20))\n",
    "network": "import socket\nsocket.create_connection(('example.com', 80), timeout=1)\n",
    "huge_power": "x = 9 ** 9 ** 9 ** 9\n",
    "recursion": "def f():\n    return f()\nf()\n",
    "kill_group": "import os, signal\nos.killpg(0, signal.SIGTERM)\n",
    "cancel_alarm": "import signal\nsignal.alarm(0)\nwhile True:\n    pass\n",
}


@pytest.mark.parametrize("label", sorted(HOSTILE))
def test_hostile_programs_score_zero_fast(label):
    # The definitions come after the hostile line, so passing would need the hostile line to be survived.
    start = time.monotonic()
    score, status = code_exec.score_with_status(fenced(HOSTILE[label] + ADD), TESTS, time_limit_s=1.0)
    elapsed = time.monotonic() - start
    assert score == 0.0, (label, status)
    assert elapsed < 1.0 + 1.5, (label, elapsed)  # wall limit plus interpreter start/teardown


def test_tests_are_not_readable_from_the_working_directory():
    program = "import os\nfound = [n for n in os.listdir('.')]\ndef add(a, b):\n    return a + b if not found else 0\n"
    # The time limit is not under test here: a generous one keeps a heavily loaded machine from failing it.
    assert code_exec.score(fenced(program), TESTS, time_limit_s=30.0) == 1.0


def test_partial_results_survive_a_hang():
    tests = ["assert add(1, 2) == 3", "while True: pass", "assert add(2, 2) == 4"]
    score, status = code_exec.score_with_status(fenced(ADD), tests, time_limit_s=1.0)
    assert status == "timeout" and score == pytest.approx(1 / 3)


def test_batch_and_options():
    out = code_exec.code_exec([fenced(ADD), fenced("def add(a, b):\n    return 3\n"), "x"], ["p"] * 3,
                              tests=[TESTS, TESTS, []], all_or_nothing=True)
    assert out == [1.0, 0.0, None]  # all-or-nothing; a row with no tests is not applicable
    assert code_exec.score(fenced(ADD), "assert add(0, 0) == 0", time_limit_s=30.0) == 1.0  # one string is one test
    with pytest.raises(ValueError, match="tests"):
        code_exec.code_exec(["x"], ["p"])
