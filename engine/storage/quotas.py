"""Quotas per role, so one learner cannot take the host: how many containers and how many
running, and each container's memory, process and CPU limits (a default written into its
config.json at generation, and a maximum an edit may not pass). Admins have none.

engine.json, with the defaults (which let the lab run):

    "policy": {"quotas": {
        "learner":    {"containers": 10, "running": 3, "memory": "256m", "max_memory": "1g",
                       "pids": 512, "max_pids": 2048, "cpus": 1.0, "max_cpus": 1.0,
                       "disk": "1g"},
        "instructor": {"containers": 20, "running": 5, "memory": "512m", "max_memory": "2g",
                       "pids": 1024, "max_pids": 4096, "cpus": 1.0, "max_cpus": 2.0,
                       "disk": "4g"}}}

``disk`` is what a user's containers' upper dirs and their sandbox may hold together
(engine/storage/usage.py): a write, an upload or a touch that would pass it is refused
before anything is written, and a user past it cannot create or start a container.

A container of a learner carries its owner's role (options.extra["quota"]) and sandbox name,
so its limits hold whoever starts or edits it later.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from engine.config import EngineConfig
from engine.errors import InvalidInputError, PolicyError
from engine.protocol import INSTRUCTOR, LEARNER
from engine.storage import usage
from engine.storage.containers import Containers
from engine.storage.records import ACTIVE_STATES, ContainerRecord, CreateOptions
from engine.storage.sandbox import sandbox_of

if TYPE_CHECKING:
    from engine.protocol import verbs

_MIB = 1024 * 1024
_SIZE_RE = re.compile(r"^(\d+)([kmg]?)b?$", re.I)


@dataclass(frozen=True)
class Quota:
    containers: int
    running: int
    memory: int  # bytes: the default limit
    max_memory: int
    pids: int
    max_pids: int
    cpus: float
    max_cpus: float
    disk: int  # bytes: a user's upper dirs and sandbox together


DEFAULTS = {
    LEARNER: Quota(10, 3, 256 * _MIB, 1024 * _MIB, 512, 2048, 1.0, 1.0, 1024 * _MIB),
    INSTRUCTOR: Quota(20, 5, 512 * _MIB, 2048 * _MIB, 1024, 4096, 1.0, 2.0, 4096 * _MIB),
}


def parse_size(key: str, value: Any) -> int:
    """Bytes from 1048576, "256m", "1g" (podman's -m units, binary)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    found = _SIZE_RE.match(str(value).strip())
    if not found or int(found.group(1)) <= 0:
        raise InvalidInputError(f"engine config: policy.quotas: {key}: a size such as 256m")
    return (
        int(found.group(1))
        * {"": 1, "k": 1024, "m": _MIB, "g": 1024 * _MIB}[found.group(2).lower()]
    )


def quota_for(config: EngineConfig, role: str | None) -> Quota | None:
    """The quota of a role (None for an admin or the CLI), the file's keys over the defaults."""
    if role not in DEFAULTS:
        return None
    base = DEFAULTS[role]
    policy = config.policy.get("quotas", {}) if isinstance(config.policy, Mapping) else {}
    raw = policy.get(role, {}) if isinstance(policy, Mapping) else None
    if not isinstance(raw, Mapping):
        raise InvalidInputError(f"engine config: policy.quotas.{role}: must be an object")
    known = {f.name for f in fields(Quota)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InvalidInputError(f"engine config: policy.quotas.{role}: unknown key {unknown[0]!r}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("memory", "max_memory", "disk"):
            values[key] = parse_size(key, value)
        elif isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise InvalidInputError(f"engine config: policy.quotas.{role}.{key}: a positive number")
        else:
            values[key] = float(value) if key in ("cpus", "max_cpus") else int(value)
    return replace(base, **values)


def of_container(config: EngineConfig, options: CreateOptions) -> Quota | None:
    """The quota a container is held to (its owner's role when it was created)."""
    role = options.extra.get("quota")
    return quota_for(config, role) if isinstance(role, str) else None


def mine(records: Iterable[ContainerRecord], sandbox: str) -> list[ContainerRecord]:
    return [r for r in records if sandbox and r.options.sandbox == sandbox]


def check_create(config: EngineConfig, role: str | None, have: int) -> Quota | None:
    """Before a create: refused past the number of containers. Answers the quota."""
    quota = quota_for(config, role)
    if quota is not None and have >= quota.containers:
        raise PolicyError(
            f"you have {have} containers: a {role} may have {quota.containers}; remove one first",
            rule="quota",
            field="containers",
        )
    return quota


def apply_limits(options: CreateOptions, role: str, quota: Quota) -> None:
    """The default limits a new container's config.json is generated with."""
    options.extra.update(quota=role, memory=quota.memory, pids_limit=quota.pids, cpus=quota.cpus)


def check_start(
    config: EngineConfig, record: ContainerRecord, others: list[ContainerRecord]
) -> None:
    """Before a start: refused past the number running of the container's owner."""
    quota = of_container(config, record.options)
    if quota is None:
        return
    running = [r for r in mine(others, record.options.sandbox) if r.id != record.id]
    running = [r for r in running if r.state in ACTIVE_STATES]
    if len(running) >= quota.running:
        names = ", ".join(r.name for r in running[:5])
        raise PolicyError(
            f"{len(running)} of your containers run already ({names}): "
            f"{quota.running} may run at once; stop one first",
            rule="quota",
            field="running",
        )


def disk_of(config: EngineConfig, containers: Containers, sandbox: str) -> usage.Usage:
    """What a user's disk holds now: their sandbox and their containers' upper dirs."""
    uppers = [containers.paths(r.id).upper for r in mine(containers.list(), sandbox)]
    return usage.measure_all([sandbox_of(config, sandbox), *uppers])


def disk_use(
    config: EngineConfig, containers: Containers, name: str, quota: Quota | None
) -> verbs.DiskUse:
    """A user's disk as the pages show it: {name, used, quota (0: none), complete}."""
    used = disk_of(config, containers, name)
    return {
        "name": name,
        "used": used.bytes,
        "quota": quota.disk if quota else 0,
        "complete": used.complete,
    }


def human(size: int) -> str:
    """1536 -> "1.5 KiB", as the refusals say it."""
    value, unit = float(size), "bytes"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"


def check_disk(
    config: EngineConfig,
    containers: Containers,
    quota: Quota | None,
    sandbox: str,
    adding: int = 0,
) -> None:
    """Refused if the user's disk would pass their quota (``adding`` bytes more, for a write
    or an upload; none for a create or a start, refused once they are past it)."""
    if quota is None or not sandbox:
        return
    used = disk_of(config, containers, sandbox).bytes
    if used + adding <= quota.disk:
        return
    more = f" and this adds {human(adding)}" if adding else ""
    raise PolicyError(
        f"your containers and sandbox hold {human(used)}{more}: your disk quota is "
        f"{human(quota.disk)}; delete files or remove a container first",
        rule="quota",
        field="disk",
    )
