"""CLI verbs of the runtime domain: start, stop, kill, pause, unpause, restart, logs, exec,
top — podman's words, flags, output and exit statuses."""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.cli.call import call, each_name
from engine.cli.output import host_env
from engine.core import Engine
from engine.errors import RuntimeFailedError
from engine.protocol import verbs
from engine.protocol.check import Verb

if TYPE_CHECKING:
    from engine.runtime.lifecycle import Lifecycle

FOLLOW_INTERVAL = 0.1


def _lifecycle(engine: Engine) -> Lifecycle:
    """The runtime service, imported when a verb runs (it brings the container stack and
    registers the runtime's hooks on Containers)."""
    from engine.runtime.lifecycle import Lifecycle

    return engine.get(Lifecycle)


def _each(engine: Engine, names: list[str], verb: Any) -> int:
    """Run verb on every name; print each name done (as podman does), report failures and
    carry on with the others (125 for start, stop, kill... of what cannot be done)."""

    def act(name: str) -> None:
        verb(name)
        print(name)

    return each_name(names, act)


def _run_each(
    engine: Engine, names: list[str], verb: Verb[Any, Any], args_for: Callable[[str], Any]
) -> int:
    """Run ``verb`` on each container named, with the arguments ``args_for(name)`` makes."""
    return _each(engine, names, lambda name: call(engine, verb, args_for(name)))


def _by_name(verb: Verb[verbs.Id, Any]) -> Callable[[Engine, argparse.Namespace], int]:
    """start, pause, unpause: the verb on each container named."""
    return lambda engine, args: _run_each(engine, args.names, verb, lambda n: verbs.Id(id=n))


def _with_time(verb: Verb[verbs.Stop, Any]) -> Callable[[Engine, argparse.Namespace], int]:
    """stop, restart: the verb on each container named, with -t seconds before SIGKILL."""

    def run(engine: Engine, args: argparse.Namespace) -> int:
        return _run_each(engine, args.names, verb, lambda n: verbs.Stop(id=n, timeout=args.time))

    return run


cmd_start = _by_name(verbs.CONTAINER_START)
cmd_pause = _by_name(verbs.CONTAINER_PAUSE)
cmd_unpause = _by_name(verbs.CONTAINER_RESUME)
cmd_stop = _with_time(verbs.CONTAINER_STOP)
cmd_restart = _with_time(verbs.CONTAINER_RESTART)


def cmd_kill(engine: Engine, args: argparse.Namespace) -> int:
    kill = verbs.CONTAINER_KILL
    return _run_each(engine, args.names, kill, lambda n: verbs.Kill(id=n, signal=args.signal))


GO_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)")
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def log_time(text: str, now: float | None = None) -> float:
    """podman logs' --since/--until: an RFC 3339 time or date (local time without a zone),
    unix seconds, or a Go duration ("10m", "1h30m") before now. Seconds since the epoch."""
    now = time.time() if now is None else now
    value = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    if value and GO_DURATION.sub("", value) == "":
        return now - sum(float(n) * DURATION_UNITS[u] for n, u in GO_DURATION.findall(value))
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text[:60]!r}: use an RFC 3339 time (2026-12-07T10:00:00Z), a date, unix "
            "seconds, or a duration such as 10m or 1h30m"
        ) from None


def cmd_logs(engine: Engine, args: argparse.Namespace) -> int:
    """The container's output; with -f, keep printing what it writes until it stops."""
    from engine.runtime.logs import LogChunk, LogCursor, last_lines, read_log
    from engine.storage.containers import Containers
    from engine.storage.records import ACTIVE_STATES

    lifecycle = _lifecycle(engine)
    record = lifecycle.get_synced(args.name)
    path = engine.get(Containers).paths(record.id).userdata / "ctr.log"
    cursor: LogCursor | None = None
    last_check = 0.0
    window = {"since": args.since, "until": args.until}

    def write(chunk: LogChunk) -> None:  # the container's stderr to ours, as podman logs
        write_runs(chunk.segments)

    def write_runs(runs: Iterable[tuple[bytes, bytes]]) -> None:
        for stream, data in runs:
            out = sys.stderr.buffer if stream == b"stderr" else sys.stdout.buffer
            out.write(data)
            out.flush()

    if args.tail >= 0:  # what is there now, its last lines only; then follow as usual
        held: list[tuple[bytes, bytes]] = []
        while True:
            chunk = read_log(path, cursor, timestamps=args.timestamps, **window)
            held += chunk.segments
            moved = cursor is None or chunk.cursor != cursor
            cursor = chunk.cursor
            if not (moved and chunk.data):
                break
        write_runs(last_lines(held, args.tail))
        if not args.follow:
            return 0

    while True:
        chunk = read_log(path, cursor, timestamps=args.timestamps, **window)
        write(chunk)
        moved = cursor is None or chunk.cursor != cursor
        cursor = chunk.cursor
        if moved and chunk.data:
            continue  # there may be more right away
        if not args.follow:
            return 0
        if time.monotonic() - last_check > 0.5:
            last_check = time.monotonic()
            if lifecycle.get_synced(record.id).state not in ACTIVE_STATES:
                write(read_log(path, cursor, timestamps=args.timestamps, **window))
                return 0
        time.sleep(FOLLOW_INTERVAL)


def cmd_exec(engine: Engine, args: argparse.Namespace) -> int:
    """Run a command in a running container; exit with its exit status (podman's 125-127
    when the exec itself fails)."""
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("Error: must provide a non-empty command to start an exec session", file=sys.stderr)
        return 125
    if args.tty or args.interactive:
        from engine.cli.terminal import exec_interactive

        return exec_interactive(engine, args, command)
    try:
        result = _lifecycle(engine).exec_run(
            args.name,
            command,
            timeout=1e9,
            max_output=1 << 62,
            env=host_env(args.env),
            workdir=args.workdir or "",
            user=args.user or "",
        )
    except RuntimeFailedError as err:
        print(f"Error: {err.message}", file=sys.stderr)
        text = err.message.lower()
        if "no such file" in text or "not found" in text:
            return 127
        return 126 if "permission denied" in text else 125
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(result.stderr)
    sys.stderr.buffer.flush()
    return result.exit_code


def cmd_top(engine: Engine, args: argparse.Namespace) -> int:
    from engine.storage.records import ACTIVE_STATES

    record = _lifecycle(engine).get_synced(args.name)
    if record.state not in ACTIVE_STATES:
        print(f"Error: container {record.name} is not running", file=sys.stderr)
        return 125
    print("PID     COMMAND")
    for process in call(engine, verbs.CONTAINER_TOP, verbs.Id(id=record.id))["processes"]:
        print(f"{process['pid']:<7} {process['cmd']}")
    return 0


def register(sub: Any) -> None:
    """Add this domain's verbs to the argparse subparsers."""

    def verb(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        p.set_defaults(func=func)
        return p

    p = verb("start", cmd_start, "start one or more containers")
    p.add_argument("names", nargs="+", metavar="NAME")
    p = verb("stop", cmd_stop, "stop containers (stop signal, then SIGKILL after --time)")
    p.add_argument("-t", "--time", type=int, default=10, help="seconds to wait before SIGKILL")
    p.add_argument("names", nargs="+", metavar="NAME")
    p = verb("kill", cmd_kill, "send a signal to running containers (default SIGKILL)")
    p.add_argument("-s", "--signal", default="KILL", help="signal name or number")
    p.add_argument("names", nargs="+", metavar="NAME")
    p = verb("pause", cmd_pause, "pause running containers (freezer cgroup)")
    p.add_argument("names", nargs="+", metavar="NAME")
    p = verb("unpause", cmd_unpause, "resume paused containers")
    p.add_argument("names", nargs="+", metavar="NAME")
    p = verb("restart", cmd_restart, "stop (if running) and start containers")
    p.add_argument("-t", "--time", type=int, default=10, help="seconds to wait before SIGKILL")
    p.add_argument("names", nargs="+", metavar="NAME")
    p = verb("logs", cmd_logs, "print a container's output (conmon's log)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")
    p.add_argument(
        "-n", "--tail", type=int, default=-1, metavar="N", help="only the last N lines (-1: all)"
    )
    p.add_argument(
        "--since", type=log_time, metavar="TIME",
        help="only lines after TIME: RFC 3339, a date, unix seconds, or a duration (10m, 1h30m)",
    )  # fmt: skip
    p.add_argument("--until", type=log_time, metavar="TIME", help="only lines before TIME")
    p.add_argument("name", metavar="NAME")
    p = verb("exec", cmd_exec, "run a command in a running container")
    p.add_argument("-e", "--env", action="append", default=[], help="KEY=VALUE")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-u", "--user", help="USER[:GROUP] inside the container")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("name", metavar="NAME")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD")
    p = verb("top", cmd_top, "list a container's processes")
    p.add_argument("name", metavar="NAME")
