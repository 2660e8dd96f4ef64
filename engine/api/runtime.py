"""Runtime verbs: container.start|stop|kill|pause|resume|restart|state|logs|top, exec.run;
and the worker's start-up work: the exit watcher and the reconciliation of every container
(see engine/runtime/lifecycle.py). ``container.remove`` (storage) stops a running container through
the pre-remove hook that engine.runtime.lifecycle registers."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from engine.api.base import Context, op
from engine.errors import EngineError
from engine.protocol import CONTAINER_ID_RE, verbs
from engine.runtime.execs import exec_bundles
from engine.runtime.exits import ExitWatcher
from engine.runtime.lifecycle import Lifecycle
from engine.runtime.logs import LogCursor, read_log
from engine.runtime.runc import Runc
from engine.storage.containers import Containers
from engine.storage.podjson import ps_json, status_text
from engine.storage.records import ACTIVE_STATES, ContainerRecord

log = logging.getLogger("gantry.engine.api.runtime")


def summary(record: ContainerRecord) -> verbs.Summary:
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


@op(verbs.CONTAINER_START)
def start(ctx: Context, args: verbs.Id) -> verbs.Summary:
    return summary(_lifecycle(ctx).start(args.id, ctx.publisher))


@op(verbs.CONTAINER_STOP)
def stop(ctx: Context, args: verbs.Stop) -> verbs.Summary:
    return summary(_lifecycle(ctx).stop(args.id, float(args.timeout), ctx.publisher))


@op(verbs.CONTAINER_KILL)
def kill(ctx: Context, args: verbs.Kill) -> verbs.Summary:
    return summary(_lifecycle(ctx).kill(args.id, args.signal, ctx.publisher))


@op(verbs.CONTAINER_PAUSE)
def pause(ctx: Context, args: verbs.Id) -> verbs.Summary:
    return summary(_lifecycle(ctx).pause(args.id, ctx.publisher))


@op(verbs.CONTAINER_RESUME)
def resume(ctx: Context, args: verbs.Id) -> verbs.Summary:
    return summary(_lifecycle(ctx).resume(args.id, ctx.publisher))


@op(verbs.CONTAINER_RESTART)
def restart(ctx: Context, args: verbs.Stop) -> verbs.Summary:
    return summary(_lifecycle(ctx).restart(args.id, float(args.timeout), ctx.publisher))


@op(verbs.CONTAINER_STATE)
def state(ctx: Context, args: verbs.Id) -> verbs.State:
    """The record synced with reality, podman's ps fields, and ``runc state`` as runc says it
    (null when runc has no such container)."""
    lifecycle = _lifecycle(ctx)
    record = lifecycle.get_synced(args.id, ctx.publisher)
    runc_state = None
    if record.state in ACTIVE_STATES:
        try:
            runc_state = ctx.engine.get(Runc).state(record.id)
        except EngineError as err:
            runc_state = {"error": err.message}
    paths = ctx.engine.get(Containers).paths(record.id)
    return {
        **summary(record),
        "ps": ps_json(record),
        "runc": runc_state,
        "exec_sessions": len(exec_bundles(paths.bundle)),
        "oom_killed": bool(record.extra.get("oom_killed")),
        "log_path": str(paths.userdata / "ctr.log"),
    }


@op(verbs.CONTAINER_LOGS)
def logs(ctx: Context, args: verbs.Logs) -> verbs.LogChunk:
    """The container's output from conmon's log. Without a cursor: the whole log (or its last
    ``tail_bytes``); with the cursor of an earlier answer: only what was appended since
    (a follower calls again with each new cursor)."""
    record = _lifecycle(ctx).get_synced(args.id, ctx.publisher)
    path = ctx.engine.get(Containers).paths(record.id).userdata / "ctr.log"
    chunk = read_log(
        path,
        LogCursor.decode(args.cursor) if args.cursor else None,
        timestamps=args.timestamps,
        limit=args.limit,
        tail_bytes=None if args.cursor else args.tail_bytes,
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


@op(verbs.CONTAINER_TOP)
def top(ctx: Context, args: verbs.Id) -> verbs.Processes:
    """The container's processes (``runc ps``) with their command lines."""
    record = _lifecycle(ctx).get_synced(args.id, ctx.publisher)
    if record.state not in ACTIVE_STATES:
        return {"processes": []}
    out: list[verbs.Process] = []
    for pid in ctx.engine.get(Runc).ps(record.id):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        out.append(
            {"pid": pid, "cmd": raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")}
        )
    return {"processes": out}


@op(verbs.EXEC_RUN)
def exec_run(ctx: Context, args: verbs.ExecRun) -> verbs.ExecResult:
    """``podman exec`` without a terminal: run a command in a running container and answer
    its output (stdout and stderr apart) and exit code."""
    result = _lifecycle(ctx).exec_run(
        args.id,
        args.command,
        timeout=float(args.timeout),
        env=args.env,
        workdir=args.workdir,
        user=args.user,
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
