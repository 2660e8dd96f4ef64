"""One address per container on a network (netavark 1.4 does no IPAM: the caller gives it
static_ips, as podman's own IPAM does). A lease is a file <root>/networks/ipam/<network>/<ip>
holding the container's id, made with O_EXCL under the network's lock: two starts never get one
address, and a lease outlives an engine crash until the container's teardown or a sweep."""

from __future__ import annotations

import os
from collections.abc import Container
from pathlib import Path

from engine.errors import InvalidStateError
from engine.hostfs import locks
from engine.network.networks import Network


def _dir(root: Path, network: str) -> Path:
    return root / "networks" / "ipam" / network


def leases(root: Path, network: str) -> dict[str, str]:
    """address -> container id."""
    found = {}
    directory = _dir(root, network)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return {}
    for name in names:
        try:
            found[name] = (directory / name).read_text().strip()
        except OSError:
            continue
    return found


def allocate(root: Path, network: Network, container_id: str) -> str:
    """The container's address on ``network``: its lease if it holds one, else the lowest
    free host address that is not the gateway."""
    directory = _dir(root, network.name)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with locks.locked(root, "ipam", network.name, timeout=30):
        for address, holder in leases(root, network.name).items():
            if holder == container_id:
                return address
        for host in network.addresses.hosts():
            address = str(host)
            if address == network.gateway:
                continue
            try:
                fd = os.open(directory / address, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as out:
                out.write(container_id)
            return address
    raise InvalidStateError(f"network {network.name} ({network.subnet}) has no free address")


def release(root: Path, network: str, container_id: str) -> None:
    """Give back the container's address(es) on ``network``."""
    with locks.locked(root, "ipam", network, timeout=30):
        for address, holder in leases(root, network).items():
            if holder == container_id:
                _unlink(_dir(root, network) / address)


def release_everywhere(root: Path, container_id: str) -> None:
    """Give back the container's addresses on every network (a start cut off between its
    lease and its state file left one that no state names)."""
    base = root / "networks" / "ipam"
    for network in os.listdir(base) if base.is_dir() else []:
        release(root, network, container_id)


def sweep(root: Path, live: Container[str]) -> int:
    """Give back every lease whose container is not in ``live`` (engine start-up); how many."""
    base = root / "networks" / "ipam"
    count = 0
    for network in os.listdir(base) if base.is_dir() else []:
        with locks.locked(root, "ipam", network, timeout=30):
            for address, holder in leases(root, network).items():
                if holder not in live:
                    _unlink(_dir(root, network) / address)
                    count += 1
    return count


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
