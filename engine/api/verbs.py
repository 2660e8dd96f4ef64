"""Every verb module, imported once so their ``@op`` handlers are registered, and the startup
hooks the worker runs before it serves, in this order: wired here, in one place."""

from __future__ import annotations

from engine.api import containers, files, images, lab, network, node, runtime, spec, terminal
from engine.api.base import StartupHook

STARTUP: tuple[StartupHook, ...] = (
    images.sweep_store,
    images.recover_pulls,
    containers.reconcile_mounts,
    files.reap_uploads,
    runtime.watch_exits,
)

__all__ = [
    "STARTUP", "containers", "files", "images", "lab", "network", "node", "runtime", "spec",
    "terminal",
]  # fmt: skip
