"""Password guessing is slowed down per account and per address (webui/login.py), with a
clear message; the right password still works for others meanwhile."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from django.test import Client

from webui import login

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """An injected clock at the start of a window no other test uses (the counts live in
    the shared Redis, which is never flushed under the channel layer)."""
    now = [60.0 * (10**6 + secrets.randbelow(10**9))]
    monkeypatch.setattr(login, "throttle", login.Throttle(clock=lambda: now[0]))
    return now


def attempt(client: Client, user: str, password: str, address: str = "10.0.0.1") -> Any:
    return client.post("/login/", {"username": user, "password": password}, REMOTE_ADDR=address)


def test_thirty_wrong_logins_in_12_s_are_not_all_answered(
    alice: Any, bob: Any, clock: list[float]
) -> None:
    client = Client()
    answers = []
    start = clock[0]
    for i in range(30):
        clock[0] = start + i * 0.4
        answers.append(attempt(client, "alice", f"guess-{i}").status_code)
    assert answers[:5] == [200] * 5  # the form again: wrong password
    assert answers[5:] == [429] * 25
    page = attempt(client, "alice", "alice-pass-123").content.decode()
    assert "Too many failed logins for this account. Try again in 49 s." in page
    # another account from another address is not held up
    assert attempt(Client(), "bob", "bob-pass-123", "10.0.0.2").status_code == 302


def test_the_right_password_works_again_after_the_window(alice: Any, clock: list[float]) -> None:
    client = Client()
    for i in range(6):
        attempt(client, "alice", f"guess-{i}")
    assert attempt(client, "alice", "alice-pass-123").status_code == 429
    clock[0] += login.WINDOW
    r = attempt(client, "alice", "alice-pass-123")
    assert r.status_code == 302 and r["Location"] == "/containers/"


def test_one_address_guessing_many_accounts_is_held_too(clock: list[float]) -> None:
    client = Client()
    codes = [attempt(client, f"user{i}", "x").status_code for i in range(login.PER_ADDRESS + 3)]
    assert codes[: login.PER_ADDRESS] == [200] * login.PER_ADDRESS
    assert codes[login.PER_ADDRESS :] == [429] * 3
    assert "for this address" in attempt(client, "someone", "x").content.decode()


def test_a_disabled_account_cannot_log_in_and_says_no_more(alice: Any) -> None:
    alice.is_active = False
    alice.save()
    r = attempt(Client(), "alice", "alice-pass-123")
    assert r.status_code == 200 and "didn't match" in r.content.decode()


def test_a_hostile_name_is_counted_like_any_other(clock: list[float]) -> None:
    client = Client()
    name = "x" * 140 + " \t\u202eé"  # spaces, a tab, bidi control: a plain key anyway
    codes = [attempt(client, name, "x").status_code for _ in range(login.PER_ACCOUNT + 1)]
    assert codes == [200] * login.PER_ACCOUNT + [429]
