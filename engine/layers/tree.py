"""The layer directory the unpacker (engine.layers.unpack) fills: where an entry's parent is, and
what
this layer already made there.

Every lookup is openat2 RESOLVE_IN_ROOT from the layer root (engine.hostfs.securepath), so no entry,
symlink or hardlink reaches outside it. Parents are created as needed (``mkdir -p``; a dangling
symlink on the way gets its target created inside the root, as writing through
``localetc -> /etc`` lands in the root's /etc), and the last parent stays open in a one-entry
cache, since tar streams list a directory's entries together. The directory started empty, so
the set of (parent inode, name) keys this layer created tells, without an lstat, whether a name
already exists: that is what replacements and whiteouts consult.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from engine.errors import EngineError, InvalidImageError
from engine.hostfs import securepath
from engine.hostfs.rmtree import remove_tree_at
from engine.layers.tarentry import is_whiteout
from engine.layers.writepool import Key, OrderedWrites


def os_error(what: str, err: OSError) -> EngineError:
    """An OSError while unpacking: no space is the host's problem, anything else the image's."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return EngineError(f"{what}: no space left on the device")
    return InvalidImageError(f"{what}: {err.strerror or err}")


class LayerTree:
    """The layer root being filled, in step with the writes pending on ``writes``."""

    def __init__(self, dest: Path, writes: OrderedWrites) -> None:
        self.root = securepath.Root(dest)
        self.writes = writes
        # Every (parent, name) this layer created: the directory started empty, so a name
        # not in here does not exist, and a new file can go to the pool without an lstat.
        self.made: set[Key] = set()
        self._dir_times: list[tuple[list[str], int]] = []
        self._cache: tuple[str, int, tuple[int, int]] | None = None

    def close(self) -> None:
        if self._cache is not None:
            os.close(self._cache[1])
            self._cache = None
        self.root.close()

    # -- parents ----------------------------------------------------------------------------
    def parent(self, parts: list[str], what: str) -> tuple[int, tuple[int, int]]:
        """(O_PATH fd of the entry's parent, its (dev, ino)), creating missing directories.
        The fd belongs to the cache; callers must not close it."""
        path = "/".join(parts[:-1])
        if self._cache is not None and self._cache[0] == path:
            return self._cache[1], self._cache[2]
        flags = os.O_PATH | os.O_DIRECTORY
        try:
            fd = securepath.openat2(self.root.fd, path or ".", flags)
        except FileNotFoundError:
            self.writes.barrier()  # a symlink on the way may still be in the pool
            try:
                fd = securepath.openat2(self.root.fd, path or ".", flags)
            except FileNotFoundError:
                fd = self._mkdir_all(parts[:-1], what)
        except NotADirectoryError as err:
            raise InvalidImageError(f"{what}: a parent is not a directory") from err
        except OSError as err:
            raise os_error(what, err) from err
        st = os.fstat(fd)
        if self._cache is not None:
            os.close(self._cache[1])
        self._cache = (path, fd, (st.st_dev, st.st_ino))
        return fd, self._cache[2]

    def dir_fd(self, parts: list[str], what: str) -> int:
        """An O_RDONLY fd of a directory (created if missing), resolved in the root."""
        if parts:
            pfd, _ = self.parent([*parts, "x"], what)
        else:
            pfd = self.root.fd
        return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=pfd)

    def _forget_cache(self, parts: list[str]) -> None:
        """An entry at parts replaced something: a cached parent at or below it is stale."""
        if self._cache is None:
            return
        path = "/".join(parts)
        cached = self._cache[0]
        if cached == path or cached.startswith(path + "/"):
            os.close(self._cache[1])
            self._cache = None

    def _mkdir_all(self, parts: list[str], what: str, depth: int = 0) -> int:
        """mkdir -p inside the root; a dangling symlink on the way gets its target created
        (inside the root), as writing through ``localetc -> /etc`` lands in the root's /etc."""
        if depth > 40:
            raise InvalidImageError(f"{what}: too many levels of symbolic links")
        fd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.root.fd)
        try:
            for i, part in enumerate(parts):
                sub = "/".join(parts[: i + 1])
                try:
                    nfd = securepath.openat2(self.root.fd, sub, os.O_PATH | os.O_DIRECTORY)
                except FileNotFoundError:
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                        self.made.add((*_ino(fd), part))
                        created = True
                    except FileExistsError:
                        created = False
                        os.close(self._mkdir_all(self._link_target(fd, part), what, depth + 1))
                    nfd = securepath.openat2(self.root.fd, sub, os.O_PATH | os.O_DIRECTORY)
                    if created:
                        os.chmod(securepath.fd_path(nfd), 0o755)  # noqa: S103 (a rootfs dir)
                os.close(fd)
                fd = nfd
            return fd
        except NotADirectoryError as err:
            os.close(fd)
            raise InvalidImageError(f"{what}: a parent is not a directory") from err
        except BaseException:
            os.close(fd)
            raise

    def _link_target(self, dir_fd: int, name: str) -> list[str]:
        """The in-root path a (dangling) symlink points at, as components ('..' stops at
        the root, as the kernel's RESOLVE_IN_ROOT does)."""
        target = os.readlink(name, dir_fd=dir_fd)
        if not target.startswith("/"):
            here = os.readlink(securepath.fd_path(dir_fd))
            root = os.readlink(securepath.fd_path(self.root.fd))
            target = os.path.relpath(here, root) + "/" + target
        return securepath.lexical_parts(target)

    # -- names ------------------------------------------------------------------------------
    def make_room(self, pfd: int, key: Key, parts: list[str], *, keep_dir: bool) -> int | None:
        """Clear the way for a new entry at key: returns the st_mode that was there (-1 for a
        whiteout, None if nothing). A directory stays when keep_dir (tar merges them)."""
        self.writes.wait_key(key)
        if key not in self.made:
            self.made.add(key)
            return None
        name = key[2]
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return st.st_mode
            self.writes.barrier()  # pending writes below it must land before it goes
            remove_tree_at(pfd, name)
        else:
            os.unlink(name, dir_fd=pfd)
        self._forget_cache(parts)
        return st.st_mode if not is_whiteout(st) else -1

    # -- directory times --------------------------------------------------------------------
    def dir_time(self, parts: list[str], mtime_ns: int) -> None:
        """Remember a directory's mtime, to set once its children exist (apply_dir_times)."""
        self._dir_times.append((parts, mtime_ns))

    def apply_dir_times(self) -> None:
        """Directory mtimes last: creating children changed them."""
        for parts, mtime_ns in self._dir_times:
            try:
                with self.root.parent("/".join(parts)) as (fd, name):
                    if name:
                        os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=fd, follow_symlinks=False)
                    else:
                        os.utime(securepath.fd_path(fd), ns=(mtime_ns, mtime_ns))
            except FileNotFoundError:
                continue  # replaced later in the same layer


def _ino(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino
