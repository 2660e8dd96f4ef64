"""Which node a request goes to: the node registry as the web reads it (engine.protocol.nodes),
and where a new container is placed.

"any node" is the least loaded online node: fewest running containers, then most memory
available, then by name; but a user who already has containers on an online node gets that
node (a learner's lab stays on one node). A node named in a request must be on record and
online. This web's own node counts as online when it is not on record (an engine that does
not register: a memory channel layer, a test worker).

The admin may pin roles or users to nodes (GANTRY_NODE_PINS, e.g. "learner=lab-1,lab-2
user:ann=lab-3"; a user's own pin wins over their role's): "any node" then chooses among
those, and another node named is refused."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from engine.errors import EngineOfflineError, NotFoundError, PolicyError
from engine.protocol import NODE_NAME_RE, nodes

CACHE_SECONDS = 1.0  # a page of many requests reads the registry once
REGISTRY_TIMEOUT = 2.0
ANY = "any"

_lock = threading.Lock()
_cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}


def _read(url: str) -> list[dict[str, Any]]:
    import redis

    client = redis.Redis.from_url(
        url, socket_timeout=REGISTRY_TIMEOUT, socket_connect_timeout=REGISTRY_TIMEOUT
    )
    try:
        return nodes.nodes(client)
    except (redis.RedisError, OSError):
        return []  # Redis away: the requests themselves will say "engine offline"
    finally:
        client.close()


def registry_nodes() -> list[dict[str, Any]]:
    """Every node on record with its Status (read at most once a CACHE_SECONDS)."""
    url = settings.REDIS_URL
    with _lock:
        hit = _cache.get(url)
        if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
            return hit[1]
    records = _read(url)
    with _lock:
        _cache[url] = (time.monotonic(), records)
    return records


async def anodes() -> list[dict[str, Any]]:
    # (no database: not on the one thread that serialises the sync code touching it)
    return await sync_to_async(registry_nodes, thread_sensitive=False)()


def forget_cache() -> None:
    with _lock:
        _cache.clear()


def online_names(records: Iterable[dict[str, Any]]) -> list[str]:
    return [str(r["Name"]) for r in records if r.get("Status") == nodes.ONLINE]


def offline_reason(record: dict[str, Any]) -> str:
    why = (
        "its engine was stopped"
        if record.get("Stopped")
        else f"no heartbeat for over {nodes.OFFLINE_AFTER:.0f} s"
    )
    return f"node {record.get('Name')} is offline ({why})"


def check_named(records: list[dict[str, Any]], name: str) -> str:
    """The named node, if on record and online; else NotFoundError or EngineOfflineError."""
    for record in records:
        if record.get("Name") == name:
            if record.get("Status") != nodes.ONLINE:
                raise EngineOfflineError(offline_reason(record))
            return name
    raise NotFoundError(f"node {name[:63]}: no such node")


def least_loaded(records: list[dict[str, Any]]) -> str:
    online = [r for r in records if r.get("Status") == nodes.ONLINE]
    if not online:
        raise EngineOfflineError("no engine node is online")
    best = min(
        online,
        key=lambda r: (int(r.get("Running") or 0), -int(r.get("MemFree") or 0), str(r["Name"])),
    )
    return str(best["Name"])


def with_own(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The registry's nodes, and this web's own node if it is not on record (an engine that
    does not register: a memory channel layer, a test's worker): it is taken to be online."""
    from webui.engine_client import node_name

    own = node_name()
    if any(r.get("Name") == own for r in records):
        return records
    return [*records, {"Name": own, "Status": nodes.ONLINE, "Running": 0, "MemFree": 0}]


def parse_pins(text: str) -> dict[str, list[str]]:
    """GANTRY_NODE_PINS: "KEY=NODE[,NODE...]" words; KEY a role or "user:NAME". A word that
    is not of that shape is refused (ValueError), as a typo must not silently pin nobody."""
    pins: dict[str, list[str]] = {}
    for word in text.split():
        key, sep, names = word.partition("=")
        targets = [n for n in names.split(",") if n]
        if not sep or not key or not targets or not all(NODE_NAME_RE.fullmatch(n) for n in targets):
            raise ValueError(f"GANTRY_NODE_PINS: {word[:80]!r} is not KEY=NODE[,NODE...]")
        pins[key] = targets
    return pins


def pinned(role: str, user_name: str) -> list[str] | None:
    """The nodes this user may be placed on, or None (any). A malformed policy refuses
    placement with its reason (PolicyError) rather than placing anyone anywhere."""
    try:
        pins = parse_pins(settings.GANTRY_NODE_PINS)
    except ValueError as err:
        raise PolicyError(str(err)) from err
    return pins.get(f"user:{user_name}") or pins.get(role)


def choose(
    records: list[dict[str, Any]],
    wanted: str,
    users_nodes: Iterable[str] = (),
    allowed: list[str] | None = None,
) -> str:
    """The node for a new container: ``wanted`` by name, or "any"/"" (see the module);
    only among ``allowed`` when the policy pins this user."""
    wanted = (wanted or ANY).strip()
    records = with_own(records)
    if allowed is not None:
        if wanted != ANY and wanted not in allowed:
            raise PolicyError(f"the placement policy keeps you to node {', '.join(allowed)}")
        records = [r for r in records if r.get("Name") in allowed]
        users_nodes = [n for n in users_nodes if n in allowed]
    if wanted != ANY:
        return check_named(records, wanted)
    online = set(online_names(records))
    mine = Counter(n for n in users_nodes if n in online)
    if mine:
        return min(mine, key=lambda n: (-mine[n], n))
    return least_loaded(records)


async def named_or_own(wanted: str) -> str:
    """The node an image request names (``?node=``, a form's ``node``): on record and online;
    this web's own node when none is named."""
    from webui.engine_client import node_name

    wanted = (wanted or "").strip()
    if not wanted or wanted == node_name():
        return node_name()
    return check_named(with_own(await anodes()), wanted)


async def nodes_to_ask() -> list[str]:
    """Every online node (this web's own first), for the pages that show every node's things."""
    from webui.engine_client import node_name

    own = node_name()
    return [own] + [n for n in online_names(await anodes()) if n != own]
