"""The generator's inputs that come from outside the image: this host's facts and a container
record's create options (engine.spec.generator stays pure; SpecService gathers these)."""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping
from typing import Any

from engine.spec import generator
from engine.storage.containers import ContainerRecord

# Linux rlimit numbers (the resource module lacks some names, e.g. RLIMIT_LOCKS).
_RLIMIT_NUMBERS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}  # fmt: skip


def host_facts() -> generator.HostFacts:
    """This host's architecture and the engine's hard rlimits (what runc, started by conmon
    from the engine, inherits and cannot raise without CAP_SYS_RESOURCE)."""
    hard: dict[str, int] = {}
    for name, number in _RLIMIT_NUMBERS.items():
        try:
            value = resource.getrlimit(number)[1]
        except (ValueError, OSError):
            continue
        hard[name] = generator.UINT64_MAX if value == resource.RLIM_INFINITY else value
    return generator.HostFacts(machine=os.uname().machine, rlimits_hard=hard)


def spec_options(record: ContainerRecord) -> generator.SpecOptions:
    """The generator's view of a container's create options. The record's options already
    hold the image's defaults merged in (containers.apply_image_defaults); optional keys a
    newer create may add (ulimits, memory, cpus, pids_limit) are read when present."""
    o = record.options
    extra: Mapping[str, Any] = o.extra

    def number(key: str) -> Any:
        value = extra.get(key)
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    ulimits = extra.get("ulimits") or []
    return generator.SpecOptions(
        command=tuple(o.command),
        entrypoint=None if o.entrypoint is None else tuple(o.entrypoint),
        env=tuple(o.env),
        workdir=o.workdir,
        user=o.user,
        tty=o.tty,
        interactive=o.interactive,
        hostname=o.hostname,
        volumes=tuple(
            generator.VolumeMount(v.source, v.destination, v.read_only) for v in o.volumes
        ),
        ulimits=tuple(str(u) for u in ulimits) if isinstance(ulimits, list) else (),
        memory=number("memory"),
        cpus=number("cpus"),
        pids_limit=number("pids_limit"),
    )
