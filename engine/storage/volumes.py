"""Volumes: ``-v SRC:DST[:OPTS]`` bind mounts, with host sources limited to the admin's
allowlist (``engine.config.volume_allowlist``).

A source is accepted only if it resolves *beneath* an allowlisted directory without any
symlink taking it out (openat2 RESOLVE_BENEATH: a symlink inside the allowed tree that points
elsewhere is refused, not followed). The resolved, canonical path is what gets recorded, so a
later swap of a symlink cannot redirect the mount (the spec helper checks it again at start).
Destinations are container paths: absolute, cleaned, never ``/`` nor under /proc, /sys or /dev
(security.md D3).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import EngineConfig
from engine.errors import InvalidInputError, NotFoundError, PolicyError
from engine.hostfs import securepath

# Options podman takes that mean something here; z/Z (SELinux relabel) are accepted and ignored.
_OPTIONS = {"ro", "rw", "z", "Z"}
_FORBIDDEN_DESTINATIONS = ("/proc", "/sys", "/dev")
MAX_VOLUMES = 64


@dataclass
class Volume:
    """A bind mount of a host directory or file into the container."""

    source: str
    destination: str
    read_only: bool = False
    requested: str = ""  # the source as a learner typed it, when it was mapped to a sandbox

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "destination": self.destination,
            "read_only": self.read_only,
        }
        if self.requested:
            out["requested"] = self.requested
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Volume:
        return cls(
            source=str(data.get("source", "")),
            destination=str(data.get("destination", "")),
            read_only=bool(data.get("read_only", False)),
            requested=str(data.get("requested", "")),
        )

    def spec(self) -> str:
        """The ``-v`` form: SRC:DST[:ro]."""
        return f"{self.source}:{self.destination}{':ro' if self.read_only else ''}"


def parse_volume(unsafe_spec: str) -> Volume:
    """Parse ``SRC:DST[:OPTS]`` (syntax only; see check_volume for the policy)."""
    if not isinstance(unsafe_spec, str) or not unsafe_spec or len(unsafe_spec) > 8192:
        raise InvalidInputError("volume: must be SRC:DST[:ro]")
    if "\x00" in unsafe_spec:
        raise InvalidInputError("volume: contains a NUL byte")
    parts = unsafe_spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise InvalidInputError(f"volume {unsafe_spec[:200]!r}: must be SRC:DST[:ro]")
    read_only = False
    if len(parts) == 3:
        for opt in parts[2].split(","):
            if opt not in _OPTIONS:
                raise InvalidInputError(
                    f"volume {unsafe_spec[:200]!r}: option {opt[:40]!r} is not supported "
                    "(ro, rw, z, Z)"
                )
            if opt == "ro":
                read_only = True
            elif opt == "rw":
                read_only = False
    return Volume(source=parts[0], destination=parts[1], read_only=read_only)


def check_destination(unsafe_destination: str) -> str:
    if not unsafe_destination.startswith("/"):
        raise InvalidInputError(f"volume destination {unsafe_destination[:200]!r}: not absolute")
    destination = securepath.clean(unsafe_destination)
    if destination == "/":
        raise InvalidInputError("volume destination: cannot be the container's /")
    for forbidden in _FORBIDDEN_DESTINATIONS:
        if destination == forbidden or destination.startswith(forbidden + "/"):
            raise PolicyError(
                f"volume destination {destination}: nothing may be mounted under {forbidden}",
                rule="volume-destination",
                field="volumes",
            )
    return destination


def check_source(config: EngineConfig, unsafe_source: str) -> str:
    """The canonical host path of a volume source, if it lies beneath an allowlisted
    directory without leaving it through a symlink. Raises PolicyError otherwise and
    NotFoundError when it does not exist."""
    if not unsafe_source.startswith("/"):
        raise InvalidInputError(
            f"volume source {unsafe_source[:200]!r}: must be an absolute host path "
            "(named volumes are not supported)"
        )
    source = securepath.clean(unsafe_source)
    if not config.volume_allowlist:
        raise PolicyError(
            f"volume source {source}: no host directory may be mounted (the volume allowlist "
            "is empty)",
            rule="volume-allowlist",
            field="volumes",
        )
    for allowed in config.volume_allowlist:
        base = securepath.clean(os.fspath(allowed))
        if source != base and not source.startswith(base.rstrip("/") + "/"):
            continue
        rel = source[len(base) :].lstrip("/") or "."
        try:
            base_fd = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError as err:
            raise NotFoundError(f"volume source {source}: {base} does not exist") from err
        try:
            fd = securepath.openat2(
                base_fd,
                rel,
                os.O_PATH,
                resolve=securepath.RESOLVE_BENEATH | securepath.RESOLVE_NO_MAGICLINKS,
            )
        except FileNotFoundError as err:
            raise NotFoundError(f"volume source {source}: no such file or directory") from err
        except OSError as err:
            if err.errno == errno.EXDEV:
                raise PolicyError(
                    f"volume source {source}: a symlink leads out of the allowed directory {base}",
                    rule="volume-allowlist",
                    field="volumes",
                ) from err
            raise InvalidInputError(f"volume source {source}: {err.strerror}") from err
        finally:
            os.close(base_fd)
        try:
            return os.readlink(securepath.fd_path(fd))
        finally:
            os.close(fd)
    allowed_text = ", ".join(os.fspath(p) for p in config.volume_allowlist)
    raise PolicyError(
        f"volume source {source}: not under an allowed directory ({allowed_text})",
        rule="volume-allowlist",
        field="volumes",
    )


def check_volume(config: EngineConfig, volume: Volume) -> Volume:
    """The volume with its source resolved (canonical) and destination cleaned."""
    return Volume(
        source=check_source(config, volume.source),
        destination=check_destination(volume.destination),
        read_only=volume.read_only,
        requested=volume.requested,
    )


def check_volumes(config: EngineConfig, volumes: list[Volume]) -> list[Volume]:
    if len(volumes) > MAX_VOLUMES:
        raise InvalidInputError(f"volumes: at most {MAX_VOLUMES}")
    out = [check_volume(config, v) for v in volumes]
    seen: set[str] = set()
    for v in out:
        if v.destination in seen:
            raise InvalidInputError(f"volume destination {v.destination}: given twice")
        seen.add(v.destination)
    return out


def allowlist(config: EngineConfig) -> list[Path]:
    return list(config.volume_allowlist)
