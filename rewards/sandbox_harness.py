"""The program that runs inside the sandbox, as source (rewards/sandbox.py starts it; rewards/code_exec.py says what is
isolated and why). It runs the tests and reports what the program produced; rewards/code_judge.py judges that outside.
"""

# Runs in the sandboxed interpreter. Reads {"code", "prelude", "tests", "max_bytes", "alarm_s", "sandbox"} as JSON after
# a nonce line from stdin ("tests": per test a list of steps, rewards/code_tests.py::Step.wire). In the sandbox it
# first becomes its own unprivileged uid (when bwrap ran as root) and sets the rlimits, RLIMIT_NPROC from the tasks
# that uid has now (in this PID namespace: bwrap's init when bwrap mapped a user, and itself). Then it frees stdin,
# points fds 0/1/2 at /dev/null, keeps a private dup of the original stdout for results, installs the guard and runs
# the tests: a module load of the program (after "prelude") for "exec"/"eval"/"call" steps, and the program afresh
# as __main__ for each "stdio" step.
#
# It reports what the program *produced*, never a verdict that counts by itself: per "eval"/"call" step
# '<nonce> {"t": test, "s": step, "v": value}' (the value in tagged JSON, only if it is plain data with exact types,
# else "e"), per "stdio" step '{"t", "s", "o": stdout in base64, "x": 1 if it ended normally}', and per test
# '{"t", "end": 1 if no step raised}', each as soon as it is known (a later hang or crash keeps earlier records).
# The program shares this interpreter and can forge any of these lines; code_exec judges values against expected
# ones it never sent, so a forged line can only claim a value. Only "end" of an "exec" step is a verdict (weaker).
HARNESS = r"""
import binascii, io, json, os, posix, signal, sys
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
# The harness keeps its own references: the program may rebind builtins and module attributes (self-sabotage only).
_write, _exit, _exec, _eval, _compile, _dup2, _close = os.write, posix._exit, exec, eval, compile, os.dup2, os.close
_lseek, _pread, _getpid, _open, _b64 = os.lseek, os.pread, os.getpid, io.open, binascii.b2a_base64
_sys, _builtins, _type, _type_type, _len, _hex = sys, __builtins__, type, type, len, hex
_enumerate, _hasattr, _getattr, _int_repr, _float_repr = enumerate, hasattr, getattr, int.__repr__, float.__repr__
_BaseException, _SystemExit, _OSError = BaseException, SystemExit, OSError
try:
    from _json import encode_basestring_ascii as _quote
except ImportError:
    from json.encoder import py_encode_basestring_ascii as _quote
_harness_pid = os.getpid()
try:
    _new_file = lambda: os.memfd_create("thinkrl-case")
except AttributeError:  # not Linux (unsandboxed only): an unlinked temporary file
    import tempfile
    _new_file = lambda: os.dup(tempfile.TemporaryFile().fileno())

def _deny(*args, **kwargs):
    raise PermissionError("disabled in the thinkrl reward sandbox")

def _program_exit(status=0):  # os._exit ends the program like sys.exit, not the harness; a forked child exits
    if _getpid() != _harness_pid:
        _exit(status)
    raise SystemExit(status)

import _posixsubprocess, _socket, socket, resource
for _mod in (os, posix):
    for _name in ("fork", "forkpty", "vfork", "system", "popen", "posix_spawn", "posix_spawnp", "execv", "execve",
                  "execl", "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp",
                  "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "kill", "killpg", "setsid", "setpgid",
                  "setpgrp", "register_at_fork"):
        if hasattr(_mod, _name):
            setattr(_mod, _name, _deny)
    _mod._exit = _program_exit
_posixsubprocess.fork_exec = _deny
for _mod in (socket, _socket):
    for _name in ("socket", "socketpair", "fromfd", "create_connection", "create_server"):
        if hasattr(_mod, _name):
            setattr(_mod, _name, _deny)
for _name in ("alarm", "setitimer", "signal", "pthread_kill", "pthread_sigmask", "sigwait"):
    setattr(signal, _name, _deny)
resource.setrlimit = _deny

class _NotPlain(Exception):
    pass

def _float(x):
    return "NaN" if x != x else "Infinity" if x == 1e999 else "-Infinity" if x == -1e999 else _float_repr(x)

def _encode(x, depth, out):  # plain data, exact types only, as JSON (rewards/code_judge.py::decode_value reads it)
    t = _type(x)
    if x is None:
        out.append("null")
    elif t is bool:
        out.append("true" if x else "false")
    elif t is str:
        out.append(_quote(x))
    elif t is int:
        out.append(_int_repr(x) if -(1 << 63) < x < (1 << 63) else '["I", "%s"]' % _hex(x))
    elif t is float:
        out.append(_float(x))
    elif depth >= 100 or _len(out) > _max_bytes:
        raise _NotPlain
    elif t is list or t is tuple or t is set or t is frozenset:  # identity tests: no code of the program runs
        out.append('["L"' if t is list else '["T"' if t is tuple else '["S"' if t is set else '["F"')
        for v in x:
            out.append(",")
            _encode(v, depth + 1, out)
        out.append("]")
    elif t is dict:
        out.append('["D"')
        for k, v in x.items():
            out.append(",[")
            _encode(k, depth + 1, out)
            out.append(",")
            _encode(v, depth + 1, out)
            out.append("]")
        out.append("]")
    elif t is bytes:
        out.append('["B", "%s"]' % x.hex())
    elif t is complex:
        out.append('["C", %s, %s]' % (_float(x.real), _float(x.imag)))
    else:
        raise _NotPlain

def _record(text):
    data = ("%s %s\n" % (_nonce, text)).encode()
    try:
        while data:
            data = data[_write(_out, data):]
    except _OSError:  # the results file is at its size limit: this and later records are lost
        pass

def _report_value(i, j, value):
    out = []
    try:
        _encode(value, 0, out)
        text = "".join(out)
    except _BaseException:  # not plain data, nested too deeply, or too large
        text = None
    if text is None or _len(text) > _max_bytes:
        _record('{"t": %d, "s": %d, "e": 1}' % (i, j))
    else:
        _record('{"t": %d, "s": %d, "v": %s}' % (i, j, text))

def _read_all(fd, size):
    parts, offset = [], 0
    while offset < size:
        chunk = _pread(fd, size - offset, offset)
        if not chunk:
            break
        parts.append(chunk)
        offset += _len(chunk)
    return b"".join(parts)

def _run_stdio(i, j, text):  # the program afresh as __main__, with this case's stdin and its own stdout
    clean, output, size = False, b"", 0
    try:  # what an earlier test printed (fd 1 was /dev/null) must not land in this case's output
        _sys.__stdout__.flush()
    except _BaseException:
        pass
    fd_in = fd_out = None
    try:
        fd_in, fd_out = _new_file(), _new_file()
        data = text.encode("utf-8", "replace")
        while data:
            data = data[_write(fd_in, data):]
        _lseek(fd_in, 0, 0)
        _dup2(fd_in, 0)
        _dup2(fd_out, 1)
        _sys.stdin = _open(0, "r", encoding="utf-8", closefd=False)
        _sys.stdout = stdout = _open(1, "w", encoding="utf-8", closefd=False)
        try:
            if _program is None:
                raise SyntaxError
            _exec(_program, {"__name__": "__main__", "__builtins__": _builtins})
            clean = True
        except _SystemExit as e:
            clean = e.code is None or e.code == 0
        except _BaseException:
            pass
        try:  # the program may have replaced sys.stdout (fast-IO templates buffer and write in flush): flush it too
            if _sys.stdout is not stdout:
                _sys.stdout.flush()
        except _BaseException:
            pass
        _sys.stdout = _sys.__stdout__  # nothing the program left behind writes into a later case's file
        try:
            stdout.flush()
        except _BaseException:
            clean = clean and stdout.closed  # the program closed sys.stdout itself: its output is written
        try:
            _sys.__stdout__.flush()
        except _BaseException:
            pass
        size = _lseek(fd_out, 0, 2)
        output = _read_all(fd_out, size if size < _max_bytes else _max_bytes)
    except _BaseException:
        clean = False
    _dup2(_null, 0)
    _dup2(_null, 1)
    for fd in (fd_in, fd_out):
        if fd is not None:
            _close(fd)
    clean = clean is True and size <= _max_bytes
    _record('{"t": %d, "s": %d, "o": "%s", "x": %d}' % (i, j, _b64(output, newline=False).decode(), clean))

def _call(name, args):
    cls = _ns.get("Solution")
    if _type(cls) is _type_type and _hasattr(cls, name):  # LeetCode style, as LiveCodeBench and APPS call it
        return _getattr(cls(), name)(*args)
    return _ns[name](*args)

_code, _prelude, _tests, _max_bytes = _payload["code"], _payload["prelude"], _payload["tests"], _payload["max_bytes"]
del _payload, _sandbox
try:
    _program = _compile(_code, "solution.py", "exec")
except _BaseException:
    _program = None
_ns, _loaded = None, False
for _i, _steps in _enumerate(_tests):
    _ok = True
    for _j, _step in _enumerate(_steps):
        _kind = _step[0]
        if _kind == "stdio":
            _run_stdio(_i, _j, _step[1])
            continue
        if _ns is None:  # the solution as a module, loaded at the first test that needs it
            _ns = {"__name__": "__solution__", "__builtins__": _builtins}
            try:
                _exec(_prelude, _ns)
            except _BaseException:
                pass
            try:
                if _program is None:
                    raise SyntaxError
                _exec(_program, _ns)
                _loaded = True
            except _SystemExit:
                _loaded = True
            except _BaseException:
                _loaded = False
        if not _loaded:
            _ok = False
            break
        try:
            if _kind == "exec":
                _exec(_compile(_step[1], "test_%d.py" % _i, "exec"), _ns)
            elif _kind == "eval":
                _report_value(_i, _j, _eval(_compile(_step[1], "test_%d.py" % _i, "eval"), _ns))
            else:
                _report_value(_i, _j, _call(_step[1], _step[2]))
        except _BaseException:
            _ok = False
            break
    _record('{"t": %d, "end": %d}' % (_i, _ok))
_exit(0)
"""
