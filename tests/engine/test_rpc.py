from __future__ import annotations

from typing import Any

import pytest

from engine import errors
from engine.core import Engine
from engine.events import RecordingPublisher
from engine.protocol.check import Verb
from engine.protocol.verbs import NoArgs
from engine.rpc.dispatch import dispatch, parse_request

GOOD = {
    "type": "engine.request",
    "id": "abc-1",
    "op": "node.ping",
    "args": {},
    "reply_to": "engine-reply.x!y",
    "user": "1",
}


def test_it_answers_a_known_verb(engine: Engine) -> None:
    reply = dispatch(engine, parse_request(GOOD), RecordingPublisher())
    assert reply["ok"] is True
    assert reply["result"] == "pong"
    assert reply["id"] == "abc-1"


def test_it_reports_node_info(engine: Engine) -> None:
    reply = dispatch(engine, parse_request(GOOD | {"op": "node.info"}), RecordingPublisher())
    info = reply["result"]
    assert info["node"] == engine.config.node
    for key in ("runc", "conmon", "kernel", "engine"):
        assert info[key]


def test_it_refuses_an_unknown_verb_with_a_typed_error(engine: Engine) -> None:
    reply = dispatch(engine, parse_request(GOOD | {"op": "image.explode"}), RecordingPublisher())
    assert reply["ok"] is False
    assert reply["error"]["code"] == "invalid_input"
    assert "unknown operation" in reply["error"]["message"]


def test_it_refuses_unknown_arguments(engine: Engine) -> None:
    reply = dispatch(engine, parse_request(GOOD | {"args": {"surprise": 1}}), RecordingPublisher())
    assert reply["error"]["code"] == "invalid_input"
    assert "surprise" in reply["error"]["message"]


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        "text",
        {"type": "other"},
        GOOD | {"id": "../x"},
        GOOD | {"id": "x" * 65},
        GOOD | {"reply_to": "bad channel"},
        GOOD | {"reply_to": 5},
        GOOD | {"op": 7},
        GOOD | {"user": {"id": 1}},
        GOOD | {"user": True},
    ],
)
def test_it_rejects_malformed_envelopes(bad: Any) -> None:
    with pytest.raises(errors.InvalidInputError):
        parse_request(bad)


def test_it_turns_a_crashing_handler_into_an_internal_error(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.api import base

    def boom(ctx: Any, args: Any) -> None:
        raise ZeroDivisionError("boom")

    verb: Verb[NoArgs, None] = Verb("node.boom", NoArgs, "node")
    monkeypatch.setitem(base.OPS, "node.boom", base.Handler(verb, boom))
    reply = dispatch(engine, parse_request(GOOD | {"op": "node.boom"}), RecordingPublisher())
    assert reply["ok"] is False
    assert reply["error"]["code"] == "internal"


def test_errors_survive_the_round_trip() -> None:
    err = errors.InvalidStateError(
        "container x is running", current="running", wanted=("created", "exited")
    )
    back = errors.from_dict(err.to_dict())
    assert isinstance(back, errors.InvalidStateError)
    assert back.current == "running"
    assert back.message == "container x is running"
    policy = errors.from_dict(errors.PolicyError("no hooks", rule="hooks", field="hooks").to_dict())
    assert isinstance(policy, errors.PolicyError)
    assert (policy.rule, policy.field) == ("hooks", "hooks")
    assert type(errors.from_dict({"code": "martian", "message": "m"})) is errors.EngineError
