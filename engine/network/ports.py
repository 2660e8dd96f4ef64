"""Published ports: ``-p [IP:][HOSTPORT:]CTRPORT[/tcp|udp]`` as podman parses it, the policy
that says which host addresses and ports a user may take, and the reservations that keep two
containers (two learners) off one host port.

A reservation is a file <root>/networks/ports/<proto>-<port> holding the container's id and
its owner, made with O_EXCL under one lock at create time and given back at remove: a port
is a container's from create to rm, as a learner expects of "their" port.

Policy, engine.json ``policy.network``: ``host_ips`` (default ["127.0.0.1"]: add "0.0.0.0"
to publish on every address), ``learner_ports`` ("20000-29999"), ``learner_port_limit`` (5),
``auto_ports`` ("30000-39999": where a port without HOSTPORT lands for an admin)."""

from __future__ import annotations

import errno
import os
import re
import socket
from collections.abc import Container, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import InvalidInputError, PolicyError
from engine.hostfs import locks
from engine.storage.records import PortMapping

_PUBLISH_RE = re.compile(
    r"(?:(?:(?P<ip>\d{1,3}(?:\.\d{1,3}){3}):)?(?P<host>\d{0,5}):)?(?P<ctr>\d{1,5})(?:/(?P<proto>tcp|udp))?"
)
PRIVILEGED_BELOW = 1024
MAX_PUBLISHED = 64


@dataclass(frozen=True)
class PortRules:
    host_ips: tuple[str, ...]
    low: int
    high: int
    limit: int  # ports one owner may hold; 0: no limit
    auto: tuple[int, int]
    learner: bool


def _range(value: Any, what: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d{1,5})-(\d{1,5})", str(value))
    if not match or not 1 <= int(match[1]) <= int(match[2]) <= 65535:
        raise InvalidInputError(f"engine config: policy.network.{what}: a range like 20000-29999")
    return int(match[1]), int(match[2])


def port_rules(policy: dict[str, Any], learner: bool) -> PortRules:
    """What ``policy.network`` lets an admin (learner False) or a learner publish."""
    network = policy.get("network") or {}
    if not isinstance(network, dict):
        raise InvalidInputError("engine config: policy.network must be an object")
    host_ips = tuple(str(ip) for ip in network.get("host_ips", ["127.0.0.1"]))
    auto = _range(network.get("auto_ports", "30000-39999"), "auto_ports")
    if learner:
        low, high = _range(network.get("learner_ports", "20000-29999"), "learner_ports")
        limit = int(network.get("learner_port_limit", 5))
        return PortRules(host_ips, low, high, limit, (low, high), True)
    return PortRules(host_ips, 1, 65535, 0, auto, False)


def allow_host_network(policy: dict[str, Any]) -> bool:
    network = policy.get("network") or {}
    return isinstance(network, dict) and network.get("allow_host") is True


def parse_publish(unsafe: str, default_ip: str = "127.0.0.1") -> PortMapping:
    """One ``-p`` value. A missing HOSTPORT is 0 (chosen at create); ranges are refused."""
    text = str(unsafe).strip()
    match = _PUBLISH_RE.fullmatch(text)
    if not match:
        raise InvalidInputError(
            f"-p {text[:80]!r}: expected [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp] "
            "(one port, not a range)"
        )
    ip = match["ip"] or default_ip
    try:
        socket.inet_aton(ip)
    except OSError:
        raise InvalidInputError(f"-p {text[:80]!r}: {ip} is not an IPv4 address") from None
    host = int(match["host"]) if match["host"] else 0
    container = int(match["ctr"])
    if not 1 <= container <= 65535 or not 0 <= host <= 65535:
        raise InvalidInputError(f"-p {text[:80]!r}: ports are 1 to 65535")
    return PortMapping(ip, host, container, match["proto"] or "tcp")


def check_mappings(mappings: Iterable[PortMapping], rules: PortRules) -> list[PortMapping]:
    """Refuse what the policy does not allow, before anything is reserved or set up."""
    out = list(mappings)
    if len(out) > MAX_PUBLISHED:
        raise InvalidInputError(f"at most {MAX_PUBLISHED} published ports")
    seen: set[tuple[str, int]] = set()
    for m in out:
        if m.host_ip not in rules.host_ips:
            raise PolicyError(
                f"publishing on {m.host_ip} is not allowed (allowed: {', '.join(rules.host_ips)})"
            )
        if m.host_port and rules.learner and m.host_port < PRIVILEGED_BELOW:
            raise PolicyError(
                f"host port {m.host_port} is privileged (below {PRIVILEGED_BELOW}): "
                f"learners publish {rules.low}-{rules.high}"
            )
        if m.host_port and not rules.low <= m.host_port <= rules.high:
            raise PolicyError(
                f"host port {m.host_port} is outside the allowed range {rules.low}-{rules.high}"
            )
        key = (m.protocol, m.host_port)
        if m.host_port and key in seen:
            raise InvalidInputError(f"host port {m.host_port}/{m.protocol} is given twice")
        seen.add(key)
    if rules.limit and len(out) > rules.limit:
        raise PolicyError(f"at most {rules.limit} published ports per learner")
    return out


# -- reservations -----------------------------------------------------------------------------
def _dir(root: Path) -> Path:
    return root / "networks" / "ports"


def reservations(root: Path) -> dict[str, tuple[str, str]]:
    """ "tcp-8080" -> (container id, owner)."""
    found = {}
    directory = _dir(root)
    for name in os.listdir(directory) if directory.is_dir() else []:
        try:
            holder, _, owner = (directory / name).read_text().partition("\n")
        except OSError:
            continue
        found[name] = (holder.strip(), owner.strip())
    return found


def _bindable(mapping: PortMapping, port: int) -> bool:
    kind = socket.SOCK_STREAM if mapping.protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((mapping.host_ip, port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            if err.errno == errno.EADDRNOTAVAIL:
                raise InvalidInputError(
                    f"{mapping.host_ip} is not an address of this host"
                ) from None
            raise
    return True


def reserve(
    root: Path, container_id: str, owner: str, mappings: list[PortMapping], rules: PortRules
) -> list[PortMapping]:
    """Take each mapping's host port for the container (choosing one where none was given),
    all or none. Refuses a port another container holds, one a host process listens on, and
    more ports than the owner's limit."""
    directory = _dir(root)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    made: list[Path] = []
    out = []
    with locks.locked(root, "ports", "all", timeout=30):
        held = reservations(root)
        if rules.limit and owner:
            mine = sum(1 for _, who in held.values() if who == owner)
            if mine + len(mappings) > rules.limit:
                raise PolicyError(
                    f"at most {rules.limit} published ports per learner ({mine} held already)"
                )
        try:
            for m in mappings:
                port = m.host_port or _free_port(m, rules, held)
                key = f"{m.protocol}-{port}"
                if key in held:
                    raise InvalidInputError(f"host port {port}/{m.protocol} is already published")
                if not _bindable(m, port):
                    raise InvalidInputError(f"host port {port}/{m.protocol} is in use on this host")
                path = directory / key
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                made.append(path)
                with os.fdopen(fd, "w") as f:
                    f.write(f"{container_id}\n{owner}")
                held[key] = (container_id, owner)
                out.append(PortMapping(m.host_ip, port, m.container_port, m.protocol))
        except BaseException:
            for path in made:
                path.unlink(missing_ok=True)
            raise
    return out


def _free_port(m: PortMapping, rules: PortRules, held: dict[str, tuple[str, str]]) -> int:
    low, high = rules.auto
    for port in range(low, high + 1):
        if f"{m.protocol}-{port}" not in held and _bindable(m, port):
            return port
    raise PolicyError(f"no free host port left in {low}-{high}")


def release(root: Path, container_id: str) -> None:
    with locks.locked(root, "ports", "all", timeout=30):
        for key, (holder, _) in reservations(root).items():
            if holder == container_id:
                (_dir(root) / key).unlink(missing_ok=True)


def sweep(root: Path, live: Container[str]) -> int:
    """Give back every reservation whose container no longer exists; how many."""
    count = 0
    with locks.locked(root, "ports", "all", timeout=30):
        for key, (holder, _) in reservations(root).items():
            if holder not in live:
                (_dir(root) / key).unlink(missing_ok=True)
                count += 1
    return count
