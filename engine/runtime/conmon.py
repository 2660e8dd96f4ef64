"""conmon, the container monitor: one per container and one per exec session (conmon.md).

This module is the only place that spawns conmon. It follows the checked protocol:

* sync and start pipes are ``socketpair(AF_UNIX, SOCK_SEQPACKET)``; the child ends are passed
  as inherited fds named by ``_OCI_SYNCPIPE`` / ``_OCI_STARTPIPE`` (``_OCI_ATTACHPIPE`` for
  exec sessions); conmon runs in its own process group, cwd = userdata (its ``oom`` marker),
  stdin /dev/null, every other fd closed;
* conmon blocks on the start pipe before it forks: that window moves it out of the engine's
  cgroup (``<controller>/gantry-conmon`` in every hierarchy), so stopping the engine's service
  never kills the monitors; then one ``\\0`` byte lets it go, the intermediate process is reaped
  and the sync pipe answers ``{"data": <pid>}`` or ``{"data": -1, "message": ...}``;
* ``--full-attach`` (as podman 4.3.1): the attach socket is ``<bundle>/attach`` with no
  socket-dir symlink to clean up; clients connect through ``/proc/self/fd/<O_PATH dir fd>``
  so the 108-byte ``sun_path`` limit never applies; ``ctl``/``winsz`` FIFOs sit beside it;
* runc gets ``--root`` (engine state) and ``--log-format=json --log=<userdata>/oci-log``, whose
  last error is what a user reads when create fails.

conmon only creates the container; the engine runs ``runc start`` itself (engine.runtime.lifecycle).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core import Engine
from engine.errors import RuntimeFailedError
from engine.runtime.liveness import pid_is_conmon, read_pid_file
from engine.runtime.runc import Runc, runc_message

log = logging.getLogger("gantry.engine.conmon")

CGROUP_ROOT = Path("/sys/fs/cgroup")
CONMON_CGROUP = "gantry-conmon"
SYNC_TIMEOUT = 60.0  # runc create of a big rootfs can be slow; conmon sends nothing until then
PIPE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


# -- paths and small probes -----------------------------------------------------------------
def attach_path(bundle: Path) -> Path:
    """Where conmon binds the attach socket for a (container or exec) bundle."""
    return bundle / "attach"


def ctl_fifo(bundle: Path) -> Path:
    """conmon's control FIFO: ``"1 <rows> <cols>\\n"`` resizes, ``"2 0 0\\n"`` reopens logs."""
    return bundle / "ctl"


def attach_socket_path(engine: Engine, record: Any) -> Path:
    """A container's attach socket (``<bundle>/attach``; exists while its conmon runs).
    ``record`` is an engine.storage.records.ContainerRecord. Connect with connect_attach(bundle):
    the path may be longer than sun_path allows."""
    from engine.storage.containers import Containers

    return attach_path(engine.get(Containers).paths(record.id).bundle)


def connect_attach(bundle: Path) -> socket.socket:
    """A connected SEQPACKET socket to ``<bundle>/attach``, reached through an O_PATH fd of
    the directory (no ``sun_path`` length limit). Raises OSError (ENOENT/ECONNREFUSED when
    conmon is gone)."""
    dir_fd = os.open(bundle, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{dir_fd}/attach")
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(dir_fd)
    return sock


def write_ctl(bundle: Path, kind: int, rows: int = 0, cols: int = 0) -> bool:
    """Send one control line (one line per write: conmon 2.1.6 parses the first line of each
    read only). False when conmon is gone (ENXIO: no reader) or the FIFO does not exist."""
    line = f"{kind} {rows} {cols}\n".encode()
    try:
        fd = os.open(ctl_fifo(bundle), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in (errno.ENXIO, errno.ENOENT):
            return False
        raise
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return True


def read_exit_file(path: Path) -> int | None:
    """The exit code conmon wrote (decimal, no newline; 128+n for a signal, -1 when conmon
    gave up on a timeout), or None if there is no (readable) file yet."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:
        return None


# -- cgroups --------------------------------------------------------------------------------
_cgroup_procs: list[Path] | None = None


def _conmon_cgroups() -> list[Path]:
    """The cgroup.procs files of <hierarchy>/gantry-conmon, created on first use. Every
    mounted hierarchy is included (cgroup v1 controllers, the named systemd one and the v2
    unified one), so no controller keeps conmon inside the engine's group."""
    global _cgroup_procs
    if _cgroup_procs is not None:
        return _cgroup_procs
    found: list[Path] = []
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # pure cgroup v2
        hierarchies = [CGROUP_ROOT]
    else:
        hierarchies = sorted(p for p in CGROUP_ROOT.iterdir() if not p.is_symlink() and p.is_dir())
    for hierarchy in hierarchies:
        if not (hierarchy / "cgroup.procs").exists():
            continue
        target = hierarchy / CONMON_CGROUP
        try:
            target.mkdir(exist_ok=True)
            for knob in ("cpuset.cpus", "cpuset.mems"):  # a new cpuset starts empty
                if (target / knob).exists() and not (target / knob).read_text().strip():
                    (target / knob).write_text((hierarchy / knob).read_text())
        except OSError as err:
            log.warning("cgroup %s: %s", target, err)
            continue
        found.append(target / "cgroup.procs")
    _cgroup_procs = found
    return found


def move_to_conmon_cgroup(pid: int) -> None:
    """Move pid into gantry-conmon in every hierarchy. Best effort: a hierarchy that refuses
    is logged, never fatal (the container still runs; it only shares the engine's fate)."""
    for procs in _conmon_cgroups():
        try:
            procs.write_text(str(pid))
        except OSError as err:
            log.warning("move conmon %d to %s: %s", pid, procs.parent, err)


# -- the spawn ------------------------------------------------------------------------------
def _pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def read_message(sock: socket.socket, timeout: float, what: str) -> dict[str, Any]:
    """One JSON packet from a conmon pipe. Raises RuntimeFailedError on EOF or timeout."""
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        raise RuntimeFailedError(f"conmon: no {what} within {timeout:g}s")
    data = sock.recv(65536)
    if not data:
        raise RuntimeFailedError(f"conmon exited before sending the {what}")
    try:
        message = json.loads(data)
    except ValueError as err:
        raise RuntimeFailedError(f"conmon: unreadable {what}: {data[:200]!r}") from err
    if not isinstance(message, dict) or not isinstance(message.get("data"), int):
        raise RuntimeFailedError(f"conmon: unexpected {what}: {data[:200]!r}")
    return message


def oci_log_error(path: Path | None) -> str:
    """The last error runc wrote to its --log file, if any."""
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    errors = [ln for ln in text.splitlines() if '"error"' in ln or "level=error" in ln]
    return runc_message(errors[-1]) if errors else ""


@dataclass
class Spawned:
    """A conmon that has been let through the start window and whose intermediate process
    has been reaped. The parent ends of its pipes are still open."""

    proc: subprocess.Popen[bytes]
    sync: socket.socket
    start: socket.socket
    attach: socket.socket | None = None

    def close(self) -> None:
        for sock in (self.sync, self.start, self.attach):
            if sock is not None:
                sock.close()


def spawn(binary: str, args: list[str], cwd: Path, *, with_attach_pipe: bool = False) -> Spawned:
    """Start conmon with the pipes, move it to its cgroup, release it and reap the
    intermediate process. Raises RuntimeFailedError when conmon itself fails (bad option,
    missing binary); the pipes are closed then."""
    pipes = [_pair(), _pair()] + ([_pair()] if with_attach_pipe else [])
    child_ends = [child for _, child in pipes]
    env = dict(PIPE_ENV)
    names = ("_OCI_SYNCPIPE", "_OCI_STARTPIPE", "_OCI_ATTACHPIPE")[: len(child_ends)]
    for name, child in zip(names, child_ends, strict=True):
        env[name] = str(child.fileno())
    argv = [binary, *args]
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=[c.fileno() for c in child_ends],
            close_fds=True,
            process_group=0,
        )
    except OSError as err:
        for pair in pipes:
            for sock in pair:
                sock.close()
        raise RuntimeFailedError(f"conmon: {err.strerror}", argv=argv) from err
    for child in child_ends:
        child.close()
    spawned = Spawned(proc, pipes[0][0], pipes[1][0], pipes[2][0] if with_attach_pipe else None)
    try:
        move_to_conmon_cgroup(proc.pid)  # conmon waits in read(startpipe): nothing forked yet
        spawned.start.sendall(b"\0")
        code = proc.wait(timeout=SYNC_TIMEOUT)
        stderr = _read_available(proc)
        if code != 0:
            message = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {code}"
            raise RuntimeFailedError(
                f"conmon: {message}", argv=argv, returncode=code, stderr=stderr
            )
    except BaseException:
        spawned.close()
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()
        raise
    return spawned


def _read_available(proc: subprocess.Popen[bytes]) -> str:
    """What the intermediate process wrote to stderr. The daemon it forked may hold the pipe
    for a moment before pointing its stdio at /dev/null, so never wait for EOF long."""
    assert proc.stderr is not None
    chunks: list[bytes] = []
    try:
        while select.select([proc.stderr], [], [], 0.05)[0]:
            chunk = os.read(proc.stderr.fileno(), 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        proc.stderr.close()
    return b"".join(chunks).decode(errors="replace")


# -- containers -----------------------------------------------------------------------------
@dataclass(frozen=True)
class MonitorSpec:
    """What conmon needs to create one container."""

    container_id: str
    name: str
    bundle: Path  # holds config.json; conmon binds attach/ctl/winsz here
    userdata: Path  # pidfile, conmon.pid, ctr.log, oci-log, oom
    exit_dir: Path  # conmon writes <exit_dir>/<container_id>
    tty: bool = False
    stdin: bool = False  # -i: a stdin pipe for a non-tty container (ignored with a tty)
    log_size_max: int = 16 * 1024 * 1024
    extra_runtime_args: tuple[str, ...] = field(default=())

    @property
    def log_path(self) -> Path:
        return self.userdata / "ctr.log"

    @property
    def pid_file(self) -> Path:
        return self.userdata / "pidfile"

    @property
    def conmon_pid_file(self) -> Path:
        return self.userdata / "conmon.pid"

    @property
    def oci_log(self) -> Path:
        return self.userdata / "oci-log"

    @property
    def exit_file(self) -> Path:
        return self.exit_dir / self.container_id


# Files conmon (or runc) leave in userdata and bundle; removed before a start and at cleanup.
USERDATA_LEFTOVERS = ("pidfile", "conmon.pid", "oci-log", "oom")
BUNDLE_LEFTOVERS = ("attach", "ctl", "winsz")


@dataclass(frozen=True)
class Created:
    pid: int  # the container's init, on the host
    conmon_pid: int


class Conmon:
    """Spawns conmon for containers and exec sessions (a service: engine.get(Conmon))."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.binary = engine.config.conmon
        self.runc = engine.get(Runc)

    def runtime_args(self, oci_log: Path | None) -> list[str]:
        out: list[str] = []
        args = self.runc.global_args()
        if oci_log is not None:
            args += ["--log-format=json", f"--log={oci_log}"]
        for arg in args:
            out += ["--runtime-arg", arg]
        return out

    def create(self, spec: MonitorSpec) -> Created:
        """Run conmon → ``runc create``. On success the container is in runc state
        ``created`` under a live conmon. On failure conmon has exited, no runc state is left,
        and RuntimeFailedError carries runc's own message."""
        self.runc.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        spec.exit_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        remove_leftovers(spec.userdata, spec.bundle)
        with contextlib.suppress(FileNotFoundError):
            spec.exit_file.unlink()
        args = [
            "--api-version",
            "-c", spec.container_id,
            "-u", spec.container_id,
            "-r", self.runc.binary,
            "-b", str(spec.bundle),
            "-p", str(spec.pid_file),
            "-n", spec.name,
            "--exit-dir", str(spec.exit_dir),
            "-l", f"k8s-file:{spec.log_path}",
            "--log-level", "warning",
            "--log-size-max", str(spec.log_size_max),
            "--conmon-pidfile", str(spec.conmon_pid_file),
            "--full-attach",
        ]  # fmt: skip
        if spec.tty:
            args.append("-t")  # -t alone: stdin survives a client leaving (conmon.md §2)
        elif spec.stdin:
            args.append("-i")
        args += self.runtime_args(spec.oci_log) + [
            a for extra in spec.extra_runtime_args for a in ("--runtime-arg", extra)
        ]
        spawned = spawn(self.binary, args, spec.userdata)
        try:
            message = read_message(spawned.sync, SYNC_TIMEOUT, "container pid")
        except RuntimeFailedError:
            self._abandon(spec)
            raise
        finally:
            spawned.close()
        pid = int(message["data"])
        if pid <= 0:
            why = oci_log_error(spec.oci_log) or runc_message(str(message.get("message", "")))
            self._abandon(spec)
            raise RuntimeFailedError(
                f"create container: {why or 'runc create failed'}",
                argv=[self.binary, *args],
                returncode=pid,
                stderr=str(message.get("message", "")),
            )
        conmon_pid = read_pid_file(spec.conmon_pid_file) or 0
        return Created(pid=pid, conmon_pid=conmon_pid)

    def _abandon(self, spec: MonitorSpec) -> None:
        """After a failed create: make sure no monitor, runc state or FIFO is left."""
        conmon_pid = read_pid_file(spec.conmon_pid_file)
        if conmon_pid and pid_is_conmon(conmon_pid, spec.container_id):
            with contextlib.suppress(OSError):
                os.kill(conmon_pid, 9)
        with contextlib.suppress(RuntimeFailedError):
            self.runc.delete(spec.container_id, force=True)
        remove_files(spec.bundle, BUNDLE_LEFTOVERS)
        remove_files(spec.userdata, ("pidfile", "conmon.pid"))


def remove_files(directory: Path, names: tuple[str, ...]) -> None:
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()


def remove_leftovers(userdata: Path, bundle: Path) -> None:
    remove_files(userdata, USERDATA_LEFTOVERS)
    remove_files(bundle, BUNDLE_LEFTOVERS)


def wait_gone(pid: int, container_id: str, timeout: float) -> bool:
    """Wait (briefly, by polling /proc) until a conmon has exited; True when it has."""
    deadline = time.monotonic() + timeout
    while pid_is_conmon(pid, container_id):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
