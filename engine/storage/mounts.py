"""Overlay mounts: a container's root filesystem is the image's layer dirs (read-only lowers)
plus the container's own upper and work dirs, mounted at ``merged``.

An :class:`OverlayMount` is a value object (containerd's idea: "a serialized mount syscall"):
it knows its lower dirs (top-most first, as overlayfs wants them), upper, work, target and
options, can say what the equivalent ``mount`` command line is, and can mount itself.

Mounting uses the new mount API (fsopen/fsconfig/fsmount/move_mount, through ctypes), adding
one ``lowerdir+`` per layer: there is no 4096-byte limit on the option string, so an image of
hundreds of layers mounts (mount(2) takes all options in one page). Where the kernel lacks the
API (or ``lowerdir+``, Linux < 6.8), it falls back to mount(2) with a ``lowerdir=a:b:c`` string
and refuses clearly when that string would not fit.

Options, and why:
  nodev             device nodes a layer carries are never usable from the host side
                    (security.md A9); the explorer also refuses non-regular files.
  index=off         no hard-link index (podman's storage turns it off too); it also lets an
                    upper dir that was mounted before be mounted again after a crash.
  redirect_dir=off  renaming a lower directory copies it (EXDEV to userspace) instead of
                    writing redirect xattrs: an upper dir stays a plain, portable diff.
  metacopy=off      copy-up copies data, so an upper file never points into a lower layer.

Unmounts are lazy (MNT_DETACH, as containers/storage does): a process or an open descriptor
inside the tree does not keep the unmount from happening, and keeps working until it lets go.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import InvalidInputError, RuntimeFailedError
from engine.hostfs import libc

OVERLAY_OPTIONS: tuple[tuple[str, str], ...] = (
    ("index", "off"),
    ("redirect_dir", "off"),
    ("metacopy", "off"),
)
MOUNT_FLAGS = "nodev"
# The mount(2) data page: the whole option string must fit, with its NUL.
MOUNT_DATA_MAX = 4095

# Syscall numbers of the new mount API: one table for every architecture but alpha.
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432
FSOPEN_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 0x1
MOUNT_ATTR_NODEV = 0x4
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100
MS_NODEV = 0x4
MNT_DETACH = 0x2
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000


class _NoNewMountAPI(Exception):
    """The kernel has no fsopen() or overlayfs has no lowerdir+: use mount(2)."""


def _check_dir_path(path: Path, what: str) -> str:
    text = os.fspath(path)
    if not text.startswith("/") or "\x00" in text or "\n" in text:
        raise InvalidInputError(f"overlay {what}: {text[:200]!r} is not a usable absolute path")
    return text


@dataclass(frozen=True)
class OverlayMount:
    """One overlay mount. ``lowers`` are top-most first (the order overlayfs takes them)."""

    lowers: tuple[Path, ...]
    upper: Path
    work: Path
    target: Path
    options: tuple[tuple[str, str], ...] = field(default=OVERLAY_OPTIONS)

    def option_string(self) -> str:
        """The classic ``-o`` string (lowerdir=top:...:bottom,upperdir=...,workdir=...,...)."""
        lowers = ":".join(_escape_lower(_check_dir_path(p, "lowerdir")) for p in self.lowers)
        parts = [
            f"lowerdir={lowers}",
            f"upperdir={_check_dir_path(self.upper, 'upperdir')}",
            f"workdir={_check_dir_path(self.work, 'workdir')}",
        ]
        parts += [f"{k}={v}" for k, v in self.options]
        return ",".join(parts)

    def command_line(self) -> str:
        """The equivalent shell command, for people to read (and copy)."""
        return f"mount -t overlay -o {MOUNT_FLAGS},{self.option_string()} overlay {self.target}"

    def mount(self) -> str:
        """Mount it. Returns which API did it ("fsconfig" or "mount(2)"). Raises
        RuntimeFailedError with the kernel's own words on failure; nothing is left mounted."""
        if not self.lowers:
            raise InvalidInputError("overlay: at least one lower layer is needed")
        try:
            _mount_new_api(self)
            return "fsconfig"
        except _NoNewMountAPI:
            _mount_legacy(self)
            return "mount(2)"


def _escape_lower(path: str) -> str:
    # overlayfs splits lowerdir on ':' and the option parser on ','; a backslash escapes both.
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def _fs_errors(fsfd: int) -> str:
    """The messages the kernel queued on an fs context ("e overlay: ...")."""
    lines = []
    for _ in range(16):
        try:
            data = os.read(fsfd, 512)
        except OSError:
            break
        if not data:
            break
        lines.append(data.decode(errors="replace").strip())
    return "; ".join(line[2:] if line[1:2] == " " else line for line in lines)


def _fsconfig(fsfd: int, cmd: int, key: str | None, value: str | None) -> None:
    res = libc.call().syscall(
        _SYS_FSCONFIG,
        fsfd,
        cmd,
        None if key is None else key.encode(),
        None if value is None else os.fsencode(value),
        0,
    )
    if res < 0:
        err = libc.errno()
        raise OSError(err, f"fsconfig {key or 'create'}: {os.strerror(err)}")


def _mount_new_api(m: OverlayMount) -> None:
    fsfd = libc.call().syscall(_SYS_FSOPEN, b"overlay", FSOPEN_CLOEXEC)
    if fsfd < 0:
        err = libc.errno()
        if err in (errno.ENOSYS, errno.EPERM):
            raise _NoNewMountAPI()
        raise RuntimeFailedError(f"mount overlay: fsopen: {os.strerror(err)}")
    fsfd = int(fsfd)
    try:
        try:
            _fsconfig(fsfd, FSCONFIG_SET_STRING, "lowerdir+", _check_dir_path(m.lowers[0], "lower"))
        except OSError as err:
            detail = _fs_errors(fsfd)
            if err.errno == errno.EINVAL and (not detail or "nknown parameter" in detail):
                raise _NoNewMountAPI() from err
            raise RuntimeFailedError(
                f"mount overlay at {m.target}: lowerdir+ {m.lowers[0]}: {err.strerror}"
                + (f" ({detail})" if detail else ""),
                stderr=detail,
            ) from err
        _fsconfig(fsfd, FSCONFIG_SET_STRING, "source", "overlay")
        for lower in m.lowers[1:]:
            _fsconfig(fsfd, FSCONFIG_SET_STRING, "lowerdir+", _check_dir_path(lower, "lower"))
        _fsconfig(fsfd, FSCONFIG_SET_STRING, "upperdir", _check_dir_path(m.upper, "upperdir"))
        _fsconfig(fsfd, FSCONFIG_SET_STRING, "workdir", _check_dir_path(m.work, "workdir"))
        for key, value in m.options:
            _fsconfig(fsfd, FSCONFIG_SET_STRING, key, value)
        _fsconfig(fsfd, FSCONFIG_CMD_CREATE, None, None)
        mntfd = libc.call().syscall(_SYS_FSMOUNT, fsfd, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV)
        if mntfd < 0:
            code = libc.errno()
            raise OSError(code, f"fsmount: {os.strerror(code)}")
        try:
            res = libc.call().syscall(
                _SYS_MOVE_MOUNT,
                int(mntfd),
                b"",
                AT_FDCWD,
                os.fsencode(_check_dir_path(m.target, "target")),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
            if res < 0:
                code = libc.errno()
                raise OSError(code, f"move_mount: {os.strerror(code)}")
        finally:
            os.close(int(mntfd))
    except OSError as err:
        detail = _fs_errors(fsfd)
        raise RuntimeFailedError(
            f"mount overlay at {m.target}: {err.strerror or err}"
            + (f" ({detail})" if detail else ""),
            argv=m.command_line().split(" "),
            returncode=err.errno or 0,
            stderr=detail,
        ) from err
    finally:
        os.close(fsfd)


def _mount_legacy(m: OverlayMount) -> None:
    data = m.option_string()
    if len(data.encode()) > MOUNT_DATA_MAX:
        raise RuntimeFailedError(
            f"mount overlay at {m.target}: {len(m.lowers)} layers need {len(data)} bytes of "
            f"mount options, more than mount(2) takes ({MOUNT_DATA_MAX}); this kernel has no "
            "lowerdir+ (Linux >= 6.8)",
            argv=m.command_line().split(" "),
        )
    res = libc.call().mount(
        b"overlay",
        os.fsencode(_check_dir_path(m.target, "target")),
        b"overlay",
        MS_NODEV,
        data.encode(),
    )
    if res != 0:
        err = libc.errno()
        raise RuntimeFailedError(
            f"mount overlay at {m.target}: {os.strerror(err)}",
            argv=m.command_line().split(" "),
            returncode=err,
        )


def bind_fd(fd: int, target: Path) -> None:
    """Bind-mount (recursively) the very object ``fd`` holds onto ``target``, made private so
    nothing mounted there later propagates back. /proc/self/fd/N is a magic link the kernel
    resolves to the opened object, not to whatever its path names now."""
    source = os.fsencode(f"/proc/self/fd/{fd}")
    where = os.fsencode(os.fspath(target))
    for src, flags in ((source, MS_BIND | MS_REC), (None, MS_PRIVATE | MS_REC)):
        if libc.call().mount(src, where, None, flags, None) != 0:
            err = libc.errno()
            raise RuntimeFailedError(
                f"bind mount at {target}: {os.strerror(err)}",
                argv=["mount", "--rbind", source.decode(), os.fspath(target)],
                returncode=err,
            )


def unmount(target: Path) -> bool:
    """Lazily unmount every mount stacked on target. Returns True if something was unmounted;
    a target that is not a mount point is not an error."""
    done = False
    for _ in range(8):
        if not is_mounted(target):
            return done
        res = libc.call().umount2(os.fsencode(os.fspath(target)), MNT_DETACH)
        if res != 0:
            err = libc.errno()
            if err == errno.EINVAL:  # not a mount point (any more)
                return done
            raise RuntimeFailedError(
                f"unmount {target}: {os.strerror(err)}",
                argv=["umount", "--lazy", os.fspath(target)],
                returncode=err,
            )
        done = True
    raise RuntimeFailedError(f"unmount {target}: still mounted after 8 unmounts")


# -- /proc/self/mountinfo -------------------------------------------------------------------


@dataclass(frozen=True)
class MountInfo:
    """One line of /proc/self/mountinfo (what findmnt shows)."""

    mount_id: int
    parent_id: int
    major_minor: str
    root: str
    mount_point: str
    mount_options: str
    fs_type: str
    source: str
    super_options: str
    line: str

    def findmnt(self) -> str:
        """A findmnt-like one-liner: TARGET SOURCE FSTYPE OPTIONS."""
        return (
            f"{self.mount_point} {self.source} {self.fs_type} "
            f"{self.mount_options},{self.super_options}"
        )


def _unescape(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 4 <= len(text) and text[i + 1 : i + 4].isdigit():
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def mountinfo() -> list[MountInfo]:
    """Every mount this process can see."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            pre, sep, post = line.rstrip("\n").partition(" - ")
            fields, tail = pre.split(" "), post.split(" ")
            if not sep or len(fields) < 6 or len(tail) < 3:
                continue
            out.append(
                MountInfo(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    major_minor=fields[2],
                    root=_unescape(fields[3]),
                    mount_point=_unescape(fields[4]),
                    mount_options=fields[5],
                    fs_type=tail[0],
                    source=_unescape(tail[1]),
                    super_options=" ".join(tail[2:]),
                    line=line.rstrip("\n"),
                )
            )
    return out


def _canonical(path: Path) -> str:
    return os.path.realpath(os.fspath(path))


def mounts_at(path: Path) -> list[MountInfo]:
    """The mounts whose mount point is path (the last one is on top)."""
    want = _canonical(path)
    return [m for m in mountinfo() if m.mount_point == want]


def is_mounted(path: Path) -> bool:
    return bool(mounts_at(path))
