"""A network's definition and the checks every one passes: its name, its subnet and gateway,
and that the subnet overlaps none of the host's own routes, addresses or DNS servers (a
container network that shadowed one would cut the host off from part of its world).

The default network comes from engine.json's ``network`` object (name, subnet, gateway, bridge);
``--network bridge`` names it, as podman's ``bridge`` names its ``podman`` network."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import InvalidInputError

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")  # whole names: fullmatch
BRIDGE_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,14}")  # a Linux interface name: 15 characters
NONE, HOST, BRIDGE = "none", "host", "bridge"
RESERVED = (NONE, HOST, BRIDGE, "default", "private", "container", "ns", "slirp4netns", "pasta")
DEFAULT = {"name": "gantry", "subnet": "10.90.0.0/24", "gateway": "", "bridge": "gantry0"}
PREFIX_RANGE = (8, 29)  # a /30 leaves one address for a container: no use
ROUTES = Path("/proc/net/route")
SYS_NET = Path("/sys/class/net")
RESOLV_CONF = Path("/etc/resolv.conf")


@dataclass(frozen=True)
class Network:
    """One bridge network, as netavark and ``podman network inspect`` spell it."""

    name: str
    id: str
    bridge: str
    subnet: str
    gateway: str
    internal: bool = False
    dns_enabled: bool = True
    created: str = ""
    default: bool = False

    def info(self) -> dict[str, Any]:
        """netavark's network_info entry (no ``created``: netavark does not take it)."""
        return {
            "name": self.name,
            "id": self.id,
            "driver": "bridge",
            "network_interface": self.bridge,
            "subnets": [{"subnet": self.subnet, "gateway": self.gateway}],
            "ipv6_enabled": False,
            "internal": self.internal,
            "dns_enabled": self.dns_enabled,
            "ipam_options": {"driver": "host-local"},
        }

    def to_json(self) -> dict[str, Any]:
        """``network inspect``: podman's fields, and whether it is the default."""
        return {**self.info(), "created": self.created, "default": self.default}

    @property
    def addresses(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Network:
        [subnet] = data["subnets"]
        return cls(
            name=str(data["name"]),
            id=str(data["id"]),
            bridge=str(data["network_interface"]),
            subnet=str(subnet["subnet"]),
            gateway=str(subnet["gateway"]),
            internal=bool(data.get("internal", False)),
            dns_enabled=bool(data.get("dns_enabled", True)),
            created=str(data.get("created", "")),
        )


def check_name(unsafe_name: str) -> str:
    """A network's name: ``[a-z0-9][a-z0-9_.-]{0,62}``, none of the words --network reserves."""
    if not isinstance(unsafe_name, str) or not NAME_RE.fullmatch(unsafe_name):
        raise InvalidInputError(
            f"network name {str(unsafe_name)[:80]!r}: must match [a-z0-9][a-z0-9_.-]{{0,62}}"
        )
    if unsafe_name in RESERVED:
        raise InvalidInputError(f"network name {unsafe_name!r} is reserved")
    return unsafe_name


def check_bridge(unsafe_bridge: str) -> str:
    if not isinstance(unsafe_bridge, str) or not BRIDGE_RE.fullmatch(unsafe_bridge):
        raise InvalidInputError(
            f"bridge name {str(unsafe_bridge)[:80]!r}: at most 15 of [a-z0-9_.-], "
            "starting with a letter or digit"
        )
    return unsafe_bridge


def check_subnet(unsafe_subnet: str, unsafe_gateway: str = "") -> tuple[str, str]:
    """An IPv4 subnet between /8 and /29 and its gateway (default: its first address), as
    text. The gateway must be one of the subnet's host addresses."""
    try:
        subnet = ipaddress.IPv4Network(str(unsafe_subnet), strict=True)
    except ValueError as err:
        raise InvalidInputError(f"subnet {str(unsafe_subnet)[:80]!r}: {err}") from None
    low, high = PREFIX_RANGE
    if not low <= subnet.prefixlen <= high:
        raise InvalidInputError(f"subnet {subnet}: the prefix must be /{low} to /{high}")
    if unsafe_gateway:
        try:
            gateway = ipaddress.IPv4Address(str(unsafe_gateway))
        except ValueError as err:
            raise InvalidInputError(f"gateway {str(unsafe_gateway)[:80]!r}: {err}") from None
    else:
        gateway = subnet.network_address + 1
    if gateway not in subnet or gateway in (subnet.network_address, subnet.broadcast_address):
        raise InvalidInputError(f"gateway {gateway}: not a host address of {subnet}")
    return str(subnet), str(gateway)


def network_id(name: str) -> str:
    """A network's id: stable for a name (the default network is the same on every read)."""
    return hashlib.sha256(f"gantry-network:{name}".encode()).hexdigest()


def default_network(settings: dict[str, Any]) -> Network:
    """The default network from engine.json's ``network`` object; each key is optional."""
    if not isinstance(settings, dict):
        raise InvalidInputError("engine config: network must be an object")
    unknown = set(settings) - set(DEFAULT)
    if unknown:
        raise InvalidInputError(f"engine config: network: unknown keys {sorted(unknown)}")
    values = {**DEFAULT, **settings}
    name = check_name(str(values["name"]))
    subnet, gateway = check_subnet(str(values["subnet"]), str(values["gateway"] or ""))
    bridge = check_bridge(str(values["bridge"]))
    return Network(name, network_id(name), bridge, subnet, gateway, default=True)


# -- the host's own networks --------------------------------------------------------------
def host_routes(routes: Path = ROUTES) -> list[tuple[ipaddress.IPv4Network, str]]:
    """The host's IPv4 routes but the default one, with their interface."""
    found = []
    try:
        lines = routes.read_text().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        parts = line.split()
        if len(parts) < 8:
            continue
        dest = ipaddress.IPv4Address(int(parts[1], 16).to_bytes(4, "little"))
        mask = ipaddress.IPv4Address(int(parts[7], 16).to_bytes(4, "little"))
        net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        if net.prefixlen:
            found.append((net, parts[0]))
    return found


def dns_servers(resolv: Path = RESOLV_CONF) -> list[ipaddress.IPv4Address]:
    found = []
    try:
        lines = resolv.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                found.append(ipaddress.IPv4Address(parts[1]))
            except ValueError:
                continue  # IPv6: not in an IPv4 subnet
    return found


def host_conflict(subnet: str, bridge: str) -> str:
    """What on the host ``subnet`` overlaps ("" if nothing): a route (not the default one,
    not the network's own bridge), loopback, or a DNS server."""
    net = ipaddress.IPv4Network(subnet)
    if net.overlaps(ipaddress.IPv4Network("127.0.0.0/8")):
        return "loopback (127.0.0.0/8)"
    for route, device in host_routes():
        if device != bridge and net.overlaps(route):
            return f"the host's route to {route} on {device}"
    for server in dns_servers():
        if server in net:
            return f"the host's DNS server {server}"
    return ""


def check_host_overlap(network: Network) -> None:
    conflict = host_conflict(network.subnet, network.bridge)
    if conflict:
        raise InvalidInputError(
            f"network {network.name}: subnet {network.subnet} overlaps {conflict}"
        )


def interface_conflict(bridge: str, *, new: bool) -> str:
    """Why ``bridge`` cannot be a network's bridge ("" if it can): netavark would enslave
    veths to whatever interface has that name. A new network's bridge must not exist at all;
    a known network's may exist only as a bridge (its own, left up by other containers)."""
    device = SYS_NET / bridge
    if not device.exists():
        return ""
    if new:
        return f"an interface named {bridge} already exists on this host"
    if not (device / "bridge").is_dir():
        return f"{bridge} is an interface of this host, not a bridge"
    return ""


def check_bridge_usable(network: Network, *, new: bool = False) -> None:
    conflict = interface_conflict(network.bridge, new=new)
    if conflict:
        raise InvalidInputError(f"network {network.name}: {conflict}")
