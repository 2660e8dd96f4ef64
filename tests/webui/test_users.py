"""Users and roles: ``manage.py users`` (what ``./gantry users`` runs as the web user), the
rules for names and passwords, roles on Django's auth, and disabling that ends sessions and
websockets at once."""

from __future__ import annotations

import io
import json
import re
import sys
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.core.management import CommandError, call_command
from django.test import Client

from tests.webui.test_events_consumer import communicator, session_for
from webui import users
from webui.consumers.base import CLOSE_UNAUTHENTICATED
from webui.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)


def run(*argv: str, stdin: str = "") -> str:
    out = io.StringIO()
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        call_command("users", *argv, stdout=out)
    finally:
        sys.stdin = old
    return out.getvalue()


def test_add_prints_a_one_time_password_that_logs_in() -> None:
    out = run("add", "ann")
    password = out.split("one-time password: ")[1].strip()
    client = Client()
    assert client.login(username="ann", password=password)
    assert users.role_of(users.find("ann")) == users.LEARNER


def test_the_first_start_makes_one_admin_and_says_its_password_once() -> None:
    out = io.StringIO()
    call_command("ensure_admin", stdout=out)
    password = re.search(r"one-time password: (\S+)", out.getvalue())
    assert password and "user: admin" in out.getvalue()
    assert Client().login(username="admin", password=password.group(1))
    assert users.role_of(users.find("admin")) == users.ADMIN
    again = io.StringIO()
    call_command("ensure_admin", stdout=again)  # every later start: nothing
    assert again.getvalue() == ""
    assert Client().login(username="admin", password=password.group(1))


def test_roles_and_the_list_as_json() -> None:
    run("add", "boss", "--role", "admin")
    run("add", "teach", "--role", "instructor")
    run("add", "ann", "--password-stdin", stdin="a-long-enough-pass-42\n")
    run("disable", "ann")
    rows = json.loads(run("list", "--format", "json"))
    assert rows == [
        {"Name": "ann", "Role": "learner", "Active": False},
        {"Name": "boss", "Role": "admin", "Active": True},
        {"Name": "teach", "Role": "instructor", "Active": True},
    ]
    assert users.find("boss").is_superuser and not users.find("teach").is_superuser
    run("role", "teach", "learner")
    assert users.role_of(users.find("teach")) == users.LEARNER
    table = run("list")
    assert table.splitlines()[0].split() == ["NAME", "ROLE", "ACTIVE"]
    actions = list(AuditEvent.objects.values_list("action", "target").order_by("at"))
    assert ("user.add", "boss") in actions and ("user.disable", "ann") in actions
    assert ("user.role", "teach") in actions


@pytest.mark.parametrize(
    "name", ["Ann", "a" * 33, "", "ann smith", "ann/..", "../etc", "ann\x00", "ünïcode", "a.b"]
)
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(CommandError, match="1 to 32 of a-z"):
        run("add", name)
    assert not get_user_model().objects.exists()


@pytest.mark.parametrize("password", ["short", "password123", "12345678901"])
def test_the_password_validators_apply(password: str) -> None:
    with pytest.raises(CommandError, match="password: "):
        run("add", "ann", "--password-stdin", stdin=password + "\n")
    assert not get_user_model().objects.exists()


def test_a_name_is_taken_once() -> None:
    run("add", "ann")
    with pytest.raises(CommandError, match="exists already"):
        run("add", "ann")
    with pytest.raises(CommandError, match="no user 'bob'"):
        run("disable", "bob")


def test_passwd_ends_the_old_sessions() -> None:
    first = run("add", "ann").split("one-time password: ")[1].strip()
    client = Client()
    assert client.login(username="ann", password=first)
    assert client.get("/containers/").status_code == 200
    second = run("passwd", "ann").split("one-time password: ")[1].strip()
    assert second != first
    assert client.get("/containers/").status_code == 302  # logged out
    assert Client().login(username="ann", password=second)


async def test_disabling_closes_the_users_websockets_at_once(channel_layer: Any) -> None:
    from asgiref.sync import sync_to_async

    added = await sync_to_async(users.add)("ann")
    comm = communicator(await session_for(added.user))
    assert (await comm.connect())[0]
    await sync_to_async(run)("disable", "ann")
    out = await comm.receive_output(5)
    while out["type"] != "websocket.close":  # a heartbeat may come first
        out = await comm.receive_output(5)
    assert out == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}
    assert not await Session.objects.aexists()  # its session is gone too


# -- the Users page -------------------------------------------------------------------------
@pytest.fixture
def admin_client(admin_user_: Any) -> Client:
    client = Client()
    client.force_login(admin_user_)
    return client


def test_the_users_page_is_for_admins_only(client: Client, alice: Any) -> None:
    assert client.get("/users/").status_code == 302  # to the login
    client.force_login(alice)
    assert client.get("/users/").status_code == 403
    assert client.post("/users/add", {"names": "eve", "role": "admin"}).status_code == 403
    assert not get_user_model().objects.filter(username="eve").exists()
    assert "Users</a>" not in client.get("/containers/").content.decode()


def test_add_many_shows_each_password_once(admin_client: Client) -> None:
    r = admin_client.post("/users/add", {"names": "ann\nbob, cid  ann", "role": "learner"})
    html = r.content.decode()
    assert r.status_code == 200 and 'data-testid="added-users"' in html
    for name in ("ann", "bob", "cid"):
        assert users.role_of(users.find(name)) == users.LEARNER
    passwords = re.findall(r'<td class="mono">([^<]+)</td>', html)
    assert len(passwords) == 3 and len(set(passwords)) == 3
    assert Client().login(username="bob", password=passwords[1])
    again = admin_client.get("/users/").content.decode()
    assert not any(p in again for p in passwords)  # shown once only


def test_add_many_as_csv_and_all_or_nothing(admin_client: Client) -> None:
    r = admin_client.post(
        "/users/add", {"names": "ann bob", "role": "instructor", "download": "csv"}
    )
    assert r["Content-Type"].startswith("text/csv") and "attachment" in r["Content-Disposition"]
    lines = r.content.decode().splitlines()
    assert lines[0] == "name,role,one-time password" and lines[1].startswith("ann,instructor,")
    assert users.role_of(users.find("bob")) == users.INSTRUCTOR
    # one bad name, or one taken: nobody of the batch is added
    for names in ("cid Bad!Name", "cid bob"):
        r = admin_client.post("/users/add", {"names": names}, headers={"HX-Request": "true"})
        assert r.status_code == 200 and 'role="alert"' in r.content.decode()
        assert not get_user_model().objects.filter(username="cid").exists()
    r = admin_client.post("/users/add", {"names": "cid Bad!Name"})
    assert r.status_code == 400


def test_role_disable_and_password_from_the_page(admin_client: Client, alice: Any) -> None:
    url = "/users/alice/change"
    admin_client.post(url, {"action": "role", "role": "instructor"})
    assert users.role_of(users.find("alice")) == users.INSTRUCTOR
    learner = Client()
    learner.force_login(alice)
    assert learner.get("/containers/").status_code == 200
    admin_client.post(url, {"action": "disable"})
    assert learner.get("/containers/").status_code == 302  # the session ended
    assert not users.find("alice").is_active
    admin_client.post(url, {"action": "enable"})
    html = admin_client.post(url, {"action": "password"}).content.decode()
    password = re.search(r"New one-time password for alice: <code>([^<]+)</code>", html)
    assert password and Client().login(username="alice", password=password.group(1))
    actions = set(AuditEvent.objects.filter(target="alice").values_list("action", flat=True))
    assert {"user.role", "user.disable", "user.enable", "user.password"} <= actions


def test_an_admin_cannot_lock_themselves_out(admin_client: Client, admin_user_: Any) -> None:
    url = f"/users/{admin_user_.get_username()}/change"
    r = admin_client.post(url, {"action": "disable"})
    assert r.status_code == 400 and users.find(admin_user_.get_username()).is_active
    r = admin_client.post(url, {"action": "role", "role": "learner"})
    assert r.status_code == 400 and users.find(admin_user_.get_username()).is_superuser
    r = admin_client.post("/users/nobody/change", {"action": "disable"})
    assert r.status_code == 400 and "no user" in r.content.decode()
