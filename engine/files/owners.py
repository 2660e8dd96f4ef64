"""Owner names: uid -> user and gid -> group from the container's own /etc/passwd and
/etc/group (never the host's), read through its root and cached while the files are unchanged."""

from __future__ import annotations

import os
from dataclasses import dataclass

from engine.errors import EngineError
from engine.hostfs import securepath

MAX_IDS_FILE = 1024 * 1024  # bytes of /etc/passwd or /etc/group read
MAX_CACHED = 256  # files whose parsed names are kept


@dataclass
class Ids:
    """uid -> user name and gid -> group name, from the container's own files."""

    users: dict[int, str]
    groups: dict[int, str]

    def user(self, uid: int) -> str:
        return self.users.get(uid, str(uid))

    def group(self, gid: int) -> str:
        return self.groups.get(gid, str(gid))


def parse_ids(data: bytes) -> dict[int, str]:
    """name:x:id:... lines (passwd and group share the first three fields)."""
    out: dict[int, str] = {}
    for line in data.decode("utf-8", "replace").split("\n")[:20000]:
        parts = line.split(":")
        if len(parts) < 3 or not parts[0] or line.startswith("#"):
            continue
        try:
            num = int(parts[2])
        except ValueError:
            continue
        out.setdefault(num, parts[0][:64])
    return out


class OwnerNames:
    """The names of a container's users and groups, for listings and tar headers. A file is
    parsed again only when it changed (device, inode, size or mtime); a missing or unreadable
    file gives no names (numbers are shown)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[tuple[int, ...], dict[int, str]]] = {}

    def of(self, container_id: str, root: securepath.Root) -> Ids:
        return Ids(
            self._id_file(container_id, root, "/etc/passwd"),
            self._id_file(container_id, root, "/etc/group"),
        )

    def _id_file(self, container_id: str, root: securepath.Root, path: str) -> dict[int, str]:
        try:
            fd = root.open_regular(path)
        except (OSError, EngineError):
            return {}
        try:
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            cached = self._cache.get((container_id, path))
            if cached and cached[0] == key:
                return cached[1]
            data = os.read(fd, MAX_IDS_FILE)
        except OSError:
            return {}
        finally:
            os.close(fd)
        parsed = parse_ids(data)
        if len(self._cache) > MAX_CACHED:
            self._cache.clear()
        self._cache[(container_id, path)] = (key, parsed)
        return parsed
