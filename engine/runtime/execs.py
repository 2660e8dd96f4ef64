"""Exec sessions: a process started in a running container through ``conmon --exec``
(conmon.md §4), each with its own conmon, attach socket and exit file.

    session = ExecSession(engine, container_id, name, bundle, process, tty=False)
    session.prepare()          # conmon up, attach socket listening ({"data": 0} on the pipe)
    sock = session.connect()   # attach before anything runs: no output is lost
    pid = session.release()    # second start-pipe byte: conmon runs `runc exec`
    ...drain sock...           # stdout packets start with 0x02, stderr with 0x03
    code = session.wait()      # {"data": <code>} on the sync pipe, else the exit file
    session.cleanup()          # removes the exec bundle (podman's cleanupExecBundle)

``run_exec`` does all of it for a non-interactive command and returns its output. A terminal
(tty=True) session is the same sequence: conmon holds the pty, ``<ebundle>/ctl`` resizes it,
and the attach socket may be reconnected by path after ``close_pipes()`` (engine restarts).

The exec bundle is ``<container bundle>/<exec id>/`` with ``exit/`` and the process spec: a
copy of the container's ``config.process`` with new ``args`` and ``terminal``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.core import Engine
from engine.errors import EngineError, InvalidInputError, RuntimeFailedError
from engine.hostfs import atomic, securepath
from engine.runtime.conmon import (
    SYNC_TIMEOUT,
    Conmon,
    Spawned,
    attach_path,
    connect_attach,
    oci_log_error,
    read_exit_file,
    read_message,
    spawn,
)
from engine.runtime.liveness import pid_is_conmon, read_pid_file
from engine.runtime.runc import runc_message

if TYPE_CHECKING:
    from engine.storage.containers import Containers
    from engine.storage.records import ContainerRecord

EXEC_ID_RE = re.compile(r"^[0-9a-f]{32}$")
STREAM_STDOUT = 2
STREAM_STDERR = 3
PACKET = 8193  # conmon: one stream byte + STDIO_BUF_SIZE


def exec_bundles(bundle: Path) -> list[Path]:
    """The exec bundles under a container bundle."""
    try:
        return sorted(p for p in bundle.iterdir() if EXEC_ID_RE.match(p.name) and p.is_dir())
    except FileNotFoundError:
        return []


def sweep_exec_bundles(bundle: Path, container_id: str, *, keep_live: bool = True) -> int:
    """Remove exec bundles whose conmon is gone (all of them unless keep_live); the count."""
    removed = 0
    for ebundle in exec_bundles(bundle):
        pid = read_pid_file(ebundle / "conmon.pid")
        if keep_live and pid and pid_is_conmon(pid, container_id):
            continue
        if pid and pid_is_conmon(pid, container_id):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ebundle, ignore_errors=True)
        removed += 1
    return removed


def exec_process(
    config_path: Path, command: list[str], env: list[str], workdir: str
) -> dict[str, Any]:
    """The process an exec runs: the container's ``config.process`` (read from its bundle)
    with ``command`` as args, ``env`` entries replacing the same keys, and ``workdir`` as the
    working dir (absolute, not under /proc); no consoleSize (an exec's pty is sized apart)."""
    try:
        config = json.loads(config_path.read_bytes())
        process = dict(config["process"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RuntimeFailedError(f"exec: read {config_path.name}: {err}") from err
    process["args"] = list(command)
    merged = {e.partition("=")[0]: e for e in process.get("env") or []}
    for entry in env:
        if "=" not in entry or entry.startswith("="):
            raise InvalidInputError(f"env {entry[:80]!r}: must be KEY=VALUE")
        merged[entry.partition("=")[0]] = entry
    process["env"] = list(merged.values())
    if workdir:
        # cleaned first: '//proc/self/fd/7' and '/tmp/../proc/1/cwd' are under /proc too
        cwd = securepath.clean(workdir) if workdir.startswith("/") else ""
        if not cwd or cwd == "/proc" or cwd.startswith("/proc/"):
            raise InvalidInputError("workdir: an absolute path, not under /proc")
        process["cwd"] = cwd
    process.pop("consoleSize", None)
    return process


def exec_user(containers: Containers, record: ContainerRecord, unsafe_user: str) -> dict[str, Any]:
    """``process.user`` for ``exec -u USER[:GROUP]``, resolved in the container's own
    /etc/passwd and /etc/group (read through its root, at most 1 MiB each)."""
    from engine.spec.users import additional_gids, resolve_user

    def read(root: Any, name: str) -> bytes | None:
        try:
            fd = root.open_regular(name)
        except (OSError, EngineError):
            return None
        with os.fdopen(fd, "rb") as f:
            return f.read(1024 * 1024)

    with containers.open_rootfs(record.id) as root:
        passwd, group = read(root, "/etc/passwd"), read(root, "/etc/group")
    found = resolve_user(unsafe_user, passwd, group)
    out: dict[str, Any] = {"uid": found.uid, "gid": found.gid}
    if additional_gids(found):
        out["additionalGids"] = additional_gids(found)
    return out


class ExecSession:
    """One exec session; not thread-safe (one owner drives the sequence)."""

    def __init__(
        self,
        engine: Engine,
        container_id: str,
        name: str,
        bundle: Path,
        process: dict[str, Any],
        *,
        tty: bool = False,
        stdin: bool = False,
        exec_id: str | None = None,
    ) -> None:
        self.conmon = engine.get(Conmon)
        self.container_id = container_id
        self.name = name
        self.exec_id = exec_id or os.urandom(16).hex()
        if not EXEC_ID_RE.match(self.exec_id):
            raise InvalidInputError("exec id: 32 hex digits")
        self.ebundle = bundle / self.exec_id
        self.process = dict(process)
        self.tty = tty
        self.stdin = stdin
        self.pid = 0
        self.exit_code: int | None = None
        self._spawned: Spawned | None = None

    @property
    def attach_path(self) -> Path:
        return attach_path(self.ebundle)

    @property
    def exit_file(self) -> Path:
        return self.ebundle / "exit" / self.container_id

    @property
    def conmon_pid(self) -> int | None:
        return read_pid_file(self.ebundle / "conmon.pid")

    def prepare(self) -> None:
        """Write the exec bundle, start conmon, wait until its attach socket listens.
        On failure the exec bundle is removed and RuntimeFailedError raised."""
        self.ebundle.mkdir(mode=0o700)
        try:
            (self.ebundle / "exit").mkdir(mode=0o700)
            spec_file = self.ebundle / f"exec-process-{os.urandom(4).hex()}"
            process = dict(self.process, terminal=self.tty)
            atomic.write_bytes(spec_file, json.dumps(process).encode())
            args = [
                "--api-version",
                "-c", self.container_id,
                "-u", self.exec_id,
                "-r", self.conmon.runc.binary,
                "-b", str(self.ebundle),
                "-p", str(self.ebundle / "exec_pid"),
                "-n", self.name,
                "--exit-dir", str(self.ebundle / "exit"),
                "--full-attach",
                "-l", "none",
                "--log-level", "warning",
                "--conmon-pidfile", str(self.ebundle / "conmon.pid"),
                *(["-t"] if self.tty else []),
                *(["-i"] if self.stdin else []),
                "-e", "--exec-attach",
                "--exec-process-spec", str(spec_file),
            ]  # fmt: skip
            args += self.conmon.runtime_args(self.ebundle / "oci-log")
            self._spawned = spawn(self.conmon.binary, args, self.ebundle, with_attach_pipe=True)
            assert self._spawned.attach is not None
            ready = read_message(self._spawned.attach, SYNC_TIMEOUT, "attach socket")
            if int(ready["data"]) < 0:
                raise RuntimeFailedError(
                    f"exec: attach socket: {ready.get('message', 'conmon failed')}"
                )
        except BaseException:
            self.cleanup()
            raise

    def connect(self) -> socket.socket:
        """A client connection to this session's attach socket."""
        return connect_attach(self.ebundle)

    def release(self) -> int:
        """Let conmon run ``runc exec``; return the process's host pid. Raises
        RuntimeFailedError with runc's message when the exec fails (missing binary, ...)."""
        spawned = self._require()
        spawned.start.sendall(b"\0")
        message = read_message(spawned.sync, SYNC_TIMEOUT, "exec pid")
        pid = int(message["data"])
        if pid <= 0:
            why = oci_log_error(self.ebundle / "oci-log") or runc_message(
                str(message.get("message", ""))
            )
            raise RuntimeFailedError(f"exec: {why or 'runc exec failed'}", returncode=pid)
        self.pid = pid
        return pid

    def wait(self, timeout: float | None = None) -> int:
        """The exit code: from the sync pipe while it is held, else from the exit file
        (waiting up to timeout). Raises RuntimeFailedError on timeout."""
        if self.exit_code is not None:
            return self.exit_code
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._spawned is not None:
            remaining = 1e9 if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                message = read_message(self._spawned.sync, remaining, "exit code")
                self.exit_code = int(message["data"])
                return self.exit_code
            except RuntimeFailedError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
        while True:  # sync pipe lost (engine restart): the exit file is the record
            code = read_exit_file(self.exit_file)
            if code is not None:
                self.exit_code = code
                return code
            pid = self.conmon_pid
            if not pid or not pid_is_conmon(pid, self.container_id):
                code = read_exit_file(self.exit_file)
                self.exit_code = -1 if code is None else code
                return self.exit_code
            if deadline is not None and time.monotonic() > deadline:
                raise RuntimeFailedError(f"exec {self.exec_id}: still running")
            time.sleep(0.05)

    def kill(self, signo: int = signal.SIGKILL) -> None:
        """Signal the exec'd process (its host pid, as runc reported it)."""
        if self.pid > 0 and self.exit_code is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signo)

    def resize(self, rows: int, cols: int) -> bool:
        from engine.runtime.conmon import write_ctl

        return write_ctl(self.ebundle, 1, rows, cols)

    def close_pipes(self) -> None:
        """Drop the sync/start/attach pipes (the session keeps running; wait() then reads the
        exit file)."""
        if self._spawned is not None:
            self._spawned.close()
            self._spawned = None

    def cleanup(self) -> None:
        """Close the pipes and remove the exec bundle (kills a conmon still running it)."""
        self.close_pipes()
        pid = self.conmon_pid
        if pid and pid_is_conmon(pid, self.container_id):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.ebundle, ignore_errors=True)

    def _require(self) -> Spawned:
        if self._spawned is None:
            raise RuntimeFailedError("exec session is not prepared")
        return self._spawned


@dataclass
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    truncated: bool = False
    pid: int = 0


def run_exec(
    session: ExecSession, *, timeout: float = 60.0, max_output: int = 4 * 1024 * 1024
) -> ExecResult:
    """Run a prepared-nothing session to its end and collect its output (at most max_output
    bytes kept; the rest is drained and dropped so conmon never stalls). After timeout the
    process is killed and RuntimeFailedError raised. The exec bundle is always removed."""
    out = bytearray()
    err = bytearray()
    truncated = False
    try:
        session.prepare()
        sock = session.connect()
        try:
            session.release()
            deadline = time.monotonic() + timeout
            killed = False
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 and not killed:
                    session.kill()
                    killed = True
                    deadline = time.monotonic() + 5
                    continue
                if remaining <= 0:
                    break
                if not select.select([sock], [], [], remaining)[0]:
                    continue
                packet = sock.recv(PACKET)
                if not packet:
                    break
                target = err if packet[0] == STREAM_STDERR else out
                room = max(0, max_output - len(out) - len(err))
                if len(packet) - 1 > room:
                    truncated = True
                target += packet[1 : 1 + room]
        finally:
            sock.close()
        code = session.wait(timeout=10)
        if killed:
            raise RuntimeFailedError(f"exec: timed out after {timeout:g}s (killed)")
        return ExecResult(code, bytes(out), bytes(err), truncated, session.pid)
    finally:
        session.cleanup()
