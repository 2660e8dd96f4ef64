"""How the engine tells the world that something happened: pull progress, state changes,
terminal output. The worker plugs in a channel-layer publisher; the CLI a local one.

Group names (channel-layer groups) used by the engine:
  gantry.nodes            heartbeats            {"type": "engine.heartbeat", ...}
  gantry.events           container/image state {"type": "engine.event", "kind": ..., ...}
  pull.<job>              per-pull progress     {"type": "pull.progress", ...}
"""

from __future__ import annotations

from typing import Any, Protocol


class Publisher(Protocol):
    def publish(self, group: str, event: dict[str, Any]) -> None:
        """Send event to every member of group. Never blocks for long; may drop if a member
        is full (group messages are notifications, not a data stream)."""

    def send(self, channel: str, event: dict[str, Any]) -> None:
        """Send event to one channel (a requester). Blocks while that channel is full."""


class NullPublisher:
    """Publisher for in-process use (the CLI): nobody is listening."""

    def publish(self, group: str, event: dict[str, Any]) -> None:
        return None

    def send(self, channel: str, event: dict[str, Any]) -> None:
        return None


class RecordingPublisher:
    """Publisher that keeps everything, for tests."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def publish(self, group: str, event: dict[str, Any]) -> None:
        self.events.append((group, event))

    def send(self, channel: str, event: dict[str, Any]) -> None:
        self.events.append((channel, event))
