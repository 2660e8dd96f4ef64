"""Two Gantry hosts in one (issue 15): two `./gantry run` stacks started at once, sharing one
PostgreSQL (a real server, run by a fixture as the postgres user) and one Redis on TCP with a
password; each runs its own engine node. Migrations and the first admin happen once; a user
logs in through either web; a container placed on each node from one web is listed with its
node by the other, and a terminal works on each through either."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.runtools import can_run_containers
from tests.pgproc import Postgres, server_bin
from tests.redisproc import start_tcp_redis
from tests.skips import requires
from tests.stack.stackrun import Stack, free_port
from tests.stack.test_terminal_ws import attach, create

pytestmark = [
    pytest.mark.stack,
    requires(can_run_containers(), "needs root, runc, conmon and busybox-static"),
    requires(server_bin() is not None, "needs Debian's postgresql (./gantry test installs it)"),
]


@pytest.fixture(scope="module")
def webs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Stack]]:
    tmp: Path = tmp_path_factory.mktemp("shared")
    pg = Postgres().start()
    password, port = secrets.token_hex(16), free_port()
    redis = start_tcp_redis(tmp / "redis.sock", tmp, port, password)
    shared = {
        "GANTRY_REDIS_URL": f"redis://:{password}@127.0.0.1:{port}/0",
        "GANTRY_DATABASE_URL": pg.url,
        "GANTRY_SECRET_KEY": secrets.token_urlsafe(40),  # one key: a login holds on both
    }
    stacks = [Stack(extra_env=shared), Stack(extra_env=shared)]
    try:
        starting = [threading.Thread(target=s.start) for s in stacks]  # they race to migrate
        for t in starting:
            t.start()
        for t in starting:
            t.join()
        for s in stacks:
            assert s.proc is not None and s.proc.poll() is None, "".join(s.output[-30:])
            s.with_busybox()
        yield stacks
    finally:
        for s in stacks:
            s.stop()
        redis.terminate()
        redis.wait(10)
        pg.stop()


def test_two_webs_share_users_containers_and_every_nodes_terminal(webs: list[Stack]) -> None:
    printed = [s.password for s in webs if s.password]
    assert len(printed) == 1  # one first admin, however many webs started
    one, two = (s.login(password=printed[0]) for s in webs)
    nodes = [s.env["GANTRY_NODE"] for s in webs]
    ids = [create(webs[0], one, f"on-{node}", node=node) for node in nodes]

    table = two.get(f"{webs[1].url}/containers/table", timeout=10).text
    for cid, node in zip(ids, nodes, strict=True):
        row = table[table.index(f'data-container="{cid}"') :]
        assert f'<td class="col-node mono">{node}</td>' in row[:4000]

    for web, session in ((webs[1], two), (webs[0], one)):
        for cid in ids:  # each node's terminal, through each web
            pane = attach(web, session, cid)
            pane.type("echo $((6*7))-$(hostname)\n")
            pane.wait_text("42-")
            pane.ws.close()
