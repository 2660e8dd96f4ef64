"""Generation: image config + create options + the container's user database + host facts +
engine paths -> an OCI runtime spec (config.json) as a dict. A pure function: no file, clock
or environment is read here (the service gathers the inputs), so the same inputs always give
the same spec and tests can compare it with podman's field by field.

What follows podman 4.3.1 (checked with ``podman init``):
  process.args   Entrypoint + Cmd; a command replaces Cmd; --entrypoint replaces Entrypoint
                 and drops the image's Cmd (a command given with it is kept)
  process.env    PATH (default), TERM=xterm, container=..., then the image's Env, then -e,
                 each later one replacing an earlier key in place; HOME from the user's passwd
                 entry and HOSTNAME, unless already set
  process.cwd    -w, else the image's WorkingDir, else /
  process.user   resolved from the container's /etc/passwd and /etc/group (users.py)
  capabilities   the default 11; root gets bounding+effective+permitted, others bounding only
  rlimits        --ulimit values, else podman's defaults, clamped to the host's hard limits
  hostname       -h/--hostname, else the first 12 characters of the container id
  mounts         podman's default mounts, /etc/hostname and /etc/hosts bound from userdata,
                 then the volumes (rbind, rprivate, ro or rw), parents before children
  linux          namespaces, masked/readonly paths, seccomp, device deny-all, pids limit 2048,
                 ping_group_range sysctl

Deliberate differences (each listed again in the oracle test): noNewPrivileges is true; a
cgroup namespace is added; /dev/shm is runc's own tmpfs; no /run/.containerenv; container=gantry;
rlimit defaults clamped; our own seccomp profile; our cgroupsPath and annotations.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidInputError
from engine.hostfs.securepath import clean
from engine.spec import defaults
from engine.spec.seccomp import default_profile
from engine.spec.users import additional_gids, resolve_user

UINT64_MAX = 2**64 - 1

# --ulimit names (podman/docker) -> OCI rlimit types.
ULIMIT_NAMES: dict[str, str] = {
    name: f"RLIMIT_{name.upper()}"
    for name in (
        "as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
        "nproc", "rss", "rtprio", "rttime", "sigpending", "stack",
    )
}  # fmt: skip


@dataclass(frozen=True)
class VolumeMount:
    source: str
    destination: str
    read_only: bool = False


@dataclass(frozen=True)
class SpecOptions:
    """The create options that shape the spec (podman's flags in the comments)."""

    command: tuple[str, ...] = ()  # [CMD...]; empty = the image's Cmd
    entrypoint: tuple[str, ...] | None = None  # --entrypoint; None = the image's; () = none
    env: tuple[str, ...] = ()  # -e K=V (entries without '=' are dropped)
    workdir: str = ""  # -w
    user: str = ""  # -u USER[:GROUP]
    tty: bool = False  # -t
    interactive: bool = False  # -i (conmon's business; recorded for the runtime)
    hostname: str = ""  # -h
    volumes: tuple[VolumeMount, ...] = ()  # -v SRC:DST[:ro]
    ulimits: tuple[str, ...] = ()  # --ulimit nofile=1024:1024
    memory: int | None = None  # -m, bytes
    cpus: float | None = None  # --cpus
    pids_limit: int | None = None  # --pids-limit


@dataclass(frozen=True)
class HostFacts:
    machine: str  # platform.machine()
    rlimits_hard: Mapping[str, int] = field(default_factory=dict)  # RLIMIT_X -> hard (uint64)


@dataclass(frozen=True)
class EnginePaths:
    root_path: str  # the merged dir (a real directory)
    cgroups_path: str
    hostname_file: str = ""  # userdata/hostname, bind-mounted at /etc/hostname when set
    hosts_file: str = ""  # userdata/hosts, bind-mounted at /etc/hosts when set
    resolv_file: str = ""  # userdata/resolv.conf, bind-mounted at /etc/resolv.conf when set
    # The network namespace: "" a new one (loopback only), "host" the host's (no entry), else
    # the path of the one the engine makes at start (engine.network.netns).
    netns: str = ""


@dataclass(frozen=True)
class SpecInputs:
    container_id: str
    image_config: Mapping[str, Any]  # the image config's "config" object (Entrypoint, Cmd, ...)
    options: SpecOptions
    passwd: bytes | None  # the container's /etc/passwd (None: no such file)
    group: bytes | None
    host: HostFacts
    paths: EnginePaths
    name: str = ""
    image_id: str = ""


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInputError(f"image config: {what}: must be a list of strings")
    return list(value)


def process_args(image: Mapping[str, Any], options: SpecOptions) -> list[str]:
    """Entrypoint/Cmd as podman combines them."""
    if options.entrypoint is not None:
        entrypoint = [a for a in options.entrypoint if a != ""] if options.entrypoint else []
        cmd = list(options.command)
    else:
        entrypoint = _str_list(image.get("Entrypoint"), "Entrypoint")
        cmd = list(options.command) or _str_list(image.get("Cmd"), "Cmd")
    args = entrypoint + cmd
    if not args:
        raise InvalidInputError(
            "no command or entrypoint provided, and no CMD or ENTRYPOINT from image"
        )
    return args


def _set_env(env: dict[str, str], entry: str) -> None:
    key, sep, value = entry.partition("=")
    if not sep or not key or "\x00" in entry:
        return  # "-e NAME" (take it from the host) is resolved by the caller, or dropped
    env[key] = value


def process_env(
    image: Mapping[str, Any], options: SpecOptions, home: str, hostname: str
) -> list[str]:
    env: dict[str, str] = {}
    for entry in (
        f"PATH={defaults.DEFAULT_PATH}",
        "TERM=xterm",
        f"container={defaults.CONTAINER_ENV}",
    ):
        _set_env(env, entry)
    for entry in _str_list(image.get("Env"), "Env"):
        _set_env(env, entry)
    for entry in options.env:
        _set_env(env, entry)
    if "HOME" not in env and home:
        env["HOME"] = home
    if "HOSTNAME" not in env:
        env["HOSTNAME"] = hostname
    return [f"{k}={v}" for k, v in env.items()]


def process_cwd(image: Mapping[str, Any], options: SpecOptions) -> str:
    if options.workdir:
        if not options.workdir.startswith("/"):
            raise InvalidInputError(f"workdir {options.workdir[:200]!r}: must be an absolute path")
        return clean(options.workdir)
    workdir = image.get("WorkingDir")
    if isinstance(workdir, str) and workdir:
        return clean(workdir)  # relative image workdirs are taken from / (as Docker does)
    return "/"


def _rlimit_value(text: str, what: str) -> int:
    if text == "-1" or text == "unlimited":
        return UINT64_MAX
    if not text.isdigit() or len(text) > 20 or int(text) > UINT64_MAX:
        raise InvalidInputError(f"ulimit {what}: {text[:40]!r} is not a number")
    return int(text)


def rlimits(options: SpecOptions, host: HostFacts) -> list[dict[str, Any]]:
    """--ulimit values (checked against the host's hard limits), then the defaults for
    nofile and nproc clamped to the host's hard limits."""
    chosen: dict[str, tuple[int, int]] = {}
    for unsafe in options.ulimits:
        name, sep, values = unsafe.partition("=")
        kind = ULIMIT_NAMES.get(name)
        if kind is None or not sep:
            raise InvalidInputError(f"ulimit {unsafe[:60]!r}: expected NAME=SOFT[:HARD]")
        soft_text, _, hard_text = values.partition(":")
        soft = _rlimit_value(soft_text, name)
        hard = _rlimit_value(hard_text or soft_text, name)
        if soft > hard:
            raise InvalidInputError(f"ulimit {name}: soft limit {soft} is above hard limit {hard}")
        host_hard = host.rlimits_hard.get(kind, UINT64_MAX)
        if hard > host_hard:
            raise InvalidInputError(
                f"ulimit {name}: hard limit {hard} is above the host's hard limit {host_hard}"
            )
        chosen[kind] = (soft, hard)
    out = [{"type": k, "hard": h, "soft": s} for k, (s, h) in chosen.items()]
    for kind, default in defaults.RLIMIT_DEFAULTS.items():
        if kind not in chosen:
            value = min(default, host.rlimits_hard.get(kind, UINT64_MAX))
            out.append({"type": kind, "hard": value, "soft": value})
    return out


def _volume_mounts(volumes: Sequence[VolumeMount]) -> list[dict[str, Any]]:
    out = []
    for vol in volumes:
        if not vol.source.startswith("/") or not vol.destination.startswith("/"):
            raise InvalidInputError(
                f"volume {vol.source[:100]}:{vol.destination[:100]}: paths must be absolute"
            )
        out.append(
            {
                "destination": clean(vol.destination),
                "type": "bind",
                "source": vol.source,
                "options": ["ro" if vol.read_only else "rw", "rprivate", "rbind"],
            }
        )
    # Parents before children, whatever order they were given in (a stable sort by depth).
    return sorted(out, key=lambda m: m["destination"].count("/") if m["destination"] != "/" else 0)


def mounts(paths: EnginePaths, volumes: Sequence[VolumeMount]) -> list[dict[str, Any]]:
    out = defaults.system_mounts()
    for destination, source in (
        ("/etc/hostname", paths.hostname_file),
        ("/etc/hosts", paths.hosts_file),
        ("/etc/resolv.conf", paths.resolv_file),
    ):
        if source:
            out.append(
                {
                    "destination": destination,
                    "type": "bind",
                    "source": source,
                    "options": ["bind", "rprivate"],
                }
            )
    return out + _volume_mounts(volumes)


def resources(options: SpecOptions) -> dict[str, Any]:
    out: dict[str, Any] = {
        "devices": [{"allow": False, "access": "rwm"}],
        "pids": {"limit": options.pids_limit or defaults.PIDS_LIMIT},
    }
    if options.memory:
        out["memory"] = {"limit": options.memory}
    if options.cpus:
        period = 100000
        out["cpu"] = {"quota": int(options.cpus * period), "period": period}
    return out


def spec_annotations(inputs: SpecInputs) -> dict[str, str]:
    out = {"io.gantry.container.id": inputs.container_id}
    if inputs.name:
        out["io.gantry.container.name"] = inputs.name
    if inputs.image_id:
        out["io.gantry.image.id"] = inputs.image_id
    stop = inputs.image_config.get("StopSignal")
    out["org.opencontainers.image.stopSignal"] = stop if isinstance(stop, str) and stop else "15"
    return out


def generate(inputs: SpecInputs) -> dict[str, Any]:
    """The spec for these inputs. Raises InvalidInputError for options podman also refuses
    (an unknown user or group, no command at all, a relative -w, a bad --ulimit)."""
    image, options = inputs.image_config, inputs.options
    image_user = image.get("User") if isinstance(image.get("User"), str) else ""
    user = resolve_user(options.user or str(image_user or ""), inputs.passwd, inputs.group)
    hostname = options.hostname or inputs.container_id[:12]
    caps = list(defaults.DEFAULT_CAPABILITIES)
    capabilities: dict[str, list[str]] = {"bounding": caps}
    if user.uid == 0:
        capabilities |= {"effective": list(caps), "permitted": list(caps)}
    process_user: dict[str, Any] = {"uid": user.uid, "gid": user.gid, "umask": defaults.UMASK}
    gids = additional_gids(user)
    if gids:
        process_user["additionalGids"] = gids
    return {
        "ociVersion": defaults.OCI_VERSION,
        "process": {
            "terminal": options.tty,
            # A first size for the pty (runc sets it before the process starts): a shell that
            # prints its prompt before any client has sized the terminal then still edits
            # lines at 80 columns rather than at 0. Browser panes resize it at once.
            **({"consoleSize": {"height": 24, "width": 80}} if options.tty else {}),
            "user": process_user,
            "args": process_args(image, options),
            "env": process_env(image, options, user.home, hostname),
            "cwd": process_cwd(image, options),
            "capabilities": capabilities,
            "rlimits": rlimits(options, inputs.host),
            "noNewPrivileges": True,
        },
        "root": {"path": inputs.paths.root_path, "readonly": False},
        "hostname": hostname,
        "mounts": mounts(inputs.paths, options.volumes),
        "annotations": spec_annotations(inputs),
        "linux": {
            "sysctl": dict(defaults.SYSCTL),
            "resources": resources(options),
            "cgroupsPath": inputs.paths.cgroups_path,
            "namespaces": namespaces(inputs.paths.netns),
            "seccomp": default_profile(inputs.host.machine),
            "maskedPaths": list(defaults.MASKED_PATHS),
            "readonlyPaths": list(defaults.READONLY_PATHS),
        },
    }


def namespaces(netns: str) -> list[dict[str, str]]:
    """podman's namespaces; the network one joins the engine's namespace at ``netns`` (a
    path), is the host's (``host``: no entry) or a new one holding only loopback ("")."""
    out = []
    for kind in defaults.NAMESPACES:
        if kind != "network" or not netns:
            out.append({"type": kind})
        elif netns != "host":
            out.append({"type": kind, "path": netns})
    return out


def canonical(spec: Mapping[str, Any]) -> str:
    """The text we write to config.json: two-space indent, keys in the order above."""
    return json.dumps(spec, indent=2, ensure_ascii=False) + "\n"


def hostname_file(hostname: str) -> str:
    """userdata/hostname, bind-mounted at /etc/hostname."""
    return f"{hostname}\n"


def hosts_file(hostname: str, name: str = "", address: str = "127.0.0.1") -> str:
    """userdata/hosts, bind-mounted at /etc/hosts. podman copies the host's /etc/hosts and
    adds the container; we write only loopback and the container itself, at its address on
    its network (loopback with --network none: the host's entries are none of the
    container's business; the others on its network are aardvark-dns's to answer)."""
    names = " ".join(dict.fromkeys(n for n in (hostname, name) if n))
    return (
        "127.0.0.1\tlocalhost localhost.localdomain\n"
        "::1\tlocalhost localhost.localdomain ip6-localhost ip6-loopback\n"
        f"{address}\t{names}\n"
    )


def cgroups_path(container_id: str) -> str:
    """linux.cgroupsPath: a cgroup of its own at the top of every hierarchy (cgroupfs, as runc
    does without a path); runc creates it at create and removes it at delete, leaving nothing."""
    return f"/gantry-{container_id}"
