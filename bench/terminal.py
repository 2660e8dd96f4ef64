"""bench/terminal: how fast a terminal is, through Gantry's websocket and its peers, side by side
in one run.

    /opt/gantry/venv/bin/python -m bench.terminal [--rounds 3] [--keys 500] [--mib 64]

Measured:
  throughput   `cat` of a 64 MiB text file in a tty container: seconds from the command until
               the client has every byte (and the end marker), as MB/s
  echo         one keystroke sent, its echo back: p50 and p99 over --keys keystrokes (ms)
Peers:
  gantry ws        the browser's path: websocket -> uvicorn -> Channels -> Redis -> engine
                   worker -> conmon attach socket (the stack started as `./gantry run` does)
  attach socket    the same container's conmon attach socket, read directly (the floor of
                   anything built on conmon)
  podman exec -it  `podman exec -it` on a local pty (temp --root, runc)
Targets (issue 17): throughput >= 0.9x podman exec -it; echo p50 <= 1.5 ms, p99 <= 3 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.runtime.conmon import connect_attach  # noqa: E402
from engine.storage.containers import Containers  # noqa: E402
from tests.imagetools import busybox_image  # noqa: E402
from tests.stack.stackrun import Stack  # noqa: E402
from tests.stack.test_terminal_ws import Pane, attach, create  # noqa: E402

DEMO_BUSYBOX = Path(os.environ.get("GANTRY_DEMO_DIR", "/opt/gantry/demo")) / "busybox"
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
MAKE_FILE = (
    "yes 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq"
    " | head -c {size} > /tmp/big"
)
END = b"BENCH-END"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# -- the clients ------------------------------------------------------------------------------
class WsClient:
    def __init__(self, pane: Pane) -> None:
        self.pane = pane

    def send(self, data: bytes) -> None:
        self.pane.ws.send(data)

    def read(self, timeout: float) -> bytes:
        try:
            frame = self.pane.ws.recv(timeout=timeout)
        except TimeoutError:
            return b""
        return frame if isinstance(frame, bytes) else b""


class SocketClient:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, timeout: float) -> bytes:
        if not select.select([self.sock], [], [], timeout)[0]:
            return b""
        packet = self.sock.recv(8193)
        return packet[1:]


class PtyClient:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def read(self, timeout: float) -> bytes:
        if not select.select([self.fd], [], [], timeout)[0]:
            return b""
        try:
            return os.read(self.fd, 65536)
        except OSError:
            return b""


Client = WsClient | SocketClient | PtyClient


def drain(client: Client, quiet: float = 0.3) -> None:
    while client.read(quiet):
        pass


def until(client: Client, marker: bytes, timeout: float = 300) -> None:
    """Read until marker is seen (keeping only a tail to search)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{marker!r} not seen")
        seen = seen[-64:] + client.read(1.0)


def throughput(client: Client, size: int) -> float:
    drain(client)
    started = time.monotonic()
    client.send(b"cat /tmp/big; echo BENCH-EN''D\n")
    until(client, END)
    seconds = time.monotonic() - started
    drain(client)
    return size / seconds / 1e6


def echo(client: Client, keys: int) -> list[float]:
    """Type into `cat` (so no shell line editing) and time each echo."""
    client.send(b"stty echo; cat\n")
    drain(client, 0.5)
    times = []
    for i in range(keys):
        key = bytes([97 + i % 26])
        started = time.perf_counter()
        client.send(key)
        got = b""
        while key not in got:
            got += client.read(2.0) or b""
            if time.perf_counter() - started > 2:
                raise TimeoutError("no echo")
        times.append((time.perf_counter() - started) * 1000)
        if i % 60 == 59:
            client.send(b"\r")
            drain(client, 0.05)
    client.send(b"\x03")  # ^C ends cat
    drain(client)
    return times


# -- the peers --------------------------------------------------------------------------------
def gantry_peers(stack: Stack, size: int) -> tuple[Client, Client, Callable[[], None]]:
    """Two tty containers: one read through Gantry's websocket, one through its conmon attach
    socket directly. Separate containers, because conmon blocks on any client that is not
    reading: a second client idle on the same socket would stall the first."""
    session = stack.login()
    pane = attach(stack, session, create(stack, session, "bench-ws", command="sh"))
    ws = WsClient(pane)
    direct_id = create(stack, session, "bench-direct", command="sh")
    direct = SocketClient(connect_attach(stack.engine().get(Containers).paths(direct_id).bundle))
    for client in (ws, direct):
        client.send(b"stty -echo; " + MAKE_FILE.format(size=size).encode() + b"; echo MADE-EN''D\n")
        until(client, b"MADE-END")

    def close() -> None:
        pane.ws.close()
        direct.sock.close()

    return ws, direct, close


def podman_peer(tmp: Path, size: int) -> tuple[Client, Callable[[], None]]:
    root = [
        "podman",
        "--root",
        str(tmp / "proot"),
        "--runroot",
        str(tmp / "prun"),
        "--runtime",
        "runc",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "none",
    ]
    subprocess.run(
        [*root, "pull", "-q", f"oci:{DEMO_BUSYBOX}:latest"], check=True, capture_output=True
    )
    image = subprocess.run(
        [*root, "images", "-q"], check=True, capture_output=True, text=True
    ).stdout.split()[0]
    subprocess.run(
        [
            *root,
            "run",
            "-d",
            "--name",
            "bench",
            "--network",
            "none",
            *ULIMITS,
            image,
            "sleep",
            "86400",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run([*root, "exec", "bench", "sh", "-c", MAKE_FILE.format(size=size)], check=True)
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp("podman", [*root, "exec", "-it", "bench", "sh"])  # noqa: S606
    client = PtyClient(fd)
    client.send(b"stty -echo\n")
    drain(client, 1.0)

    def close() -> None:
        os.close(fd)
        os.waitpid(pid, 0)
        subprocess.run([*root, "rm", "-f", "-t", "0", "bench"], capture_output=True)
        subprocess.run([*root, "system", "reset", "-f"], capture_output=True)

    return client, close


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--mib", type=int, default=64)
    args = parser.parse_args()
    size = args.mib * 1024 * 1024
    tmp = Path(tempfile.mkdtemp(prefix="gantry-bench-term-"))
    stack = Stack(restart_delay=30).start()
    closers: list[Callable[[], None]] = []
    try:
        engine = stack.engine()
        engine.ensure_root()
        busybox_image(engine)
        ws, direct, close = gantry_peers(stack, size)
        closers.append(close)
        peers: dict[str, Client] = {"gantry ws": ws, "attach socket": direct}
        if shutil.which("podman") and DEMO_BUSYBOX.exists():
            podman, close_podman = podman_peer(tmp, size)
            closers.append(close_podman)
            peers["podman exec -it"] = podman
        rates: dict[str, list[float]] = {name: [] for name in peers}
        echoes: dict[str, list[float]] = {name: [] for name in peers}
        for _ in range(args.rounds):  # interleaved: every peer sees the same noise
            for name, client in peers.items():
                rates[name].append(throughput(client, size))
                print(f"  {name}: {rates[name][-1]:.1f} MB/s", file=sys.stderr, flush=True)
        for name, client in peers.items():
            echoes[name] = echo(client, args.keys)
        report(rates, echoes, args)
    finally:
        for close in closers:
            try:
                close()
            except Exception as err:  # keep tearing down
                print(f"teardown: {err}", file=sys.stderr)
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def report(rates: dict[str, list[float]], echoes: dict[str, list[float]], args: Any) -> None:
    floor = statistics.median(rates["attach socket"])
    podman = statistics.median(rates["podman exec -it"]) if "podman exec -it" in rates else 0
    print(f"\nthroughput: cat of {args.mib} MiB in a tty container (median of {args.rounds})")
    for name, values in rates.items():
        med = statistics.median(values)
        versus = f"   {med / podman:5.2f}x podman exec -it" if podman else ""
        print(f"  {name:<16} {med:8.1f} MB/s   {med / floor:5.2f}x attach socket{versus}")
    print(f"\necho latency over {args.keys} keystrokes (ms)")
    for name, values in echoes.items():
        print(f"  {name:<16} p50 {pct(values, 50):6.2f}   p99 {pct(values, 99):6.2f}")
    print(
        json.dumps(
            {
                "throughput_mbs": {k: statistics.median(v) for k, v in rates.items()},
                "echo_ms": {k: {"p50": pct(v, 50), "p99": pct(v, 99)} for k, v in echoes.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
