"""bench/files: the file explorer side by side with `ls -la` and `podman cp`, in one run.

    /opt/gantry/venv/bin/python -m bench.files [--entries 10000] [--download-mb 200]
                                               [--upload-mb 50] [--runs 3]

What it does (as root; everything under one temp dir, removed at the end):
- a private redis-server, a state root with a busybox image and one container whose merged
  root holds a directory of N entries and a file of D MB;
- the engine worker as its own process (``manage.py engine``), the web in this process
  (Django's ASGI handler through AsyncClient, a logged-in user owning the container);
- podman with a private --root/--runroot and the same rootfs imported as an image.

Measured (medians of --runs):
  list N entries   `ls -la DIR`  |  engine, in-process (the fs.list handler)  |  engine over
                   Redis (engine_client.request, paged)  |  the page (Files tab + "show more" rows)
  download D MB    `podman cp ctr:/f host`  |  engine stream as channel messages  |  engine
                   stream on the bulk lane (a Redis list)  |  the page (streamed, on the lane)
  upload U MB      `podman cp host ctr:/f`  |  the page (multipart POST, chunks to the engine)
Targets (issue 4): listing <= 3x `ls -la`; download >= 0.5x podman cp's throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


def median_time(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def amedian_time(fn: Callable[[], Awaitable[Any]], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, check=True, capture_output=True, **kw)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="gantry-bench-files-"))
        self.root = self.tmp / "root"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.podman = [
            "podman", "--root", str(self.tmp / "podman"), "--runroot", str(self.tmp / "podman-run"),
            "--storage-driver", "overlay", "--runtime", "runc",
        ]  # fmt: skip
        self.results: dict[str, float] = {}

    # -- set-up ---------------------------------------------------------------------------------
    def start_redis(self) -> None:
        from tests.redisproc import start_redis

        sock = self.tmp / "redis.sock"
        self.procs.append(start_redis(sock, self.tmp))
        os.environ.update(
            GANTRY_REDIS_URL=f"unix://{sock}",
            GANTRY_WEB_HOME=str(self.tmp / "web"),
            GANTRY_DB=str(self.tmp / "web.sqlite3"),
            GANTRY_SECRET_KEY="bench-only-" + "x" * 40,
            GANTRY_NODE="bench",
            GANTRY_RPC_TIMEOUT="60",
            GANTRY_CONFIG=str(self.tmp / "engine.json"),
            GANTRY_ROOT=str(self.root),
            DJANGO_SETTINGS_MODULE="webui.settings",
            GANTRY_ALLOWED_HOSTS="127.0.0.1,localhost,testserver",
        )
        (self.tmp / "engine.json").write_text(json.dumps({"volume_allowlist": [str(self.tmp)]}))

    def make_container(self) -> None:
        from engine.config import EngineConfig
        from engine.core import Engine
        from engine.storage.containers import Containers
        from engine.storage.records import CreateOptions
        from tests.imagetools import busybox_image

        self.root.mkdir(mode=0o700)
        self.engine = Engine(EngineConfig(root=self.root, node="bench"))
        busybox_image(self.engine)
        containers = self.engine.get(Containers)
        self.record = containers.create(CreateOptions(), "localhost/busybox:latest", "bench")
        # a rootfs tarball for podman, before the big data goes in
        merged = containers.mount(self.record.id)
        with tarfile.open(self.tmp / "rootfs.tar", "w") as tar:
            tar.add(merged, arcname=".")
        self.merged = merged
        big = merged / "big"
        big.mkdir()
        for i in range(self.args.entries):
            (big / f"file-{i:05d}.txt").write_bytes(b"x" * (i % 100))
        self.download = self.tmp / "download.bin"
        with open(self.download, "wb") as f:
            for _ in range(self.args.download_mb):
                f.write(os.urandom(1024 * 1024))
        shutil.copyfile(self.download, merged / "download.bin")
        self.upload = self.tmp / "upload.bin"
        self.upload.write_bytes(os.urandom(self.args.upload_mb * 1024 * 1024))

    def start_engine(self) -> None:
        log = open(self.tmp / "engine.log", "wb")  # noqa: SIM115 (kept open for the child)
        self.procs.append(
            subprocess.Popen(
                [PY, "manage.py", "engine", "--root", str(self.root), "--node", "bench"],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )

    def setup_web(self) -> None:
        import django

        django.setup()
        from django.conf import settings

        # no collectstatic here: plain static URLs, as the tests use
        settings.STORAGES = {
            **settings.STORAGES,
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }
        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        from webui.models import Ownership

        call_command("migrate", verbosity=0)
        self.user = get_user_model().objects.create_user("bench", password="bench-pass-123")  # noqa: S106
        Ownership.objects.create(
            container_id=self.record.id, name="bench", node="bench", owner=self.user
        )

    def setup_podman(self) -> None:
        run([*self.podman, "import", str(self.tmp / "rootfs.tar"), "localhost/bench:1"])
        run([*self.podman, "create", "--name", "pc", "localhost/bench:1", "sh"])
        run([*self.podman, "cp", str(self.download), "pc:/download.bin"])

    # -- measurements ---------------------------------------------------------------------------
    def bench_ls(self) -> None:
        target = str(self.merged / "big")
        run(["ls", "-la", target])  # warm the dentry and inode caches for everyone
        self.results["ls -la"] = median_time(
            lambda: run(["ls", "-la", target], env={"LC_ALL": "C"}), self.args.runs
        )

    def bench_engine_inprocess(self) -> None:
        from engine.api.base import Context
        from engine.rpc.dispatch import call

        ctx = Context(self.engine)

        def list_all() -> int:
            offset: int | None = 0
            count = 0
            while offset is not None:
                page = call(ctx, "fs.list", {"id": self.record.id, "path": "/big",
                                             "offset": offset, "limit": 2000})  # fmt: skip
                count += len(page["entries"])
                offset = page["next_offset"]
            assert count == self.args.entries, count
            return count

        list_all()  # warm up: the first call imports every verb module
        self.results["engine list (in-process)"] = median_time(list_all, self.args.runs)

    async def bench_web(self) -> None:
        from django.test import AsyncClient

        from engine.protocol import verbs
        from webui import engine_client

        for _ in range(300):
            try:
                await engine_client.request(verbs.NODE_PING, verbs.NoArgs(), timeout=1)
                break
            except Exception:
                await asyncio.sleep(0.1)
        client = AsyncClient()
        await client.aforce_login(self.user)
        await self._web_lists(client, self.record.id)
        await self._web_engine_downloads(self.record.id)
        await self._web_page_transfers(client, self.record.id)

    async def _web_lists(self, client: Any, cid: str) -> None:
        """A big directory listed over RPC, then as the Files tab's pages."""
        from engine.protocol import verbs
        from webui import engine_client

        async def rpc_list() -> None:
            offset: int | None = 0
            count = 0
            while offset is not None:
                args = verbs.FsList(id=cid, path="/big", offset=offset, limit=2000)
                page = await engine_client.request(verbs.FS_LIST, args)
                count += len(page["entries"])
                offset = page["next_offset"]
            assert count == self.args.entries

        await rpc_list()  # warm up the worker the same way
        self.results["engine list (RPC over Redis)"] = await amedian_time(rpc_list, self.args.runs)

        async def page_list() -> None:
            r = await client.get(f"/containers/{cid}/files/?path=/big")
            assert r.status_code == 200
            rows = r.content.count(b'<tr class="t-')
            offset = 500
            while offset < self.args.entries:
                r = await client.get(f"/containers/{cid}/files/rows?path=/big&offset={offset}")
                rows += r.content.count(b'<tr class="t-')
                offset += 500
            assert rows == self.args.entries, rows

        self.results["page list (HTML, all pages)"] = await amedian_time(page_list, self.args.runs)

    async def _web_engine_downloads(self, cid: str) -> None:
        """A file from the engine as channel messages, then over the bulk lane."""
        from engine.protocol import verbs
        from webui import engine_client
        from webui.bulklane import new_lane, read_lane

        size = self.args.download_mb * 1024 * 1024

        async def rpc_download() -> None:
            total = 0
            async for event in engine_client.stream(
                verbs.FS_DOWNLOAD, verbs.FsDownload(id=cid, path="/download.bin")
            ):
                if event.get("type") == "fs.chunk":
                    total += len(event["data"])
            assert total == size

        self.results["engine download (channel messages)"] = await amedian_time(
            rpc_download, self.args.runs
        )

        async def lane_download() -> None:
            lane = new_lane()
            assert lane
            total = 0
            events = engine_client.stream(
                verbs.FS_DOWNLOAD, verbs.FsDownload(id=cid, path="/download.bin", lane=lane)
            )
            begin = await anext(events)
            assert begin["lane"] == lane
            async for chunk in read_lane(lane):
                total += len(chunk)
            async for _ in events:
                pass
            assert total == size

        self.results["engine download (bulk lane)"] = await amedian_time(
            lane_download, self.args.runs
        )

    async def _web_page_transfers(self, client: Any, cid: str) -> None:
        """The Files tab's download (an HTTP stream) and upload (multipart, htmx)."""
        from django.core.files.uploadedfile import SimpleUploadedFile

        async def page_download() -> None:
            r = await client.get(f"/containers/{cid}/files/download?path=/download.bin")
            total = 0
            async for chunk in r.streaming_content:
                total += len(chunk)
            assert total == self.args.download_mb * 1024 * 1024

        self.results["page download (HTTP stream)"] = await amedian_time(
            page_download, self.args.runs
        )

        data = self.upload.read_bytes()

        async def page_upload() -> None:
            r = await client.post(
                f"/containers/{cid}/files/upload",
                {"dir": "/", "files": SimpleUploadedFile("upload.bin", data)},
                headers={"HX-Request": "true"},
            )
            assert r.status_code == 200 and b"1 uploaded" in r.content, r.content

        self.results["page upload (multipart -> engine)"] = await amedian_time(
            page_upload, self.args.runs
        )

    def bench_podman(self) -> None:
        out = self.tmp / "podman-out.bin"

        def down() -> None:
            run([*self.podman, "cp", "pc:/download.bin", str(out)])
            out.unlink()

        def up() -> None:
            run([*self.podman, "cp", str(self.upload), "pc:/upload.bin"])

        self.results["podman cp download"] = median_time(down, self.args.runs)
        self.results["podman cp upload"] = median_time(up, self.args.runs)

    # -- report ---------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        r = self.results
        n, d, u = self.args.entries, self.args.download_mb, self.args.upload_mb
        print(f"\nbench/files: {n} entries, {d} MB download, {u} MB upload, median of "
              f"{self.args.runs} runs\n")  # fmt: skip
        print(f"{'what':44} {'seconds':>9} {'MB/s':>8} {'x ls/podman':>12}")
        rows = [
            ("ls -la", r["ls -la"], None, None),
            ("engine list (in-process)", r["engine list (in-process)"], None, r["ls -la"]),
            ("engine list (RPC over Redis)", r["engine list (RPC over Redis)"], None, r["ls -la"]),
            ("page list (HTML, all pages)", r["page list (HTML, all pages)"], None, r["ls -la"]),
            ("podman cp download", r["podman cp download"], d, None),
            ("engine download (channel messages)", r["engine download (channel messages)"], d,
             r["podman cp download"]),
            ("engine download (bulk lane)", r["engine download (bulk lane)"], d,
             r["podman cp download"]),
            ("page download (HTTP stream)", r["page download (HTTP stream)"], d,
             r["podman cp download"]),
            ("podman cp upload", r["podman cp upload"], u, None),
            ("page upload (multipart -> engine)", r["page upload (multipart -> engine)"], u,
             r["podman cp upload"]),
        ]  # fmt: skip
        for name, secs, mb, base in rows:
            rate = f"{mb / secs:8.1f}" if mb else " " * 8
            ratio = f"{secs / base:11.2f}x" if base else ""
            print(f"{name:44} {secs:9.3f} {rate} {ratio:>12}")
        list_ratio = r["engine list (RPC over Redis)"] / r["ls -la"]
        dl_ratio = r["podman cp download"] / r["page download (HTTP stream)"]
        print(f"\nlisting (engine over RPC) / ls -la = {list_ratio:.2f}  (target <= 3): "
              f"{'PASS' if list_ratio <= 3 else 'FAIL'}")  # fmt: skip
        print(f"download throughput (page) / podman cp = {dl_ratio:.2f}  (target >= 0.5): "
              f"{'PASS' if dl_ratio >= 0.5 else 'FAIL'}")  # fmt: skip
        return {"results": r, "list_ratio": list_ratio, "download_ratio": dl_ratio}

    # -- tear-down ------------------------------------------------------------------------------
    def cleanup(self) -> None:
        for proc in reversed(self.procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run([*self.podman, "rm", "-af"], capture_output=True)
        subprocess.run([*self.podman, "system", "reset", "-f"], capture_output=True)
        subprocess.run(["umount", "-R", str(self.tmp / "podman")], capture_output=True)
        if hasattr(self, "engine"):
            from engine.storage import mounts
            from engine.storage.containers import Containers

            containers = self.engine.get(Containers)
            for record in containers.list():
                mounts.unmount(containers.paths(record.id).merged)
        shutil.rmtree(self.tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.files", description=__doc__)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--download-mb", type=int, default=200)
    parser.add_argument("--upload-mb", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print(
            "bench/files needs root (overlay mounts, podman with a private root)", file=sys.stderr
        )
        return 2
    sys.path.insert(0, str(REPO))
    bench = Bench(args)
    try:
        bench.start_redis()
        bench.make_container()
        bench.start_engine()
        bench.setup_web()
        bench.setup_podman()
        bench.bench_ls()
        bench.bench_engine_inprocess()
        asyncio.run(bench.bench_web())
        bench.bench_podman()
        figures = bench.report()
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
