"""Removing a directory tree that untrusted content may have shaped: a container's directory
(its overlay upper dir, with whiteout character devices), an image layer being extracted, a
container's merged root (the explorer's recursive delete), abandoned work under <root>/tmp.

``shutil.rmtree`` recurses once per directory level: a tree about 1000 levels deep (``mkdir -p``
of 1500 ``/a`` fits in PATH_MAX; a process in a container can go deeper) raises RecursionError
halfway. This walks an explicit stack instead:

- each directory is opened below its parent's descriptor with O_NOFOLLOW|O_DIRECTORY, so a
  symlink, even one swapped in meanwhile, is unlinked and never entered;
- the entries that are not directories are unlinked as the directory is read; a directory is
  removed with rmdir once its subdirectories are gone;
- at most MAX_OPEN descriptors are held, whatever the depth. The older levels' descriptors are
  closed, and reopened on the way back up through the child's ``..``, which must be the same
  directory (device and inode) as before: a tree moved meanwhile stops the removal (ESTALE)
  rather than steering it somewhere else.

It does not cross into another filesystem (``rm --one-file-system``): a directory on another
device than its parent (a mount left behind) is refused with EXDEV and left alone. Overlayfs
gives all its directories the overlay's device, so a merged root is one filesystem.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MAX_OPEN = 64
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NOT_A_DIR = (errno.ELOOP, errno.ENOTDIR)  # what O_NOFOLLOW|O_DIRECTORY says of the others


@dataclass
class _Level:
    fd: int  # -1 while closed (deep trees)
    name: str  # its name in the level above
    dev: int
    ino: int
    subdirs: list[str]


def remove_tree_at(dir_fd: int, name: str, *, ignore_errors: bool = False) -> None:
    """Remove ``name`` below ``dir_fd``: a directory with everything below it, or anything
    else (a symlink is removed, never followed). With ``ignore_errors``, what cannot be
    removed is left and the rest goes; else the first error is raised."""
    if name in ("", ".", "..") or "/" in name:
        raise ValueError(f"remove_tree_at: not a name: {name!r}")

    def fail(err: OSError) -> None:
        if not ignore_errors:
            raise err

    try:
        dev = os.fstat(dir_fd).st_dev
        top = _open_dir(dir_fd, name)
    except OSError as err:
        fail(err)
        return
    if top is None:
        _unlink(dir_fd, name, fail)
        return
    try:
        stack = [_level(top, name, fail, dev)]
    except OSError as err:
        fail(err)
        return
    try:
        while stack:
            level = stack[-1]
            if level.subdirs:
                _descend(stack, level, fail)
                continue
            parent = stack[-2] if len(stack) > 1 else None
            if parent is not None and parent.fd < 0:
                try:
                    parent.fd = _reopen(level.fd, parent)
                except OSError as err:
                    fail(err)
                    return  # nowhere safe to go on from
            stack.pop()
            os.close(level.fd)
            level.fd = -1
            try:
                os.rmdir(level.name, dir_fd=dir_fd if parent is None else parent.fd)
            except FileNotFoundError:
                pass
            except OSError as err:
                fail(err)
    finally:
        for level in stack:
            if level.fd >= 0:
                os.close(level.fd)


def remove_tree(path: Path | str, *, ignore_errors: bool = False) -> None:
    """``remove_tree_at`` for a path the engine owns: its parent directories are followed as
    any path is, the last component never is."""
    parent, name = os.path.split(os.path.normpath(os.fspath(path)))
    try:
        pfd = os.open(parent or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        if ignore_errors:
            return
        raise
    try:
        remove_tree_at(pfd, name, ignore_errors=ignore_errors)
    finally:
        os.close(pfd)


# -- the steps ------------------------------------------------------------------------------------
def _open_dir(dir_fd: int, name: str) -> int | None:
    """The directory's descriptor, or None if ``name`` is not a directory (or a symlink)."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as err:
        if err.errno in _NOT_A_DIR:
            return None
        raise


def _level(fd: int, name: str, fail: Callable[[OSError], None], dev: int) -> _Level:
    """Read a directory just opened (whose parent is on device ``dev``): unlink what is not a
    directory, keep the subdirectories' names. Owns ``fd`` (closed if this raises)."""
    try:
        st = os.fstat(fd)
        if st.st_dev != dev:
            raise OSError(errno.EXDEV, f"remove tree: {name!r} is a mount point: not crossed")
        subdirs: list[str] = []
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                if is_dir:
                    subdirs.append(entry.name)
                else:
                    _unlink(fd, entry.name, fail, subdirs)
    except BaseException:
        os.close(fd)
        raise
    return _Level(fd, name, st.st_dev, st.st_ino, subdirs)


def _unlink(
    dir_fd: int, name: str, fail: Callable[[OSError], None], subdirs: list[str] | None = None
) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except IsADirectoryError as err:  # replaced by a directory meanwhile
        if subdirs is None:
            fail(err)
        else:
            subdirs.append(name)
    except OSError as err:
        fail(err)


def _descend(stack: list[_Level], level: _Level, fail: Callable[[OSError], None]) -> None:
    name = level.subdirs.pop()
    try:
        fd = _open_dir(level.fd, name)
    except FileNotFoundError:
        return
    except OSError as err:
        fail(err)
        return
    if fd is None:  # replaced by a symlink or a file meanwhile
        _unlink(level.fd, name, fail)
        return
    try:
        child = _level(fd, name, fail, level.dev)
    except OSError as err:
        fail(err)
        return
    stack.append(child)
    if len(stack) > MAX_OPEN:
        old = stack[-MAX_OPEN - 1]
        if old.fd >= 0:
            os.close(old.fd)
            old.fd = -1


def _reopen(child_fd: int, parent: _Level) -> int:
    """The parent's descriptor again, through the child's ``..``: only if it is the same
    directory as when it was entered."""
    fd = os.open("..", _DIR_FLAGS, dir_fd=child_fd)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (parent.dev, parent.ino):
        os.close(fd)
        raise OSError(errno.ESTALE, f"remove tree: {parent.name!r} moved during the removal")
    return fd
