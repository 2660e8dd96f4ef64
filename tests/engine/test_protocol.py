"""The typed verbs (engine.protocol.verbs) and their one check (engine.protocol.check)."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, get_type_hints

import pytest

from engine.errors import InvalidInputError
from engine.protocol import verbs
from engine.protocol.check import decode, encode


def test_every_verb_has_one_handler_taking_its_arguments() -> None:
    import engine.api.verbs  # noqa: F401  (registers every handler)
    from engine.api.base import OPS

    assert set(OPS) == set(verbs.VERBS)
    for name, handler in OPS.items():
        assert handler.verb is verbs.VERBS[name]
        hints = get_type_hints(handler.fn)
        assert hints["args"] is handler.verb.args, name
        assert f"engine.api.{handler.verb.module}" == handler.fn.__module__, name


def test_every_argument_type_can_be_checked() -> None:
    for verb in verbs.VERBS.values():  # a field type decode cannot check raises TypeError
        with contextlib.suppress(InvalidInputError):
            decode(verb.args, {})


def test_decode_fills_defaults_and_keeps_what_was_given() -> None:
    got = decode(verbs.Create, {"image": "busybox", "volumes": ["/mnt:/mnt"], "tty": True})
    assert got == verbs.Create(image="busybox", volumes=["/mnt:/mnt"], tty=True)
    assert got.entrypoint is None and got.command == []
    assert decode(verbs.Create, {"image": "x", "entrypoint": []}).entrypoint == []
    assert decode(verbs.Stop, {"id": "web", "timeout": None}).timeout == 10


@pytest.mark.parametrize(
    "args",
    [
        verbs.Create(image="busybox", name="a", command=["top"], env=["A=1"]),
        verbs.Logs(id="abc", cursor="1:2", tail_bytes=100),
        verbs.Kill(id="abc", signal=15),
        verbs.UploadChunk(upload="u1", offset=0, data=b"\x00\xff"),
        verbs.FsMkdir(id="abc", path="/d", mode=0o700),
        verbs.Pull(ref="busybox", tls_verify=False),
        verbs.NoArgs(),
    ],
)
def test_encode_then_decode_is_the_same(args: Any) -> None:
    assert decode(type(args), encode(args)) == args


@pytest.mark.parametrize(
    ("cls", "raw", "message"),
    [
        (verbs.Id, None, "id: required"),
        (verbs.Id, {}, "id: required"),
        (verbs.Id, {"id": None}, "id: required"),
        (verbs.Id, ["id"], "args must be an object"),
        (verbs.Id, "id", "args must be an object"),
        (verbs.Id, {"id": 5}, "id: must be a string"),
        (verbs.Id, {"id": "x" * 129}, "id: longer than 128"),
        (verbs.Id, {"id": "a\x00b"}, "id: contains a NUL"),
        (verbs.Id, {"id": "a", "force": True}, "unknown argument 'force'"),
        (verbs.Id, {"id": "a", 7: 1}, "unknown argument '7'"),
        (verbs.Stop, {"id": "a", "timeout": True}, "timeout: must be an integer"),
        (verbs.Stop, {"id": "a", "timeout": "5"}, "timeout: must be an integer"),
        (verbs.Stop, {"id": "a", "timeout": -1}, "timeout: must be between 0 and 3600"),
        (verbs.Stop, {"id": "a", "timeout": 1.5}, "timeout: must be an integer"),
        (verbs.Force, {"id": "a", "force": "yes"}, "force: must be true or false"),
        (verbs.Create, {"image": "x", "command": "top"}, "command: must be a list"),
        (verbs.Create, {"image": "x", "command": ["a", 1]}, "command[1]: must be a string"),
        (verbs.Create, {"image": "x", "env": ["A\x00"]}, "env[0]: must be a string"),
        (verbs.Create, {"image": "x", "volumes": ["/a:/a"] * 65}, "volumes: must be a list"),
        (verbs.Pulls, {"job": "../../etc"}, "job: '../../etc' is not valid"),
        (verbs.FsChmod, {"id": "a", "path": "/x"}, "mode: required"),
        (verbs.FsChmod, {"id": "a", "path": "/x", "mode": "9"}, "not an octal mode"),
        (verbs.FsChmod, {"id": "a", "path": "/x", "mode": 0o17777}, "between 0000 and 7777"),
        (verbs.FsChmod, {"id": "a", "path": "/x", "mode": True}, "an octal string"),
        (verbs.UploadChunk, {"upload": "u", "offset": 0, "data": "%%%"}, "data: not base64"),
        (verbs.UploadChunk, {"upload": "u", "offset": 0, "data": 5}, "data: bytes or base64"),
        (
            verbs.UploadChunk,
            {"upload": "u", "offset": 0, "data": b"x" * (verbs.MAX_CHUNK + 1)},
            "at most",
        ),
        (verbs.Kill, {"id": "a", "signal": False}, "signal: must be a string"),
        (verbs.Kill, {"id": "a", "signal": "K" * 33}, "signal: longer than 32"),
        (verbs.FsDownload, {"id": "a", "path": "/", "lane": "other:key"}, "lane:"),
        (verbs.Attach, {"container": "a", "viewer": "bad name!"}, "viewer:"),
    ],
)
def test_decode_refuses_bad_arguments_naming_them(cls: Any, raw: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message.replace("[", r"\[").replace("(", r"\(")):
        decode(cls, raw)


def test_decode_takes_base64_or_bytes_for_data() -> None:
    assert decode(verbs.UploadChunk, {"upload": "u", "offset": 0, "data": "aGk="}).data == b"hi"
    assert decode(verbs.UploadChunk, {"upload": "u", "offset": 0, "data": b"hi"}).data == b"hi"


def test_argument_types_are_frozen() -> None:
    args = verbs.Id(id="a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        args.id = "b"  # type: ignore[misc]


def test_wire_classes_behave_as_frozen_keyword_only_dataclasses() -> None:
    """@wire stands in for @dataclass(frozen=True, kw_only=True) on the argument classes."""
    import dataclasses

    from engine.protocol import verbs

    a = verbs.Create(image="busybox", command=["true"])
    assert a == verbs.Create(image="busybox", command=["true"]) != verbs.Create(image="x")
    assert a.env == [] and a.env is not verbs.Create(image="y").env  # a fresh default each
    assert repr(verbs.Id(id="c1")) == "Id(id='c1')"
    assert hash(verbs.Id(id="c1")) == hash(verbs.Id(id="c1"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.image = "other"  # type: ignore[misc]
    with pytest.raises(TypeError, match="keyword arguments only"):
        verbs.Id("c1")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="missing keyword argument 'id'"):
        verbs.Id()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        verbs.Id(id="c1", colour="red")  # type: ignore[call-arg]
