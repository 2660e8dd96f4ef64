"""What every area's views share: the audit log of engine actions, an engine error as an
answer, a redirect htmx follows, and ``engine_action`` (call the engine, audit the outcome).

An action asked for through the web is written to the audit log once, when it ends: who, the
engine verb, its target, ok or the error text, how long it took, and some detail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from engine.errors import EngineError
from engine.protocol.check import Verb
from webui import engine_client
from webui.answers import error_text, status_of
from webui.models import AuditEvent

A = TypeVar("A")
R = TypeVar("R")
AUDIT_ERROR_MAX = 4000  # characters of an error kept in the audit log


async def audit(
    user: Any, action: str, target: str, started: float, err: str = "", **detail: Any
) -> None:
    """One line in the audit log for an engine action asked for through the web
    (``started``: its time.monotonic() start)."""
    await AuditEvent.objects.acreate(
        user=user,
        action=action,
        target=target,
        ok=not err,
        error=err[:AUDIT_ERROR_MAX],
        duration_ms=(time.monotonic() - started) * 1000,
        detail=detail,
    )


async def engine_action(
    user: Any,
    verb: Verb[A, R],
    args: A,
    *,
    target: str,
    node: str | None = None,
    timeout: float | None = None,
    detail: dict[str, Any] | None = None,
    done: Callable[[R], dict[str, Any]] | None = None,
) -> R:
    """Run engine ``verb`` for a web action and audit it: ``detail`` either way, plus
    ``done(reply)`` when it worked. Returns the reply; an EngineError is audited, then
    raised again (the view chooses the answer)."""
    started = time.monotonic()
    op = verb.name
    try:
        reply = await engine_client.request(verb, args, user=user, timeout=timeout, node=node)
    except EngineError as err:
        await audit(user, op, target, started, err.message, **(detail or {}))
        raise
    await audit(user, op, target, started, **{**(detail or {}), **(done(reply) if done else {})})
    return reply


def error_response(err: EngineError) -> HttpResponse:
    """An engine error as one sentence (app.js shows it as a toast), with its status."""
    return HttpResponse(
        error_text(err), status=status_of(err), content_type="text/plain; charset=utf-8"
    )


class HtmxHttpRequest(HttpRequest):
    """A request as django-htmx's middleware leaves it: ``request.htmx`` is true when htmx
    sent it, and says which element asked and what it targets."""

    htmx: HtmxDetails


def htmx_redirect(request: HtmxHttpRequest, url: str) -> HttpResponse:
    """A redirect htmx follows as a page load (HX-Redirect) and a browser as a 302."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return HttpResponseRedirect(url)
