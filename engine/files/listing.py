"""Directory listings of the explorer, one page at a time: entries with type, mode, owner
names, size, mtime, symlink target, change mark (A/C/D against the image) and source layer,
sorted directories first, then by name.

``DirIndex`` keeps the sorted names of the directories being paged through, so the next pages
of one listing neither read the directory again nor skip or repeat names; ``page`` stats only
the entries of the page asked for, and stops early when the reply would grow too big.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.files.fsio import safe_text
from engine.files.owners import Ids
from engine.storage.diff import UPPER, Attribution, LayerView, attribute, change_kind, lookup

MAX_PAGE_BYTES = 448 * 1024  # a page's reply stays under 512 KiB whatever the names
INDEX_TTL = 60.0  # seconds a listing's snapshot serves its next pages
INDEX_CACHE_SIZE = 16
_TYPES = {
    stat.S_IFDIR: "dir",
    stat.S_IFREG: "file",
    stat.S_IFLNK: "link",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
}

# (is not a directory, name, is deleted): sorting these puts directories first
Item = tuple[bool, str, bool]
# The container's layers, upper first (engine.files.explorer.Files.layers), built only when needed.
Layers = Callable[[], list[tuple[str, Path]]]


def file_type(mode: int) -> str:
    return _TYPES.get(stat.S_IFMT(mode), "unknown")


def entry_dict(
    name: str, st: os.stat_result, ids: Ids, *, target: str | None, change: str, layer: str
) -> dict[str, Any]:
    text, raw = safe_text(name)
    out: dict[str, Any] = {
        "name": text,
        "type": file_type(st.st_mode),
        "mode": stat.filemode(st.st_mode),
        "perm": f"{stat.S_IMODE(st.st_mode):04o}",
        "uid": st.st_uid,
        "gid": st.st_gid,
        "user": ids.user(st.st_uid),
        "group": ids.group(st.st_gid),
        "size": st.st_size,
        "mtime": st.st_mtime,
        "change": change,
        "layer": layer,
    }
    if target is not None:
        out["target"] = safe_text(target)[0]
    if raw:
        out["raw"] = True
    return out


def deleted_dict(name: str) -> dict[str, Any]:
    text, raw = safe_text(name)
    out: dict[str, Any] = {"name": text, "type": "deleted", "change": "D", "layer": UPPER}
    if raw:
        out["raw"] = True
    return out


class DirIndex:
    """The sorted names of the directories being listed, with where each comes from."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], tuple[float, list[Item], Attribution | None]] = {}
        self._lock = threading.Lock()

    def get(
        self,
        container_id: str,
        dfd: int,
        rel: str | None,
        deleted: bool,
        layers: Layers,
        *,
        fresh: bool,
    ) -> tuple[list[Item], Attribution | None]:
        """The directory's sorted names (directories first) with where each comes from. The
        first page always reads the directory; the next pages of the same listing reuse that
        snapshot while the directory is unchanged (same inode, mtime, ctime and link count,
        for at most INDEX_TTL seconds), so paging through 10,000 entries reads them once and
        pages neither skip nor repeat names."""
        st = os.fstat(dfd)
        key = (container_id, rel, deleted, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns,
               st.st_nlink)  # fmt: skip
        with self._lock:
            cached = self._cache.get(key)
        if not fresh and cached and time.monotonic() - cached[0] < INDEX_TTL:
            return cached[1], cached[2]
        with os.scandir(dfd) as it:
            items = [(not e.is_dir(follow_symlinks=False), e.name, False) for e in it]
        attribution: Attribution | None = None
        if rel is not None:
            with LayerView(layers()) as view:
                attribution = attribute(view, rel)
            if deleted:
                items += [(True, name, True) for name in attribution.deleted()]
        items.sort(key=lambda t: (t[0], t[1]))
        with self._lock:
            while len(self._cache) >= INDEX_CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = (time.monotonic(), items, attribution)
        return items, attribution


def page(
    dfd: int,
    items: list[Item],
    attribution: Attribution | None,
    ids: Ids,
    rel: str,
    layers: Layers,
) -> tuple[list[dict[str, Any]], int]:
    """The entries of ``items`` (one page's slice of the index) and how many of them were
    consumed: the page ends early when its reply would pass MAX_PAGE_BYTES."""
    entries = []
    consumed, budget = 0, MAX_PAGE_BYTES
    for _, name, is_deleted in items:
        if budget <= 0:
            break  # the page is full: the rest comes with next_offset
        consumed += 1
        if is_deleted:
            entries.append(deleted_dict(name))
            budget -= 80 + len(os.fsencode(name))
            continue
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            target = os.readlink(name, dir_fd=dfd) if stat.S_ISLNK(st.st_mode) else None
        except FileNotFoundError:
            continue  # removed while we listed
        change, layer = "", ""
        if attribution is not None:
            layer, pos = attribution.source(name)
            if layer == UPPER:
                change = "C" if attribution.in_lower(name, pos) else "A"
                if change == "C" and stat.S_ISDIR(st.st_mode):
                    change = dir_change(layers, rel, name, st)
        entries.append(entry_dict(name, st, ids, target=target, change=change, layer=layer))
        # what the entry costs in the reply: its names' bytes plus ~170 for the rest
        budget -= 170 + len(os.fsencode(name)) + len(os.fsencode(target or ""))
    return entries, consumed


def dir_change(layers: Layers, rel: str, name: str, st: os.stat_result) -> str:
    """A directory of the upper dir that also exists below: changed only if it differs."""
    with LayerView(layers()) as view, view.stack(rel, skip_upper=True) as lowers:
        return change_kind(st, lookup(lowers, name))
