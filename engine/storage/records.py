"""Container records: the states, what ``create`` was asked for (``CreateOptions``, checked
and merged with the image's config) and ``container.json`` (``ContainerRecord``).

Plain data: nothing here touches the state root (engine.storage.containers reads and writes
records).
Both classes keep the keys they do not know in ``extra`` and write them back unchanged, so a
record written by a newer version survives an older one.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidInputError
from engine.hostfs import securepath
from engine.storage.volumes import Volume

if TYPE_CHECKING:
    from engine.images.store import ImageRecord

# -- states ---------------------------------------------------------------------------------
CREATED = "created"  # storage allocated, record written
CONFIGURED = "configured"  # bundle/config.json written (engine.spec)
RUNNING = "running"
PAUSED = "paused"
EXITED = "exited"
ACTIVE_STATES = (RUNNING, PAUSED)

MAX_COMMAND_ITEMS = 256
MAX_ENV = 1024
MAX_DNS = 3  # what a resolv.conf uses
_IPV4_RE = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_ENV_KEY_RE = re.compile(r"^[^=\x00]{1,256}$")
_USER_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}(:[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63})?$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$")


# -- records --------------------------------------------------------------------------------
@dataclass(frozen=True)
class PortMapping:
    host_ip: str
    host_port: int  # 0 until reserved at create: "a port the policy allows"
    container_port: int
    protocol: str = "tcp"

    def to_dict(self) -> dict[str, Any]:
        return {
            "host_ip": self.host_ip,
            "host_port": self.host_port,
            "container_port": self.container_port,
            "protocol": self.protocol,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PortMapping:
        return cls(
            str(data["host_ip"]),
            int(data["host_port"]),
            int(data["container_port"]),
            str(data.get("protocol", "tcp")),
        )

    def netavark(self) -> dict[str, Any]:
        """netavark 1.4's PortMapping: every field required."""
        return {
            "host_ip": self.host_ip,
            "container_port": self.container_port,
            "host_port": self.host_port,
            "range": 1,
            "protocol": self.protocol,
        }

    def text(self) -> str:
        """As podman's ps PORTS column: 127.0.0.1:8080->80/tcp."""
        return f"{self.host_ip}:{self.host_port}->{self.container_port}/{self.protocol}"


def _known(cls: type[Any], data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}, {
        k: v for k, v in data.items() if k not in names
    }


@dataclass
class CreateOptions:
    """What ``create`` was asked for, merged with the image's config at create time (so these
    are the effective values: ``command`` is the image's Cmd unless given, ...)."""

    command: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    env: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""
    tty: bool = False
    interactive: bool = False
    volumes: list[Volume] = field(default_factory=list)
    hostname: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    # "none" (only loopback), "host", or a network's name ("bridge": the default network).
    # "none" for records of engines before networks; create gives the default network.
    network: str = "none"
    ports: list[PortMapping] = field(default_factory=list)  # -p, host ports reserved
    dns: list[str] = field(default_factory=list)  # --dns servers
    # Whose sandbox holds this container's host paths (engine.storage.sandbox); "" for an
    # admin's container, whose bind sources lie in the volume allowlist.
    sandbox: str = ""
    # Keys this version does not know (written by a newer one): kept and written back.
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(
            command=list(self.command),
            entrypoint=None if self.entrypoint is None else list(self.entrypoint),
            env=list(self.env),
            workdir=self.workdir,
            user=self.user,
            tty=self.tty,
            interactive=self.interactive,
            volumes=[v.to_dict() for v in self.volumes],
            hostname=self.hostname,
            labels=dict(self.labels),
            network=self.network,
            ports=[p.to_dict() for p in self.ports],
            dns=list(self.dns),
        )
        if self.sandbox:
            out["sandbox"] = self.sandbox
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CreateOptions:
        known, unknown = _known(cls, data)
        known.pop("extra", None)
        known["volumes"] = [Volume.from_dict(v) for v in known.get("volumes") or []]
        known["ports"] = [PortMapping.from_dict(p) for p in known.get("ports") or []]
        return cls(**known, extra=unknown)


@dataclass
class ContainerRecord:
    """container.json. Other modules may add keys: unknown keys are kept in ``extra`` and
    written back unchanged."""

    id: str
    name: str
    image_id: str
    image_name: str
    created: float = field(default_factory=time.time)
    node: str = ""
    options: CreateOptions = field(default_factory=CreateOptions)
    state: str = CREATED
    # chain ids of the image's layers, bottom to top (a snapshot: mounting needs no image).
    layers: list[str] = field(default_factory=list)
    # mounts by users (podman mount); the runtime's own mount; explorer holds (process ids).
    mount_count: int = 0
    runtime_mounted: bool = False
    mount_holders: list[int] = field(default_factory=list)
    pid: int = 0
    conmon_pid: int = 0
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str = ""
    spec_generated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if f.name == "options" else value
        copied: dict[str, Any] = json.loads(json.dumps(out))  # a deep copy, and proof of JSON
        return copied

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContainerRecord:
        known, unknown = _known(cls, data)
        known.pop("extra", None)
        known["options"] = CreateOptions.from_dict(dict(known.get("options") or {}))
        return cls(**known, extra=unknown)


@dataclass(frozen=True)
class ContainerPaths:
    root: Path
    upper: Path
    work: Path
    merged: Path
    bundle: Path
    userdata: Path

    @classmethod
    def under(cls, root: Path) -> ContainerPaths:
        """The layout of a container directory."""
        return cls(
            root=root,
            upper=root / "upper",
            work=root / "work",
            merged=root / "merged",
            bundle=root / "bundle",
            userdata=root / "userdata",
        )

    @property
    def record(self) -> Path:
        return self.root / "container.json"

    @property
    def config(self) -> Path:
        return self.bundle / "config.json"


# -- option checks and image defaults ---------------------------------------------------------
def _check_str_list(value: list[str], what: str, max_items: int) -> list[str]:
    if not isinstance(value, list) or len(value) > max_items:
        raise InvalidInputError(f"{what}: must be a list of at most {max_items} strings")
    for item in value:
        if not isinstance(item, str) or "\x00" in item or len(item) > 65536:
            raise InvalidInputError(f"{what}: every item must be a string without NUL")
    return list(value)


def check_options(options: CreateOptions) -> CreateOptions:
    """Refuse malformed create options (the volume policy is checked separately)."""
    _check_str_list(options.command, "command", MAX_COMMAND_ITEMS)
    if options.entrypoint is not None:
        _check_str_list(options.entrypoint, "entrypoint", MAX_COMMAND_ITEMS)
    _check_str_list(options.env, "env", MAX_ENV)
    for item in options.env:
        key = item.partition("=")[0]
        if "=" not in item or not _ENV_KEY_RE.match(key):
            raise InvalidInputError(f"env {item[:80]!r}: must be KEY=VALUE")
    if options.workdir and (not options.workdir.startswith("/") or "\x00" in options.workdir):
        raise InvalidInputError(f"workdir {options.workdir[:200]!r}: must be an absolute path")
    if options.workdir:
        securepath.check_unsafe(options.workdir)
        options.workdir = securepath.clean(options.workdir)
        if options.workdir == "/proc" or options.workdir.startswith("/proc/"):
            raise InvalidInputError("workdir: cannot be under /proc")
    if options.user and not _USER_RE.match(options.user):
        raise InvalidInputError(f"user {options.user[:80]!r}: must be NAME[:GROUP] or UID[:GID]")
    if options.hostname and not _HOSTNAME_RE.match(options.hostname):
        raise InvalidInputError(f"hostname {options.hostname[:80]!r}: not a valid host name")
    for key, value in options.labels.items():
        if not isinstance(key, str) or not isinstance(value, str) or len(key) > 256:
            raise InvalidInputError("labels: must map strings to strings")
    _check_str_list(options.dns, "dns", MAX_DNS)
    for server in options.dns:
        if not _IPV4_RE.fullmatch(server) or any(int(x) > 255 for x in server.split(".")):
            raise InvalidInputError(f"--dns {server[:80]!r}: an IPv4 address")
    return options


def apply_image_defaults(options: CreateOptions, image: ImageRecord) -> CreateOptions:
    """Merge the image's config as podman does: an explicit --entrypoint drops the image's Cmd;
    env from the image, overridden key by key; workdir and user from the image if not given."""
    config = image.config.get("config") or {}
    image_entry = [str(x) for x in (config.get("Entrypoint") or [])]
    image_cmd = [str(x) for x in (config.get("Cmd") or [])]
    if options.entrypoint is None:
        options.entrypoint = image_entry
        options.command = list(options.command) or image_cmd
    env: dict[str, str] = {}
    for item in [str(x) for x in (config.get("Env") or [])] + options.env:
        key, _, value = item.partition("=")
        env[key] = value
    options.env = [f"{k}={v}" for k, v in env.items()]
    options.workdir = options.workdir or securepath.clean(str(config.get("WorkingDir") or "/"))
    options.user = options.user or str(config.get("User") or "")
    return options
