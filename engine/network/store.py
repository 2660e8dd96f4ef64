"""Networks (a service: ``engine.get(Networks)``): the default one from engine.json and the
users' ones, each a file <root>/networks/<name>.json in ``podman network inspect``'s shape.
Creating one checks its subnet against the host and every other network, under one lock."""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import InvalidInputError, InvalidStateError, NotFoundError
from engine.hostfs import atomic, locks
from engine.network.networks import (
    BRIDGE,
    Network,
    check_bridge,
    check_bridge_usable,
    check_host_overlap,
    check_name,
    check_subnet,
    default_network,
    host_conflict,
    interface_conflict,
    network_id,
)
from engine.storage.podjson import rfc3339

if TYPE_CHECKING:
    from engine.core import Engine

AUTO_POOL = ipaddress.IPv4Network("10.90.0.0/16")  # subnets made for `network create NAME`
AUTO_PREFIX = 24


class Networks:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dir = Path(engine.config.root) / "networks"

    @property
    def default(self) -> Network:
        return default_network(self.engine.config.network)

    def _path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def _user_networks(self) -> list[Network]:
        found = []
        try:
            entries = sorted(self.dir.glob("*.json"))
        except OSError:
            return []
        for path in entries:
            try:
                found.append(Network.from_json(atomic.read_json(path)))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a torn or foreign file is not a network
        return found

    def all(self) -> list[Network]:
        """The default network first, then the others by name."""
        default = self.default
        return [default, *(n for n in self._user_networks() if n.name != default.name)]

    def get(self, unsafe_name: str) -> Network:
        """A network by name; ``bridge`` (podman's word) is the default one."""
        default = self.default
        if unsafe_name in (BRIDGE, default.name):
            return default
        name = check_name(unsafe_name)
        try:
            return Network.from_json(atomic.read_json(self._path(name)))
        except FileNotFoundError:
            raise NotFoundError(f"network {name} not found") from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InvalidStateError(f"network {name}: unreadable definition ({err})") from None

    def create(
        self,
        unsafe_name: str,
        *,
        subnet: str = "",
        gateway: str = "",
        bridge: str = "",
        internal: bool = False,
        dns: bool = True,
    ) -> Network:
        """A new bridge network; without a subnet, the first free /24 of 10.90.0.0/16 that
        overlaps nothing; without a bridge name, the first free gantryN."""
        name = check_name(unsafe_name)
        if bridge:
            check_bridge(bridge)
        if subnet:
            subnet, gateway = check_subnet(subnet, gateway)
        elif gateway:
            raise InvalidInputError("--gateway needs --subnet")
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with locks.locked(Path(self.engine.config.root), "networks", "all", timeout=30):
            others = self.all()
            if any(n.name == name for n in others):
                raise InvalidInputError(f"network {name} already exists")
            if bridge and any(n.bridge == bridge for n in others):
                raise InvalidInputError(f"bridge {bridge} is used by another network")
            bridge = bridge or _free_bridge(others)
            if subnet:
                _check_free(subnet, others)
            else:
                subnet, gateway = _free_subnet(others, bridge)
            network = Network(
                name, network_id(name), bridge, subnet, gateway, internal, dns, _now()
            )
            check_host_overlap(network)
            check_bridge_usable(network, new=True)
            atomic.write_json(self._path(name), network.to_json() | {"default": False})
        return network

    def remove(self, unsafe_name: str, users: list[str]) -> None:
        """Forget a network no container uses (``users``: their names)."""
        network = self.get(unsafe_name)
        if network.default:
            raise InvalidInputError(f"network {network.name} is the default network")
        if users:
            raise InvalidStateError(
                f"network {network.name} is used by containers {', '.join(sorted(users)[:10])}"
            )
        with locks.locked(Path(self.engine.config.root), "networks", "all", timeout=30):
            try:
                os.unlink(self._path(network.name))
            except FileNotFoundError:
                raise NotFoundError(f"network {network.name} not found") from None


def _now() -> str:
    return rfc3339(time.time())


def _free_bridge(others: list[Network]) -> str:
    """gantryN: the first name no network uses and no interface of the host has."""
    taken = {n.bridge for n in others}
    return next(
        name
        for name in (f"gantry{i}" for i in range(1, 10_000))
        if name not in taken and not interface_conflict(name, new=True)
    )


def _check_free(subnet: str, others: list[Network]) -> None:
    net = ipaddress.IPv4Network(subnet)
    for other in others:
        if net.overlaps(other.addresses):
            raise InvalidInputError(
                f"subnet {subnet} overlaps network {other.name} ({other.subnet})"
            )


def _free_subnet(others: list[Network], bridge: str) -> tuple[str, str]:
    for candidate in AUTO_POOL.subnets(new_prefix=AUTO_PREFIX):
        if any(candidate.overlaps(o.addresses) for o in others):
            continue
        if host_conflict(str(candidate), bridge):
            continue
        return str(candidate), str(candidate.network_address + 1)
    raise InvalidStateError(f"no free /{AUTO_PREFIX} left in {AUTO_POOL}: give --subnet")
