"""Reconciliation: after an engine (re)start, every container's state is rebuilt from its
files alone (conmon.md §6): the exit file, conmon's pid checked against /proc/<pid>/cmdline,
then ``runc state``. Running containers whose conmon lives stay running and reachable; the
ones that ended meanwhile get their exit code; leftovers of crashes are removed."""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import EngineError, RuntimeFailedError
from engine.network import attach, ipam, ports
from engine.protocol import CONTAINER_ID_RE
from engine.runtime.liveness import pid_is_conmon, read_pid_file
from engine.storage import binds
from engine.storage.records import ACTIVE_STATES, PAUSED, RUNNING, ContainerRecord

if TYPE_CHECKING:
    from engine.runtime.lifecycle import Lifecycle

log = logging.getLogger("gantry.engine.reconcile")


def adopt_state(runc_state: dict[str, Any] | None) -> tuple[str, int, float] | None:
    """(status, pid, created epoch) of a runc container that runs, else None."""
    if not runc_state or runc_state.get("status") not in (RUNNING, PAUSED):
        return None
    created = str(runc_state.get("created", ""))[:26].rstrip("Z")
    try:
        epoch = datetime.fromisoformat(created).replace(tzinfo=UTC).timestamp()
    except ValueError:
        epoch = time.time()
    return str(runc_state["status"]), int(runc_state.get("pid") or 0), epoch


def adopt(lc: Lifecycle, record: ContainerRecord) -> bool:
    """A container the record does not know runs (the engine died between `runc start`
    and saving "running"): if its conmon lives, take it over as running."""
    if not (lc.runc.root / record.id).exists():
        return False
    pid = read_pid_file(lc._userdata(record) / "conmon.pid")
    if not pid_is_conmon(pid, record.id):
        return False
    try:
        found = adopt_state(lc.runc.state(record.id))
    except RuntimeFailedError:
        return False
    if found is None:
        return False
    record.state, record.pid, record.started_at = found
    record.conmon_pid = pid or 0
    record.finished_at, record.exit_code, record.error = None, None, ""
    lc.containers.save(record)
    return True


def reconcile(lc: Lifecycle) -> list[str]:
    """After an engine (re)start: rebuild every container's state from its files.
    Running containers whose conmon lives stay running (and reachable); those that ended
    meanwhile are finished with their code; crash leftovers of stopped ones are removed;
    runc state and exit files of containers that no longer exist are deleted."""
    changed = []
    known = set()
    for listed in lc.containers.list():
        known.add(listed.id)
        try:
            with lc._locked(listed.id) as record:
                before = (record.state, record.exit_code, record.error)
                if record.state in ACTIVE_STATES:
                    record = lc.sync(record)
                if record.state in ACTIVE_STATES:  # paused or resumed behind our back?
                    status = lc._runc_status(record)
                    if status in (RUNNING, PAUSED) and status != record.state:
                        record.state = status
                        lc.containers.save(record)
                elif adopt(lc, record):
                    pass  # started just before a crash that came before the record
                elif lc._has_leftovers(record) or lc.exit_file(record.id).exists():
                    lc._release_runtime(record)
                    with contextlib.suppress(FileNotFoundError):
                        lc.exit_file(record.id).unlink()
                    if record.runtime_mounted:
                        lc.containers.release_runtime_mount(record.id)
                if (record.state, record.exit_code, record.error) != before:
                    changed.append(record.name)
        except (EngineError, OSError) as err:
            log.warning("reconcile %s: %s", listed.name, err)
    for orphan in set(lc.runc.list_ids()) - known:
        if CONTAINER_ID_RE.match(orphan):
            with contextlib.suppress(RuntimeFailedError):
                lc.runc.delete(orphan, force=True)
    if lc.exit_dir.is_dir():
        for leftover in lc.exit_dir.iterdir():
            if leftover.name not in known:
                with contextlib.suppress(OSError):
                    leftover.unlink()
    sweep_bind_staging(lc)
    sweep_network(lc, known)
    return changed


def sweep_network(lc: Lifecycle, known: set[str]) -> None:
    """Addresses and host ports of containers that no longer exist are given back (a
    remove cut off by a crash). Namespaces are the containers' own: each one's teardown
    (above, for the stopped ones) removes it; /run/netns is shared with other engines."""
    root = Path(lc.engine.config.root)
    attach.forget_before_boot(root)
    ipam.sweep(root, known)
    ports.sweep(root, known)


def sweep_bind_staging(lc: Lifecycle) -> None:
    """No start is under way at engine start: staging points of binds and pinned copies of
    config.json left there are a crash's (engine.storage.binds)."""
    for record in lc.containers.list():
        paths = lc.containers.paths(record.id)
        with contextlib.suppress(OSError):
            binds.restore_user_config(paths.config, paths.userdata / "config.json.user")
    staging_root = Path(lc.engine.config.root) / "binds"
    if not staging_root.is_dir():
        return
    for staging in sorted(staging_root.iterdir()):
        try:
            binds.unstage(staging)
        except (EngineError, OSError) as err:
            log.warning("bind staging %s: %s", staging.name, err)
