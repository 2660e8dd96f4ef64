"""The wire between the web and the engine: message types, channel names and the shapes of the
names and ids that cross it. The web imports only this module and engine.errors."""

from __future__ import annotations

import re

REQUEST_TYPE = "engine.request"
REPLY_TYPE = "engine.reply"
# Channel names as the channel layer accepts them (channels' own rule, plus a length cap).
CHANNEL_RE = re.compile(r"^[a-zA-Z\d\-_.]+(![\w\-.]*)?$")
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
OP_RE = re.compile(r"^[a-z]+\.[a-z_]+$")
CONTAINER_ID_RE = re.compile(r"^[0-9a-f]{64}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def engine_channel(node: str) -> str:
    """The channel the worker of ``node`` consumes."""
    return f"engine.{node}"
