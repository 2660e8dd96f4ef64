"""One program of the stack, as supervisord starts it (launch/run.py writes the commands):

    python -m launch.program NAME [--user USER] [--home DIR] [--cwd DIR] [--delay S] -- CMD...

It writes $GANTRY_RUN/NAME.pid, waits --delay seconds first when this is a restart (a
service manager's RestartSec: long enough for pages to see the engine offline, short enough
to come back), drops to USER (with that user's groups), and execs CMD in its place, so the pid
written is the program's own and supervisord signals the program itself.
"""

from __future__ import annotations

import argparse
import os
import pwd
import sys
import time
from pathlib import Path


def drop_to(user: str) -> None:
    entry = pwd.getpwnam(user)
    os.initgroups(user, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m launch.program")
    parser.add_argument("name")
    parser.add_argument("--user")
    parser.add_argument("--home")
    parser.add_argument("--cwd")
    parser.add_argument("--delay", type=float, default=0.0)
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("a command after --")
    split = argv.index("--")
    args, command = parser.parse_args(argv[:split]), argv[split + 1 :]
    run = Path(os.environ["GANTRY_RUN"])
    started = run / f"{args.name}.started"  # launch/run.py removes it when the stack starts
    if started.exists() and args.delay > 0:
        time.sleep(args.delay)
    started.touch()
    (run / f"{args.name}.pid").write_text(f"{os.getpid()}\n")
    if args.user:
        drop_to(args.user)
    if args.home:
        os.environ["HOME"] = args.home
    if args.cwd:
        os.chdir(args.cwd)
    os.execvp(command[0], command)  # noqa: S606 (the program itself, no shell between)


if __name__ == "__main__":
    main(sys.argv[1:])
