"""This worker in the node registry (engine.protocol.nodes): it claims its node name at start,
refreshes its record every heartbeat and gives the name up when it stops. And its state root:
one worker per root, whatever its node name (hold_root).

A name already held by a live worker is refused, naming that worker's host and pid. A lease
left by a worker of this host that is gone (killed, and restarted by its supervisor before
the lease ran out) is taken over at once."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
from typing import Any

from engine.core import Engine
from engine.errors import EngineError
from engine.hostfs import proc
from engine.protocol import nodes
from engine.runtime.nodeinfo import node_info
from engine.storage.containers import Containers
from engine.storage.records import ACTIVE_STATES

log = logging.getLogger("gantry.engine.presence")


class NodeNameTakenError(EngineError):
    pass


ROOT_LOCK = "worker.lock"


def hold_root(engine: Engine) -> int:
    """Lock the state root for this worker's life (the kernel lets go when it dies, however it
    dies); the lock file says who holds it. Raises EngineError naming the worker that holds it.
    The CLI does not take this lock: it shares the root with its node's worker by file locks."""
    path = engine.config.root / ROOT_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = os.pread(fd, 200, 0).decode(errors="replace").split()
        os.close(fd)
        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        node, pid = (holder + ["?", "?"])[:2]
        raise EngineError(
            f"state root {engine.config.root} is in use by the engine of node {node} "
            f"(pid {pid}): each node needs a root of its own (GANTRY_ROOT)"
        ) from err
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{engine.config.node} {os.getpid()}\n".encode(), 0)
    return fd


def redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError, OSError)


class Presence:
    def __init__(self, engine: Engine, client: nodes.Redis) -> None:
        self.engine = engine
        self.client = client
        self.name = engine.config.node
        self.host = socket.gethostname()
        self.owner = nodes.owner_token(self.host, os.getpid(), engine.started)
        self.versions: dict[str, Any] | None = None

    @classmethod
    def from_url(cls, engine: Engine, url: str) -> Presence:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        return cls(engine, client)

    def claim(self) -> None:
        """Take the name, or raise NodeNameTakenError naming the worker that holds it. With
        Redis out of reach the worker starts all the same (as it does without its channel
        layer); its heartbeats claim the name once Redis is back."""
        try:
            other = nodes.beat(self.client, self.record(), self.owner)
        except redis_errors() as err:
            log.warning("node registry out of reach, name not claimed yet: %s", err)
            return
        if other is None:
            return
        host, pid = nodes.parse_owner(other)
        if host == self.host and (pid == os.getpid() or not proc.pid_alive(pid)):
            log.info("taking node %s over from pid %d of this host, which is gone", self.name, pid)
            self.client.eval(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end",
                1, nodes.lease_key(self.name), other,
            )  # fmt: skip
            if nodes.beat(self.client, self.record(), self.owner) is None:
                return
        raise NodeNameTakenError(
            f"node {self.name} is already online: its engine runs on host {host}, pid {pid}"
        )

    def beat(self) -> None:
        """Refresh this node's record and lease (called every heartbeat; never raises)."""
        try:
            other = nodes.beat(self.client, self.record(), self.owner)
        except Exception as err:  # Redis away: the next beat tries again
            log.warning("node registry: %s", err)
            return
        if other is not None:
            host, pid = nodes.parse_owner(other)
            log.error("node %s is held by another engine (host %s, pid %d)", self.name, host, pid)

    def release(self) -> None:
        try:
            nodes.release(self.client, self.name, self.owner)
        except Exception as err:
            log.warning("node registry: %s", err)

    def record(self) -> dict[str, Any]:
        if self.versions is None:
            info = node_info(self.engine.config)
            keys = ("engine", "runc", "conmon", "kernel", "os", "arch")
            self.versions = {k: info[k] for k in keys if k in info}
        states = [r.state for r in self.engine.get(Containers).list()]
        return {
            "Name": self.name,
            "Host": self.host,
            "Pid": os.getpid(),
            "Started": self.engine.started,
            "Versions": self.versions,
            "Containers": len(states),
            "Running": sum(1 for s in states if s in ACTIVE_STATES),
        } | load(self.engine)


def load(engine: Engine) -> dict[str, Any]:
    """How busy the host is: the 1-minute load average, bytes of memory available, bytes free
    on the state root's filesystem (None where unreadable)."""
    out: dict[str, Any] = {"Load": round(os.getloadavg()[0], 2), "MemFree": None, "DiskFree": None}
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    out["MemFree"] = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        st = os.statvfs(engine.config.root)
        out["DiskFree"] = st.f_bavail * st.f_frsize
    except OSError:
        pass
    return out
