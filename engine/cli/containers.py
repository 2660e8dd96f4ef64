"""CLI verbs of container storage, with podman's words, flags and output:

create [--name N] [-v SRC:DST[:ro]] [-e K=V] [-w DIR] [-u USER] [--entrypoint E] [-t] [-i]
       [--network bridge|none|host|NAME] [-p [IP:][HOSTPORT:]PORT[/udp]] [--dns IP]
       IMAGE [CMD...]                         prints the new container's id
mount [NAME...]                               prints the merged path (no NAME: list mounts)
unmount|umount [-f] [-a] NAME...
diff [--format json] NAME                     A /path, C /path, D /path
cp SRC DST                                    either side NAME:/path; DST - = tar to stdout
port NAME                                     8080/tcp -> 127.0.0.1:18080, one per line
ps [-a] [-q] [-l] [-n N] [--no-trunc] [-f KEY=VALUE] [--format json|TEMPLATE]
inspect [--type all|container|image] [--format TEMPLATE] NAME...   podman inspect's JSON
rm [-f] NAME...
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import TYPE_CHECKING, Any

from engine.cli.output import (
    add_format,
    go_time,
    host_env,
    is_json,
    is_template,
    print_json,
    print_table,
    print_template,
)
from engine.core import Engine
from engine.errors import EngineError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from engine.storage.containers import Containers
    from engine.storage.records import ContainerRecord

# The verbs import the engine modules they use when they run: `python -m engine info` should
# not pay for the container stack, nor `ps` for the registry client and the spec schema.


def _containers(engine: Engine, *, runtime_hooks: bool = False) -> Containers:
    """The containers service. ``runtime_hooks``: with the runtime plugged in (pre-remove:
    stop and delete the runc state; sync: ask conmon and runc), which the Lifecycle service
    does when it is built for this engine."""
    from engine.storage.containers import Containers

    if runtime_hooks:
        from engine.runtime.lifecycle import Lifecycle

        return engine.get(Lifecycle).containers
    return engine.get(Containers)


def _listed(engine: Engine) -> list[ContainerRecord]:
    """Every container's record, synced with conmon and runc. The runtime stack (a third of
    ``ps``'s start-up) is built only when a record is not what its processes say."""
    from engine.runtime.liveness import settled

    containers = _containers(engine)
    records = containers.list()
    root = engine.config.root
    if all(settled(root, containers.paths(r.id).userdata, r) for r in records):
        return records
    containers = _containers(engine, runtime_hooks=True)
    return [containers.synced(r) for r in records]


def parse_entrypoint(value: str | None) -> list[str] | None:
    """podman's --entrypoint: a JSON array, or one command string ("" clears it)."""
    if value is None:
        return None
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError as err:
            raise InvalidInputError(f"--entrypoint {value[:80]!r}: not a JSON array") from err
        if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
            raise InvalidInputError("--entrypoint: must be a JSON array of strings")
        return parsed
    return [value] if value else []


def cmd_create(engine: Engine, args: argparse.Namespace) -> int:
    from engine.cli.call import call
    from engine.protocol import verbs

    create = verbs.Create(
        image=args.image,
        name=args.name or "",
        command=list(args.command),
        entrypoint=parse_entrypoint(args.entrypoint),
        env=host_env(args.env),
        workdir=args.workdir or "",
        user=args.user or "",
        tty=args.tty,
        interactive=args.interactive,
        volumes=list(args.volume),
        hostname=args.hostname or "",
        network=args.network or "",
        publish=list(args.publish),
        dns=list(args.dns),
    )
    print(call(engine, verbs.CONTAINER_CREATE, create)["Id"])
    return 0


def cmd_mount(engine: Engine, args: argparse.Namespace) -> int:
    from engine.cli.call import call
    from engine.protocol import verbs

    containers = _containers(engine)
    if not args.names:
        for record in containers.list():
            if record.mount_count > 0 and containers.is_mounted(record.id):
                print(f"{record.short_id}  {containers.paths(record.id).merged}")
        return 0
    for name in args.names:
        print(call(engine, verbs.CONTAINER_MOUNT, verbs.Id(id=name))["path"])
    return 0


def cmd_unmount(engine: Engine, args: argparse.Namespace) -> int:
    from engine.cli.call import call
    from engine.protocol import verbs

    containers = _containers(engine)
    if args.all:
        records = [r for r in containers.list() if r.mount_count > 0]
    elif args.names:
        records = [containers.get(n) for n in args.names]
    else:
        raise InvalidInputError("unmount: give a container name or --all")
    status = 0
    for record in records:
        try:
            call(engine, verbs.CONTAINER_UNMOUNT, verbs.Force(id=record.id, force=args.force))
            print(record.id)
        except EngineError as err:
            print(f"Error: {err.message}", file=sys.stderr)
            status = 125
    return status


def cmd_diff(engine: Engine, args: argparse.Namespace) -> int:
    from engine.cli.call import call
    from engine.protocol import verbs

    found = call(engine, verbs.CONTAINER_DIFF, verbs.Id(id=args.name))
    if is_json(args.format):
        print_json(
            {
                "changed": [c["path"] for c in found if c["kind"] == "C"],
                "added": [c["path"] for c in found if c["kind"] == "A"],
                "deleted": [c["path"] for c in found if c["kind"] == "D"],
            }
        )
        return 0
    for change in found:
        print(f"{change['kind']} {change['path']}")
    return 0


def split_cp_arg(arg: str) -> tuple[str | None, str]:
    """ "NAME:/path" -> (NAME, "/path"); a host path (no colon before the first slash, or a
    leading "." or "/") -> (None, arg)."""
    from engine.protocol import NAME_RE

    head, sep, tail = arg.partition(":")
    if sep and head and "/" not in head and not head.startswith(".") and NAME_RE.match(head):
        return head, tail or "/"
    return None, arg


def cmd_cp(engine: Engine, args: argparse.Namespace) -> int:
    from engine.files import transfer

    src_ref, src = split_cp_arg(args.src)
    dst_ref, dst = split_cp_arg(args.dst)
    if src_ref is None and src == "-":
        # podman extracts a tar from stdin here; unpacking an untrusted archive into a
        # container is not done by cp (yet): refuse rather than copy a host file named "-"
        raise InvalidInputError(
            "cp: reading a tar archive from stdin (SRC -) is not supported; "
            "copy a host file or directory instead"
        )
    if (src_ref is None) == (dst_ref is None):
        raise InvalidInputError("cp: exactly one of SRC and DST must be NAME:PATH")
    ref = src_ref or dst_ref or ""
    record = _containers(engine).get(ref)
    if dst_ref is None and dst == "-":  # podman: a tar stream of SRC on stdout
        transfer.cp_to_tar(engine, record, src, sys.stdout.buffer)
        return 0
    stats = transfer.cp(engine, record, src, dst, into_container=dst_ref is not None)
    if stats.skipped and not (stats.files or stats.dirs or stats.links):
        raise InvalidInputError(f"cp: {src[:200]}: not a file, directory or symlink, not copied")
    for skipped in stats.skipped:
        print(f"skipped {skipped}: not a file, directory or symlink", file=sys.stderr)
    return 0


def _short(text: str) -> str:
    return text if len(text) <= 20 else text[:17] + "..."


def _command(record: ContainerRecord, no_trunc: bool) -> str:
    from engine.storage.podjson import effective_command

    text = " ".join(effective_command(record))
    return text if no_trunc else _short(text)


PS_FILTER_KEYS = ("name", "id", "status", "ancestor")
PS_STATUSES = ("created", "running", "paused", "exited")


def parse_ps_filters(entries: list[str]) -> dict[str, list[str]]:
    """podman's ``--filter KEY=VALUE``, for the keys Gantry knows; anything else is refused."""
    filters: dict[str, list[str]] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep or key not in PS_FILTER_KEYS or not value:
            raise InvalidInputError(
                f"invalid filter {entry[:80]!r}: use KEY=VALUE with {', '.join(PS_FILTER_KEYS)}"
            )
        if key == "status" and value not in PS_STATUSES:
            raise InvalidInputError(
                f"invalid status {value[:40]!r}: one of {', '.join(PS_STATUSES)}"
            )
        if key == "name":
            try:
                re.compile(value)
            except re.error as err:
                raise InvalidInputError(f"invalid name filter {value[:80]!r}: {err}") from None
        filters.setdefault(key, []).append(value)
    return filters


def _matches(record: ContainerRecord, key: str, value: str) -> bool:
    if key == "name":
        return re.search(value, record.name) is not None
    if key == "id":
        return record.id.startswith(value)
    if key == "status":  # podman's "created" is Gantry's created and configured
        state = "created" if record.state == "configured" else record.state
        return state == value
    name = (
        record.image_name.rsplit(":", 1)[0]
        if ":" in record.image_name.rsplit("/", 1)[-1]
        else record.image_name
    )
    names = {record.image_name, name, name.rsplit("/", 1)[-1]}  # with or without tag, short
    hex_id = record.image_id.removeprefix("sha256:")
    return value in names or hex_id.startswith(value.removeprefix("sha256:"))


def select_for_ps(
    records: list[ContainerRecord], args: argparse.Namespace, filters: dict[str, list[str]]
) -> list[ContainerRecord]:
    """What ``ps`` shows: running ones, or all with -a, a filter, --latest or --last; newest
    first, as podman lists them."""
    from engine.storage.records import ACTIVE_STATES

    records = sorted(records, key=lambda r: r.created, reverse=True)
    if not (args.all or filters or args.latest or args.last >= 0):
        records = [r for r in records if r.state in ACTIVE_STATES]
    for key, values in filters.items():
        records = [r for r in records if any(_matches(r, key, v) for v in values)]
    if args.latest:
        return records[:1]
    return records[: args.last] if args.last >= 0 else records


def cmd_ps(engine: Engine, args: argparse.Namespace) -> int:
    from engine.storage.podjson import created_text, ports_text, ps_json, status_text

    filters = parse_ps_filters(args.filter)
    records = select_for_ps(_listed(engine), args, filters)
    if args.quiet:
        for r in records:
            print(r.id if args.no_trunc else r.short_id)
        return 0
    if is_json(args.format):
        print_json([ps_json(r) for r in records])
        return 0
    now = time.time()
    if is_template(args.format):
        print_template(args.format, [ps_row(r, now, args.no_trunc) for r in records], PS_TITLES)
        return 0
    print_table(
        ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"],
        [
            [
                r.id if args.no_trunc else r.short_id,
                r.image_name,
                _command(r, args.no_trunc),
                created_text(r, now),
                status_text(r, now),
                ports_text(r),
                r.name,
            ]
            for r in records
        ],
    )
    return 0


PS_TITLES = {"ID": "CONTAINER ID", "CreatedHuman": "CREATED", "RunningFor": "CREATED"}


def ps_row(record: ContainerRecord, now: float, no_trunc: bool) -> dict[str, Any]:
    """What ``ps --format '{{...}}'`` sees of a container: podman's JSON fields, and the
    ones its templates add (.ID short unless --no-trunc, .Names and .Command as text, .State
    and .Status as the STATUS column, .Created as a Go time, .CreatedHuman/.RunningFor)."""
    from engine.storage.podjson import created_text, ports_text, ps_json, status_text

    row = ps_json(record, now)
    status, ago = status_text(record, now), created_text(record, now)
    row.update(
        ID=record.id if no_trunc else record.short_id,
        Names=record.name,
        Command=_command(record, no_trunc),
        Created=go_time(record.created),
        CreatedAt=go_time(record.created),
        CreatedHuman=ago,
        RunningFor=ago,
        State=status,
        Status=status,
        Ports=ports_text(record),
        Labels=row["Labels"] or {},
    )
    return row


def inspect_one(engine: Engine, name: str, kind: str) -> dict[str, Any]:
    """podman inspect's object: a container of that name or id, else (--type all) an image."""
    from engine.cli.call import call
    from engine.protocol import verbs

    if kind in ("all", "container"):
        try:
            found: dict[str, Any] = call(engine, verbs.CONTAINER_INSPECT, verbs.Id(id=name))
            return found
        except EngineError as err:
            if err.code != "not_found" or kind == "container":
                raise
    try:
        image: dict[str, Any] = call(engine, verbs.IMAGE_INSPECT, verbs.Image(image=name))
        return image
    except EngineError as err:
        if err.code != "not_found" or kind == "image":
            raise
    raise NotFoundError(f'no such object: "{name}"')


def cmd_inspect(engine: Engine, args: argparse.Namespace) -> int:
    found, status = [], 0
    for name in args.names:
        try:
            found.append(inspect_one(engine, name, args.type))
        except EngineError as err:
            print(f"Error: inspecting object: {err.message}", file=sys.stderr)
            status = 125
    if is_template(args.format):
        print_template(args.format, found)
    else:
        print_json(found)  # "[]" too, as podman prints it before its error
    return status


def cmd_port(engine: Engine, args: argparse.Namespace) -> int:
    """``podman port NAME``: each published port, 8080/tcp -> 127.0.0.1:18080."""
    found = inspect_one(engine, args.name, "container")
    for port, bound in (found.get("NetworkSettings", {}).get("Ports") or {}).items():
        for b in bound:
            print(f"{port} -> {b['HostIp']}:{b['HostPort']}")
    return 0


def cmd_rm(engine: Engine, args: argparse.Namespace) -> int:
    from engine.cli.call import call
    from engine.protocol import verbs

    status = 0
    for name in args.names:
        try:
            removed = call(engine, verbs.CONTAINER_REMOVE, verbs.Force(id=name, force=args.force))
            print(removed["id"])
        except EngineError as err:
            if err.code == "not_found" and args.force:
                continue  # rm -f of what is not there is done already (podman: 0)
            print(f"Error: {err.message}", file=sys.stderr)
            status = max(status, 1 if err.code == "not_found" else 2)
    return status


def register(sub: Any) -> None:
    """Add this domain's verbs to the argparse subparsers."""

    def verb(name: str, func: Any, help_text: str, **kw: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, **kw)
        p.set_defaults(func=func)
        return p

    _register_create(
        verb("create", cmd_create, "create a container (storage and record; nothing runs)")
    )
    p = verb("mount", cmd_mount, "mount a container's root filesystem and print its path")
    p.add_argument("names", nargs="*", metavar="NAME")
    for name in ("unmount", "umount"):
        p = verb(name, cmd_unmount, "unmount a container's root filesystem")
        p.add_argument("-f", "--force", action="store_true", help="drop every mount at once")
        p.add_argument("-a", "--all", action="store_true", help="every mounted container")
        p.add_argument("names", nargs="*", metavar="NAME")

    p = verb("diff", cmd_diff, "what the container changed: A added, C changed, D deleted")
    add_format(p)
    p.add_argument("name", metavar="NAME")

    p = verb("cp", cmd_cp, "copy between a container and the host (NAME:/path on one side)")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")

    _register_ps(verb("ps", cmd_ps, "list containers"))
    p = verb("inspect", cmd_inspect, "show containers' or images' configuration as JSON")
    add_format(p, "-f")
    p.add_argument(
        "-t", "--type", choices=["all", "container", "image"], default="all",
        help="what NAME is (all: a container, else an image)",
    )  # fmt: skip
    p.add_argument("names", nargs="+", metavar="NAME")

    p = verb("port", cmd_port, "list a container's published ports")
    p.add_argument("name", metavar="NAME")
    p = verb("rm", cmd_rm, "remove containers")
    p.add_argument("-f", "--force", action="store_true", help="stop running containers first")
    p.add_argument("names", nargs="+", metavar="NAME")


def _register_create(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", help="container name (generated if empty)")
    p.add_argument(
        "-v",
        "--volume",
        action="append",
        default=[],
        metavar="SRC:DST[:ro]",
        help="bind-mount a host path (must be under the volume allowlist)",
    )
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-u", "--user", help="USER[:GROUP] inside the container")
    p.add_argument("--entrypoint", help='entrypoint: a command, or a JSON array ("" clears it)')
    p.add_argument("--hostname", help="host name inside the container (default: short id)")
    p.add_argument(
        "--network", "--net", metavar="MODE",
        help="bridge (the default network), none, host, or a network's name",
    )  # fmt: skip
    p.add_argument(
        "-p", "--publish", action="append", default=[], metavar="[IP:][HOSTPORT:]PORT[/PROTO]",
        help="publish a container port on the host (IP defaults to 127.0.0.1)",
    )  # fmt: skip
    p.add_argument("--dns", action="append", default=[], metavar="IP", help="a DNS server")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD")


def _register_ps(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="all containers, not only running")
    p.add_argument("-q", "--quiet", action="store_true", help="print ids only")
    p.add_argument("-l", "--latest", action="store_true", help="the latest created container")
    p.add_argument("-n", "--last", type=int, default=-1, metavar="N", help="the N latest created")
    p.add_argument("--no-trunc", action="store_true", help="full ids and commands")
    p.add_argument(
        "-f",
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="name, id, status or ancestor (repeat: a key twice is either, two keys both)",
    )
    add_format(p)
