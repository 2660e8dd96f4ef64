"""Several Gantry hosts on one machine (issue 15): two `./gantry run` stacks started at once
and one `./gantry node`, sharing one PostgreSQL (a real server, run by a fixture as the
postgres user) and one Redis on TCP with a password: three engine nodes, two webs.

Migrations and the first admin happen once; a user logs in through either web; a container
placed on each node from one web is listed with its node by the other, and a terminal works on
each through either. One node's engine is SIGKILLed: within 5 s its container shows "node
offline" (still running under conmon), the other nodes stay usable, and when the engine is
back the container shows its real state. In Chromium, the Nodes page lists the three nodes
and a container created on a chosen node shows in the containers table's Node column."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from engine.protocol import nodes
from engine.storage.containers import Containers
from tests.browser.conftest import browser, needs_chromium, shots  # noqa: F401 (fixtures)
from tests.engine.clitools import REPO
from tests.engine.runtools import can_run_containers
from tests.pgproc import Postgres, server_bin
from tests.redisproc import start_tcp_redis
from tests.skips import requires
from tests.stack.stackrun import Stack, free_port, wait_until
from tests.stack.test_terminal_ws import attach, create

pytestmark = [
    pytest.mark.stack,
    requires(can_run_containers(), "needs root, runc, conmon and busybox-static"),
    requires(server_bin() is not None, "needs Debian's postgresql (./gantry test installs it)"),
]
NODE_RESTART = 8.0  # the killed engine comes back after this: long enough to see it offline


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Stack]]:
    """[web 1, web 2, a node alone], each with busybox."""
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
    stacks.append(Stack(restart_delay=NODE_RESTART, extra_env=shared, command="node"))
    try:
        starting = [threading.Thread(target=s.start) for s in stacks]  # the webs race to migrate
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


def row_of(web: Stack, session: requests.Session, cid: str) -> str:
    table = session.get(f"{web.url}/containers/table", timeout=10).text
    return table[table.index(f'data-container="{cid}"') :][:4000]


def answers(web: Stack, session: requests.Session, cid: str) -> None:
    pane = attach(web, session, cid)
    pane.type("echo $((6*7))-$(hostname)\n")
    pane.wait_text("42-")
    pane.ws.close()


def listed(stack: Stack) -> dict[str, dict[str, Any]]:
    """`./gantry nodes --format json` on that host."""
    done = subprocess.run(
        [str(REPO / "gantry"), "nodes", "--format", "json"],
        env=stack.env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {n["Name"]: n for n in json.loads(done.stdout)}


def test_three_nodes_two_webs_one_database_one_redis(hosts: list[Stack]) -> None:
    printed = [s.password for s in hosts if s.password]
    assert len(printed) == 1  # one first admin, however many webs started
    shown = listed(hosts[2])  # from the node alone, as from any host
    assert {shown[s.env["GANTRY_NODE"]]["Status"] for s in hosts} == {nodes.ONLINE}
    secret = hosts[0].env["GANTRY_REDIS_URL"].split(":")[2].split("@")[0]
    assert not any(secret in line for s in hosts for line in s.output)  # never logged
    assert not (hosts[0].run_dir / "redis.pid").exists()  # it joined a Redis, started none
    webs = hosts[:2]
    one, two = (s.login(password=printed[0]) for s in webs)
    names = [s.env["GANTRY_NODE"] for s in hosts]
    ids = [create(webs[0], one, f"on-{node}", node=node) for node in names]
    for cid, node in zip(ids, names, strict=True):  # listed with its node by the other web
        assert f'<td class="col-node mono nowrap">{node}</td>' in row_of(webs[1], two, cid)
    for web, session in ((webs[1], two), (webs[0], one)):
        for cid in ids:  # each node's terminal, through each web
            answers(web, session, cid)

    lost, lost_id = hosts[2], ids[2]
    engine = lost.pid("engine")
    os.kill(engine, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: "node offline" in row_of(webs[1], two, lost_id), NODE_RESTART - 1)
    assert time.monotonic() - killed <= nodes.OFFLINE_AFTER + 2  # the rule, a beat, the cache
    assert "disabled" in row_of(webs[1], two, lost_id)
    conmon = lost.engine().get(Containers).load(lost_id).conmon_pid
    assert conmon and os.path.exists(f"/proc/{conmon}")  # it runs on
    answers(webs[1], two, ids[0])  # the other nodes are untouched
    wait_until(lambda: lost.pid("engine") != engine, NODE_RESTART + 10)
    wait_until(lambda: "Up " in row_of(webs[0], one, lost_id), 20)  # its real state again
    answers(webs[0], one, lost_id)


@needs_chromium
def test_the_pages_show_the_nodes_and_where_each_container_runs(
    hosts: list[Stack],
    browser: Any,  # noqa: F811 (the fixture imported above)
    shots: Any,  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    web, node = hosts[1], hosts[2].env["GANTRY_NODE"]
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(web.url + "/login/")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(next(s.password for s in hosts if s.password))
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/containers/")
    page.get_by_role("link", name="Nodes").click()
    for member in hosts:
        row = page.get_by_role("row", name=re.compile(member.env["GANTRY_NODE"]))
        expect(row.get_by_test_id("node-status")).to_have_text("online")
    shots(page, "nodes")
    page.goto(web.url + "/containers/new")
    page.get_by_label("Image").fill("localhost/busybox")
    page.get_by_label("Name").fill("placed")
    page.get_by_label("Command").fill("sleep 600")
    page.get_by_label("Node").select_option(node)
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r"/containers/[0-9a-f]{64}/"))
    page.get_by_role("link", name="Containers").first.click()
    row = page.get_by_role("row", name=re.compile("placed"))
    expect(row).to_contain_text(node)
    expect(page.get_by_role("columnheader", name="Node")).to_be_visible()
    shots(page, "node-column")
    page.context.close()
