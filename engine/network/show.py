"""What the Network tab shows of a container: its namespace and veth pair, the addresses and
routes as ``ip -n`` prints them, the published ports and the iptables rules netavark made for
it, and the commands that do the same by hand."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from engine.errors import RuntimeFailedError
from engine.hostfs import proc
from engine.network import attach, netavark, netns
from engine.network.networks import HOST, NONE, Network
from engine.storage.records import ContainerRecord

IPTABLES = "/usr/sbin/iptables"
SYS_NET = Path("/sys/class/net")


def _ip(name: str, *args: str) -> str:
    try:
        return proc.output([netns.IP, "-n", name, *args], timeout=10)
    except RuntimeFailedError as err:
        return f"({err.message})"


def host_veth(name: str, interface: str = "eth0") -> str:
    """The host end of the container's veth pair: eth0@ifN in the namespace is the host's
    interface with index N."""
    line = _ip(name, "-o", "link", "show", interface)
    match = re.search(rf"{re.escape(interface)}@if(\d+)", line)
    if not match:
        return ""
    for link in SYS_NET.iterdir() if SYS_NET.is_dir() else []:
        try:
            if (link / "ifindex").read_text().strip() == match[1]:
                return link.name
        except OSError:
            continue
    return ""


def firewall_rules(needles: list[str]) -> list[str]:
    """The nat and filter rules that name any of ``needles`` (the container's address or id,
    its network's subnet), as ``iptables -t TABLE -S`` prints them."""
    out = []
    for table in ("nat", "filter"):
        try:
            text = proc.output([IPTABLES, "-t", table, "-S"], timeout=10)
        except RuntimeFailedError:
            continue
        out += [
            f"-t {table} {line}"
            for line in text.splitlines()
            if any(n and n in line for n in needles)
        ]
    return out


def network_view(
    record: ContainerRecord, userdata: Path, network: Network | None, config_dir: Path
) -> dict[str, Any]:
    mode = record.options.network
    state = attach.state_of(userdata) or {}
    found = state.get("summary")
    summary: dict[str, Any] = found if isinstance(found, dict) else {}
    running = bool(summary) and record.state in ("running", "paused")
    name = netns.name_of(record.id)
    live = (summary.get("networks") or {}).get(network.name if network else "", {})
    address = str(live.get("ip", ""))
    view: dict[str, Any] = {
        "mode": mode,
        "network": network.to_json() if network else None,
        "running": running,
        "netns": str(netns.path_of(record.id)) if network else "",
        "netns_name": name if network else "",
        "address": address,
        "prefix": live.get("prefix", 0),
        "gateway": live.get("gateway", ""),
        "mac": live.get("mac", ""),
        "veth": {"host": host_veth(name) if running else "", "container": "eth0"},
        "addresses": _ip(name, "addr") if running else "",
        "routes": _ip(name, "route") if running else "",
        "ports": [p.to_dict() | {"text": p.text()} for p in record.options.ports],
        "rules": (
            firewall_rules(
                [f"{address}/", f"{address}:", record.id]
                + [f"--dport {p.host_port} " for p in record.options.ports]
            )
            if running and address
            else []
        ),
        "setup_json": json.dumps(state.get("options"), indent=2) if state.get("options") else "",
    }
    view["commands"] = commands(record, network, config_dir)
    return view


def commands(record: ContainerRecord, network: Network | None, config_dir: Path) -> list[list[str]]:
    """[label, command] pairs: podman's flags, then the steps by hand."""
    flags = ["--network", record.options.network]
    for p in record.options.ports:
        flags += ["-p", f"{p.host_ip}:{p.host_port}:{p.container_port}/{p.protocol}"]
    for server in record.options.dns:
        flags += ["--dns", server]
    out = [["podman", shlex.join(["podman", "create", *flags, record.image_name])]]
    if record.options.network in (NONE, HOST) or network is None:
        what = "only loopback" if record.options.network == NONE else "the host's network"
        out.append(["runc", f'config.json linux.namespaces: {what} (no "path")'])
        return out
    name = netns.name_of(record.id)
    path = str(netns.path_of(record.id))
    out += [
        ["namespace", shlex.join(["ip", "netns", "add", name])],
        [
            "netavark",
            shlex.join([
                netavark.NETAVARK, "--config", str(config_dir),
                f"--aardvark-binary={netavark.AARDVARK}", "setup", path,
            ]) + " < network.json",
        ],
        ["runc", f'config.json linux.namespaces: {{"type": "network", "path": "{path}"}}'],
        ["addresses", shlex.join(["ip", "-n", name, "addr"])],
        ["routes", shlex.join(["ip", "-n", name, "route"])],
        ["firewall", "iptables -t nat -S | grep " + shlex.quote(record.id[:12])],
        [
            "teardown",
            shlex.join([netavark.NETAVARK, "--config", str(config_dir), "teardown", path])
            + " < network.json; " + shlex.join(["ip", "netns", "delete", name]),
        ],
    ]  # fmt: skip
    return out
