"""The one helper through which the engine runs host commands (runc, mount helpers, ...).

It never uses a shell, closes inherited descriptors, applies a timeout, and turns a failure
into RuntimeFailedError carrying argv, exit status and stderr, so callers report what the tool
said instead of a bare exit code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.errors import RuntimeFailedError

if TYPE_CHECKING:
    import subprocess

DEFAULT_TIMEOUT = 60.0


def run(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv and wait for it. Raises RuntimeFailedError on a non-zero exit (if check),
    on a missing binary and on a timeout (the child is killed first)."""
    import subprocess  # here: most CLI verbs run no command, and it costs 2 ms to import

    args = [str(a) for a in argv]
    try:
        done = subprocess.run(
            args,
            input=input,
            capture_output=True,
            timeout=timeout,
            close_fds=True,
            env=env,
            check=False,
        )
    except FileNotFoundError as err:
        raise RuntimeFailedError(f"{args[0]}: not installed", argv=args, returncode=127) from err
    except subprocess.TimeoutExpired as err:
        raise RuntimeFailedError(
            f"{args[0]}: timed out after {timeout:g}s", argv=args, returncode=-1
        ) from err
    if check and done.returncode != 0:
        stderr = done.stderr.decode(errors="replace").strip()
        last = stderr.splitlines()[-1] if stderr else f"exit status {done.returncode}"
        raise RuntimeFailedError(
            f"{args[0]} {args[1] if len(args) > 1 else ''}: {last}".strip(),
            argv=args,
            returncode=done.returncode,
            stderr=stderr,
        )
    return done


def output(argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Run argv and return its stdout as text."""
    return run(argv, timeout=timeout).stdout.decode(errors="replace")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
