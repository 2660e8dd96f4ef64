"""netavark, driven as podman 4 drives it: ``netavark --config DIR setup|teardown NETNS`` with
the network options JSON on stdin (the same document for both), a status block on stdout, an
error as ``{"error": ...}``. The config directory holds aardvark-dns's state per network;
aardvark exits by itself when its last container is torn down."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.errors import RuntimeFailedError
from engine.hostfs import proc
from engine.network.networks import Network
from engine.storage.records import PortMapping

NETAVARK = "/usr/lib/podman/netavark"
AARDVARK = "/usr/lib/podman/aardvark-dns"
TIMEOUT = 60.0


def options(
    container_id: str,
    name: str,
    attachments: list[tuple[Network, str]],
    ports: list[PortMapping],
    aliases: list[str],
) -> dict[str, Any]:
    """The NetworkOptions document: one eth<N> per network, its static address given."""
    return {
        "container_id": container_id,
        "container_name": name,
        "port_mappings": [p.netavark() for p in ports],
        "networks": {
            net.name: {
                "interface_name": f"eth{i}",
                "static_ips": [address],
                "aliases": aliases,
            }
            for i, (net, address) in enumerate(attachments)
        },
        "network_info": {net.name: net.info() for net, _ in attachments},
    }


def _run(verb: str, config_dir: Path, netns: Path, opts: dict[str, Any]) -> str:
    config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    argv = [
        NETAVARK, "--config", str(config_dir), "--rootless=false",
        f"--aardvark-binary={AARDVARK}", verb, str(netns),
    ]  # fmt: skip
    done = proc.run(argv, input=json.dumps(opts).encode(), timeout=TIMEOUT, check=False)
    out = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        raise RuntimeFailedError(
            f"netavark {verb}: {_error_of(out, done.stderr.decode(errors='replace'))}",
            argv=argv,
            returncode=done.returncode,
            stderr=done.stderr.decode(errors="replace")[-4000:],
        )
    return out


def _error_of(stdout: str, stderr: str) -> str:
    try:
        message = json.loads(stdout).get("error")
    except (ValueError, AttributeError):
        message = None
    if message:
        return str(message)[:500]
    lines = [line for line in stderr.splitlines() if "syslog" not in line]
    return lines[-1][:500] if lines else "failed"


def setup(config_dir: Path, netns: Path, opts: dict[str, Any]) -> dict[str, Any]:
    """Plug the namespace in; netavark's status block (per network: interfaces with their
    MAC and address, DNS servers and search domains)."""
    out = _run("setup", config_dir, netns, opts)
    try:
        status: dict[str, Any] = json.loads(out)
    except ValueError as err:
        raise RuntimeFailedError(f"netavark setup: unreadable status: {err}") from None
    return status


def teardown(config_dir: Path, netns: Path, opts: dict[str, Any]) -> None:
    _run("teardown", config_dir, netns, opts)
