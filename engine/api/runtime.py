"""Runtime verbs: container.start|stop|kill|pause|resume|restart|state|logs|top, exec.run;
and the worker's start-up work: the exit watcher and the reconciliation of every container
(see engine/runtime/lifecycle.py). ``container.remove`` (storage) stops a running container through
the pre-remove hook that engine.runtime.lifecycle registers."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from engine.api.args import Args
from engine.api.base import Context, op
from engine.errors import EngineError
from engine.protocol import CONTAINER_ID_RE
from engine.runtime.execs import exec_bundles
from engine.runtime.exits import ExitWatcher
from engine.runtime.lifecycle import Lifecycle
from engine.runtime.logs import LogCursor, read_log
from engine.runtime.runc import Runc
from engine.storage.containers import Containers
from engine.storage.podjson import ps_json, status_text
from engine.storage.records import ACTIVE_STATES, ContainerRecord

log = logging.getLogger("gantry.engine.api.runtime")

MAX_STOP_TIMEOUT = 3600
MAX_EXEC_TIMEOUT = 600
LOG_LIMIT = 1024 * 1024


def _ref(args: Args) -> str:
    return str(args.get_str("id", required=True, max_len=128))


def summary(record: ContainerRecord) -> dict[str, Any]:
    """What every runtime verb answers: the record's run facts, worded as podman does."""
    return {
        "id": record.id,
        "name": record.name,
        "state": record.state,
        "status": status_text(record),
        "pid": record.pid,
        "conmon_pid": record.conmon_pid,
        "exit_code": record.exit_code,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "error": record.error,
        "tty": record.options.tty,
    }


def _lifecycle(ctx: Context) -> Lifecycle:
    return ctx.engine.get(Lifecycle)


@op("container.start")
def start(ctx: Context, args: Args) -> dict[str, Any]:
    ref = _ref(args)
    args.done()
    return summary(_lifecycle(ctx).start(ref, ctx.publisher))


@op("container.stop")
def stop(ctx: Context, args: Args) -> dict[str, Any]:
    ref = _ref(args)
    timeout = args.get_int("timeout", default=10, lo=0, hi=MAX_STOP_TIMEOUT)
    args.done()
    return summary(_lifecycle(ctx).stop(ref, float(timeout), ctx.publisher))


@op("container.kill")
def kill(ctx: Context, args: Args) -> dict[str, Any]:
    ref = _ref(args)
    raw = args.raw("signal")
    signal = "KILL" if raw is None else raw
    args.done()
    return summary(_lifecycle(ctx).kill(ref, signal, ctx.publisher))


@op("container.pause")
def pause(ctx: Context, args: Args) -> dict[str, Any]:
    ref = _ref(args)
    args.done()
    return summary(_lifecycle(ctx).pause(ref, ctx.publisher))


@op("container.resume")
def resume(ctx: Context, args: Args) -> dict[str, Any]:
    ref = _ref(args)
    args.done()
    return summary(_lifecycle(ctx).resume(ref, ctx.publisher))


@op("container.restart")
def restart(ctx: Context, args: Args) -> dict[str, Any]:
    ref = _ref(args)
    timeout = args.get_int("timeout", default=10, lo=0, hi=MAX_STOP_TIMEOUT)
    args.done()
    return summary(_lifecycle(ctx).restart(ref, float(timeout), ctx.publisher))


@op("container.state")
def state(ctx: Context, args: Args) -> dict[str, Any]:
    """The record synced with reality, podman's ps fields, and ``runc state`` as runc says it
    (null when runc has no such container)."""
    ref = _ref(args)
    args.done()
    lifecycle = _lifecycle(ctx)
    record = lifecycle.get_synced(ref, ctx.publisher)
    runc_state = None
    if record.state in ACTIVE_STATES:
        try:
            runc_state = ctx.engine.get(Runc).state(record.id)
        except EngineError as err:
            runc_state = {"error": err.message}
    paths = ctx.engine.get(Containers).paths(record.id)
    return summary(record) | {
        "ps": ps_json(record),
        "runc": runc_state,
        "exec_sessions": len(exec_bundles(paths.bundle)),
        "oom_killed": bool(record.extra.get("oom_killed")),
        "log_path": str(paths.userdata / "ctr.log"),
    }


@op("container.logs")
def logs(ctx: Context, args: Args) -> dict[str, Any]:
    """The container's output from conmon's log. Without a cursor: the whole log (or its last
    ``tail_bytes``); with the cursor of an earlier answer: only what was appended since
    (a follower calls again with each new cursor)."""
    ref = _ref(args)
    cursor = args.get_str("cursor", max_len=80)
    timestamps = args.get_bool("timestamps")
    tail_bytes = args.get_int("tail_bytes", lo=1, hi=64 * 1024 * 1024)
    limit = args.get_int("limit", default=LOG_LIMIT, lo=1024, hi=16 * LOG_LIMIT)
    args.done()
    record = _lifecycle(ctx).get_synced(ref, ctx.publisher)
    path = ctx.engine.get(Containers).paths(record.id).userdata / "ctr.log"
    chunk = read_log(
        path,
        LogCursor.decode(cursor) if cursor else None,
        timestamps=timestamps,
        limit=limit,
        tail_bytes=None if cursor else tail_bytes,
    )
    return {
        "data": chunk.data.decode(errors="replace"),
        "cursor": chunk.cursor.encode(),
        "truncated": chunk.truncated,
        "more": _log_size(path) > chunk.cursor.offset,
        "state": record.state,
        "status": status_text(record),
    }


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@op("container.top")
def top(ctx: Context, args: Args) -> dict[str, Any]:
    """The container's processes (``runc ps``) with their command lines."""
    ref = _ref(args)
    args.done()
    record = _lifecycle(ctx).get_synced(ref, ctx.publisher)
    if record.state not in ACTIVE_STATES:
        return {"processes": []}
    out = []
    for pid in ctx.engine.get(Runc).ps(record.id):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        out.append(
            {"pid": pid, "cmd": raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")}
        )
    return {"processes": out}


@op("exec.run")
def exec_run(ctx: Context, args: Args) -> dict[str, Any]:
    """``podman exec`` without a terminal: run a command in a running container and answer
    its output (stdout and stderr apart) and exit code."""
    ref = _ref(args)
    command = args.get_str_list("command", max_items=256, max_len=65536)
    env = args.get_str_list("env", max_items=256)
    workdir = args.get_str("workdir", default="", max_len=4096)
    user = args.get_str("user", default="", max_len=256)
    timeout = args.get_int("timeout", default=60, lo=1, hi=MAX_EXEC_TIMEOUT)
    args.done()
    result = _lifecycle(ctx).exec_run(
        ref, command, timeout=float(timeout), env=env, workdir=workdir, user=user
    )
    return {
        "exit_code": result.exit_code,
        "stdout": result.stdout.decode(errors="replace"),
        "stderr": result.stderr.decode(errors="replace"),
        "truncated": result.truncated,
    }


def watch_exits(ctx: Context) -> None:
    """Start the exit watcher, then rebuild every container's state from its files. The
    watch is in place before the reconciliation, so an exit in between is not missed."""
    lifecycle = ctx.engine.get(Lifecycle)
    lifecycle.publisher = ctx.publisher
    watcher = ExitWatcher(
        lifecycle.exit_dir,
        lifecycle.on_exit,
        lambda name: bool(CONTAINER_ID_RE.match(name)),
        stop=ctx.engine.stopping,
    )
    watcher.start()
    lifecycle.watcher = watcher
    changed = lifecycle.reconcile()
    watcher.scan()
    if changed:
        log.info("reconciled %d container(s): %s", len(changed), ", ".join(changed[:20]))
    log.info("exit watcher on %s (pid %d)", lifecycle.exit_dir, os.getpid())
