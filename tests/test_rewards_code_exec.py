"""code_exec: scoring, that hostile programs (loops, forks, memory/disk/output blow-ups, early exits, forged
results, network) cost little and score 0, and (issue 24) that verdicts are computed outside the sandbox: forged
results, always-equal objects, early exits, patched builtins and hard-coded sample outputs score 0 on the tests they
should fail, in the assert, stdin/stdout and call-based formats, with fixtures of TACO's and LiveCodeBench's columns.
Escapes from the bubblewrap sandbox are tested in test_sandbox.py."""

from __future__ import annotations

import base64
import doctest
import json
import pickle
import secrets
import time
import zlib
from pathlib import Path

import pytest

from data.sources import load_prompt_dataset
from rewards import RewardCombiner, RewardSpec, code_exec, code_judge, code_tests

FIXTURES = Path(__file__).resolve().parent / "fixtures"

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


# ------------------------------------------------------------------------------ verdicts computed outside (issue 24)
# Every probe runs a real program in the real sandbox. Expected values are chosen so that a forger cannot guess them
# (add(17, 25) == 42, not 0 or 1); each probe scores 0 on every test it should fail.
HIDDEN = ["assert add(17, 25) == 42", "assert add(-8, 3) == -5", "assert 42 == add(40, 2)"]
ROWS = {name: [json.loads(line) for line in (FIXTURES / f"{name}_rows.jsonl").read_text().splitlines()]
        for name in ("taco", "livecodebench")}
TACO_STDIN, TACO_CALL = ROWS["taco"]
LCB_STDIN, LCB_CALL = ROWS["livecodebench"]
TACO_COLUMNS = ("input_output",)
LCB_COLUMNS = ("public_test_cases", "private_test_cases", "metadata")


def columns_of(row: dict) -> dict:
    """The test columns of a fixture row, exactly as the dataset stores them."""
    return {k: row[k] for k in TACO_COLUMNS + LCB_COLUMNS if k in row}


def passed_per_test(program: str, row_columns: dict, time_limit_s: float = 10.0) -> tuple[list[bool], str]:
    return code_exec.run_tests(program, code_tests.row_tests(**row_columns), time_limit_s=time_limit_s)


ALWAYS_EQUAL = """
class AlwaysEqual:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __bool__(self):
        return True
    __hash__ = object.__hash__
class EqInt(int):
    def __eq__(self, other):
        return True
    __hash__ = int.__hash__
class EqStr(str):
    def __eq__(self, other):
        return True
    __hash__ = str.__hash__
class EqList(list):
    def __eq__(self, other):
        return True
"""

# Finds the harness (sys.modules['__main__'] and the caller's frame) and writes every record it can think of for every
# test: the old "<nonce> <i> 1" verdict, ends, guessed values and guessed outputs; then ends the harness for real.
FORGE_CHANNEL = """
import base64, sys
h = sys.modules['__main__'].__dict__
assert sys._getframe(1).f_globals is h  # frame introspection reaches the same place
lines = []
for i, steps in enumerate(h['_tests']):
    lines += ['%s %d 1' % (h['_nonce'], i), '%s {"t": %d, "end": 1}' % (h['_nonce'], i)]
    for j in range(len(steps)):
        for guess in ('true', '0', '1', 'null', '""', '["L"]'):
            lines.append('%s {"t": %d, "s": %d, "v": %s}' % (h['_nonce'], i, j, guess))
        for guess in (b'1', b'0', b'YES', b'-1'):
            guess = base64.b64encode(guess).decode()
            lines.append('%s {"t": %d, "s": %d, "o": "%s", "x": 1}' % (h['_nonce'], i, j, guess))
h['_write'](h['_out'], ('\\n'.join(lines) + '\\n').encode())
h['_exit'](0)
"""

# Rewires the harness instead: every value it reports becomes True, every output "6 3", every test ends passed.
PATCH_HARNESS = """
import sys
h = sys._getframe(1).f_globals
h['_encode'] = lambda value, depth: True
h['_dumps'] = lambda *args, **kwargs: '7'
h['_report_value'] = lambda i, j, value: h['_record']('{"t": %d, "s": %d, "v": 1}' % (i, j))
h['_run_stdio'] = lambda i, j, text: h['_record']('{"t": %d, "s": %d, "o": "NiAz", "x": 1}' % (i, j))
h['_record'] = (lambda record, real=h['_record']: real(record.replace('"end": 0', '"end": 1')))
"""

PATCH_BUILTINS = """
import builtins, json, operator
for name in ('isinstance', 'issubclass', 'callable', 'hasattr'):
    setattr(builtins, name, lambda *args, **kwargs: True)
builtins.type = lambda *args: int
builtins.repr = builtins.str = lambda *args: '7'
builtins.len = lambda *args: 0
builtins.hex = lambda *args: '0x7'
json.dumps = lambda *args, **kwargs: '7'
json.loads = lambda *args, **kwargs: 7
operator.eq = lambda a, b: True
"""

ADD_IN_MEMORY = "def add(a, b):\n    return a + b\n"


@pytest.mark.parametrize(
    "label, program",
    [
        ("forged_results_channel", FORGE_CHANNEL + ADD_IN_MEMORY),
        ("patched_harness", PATCH_HARNESS + "def add(a, b):\n    return None\n"),
        ("always_equal", ALWAYS_EQUAL + "def add(a, b):\n    return AlwaysEqual()\n"),
        ("eq_int_subclass", ALWAYS_EQUAL + "def add(a, b):\n    return EqInt(0)\n"),
        ("eq_str_subclass", ALWAYS_EQUAL + "def add(a, b):\n    return EqStr('')\n"),
        ("eq_list_subclass", ALWAYS_EQUAL + "def add(a, b):\n    return EqList()\n"),
        ("exit_0", "exit(0)\n" + ADD_IN_MEMORY),
        ("raise_system_exit", "raise SystemExit\n" + ADD_IN_MEMORY),
        ("sys_exit_in_call", "import sys\ndef add(a, b):\n    sys.exit(0)\n"),
        ("os_exit", "import os\nos._exit(0)\n" + ADD_IN_MEMORY),
        ("patched_builtins", PATCH_BUILTINS + "def add(a, b):\n    return None\n"),
    ],
)
def test_forgeries_of_assert_tests_score_zero(label, program):
    assert code_exec.score_with_status(fenced(program), HIDDEN, time_limit_s=10.0) == (0.0, "ok"), label


# The forger's lines do reach the judge: reporting the right values through the channel, and exiting before the harness
# runs a single test, passes. Forging a value is computing it.
FORGE_RIGHT_VALUES = ADD_IN_MEMORY + """
import sys
h = sys.modules['__main__'].__dict__
for i, steps in enumerate(h['_tests']):
    value = eval(steps[0][1], {'add': add})
    h['_record']('{"t": %d, "s": 0, "v": %d}' % (i, value))
    h['_record']('{"t": %d, "end": 1}' % i)
h['_exit'](0)
"""


def test_tolerance_forms_evaluate_only_the_program_side():
    # abs(EXPR - LIT) and isclose(EXPR, LIT) run only EXPR inside: an object whose arithmetic says "0 apart" fails.
    program = ("class Zero:\n    def __sub__(self, other):\n        return 0\n    __rsub__ = __sub__\n"
               "    def __float__(self):\n        return 3.14\ndef f(x):\n    return Zero()\n")
    tests = ["assert abs(f(1) - 3.14) < 0.01", "assert abs(2.71 - f(1)) <= 0.01", "assert math.isclose(f(1), 1.5)"]
    assert code_exec.run_tests("import math\n" + program, tests, time_limit_s=10.0) == ([False] * 3, "ok")
    honest = "import math\ndef f(x):\n    return 3.14159\n"
    assert code_exec.run_tests(honest, tests[:1], time_limit_s=10.0) == ([True], "ok")


def test_the_forgery_probes_are_not_vacuous():
    # What fails above is the forged value, not the way it was reported; and patched builtins break no honest program.
    for program in (FORGE_RIGHT_VALUES, PATCH_BUILTINS + ADD_IN_MEMORY):
        assert code_exec.score(fenced(program), HIDDEN, time_limit_s=10.0) == 1.0


@pytest.mark.parametrize(
    "label, program",
    [
        ("forged_results_channel", FORGE_CHANNEL),
        ("patched_harness", PATCH_HARNESS),
        ("exit_0", "exit(0)\nprint(6, 3)\n"),
        ("raise_system_exit", "raise SystemExit(0)\n"),
        ("os_exit_before_output", "import os\nos._exit(0)\nprint(6, 3)\n"),
        ("patched_builtins", PATCH_BUILTINS + "print(7)\n"),
        ("crash_after_output", "print(6, 3)\nraise ValueError\n"),  # a runtime error is not a pass, whatever printed
        ("exit_status_1", "import sys\nprint(6, 3)\nsys.exit(1)\n"),
    ],
)
def test_forgeries_of_stdin_cases_score_zero(label, program):
    passed, status = passed_per_test(program, columns_of(TACO_STDIN))
    assert (passed, status) == ([False] * 3, "ok"), label


@pytest.mark.parametrize(
    "label, program, row",
    [
        ("forged_results_channel", FORGE_CHANNEL, TACO_CALL),
        ("patched_harness", PATCH_HARNESS + "class Solution:\n    def maxSumOfK(self, nums, k):\n        return None\n",
         LCB_CALL),
        ("always_equal", ALWAYS_EQUAL + "def min_max(nums):\n    return AlwaysEqual()\n", TACO_CALL),
        ("eq_list_subclass", ALWAYS_EQUAL + "def min_max(nums):\n    return EqList()\n", TACO_CALL),
        ("always_equal_method", ALWAYS_EQUAL + "class Solution:\n    def maxSumOfK(self, nums, k):\n"
                                "        return EqInt(0)\n", LCB_CALL),
        ("exit_before_def", "exit(0)\ndef min_max(nums):\n    return [min(nums), max(nums)]\n", TACO_CALL),
        ("system_exit_in_call", "class Solution:\n    def maxSumOfK(self, nums, k):\n        raise SystemExit\n",
         LCB_CALL),
        ("patched_builtins", PATCH_BUILTINS + "def min_max(nums):\n    return None\n", TACO_CALL),
    ],
)
def test_forgeries_of_call_cases_score_zero(label, program, row):
    passed, status = passed_per_test(program, columns_of(row))
    assert (passed, status) == ([False] * len(passed), "ok") and len(passed) >= 3, label


def test_printing_the_sample_output_fails_the_other_cases():
    # Hard-coded sample answers pass the sample only: the hidden expected outputs never enter the sandbox.
    assert passed_per_test("print('6 3')\n", columns_of(TACO_STDIN)) == ([True, False, False], "ok")
    assert passed_per_test("print('2.3333333333')\n", columns_of(LCB_STDIN)) == ([True, False, False, False], "ok")
    assert passed_per_test("def min_max(nums):\n    return [1, 9]\n", columns_of(TACO_CALL)) == (
        [True, False, False], "ok")
    program = "class Solution:\n    def maxSumOfK(self, nums, k):\n        return 12\n"
    assert passed_per_test(program, columns_of(LCB_CALL)) == ([True, False, False, True], "ok")  # 12 twice


# Searches everything the program can reach for a hidden expected output: its own memory (/proc/self/mem, made
# readable with PR_SET_DUMPABLE), its open descriptors, /tmp, /proc/self/{environ,cmdline} and every live object.
SEARCH = """
import ctypes, gc, os, re
pattern = re.compile(rb'ZQX-[0-9a-f]{16}')
found, scanned = set(), 0
ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)
try:
    with open('/proc/self/maps') as maps, open('/proc/self/mem', 'rb', buffering=0) as mem:
        for line in maps.read().splitlines():
            start, end = (int(x, 16) for x in line.split()[0].split('-'))
            if 'r' not in line.split()[1]:
                continue
            for offset in range(start, end, 1 << 24):  # 16 MiB at a time (overlapping by a match's length)
                try:
                    mem.seek(offset)
                    chunk = mem.read(min(end - offset, (1 << 24) + 20))
                except (OSError, OverflowError, ValueError, MemoryError):
                    break
                scanned += len(chunk)
                found.update(pattern.findall(chunk))
except OSError:
    pass
paths = ['/proc/self/environ', '/proc/self/cmdline'] + ['/proc/self/fd/' + fd for fd in os.listdir('/proc/self/fd')]
paths += ['/tmp/' + name for name in os.listdir('/tmp')]
for path in paths:
    try:
        with open(path, 'rb') as f:
            found.update(pattern.findall(f.read(1 << 24)))
    except OSError:
        pass
for obj in gc.get_objects():
    for item in (obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()):
        if isinstance(item, str):
            found.update(pattern.findall(item.encode(errors='replace')))
answer = found.pop().decode() if found else 'nothing-found' if scanned > (1 << 20) else 'memory-not-scanned'
"""


def test_hidden_expected_values_are_nowhere_in_the_sandbox():
    secret = "ZQX-" + secrets.token_hex(8)
    # Stdin: case 0 expects what the search prints when it finds nothing (so it must have run to the end), case 1 the
    # secret. The asserts: the same, as values of a function.
    row = {"input_output": json.dumps({"inputs": ["probe\n", "probe\n"], "outputs": ["nothing-found", secret]})}
    assert passed_per_test(SEARCH + "print(answer)\n", row, time_limit_s=20.0) == ([True, False], "ok")
    tests = ["assert probe() == 'nothing-found'", f"assert probe() == {secret!r}"]
    program = SEARCH + "def probe():\n    return answer\n"
    assert code_exec.run_tests(program, tests, time_limit_s=20.0) == ([True, False], "ok")


def test_asserts_judged_inside_are_weaker_as_documented():
    # A chained comparison is not rewritten: it runs inside, so a forged channel passes it (README, code_exec.py).
    forged = FORGE_CHANNEL + "def f(x):\n    return -1\n"
    assert code_exec.score(fenced(forged), ["assert 0 < f(1) < 10"], time_limit_s=10.0) == 1.0
    assert code_exec.score(fenced(forged), ["assert f(1) == 5"], time_limit_s=10.0) == 0.0


# ------------------------------------------------------------------------------------------- honest programs as before
@pytest.mark.parametrize(
    "test, passes",
    [
        ("assert f() == [1, (2, 3), {'a': {4, 5}}, frozenset({6}), b'x', None, True, 2.5, 1j, 'é\\u2603']", True),
        ("assert f() != [1]", True),
        ("assert f()[1] == (2, 3)", True),
        ("assert f()[1] == [2, 3]", False),  # a tuple is not a list, as in Python
        ("assert 2.5 in f()", True),
        ("assert f()[5] is None", True),
        ("assert f()[5] is not None", False),
        ("assert g() == 2 ** 200", True),  # not a literal: judged inside (weaker), as before
        ("assert g() == 1606938044258990275541962092341162602522202993782792835301376", True),  # big int
        ("assert math.isclose(h(), 0.3, rel_tol=1e-9)", True),
        ("assert abs(h() - 0.3) < 1e-12", True),
        ("assert h() == 0.3", False),  # 0.1 + 0.2
        ("assert set(k()) == set([3, 1, 2])", True),
        ("assert sorted(k()) == [1, 2, 3]", True),
        ("assert k()", True),
        ("assert not k()", False),
        ("x = k()\nassert len(x) == 3\nassert x[0] == 3", True),
        ("assert 0 < len(k()) < 4", True),  # judged inside (weaker), passes as before
        ("assert f() == undefined_name", False),
    ],
)
def test_honest_values_are_judged_as_python_would(test, passes):
    program = ("import math\ndef f():\n    return [1, (2, 3), {'a': {4, 5}}, frozenset({6}), b'x', None, True, 2.5, 1j,"
               " 'é\\u2603']\ndef g():\n    return 2 ** 200\ndef h():\n    return 0.1 + 0.2\ndef k():\n"
               "    return [3, 1, 2]\n")
    assert code_exec.run_tests(program, [test], time_limit_s=10.0) == ([passes], "ok")


def test_unreadable_values_fail():
    # Values that are not plain data, or too large or deep to report, fail their test instead of raising.
    program = ("def obj():\n    return object()\ndef deep():\n    x = []\n    for _ in range(500):\n        x = [x]\n"
               "    return x\ndef cyclic():\n    x = []\n    x.append(x)\n    return x\n"
               "def huge():\n    return 'x' * (8 << 20)\n")
    tests = ["assert obj() == 1", "assert deep() == []", "assert cyclic() == []", "assert huge() == 'x'",
             "assert obj() is not None"]
    assert code_exec.run_tests(program, tests, time_limit_s=10.0) == ([False] * 5, "ok")


def test_assert_rewriting():
    def kinds(src):
        return [(s.kind, s.payload[0]) for s in code_tests.assert_test(src).steps]

    assert kinds("assert add(1, 2) == 3") == [("eval", "(add(1, 2)\n)")]
    assert kinds("assert [1] == f(\n  2)  # c") == [("eval", "(f(\n  2)\n)")]
    assert kinds("assert f(x) in ('a', 'b'), 'message'") == [("eval", "(f(x)\n)")]
    assert kinds("assert isclose(f(2), 1.5, abs_tol=0.1)") == [("eval", "(f(2)\n)")]
    assert kinds("assert np.isclose(f(2), 1.5)") == [("eval", "(np.isclose(f(2), 1.5)\n)")]  # truthiness only
    for weaker in ["assert 0 < f(x) < 3", "assert (f(x) == 3) == True", "assert f(x) == g(y)", "assert f(x) is 3",
                   "assert 1 == 1", "f(3)", "def check(c):\n    assert c(1) == 2\ncheck(f)", "assert f(", ""]:
        assert kinds(weaker) == [("exec", weaker)], weaker  # unchanged, judged inside as before


# ------------------------------------------------------------------------------------------------- stdin/stdout cases
@pytest.mark.parametrize(
    "expected, output, same",
    [
        ("6 3\n", "6 3", True),
        ("6 3\n", "6\n3\n\n", True),  # whitespace and line breaks do not count
        ("6 3", "6  3  \r\n", True),
        ("6 3", "6 3 0", False),
        ("YES", "yes", False),
        ("2.3333333333", "2.3333333333333335", True),
        ("2.3333333333", "2.33333", False),  # error 3.3e-6 > 1e-6
        ("1000000.5", "1000000.5000009", True),  # relative error below 1e-6
        ("15.0000000000", "15", True),
        ("100000000000000000000", "100000000000000000001", False),  # integers compare exactly
        ("007", "7", True),
        ("nan", "nan", True),
        ("inf", "1e999", False),
        ("", "", True),
        ("1", "", False),
    ],
)
def test_stdout_judge(expected, output, same):
    assert code_judge.stdout_matches(expected, output) is same


STDIN_SUM = "3\n4 5 6\n"
STDIN_PROGRAMS = {
    "input": "n = int(input())\nprint(sum(map(int, input().split())))\n",
    "sys_stdin": "import sys\ndata = sys.stdin.read().split()\n"
                 "sys.stdout.write(str(sum(map(int, data[1:]))) + '\\n')\n",
    "stdin_buffer": "import sys\nn = int(sys.stdin.buffer.readline())\n"
                    "print(sum(map(int, sys.stdin.buffer.read().split())))\n",
    "open_0": "data = open(0).read().split()\nprint(sum(map(int, data[1:])))\n",
    "os_read_write": "import os\ndata = os.read(0, 1 << 16).split()\nos.write(1, b'%d\\n' % sum(map(int, data[1:])))\n",
    "main_block": "def main():\n    input()\n    print(sum(map(int, input().split())))\n\n"
                  "if __name__ == '__main__':\n    main()\n",
    "exit_after_output": "import sys\ninput()\nprint(sum(map(int, input().split())))\nsys.exit(0)\n",
    "os_exit_after_output": "import os, sys\ninput()\nprint(sum(map(int, input().split())))\nsys.stdout.flush()\n"
                            "os._exit(0)\n",
    "dunder_stdout": "import sys\ninput()\nsys.__stdout__.write(str(sum(map(int, input().split()))))\n",
}


@pytest.mark.parametrize("label", sorted(STDIN_PROGRAMS))
def test_stdin_programs_read_and_write_every_usual_way(label):
    row = {"input_output": json.dumps({"inputs": [STDIN_SUM, "1\n7\n"], "outputs": ["15\n", "7\n"]})}
    assert passed_per_test(STDIN_PROGRAMS[label], row) == ([True, True], "ok")


def test_each_stdin_case_runs_the_program_afresh():
    # Module state does not carry over (a new __main__ each case), and one case's output is not in the next one's.
    program = "try:\n    runs += 1\nexcept NameError:\n    runs = 1\nprint(runs, input())\n"
    row = {"input_output": json.dumps({"inputs": ["a", "b", "c"], "outputs": ["1 a", "1 b", "1 c"]})}
    assert passed_per_test(program, row) == ([True] * 3, "ok")


FAST_IO = """\
import io, os, sys
class FastOut(io.IOBase):  # PyRival-style fast output: buffer, write in flush
    def __init__(self):
        self.buffer = io.BytesIO()
    def write(self, text):
        self.buffer.write(text.encode())
    def flush(self):
        os.write(1, self.buffer.getvalue())
        self.buffer = io.BytesIO()
sys.stdout = FastOut()
print(int(input()) * 2)
"""


@pytest.mark.parametrize("program", [FAST_IO, "import sys\nprint(int(input()) * 2)\nsys.stdout.close()\n"], ids=["fast_io", "closes_stdout"])
def test_stdout_the_program_replaced_or_closed_is_flushed_into_its_own_case(program):
    """A program that swaps sys.stdout for a buffering writer (never flushed by itself) or closes it still has its
    output judged, each case's output in its own case."""
    row = {"input_output": json.dumps({"inputs": ["1", "2", "3"], "outputs": ["2", "4", "6"]})}
    assert passed_per_test(program, row) == ([True] * 3, "ok")


def test_the_stdout_judge_is_linear_and_exact_for_integers():
    """A million-digit token followed by a letter fails without quadratic backtracking; an integer answer is exact."""
    assert not code_judge.stdout_matches("1", "1" * 1_000_000 + "x")
    assert not code_judge.stdout_matches("999999937", "999999000.0") and code_judge.stdout_matches("3", "3.0")


def test_sets_and_dicts_of_colliding_hashes_are_not_plain_data():
    """Every multiple of 2**61 - 1 hashes to 0: a set or dict of many such ints would take quadratic time to build,
    so the decoder refuses it; distinct hashes decode as usual."""
    colliding = [k * (2**61 - 1) for k in range(1, 50)]
    for tree in (["S", *colliding], ["F", *colliding], ["D", *[[k, 0] for k in colliding]]):
        with pytest.raises(ValueError):
            code_judge.decode_value(tree)
    assert code_judge.decode_value(["S", *range(10_000)]) == set(range(10_000))


def test_a_hang_in_one_case_keeps_earlier_cases():
    row = {"input_output": json.dumps({"inputs": ["1", "0", "2"], "outputs": ["1", "0", "2"]})}
    program = "n = int(input())\nwhile n == 0:\n    pass\nprint(n)\n"
    assert passed_per_test(program, row, time_limit_s=1.0) == ([True, False, False], "timeout")


def test_many_cases_cost_one_sandbox_call():
    # 20 stdin cases and 20 call-based cases, each set in one sandbox start: within the per-call cost of one program.
    stdin_row = {"input_output": json.dumps({"inputs": [f"{i} {i}\n" for i in range(20)],
                                             "outputs": [f"{2 * i}\n" for i in range(20)]})}
    call_row = {"input_output": json.dumps({"fn_name": "add", "inputs": [[i, i] for i in range(20)],
                                            "outputs": [[2 * i] for i in range(20)]})}
    for program, row in (("a, b = map(int, input().split())\nprint(a + b)\n", stdin_row), (ADD, call_row)):
        start = time.monotonic()
        assert code_exec.score_with_status(fenced(program), **row, time_limit_s=5.0) == (1.0, "ok")
        assert time.monotonic() - start < 2.5  # as for one program with asserts (test_hostile_programs_score_zero_fast)


# ------------------------------------------------------------------------------------ two public datasets' layouts
@pytest.mark.parametrize(
    "row, program, expected",
    [
        (TACO_STDIN, "n = int(input())\na = list(map(int, input().split()))\nprint(sum(a), max(a))\n", 1.0),
        (TACO_STDIN, "n = int(input())\na = list(map(int, input().split()))\nprint(sum(a), min(a))\n", 1 / 3),
        (TACO_CALL, "def min_max(nums):\n    return min(nums), max(nums)\n", 1.0),  # a tuple for a JSON list
        (TACO_CALL, "def min_max(nums):\n    return sorted(nums)\n", 1 / 3),
        (LCB_STDIN, "n = int(input())\na = list(map(int, input().split()))\nprint(sum(a) / n)\n", 1.0),  # 1e-6
        (LCB_STDIN, "n = int(input())\na = list(map(int, input().split()))\nprint(sum(a) // n)\n", 0.5),
        # No `from typing import List`: LeetCode-style code relies on the prelude, as in LiveCodeBench.
        (LCB_CALL, "class Solution:\n    def maxSumOfK(self, nums: List[int], k: int) -> int:\n"
                   "        return max(sum(nums[i:i + k]) for i in range(len(nums) - k + 1))\n", 1.0),
        (LCB_CALL, "class Solution:\n    def maxSumOfK(self, nums: List[int], k: int) -> int:\n"
                   "        return max(nums) * k\n", 0.5),
    ],
)
def test_dataset_rows_score_right_and_wrong_solutions(row, program, expected):
    # The columns go in exactly as the dataset stores them (JSON strings; LiveCodeBench's compressed private cases).
    columns = {name: [value] for name, value in columns_of(row).items()}
    assert code_exec.code_exec([fenced(program)], ["p"], **columns, time_limit_s=10.0) == [pytest.approx(expected)]


def test_dataset_columns_reach_the_reward_through_the_data_loader():
    # The LiveCodeBench fixture, loaded as a training source with keep_columns, scored by the combiner.
    dataset = load_prompt_dataset(str(FIXTURES / "livecodebench_rows.jsonl"), prompt_column="question_content",
                                  answer_column="question_id", keep_columns=list(LCB_COLUMNS))
    honest = [fenced("n = int(input())\nprint(sum(map(int, input().split())) / n)\n"),
              fenced("class Solution:\n    def maxSumOfK(self, nums, k):\n"
                     "        return max(sum(nums[i:i + k]) for i in range(len(nums) - k + 1))\n")]
    columns = {name: list(dataset[name]) for name in LCB_COLUMNS}
    spec = RewardSpec("code_exec", kwargs={"time_limit_s": 5.0})
    with RewardCombiner([spec], timeout_s=20, num_workers=1) as combine:
        out = combine(honest + honest[::-1], ["p"] * 4, {k: v + v for k, v in columns.items()})
    assert out.per_reward["code_exec"] == [1.0, 1.0, 0.0, 0.0]  # each solution scored against its own row only


def test_unreadable_test_columns_are_not_applicable():
    bad = [{"input_output": "{not json"}, {"input_output": json.dumps({"inputs": ["1"], "outputs": []})},
           {"public_test_cases": "%%%", "metadata": "{}"},
           {"public_test_cases": json.dumps([{"input": "1", "output": "1", "testtype": "functional"}])},
           {"private_test_cases": base64.b64encode(zlib.compress(pickle.dumps(print))).decode()}]  # a pickled global
    for row in bad:
        with pytest.raises(ValueError):
            code_tests.row_tests(**row)
        assert code_exec.score_with_status(fenced(ADD), **row) == (0.0, "bad_tests")
        assert code_exec.code_exec([fenced(ADD)], ["p"], **{k: [v] for k, v in row.items()}) == [None]
    with pytest.raises(ValueError, match="input_output"):
        code_exec.code_exec(["x"], ["p"], metadata=["{}"])  # metadata alone is no test column


@pytest.mark.parametrize("module", [code_tests, code_judge])
def test_code_tests_doctests(module):
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0
