"""Request bodies are capped before Django spools them to the web user's disk."""

from __future__ import annotations

from typing import Any

from webui.bodylimit import BodyLimit


class Inner:
    def __init__(self) -> None:
        self.called = False
        self.received: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.called = True
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                return


def http(length: int | None) -> dict[str, Any]:
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    return {"type": "http", "method": "POST", "path": "/x", "headers": headers}


async def run(app: BodyLimit, scope: dict[str, Any], chunks: list[bytes]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    queue = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_a_declared_length_over_the_cap_is_refused_before_any_byte_is_read() -> None:
    inner = Inner()
    sent = await run(BodyLimit(inner, 100), http(101), [b"x" * 101])
    assert not inner.called
    assert sent[0]["status"] == 413 and b"at most 100 bytes" in sent[1]["body"]


async def test_a_body_without_length_is_cut_off_past_the_cap() -> None:
    inner = Inner()
    await run(BodyLimit(inner, 100), http(None), [b"x" * 60, b"x" * 60, b"x" * 60])
    assert inner.received[-1] == {"type": "http.disconnect"}
    assert sum(len(m.get("body", b"")) for m in inner.received) == 60


async def test_bodies_within_the_cap_pass_untouched() -> None:
    inner = Inner()
    await run(BodyLimit(inner, 100), http(100), [b"x" * 50, b"x" * 50])
    assert [len(m["body"]) for m in inner.received] == [50, 50]


def test_the_web_application_is_wrapped() -> None:
    from webui.asgi import application

    assert isinstance(application.application_mapping["http"], BodyLimit)
