"""The node registry: the engine workers that share one Redis, as every client sees them.

Each worker keeps two things in the Redis its channel layer uses (nothing more to run):

    gantry:nodes          a hash: node name -> the node's record (JSON), rewritten every
                          heartbeat; podman-style fields: Name, Host, Pid, Started, LastSeen,
                          Versions, Containers, Running, Stopped
    gantry:node:<name>    the node's lease: "<host> <pid> <started>" of the worker holding the
                          name, expiring LEASE_SECONDS after its last heartbeat

A name has one live worker: a second worker under a name whose lease is held elsewhere is
refused, naming the holder. LastSeen is stamped with Redis's clock, and a record is judged by
Redis's clock too, so hosts whose clocks differ agree on who is online. A node is online while
its heartbeats come: LastSeen within OFFLINE_AFTER seconds, and not stopped cleanly.

The worker (engine.rpc.presence), the CLI (`nodes`) and the web read and write through here.
"""

from __future__ import annotations

import json
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

NODES_KEY = "gantry:nodes"
LEASE_PREFIX = "gantry:node:"
OFFLINE_AFTER = 5.0  # seconds without a heartbeat before a node shows offline
LEASE_SECONDS = OFFLINE_AFTER  # a lease outlives its last heartbeat by as long
ONLINE, OFFLINE = "online", "offline"

# KEYS: the hash, the lease. ARGV: the record (JSON), the owner, the lease in ms.
# Returns the other owner's token when the lease is held by another worker, else nothing.
BEAT_SCRIPT = """
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[2] then
  return owner
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', tonumber(ARGV[3]))
local t = redis.call('TIME')
local record = cjson.decode(ARGV[1])
record['LastSeen'] = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('HSET', KEYS[1], record['Name'], cjson.encode(record))
return false
"""

# KEYS: the hash, the lease. ARGV: the name, the owner. A clean stop: the lease is given up
# and the record says so (it shows offline at once), if this worker still held it.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[2])
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then
  local record = cjson.decode(raw)
  record['Stopped'] = true
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(record))
end
return 1
"""


class Redis(Protocol):  # the parts of redis.Redis used here
    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any: ...
    def hgetall(self, name: str) -> Any: ...
    def hdel(self, name: str, *keys: str) -> Any: ...
    def time(self) -> Any: ...


def redacted(url: str) -> str:
    """A Redis URL fit for a log or an error: its password replaced by ***."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def lease_key(name: str) -> str:
    return LEASE_PREFIX + name


def owner_token(host: str, pid: int, started: float) -> str:
    return f"{host} {pid} {started!r}"


def parse_owner(token: str | bytes) -> tuple[str, int]:
    """(host, pid) of a lease's owner token."""
    text = token.decode(errors="replace") if isinstance(token, bytes) else token
    host, _, rest = text.partition(" ")
    pid = rest.split(" ", 1)[0]
    return host, int(pid) if pid.isdigit() else 0


def beat(client: Redis, record: dict[str, Any], owner: str) -> str | None:
    """Write this node's record and renew its lease. None, or the token of another worker
    that holds the name (nothing is written then)."""
    other = client.eval(
        BEAT_SCRIPT, 2, NODES_KEY, lease_key(record["Name"]),
        json.dumps(record), owner, int(LEASE_SECONDS * 1000),
    )  # fmt: skip
    if other is None:
        return None
    return other.decode(errors="replace") if isinstance(other, bytes) else str(other)


def release(client: Redis, name: str, owner: str) -> bool:
    """Give the name up (a clean stop). False if another worker holds it by now."""
    return bool(client.eval(RELEASE_SCRIPT, 2, NODES_KEY, lease_key(name), name, owner))


def status(record: dict[str, Any], now: float) -> str:
    seen = record.get("LastSeen")
    fresh = isinstance(seen, int | float) and now - seen <= OFFLINE_AFTER
    return ONLINE if fresh and not record.get("Stopped") else OFFLINE


def nodes(client: Redis) -> list[dict[str, Any]]:
    """Every node on record, by name, each with its Status judged by Redis's clock."""
    return listing(client)[1]


def listing(client: Redis) -> tuple[float, list[dict[str, Any]]]:
    """Redis's clock now, and every node on record (as nodes())."""
    seconds, micros = client.time()
    now = float(seconds) + float(micros) / 1e6
    out = []
    for _name, raw in sorted(client.hgetall(NODES_KEY).items()):
        try:
            record = json.loads(raw)
        except ValueError:
            continue  # not ours: skipped, not fatal to the listing
        if isinstance(record, dict):
            record["Status"] = status(record, now)
            out.append(record)
    return now, out


def forget(client: Redis, name: str) -> bool:
    """Remove an offline node's record (an admin's; nothing on the node is touched).
    False when there was none. Refuses an online node (ValueError)."""
    for record in nodes(client):
        if record.get("Name") == name:  # (by the record: a name that is not ours is no key)
            if record["Status"] == ONLINE:
                raise ValueError(f"node {name} is online: stop its engine first")
            return bool(client.hdel(NODES_KEY, name))
    return False
