"""Layer extraction in a child process: this process reads the blob, inflates and hashes it
(engine.layers.tarstream's Inflater) and pipes the tar to a forked child that parses it and
writes the tree (engine.layers.unpack's Unpacker), as ``curl | gzip -dc | tar -x`` splits
the work.

Why: threads of one process hand the GIL to each other at every system call of every file.
Four layers extracted on threads spent 1.8 s of a 10 s pull switching between them (perf:
``finish_task_switch``) and used 1.6 of the machine's 2 cores; a child per layer has an
interpreter of its own, and the parent's side of a layer is a few large GIL-free calls
(recv, inflate, sha256, write to the pipe).

The child is forked from a threaded process, so it touches nothing but the pipe, its own
Unpacker and os calls, never logs, dies with the thread that forked it (PR_SET_PDEATHSIG),
restores the default SIGTERM and SIGINT, and leaves with ``os._exit``. It reports one JSON
line: its counts, or the class and message of its error, which the parent raises again.

Guarantees are unpack_stream's: on success every byte of the blob was read and hashed (the
parent checks the diff id), on failure the directory is in an undefined state and the child
is gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import json
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from engine import errors
from engine.errors import EngineError
from engine.hostfs import libc
from engine.layers.tarstream import CHUNK, Feed, Inflater
from engine.layers.tree import os_error
from engine.layers.unpack import DEFAULT_MAX_ENTRIES, Unpacker, UnpackResult

PIPE_SIZE = 1024 * 1024  # one inflated chunk fits: one wake-up per chunk, not sixteen
_PR_SET_PDEATHSIG = 1
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def unpack_forked(
    raw_read: Callable[[int], bytes],
    dest: Path,
    *,
    what: str = "unpack",
    budget: int,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> UnpackResult:
    """unpack_stream's contract, with the parsing and writing done by a child process."""
    data_r, data_w = os.pipe2(os.O_CLOEXEC)
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        fcntl.fcntl(data_w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError as err:  # EAGAIN: the process limit
        for fd in (data_r, data_w, report_r, report_w):
            os.close(fd)
        raise EngineError(f"{what}: cannot start the extracting process: {err.strerror}") from err
    if pid == 0:  # pragma: no cover (the child leaves by os._exit; its work is tested)
        _child(parent, data_r, report_w, dest, what, max_entries)
    os.close(data_r)
    os.close(report_w)
    inflater = Inflater(raw_read, budget, what)
    finished = False
    try:
        child_failed = _pump(inflater, data_w)
        os.close(data_w)
        data_w = -1
        report = _read_all(report_r)
        status = _wait(pid)
        finished = True
        if child_failed or "error" in report or status != 0:
            raise _child_error(report, status, what)
        return UnpackResult(
            inflater.diff_id,
            inflater.total,
            int(report["entries"]),
            int(report["files"]),
            int(report["size"]),
            inflater.compression,
        )
    finally:
        inflater.close()
        if data_w >= 0:
            os.close(data_w)
        os.close(report_r)
        if not finished:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait(pid)


def _pump(inflater: Inflater, data_w: int) -> bool:
    """The tar to the child, chunk by chunk; True if the child stopped reading (it failed:
    its report says why). The inflater's errors (digest, budget, network) are raised."""
    while chunk := inflater.read(CHUNK):
        view = memoryview(chunk)
        while view:
            try:
                view = view[os.write(data_w, view) :]
            except BrokenPipeError:
                return True
    return False


def _read_all(fd: int) -> dict[str, Any]:
    parts = []
    while part := os.read(fd, 65536):
        parts.append(part)
    try:
        report = json.loads(b"".join(parts) or b"{}")
    except ValueError:
        return {}
    return report if isinstance(report, dict) else {}


def _wait(pid: int) -> int:
    """The child's exit status (negative: the signal that ended it)."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        return os.waitstatus_to_exitcode(status)


def _child_error(report: dict[str, Any], status: int, what: str) -> EngineError:
    message = report.get("message")
    if isinstance(message, str) and message:
        kind = getattr(errors, str(report.get("error")), EngineError)
        if isinstance(kind, type) and issubclass(kind, EngineError):
            return kind(message)
        return EngineError(message)
    if status < 0:
        return EngineError(f"{what}: the extracting process died ({signal.Signals(-status).name})")
    return EngineError(f"{what}: the extracting process failed (exit status {status})")


def _child(
    parent: int, data_r: int, report_w: int, dest: Path, what: str, max_entries: int
) -> None:
    """The child's whole life: extract what arrives on data_r, report, exit."""
    code = 0
    try:
        gc.disable()  # no finalizer of the parent's objects may close a descriptor here
        _keep_only(data_r, report_w)  # another layer's pipe held open here would never end
        libc.call().prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            raise SystemExit("the engine ended before the extraction began")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        report: dict[str, Any]
        try:
            report = _extract(data_r, dest, what, max_entries)
        except EngineError as err:
            report = {"error": _error_class(err), "message": err.message}
        except OSError as err:  # a writer thread's error arrives bare
            failure = (
                os_error(what, err) if err.errno in _NO_SPACE else EngineError(f"{what}: {err}")
            )
            report = {"error": _error_class(failure), "message": failure.message}
        except BaseException as err:  # noqa: BLE001 (whatever it is, the parent must hear)
            report = {"error": "EngineError", "message": f"{what}: internal error: {err!r}"}
        os.close(data_r)  # a parent still writing gets EPIPE at once
        data = json.dumps(report).encode()
        while data:
            data = data[os.write(report_w, data) :]
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        os._exit(code)


def _keep_only(*fds: int) -> None:
    """Close every descriptor but stdio and fds (close_range: one system call each gap)."""
    low = 3
    for fd in sorted(fds):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _error_class(err: EngineError) -> str:
    """The name of err's nearest class that engine.errors defines (the parent raises it)."""
    for cls in type(err).__mro__:
        if getattr(errors, cls.__name__, None) is cls:
            return str(cls.__name__)
    return "EngineError"


def _extract(data_r: int, dest: Path, what: str, max_entries: int) -> dict[str, Any]:
    def read(_n: int) -> bytes:
        while True:
            try:
                return os.read(data_r, CHUNK)
            except OSError as err:
                if err.errno != errno.EINTR:
                    raise

    with ThreadPoolExecutor(1, "gantry-write") as writer:
        unpacker = Unpacker(dest, pool=writer, max_entries=max_entries, what=what)
        try:
            unpacker.unpack(Feed(read))
        finally:
            unpacker.close()
    return {"entries": unpacker.entries, "files": unpacker.files, "size": unpacker.size}
