"""A container's network namespace: /run/netns/gantry-<id> (``ip netns`` sees it, so
``ip -n gantry-<id> addr`` shows what the container sees). Made before ``runc create``, which
joins it through config.json's network namespace path; removed after netavark's teardown (the
namespace must stay mounted until then, or netavark 1.4 leaves firewall rules behind)."""

from __future__ import annotations

from pathlib import Path

from engine.errors import RuntimeFailedError
from engine.hostfs import proc

NETNS_DIR = Path("/run/netns")
PREFIX = "gantry-"
IP = "/usr/sbin/ip"


def name_of(container_id: str) -> str:
    return PREFIX + container_id[:32]


def path_of(container_id: str) -> Path:
    return NETNS_DIR / name_of(container_id)


def create(container_id: str) -> Path:
    """A fresh namespace for the container (one left by a crash is replaced)."""
    name = name_of(container_id)
    if path_of(container_id).exists():
        remove(container_id)
    proc.run([IP, "netns", "add", name], timeout=30)
    return path_of(container_id)


def remove(container_id: str) -> bool:
    """Unmount and delete the namespace's file; False when there was none."""
    if not path_of(container_id).exists():
        return False
    try:
        proc.run([IP, "netns", "delete", name_of(container_id)], timeout=30)
    except RuntimeFailedError:
        if path_of(container_id).exists():
            raise
    return True


def ours() -> list[str]:
    """The names of every Gantry namespace on this host (a leak check's answer)."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(PREFIX))
    except FileNotFoundError:
        return []
