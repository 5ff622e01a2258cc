"""Code-execution reward: run the completion's program in a bubblewrap sandbox and judge what it produced outside it.

Code: the last fenced ```` ```python ```` block, else the ``<answer>`` content. Tests come from the dataset columns
rewards/code_tests.py reads (it documents each format): ``tests`` (assert statements, one test each; a single string
is one test), ``input_output`` (APPS/TACO: stdin/stdout cases, or call-based with ``fn_name``) and LiveCodeBench's
``public_test_cases``/``private_test_cases``/``metadata``. Score = fraction of tests passed; ``all_or_nothing=True``
gives 1.0 only when all pass. A row with no tests scores ``None`` (not applicable), as does one whose test columns
cannot be read (logged once).

**The verdict is computed here, not by the program.** The program runs in the same interpreter as the harness that
runs the tests, so it can find and forge whatever the harness reports (the nonce and the results descriptor are
reachable through ``sys.modules['__main__']`` or frame introspection). The harness therefore reports only what the
program produced: for an ``assert EXPR == EXPECTED`` test (and the other forms code_tests.py lists) the value of EXPR,
for a call-based case the returned value, for a stdin case what it wrote to stdout. Expected values never enter the
sandbox; here the report is decoded into plain data (exact types: an object with an always-true ``__eq__``, or an int
subclass, is not plain data and fails), and compared with the expected value. A forged report can only claim values,
which must then equal hidden ones: exiting before the tests (``exit(0)``, ``SystemExit``, ``os._exit``), patching
builtins, forging result lines, or printing a sample's output score 0 on every test they would fail (probes:
tests/test_rewards_code_exec.py). Still judged inside, and so forgeable: an assert not of those forms (e.g. a chained
comparison, or one against a computed value) counts as passed when it ran without raising, as before this change;
and whatever EXPR computes from the program's objects (``len(f(x))`` asks the program's ``__len__``).

The stdin cases of one completion run in one sandbox call, each with the program afresh (new ``__main__``
namespace, its own stdin and stdout, fds 0 and 1 included); module state the program leaves in the interpreter
(imports, patched builtins) carries over between cases, which can leak inputs, never expected outputs. Produced values
and outputs over ``MAX_PRODUCED_BYTES`` fail, as do stdin inputs over ``FILE_SIZE_LIMIT_BYTES``; all records of a
call share the ``FILE_SIZE_LIMIT_BYTES`` results file.

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
CPU time and memory within the limits, the weaker in-sandbox verdicts above, and tests that are weak in themselves
(``assert is_prime(7)`` passes a program that always returns True; hidden tests and ``all_or_nothing`` help). Inside
the sandbox a best-effort Python guard (after OpenAI human-eval ``human_eval/execution.py::reliability_guard``) still
disables fork/exec/kill/socket and signal functions (``os._exit`` ends the program like ``sys.exit``, so the harness
goes on), and ``SIGALRM`` is armed as a backstop; they stop accidents, the namespaces stop the rest.

Without a working bubblewrap (not installed, e.g. macOS, or user namespaces forbidden in a container) the batch
reward raises ``ValueError`` when it is configured, saying how to install it. ``unsafe_no_sandbox=True`` (or
``THINKRL_UNSAFE_NO_SANDBOX=1``) runs programs without it, isolated only by rlimits, a new session and the guard:
that is NO security boundary (the program runs as the trainer's user and could read the trainer's memory).
``THINKRL_BWRAP`` names the bwrap binary (default: ``bwrap`` on PATH).

Timing: each completion costs one sandbox start (~10-30 ms) and one interpreter start (~30-150 ms), whatever its
number of tests or cases, plus the program's run time: ``time_limit_s`` bounds the whole call (all cases together),
so rows with many heavy cases need a larger one. In the combiner this reward runs in a worker process whose own limit
(``RewardCombiner(timeout_s=...)``) must exceed ``time_limit_s``; if it does not, the sandbox dies with the killed
worker (``--die-with-parent``).

Layout: this module is the reward (the program, the row's tests, the score, whether the sandbox works);
rewards/code_run.py runs one call (``FILE_SIZE_LIMIT_BYTES``, ``MAX_PRODUCED_BYTES``, ``PROCESS_LIMIT``),
rewards/sandbox.py builds the bwrap command line (``TMPFS_BYTES``) and ends the sandbox, rewards/sandbox_harness.py
runs inside it, rewards/code_tests.py reads the tests and rewards/code_judge.py judges what the program produced.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys

from rewards.code_run import execute
from rewards.code_tests import CodeTest, assert_tests, row_tests
from rewards.extract import as_text, extract_answer_tag, last_code_block

logger = logging.getLogger(__name__)

MAX_CODE_CHARS = 100_000  # a longer "solution" is a dump, not code worth a process
BWRAP_ENV, UNSAFE_ENV = "THINKRL_BWRAP", "THINKRL_UNSAFE_NO_SANDBOX"
INSTALL_HINT = ("apt-get install bubblewrap (Debian/Ubuntu), dnf install bubblewrap (Fedora/RHEL), "
                "pacman -S bubblewrap (Arch); Linux only")
TEST_COLUMNS = ("tests", "input_output", "public_test_cases", "private_test_cases")  # metadata only goes with these


# ---------------------------------------------------------------------------------------------------------- sandbox
def _unsafe(unsafe_no_sandbox: bool) -> bool:
    return bool(unsafe_no_sandbox) or os.environ.get(UNSAFE_ENV, "") == "1"


@functools.lru_cache(maxsize=None)
def _probe(bwrap: str, executable: str, euid: int) -> str | None:
    """Run one trivial program the way every program runs; a one-line reason when that fails. (The arguments are
    the cache key: the answer holds for this bwrap, interpreter and user.)"""
    passed, status, bwrap_error = execute("x = 1", assert_tests(["assert x == 1"]), time_limit_s=30.0, memory_mb=1024,
                                          bwrap=bwrap)
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


def _are_code_tests(tests: object) -> bool:
    return isinstance(tests, (list, tuple)) and bool(tests) and all(isinstance(t, CodeTest) for t in tests)


def run_tests(
    code: str, tests: object, *, time_limit_s: float = 5.0, memory_mb: int = 1024, unsafe_no_sandbox: bool = False
) -> tuple[list[bool], str]:
    """Run ``code`` against ``tests`` (assert statements, or :class:`rewards.code_tests.CodeTest` objects) in one
    sandboxed subprocess and judge each test here. Returns ``(passed per test, status)`` with status "ok", "timeout"
    (wall clock exceeded, the sandbox killed), "crash" (the program ended without reporting all tests, e.g. a signal
    or the memory limit) or "no_sandbox" (no working bubblewrap and no opt-out: nothing ran). Never raises for any
    code text."""
    test_list = list(tests) if _are_code_tests(tests) else assert_tests(tests)
    if _unsafe(unsafe_no_sandbox):
        _warn_once("unsafe", "code_exec runs model-written code WITHOUT a sandbox (unsafe_no_sandbox / %s=1): it can "
                   "read, change and kill whatever this user can", UNSAFE_ENV)
        bwrap = None
    elif sandbox_problem() is not None:
        return [False] * len(test_list), "no_sandbox"
    else:
        bwrap = shutil.which(os.environ.get(BWRAP_ENV) or "bwrap")
    passed, status, bwrap_error = execute(code, test_list, time_limit_s=time_limit_s, memory_mb=memory_mb,
                                          bwrap=bwrap)
    if bwrap_error and not any(passed):  # bwrap's own messages (the program's stderr is /dev/null)
        _warn_once("bwrap", "code_exec sandbox failed to run a program: %s", bwrap_error.splitlines()[-1])
    return passed, status


def score_with_status(
    completion: str, tests: object = None, *, input_output: object = None, public_test_cases: object = None,
    private_test_cases: object = None, metadata: object = None, time_limit_s: float = 5.0, memory_mb: int = 1024,
    all_or_nothing: bool = False, unsafe_no_sandbox: bool = False,
) -> tuple[float, str]:
    """``(score, status)``; status is "ok", "timeout", "crash", "no_sandbox", "no_code", "no_tests" or "bad_tests"
    (a test column that cannot be read). Never raises."""
    try:
        test_list = row_tests(tests, input_output, public_test_cases, private_test_cases, metadata)
    except ValueError:
        return 0.0, "bad_tests"
    return _score_tests(completion, test_list, time_limit_s=time_limit_s, memory_mb=memory_mb,
                        all_or_nothing=all_or_nothing, unsafe_no_sandbox=unsafe_no_sandbox)


def _score_tests(completion: str, test_list: list[CodeTest], *, time_limit_s: float, memory_mb: int,
                 all_or_nothing: bool, unsafe_no_sandbox: bool) -> tuple[float, str]:
    if not test_list:
        return 0.0, "no_tests"
    code = extract_code(as_text(completion))
    if code is None or len(code) > MAX_CODE_CHARS:
        return 0.0, "no_code"
    passed, status = run_tests(code, test_list, time_limit_s=time_limit_s, memory_mb=memory_mb,
                               unsafe_no_sandbox=unsafe_no_sandbox)
    fraction = sum(passed) / len(passed)
    return (float(fraction == 1.0) if all_or_nothing else fraction), status


def score(completion: str, tests: object = None, **options) -> float:
    """Fraction of the tests (see :func:`score_with_status` for the columns and options) that the completion passes.

    >>> score("```python\\ndef add(a, b):\\n    return a + b\\n```", ["assert add(1, 2) == 3", "assert add(1, 1) == 3"])
    0.5
    >>> score("```python\\nprint(sum(map(int, input().split())))\\n```",
    ...       input_output='{"inputs": ["1 2\\\\n", "5 5\\\\n"], "outputs": ["3\\\\n", "10\\\\n"]}')
    1.0
    """
    return score_with_status(completion, tests, **options)[0]


def code_exec(
    completions: list,
    prompts: list | None = None,
    *,
    tests: list | None = None,
    input_output: list | None = None,
    public_test_cases: list | None = None,
    private_test_cases: list | None = None,
    metadata: list | None = None,
    time_limit_s: float = 5.0,
    memory_mb: int = 1024,
    all_or_nothing: bool = False,
    unsafe_no_sandbox: bool = False,
    **_,
) -> list[float | None]:
    """Batch reward over the test columns (rewards/code_tests.py): ``tests`` (assert statements), ``input_output``
    (APPS/TACO), ``public_test_cases``/``private_test_cases`` + ``metadata`` (LiveCodeBench); a row may carry several.
    ``None`` for a row with no tests, or whose test columns cannot be read (logged once). Completions run one after
    another; the combiner parallelises across its workers.

    Raises ``ValueError`` (a configuration error, also on the combiner's dry run with an empty batch) when no test
    column is given, for invalid limits, or no working bubblewrap without ``unsafe_no_sandbox``."""
    columns = {"tests": tests, "input_output": input_output, "public_test_cases": public_test_cases,
               "private_test_cases": private_test_cases, "metadata": metadata}
    if all(columns[name] is None for name in TEST_COLUMNS):
        raise ValueError("code_exec needs a test column: 'tests' (assert statements), 'input_output' (APPS/TACO) or "
                         "'public_test_cases'/'private_test_cases' with 'metadata' (LiveCodeBench); list it in "
                         "data.keep_columns")
    if time_limit_s <= 0 or memory_mb <= 0:
        raise ValueError(f"code_exec needs time_limit_s > 0 and memory_mb > 0, got {time_limit_s}, {memory_mb}")
    if not isinstance(unsafe_no_sandbox, bool):  # the YAML string "false" would be true
        raise ValueError(f"code_exec option unsafe_no_sandbox must be true or false, got {unsafe_no_sandbox!r}")
    if not _unsafe(unsafe_no_sandbox):
        problem = sandbox_problem()
        if problem is not None:
            raise ValueError(problem)
    given = {name: values for name, values in columns.items() if values is not None}
    for name, values in given.items():
        if len(values) != len(completions):
            raise ValueError(f"code_exec got {len(completions)} completions but {len(values)} values of {name!r}")
    scores: list[float | None] = []
    for i, completion in enumerate(completions):
        row = {name: values[i] for name, values in given.items()}
        try:
            test_list = row_tests(**row)
        except ValueError as e:
            _warn_once("bad_tests", "code_exec cannot read the test columns of a row (scored None; logged once): %s", e)
            scores.append(None)
            continue
        if not test_list:
            scores.append(None)
            continue
        scores.append(_score_tests(completion, test_list, time_limit_s=time_limit_s, memory_mb=memory_mb,
                                   all_or_nothing=all_or_nothing, unsafe_no_sandbox=unsafe_no_sandbox)[0])
    return scores
