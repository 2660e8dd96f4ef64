"""The OCI runtime (runc), driven through its command line: a thin wrapper with no state logic.

Every call goes through engine.hostfs.proc.run and passes ``--root <state root>/runc``, so runc's
own
state lives beside the engine's and a test with a temporary root never meets the host's
/run/runc. conmon runs ``runc create`` (see engine.runtime.conmon); this module runs the rest, as
podman does: ``start``, ``kill``, ``pause``, ``resume``, ``delete``, ``state`` and ``ps``.

runc reports errors on stderr as ``time=... level=error msg="..."``; the message is lifted
out so a user reads "container not running" rather than a logrus line.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

from engine.core import Engine
from engine.errors import InvalidInputError, RuntimeFailedError
from engine.hostfs import proc

RUNC_TIMEOUT = 30.0
_MSG_RE = re.compile(r'msg="((?:[^"\\]|\\.)*)"')
_NOT_EXIST = "container does not exist"


def runc_message(stderr: str) -> str:
    """The human part of runc's error output: the last ``msg="..."`` (unescaped), the last
    JSON ``msg`` of a ``--log-format=json`` line, or the last line as it is."""
    text = stderr.strip()
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                data = None
            if isinstance(data, dict) and isinstance(data.get("msg"), str):
                return str(data["msg"])
        found = _MSG_RE.search(line)
        if found:
            try:
                return str(json.loads(f'"{found.group(1)}"'))
            except ValueError:
                return found.group(1)
        if line:
            return line
    return ""


def parse_signal(unsafe_signal: str | int) -> int:
    """A signal given as a number (``9``), a name (``KILL``, ``SIGKILL``, ``sigterm``) or
    ``RTMIN+3``, checked against the host's signals. Raises InvalidInputError."""
    if isinstance(unsafe_signal, int) and not isinstance(unsafe_signal, bool):
        number = unsafe_signal
    elif isinstance(unsafe_signal, str) and re.fullmatch(r"[0-9]{1,3}", unsafe_signal.strip()):
        number = int(unsafe_signal.strip())
    elif isinstance(unsafe_signal, str) and 0 < len(unsafe_signal) <= 16:
        name = unsafe_signal.strip().upper().removeprefix("SIG")
        rt = re.fullmatch(r"RTMIN([+-][0-9]{1,2})?|RTMAX([+-][0-9]{1,2})?", name)
        if rt:
            base = signal.SIGRTMIN if name.startswith("RTMIN") else signal.SIGRTMAX
            number = int(base) + int(rt.group(1) or rt.group(2) or 0)
        else:
            try:
                number = int(signal.Signals["SIG" + name])
            except KeyError:
                raise InvalidInputError(f"signal {unsafe_signal[:16]!r}: unknown") from None
    else:
        raise InvalidInputError("signal: a name such as TERM or a number")
    if not 1 <= number <= signal.SIGRTMAX:
        raise InvalidInputError(f"signal {number}: out of range 1-{int(signal.SIGRTMAX)}")
    return number


class Runc:
    """runc with the engine's ``--root``. Raises RuntimeFailedError carrying runc's message."""

    def __init__(self, engine: Engine) -> None:
        self.binary = engine.config.runtime
        self.root = Path(engine.config.root) / "runc"

    def global_args(self) -> list[str]:
        """Arguments that come before runc's subcommand (also handed to conmon)."""
        return [f"--root={self.root}"]

    def _run(self, *args: str, check: bool = True) -> Any:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        argv = [self.binary, *self.global_args(), *args]
        try:
            return proc.run(argv, timeout=RUNC_TIMEOUT, check=check)
        except RuntimeFailedError as err:
            message = runc_message(err.stderr) or err.message
            raise RuntimeFailedError(
                f"runc {args[0]}: {message}",
                argv=argv,
                returncode=int(err.details.get("returncode", 0)),
                stderr=err.stderr,
            ) from err

    def state(self, container_id: str) -> dict[str, Any] | None:
        """``runc state``: {"status": "created|running|paused|stopped", "pid": ..., ...}, or
        None when runc knows no such container."""
        done = self._run("state", container_id, check=False)
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace")
            if _NOT_EXIST in stderr:
                return None
            raise RuntimeFailedError(
                f"runc state: {runc_message(stderr) or 'exit status ' + str(done.returncode)}",
                argv=list(done.args),
                returncode=done.returncode,
                stderr=stderr,
            )
        try:
            data = json.loads(done.stdout)
        except ValueError as err:
            raise RuntimeFailedError(f"runc state: unreadable output: {err}") from err
        if not isinstance(data, dict):
            raise RuntimeFailedError("runc state: output is not an object")
        return data

    def start(self, container_id: str) -> None:
        self._run("start", container_id)

    def kill(self, container_id: str, signo: int, *, all_processes: bool = False) -> None:
        args = ["kill", *(["--all"] if all_processes else []), container_id, str(signo)]
        self._run(*args)

    def pause(self, container_id: str) -> None:
        self._run("pause", container_id)

    def resume(self, container_id: str) -> None:
        self._run("resume", container_id)

    def delete(self, container_id: str, *, force: bool = False) -> bool:
        """Remove runc's state (and, with force, kill what still runs). False if there was
        nothing to delete."""
        done = self._run("delete", *(["--force"] if force else []), container_id, check=False)
        if done.returncode == 0:
            return True
        stderr = done.stderr.decode(errors="replace")
        if _NOT_EXIST in stderr:
            return False
        raise RuntimeFailedError(
            f"runc delete: {runc_message(stderr)}",
            argv=list(done.args),
            returncode=done.returncode,
            stderr=stderr,
        )

    def ps(self, container_id: str) -> list[int]:
        """Host pids of the processes in the container's cgroup."""
        done = self._run("ps", "--format", "json", container_id)
        try:
            pids = json.loads(done.stdout or b"[]")
        except ValueError as err:
            raise RuntimeFailedError(f"runc ps: unreadable output: {err}") from err
        return [int(p) for p in pids or []]

    def list_ids(self) -> list[str]:
        """Container ids runc has state for under our root (for leak checks and sweeps)."""
        try:
            return sorted(p.name for p in self.root.iterdir() if (p / "state.json").exists())
        except FileNotFoundError:
            return []
