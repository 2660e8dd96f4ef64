"""bench/nodes: a class spread over three engine nodes behind two web processes, one run.

    /opt/gantry/venv/bin/python -m bench.nodes [--learners 100] [--each 3]

Set up as several hosts would be, on this one machine: a PostgreSQL (Debian's server, a private
cluster) and a Redis on TCP with a password, shared by two `./gantry run` stacks (each a web
and an engine node) and one `./gantry node`. Then --learners learners each create and start
--each containers (busybox `sleep`) through the two webs in turn, with "any node" placement.

Reported:
  placement   containers per node, and the largest over the smallest (1.00 is even)
  start p95   POST .../run/start through a web until it answers (the container runs), ms
  table p95   GET /containers/table as an admin (every container of every node) through
              each web, ms
Targets (issue 15): placement within 1.5x; start p95 <= 1 s; table p95 <= 1 s at 300.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.pgproc import Postgres  # noqa: E402
from tests.redisproc import start_tcp_redis  # noqa: E402
from tests.stack.stackrun import Stack, free_port  # noqa: E402

IMAGE = "localhost/busybox:latest"
PASSWORD = "bench-learner-" + "x" * 12


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def add_learners(web: Stack, count: int) -> list[str]:
    names = [f"learner{i:02d}" for i in range(count)]
    web.manage(
        "shell", "-v", "0", "-c",
        "from webui import users\n"
        f"for name in {names!r}:\n    users.add(name, users.LEARNER, password={PASSWORD!r})",
    )  # fmt: skip
    return names


def login(web: Stack, name: str, password: str) -> requests.Session:
    return web.login(user=name, password=password)


def create_and_start(web: Stack, session: requests.Session, name: str) -> tuple[str, float]:
    form = {"image": IMAGE, "name": name, "command": "sleep 3600", "node": "any"}
    r = session.post(f"{web.url}/containers/new", data=form, allow_redirects=False, timeout=60)
    assert r.status_code == 302, r.text[:500]
    cid = r.headers["Location"].strip("/").split("/")[-1]
    started = time.perf_counter()
    r = session.post(f"{web.url}/containers/{cid}/run/start", timeout=60)
    assert r.status_code < 400, r.text[:500]
    return cid, (time.perf_counter() - started) * 1000


def table_times(web: Stack, admin: requests.Session, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        r = admin.get(f"{web.url}/containers/table", timeout=60)
        assert r.status_code == 200
        out.append((time.perf_counter() - started) * 1000)
    return out


def placement(web: Stack, admin: requests.Session) -> Counter[str]:
    table = admin.get(f"{web.url}/containers/table", timeout=60).text
    return Counter(re.findall(r'<td class="col-node mono nowrap">([a-z0-9-]+)</td>', table))


class Bench:
    def __init__(self, learners: int, each: int) -> None:
        self.learners, self.each = learners, each
        self.tmp = Path(tempfile.mkdtemp(prefix="gantry-bench-nodes-"))
        self.pg = Postgres()
        self.members: list[Stack] = []
        self.redis: Any = None

    def start(self) -> tuple[Stack, Stack]:
        self.pg.start()
        password, port = secrets.token_hex(16), free_port()
        self.redis = start_tcp_redis(self.tmp / "redis.sock", self.tmp, port, password)
        shared = {
            "GANTRY_REDIS_URL": f"redis://:{password}@127.0.0.1:{port}/0",
            "GANTRY_DATABASE_URL": self.pg.url,
            "GANTRY_SECRET_KEY": secrets.token_urlsafe(40),
        }
        for command in ("run", "run", "node"):
            self.members.append(Stack(extra_env=shared, command=command).start().with_busybox())
        return self.members[0], self.members[1]

    def main(self) -> None:
        one, two = self.start()
        admin_password = next(s.password for s in self.members if s.password)
        admins = [one.login(password=admin_password), two.login(password=admin_password)]
        names = add_learners(one, self.learners)
        starts: list[float] = []
        for i, name in enumerate(names):
            web = (one, two)[i % 2]
            session = login(web, name, PASSWORD)
            for k in range(self.each):
                starts.append(create_and_start(web, session, f"c{k}")[1])
            print(f"  {name}: {self.each} started", file=sys.stderr, flush=True)
        spread = placement(one, admins[0])
        tables = {f"web {n + 1}": table_times(w, a, 20) for n, (w, a) in enumerate(
            zip((one, two), admins, strict=True))}  # fmt: skip
        report(spread, starts, tables)

    def cleanup(self) -> None:
        for member in self.members:
            member.stop()
        if self.redis is not None:
            self.redis.terminate()
            self.redis.wait(10)
        self.pg.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def report(spread: Counter[str], starts: list[float], tables: dict[str, list[float]]) -> None:
    total = sum(spread.values())
    counts = sorted(spread.values())
    print(f"\nplacement of {total} containers over {len(spread)} nodes:")
    for node, count in sorted(spread.items()):
        print(f"  {node:<24} {count}")
    print(f"  largest/smallest   {counts[-1] / max(1, counts[0]):.2f} (target <= 1.5)")
    print(f"\nstart through the webs: p50 {statistics.median(starts):.0f} ms, "
          f"p95 {p95(starts):.0f} ms (target <= 1000)")  # fmt: skip
    for name, values in tables.items():
        print(f"table ({total} rows) through {name}: p50 {statistics.median(values):.0f} ms, "
              f"p95 {p95(values):.0f} ms (target <= 1000)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--learners", type=int, default=100)
    parser.add_argument("--each", type=int, default=3)  # a learner may run 3 at once
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/nodes needs root (it runs the stack)")
    bench = Bench(args.learners, args.each)
    try:
        bench.main()
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
