"""Containers: the records, their storage, and the service every other part goes through.

    <root>/containers/<id>/container.json    ContainerRecord (atomic writes)
    <root>/containers/<id>/upper/            the container's overlay upper dir (its changes)
    <root>/containers/<id>/work/             overlayfs work dir
    <root>/containers/<id>/merged/           the mount point (a real directory: runc refuses a
                                             symlinked rootfs)
    <root>/containers/<id>/bundle/           config.json lives here (written by engine.spec)
    <root>/containers/<id>/userdata/         conmon files (engine.runtime)

Contracts (other modules rely on them):
- ids are 64 lowercase hex; names are unique, ``[A-Za-z0-9][A-Za-z0-9_.-]*`` and generated
  (adjective_noun, like podman) when not given. ``Containers.get`` finds a container by full id,
  by name, or by a unique id prefix of 3+ hex digits.
- Every state change happens under ``Containers.lock(id)`` (a per-container file lock, re-entrant
  within one thread) and is written with ``Containers.save`` (atomic).
- Mounting has a count, as ``podman mount`` keeps one: ``mount`` adds one, ``unmount`` takes one
  (at 0 it is an InvalidStateError, "not mounted"), ``unmount(force=True)``/``unmount_all`` drop
  it to 0. The runtime's own use is a separate flag (``ensure_mounted``/``release_runtime_mount``)
  and the explorer's short uses are holds by process id (``open_rootfs``); the overlay is
  unmounted when none of the three holds it.
- ``remove`` runs ``Containers.pre_remove_hooks`` first (the runtime registers one that stops
  the container and deletes its runc state); without a hook, a running or paused container is
  refused.
- Events: ``publish_container_event(ctx_or_publisher, record, action)``.
- ``status_text(record)`` is the one place that words a state like ``podman ps`` does.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from engine import atomic, digests, locks, mounts, securepath
from engine.core import Engine
from engine.errors import (
    ContainerNotFoundError,
    EngineError,
    ImageNotFoundError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
)
from engine.events import EVENTS_GROUP, Publisher
from engine.store import ImageRecord, Store
from engine.validate import CONTAINER_ID_RE, NAME_RE
from engine.volumes import Volume, check_volumes

# -- states ---------------------------------------------------------------------------------
CREATED = "created"  # storage allocated, record written
CONFIGURED = "configured"  # bundle/config.json written (engine.spec)
RUNNING = "running"
PAUSED = "paused"
EXITED = "exited"
STATES = (CREATED, CONFIGURED, RUNNING, PAUSED, EXITED)
ACTIVE_STATES = (RUNNING, PAUSED)

MAX_COMMAND_ITEMS = 256
MAX_ENV = 1024
_ENV_KEY_RE = re.compile(r"^[^=\x00]{1,256}$")
_USER_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}(:[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63})?$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$")
_HEX_PREFIX_RE = re.compile(r"^[0-9a-f]{3,63}$")


# -- records --------------------------------------------------------------------------------
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
        )
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CreateOptions:
        known, unknown = _known(cls, data)
        known.pop("extra", None)
        known["volumes"] = [Volume.from_dict(v) for v in known.get("volumes") or []]
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

    @property
    def record(self) -> Path:
        return self.root / "container.json"

    @property
    def config(self) -> Path:
        return self.bundle / "config.json"


# -- status text (podman ps) ------------------------------------------------------------------
def human_duration(seconds: float) -> str:
    """go-units HumanDuration, which podman uses for "Up 5 seconds" and "3 minutes ago"."""
    secs = int(seconds)
    if secs < 1:
        return "Less than a second"
    if secs == 1:
        return "1 second"
    if secs < 60:
        return f"{secs} seconds"
    minutes = secs // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def status_text(record: ContainerRecord, now: float | None = None) -> str:
    """The STATUS column of ``podman ps -a``: "Created", "Up 5 seconds", "Paused",
    "Exited (0) 3 seconds ago"."""
    now = time.time() if now is None else now
    if record.state == RUNNING:
        return "Up " + human_duration(now - (record.started_at or now))
    if record.state == PAUSED:
        return "Paused"
    if record.state == EXITED:
        code = record.exit_code if record.exit_code is not None else 0
        return f"Exited ({code}) {human_duration(now - (record.finished_at or now))} ago"
    return "Created"


def created_text(record: ContainerRecord, now: float | None = None) -> str:
    """The CREATED column: "3 minutes ago"."""
    now = time.time() if now is None else now
    return human_duration(now - record.created) + " ago"


def effective_command(record: ContainerRecord) -> list[str]:
    """What runs: entrypoint followed by command."""
    return list(record.options.entrypoint or []) + list(record.options.command)


def _rfc3339(ts: float | None) -> str:
    if not ts:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def ps_json(record: ContainerRecord, now: float | None = None) -> dict[str, Any]:
    """One element of ``podman ps -a --format json`` (podman's field names)."""
    return {
        "Id": record.id,
        "Names": [record.name],
        "Image": record.image_name,
        "ImageID": record.image_id.removeprefix("sha256:"),
        "Command": effective_command(record),
        "Created": int(record.created),
        "CreatedAt": created_text(record, now),
        "State": record.state,
        "Status": status_text(record, now),
        "ExitCode": record.exit_code if record.exit_code is not None else 0,
        "Exited": record.state == EXITED,
        "ExitedAt": int(record.finished_at or 0),
        "StartedAt": int(record.started_at or 0),
        "Pid": record.pid,
        "Mounts": [v.destination for v in record.options.volumes],
        "Labels": dict(record.options.labels) or None,
        "Node": record.node,
        "MountCount": record.mount_count,
    }


def inspect_json(
    record: ContainerRecord, paths: ContainerPaths, lower_dirs: list[Path]
) -> dict[str, Any]:
    """``podman inspect`` of a container (podman's field names). ``lower_dirs`` bottom to
    top (they are printed top first, as overlayfs takes them)."""
    o = record.options
    return {
        "Id": record.id,
        "Created": _rfc3339(record.created),
        "Path": effective_command(record)[0] if effective_command(record) else "",
        "Args": effective_command(record)[1:],
        "State": {
            "Status": record.state,
            "Running": record.state == RUNNING,
            "Paused": record.state == PAUSED,
            "ExitCode": record.exit_code if record.exit_code is not None else 0,
            "Pid": record.pid,
            "ConmonPid": record.conmon_pid,
            "StartedAt": _rfc3339(record.started_at),
            "FinishedAt": _rfc3339(record.finished_at),
            "Error": record.error,
        },
        "Image": record.image_id.removeprefix("sha256:"),
        "ImageName": record.image_name,
        "Name": record.name,
        "MountCount": record.mount_count,
        "Node": record.node,
        "Config": {
            "Hostname": o.hostname,
            "Cmd": list(o.command),
            "Entrypoint": list(o.entrypoint or []),
            "Env": list(o.env),
            "WorkingDir": o.workdir,
            "User": o.user,
            "Tty": o.tty,
            "OpenStdin": o.interactive,
            "Labels": dict(o.labels) or None,
        },
        "Mounts": [
            {
                "Type": "bind",
                "Source": v.source,
                "Destination": v.destination,
                "RW": not v.read_only,
                "Options": ["rbind"],
                "Propagation": "rprivate",
            }
            for v in o.volumes
        ],
        "GraphDriver": {
            "Name": "overlay",
            "Data": {
                "LowerDir": ":".join(str(p) for p in reversed(lower_dirs)),
                "UpperDir": str(paths.upper),
                "WorkDir": str(paths.work),
                "MergedDir": str(paths.merged),
            },
        },
    }


# -- events ---------------------------------------------------------------------------------
def publish_container_event(
    ctx_or_publisher: Any, record: ContainerRecord, action: str, **extra: Any
) -> None:
    """Tell every listener (the web's /ws/events/) that something happened to a container:
    ``{"type": "engine.event", "kind": "container", "container": id, "name", "action",
    "state", "status", ...}``. Takes an rpc Context, a Publisher, or None (nothing sent)."""
    publisher: Publisher | None = getattr(ctx_or_publisher, "publisher", ctx_or_publisher)
    if publisher is None:
        return
    event = {
        "type": "engine.event",
        "kind": "container",
        "container": record.id,
        "name": record.name,
        "action": action,
        "state": record.state,
        "status": status_text(record),
        "mount_count": record.mount_count,
        "node": record.node,
        "time": time.time(),
    }
    event.update(extra)
    publisher.publish(EVENTS_GROUP, event)


# -- names ----------------------------------------------------------------------------------
def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_ADJECTIVES = _words(
    "admiring adoring affectionate agitated amazing angry awesome beautiful blissful bold "
    "boring brave busy charming clever compassionate competent condescending confident cool "
    "cranky crazy dazzling determined distracted dreamy eager ecstatic elastic elated elegant "
    "eloquent epic exciting fervent festive flamboyant focused friendly frosty funny gallant "
    "gifted goofy gracious great happy hardcore heuristic hopeful hungry infallible inspiring "
    "intelligent interesting jolly jovial keen kind laughing loving lucid magical modest musing "
    "mystifying naughty nervous nice nifty nostalgic objective optimistic peaceful pedantic "
    "pensive practical priceless quirky quizzical recursing relaxed reverent romantic sad "
    "serene sharp silly sleepy stoic strange stupefied suspicious sweet tender thirsty "
    "trusting unruffled upbeat vibrant vigilant vigorous wizardly wonderful xenodochial "
    "youthful zealous zen"
)
_NOUNS = _words(
    "agnesi albattani allen almeida archimedes ardinghelli aryabhata austin babbage banach "
    "bardeen bartik bassi bell bhabha bhaskara blackwell bohr booth borg bose boyd brahmagupta "
    "brattain brown cannon carson cartwright chandrasekhar chaplygin chatelet chatterjee "
    "cohen curie darwin davinci dewdney dhawan diffie dijkstra dirac driscoll dubinsky easley "
    "edison einstein elbakyan elgamal elion ellis engelbart euclid euler faraday fermat fermi "
    "feynman franklin galileo gauss germain goldberg goldstine goodall hamilton haslett "
    "hawking heisenberg hermann hodgkin hoover hopper hugle hypatia jackson jang jennings "
    "jepsen johnson joliot jones kalam kapitsa keller kepler khorana kilby kirch knuth "
    "kowalevski lalande lamarr lamport leakey leavitt lederberg lehmann lewin lichterman "
    "liskov lovelace lumiere mahavira margulis matsumoto maxwell mayer mccarthy mcclintock "
    "mclaren mclean mcnulty meitner mendel mendeleev meninsky merkle mestorf mirzakhani "
    "montalcini moore morse moser murdock napier nash neumann newton nightingale nobel noether "
    "northcutt noyce panini pare pascal pasteur payne perlman pike poincare poitras proskuriakova "
    "ptolemy raman ramanujan rhodes ride ritchie robinson roentgen rosalind rubin saha sammet "
    "sanderson satoshi shamir shannon shaw shirley shockley shtern sinoussi snyder solomon "
    "spence stonebraker sutherland swanson swartz swirles taussig tesla tharp thompson "
    "torvalds tu turing varahamihira vaughan villani visvesvaraya volhard wescoff wilbur wiles "
    "williams williamson wilson wing wozniak wright wu yalow yonath zhukovsky"
)


def generate_name(taken: set[str]) -> str:
    """adjective_noun, as podman (docker's namesgenerator) does; a number is added if needed."""
    for _ in range(64):
        name = f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_NOUNS)}"
        if name not in taken:
            return name
    while True:
        name = f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_NOUNS)}{secrets.randbelow(100)}"
        if name not in taken:
            return name


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


def image_candidates(unsafe_ref: str) -> list[str]:
    """Names to try for a short reference, as podman's short-name rules would find them:
    busybox -> busybox:latest, localhost/busybox:latest, docker.io/library/busybox:latest."""
    ref = unsafe_ref
    out = [ref]
    last = ref.rsplit("/", 1)[-1]
    if "@" not in ref and ":" not in last:
        ref = ref + ":latest"
        out.append(ref)
    first = ref.split("/", 1)[0]
    has_domain = "/" in ref and ("." in first or ":" in first or first == "localhost")
    if not has_domain:
        out.append("localhost/" + ref)
        out.append(("docker.io/library/" if "/" not in ref else "docker.io/") + ref)
    return list(dict.fromkeys(out))


# -- the service ----------------------------------------------------------------------------
RemoveHook = Callable[[Engine, ContainerRecord, bool], None]
SyncHook = Callable[[Engine, ContainerRecord], ContainerRecord]

_held = threading.local()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Containers:
    """The containers of one state root. ``engine.get(Containers)``."""

    # Called with (engine, record, force) before a container is removed, under its lock.
    pre_remove_hooks: ClassVar[list[RemoveHook]] = []
    # Called by readers (ps, inspect, the web's list) to bring a record up to date with reality
    # (the runtime registers one that checks conmon/runc); each returns the fresh record.
    sync_hooks: ClassVar[list[SyncHook]] = []

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dir = Path(engine.config.root) / "containers"
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.store = engine.get(Store)

    # -- paths and locks ----------------------------------------------------------------------
    def paths(self, container_id: str) -> ContainerPaths:
        if not isinstance(container_id, str) or not CONTAINER_ID_RE.match(container_id):
            raise InvalidInputError(f"container id {str(container_id)[:80]!r} is not valid")
        root = self.dir / container_id
        return ContainerPaths(
            root=root,
            upper=root / "upper",
            work=root / "work",
            merged=root / "merged",
            bundle=root / "bundle",
            userdata=root / "userdata",
        )

    @contextmanager
    def lock(self, container_id: str, timeout: float = 300.0) -> Iterator[None]:
        """Hold the container's lock (a file lock shared with the CLI). Re-entrant within a
        thread, so a helper that locks may call another that locks too."""
        self.paths(container_id)  # validates the id
        held: dict[str, int] = _held.__dict__.setdefault("ids", {})
        if held.get(container_id):
            held[container_id] += 1
            try:
                yield
            finally:
                held[container_id] -= 1
            return
        with locks.locked(
            Path(self.engine.config.root), "container", container_id, timeout=timeout
        ):
            held[container_id] = 1
            try:
                yield
            finally:
                held.pop(container_id, None)

    # -- records ------------------------------------------------------------------------------
    def load(self, container_id: str) -> ContainerRecord:
        """The record of a container by its full id (no lookup by name)."""
        try:
            data = atomic.read_json(self.paths(container_id).record)
        except FileNotFoundError as err:
            raise ContainerNotFoundError(
                f"container {container_id[:12]}: no such container"
            ) from err
        return ContainerRecord.from_dict(data)

    def save(self, record: ContainerRecord) -> None:
        """Write container.json atomically. The caller holds the lock."""
        atomic.write_json(self.paths(record.id).record, record.to_dict())

    def list(self) -> list[ContainerRecord]:
        """Every container, newest first. Unreadable records are skipped."""
        out = []
        for entry in os.scandir(self.dir):
            if not CONTAINER_ID_RE.match(entry.name):
                continue
            try:
                out.append(
                    ContainerRecord.from_dict(atomic.read_json(Path(entry.path) / "container.json"))
                )
            except (OSError, ValueError, TypeError):
                continue
        return sorted(out, key=lambda r: r.created, reverse=True)

    def get(self, unsafe_ref: str) -> ContainerRecord:
        """Find a container by full id, by name, or by a unique id prefix (3+ hex digits)."""
        if not isinstance(unsafe_ref, str) or not unsafe_ref or len(unsafe_ref) > 128:
            raise InvalidInputError("container: must be a name or id")
        if CONTAINER_ID_RE.match(unsafe_ref):
            try:
                return self.load(unsafe_ref)
            except ContainerNotFoundError:
                pass
        records = self.list()
        for r in records:
            if r.name == unsafe_ref:
                return r
        if _HEX_PREFIX_RE.match(unsafe_ref):
            found = [r for r in records if r.id.startswith(unsafe_ref)]
            if len(found) > 1:
                raise InvalidInputError(f"container id prefix {unsafe_ref} is ambiguous")
            if found:
                return found[0]
        raise ContainerNotFoundError(f"container {unsafe_ref[:80]}: no such container")

    def synced(self, record: ContainerRecord) -> ContainerRecord:
        """The record after every sync hook ran (unchanged without hooks). A failing hook is
        ignored: readers must still get an answer."""
        for hook in list(self.sync_hooks):
            try:
                record = hook(self.engine, record)
            except EngineError:
                continue
        return record

    # -- create -------------------------------------------------------------------------------
    def find_image(self, unsafe_ref: str) -> tuple[ImageRecord, str]:
        """The image and the name it was found by (or its first name)."""
        if not isinstance(unsafe_ref, str) or not unsafe_ref or len(unsafe_ref) > 512:
            raise InvalidInputError("image: must be a name or id")
        last: ImageNotFoundError | None = None
        for candidate in image_candidates(unsafe_ref):
            try:
                image = self.store.get_image(candidate)
            except ImageNotFoundError as err:
                last = err
                continue
            name = candidate if candidate in image.names else (image.names or [image.id])[0]
            return image, name
        raise ImageNotFoundError(f"image {unsafe_ref[:200]}: not known (pull it first)") from last

    def create(
        self,
        options: CreateOptions,
        image_ref: str,
        name: str = "",
        publisher: Publisher | None = None,
    ) -> ContainerRecord:
        """Create a container from an image: record + overlay dirs, state "created", nothing
        mounted. All or nothing: the directory is built under tmp/ and renamed into place."""
        check_options(options)
        options.volumes = check_volumes(self.engine.config, options.volumes)
        image, image_name = self.find_image(image_ref)
        for chain in image.layers:
            digests.check(chain, "layer")
            if not self.store.layer_diff(chain).is_dir():
                raise ImageNotFoundError(f"image {image_name}: layer {chain} is missing")
        apply_image_defaults(options, image)
        if name and not NAME_RE.match(name):
            raise InvalidInputError(
                f"name {name[:80]!r}: letters, digits, '_', '.', '-' (starting with a letter "
                "or digit), at most 128"
            )
        container_id = secrets.token_hex(32)
        options.hostname = options.hostname or container_id[:12]
        root = Path(self.engine.config.root)
        with locks.locked(root, "containers", "names"):
            taken = {r.name for r in self.list()}
            if name in taken:
                raise InvalidInputError(
                    f"name {name!r} is already in use by another container (remove it or "
                    "choose another name)"
                )
            name = name or generate_name(taken)
            record = ContainerRecord(
                id=container_id,
                name=name,
                image_id=image.id,
                image_name=image_name,
                node=self.engine.config.node,
                options=options,
                layers=list(image.layers),
            )
            self._build_dirs(record, image)
        publish_container_event(publisher, record, "create")
        return record

    def _build_dirs(self, record: ContainerRecord, image: ImageRecord) -> None:
        work = self.store.tmp_dir("container")
        try:
            work.chmod(0o700)
            upper = work / "upper"
            upper.mkdir(mode=0o755)
            # The container's / takes the upper dir's mode and owner: copy the image's.
            if image.layers:
                top = self.store.layer_diff(image.layers[-1])
                st = os.stat(top)
                os.chown(upper, st.st_uid, st.st_gid)
                upper.chmod(stat.S_IMODE(st.st_mode))
            for sub in ("work", "merged", "bundle", "userdata"):
                (work / sub).mkdir(mode=0o700)
            atomic.write_json(work / "container.json", record.to_dict())
            os.rename(work, self.paths(record.id).root)
            atomic.fsync_dir(self.dir)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    # -- mounting -----------------------------------------------------------------------------
    def lower_dirs(self, record: ContainerRecord) -> builtins.list[Path]:
        """The image layer dirs, bottom to top."""
        return [self.store.layer_diff(digests.check(c, "layer")) for c in record.layers]

    def overlay(self, record: ContainerRecord) -> mounts.OverlayMount:
        p = self.paths(record.id)
        return mounts.OverlayMount(
            lowers=tuple(reversed(self.lower_dirs(record))),
            upper=p.upper,
            work=p.work,
            target=p.merged,
        )

    def is_mounted(self, container_id: str) -> bool:
        return mounts.is_mounted(self.paths(container_id).merged)

    def _mount_now(self, record: ContainerRecord) -> None:
        p = self.paths(record.id)
        if mounts.is_mounted(p.merged):
            return
        for lower in self.lower_dirs(record):
            if not lower.is_dir():
                raise NotFoundError(
                    f"container {record.name}: image layer {lower.parent.name} is missing"
                )
        self.overlay(record).mount()

    def _unmount_if_unused(self, record: ContainerRecord) -> None:
        record.mount_holders = [p for p in record.mount_holders if _pid_alive(p)]
        if record.mount_count <= 0 and not record.runtime_mounted and not record.mount_holders:
            record.mount_count = 0
            mounts.unmount(self.paths(record.id).merged)

    def mount(self, container_id: str, publisher: Publisher | None = None) -> Path:
        """``podman mount``: mount the container's storage (if it is not) and add one to its
        mount count. Returns the merged dir."""
        with self.lock(container_id):
            record = self.load(container_id)
            self._mount_now(record)
            record.mount_count += 1
            self.save(record)
        publish_container_event(publisher, record, "mount")
        return self.paths(container_id).merged

    def unmount(
        self, container_id: str, force: bool = False, publisher: Publisher | None = None
    ) -> ContainerRecord:
        """``podman unmount``: take one from the mount count (all of it with force) and
        unmount the storage when nothing else (the runtime, the explorer) uses it."""
        with self.lock(container_id):
            record = self.load(container_id)
            if record.mount_count <= 0 and not force:
                raise InvalidStateError(
                    f"container {record.name} is not mounted",
                    current="unmounted",
                    wanted=("mounted",),
                )
            record.mount_count = 0 if force else record.mount_count - 1
            self._unmount_if_unused(record)
            self.save(record)
        publish_container_event(publisher, record, "unmount")
        return record

    def unmount_all(self, container_id: str) -> None:
        """Drop every use (users, runtime, explorer holds) and unmount. For removal and
        cleanup; the caller makes sure no process runs in it."""
        with self.lock(container_id):
            record = self.load(container_id)
            record.mount_count = 0
            record.runtime_mounted = False
            record.mount_holders = []
            mounts.unmount(self.paths(container_id).merged)
            self.save(record)

    def ensure_mounted(self, container_id: str) -> Path:
        """For the runtime: mount if needed and mark the runtime's own use, which the user's
        mount count does not see (no double counting however often it is called)."""
        with self.lock(container_id):
            record = self.load(container_id)
            self._mount_now(record)
            if not record.runtime_mounted:
                record.runtime_mounted = True
                self.save(record)
        return self.paths(container_id).merged

    def release_runtime_mount(self, container_id: str) -> None:
        """For the runtime, after the container stopped: drop its use; unmount if unused."""
        with self.lock(container_id):
            record = self.load(container_id)
            record.runtime_mounted = False
            self._unmount_if_unused(record)
            self.save(record)

    @contextmanager
    def open_rootfs(self, container_id: str) -> Iterator[securepath.Root]:
        """The merged root, mounted for as long as the block runs (a hold by this process if
        nobody else had it mounted), as a securepath.Root. The Root's descriptor is opened
        under the lock, so it refers to the overlay even if it is unmounted meanwhile."""
        paths = self.paths(container_id)
        held = False
        with self.lock(container_id):
            record = self.load(container_id)
            up = mounts.is_mounted(paths.merged)
            if not up or not (record.mount_count > 0 or record.runtime_mounted):
                self._mount_now(record)
                record.mount_holders = [p for p in record.mount_holders if _pid_alive(p)]
                record.mount_holders.append(os.getpid())
                self.save(record)
                held = True
            root = securepath.Root(paths.merged)
        try:
            yield root
        finally:
            root.close()
            if held:
                self._release_hold(container_id)

    def _release_hold(self, container_id: str) -> None:
        try:
            with self.lock(container_id):
                record = self.load(container_id)
                if os.getpid() in record.mount_holders:
                    record.mount_holders.remove(os.getpid())
                self._unmount_if_unused(record)
                self.save(record)
        except ContainerNotFoundError:
            pass  # removed meanwhile

    def reconcile_mounts(self) -> builtins.list[str]:
        """After an engine restart (or a reboot): make the records agree with the kernel.
        A record that says mounted with no mount behind it is reset; a mount nobody holds any
        more (a crashed explorer call) is unmounted. Returns the names it changed."""
        changed = []
        for listed in self.list():
            try:
                with self.lock(listed.id, timeout=10):
                    record = self.load(listed.id)
                    before = record.to_dict()
                    if not self.is_mounted(record.id):
                        record.mount_count = 0
                        record.runtime_mounted = False
                        record.mount_holders = []
                    else:
                        self._unmount_if_unused(record)
                    if record.to_dict() != before:
                        self.save(record)
                        changed.append(record.name)
            except (NotFoundError, locks.LockTimeoutError):
                continue
        return changed

    # -- remove -------------------------------------------------------------------------------
    def remove(
        self, container_id: str, force: bool = False, publisher: Publisher | None = None
    ) -> ContainerRecord:
        """``podman rm``: run the pre-remove hooks (the runtime stops it and deletes its runc
        state), refuse a container that still runs, unmount, delete its directory. The
        directory is first renamed away, so a crash leaves it either whole or gone."""
        with self.lock(container_id):
            record = self.load(container_id)
            for hook in list(self.pre_remove_hooks):
                hook(self.engine, record, force)
            record = self.load(container_id)
            if record.state in ACTIVE_STATES:
                raise InvalidStateError(
                    f"cannot remove container {record.name} as it is {record.state} - "
                    "stop it first",
                    current=record.state,
                    wanted=(CREATED, CONFIGURED, EXITED),
                )
            paths = self.paths(container_id)
            mounts.unmount(paths.merged)
            trash = self.store.tmp_dir("removed")
            os.rename(paths.root, trash / container_id)
            atomic.fsync_dir(self.dir)
        shutil.rmtree(trash, ignore_errors=True)
        lock_file = Path(self.engine.config.root) / "locks" / f"container-{container_id}.lock"
        try:
            lock_file.unlink()
        except FileNotFoundError:
            pass
        publish_container_event(publisher, record, "remove")
        return record

    # -- reads for views ------------------------------------------------------------------------
    def inspect(self, record: ContainerRecord) -> dict[str, Any]:
        return inspect_json(record, self.paths(record.id), self.lower_dirs(record))
