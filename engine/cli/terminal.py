"""`exec -t -i` and `attach` in a real terminal, as podman's: raw mode, the window size
followed (SIGWINCH → conmon's ctl FIFO), Ctrl-P Ctrl-Q detaches from `attach`.

The CLI runs in-process as root, so it talks to conmon's attach socket itself (conmon accepts
several clients: the browser panes keep working meanwhile)."""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import sys
import termios
import tty
from collections.abc import Callable, Iterator
from typing import Any

from engine.cli.output import host_env
from engine.core import Engine
from engine.errors import EngineError, InvalidInputError, InvalidStateError

DETACH_KEYS = "ctrl-p,ctrl-q"  # podman's default
CTRL_SPECIALS = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}
PACKET = 8193
INPUT_PACKET = 32 * 1024


def register(sub: Any) -> None:
    p = sub.add_parser("attach", help="attach to a running container's terminal")
    p.add_argument("--no-stdin", action="store_true", help="do not send input")
    p.add_argument(
        "--detach-keys",
        default=DETACH_KEYS,
        metavar="KEYS",
        help='keys that detach, as podman spells them (default "ctrl-p,ctrl-q"; "" for none)',
    )
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_attach)


def parse_detach_keys(spec: str) -> bytes:
    """podman's --detach-keys: comma-separated keys, each one character or ctrl-<a-z@[\\]^_>;
    the empty string means no detaching."""
    keys = bytearray()
    for part in spec.split(",") if spec else []:
        if len(part) == 1:
            keys += part.encode()
        elif part.startswith("ctrl-") and len(part) == 6 and part[5] in CTRL_SPECIALS:
            keys.append(CTRL_SPECIALS[part[5]])
        elif part.startswith("ctrl-") and len(part) == 6 and "a" <= part[5] <= "z":
            keys.append(ord(part[5]) - ord("a") + 1)
        else:
            raise InvalidInputError(f"invalid detach keys: {spec[:100]!r}")
    return bytes(keys)


class DetachScanner:
    """Finds the detach keys anywhere in the input, split across reads or not, as
    containers/common's detach copier does: the bytes before the keys are delivered, and a
    trailing partial match is held back until the next read says whether it completes."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """The bytes to send on, and whether the keys were typed."""
        if not self.keys:
            return data, False
        buf, self.held = self.held + data, b""
        at = buf.find(self.keys)
        if at >= 0:
            return buf[:at], True
        for n in range(min(len(self.keys) - 1, len(buf)), 0, -1):
            if buf.endswith(self.keys[:n]):
                self.held = buf[-n:]
                return buf[:-n], False
        return buf, False


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _size() -> tuple[int, int]:
    """The window's size from the terminal itself (not $COLUMNS/$LINES, which go stale when
    the window is resized); 24x80 when stdout is not a terminal."""
    try:
        cols, rows = os.get_terminal_size(sys.stdout.fileno())
    except (OSError, ValueError):
        return 24, 80
    return (rows or 24), (cols or 80)


def pump(
    sock: socket.socket,
    *,
    send_input: bool,
    resize: Callable[[int, int], Any],
    detach_keys: bytes | None = None,
) -> str:
    """Copy the socket to stdout and stdin to the socket until EOF. Returns "eof" or
    "detached"."""
    out = sys.stdout.buffer
    stdin_fd = sys.stdin.fileno() if send_input else -1
    previous = signal.signal(signal.SIGWINCH, lambda *_: resize(*_size()))
    scanner = DetachScanner(detach_keys or b"")
    try:
        while True:
            readers = [sock] + ([stdin_fd] if stdin_fd >= 0 else [])
            try:
                ready = select.select(readers, [], [])[0]
            except InterruptedError:
                continue
            if sock in ready:
                packet = sock.recv(PACKET)
                if not packet:
                    return "eof"
                out.write(packet[1:])
                out.flush()
            if stdin_fd in ready:
                data = os.read(stdin_fd, INPUT_PACKET)
                if not data:  # stdin closed: tell conmon, keep reading output
                    if scanner.held:
                        sock.sendall(scanner.held)
                    sock.shutdown(socket.SHUT_WR)
                    stdin_fd = -1
                    continue
                data, detached = scanner.feed(data)
                if data:
                    sock.sendall(data)
                if detached:
                    return "detached"
    finally:
        signal.signal(signal.SIGWINCH, previous)


def cmd_attach(engine: Engine, args: argparse.Namespace) -> int:
    from engine.runtime.conmon import attach_socket_path, connect_attach, write_ctl
    from engine.runtime.lifecycle import Lifecycle

    detach_keys = parse_detach_keys(args.detach_keys)
    lifecycle = engine.get(Lifecycle)
    record = lifecycle.get_synced(args.name)
    if record.state != "running":
        raise InvalidStateError(
            f"you can only attach to running containers ({record.name} is {record.state})",
            current=record.state,
            wanted=("running",),
        )
    if not record.options.tty:
        raise InvalidInputError(f"container {record.name} has no terminal (created without -t)")
    bundle = attach_socket_path(engine, record).parent
    sock = connect_attach(bundle)
    interactive = sys.stdin.isatty() and not args.no_stdin
    try:
        with raw_terminal(interactive):
            write_ctl(bundle, 1, *_size())
            how = pump(
                sock,
                send_input=not args.no_stdin,
                detach_keys=detach_keys,
                resize=lambda r, c: write_ctl(bundle, 1, r, c),
            )
    finally:
        sock.close()
    if how == "detached":
        print(f"\r\nDetached from {record.name}", file=sys.stderr)
        return 0
    return lifecycle.get_synced(record.id).exit_code or 0


def exec_interactive(engine: Engine, args: argparse.Namespace, command: list[str]) -> int:
    """`exec [-t] [-i] NAME CMD...` (``command``: CMD, not empty): exit with the command's
    status (125 when the exec could not start, 126/127 as podman for not executable / not
    found)."""
    from engine.runtime.lifecycle import Lifecycle

    use_tty = bool(args.tty) and sys.stdout.isatty()
    session = engine.get(Lifecycle).exec_session(
        args.name,
        command,
        tty=use_tty,
        stdin=bool(args.interactive) and not use_tty,
        env=host_env(args.env) + (["TERM=" + os.environ.get("TERM", "xterm")] if use_tty else []),
        workdir=args.workdir or "",
        user=args.user or "",
    )
    try:
        session.prepare()
        sock = session.connect()
        try:
            if use_tty:
                session.resize(*_size())
            try:
                session.release()
            except EngineError as err:
                print(f"Error: {err.message}", file=sys.stderr)
                text = err.message.lower()
                return 127 if "no such file" in text or "not found" in text else 126
            with raw_terminal(use_tty and args.interactive and sys.stdin.isatty()):
                pump(sock, send_input=bool(args.interactive), resize=session.resize)
        finally:
            sock.close()
        return session.wait()
    finally:
        session.cleanup()
