"""A container's network from start to teardown, once each.

connect(): an address per network (ipam), the namespace (netns), netavark setup, then
/etc/resolv.conf and /etc/hosts for the container (userdata files config.json binds). What it
did is written to userdata/network.json *before* netavark runs, so a crash at any point is
undone by the next disconnect(): that file is the one mark of "set up, not yet torn down".
disconnect(): netavark teardown with the very document setup got, the namespace, the
addresses, the file; a second call finds no file and does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import EngineError, InvalidInputError, PolicyError
from engine.hostfs import atomic
from engine.network import ipam, netavark, netns
from engine.network.networks import (
    HOST,
    NONE,
    check_bridge_usable,
    check_host_overlap,
    dns_servers,
)
from engine.network.store import Networks
from engine.storage.records import PortMapping

log = logging.getLogger("gantry.engine.network")
STATE = "network.json"
SEARCH = "dns.podman"  # aardvark-dns's domain, as netavark reports it


@dataclass(frozen=True)
class Plan:
    """What connect() needs of a container."""

    container_id: str
    name: str
    hostname: str
    network: str  # "none", "host", "bridge" or a network's name
    hosts: Callable[[str], str]  # /etc/hosts for the container at an address (spec's text)
    ports: tuple[PortMapping, ...] = ()
    dns: tuple[str, ...] = ()


def state_of(userdata: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = atomic.read_json(userdata / STATE)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"torn": True}
    return data


def config_dir(root: Path) -> Path:
    return root / "networks" / "netavark"


class Connecting:
    """A network being set up: netavark runs in a thread while runc creates the container
    (which joins the namespace, already made); ``wait()`` before ``runc start``."""

    def __init__(self, summary: dict[str, Any], work: Callable[[], dict[str, Any]] | None) -> None:
        self.summary = summary
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if work is not None:
            self._thread = threading.Thread(target=self._run, args=(work,), name="netavark")
            self._thread.start()

    def _run(self, work: Callable[[], dict[str, Any]]) -> None:
        try:
            self.summary = work()
        except BaseException as err:  # handed to wait()'s caller
            self._error = err

    def wait(self) -> dict[str, Any]:
        """What inspect shows of the network; raises what the setup raised (the caller's
        clean-up, disconnect(), undoes what was made)."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self.summary


def connect(networks: Networks, plan: Plan, userdata: Path) -> Connecting:
    """Start setting the container's network up: its address, its namespace, its resolv.conf
    and hosts now (runc create binds them); netavark in the background."""
    root = Path(networks.engine.config.root)
    if plan.network == NONE:
        return Connecting({}, None)
    if plan.network == HOST:
        _write_resolv(userdata, list(plan.dns) or [str(s) for s in dns_servers()], [])
        return Connecting({"mode": HOST}, None)
    network = networks.get(plan.network)
    check_host_overlap(network)
    check_bridge_usable(network)
    address = ipam.allocate(root, network, plan.container_id)
    path = netns.path_of(plan.container_id)
    aliases = sorted({plan.name, plan.container_id[:12]})
    opts = netavark.options(
        plan.container_id, plan.name, [(network, address)], list(plan.ports), aliases
    )
    state = {"netns": str(path), "options": opts, "network": network.name}
    atomic.write_json(userdata / STATE, state)  # from here on, disconnect() undoes it all
    netns.create(plan.container_id)
    if network.dns_enabled:  # aardvark-dns answers on the gateway, as netavark will say
        _write_resolv(userdata, list(plan.dns) or [network.gateway], [SEARCH])
    else:
        _write_resolv(userdata, list(plan.dns) or [str(s) for s in dns_servers()], [])
    atomic.write_bytes(userdata / "hosts", plan.hosts(address).encode(), 0o644)

    def work() -> dict[str, Any]:
        status = netavark.setup(config_dir(root), path, opts)
        summary = _summary(network.name, status, plan.ports, str(path))
        atomic.write_json(userdata / STATE, {**state, "summary": summary})
        return summary

    return Connecting({}, work)


def disconnect(networks: Networks, container_id: str, userdata: Path) -> bool:
    """Tear the container's network down if it is up (or half up); False when nothing was.
    netavark's complaints are warnings: the namespace and addresses go whatever it says."""
    root = Path(networks.engine.config.root)
    state = state_of(userdata)
    if state is None:  # a start cut off before its state was written: its lease, if any
        netns.remove(container_id)
        ipam.release_everywhere(root, container_id)
        return False
    opts = state.get("options")
    path = netns.path_of(container_id)
    if isinstance(opts, dict) and path.exists():
        try:
            netavark.teardown(config_dir(root), path, opts)
        except EngineError as err:
            log.warning("teardown of %s: %s", container_id[:12], err.message)
    netns.remove(container_id)
    for name in (opts or {}).get("networks", {}) if isinstance(opts, dict) else ():
        with contextlib.suppress(EngineError, OSError):
            ipam.release(root, name, container_id)
    (userdata / STATE).unlink(missing_ok=True)
    return True


def check_choice(networks: Networks, network: str, allow_host: bool) -> str:
    """The network a create names, checked: none, host (when policy allows) or one that
    exists (``bridge`` is the default)."""
    if network == NONE:
        return NONE
    if network == HOST:
        if not allow_host:
            raise PolicyError("--network host is not allowed by the engine's policy")
        return HOST
    if not isinstance(network, str) or not network:
        raise InvalidInputError("--network: none, host, bridge or a network's name")
    return networks.get(network).name


def _summary(
    name: str, status: dict[str, Any], ports: tuple[PortMapping, ...], path: str
) -> dict[str, Any]:
    """Per network: address, prefix, gateway, MAC; and the namespace's path."""
    found: dict[str, Any] = {}
    block = status.get(name) or {}
    for interface, info in (block.get("interfaces") or {}).items():
        for subnet in info.get("subnets") or []:
            ip, _, prefix = str(subnet.get("ipnet", "")).partition("/")
            found[name] = {
                "interface": interface,
                "ip": ip,
                "prefix": int(prefix or 0),
                "gateway": str(subnet.get("gateway", "")),
                "mac": str(info.get("mac_address", "")),
            }
    return {"netns": path, "networks": found, "ports": [p.to_dict() for p in ports]}


def _write_resolv(userdata: Path, servers: list[str], searches: list[str]) -> None:
    lines = [f"search {' '.join(searches)}"] if searches else []
    lines += [f"nameserver {s}" for s in servers[:3]]
    atomic.write_bytes(userdata / "resolv.conf", ("\n".join(lines) + "\n").encode(), 0o644)


def boot_time(stat: Path = Path("/proc/stat")) -> float:
    """When this host booted (unix seconds)."""
    for line in stat.read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def forget_before_boot(root: Path) -> int:
    """aardvark-dns's files written before this boot (its pid file, each network's names):
    a reboot took the namespaces, the bridge and the process, and a stale pid file could
    make netavark signal whatever process has that pid now. How many went."""
    directory = config_dir(root) / "aardvark-dns"
    booted = boot_time()
    count = 0
    for path in directory.iterdir() if directory.is_dir() else []:
        try:
            if path.is_file() and path.stat().st_mtime < booted:
                path.unlink()
                count += 1
        except OSError:
            continue
    return count
