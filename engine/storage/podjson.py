"""Containers as podman shows them: the ``ps`` columns and JSON, and ``inspect``'s JSON, with
podman's field names and wording (``status_text`` is the one place a state is worded)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.storage.records import EXITED, PAUSED, RUNNING, ContainerPaths, ContainerRecord
from engine.storage.volumes import Volume


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


def rfc3339(ts: float | None) -> str:
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
        "Ports": [p.netavark() for p in record.options.ports] or None,
        "Networks": [record.options.network] if record.options.network != "none" else [],
    }


def inspect_json(
    record: ContainerRecord, paths: ContainerPaths, lower_dirs: list[Path]
) -> dict[str, Any]:
    """``podman inspect`` of a container (podman's field names). ``lower_dirs`` bottom to
    top (they are printed top first, as overlayfs takes them)."""
    o = record.options
    return {
        "Id": record.id,
        "Created": rfc3339(record.created),
        "Path": effective_command(record)[0] if effective_command(record) else "",
        "Args": effective_command(record)[1:],
        "State": {
            "Status": record.state,
            "Running": record.state == RUNNING,
            "Paused": record.state == PAUSED,
            "ExitCode": record.exit_code if record.exit_code is not None else 0,
            "Pid": record.pid,
            "ConmonPid": record.conmon_pid,
            "StartedAt": rfc3339(record.started_at),
            "FinishedAt": rfc3339(record.finished_at),
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
        "Mounts": [mount_json(v) for v in o.volumes],
        "NetworkSettings": network_settings(record),
        "HostConfig": {"NetworkMode": o.network, "Dns": list(o.dns)},
        "OCIConfigPath": str(paths.bundle / "config.json"),  # written by init or start
        "StaticDir": str(paths.userdata),
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


def ports_text(record: ContainerRecord) -> str:
    """ps's PORTS column: 127.0.0.1:8080->80/tcp, ..."""
    return ", ".join(p.text() for p in record.options.ports)


def network_settings(record: ContainerRecord) -> dict[str, Any]:
    """podman inspect's NetworkSettings: the first network's address at the top, each
    network's under Networks (empty values while the container does not run)."""
    live = record.extra.get("network") if record.state in (RUNNING, PAUSED) else None
    live = live if isinstance(live, dict) else {}
    found = live.get("networks")
    attached: dict[str, Any] = found if isinstance(found, dict) else {}
    name = record.options.network
    names = [] if name in ("none", "host") else list(attached) or [name]
    networks = {n: _endpoint(n, attached.get(n) or {}, record) for n in names}
    first = networks[names[0]] if names else _endpoint("", {}, record)
    ports: dict[str, Any] = {}
    for p in record.options.ports:
        ports.setdefault(f"{p.container_port}/{p.protocol}", []).append(
            {"HostIp": p.host_ip, "HostPort": str(p.host_port)}
        )
    return {
        "IPAddress": first["IPAddress"],
        "IPPrefixLen": first["IPPrefixLen"],
        "Gateway": first["Gateway"],
        "MacAddress": first["MacAddress"],
        "Ports": ports,
        "SandboxKey": str(live.get("netns", "")),
        "Networks": networks,
    }


def _endpoint(name: str, info: dict[str, Any], record: ContainerRecord) -> dict[str, Any]:
    return {
        "NetworkID": name,
        "IPAddress": str(info.get("ip", "")),
        "IPPrefixLen": int(info.get("prefix", 0) or 0),
        "Gateway": str(info.get("gateway", "")),
        "MacAddress": str(info.get("mac", "")),
        "Aliases": [record.name, record.short_id] if name else [],
    }


def mount_json(v: Volume) -> dict[str, Any]:
    """One bind mount as podman inspect shows it."""
    out: dict[str, Any] = {
        "Type": "bind",
        "Source": v.source,
        "Destination": v.destination,
        "RW": not v.read_only,
        "Options": ["rbind"],
        "Propagation": "rprivate",
    }
    if v.requested:  # Gantry's: the source as a learner typed it, mapped into their sandbox
        out["Requested"] = v.requested
    return out
