"""Every verb the engine serves: its name, its arguments (checked by engine.protocol.check on
the engine's side, whoever sent them) and its reply. The web calls these through
webui.engine_client.request; the CLI through engine.api.base.invoke; both reach the same
handler after the same check.

Replies that are our own shape are TypedDicts; podman's shapes (ps rows, inspect) and the
larger documents are ``Json``. ``Ref`` is a container's full id, name or unique id prefix.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import field
from typing import Annotated, Any, TypedDict

from engine.errors import InvalidInputError
from engine.protocol import CHANNEL_RE, MAX_COLS, MAX_ROWS, SPEC_MAX_BYTES, USER_NAME_RE
from engine.protocol.check import Convert, Items, Range, Text, Verb, check_str, wire

Json = dict[str, Any]

# -- limits the engine and its callers share -------------------------------------------------
REF_MAX = 128
IMAGE_REF_MAX = 512  # engine.registry.refs.MAX_REF
PATH_MAX_LEN = 65536  # longer is refused by securepath with a clear message anyway
MAX_VIEW = 256 * 1024  # bytes of a file shown (and editable) in one message
MAX_WRITE = 384 * 1024  # one fs.write (the editor); bigger files go through an upload
MAX_LIMIT = 2000  # entries per listing page
DEFAULT_LIMIT = 500
MAX_CHUNK = 448 * 1024  # largest upload chunk accepted
MAX_STOP_TIMEOUT = 3600
MAX_EXEC_TIMEOUT = 600
LOG_LIMIT = 1024 * 1024
JOB_RE = re.compile(r"^[0-9a-f]{16}$")
LANE_RE = re.compile(r"^gantry:bulk:[A-Za-z0-9_-]{16,64}$")


def _octal_mode(key: str, raw: Any) -> int:
    if isinstance(raw, str):
        try:
            value = int(raw, 8)
        except ValueError as err:
            raise InvalidInputError(f"{key}: {raw[:20]!r} is not an octal mode") from err
    elif isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    else:
        raise InvalidInputError(f"{key}: an octal string like '0755' or an integer")
    if not 0 <= value <= 0o7777:
        raise InvalidInputError(f"{key}: must be between 0000 and 7777")
    return value


def _chunk(key: str, raw: Any) -> bytes:
    if isinstance(raw, bytes | bytearray):
        data = bytes(raw)
    elif isinstance(raw, str):
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as err:
            raise InvalidInputError(f"{key}: not base64") from err
    else:
        raise InvalidInputError(f"{key}: bytes or base64")
    if len(data) > MAX_CHUNK:
        raise InvalidInputError(f"{key}: at most {MAX_CHUNK} bytes per chunk")
    return data


def _signal(key: str, raw: Any) -> str | int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    return check_str(key, raw, Text(32))


Ref = Annotated[str, Text(REF_MAX)]
ImageRef = Annotated[str, Text(IMAGE_REF_MAX)]
FsPath = Annotated[str, Text(PATH_MAX_LEN)]
Mode = Annotated[int, Convert(_octal_mode)]
Upload = Annotated[str, Text(64)]
Timeout = Annotated[int, Range(0, MAX_STOP_TIMEOUT)]
Commands = Annotated[list[str], Items(256)]


@wire
class NoArgs:
    pass


@wire
class Id:
    id: Ref


# -- containers: storage ---------------------------------------------------------------------
@wire
class Create:
    image: ImageRef
    name: Annotated[str, Text(REF_MAX)] = ""
    command: Commands = field(default_factory=list)
    entrypoint: Commands | None = None  # None: the image's; []: none
    env: Annotated[list[str], Items(1024)] = field(default_factory=list)
    workdir: Annotated[str, Text(4096)] = ""
    user: Annotated[str, Text(130)] = ""
    tty: bool = False
    interactive: bool = False
    volumes: Annotated[list[str], Items(64)] = field(default_factory=list)
    hostname: Annotated[str, Text(64)] = ""
    # "": the engine's default (policy.network.default: the default bridge network); none,
    # host, bridge, or a network's name
    network: Annotated[str, Text(64)] = ""
    publish: Annotated[list[str], Items(64, 64)] = field(default_factory=list)  # -p
    dns: Annotated[list[str], Items(3, 64)] = field(default_factory=list)


@wire
class ListContainers:
    ids: Annotated[list[str], Items(10000, 64)] | None = None  # None: all


@wire
class Force:
    id: Ref
    force: bool = False


class Mounted(TypedDict):
    path: str
    mount_count: int


class Unmounted(TypedDict):
    mount_count: int
    mounted: bool


class Change(TypedDict):
    kind: str
    path: str


class Removed(TypedDict):
    id: str
    name: str


CONTAINER_CREATE: Verb[Create, Json] = Verb("container.create", Create, "containers")
CONTAINER_LIST: Verb[ListContainers, list[Json]] = Verb(
    "container.list", ListContainers, "containers"
)
CONTAINER_INSPECT: Verb[Id, Json] = Verb("container.inspect", Id, "containers")
CONTAINER_MOUNT: Verb[Id, Mounted] = Verb("container.mount", Id, "containers")
CONTAINER_UNMOUNT: Verb[Force, Unmounted] = Verb("container.unmount", Force, "containers")
CONTAINER_DIFF: Verb[Id, list[Change]] = Verb("container.diff", Id, "containers")
CONTAINER_REMOVE: Verb[Force, Removed] = Verb("container.remove", Force, "containers")
CONTAINER_STORAGE: Verb[Id, Json] = Verb("container.storage", Id, "containers")


# -- containers: runtime ---------------------------------------------------------------------
@wire
class Stop:
    id: Ref
    timeout: Timeout = 10


@wire
class Kill:
    id: Ref
    signal: Annotated[str | int, Convert(_signal)] = "KILL"


@wire
class Logs:
    id: Ref
    cursor: Annotated[str, Text(80)] | None = None  # an earlier answer's: only what came since
    timestamps: bool = False
    tail_bytes: Annotated[int, Range(1, 64 * 1024 * 1024)] | None = None
    limit: Annotated[int, Range(1024, 16 * LOG_LIMIT)] = LOG_LIMIT


@wire
class ExecRun:
    id: Ref
    command: Annotated[list[str], Items(256, 65536)] = field(default_factory=list)
    env: Annotated[list[str], Items(256)] = field(default_factory=list)
    workdir: Annotated[str, Text(4096)] = ""
    user: Annotated[str, Text(256)] = ""
    timeout: Annotated[int, Range(1, MAX_EXEC_TIMEOUT)] = 60


class Summary(TypedDict):
    """What every runtime verb answers: the record's run facts, worded as podman does."""

    id: str
    name: str
    state: str
    status: str
    pid: int
    conmon_pid: int
    exit_code: int | None
    started_at: float | None
    finished_at: float | None
    error: str
    tty: bool


class State(Summary):
    ps: Json
    runc: Json | None
    exec_sessions: int
    oom_killed: bool
    log_path: str


class LogChunk(TypedDict):
    data: str
    cursor: str
    truncated: bool
    more: bool
    state: str
    status: str


class Process(TypedDict):
    pid: int
    cmd: str


class Processes(TypedDict):
    processes: list[Process]


class ExecResult(TypedDict):
    exit_code: int
    stdout: str
    stderr: str
    truncated: bool


CONTAINER_START: Verb[Id, Summary] = Verb("container.start", Id, "runtime")
CONTAINER_STOP: Verb[Stop, Summary] = Verb("container.stop", Stop, "runtime")
CONTAINER_KILL: Verb[Kill, Summary] = Verb("container.kill", Kill, "runtime")
CONTAINER_PAUSE: Verb[Id, Summary] = Verb("container.pause", Id, "runtime")
CONTAINER_RESUME: Verb[Id, Summary] = Verb("container.resume", Id, "runtime")
CONTAINER_RESTART: Verb[Stop, Summary] = Verb("container.restart", Stop, "runtime")
CONTAINER_STATE: Verb[Id, State] = Verb("container.state", Id, "runtime")
CONTAINER_LOGS: Verb[Logs, LogChunk] = Verb("container.logs", Logs, "runtime")
CONTAINER_TOP: Verb[Id, Processes] = Verb("container.top", Id, "runtime")
EXEC_RUN: Verb[ExecRun, ExecResult] = Verb("exec.run", ExecRun, "runtime")


# -- files -----------------------------------------------------------------------------------
@wire
class At:
    id: Ref
    path: FsPath


@wire
class FsList:
    id: Ref
    path: FsPath
    offset: Annotated[int, Range(0, 10_000_000)] = 0
    limit: Annotated[int, Range(1, MAX_LIMIT)] = DEFAULT_LIMIT
    deleted: bool = True  # list the whiteouts of the upper dir too


@wire
class FsStat:
    id: Ref
    path: FsPath
    follow: bool = False


@wire
class FsRead:
    id: Ref
    path: FsPath
    limit: Annotated[int, Range(0, MAX_VIEW)] = MAX_VIEW


@wire
class FsWrite:
    id: Ref
    path: FsPath
    content: Annotated[str, Text(MAX_WRITE)] = ""
    token: Annotated[str, Text(200)] | None = None  # fs.read's: refused if the file changed
    create: bool = False


@wire
class FsMkdir:
    id: Ref
    path: FsPath
    parents: bool = False
    mode: Mode = 0o755


@wire
class FsDelete:
    id: Ref
    path: FsPath
    recursive: bool = False


@wire
class FsRename:
    id: Ref
    path: FsPath
    to: FsPath


@wire
class FsChmod:
    id: Ref
    path: FsPath
    mode: Mode


@wire
class FsDownload:
    id: Ref
    path: FsPath
    lane: Annotated[str, Text(100, LANE_RE)] | None = None  # a Redis list for the chunks


@wire
class UploadBegin:
    id: Ref
    path: FsPath
    size: Annotated[int, Range(0, 1 << 50)]
    overwrite: bool = True
    mode: Mode | None = None


@wire
class UploadChunk:
    upload: Upload
    offset: Annotated[int, Range(0, 1 << 50)]
    data: Annotated[bytes, Convert(_chunk)]


@wire
class UploadId:
    upload: Upload


class Downloaded(TypedDict):
    kind: str
    name: str
    size: int
    seconds: float
    mib_per_s: float
    lane: bool


FS_LIST: Verb[FsList, Json] = Verb("fs.list", FsList, "files")
FS_STAT: Verb[FsStat, Json] = Verb("fs.stat", FsStat, "files")
FS_READ: Verb[FsRead, Json] = Verb("fs.read", FsRead, "files")
FS_WRITE: Verb[FsWrite, Json] = Verb("fs.write", FsWrite, "files")
FS_TOUCH: Verb[At, Json] = Verb("fs.touch", At, "files")
FS_MKDIR: Verb[FsMkdir, Json] = Verb("fs.mkdir", FsMkdir, "files")
FS_DELETE: Verb[FsDelete, Json] = Verb("fs.delete", FsDelete, "files")
FS_RENAME: Verb[FsRename, Json] = Verb("fs.rename", FsRename, "files")
FS_CHMOD: Verb[FsChmod, Json] = Verb("fs.chmod", FsChmod, "files")
FS_DOWNLOAD: Verb[FsDownload, Downloaded] = Verb("fs.download", FsDownload, "files")
FS_UPLOAD_BEGIN: Verb[UploadBegin, Json] = Verb("fs.upload_begin", UploadBegin, "files")
FS_UPLOAD_CHUNK: Verb[UploadChunk, Json] = Verb("fs.upload_chunk", UploadChunk, "files")
FS_UPLOAD_COMMIT: Verb[UploadId, Json] = Verb("fs.upload_commit", UploadId, "files")
FS_UPLOAD_ABORT: Verb[UploadId, Json] = Verb("fs.upload_abort", UploadId, "files")


# -- images and registries -------------------------------------------------------------------
@wire
class Pull:
    ref: ImageRef
    platform: Annotated[str, Text(100)] = ""
    tls_verify: bool | None = None  # None: the registry's setting


@wire
class Pulls:
    job: Annotated[str, Text(16, JOB_RE)] | None = None  # None: every job


@wire
class Image:
    image: ImageRef


@wire
class RemoveImage:
    image: ImageRef
    force: bool = False


@wire
class Load:
    path: Annotated[str, Text(4096)]  # inside <root>/imports (the web is not root)
    platform: Annotated[str, Text(100)] = ""


@wire
class Login:
    registry: Annotated[str, Text(255)]
    username: Annotated[str, Text(256)]
    password: Annotated[str, Text(4096)]
    tls_verify: bool = True


@wire
class Registry:
    registry: Annotated[str, Text(255)]


class LoggedIn(TypedDict):
    registry: str
    username: str


class LoggedOut(TypedDict):
    removed: bool


IMAGE_PULL: Verb[Pull, Json] = Verb("image.pull", Pull, "images")
IMAGE_PULLS: Verb[Pulls, list[Json]] = Verb("image.pulls", Pulls, "images")
IMAGE_LIST: Verb[NoArgs, list[Json]] = Verb("image.list", NoArgs, "images")
IMAGE_INSPECT: Verb[Image, Json] = Verb("image.inspect", Image, "images")
IMAGE_REMOVE: Verb[RemoveImage, Json] = Verb("image.remove", RemoveImage, "images")
IMAGE_LOAD: Verb[Load, list[Json]] = Verb("image.load", Load, "images")
REGISTRY_LOGIN: Verb[Login, LoggedIn] = Verb("registry.login", Login, "images")
REGISTRY_LOGOUT: Verb[Registry, LoggedOut] = Verb("registry.logout", Registry, "images")
REGISTRY_LIST: Verb[NoArgs, list[LoggedIn]] = Verb("registry.list", NoArgs, "images")


# -- config.json -----------------------------------------------------------------------------
@wire
class SpecText:
    id: Ref
    text: Annotated[str, Text(SPEC_MAX_BYTES)]


SPEC_GENERATE: Verb[Id, Json] = Verb("spec.generate", Id, "spec")
SPEC_GET: Verb[Id, Json] = Verb("spec.get", Id, "spec")
SPEC_PUT: Verb[SpecText, Json] = Verb("spec.put", SpecText, "spec")
SPEC_VALIDATE: Verb[SpecText, Json] = Verb("spec.validate", SpecText, "spec")
SPEC_RESET: Verb[Id, Json] = Verb("spec.reset", Id, "spec")
SPEC_DIFF: Verb[Id, Json] = Verb("spec.diff", Id, "spec")
SPEC_POLICY: Verb[NoArgs, Json] = Verb("spec.policy", NoArgs, "spec")
SPEC_META: Verb[NoArgs, Json] = Verb("spec.meta", NoArgs, "spec")


# -- terminals -------------------------------------------------------------------------------
@wire
class Attach:
    container: Ref
    viewer: Annotated[str, Text(200, CHANNEL_RE)]
    exec: Annotated[str, Text(64)] | None = None  # an exec shell's id; None: the console


@wire
class ExecCreate:
    container: Ref
    command: Commands = field(default_factory=list)  # []: the first of bash, sh
    user: Annotated[str, Text(256)] = ""
    rows: Annotated[int, Range(1, MAX_ROWS)] = 24
    cols: Annotated[int, Range(1, MAX_COLS)] = 80


@wire
class Container:
    container: Ref


TERM_ATTACH: Verb[Attach, Json] = Verb("term.attach", Attach, "terminal")
EXEC_CREATE: Verb[ExecCreate, Json] = Verb("exec.create", ExecCreate, "terminal")
EXEC_TRANSCRIPTS: Verb[Container, list[Json]] = Verb("exec.transcripts", Container, "terminal")
EXEC_LIST: Verb[Container, list[Json]] = Verb("exec.list", Container, "terminal")


# -- the lab and the node --------------------------------------------------------------------
@wire
class LabCheck:
    image: ImageRef
    container: Annotated[str, Text(REF_MAX)] = ""


@wire
class VolumeTouch:
    id: Ref
    destination: Annotated[str, Text(4096)]
    name: Annotated[str, Text(255)]


class Touched(TypedDict):
    path: str


@wire
class Sandbox:
    name: Annotated[str, Text(32, USER_NAME_RE)]


class Cleared(TypedDict):
    path: str
    existed: bool


@wire
class SandboxPath:
    path: Annotated[str, Text(4096)]  # as a learner types a bind source: /mnt/on


class SandboxEntry(TypedDict):
    path: str  # as the learner sees it: /mnt/on
    kind: str  # dir, file, link, other
    size: int


class DiskUse(TypedDict):
    name: str  # whose
    used: int  # bytes their sandbox and their containers' upper dirs hold
    quota: int  # bytes they may hold (engine/storage/quotas.py); 0: no quota
    complete: bool  # False: too many files to count them all, used is at least this


class SandboxListing(TypedDict):
    root: str  # the real host directory
    entries: list[SandboxEntry]
    truncated: bool
    disk: DiskUse


@wire
class SandboxUsage:
    names: Annotated[list[str], Items(1000, 32)]
    role: Annotated[str, Text(16)] = "learner"  # whose quota they are held to


LAB_CHECK: Verb[LabCheck, Json] = Verb("lab.check", LabCheck, "lab")
SANDBOX_LIST: Verb[NoArgs, SandboxListing] = Verb("sandbox.list", NoArgs, "lab")
SANDBOX_TOUCH: Verb[SandboxPath, SandboxEntry] = Verb("sandbox.touch", SandboxPath, "lab")
SANDBOX_USAGE: Verb[SandboxUsage, list[DiskUse]] = Verb("sandbox.usage", SandboxUsage, "lab")
LAB_CLEAR_SANDBOX: Verb[Sandbox, Cleared] = Verb("lab.clear_sandbox", Sandbox, "lab")
LAB_STEPS: Verb[Id, Json] = Verb("lab.steps", Id, "lab")
LAB_VOLUME_TOUCH: Verb[VolumeTouch, Touched] = Verb("lab.volume_touch", VolumeTouch, "lab")


# -- networks ---------------------------------------------------------------------------------
@wire
class NetworkName:
    name: Annotated[str, Text(64)]


@wire
class CreateNetwork:
    name: Annotated[str, Text(64)]
    subnet: Annotated[str, Text(64)] = ""
    gateway: Annotated[str, Text(64)] = ""
    bridge: Annotated[str, Text(64)] = ""
    internal: bool = False
    dns: bool = True


NETWORK_CREATE: Verb[CreateNetwork, Json] = Verb("network.create", CreateNetwork, "network")
NETWORK_LIST: Verb[NoArgs, list[Json]] = Verb("network.list", NoArgs, "network")
NETWORK_INSPECT: Verb[NetworkName, Json] = Verb("network.inspect", NetworkName, "network")
NETWORK_REMOVE: Verb[NetworkName, Json] = Verb("network.remove", NetworkName, "network")
# A container's network as the Network tab shows it (engine.network.show)
CONTAINER_NETWORK: Verb[Id, Json] = Verb("container.network", Id, "network")
NODE_INFO: Verb[NoArgs, Json] = Verb("node.info", NoArgs, "node")
NODE_PING: Verb[NoArgs, str] = Verb("node.ping", NoArgs, "node")

VERBS: dict[str, Verb[Any, Any]] = {
    v.name: v for v in list(globals().values()) if isinstance(v, Verb)
}
