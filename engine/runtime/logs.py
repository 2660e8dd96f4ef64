"""Container logs: conmon's k8s-file format read back as the container's output.

Each line is ``<RFC3339Nano> <stdout|stderr> <F|P> <content>\\n``. ``P`` marks a chunk that had
no newline (the ``\\n`` after it is conmon's own), so the byte stream is rebuilt by appending
``content + "\\n"`` for F lines and ``content`` for P lines (conmon.md §5).

Reading is incremental: a ``LogCursor`` (inode, offset, at-line-start) says where the previous
read stopped, so a follower only reads what was appended. conmon truncates the file when it
passes ``--log-size-max`` (no backup): a file that became shorter than the cursor, or a new
inode, restarts the read at 0.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

READ_LIMIT = 1024 * 1024  # bytes of log file read per call


@dataclass(frozen=True)
class LogLine:
    time: bytes
    stream: bytes  # b"stdout" | b"stderr"
    partial: bool
    content: bytes


def parse_line(raw: bytes) -> LogLine | None:
    """One k8s-file line without its trailing newline; None if it is not in that format."""
    parts = raw.split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr") or parts[2] not in (b"F", b"P"):
        return None
    return LogLine(parts[0], parts[1], parts[2] == b"P", parts[3] if len(parts) == 4 else b"")


@dataclass(frozen=True)
class LogCursor:
    inode: int = 0
    offset: int = 0
    line_start: bool = True  # the last emitted byte ended a logical line

    def encode(self) -> str:
        return f"{self.inode}:{self.offset}:{int(self.line_start)}"

    @classmethod
    def decode(cls, text: str | None) -> LogCursor:
        """Parse a cursor a client sent back; anything malformed means "from the start"."""
        if not text:
            return cls()
        try:
            inode, offset, start = text.split(":")
            return cls(int(inode), max(0, int(offset)), start == "1")
        except ValueError:
            return cls()


@dataclass(frozen=True)
class LogChunk:
    data: bytes
    cursor: LogCursor
    truncated: bool = False  # the file was cut by --log-size-max since the cursor (or skipped)
    # data again, cut where the stream changes: (b"stdout" | b"stderr", bytes), in order
    segments: tuple[tuple[bytes, bytes], ...] = ()


def render_segments(
    lines: list[LogLine], *, timestamps: bool, line_start: bool
) -> tuple[list[tuple[bytes, bytes]], bool]:
    """The output of lines as (stream, bytes) runs; with timestamps each logical line starts
    with its first chunk's time (as ``podman logs -t``). Returns (runs, line_start after)."""
    runs: list[tuple[bytes, bytearray]] = []
    for line in lines:
        if not runs or runs[-1][0] != line.stream:
            runs.append((line.stream, bytearray()))
        out = runs[-1][1]
        if timestamps and line_start:
            out += line.time + b" "
        out += line.content
        if not line.partial:
            out += b"\n"
        line_start = not line.partial
    return [(stream, bytes(data)) for stream, data in runs], line_start


def render(lines: list[LogLine], *, timestamps: bool, line_start: bool) -> tuple[bytes, bool]:
    """The output bytes of lines, both streams as they came (see render_segments)."""
    runs, line_start = render_segments(lines, timestamps=timestamps, line_start=line_start)
    return b"".join(data for _, data in runs), line_start


def read_log(
    path: Path,
    cursor: LogCursor | None = None,
    *,
    timestamps: bool = False,
    limit: int = READ_LIMIT,
    tail_bytes: int | None = None,
    since: float | None = None,
    until: float | None = None,
) -> LogChunk:
    """What the container wrote after ``cursor`` (at most ``limit`` bytes of log file per
    call: call again with the returned cursor for more). With ``tail_bytes`` and no cursor,
    start that many bytes before the end (at a line boundary). A missing file is empty."""
    cursor = cursor or LogCursor()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return LogChunk(b"", LogCursor(0, 0, True))
    try:
        st = os.fstat(fd)
        offset, line_start, truncated = cursor.offset, cursor.line_start, False
        if cursor.inode != st.st_ino or offset > st.st_size:
            truncated = cursor.inode != 0
            offset, line_start = 0, True
        if cursor.inode == 0 and tail_bytes is not None and st.st_size > tail_bytes:
            offset, truncated = st.st_size - tail_bytes, True
        data = os.pread(fd, min(limit, max(0, st.st_size - offset)), offset)
    finally:
        os.close(fd)
    if truncated and cursor.inode == 0 and offset:  # skip to the first full line
        cut = data.find(b"\n")
        data, offset = (data[cut + 1 :], offset + cut + 1) if cut >= 0 else (b"", offset)
    end = data.rfind(b"\n")
    complete = data[: end + 1] if end >= 0 else b""
    # split on \n only: a tty's \r (line ends, redraws) is content, which splitlines() would cut
    raws = complete.split(b"\n")[:-1]
    lines = [line for raw in raws if (line := parse_line(raw)) is not None]
    if since is not None or until is not None:
        lines = [line for line in lines if _within(line, since, until)]
    runs, line_start = render_segments(lines, timestamps=timestamps, line_start=line_start)
    return LogChunk(
        b"".join(data for _, data in runs),
        LogCursor(st.st_ino, offset + len(complete), line_start),
        truncated,
        tuple(runs),
    )


def line_time(line: LogLine) -> float | None:
    """When conmon wrote the line (seconds since the epoch); None if its stamp is unreadable."""
    try:
        return datetime.fromisoformat(line.time.decode("ascii")).timestamp()
    except ValueError:
        return None


def _within(line: LogLine, since: float | None, until: float | None) -> bool:
    when = line_time(line)
    if when is None:
        return True
    return (since is None or when >= since) and (until is None or when <= until)


def read_all(path: Path, *, timestamps: bool = False, tail_bytes: int | None = None) -> bytes:
    """The whole log (or its last tail_bytes of file), rendered."""
    chunk = read_log(path, timestamps=timestamps, tail_bytes=tail_bytes)
    out = bytearray(chunk.data)
    for _ in range(64):  # bounded: a container writing faster than we read cannot pin us
        more = read_log(path, chunk.cursor, timestamps=timestamps)
        if not more.data and more.cursor == chunk.cursor:
            return bytes(out)
        if more.truncated:
            return bytes(out + more.data)
        out += more.data
        chunk = more
    return bytes(out)


_PIECES = re.compile(rb"[^\n]*\n|[^\n]+$")


def last_lines(segments: list[tuple[bytes, bytes]], count: int) -> list[tuple[bytes, bytes]]:
    """The (stream, bytes) runs holding the last ``count`` lines (``logs --tail``); a last
    line without its newline counts as one."""
    pieces = [(stream, p) for stream, data in segments for p in _PIECES.findall(data)]
    lines = 0
    start = len(pieces)
    for i in range(len(pieces) - 1, -1, -1):
        ends_line = pieces[i][1].endswith(b"\n") or i == len(pieces) - 1
        if ends_line:
            if lines == count:
                break
            lines += 1
        start = i
    out: list[tuple[bytes, bytes]] = []
    for stream, piece in pieces[start:] if count > 0 else []:
        if out and out[-1][0] == stream:
            out[-1] = (stream, out[-1][1] + piece)
        else:
            out.append((stream, piece))
    return out
