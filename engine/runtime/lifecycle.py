"""Container states and transitions: start, stop, kill, pause, resume, restart, exec, the
clean-up after an exit, and reconciliation after an engine restart.

    created/configured/exited --start--> running <--pause/resume--> paused
    running/paused --(exit, stop, kill)--> exited                 (remove: see remove_hook)

Every public verb holds the container's lock, first syncs the record with reality (podman's
syncContainer: the exit file, conmon's pid checked against /proc/<pid>/cmdline, then
``runc state``), then checks the states it accepts (InvalidStateError otherwise). A failure
keeps the last good state and records the error text in ``record.error``.

Exits are learned from conmon's exit file: the worker's ExitWatcher (inotify on
``<root>/exits``) calls ``on_exit``; the CLI, which runs no watcher, learns them from the sync
that every verb does. Clean-up after an exit: ``runc delete``, exec bundles
and conmon's FIFOs removed, the runtime's use of the rootfs dropped (unmounted unless a user
mount holds it, as podman does), exit file consumed, a "died" event published.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.core import Engine
from engine.errors import (
    EngineError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    RuntimeFailedError,
)
from engine.events import Publisher
from engine.hostfs.locks import LockTimeoutError
from engine.network import attach, ports
from engine.network.store import Networks
from engine.protocol import CONTAINER_ID_RE
from engine.runtime import history
from engine.runtime.conmon import (
    BUNDLE_LEFTOVERS,
    Conmon,
    MonitorSpec,
    read_exit_file,
    remove_files,
    wait_gone,
)
from engine.runtime.execs import (
    ExecResult,
    ExecSession,
    exec_bundles,
    exec_process,
    exec_user,
    run_exec,
    sweep_exec_bundles,
)
from engine.runtime.exits import ExitWatcher, wait_for_file
from engine.runtime.liveness import exit_dir, pid_is_conmon, read_pid_file
from engine.runtime.runc import Runc, parse_signal
from engine.storage import binds, quotas
from engine.storage.containers import Containers, publish_container_event
from engine.storage.records import (
    ACTIVE_STATES,
    CONFIGURED,
    CREATED,
    EXITED,
    PAUSED,
    RUNNING,
    ContainerRecord,
)
from engine.storage.sandbox import bind_roots

log = logging.getLogger("gantry.engine.lifecycle")

STARTABLE = (CREATED, CONFIGURED, EXITED)
KILL_WAIT = 5.0  # after SIGKILL, how long an exit may take before we force runc delete
READ_LOCK_WAIT = 0.25  # seconds a reader waits for a container's lock before reading as is
UNKNOWN_EXIT = -1  # no exit file (conmon died or was killed): as podman, the code is unknown


class Lifecycle:
    """The container state machine (a service: ``engine.get(Lifecycle)``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.containers = engine.get(Containers)
        self.runc = engine.get(Runc)
        self.conmon = engine.get(Conmon)
        self.networks = engine.get(Networks)
        self.exit_dir = exit_dir(engine.config.root)
        # Where exits found by the watcher or a sync are announced when no caller's publisher
        # is at hand (the worker sets its channel-layer publisher at start-up).
        self.publisher: Publisher | None = None
        self.watcher: ExitWatcher | None = None
        # The runtime's part in storage, wired here, once per engine: a remove stops the
        # container first, and readers get records synced with conmon and runc.
        if _remove_hook not in self.containers.pre_remove_hooks:
            self.containers.pre_remove_hooks.append(_remove_hook)
        if _sync_hook not in self.containers.sync_hooks:
            self.containers.sync_hooks.append(_sync_hook)

    # -- helpers ------------------------------------------------------------------------------
    @contextmanager
    def _locked(self, container_id: str) -> Iterator[ContainerRecord]:
        with self.containers.lock(container_id):
            yield self.containers.load(container_id)

    def _fail(self, record: ContainerRecord, err: EngineError, what: str) -> EngineError:
        """Keep the last good state; remember why the verb failed."""
        record.error = f"{what}: {err.message}"[:4000]
        with contextlib.suppress(OSError):
            self.containers.save(record)
        return err

    def _guard(self, record: ContainerRecord, verb: str, accepted: tuple[str, ...]) -> None:
        if record.state not in accepted:
            raise InvalidStateError(
                f"cannot {verb} container {record.name}: it is {record.state}"
                f" (only {', '.join(accepted)})",
                current=record.state,
                wanted=accepted,
            )

    def exit_file(self, container_id: str) -> Path:
        return self.exit_dir / container_id

    def conmon_alive(self, record: ContainerRecord) -> bool:
        pid = record.conmon_pid or read_pid_file(self._userdata(record) / "conmon.pid")
        return pid_is_conmon(pid, record.id)

    def _userdata(self, record: ContainerRecord) -> Path:
        return self.containers.paths(record.id).userdata

    def _publish(self, record: ContainerRecord, action: str, publisher: Any = None) -> None:
        publish_container_event(publisher or self.publisher, record, action)

    # -- sync ---------------------------------------------------------------------------------
    def sync(self, record: ContainerRecord, publisher: Any = None) -> ContainerRecord:
        """Bring a record (loaded under its lock) in line with reality; saves if it changed.
        Only running and paused records can be out of date."""
        if record.state not in ACTIVE_STATES:
            return record
        if self.exit_file(record.id).exists():
            return self._finish(record, publisher)
        if self.conmon_alive(record):
            # conmon watches the process and will write the exit file: trust the record
            # (no `runc state` subprocess on every call; reconcile() asks runc).
            if history.note_process(record):  # what it runs, for the lab's checks
                self.containers.save(record)
            return record
        # conmon is gone and wrote no exit file (killed, or died with the host): ask runc.
        state = self._runc_status(record)
        if state == "stopped" and wait_for_file(self.exit_dir, record.id, 0.5):
            return self._finish(record, publisher)
        if state in (RUNNING, PAUSED):
            note = "conmon is gone: output is no longer logged and the exit code will be lost"
            if record.state != state or record.error != note:
                record.state, record.error = state, note
                self.containers.save(record)
            return record
        return self._finish(record, publisher)

    def _runc_status(self, record: ContainerRecord) -> str | None:
        try:
            state = self.runc.state(record.id)
        except RuntimeFailedError as err:
            log.warning("runc state %s: %s", record.id[:12], err.message)
            return None
        return None if state is None else str(state.get("status", ""))

    def _finish(self, record: ContainerRecord, publisher: Any = None) -> ContainerRecord:
        """The container has exited (or has no process any more): record the code and clean
        up everything the run left. Idempotent; the caller holds the lock."""
        exit_path = self.exit_file(record.id)
        code = read_exit_file(exit_path)
        try:
            finished = exit_path.stat().st_mtime
        except FileNotFoundError:
            finished = time.time()
        paths = self.containers.paths(record.id)
        # conmon wrote the exit file: it exits by itself in a moment (no need to wait).
        self._release_runtime(record, conmon_grace=0 if code is not None else 2.0)
        if record.state != EXITED:  # once per exit (this is idempotent)
            history.note_exit(record, UNKNOWN_EXIT if code is None else code)
        record.state = EXITED
        record.exit_code = UNKNOWN_EXIT if code is None else code
        record.finished_at = finished
        record.pid = 0
        record.conmon_pid = 0
        record.extra.pop("network", None)
        if code is None and not record.error:
            record.error = "exited without an exit file (conmon was killed?)"
        if (paths.userdata / "oom").exists():
            record.extra["oom_killed"] = True
        self.containers.save(record)
        self._publish(record, "died", publisher)  # the exit is recorded: tell the pages now
        # Housekeeping after the record: a crash from here on is finished by reconcile()
        # (an exited record with an exit file left).
        try:
            self.containers.release_runtime_mount(record.id)
        except (EngineError, OSError) as err:  # e.g. busy: a host shell sits in merged/
            log.warning("unmount %s after exit: %s", record.name, err)
        with contextlib.suppress(FileNotFoundError):
            exit_path.unlink()
        return self.containers.load(record.id)

    def _release_runtime(self, record: ContainerRecord, conmon_grace: float = 2.0) -> None:
        """No runc state, no conmon, no exec session, no FIFO left for this container.
        A conmon still alive after conmon_grace seconds is killed (after an exit it is on
        its way out: with conmon_grace 0 it is only killed if it hangs on, later)."""
        paths = self.containers.paths(record.id)
        try:
            self.runc.delete(record.id, force=True)
        except RuntimeFailedError as err:
            log.warning("runc delete %s: %s", record.id[:12], err.message)
        pid = record.conmon_pid or read_pid_file(paths.userdata / "conmon.pid")
        if pid and conmon_grace > 0 and not wait_gone(pid, record.id, conmon_grace):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        sweep_exec_bundles(paths.bundle, record.id, keep_live=False)
        remove_files(paths.bundle, BUNDLE_LEFTOVERS)
        remove_files(paths.userdata, ("pidfile", "conmon.pid"))
        # After the process: netavark's teardown wants the namespace it set up, still there.
        attach.disconnect(self.networks, record.id, paths.userdata)

    def _has_leftovers(self, record: ContainerRecord) -> bool:
        paths = self.containers.paths(record.id)
        return (
            (self.runc.root / record.id).exists()
            or (paths.userdata / "conmon.pid").exists()
            or bool(exec_bundles(paths.bundle))
            or attach.state_of(paths.userdata) is not None
        )

    def get_synced(self, unsafe_ref: str, publisher: Any = None) -> ContainerRecord:
        """Find a container and sync it (for reads: state, ps, inspect, logs). A reader
        never waits behind a verb that holds the lock (a stop can take its full timeout):
        it gets the record as it is, which that verb is about to update anyway."""
        found = self.containers.get(unsafe_ref)
        if found.state not in ACTIVE_STATES:
            return found
        try:
            with self.containers.lock(found.id, timeout=READ_LOCK_WAIT):
                return self.sync(self.containers.load(found.id), publisher)
        except LockTimeoutError:
            return self.containers.load(found.id)

    # -- start --------------------------------------------------------------------------------
    def start(self, unsafe_ref: str, publisher: Any = None) -> ContainerRecord:
        """created/configured/exited → running (a running container is left as it is).
        A "created" container gets its config.json generated first, as podman's first start
        does; the spec is validated again, the rootfs mounted, conmon runs ``runc create``
        and the engine ``runc start``. On failure nothing is left running or mounted by the
        runtime and the state is unchanged, with the reason in ``error``."""
        found = self.containers.get(unsafe_ref)
        with self._locked(found.id) as record:
            record = self.sync(record, publisher)
            if record.state == RUNNING:
                return record
            self._guard(record, "start", STARTABLE)
            quotas.check_start(self.engine.config, record, self.containers.list())
            quota = quotas.of_container(self.engine.config, record.options)
            quotas.check_disk(self.engine.config, self.containers, quota, record.options.sandbox)
            try:
                self._start_locked(record)
            except EngineError as err:
                self._cleanup_failed_start(record)
                raise self._fail(self.containers.load(record.id), err, "start") from None
            record = self.containers.load(record.id)
        self._publish(record, "start", publisher)
        watching = self.watcher is not None and self.watcher.running
        if not watching and self.exit_file(record.id).exists():  # over already (the CLI)
            with self._locked(record.id) as again:
                record = self.sync(again, publisher)
        return record

    def _start_locked(self, record: ContainerRecord) -> None:
        paths = self.containers.paths(record.id)
        if not paths.config.exists():
            self.containers.ensure_mounted(record.id)  # generation reads /etc/passwd
            from engine.spec import generate

            generate(self.engine, record)
            record = self.containers.load(record.id)
        keep = paths.userdata / "config.json.user"
        binds.restore_user_config(paths.config, keep)  # a start cut off with it pinned
        self.containers.ensure_mounted(record.id)
        from engine.spec import validate_for_start

        checked = validate_for_start(self.engine, self.containers.load(record.id))
        if self._has_leftovers(record):  # of an earlier run, if a crash left any
            self._release_runtime(record)
        with contextlib.suppress(FileNotFoundError):
            self.exit_file(record.id).unlink()
        spec = MonitorSpec(
            container_id=record.id,
            name=record.name,
            bundle=paths.bundle,
            userdata=paths.userdata,
            exit_dir=self.exit_dir,
            tty=record.options.tty,
            stdin=record.options.interactive,
            log_size_max=self.engine.config.log_size_max,
        )
        allowlist = bind_roots(self.engine.config, record.options)
        staging = Path(self.engine.config.root) / "binds" / record.id
        connecting = self._connect(record, str(checked.get("hostname") or record.short_id))
        try:
            with (
                binds.pinned(checked, allowlist, staging) as runtime_spec,
                binds.in_place(paths.config, keep, runtime_spec),
            ):
                created = self.conmon.create(spec)
        finally:
            network = connecting.wait()  # netavark ran meanwhile; the process waits for it
        self.runc.start(record.id)
        record = self.containers.load(record.id)
        record.state = RUNNING
        record.pid = created.pid
        record.conmon_pid = created.conmon_pid
        record.started_at = time.time()
        record.finished_at = None
        record.exit_code = None
        record.error = ""
        record.extra.pop("oom_killed", None)
        record.extra["network"] = network
        self.containers.save(record)

    def _connect(self, record: ContainerRecord, hostname: str) -> attach.Connecting:
        """The container's network: its namespace now (runc create joins it), netavark's
        setup alongside runc create; undone by _release_runtime if the start fails."""
        from engine.spec.generator import hosts_file

        plan = attach.Plan(
            container_id=record.id,
            name=record.name,
            hostname=hostname,
            network=record.options.network,
            hosts=lambda address: hosts_file(hostname, record.name, address),
            ports=tuple(record.options.ports),
            dns=tuple(record.options.dns),
        )
        return attach.connect(self.networks, plan, self._userdata(record))

    def _cleanup_failed_start(self, record: ContainerRecord) -> None:
        self._release_runtime(record)
        with contextlib.suppress(FileNotFoundError):
            self.exit_file(record.id).unlink()
        with contextlib.suppress(EngineError, OSError):
            self.containers.release_runtime_mount(record.id)

    # -- stop / kill --------------------------------------------------------------------------
    def _wait_exit(self, record: ContainerRecord, timeout: float) -> bool:
        """Wait for the exit file (inotify); when conmon is gone, for runc to see no process."""
        if self.conmon_alive(record):
            return wait_for_file(self.exit_dir, record.id, timeout)
        deadline = time.monotonic() + timeout
        while self._runc_status(record) in (RUNNING, PAUSED, "created"):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _signal(self, record: ContainerRecord, signo: int) -> None:
        """runc kill; a frozen container gets the signal once thawed (so KILL resumes it)."""
        if history.note_process(record):  # what ran until now, for the lab's checks
            self.containers.save(record)
        try:
            self.runc.kill(record.id, signo)
        except RuntimeFailedError as err:
            if "not running" not in err.message and "does not exist" not in err.message:
                raise
        if record.state == PAUSED and signo == signal.SIGKILL:
            with contextlib.suppress(RuntimeFailedError):
                self.runc.resume(record.id)

    def stop(
        self, unsafe_ref: str, timeout: float = 10.0, publisher: Any = None
    ) -> ContainerRecord:
        """running/paused → exited: the image's StopSignal (default SIGTERM), up to timeout
        seconds for the exit, then SIGKILL. Anything else is left as it is (as podman)."""
        found = self.containers.get(unsafe_ref)
        with self._locked(found.id) as record:
            record = self.sync(record, publisher)
            if record.state not in ACTIVE_STATES:
                return record
            try:
                first = signal.SIGKILL if record.state == PAUSED else self.stop_signal(record)
                self._signal(record, first)
                if first == signal.SIGKILL or not self._wait_exit(record, timeout):
                    self._signal(record, signal.SIGKILL)
                    self._wait_exit(record, KILL_WAIT)
            except EngineError as err:
                raise self._fail(record, err, "stop") from None
            return self._finish(self.containers.load(record.id), publisher)

    def stop_signal(self, record: ContainerRecord) -> int:
        """The image's StopSignal, else SIGTERM."""
        from engine.images.store import Store

        try:
            image = self.engine.get(Store).get_image(record.image_id)
            value = (image.config.get("config") or {}).get("StopSignal")
            return parse_signal(value) if value else signal.SIGTERM
        except EngineError:
            return signal.SIGTERM

    def kill(
        self, unsafe_ref: str, unsafe_signal: str | int = "KILL", publisher: Any = None
    ) -> ContainerRecord:
        """Send a signal to a running or paused container (``podman kill``, default KILL).
        After SIGKILL it waits briefly so the caller sees the exit; other signals return at
        once (the exit, if any, arrives through the watcher)."""
        signo = parse_signal(unsafe_signal)
        found = self.containers.get(unsafe_ref)
        with self._locked(found.id) as record:
            record = self.sync(record, publisher)
            self._guard(record, "kill", ACTIVE_STATES)
            try:
                self._signal(record, signo)
            except EngineError as err:
                raise self._fail(record, err, "kill") from None
            if signo == signal.SIGKILL and self._wait_exit(record, KILL_WAIT):
                return self._finish(self.containers.load(record.id), publisher)
            if self.exit_file(record.id).exists():
                return self._finish(self.containers.load(record.id), publisher)
            return record

    # -- pause / resume / restart -------------------------------------------------------------
    def _transition(
        self, unsafe_ref: str, verb: str, accepted: str, action: Callable[[str], None],
        target: str, publisher: Any,
    ) -> ContainerRecord:  # fmt: skip
        found = self.containers.get(unsafe_ref)
        with self._locked(found.id) as record:
            record = self.sync(record, publisher)
            self._guard(record, verb, (accepted,))
            try:
                action(record.id)
            except EngineError as err:
                raise self._fail(record, err, verb) from None
            record.state = target
            record.error = ""
            self.containers.save(record)
        self._publish(record, verb, publisher)
        return record

    def pause(self, unsafe_ref: str, publisher: Any = None) -> ContainerRecord:
        """running → paused (runc pause: the freezer cgroup)."""
        return self._transition(unsafe_ref, "pause", RUNNING, self.runc.pause, PAUSED, publisher)

    def resume(self, unsafe_ref: str, publisher: Any = None) -> ContainerRecord:
        """paused → running."""
        return self._transition(unsafe_ref, "resume", PAUSED, self.runc.resume, RUNNING, publisher)

    def restart(
        self, unsafe_ref: str, timeout: float = 10.0, publisher: Any = None
    ) -> ContainerRecord:
        """stop (if running or paused), then start."""
        record = self.stop(unsafe_ref, timeout, publisher)
        return self.start(record.id, publisher)

    # -- exec -------------------------------------------------------------------------------
    def exec_session(
        self,
        unsafe_ref: str,
        command: list[str],
        *,
        tty: bool = False,
        stdin: bool = False,
        env: list[str] | None = None,
        workdir: str = "",
        user: str = "",
    ) -> ExecSession:
        """An exec session (not yet prepared) in a running container: the container's own
        config.process with new args, plus env entries (replacing same keys), a working dir
        and a user resolved in the container's /etc/passwd. Reused by terminals (tty=True)."""
        if not command or not all(isinstance(a, str) and a for a in command):
            raise InvalidInputError("exec: give a command")
        found = self.containers.get(unsafe_ref)
        with self._locked(found.id) as record:
            record = self.sync(record)
            self._guard(record, "exec in", (RUNNING,))
            paths = self.containers.paths(record.id)
            process = exec_process(paths.config, command, env or [], workdir)
            if user:
                process["user"] = exec_user(self.containers, record, user)
            return ExecSession(
                self.engine, record.id, record.name, paths.bundle, process, tty=tty, stdin=stdin
            )

    def exec_run(
        self, unsafe_ref: str, command: list[str], *, timeout: float = 60.0,
        max_output: int = 4 * 1024 * 1024, **kwargs: Any,
    ) -> ExecResult:  # fmt: skip
        """``podman exec`` without a terminal: run, collect output, return the exit code."""
        session = self.exec_session(unsafe_ref, command, **kwargs)
        return run_exec(session, timeout=timeout, max_output=max_output)

    # -- exits --------------------------------------------------------------------------------
    def on_exit(self, container_id: str) -> None:
        """The exit watcher saw <exits>/<container_id>: finish that container."""
        if not CONTAINER_ID_RE.match(container_id):
            return
        try:
            with self._locked(container_id) as record:
                if record.state in ACTIVE_STATES:
                    self.sync(record)
                else:  # a stale file (an old run, or a failed start's leftovers)
                    with contextlib.suppress(FileNotFoundError):
                        self.exit_file(container_id).unlink()
        except NotFoundError:
            with contextlib.suppress(FileNotFoundError):
                self.exit_file(container_id).unlink()

    def remove_hook(self, record: ContainerRecord, force: bool) -> None:
        """Before a container is removed (under its lock): refuse a running one unless
        forced; a forced one is killed and waited for. Then nothing of the runtime stays:
        no runc state, no conmon, no exec bundle, no exit file."""
        record = self.containers.load(record.id)
        conmon_pid = record.conmon_pid or read_pid_file(self._userdata(record) / "conmon.pid")
        record = self.sync(record)
        if record.state in ACTIVE_STATES:
            if not force:
                raise InvalidStateError(
                    f"cannot remove container {record.name} as it is {record.state} - "
                    "stop it first or use force",
                    current=record.state,
                    wanted=(CREATED, CONFIGURED, EXITED),
                )
            self._signal(record, signal.SIGKILL)
            self._wait_exit(record, KILL_WAIT)
            record = self._finish(self.containers.load(record.id))
        self._release_runtime(record)
        if conmon_pid and not wait_gone(conmon_pid, record.id, 2.0):  # it holds ctr.log open
            with contextlib.suppress(OSError):
                os.kill(conmon_pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            self.exit_file(record.id).unlink()
        ports.release(Path(self.engine.config.root), record.id)

    def reconcile(self) -> list[str]:
        """After an engine (re)start: see engine.runtime.reconcile."""
        from engine.runtime.reconcile import reconcile

        return reconcile(self)


def _remove_hook(engine: Engine, record: ContainerRecord, force: bool) -> None:
    engine.get(Lifecycle).remove_hook(record, force)


def _sync_hook(engine: Engine, record: ContainerRecord) -> ContainerRecord:
    """For readers (ps, inspect, the web's table): the record synced with conmon/runc."""
    if record.state not in ACTIVE_STATES:
        return record
    return engine.get(Lifecycle).get_synced(record.id)
