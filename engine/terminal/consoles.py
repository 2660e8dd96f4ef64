"""Consoles: terminal sessions bound to containers (their tty) and to interactive exec shells.

The bridge between the container world (lifecycle, exec sessions, conmon's files) and the
terminal hub (engine.terminal.hub), which knows nothing about containers:

- ``attach(container, viewer)`` joins the console of a running tty container. The first viewer
  connects the engine to conmon's attach socket and seeds the scrollback from the log, so a
  pane opened later (or after an engine restart) redraws the recent screen.
- ``create_exec(container, command, user, rows, cols)`` starts ``exec -t`` through conmon:
  attached and sized before the process runs, so its first prompt is not lost. When the shell
  ends, viewers are told its exit code, its transcript tail is kept in
  ``userdata/execs/<exec>.json`` (the lab checks what an exec session saw), the bundle goes.
- ``attach(container, viewer, exec=...)`` joins such a shell; after an engine restart it
  reconnects to the still-running shell by path.

Session keys: ``ctr:<container id>`` and ``exec:<container id>:<exec id>``.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core import Engine
from engine.errors import EngineError, InvalidInputError, InvalidStateError, NotFoundError
from engine.events import Publisher
from engine.hostfs import atomic
from engine.runtime.conmon import (
    connect_attach,
    read_exit_file,
    write_ctl,
)
from engine.runtime.execs import EXEC_ID_RE, ExecSession, exec_bundles
from engine.runtime.lifecycle import Lifecycle
from engine.runtime.liveness import pid_is_conmon, read_pid_file
from engine.runtime.logs import read_all
from engine.storage.containers import Containers, publish_container_event
from engine.storage.records import ACTIVE_STATES, PAUSED, RUNNING
from engine.terminal.hub import SCROLLBACK, Session, TerminalHub

log = logging.getLogger("gantry.engine.consoles")

SHELLS = ("/bin/bash", "/usr/bin/bash", "/bin/sh", "/usr/bin/sh")
TRANSCRIPT = 64 * 1024  # bytes of an exec session's output kept after it ends
EXIT_FILE_WAIT = 3.0


def console_key(container_id: str) -> str:
    return f"ctr:{container_id}"


def exec_key(container_id: str, exec_id: str) -> str:
    return f"exec:{container_id}:{exec_id}"


def _wait_exit_code(
    path: Path, recorded: Callable[[], int | None], timeout: float = EXIT_FILE_WAIT
) -> int | None:
    """The exit code from conmon's exit file, or from the record once the exit watcher has
    consumed that file (it may win the race with the console's EOF)."""
    deadline = time.monotonic() + timeout
    while True:
        code = read_exit_file(path)
        if code is None:
            code = recorded()
        if code is not None or time.monotonic() > deadline:
            return code
        time.sleep(0.05)


class Consoles:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.containers = engine.get(Containers)
        self.lifecycle = engine.get(Lifecycle)
        self.hub = engine.get(TerminalHub)

    # -- the container's own console ---------------------------------------------------------
    def attach(
        self, unsafe_ref: str, viewer: str, publisher: Publisher, *, exec_id: str | None = None
    ) -> dict[str, Any]:
        """Add viewer to a console or exec shell; it receives the scrollback, then live
        output. Raises InvalidStateError (not running), InvalidInputError (no tty),
        NotFoundError (no such shell)."""
        record = self.lifecycle.get_synced(unsafe_ref)
        if exec_id is not None:
            session = self._exec_session(record.id, exec_id, publisher)
        else:
            if record.state not in (RUNNING, PAUSED):
                raise InvalidStateError(
                    f"container {record.name} is {record.state}: start it "
                    "to attach to its terminal",
                    current=record.state,
                    wanted=(RUNNING, PAUSED),
                )
            if not record.options.tty:
                raise InvalidInputError(
                    f"container {record.name} has no terminal (it was "
                    "created without -t): open a shell instead"
                )
            session = self._console(record.id, publisher)
        session.add_viewer(viewer)
        return {"session": session.key, "tty": True, "container": record.id}

    def _console(self, container_id: str, publisher: Publisher) -> Session:
        paths = self.containers.paths(container_id)
        bundle, log_file = paths.bundle, paths.userdata / "ctr.log"

        def scrollback() -> bytes:
            try:
                return read_all(log_file, tail_bytes=2 * SCROLLBACK)[-SCROLLBACK:]
            except (OSError, EngineError):
                return b""

        def recorded() -> int | None:
            try:
                record = self.containers.load(container_id)
            except EngineError:
                return None
            return None if record.state in ACTIVE_STATES else record.exit_code

        def on_eof(session: Session) -> None:
            exit_file = self.lifecycle.exit_file(container_id)
            session.set_exit_code(_wait_exit_code(exit_file, recorded))

        try:
            return self.hub.open(
                console_key(container_id),
                lambda: connect_attach(bundle),
                publisher,
                resize=lambda r, c: _resize(bundle, r, c),
                scrollback=scrollback,
                on_eof=on_eof,
            )
        except OSError as err:
            raise InvalidStateError(f"the container's terminal is gone ({err.strerror})") from err

    # -- exec shells -------------------------------------------------------------------------
    def default_shell(self, container_id: str) -> str:
        """The first of bash, sh that the image really has (followed inside its root)."""
        with self.containers.open_rootfs(container_id) as root:
            for candidate in SHELLS:
                try:
                    fd = root.open(candidate, os.O_PATH)
                except OSError:
                    continue
                try:
                    st = os.fstat(fd)
                finally:
                    os.close(fd)
                if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
                    return candidate
        raise InvalidInputError(
            "this image has no shell (neither bash nor sh): type the command to run instead"
        )

    def create_exec(
        self,
        unsafe_ref: str,
        command: list[str],
        publisher: Publisher,
        *,
        user: str = "",
        rows: int = 24,
        cols: int = 80,
    ) -> dict[str, Any]:
        """Start an interactive shell (exec -t) and return its ids. The process runs only
        after the terminal is attached and sized."""
        record = self.lifecycle.get_synced(unsafe_ref)
        if not command:
            command = [self.default_shell(record.id)]
        exec_session = self.lifecycle.exec_session(
            record.id, command, tty=True, user=user, env=["TERM=xterm"]
        )
        exec_session.prepare()
        try:
            sock = exec_session.connect()
            exec_session.resize(rows, cols)
            exec_session.release()
        except BaseException:
            exec_session.cleanup()
            raise
        key = exec_key(record.id, exec_session.exec_id)
        on_eof = _ExecEnd(exec_session, self.containers, record.id, command, user, publisher)
        self.hub.open(key, lambda: sock, publisher, resize=exec_session.resize, on_eof=on_eof)
        _publish(publisher, self.containers, record.id, "exec_start", exec=exec_session.exec_id)
        return {
            "exec": exec_session.exec_id,
            "session": key,
            "command": command,
            "container": record.id,
        }

    def _exec_session(self, container_id: str, exec_id: str, publisher: Publisher) -> Session:
        if not EXEC_ID_RE.match(exec_id):
            raise InvalidInputError("exec: not an exec session id")
        key = exec_key(container_id, exec_id)
        found = self.hub.find(key)
        if found is not None:
            return found
        # Not known to this engine process: a shell that outlived an engine restart.
        ebundle = self.containers.paths(container_id).bundle / exec_id
        if not (ebundle / "attach").exists():
            raise NotFoundError("this shell has ended")
        userdata = self.containers.paths(container_id).userdata

        def on_eof(session: Session) -> None:
            code = _wait_exit_code(ebundle / "exit" / container_id, lambda: None)
            session.set_exit_code(code)
            _save_transcript(
                userdata, exec_id, [], "", 0.0, code, session.ring.getvalue()[-TRANSCRIPT:]
            )
            _remove_tree(ebundle)

        try:
            return self.hub.open(
                key,
                lambda: connect_attach(ebundle),
                publisher,
                resize=lambda r, c: _resize(ebundle, r, c),
                on_eof=on_eof,
            )
        except OSError as err:
            raise NotFoundError(f"this shell has ended ({err.strerror})") from err

    def live_shells(self, container_id: str) -> list[dict[str, Any]]:
        """The interactive exec shells still running in a container (oldest first), so a page
        opened later can list them and attach again: {"exec", "command", "output"} where
        output is what this engine has seen of it (empty until someone attaches after an
        engine restart)."""
        out = []
        for ebundle in exec_bundles(self.containers.paths(container_id).bundle):
            pid = read_pid_file(ebundle / "conmon.pid")
            if not (ebundle / "attach").exists() or not pid_is_conmon(pid, container_id):
                continue
            process = _exec_process_spec(ebundle)
            if not process.get("terminal"):
                continue  # a non-interactive exec (exec_run) has no pane to attach
            session = self.hub.find(exec_key(container_id, ebundle.name))
            out.append(
                {
                    "exec": ebundle.name,
                    "command": [str(a) for a in process.get("args") or []][:64],
                    "started": (ebundle / "conmon.pid").stat().st_mtime,
                    "output": session.ring.getvalue() if session is not None else b"",
                }
            )
        return sorted(out, key=lambda s: s["started"])

    def transcripts(self, container_id: str) -> list[dict[str, Any]]:
        """What past exec shells of a container saw (newest first)."""
        folder = self.containers.paths(container_id).userdata / "execs"
        out = []
        for path in folder.glob("*.json"):
            try:
                out.append(atomic.read_json(path))
            except (OSError, ValueError):
                continue
        return sorted(out, key=lambda t: t.get("ended", 0), reverse=True)


def _exec_process_spec(ebundle: Path) -> dict[str, Any]:
    """The process spec conmon was given for an exec session (written by the engine)."""
    for path in ebundle.glob("exec-process-*"):
        try:
            with path.open("rb") as f:
                found = json.loads(f.read(1024 * 1024))
        except (OSError, ValueError):
            continue
        if isinstance(found, dict):
            return found
    return {}


def _resize(bundle: Path, rows: int, cols: int) -> None:
    write_ctl(bundle, 1, rows, cols)


@dataclass
class _ExecEnd:
    """What happens when an exec shell's terminal ends: its exit code is read, what it
    printed is kept as a transcript, its bundle goes, and the event is published."""

    exec_session: ExecSession
    containers: Containers
    container_id: str
    command: list[str]
    user: str
    publisher: Publisher
    started: float = field(default_factory=time.time)

    def __call__(self, session: Session) -> None:
        exec_id = self.exec_session.exec_id
        try:
            code: int | None = self.exec_session.wait(timeout=10)
        except EngineError:
            code = None
        session.set_exit_code(code)
        output = session.ring.getvalue()[-TRANSCRIPT:]
        userdata = self.containers.paths(self.container_id).userdata
        _save_transcript(userdata, exec_id, self.command, self.user, self.started, code, output)
        self.exec_session.cleanup()
        _publish(
            self.publisher, self.containers, self.container_id, "exec_died",
            exec=exec_id, exit_code=code,
        )  # fmt: skip


def _save_transcript(
    userdata: Path,
    exec_id: str,
    command: list[str],
    user: str,
    started: float,
    code: int | None,
    output: bytes,
) -> None:
    try:
        folder = userdata / "execs"
        folder.mkdir(mode=0o700, exist_ok=True)
        atomic.write_json(
            folder / f"{exec_id}.json",
            {
                "exec": exec_id,
                "command": command,
                "user": user,
                "started": started,
                "ended": time.time(),
                "exit_code": code,
                "output": output.decode("utf-8", errors="replace"),
            },
        )
    except OSError as err:
        log.info("exec %s: transcript not kept: %s", exec_id, err)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _publish(
    publisher: Publisher, containers: Containers, container_id: str, action: str, **extra: Any
) -> None:
    try:
        record = containers.load(container_id)
    except NotFoundError:
        return
    publish_container_event(publisher, record, action, **extra)
