"""A container's storage below the locks: the directory ``create`` builds (all or nothing) and
the overlay over the image's layers, mounted when needed and unmounted when nobody uses it.

Nothing here locks or saves: engine.storage.containers calls these under ``Containers.lock(id)`` and
writes the record they change. ``reconcile_mounts`` is the exception: it takes each lock itself.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import NotFoundError
from engine.hostfs import atomic, digests, locks, proc
from engine.images.store import ImageRecord, Store
from engine.storage import mounts
from engine.storage.records import ContainerPaths, ContainerRecord

if TYPE_CHECKING:
    from engine.storage.containers import Containers


def build_dir(
    store: Store, paths: ContainerPaths, record: ContainerRecord, image: ImageRecord
) -> None:
    """Make the container's directory (record, upper, work, merged, bundle, userdata) under
    tmp/ and rename it into place: a crash leaves either all of it or nothing."""
    work = store.tmp_dir("container")
    try:
        work.chmod(0o700)
        upper = work / "upper"
        upper.mkdir(mode=0o755)
        # The container's / takes the upper dir's mode and owner: copy the image's.
        if image.layers:
            top = store.layer_diff(image.layers[-1])
            st = os.stat(top)
            os.chown(upper, st.st_uid, st.st_gid)
            upper.chmod(stat.S_IMODE(st.st_mode))
        for sub in ("work", "merged", "bundle", "userdata"):
            (work / sub).mkdir(mode=0o700)
        atomic.write_json(work / "container.json", record.to_dict())
        os.rename(work, paths.root)
        atomic.fsync_dir(paths.root.parent)
    except BaseException:
        import shutil  # (with bz2 and lzma) only for this rare clean-up

        shutil.rmtree(work, ignore_errors=True)
        raise


def lower_dirs(store: Store, record: ContainerRecord) -> list[Path]:
    """The image layer dirs, bottom to top."""
    return [store.layer_diff(digests.check(c, "layer")) for c in record.layers]


def overlay(store: Store, paths: ContainerPaths, record: ContainerRecord) -> mounts.OverlayMount:
    return mounts.OverlayMount(
        lowers=tuple(reversed(lower_dirs(store, record))),
        upper=paths.upper,
        work=paths.work,
        target=paths.merged,
    )


def mount_now(store: Store, paths: ContainerPaths, record: ContainerRecord) -> None:
    """Mount the overlay unless it is mounted; a missing image layer is a NotFoundError."""
    if mounts.is_mounted(paths.merged):
        return
    for lower in lower_dirs(store, record):
        if not lower.is_dir():
            raise NotFoundError(
                f"container {record.name}: image layer {lower.parent.name} is missing"
            )
    overlay(store, paths, record).mount()


def live_holders(record: ContainerRecord) -> list[int]:
    """The explorer holds whose process still exists (a crashed call leaves a dead one)."""
    return [p for p in record.mount_holders if proc.pid_alive(p)]


def unmount_if_unused(paths: ContainerPaths, record: ContainerRecord) -> None:
    """Unmount when no user mount, no runtime use and no live hold is left (the record's
    holders are pruned on the way)."""
    record.mount_holders = live_holders(record)
    if record.mount_count <= 0 and not record.runtime_mounted and not record.mount_holders:
        record.mount_count = 0
        mounts.unmount(paths.merged)


def reconcile_mounts(containers: Containers) -> list[str]:
    """After an engine restart (or a reboot): make the records agree with the kernel.
    A record that says mounted with no mount behind it is reset; a mount nobody holds any
    more (a crashed explorer call) is unmounted. Returns the names it changed."""
    changed = []
    for listed in containers.list():
        try:
            with containers.lock(listed.id, timeout=10):
                record = containers.load(listed.id)
                before = record.to_dict()
                if not containers.is_mounted(record.id):
                    record.mount_count = 0
                    record.runtime_mounted = False
                    record.mount_holders = []
                else:
                    unmount_if_unused(containers.paths(record.id), record)
                if record.to_dict() != before:
                    containers.save(record)
                    changed.append(record.name)
        except (NotFoundError, locks.LockTimeoutError):
            continue
    return changed
