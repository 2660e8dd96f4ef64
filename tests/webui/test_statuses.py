"""Honest HTTP statuses: what the user asked wrongly is a 4xx, what the registry or the
runtime failed at a 502, an absent engine a 503, and an engine failure inside a 500 that
says nothing of the inside."""

from __future__ import annotations

from typing import Any

import pytest

from engine import errors
from engine.api import base
from engine.core import Engine
from engine.storage.records import ContainerRecord
from tests.webui.webtools import HTMX, alices, client_for, stack
from webui.answers import INTERNAL_MESSAGE
from webui.views.common import error_response

__all__ = ["alices", "stack"]  # fixtures
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.InvalidInputError("bad path"), 400),
        (errors.PolicyError("not in the allowlist"), 403),
        (errors.NotFoundError("no such container"), 404),
        (errors.ContainerNotFoundError("no such container"), 404),
        (errors.InvalidStateError("it is running"), 409),
        (errors.InvalidImageError("digest mismatch"), 422),
        (errors.RegistryError("registry.example: 500"), 502),
        (errors.RuntimeFailedError("runc create: exit 1"), 502),
        (errors.EngineOfflineError("no answer within 5s"), 503),
    ],
)
def test_each_class_of_engine_error_has_its_status(error: errors.EngineError, status: int) -> None:
    response = error_response(error)
    assert response.status_code == status
    assert response.content.decode() == error.message


def test_an_internal_failure_is_a_500_that_tells_nothing_of_the_inside() -> None:
    leaky = errors.from_dict({"code": "internal", "message": "container.state: internal error: "
                              "KeyError('/var/lib/gantry/secret')"})  # fmt: skip
    response = error_response(leaky)
    assert response.status_code == 500
    assert response.content.decode() == INTERNAL_MESSAGE


async def test_a_crash_in_the_engine_reaches_the_page_as_a_plain_500(
    alices: ContainerRecord, alice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(ctx: Any, args: Any) -> None:
        raise KeyError("/var/lib/gantry/secret")

    monkeypatch.setitem(base.OPS, "container.state", crash)
    client = await client_for(alice)
    response = await client.get(f"/containers/{alices.id}/run/state")
    assert response.status_code == 500
    assert response.content.decode() == INTERNAL_MESSAGE


async def test_a_state_the_action_does_not_accept_is_a_409(
    stack: Engine, alices: ContainerRecord, alice: Any
) -> None:
    client = await client_for(alice)
    response = await client.post(f"/containers/{alices.id}/run/pause")
    assert response.status_code == 409
    assert "created" in response.content.decode()


async def test_a_name_in_use_is_told_on_the_form(
    stack: Engine, alices: ContainerRecord, alice: Any
) -> None:
    client = await client_for(alice)
    form = {"image": "localhost/busybox", "name": "twice"}
    first = await client.post("/containers/new", form, headers=HTMX)
    assert first.status_code == 200 and first["HX-Redirect"].startswith("/containers/")
    response = await client.post("/containers/new", form, headers=HTMX)
    assert "already in use" in response.content.decode()
