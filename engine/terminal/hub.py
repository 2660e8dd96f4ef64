"""Terminal sessions: conmon attach sockets drained continuously and fanned out to viewers.

conmon writes to its attach clients with blocking writes, so one client that stops reading
stalls the container's output for everybody (conmon.md §2). The engine therefore holds exactly
one connection per attach socket and reads it all the time, on its own thread, into:

- a bounded scrollback ring (replayed to each new viewer, so a reconnecting pane redraws), and
- one bounded queue per viewer (a browser tab, through the web's terminal consumer).

Each viewer is sent its bytes in order with credit-based flow control: at most ``WINDOW`` bytes
may be in flight; the viewer acknowledges what it has passed on to its websocket. So that a
viewer that keeps up receives every byte in order, even of a `cat` of a huge file:

- while *every* viewer is more than ``HIGH_WATER`` bytes behind, the engine stops reading the
  socket, and conmon's blocking writes slow the container down (the backpressure a real
  terminal applies; the log waits too, as it does under podman attach);
- a viewer that stops reading (no acknowledgement for ``STALL_SECONDS`` while bytes are in
  flight), or falls ``MAX_PENDING`` bytes behind another viewer, is detached with a message —
  instead of holding the container up for everybody, growing memory without bound, or
  silently skipping output (which would corrupt its screen).

Input from every viewer is merged and written to the socket by one writer thread, split into
packets of at most 32 KiB (conmon truncates longer ones) and never empty (an empty packet
means EOF to conmon).

Messages to a viewer's channel (its consumer):
    {"type": "term.output", "session": key, "data": bytes}
    {"type": "term.closed", "session": key, "reason": str, "exit_code": int | None}
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.errors import InvalidInputError, NotFoundError
from engine.events import Publisher

log = logging.getLogger("gantry.engine.terminal")

SCROLLBACK = 256 * 1024  # bytes of recent output replayed to a new viewer
WINDOW = 2 * 1024 * 1024  # bytes a viewer may have in flight (sent, not yet acknowledged)
HIGH_WATER = 4 * 1024 * 1024  # when every viewer is this far behind, stop reading the socket
MAX_PENDING = 64 * 1024 * 1024  # bytes queued for a viewer before it is detached as too slow
STALL_SECONDS = 10.0  # no acknowledgement for this long, with bytes in flight: detached
CHUNK = 256 * 1024  # largest output message (B: the layer carries up to ~512 KiB well)
PACKET = 8193  # conmon's attach packets: one stream byte and up to 8 KiB of output
BURST = 64 * 1024  # output read from the socket before it is handed on
INPUT_PACKET = 32 * 1024  # conmon reads at most this much per packet
MAX_INPUT_QUEUE = 1024  # packets waiting for the container to read its input
STREAM_STDOUT, STREAM_STDERR = 2, 3


class Ring:
    """The last ``size`` bytes written, kept as the chunks they came in (trimming a chunk at a
    time: one bytearray trimmed at the front moved the whole ring for every packet)."""

    def __init__(self, size: int = SCROLLBACK) -> None:
        self.size = size
        self.chunks: deque[bytes] = deque()
        self.total = 0

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        self.total += len(data)
        while self.total - len(self.chunks[0]) >= self.size:
            self.total -= len(self.chunks.popleft())

    def getvalue(self) -> bytes:
        return b"".join(self.chunks)[-self.size :]


@dataclass
class Viewer:
    channel: str
    pending: deque[bytes] = field(default_factory=deque)
    pending_bytes: int = 0
    in_flight: int = 0
    last_progress: float = field(default_factory=time.monotonic)
    closed: bool = False
    reason: str = ""

    @property
    def behind(self) -> int:
        """Bytes of output this viewer has not acknowledged yet (queued or in flight)."""
        return self.pending_bytes + self.in_flight


class Session:
    """One attach socket (a container's console or an exec session) and its viewers."""

    def __init__(
        self,
        key: str,
        sock: socket.socket,
        publisher: Publisher,
        *,
        resize: Callable[[int, int], object] | None = None,
        on_close: Callable[[Session], None] | None = None,
        on_eof: Callable[[Session], None] | None = None,
        scrollback: bytes = b"",
    ) -> None:
        self.key = key
        self.sock = sock
        self.publisher = publisher
        self._resize = resize
        self._on_close = on_close
        # What ends the session at EOF: by default close at once; an exec session instead
        # waits for its exit code (conmon sends it after the attach EOF) and closes then.
        self._on_eof = on_eof
        self.ring = Ring()
        self.ring.write(scrollback)
        self.viewers: dict[str, Viewer] = {}
        self.lock = threading.Condition()
        self.closed = False
        self.close_reason = ""
        self.exit_code: int | None = None
        self.input: queue.Queue[bytes | None] = queue.Queue(MAX_INPUT_QUEUE)
        self.input_lock = threading.Lock()
        self.input_waiting = 0  # packets queued for, or being written by, the writer thread
        self.bytes_out = 0
        self._last_reap = time.monotonic()
        self._threads = [
            threading.Thread(target=self._drain, name=f"term-drain-{key[:24]}", daemon=True),
            threading.Thread(target=self._write, name=f"term-write-{key[:24]}", daemon=True),
        ]
        for t in self._threads:
            t.start()

    # -- the socket side ---------------------------------------------------------------------
    def _drain(self) -> None:
        """Read the attach socket until EOF; pause only while every viewer is far behind."""
        try:
            while True:
                with self.lock:
                    while self._all_behind_locked():
                        self.lock.wait(0.5)
                        self._reap_stalled_locked()
                data, ended = self._receive()
                if data:
                    self._output(data)
                if ended:
                    break
        except OSError as err:
            log.info("%s: attach socket error: %s", self.key, err)
        if self._on_eof is not None:
            try:
                self._on_eof(self)
            except Exception:
                log.exception("%s: end of session handler failed", self.key)
        self.close("the session ended")

    def _receive(self) -> tuple[bytes, bool]:
        """The output of the next packet and of those already queued behind it, up to BURST
        bytes (a burst costs one lock and one wake-up, not one per 4 KiB packet); and whether
        the socket reached EOF."""
        parts: list[bytes] = []
        size, flags = 0, 0
        while size < BURST:
            try:
                packet = self.sock.recv(PACKET, flags)
            except BlockingIOError:
                break
            if not packet:
                return b"".join(parts), True
            if packet[0] in (STREAM_STDOUT, STREAM_STDERR) and len(packet) > 1:
                parts.append(packet[1:])
                size += len(packet) - 1
            flags = socket.MSG_DONTWAIT
        return b"".join(parts), False

    def _output(self, data: bytes) -> None:
        with self.lock:
            self.ring.write(data)
            self.bytes_out += len(data)
            live = [v for v in self.viewers.values() if not v.closed]
            for viewer in live:
                viewer.pending.append(data)
                viewer.pending_bytes += len(data)
            self._detach_laggards_locked(live)
            if time.monotonic() - self._last_reap > 0.5:
                self._reap_stalled_locked()
            self.lock.notify_all()

    def _detach_laggards_locked(self, live: list[Viewer]) -> None:
        """Detach a viewer that is MAX_PENDING bytes behind (queued and unacknowledged) and
        further behind than another viewer. Only behind *the others*: a viewer that keeps up
        best is never detached for lagging, even if its thread was starved for a moment;
        when every viewer lags, reading pauses instead (_all_behind_locked)."""
        if len(live) < 2:
            return
        best = min(v.behind for v in live)
        for viewer in live:
            if viewer.behind > MAX_PENDING and viewer.behind > best:
                self._detach_locked(
                    viewer,
                    "the terminal fell too far behind the container's output and was detached",
                )

    def _all_behind_locked(self) -> bool:
        live = [v for v in self.viewers.values() if not v.closed]
        return bool(live) and not self.closed and min(v.pending_bytes for v in live) > HIGH_WATER

    def _reap_stalled_locked(self) -> None:
        now = self._last_reap = time.monotonic()
        for viewer in list(self.viewers.values()):
            if (
                not viewer.closed
                and viewer.in_flight
                and now - viewer.last_progress > STALL_SECONDS
            ):
                self._detach_locked(
                    viewer, "the terminal stopped reading the container's output and was detached"
                )

    def _write(self) -> None:
        while True:
            data = self.input.get()
            if data is None:
                return
            try:
                self.sock.sendall(data)
            except OSError as err:
                log.info("%s: input lost: %s", self.key, err)
                return
            finally:
                with self.input_lock:
                    self.input_waiting -= 1

    def send_input(self, data: bytes) -> None:
        """Send keystrokes to the container: at once when nothing is waiting before them and
        conmon takes them without blocking (a keystroke's echo then waits for no thread),
        else queued for the writer thread. Raises InvalidInputError when the container has
        stopped reading and the queue is full (the viewer is told, nothing blocks)."""
        if self.closed:
            raise InvalidInputError("the terminal session has ended")
        for start in range(0, len(data), INPUT_PACKET):
            chunk = data[start : start + INPUT_PACKET]
            with self.input_lock:
                if not self.input_waiting and self._send_now(chunk):
                    continue
                try:
                    self.input.put_nowait(chunk)
                except queue.Full as err:
                    raise InvalidInputError("the container is not reading its input") from err
                self.input_waiting += 1

    def _send_now(self, chunk: bytes) -> bool:
        """One packet to conmon if it takes it without blocking (a SEQPACKET send is whole
        or nothing)."""
        try:
            return self.sock.send(chunk, socket.MSG_DONTWAIT) == len(chunk)
        except BlockingIOError:
            return False
        except OSError as err:
            log.info("%s: input lost: %s", self.key, err)
            return True

    def resize(self, rows: int, cols: int) -> None:
        if self._resize is not None and not self.closed:
            self._resize(rows, cols)

    # -- viewers -----------------------------------------------------------------------------
    def add_viewer(self, channel: str, replay: bool = True) -> None:
        """Start sending to channel: the scrollback first (if replay), then live output."""
        with self.lock:
            old = self.viewers.get(channel)
            if old is not None:
                self._detach_locked(old, "replaced")
            viewer = Viewer(channel)
            if replay:
                history = self.ring.getvalue()
                if history:
                    viewer.pending.append(history)
                    viewer.pending_bytes = len(history)
            self.viewers[channel] = viewer
            if self.closed:
                viewer.closed = True
                viewer.reason = self.close_reason
        threading.Thread(
            target=self._send_loop, args=(viewer,), daemon=True, name=f"term-send-{channel[-12:]}"
        ).start()

    def ack(self, channel: str, nbytes: int) -> None:
        with self.lock:
            viewer = self.viewers.get(channel)
            if viewer is not None:
                viewer.in_flight = max(0, viewer.in_flight - nbytes)
                viewer.last_progress = time.monotonic()
                self.lock.notify_all()

    def remove_viewer(self, channel: str) -> None:
        with self.lock:
            viewer = self.viewers.get(channel)
            if viewer is not None:
                self._detach_locked(viewer, "detached", notify=False)

    def _detach_locked(self, viewer: Viewer, reason: str, notify: bool = True) -> None:
        viewer.closed = True
        viewer.reason = reason if notify else ""
        viewer.pending.clear()
        viewer.pending_bytes = 0
        self.viewers.pop(viewer.channel, None)
        self.lock.notify_all()

    def _send_loop(self, viewer: Viewer) -> None:
        """Send this viewer its bytes in order, within its window; then say why it ended."""
        while True:
            with self.lock:
                while not viewer.closed and (not viewer.pending or viewer.in_flight >= WINDOW):
                    self.lock.wait(1.0)
                    # also when no more output comes: a viewer that stopped reading is
                    # detached after STALL_SECONDS, not at the next output
                    if time.monotonic() - self._last_reap > 0.5:
                        self._reap_stalled_locked()
                if viewer.closed and not (self.closed and viewer.pending):
                    break
                chunk = self._take_locked(viewer)
            try:
                self.publisher.send(
                    viewer.channel, {"type": "term.output", "session": self.key, "data": chunk}
                )
            except Exception as err:  # the viewer's channel is gone or stuck
                log.info("%s: viewer %s dropped: %s", self.key, viewer.channel, err)
                with self.lock:
                    self._detach_locked(viewer, "", notify=False)
                return
        if viewer.reason:
            try:
                self.publisher.send(
                    viewer.channel,
                    {
                        "type": "term.closed",
                        "session": self.key,
                        "reason": viewer.reason,
                        "exit_code": self.exit_code,
                    },
                )
            except Exception as err:
                log.info("%s: could not tell %s it was closed: %s", self.key, viewer.channel, err)

    def _take_locked(self, viewer: Viewer) -> bytes:
        budget = min(CHUNK, max(1, WINDOW - viewer.in_flight)) if not viewer.closed else CHUNK
        parts: list[bytes] = []
        size = 0
        while viewer.pending and size < budget:
            head = viewer.pending[0]
            room = budget - size
            if len(head) <= room:
                parts.append(viewer.pending.popleft())
                size += len(head)
            else:
                parts.append(head[:room])
                viewer.pending[0] = head[room:]
                size += room
        viewer.pending_bytes -= size
        if not viewer.in_flight:  # the stall clock starts when bytes go out unanswered
            viewer.last_progress = time.monotonic()
        viewer.in_flight += size
        return b"".join(parts)

    # -- the end -----------------------------------------------------------------------------
    def close(self, reason: str, exit_code: int | None = None) -> None:
        """The session ended (EOF from conmon) or is being torn down. Viewers get what is
        queued for them, then a closed message with the reason and exit code."""
        with self.lock:
            if exit_code is not None:
                self.exit_code = exit_code
            if self.closed:
                return
            self.closed = True
            self.close_reason = reason
            for viewer in list(self.viewers.values()):
                viewer.closed = True
                viewer.reason = reason
            self.lock.notify_all()
        try:
            self.input.put_nowait(None)
        except queue.Full:
            pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self._on_close is not None:
            self._on_close(self)

    def set_exit_code(self, code: int | None) -> None:
        with self.lock:
            self.exit_code = code


class TerminalHub:
    """All live terminal sessions of this engine, by key ("ctr:<id>" or "exec:<id>:<exec>")."""

    def __init__(self, engine: object = None) -> None:
        self.sessions: dict[str, Session] = {}
        self.lock = threading.Lock()

    def get(self, key: str) -> Session:
        with self.lock:
            session = self.sessions.get(key)
        if session is None or session.closed:
            raise NotFoundError(f"terminal session {key[:80]} is not open")
        return session

    def find(self, key: str) -> Session | None:
        with self.lock:
            session = self.sessions.get(key)
        return session if session is not None and not session.closed else None

    def open(
        self,
        key: str,
        connect: Callable[[], socket.socket],
        publisher: Publisher,
        *,
        resize: Callable[[int, int], object] | None = None,
        scrollback: Callable[[], bytes] | None = None,
        on_eof: Callable[[Session], None] | None = None,
    ) -> Session:
        """The session for key, connecting (and seeding its scrollback) on first use."""
        with self.lock:
            session = self.sessions.get(key)
            if session is not None and not session.closed:
                return session
            sock = connect()
            history = scrollback() if scrollback is not None else b""
            session = Session(
                key,
                sock,
                publisher,
                resize=resize,
                scrollback=history,
                on_close=self._forget,
                on_eof=on_eof,
            )
            self.sessions[key] = session
            return session

    def _forget(self, session: Session) -> None:
        with self.lock:
            if self.sessions.get(session.key) is session:
                del self.sessions[session.key]

    def close_all(self, reason: str = "the engine is stopping") -> None:
        with self.lock:
            sessions = list(self.sessions.values())
        for session in sessions:
            session.close(reason)
