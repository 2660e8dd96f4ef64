"""The wire between the web and the engine: message types, channel names and the shapes of the
names and ids that cross it. The web imports only this module and engine.errors."""

from __future__ import annotations

import os
import re

REQUEST_TYPE = "engine.request"
REPLY_TYPE = "engine.reply"
# Sent to a request's reply channel every WORKING_INTERVAL seconds while the engine works on it:
# a caller that hears nothing for its timeout knows the engine is gone (killed, restarted) at
# once, not when a long request's whole allowance (a start's: a minute) has passed.
WORKING_TYPE = "engine.working"
WORKING_INTERVAL = 2.0
# Channel names as the channel layer accepts them (channels' own rule, plus a length cap).
CHANNEL_RE = re.compile(r"^[a-zA-Z\d\-_.]+(![\w\-.]*)?$")
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
OP_RE = re.compile(r"^[a-z]+\.[a-z_]+$")
CONTAINER_ID_RE = re.compile(r"^[0-9a-f]{64}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def engine_channel(node: str) -> str:
    """The channel the worker of ``node`` consumes."""
    return f"engine.{node}"


# Who asks, as the web tells the engine in each request ("role", "name"): an admin acts on the
# host as it is; an instructor or a learner has host paths of their own (a sandbox, by name).
ADMIN, INSTRUCTOR, LEARNER = "admin", "instructor", "learner"
ROLES = (ADMIN, INSTRUCTOR, LEARNER)
USER_NAME_RE = re.compile(r"^[a-z0-9_-]{1,32}$")

# The largest config.json spec.put and spec.validate take (characters of text).
SPEC_MAX_BYTES = 1024 * 1024

# Channel-layer groups: engine heartbeats, and container/image state and pull progress.
NODES_GROUP = "gantry.nodes"
EVENTS_GROUP = "gantry.events"

# Terminal traffic between the web's consumers and the engine's hub (no reply).
TERM_TYPE = "engine.term"
MAX_INPUT = 64 * 1024
MAX_ROWS, MAX_COLS = 500, 1000

# The bulk lane of downloads: a Redis list of items, each a kind byte and its payload.
DATA, END, ERROR = b"D", b"E", b"X"
STOP_SUFFIX = ":stop"  # the reader sets <key>:stop when it gives up

# A node's name is part of its channel's name.
# A node's name: what a host name, a channel name and a Redis key all take as they are.
NODE_NAME_RE = re.compile(r"[a-z0-9-]{1,63}")  # whole names: fullmatch


def default_node() -> str:
    """This host's name as a node name: lower case, every other character a '-' (so
    "Lab_Host.example" is "lab-host-example"), at most 63 characters; "node" if none is left."""
    name = re.sub(r"[^a-z0-9]+", "-", os.uname().nodename.lower()).strip("-")[:63]
    return name.strip("-") or "node"


def check_node_name(name: str) -> str:
    """A node name as given (GANTRY_NODE, --node): refused unless [a-z0-9-]{1,63}."""
    if not NODE_NAME_RE.fullmatch(name):
        raise ValueError(
            f"node name {name[:80]!r}: 1 to 63 lower-case letters, digits or '-' "
            "(it names the node's channel and its records)"
        )
    return name


# The lab's milestones, in order: the keys of lab.check's reply, and what the learner reads.
LAB_CHECKS: tuple[tuple[str, str], ...] = (
    ("pulled", "The image is pulled"),
    ("created", "The container is created"),
    ("test_file", "`test` exists in the container's upper dir"),
    ("config", "config.json exists"),
    ("first_exit", "The first start exited with 0"),
    ("mnt_on", "/mnt/on exists"),
    ("top_running", "The container is Up and its process is top"),
    ("exec_saw_test", "An exec session saw `test`"),
    ("gone", "The container is gone and nothing is mounted"),
)
