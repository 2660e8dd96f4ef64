"""Content-Security-Policy for every response (Django 5.2 has no built-in CSP).

No inline script at all: every script is a static file. Styles allow 'unsafe-inline' because
xterm.js's DOM renderer injects <style> elements (xterm.js#4445). Websockets go to this origin
('self' covers ws: and wss: of the same host in CSP level 3).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import sync_and_async_middleware

POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def _add_headers(response: HttpResponse) -> HttpResponse:
    response.headers.setdefault("Content-Security-Policy", POLICY)
    return response


@sync_and_async_middleware
def ContentSecurityPolicyMiddleware(get_response: Any) -> Any:  # noqa: N802 (Django's style)
    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponse:
            return _add_headers(await get_response(request))

        return middleware

    def sync_middleware(request: HttpRequest) -> HttpResponse:
        return _add_headers(get_response(request))

    return sync_middleware


__all__ = ["ContentSecurityPolicyMiddleware", "Awaitable", "Callable"]


def _role(user: Any) -> str:
    from webui.users import role_of

    return role_of(user) if getattr(user, "is_authenticated", False) else ""


@sync_and_async_middleware
def RoleMiddleware(get_response: Any) -> Any:  # noqa: N802 (Django's style)
    """``request.gantry_role``: the user's role (webui.users), read once per request, for
    the pages' navigation (templates cannot query the database from an async view)."""
    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponse:
            from asgiref.sync import sync_to_async

            request.gantry_role = await sync_to_async(_role)(await request.auser())  # type: ignore[attr-defined]
            response: HttpResponse = await get_response(request)
            return response

        return middleware

    def sync_middleware(request: HttpRequest) -> HttpResponse:
        request.gantry_role = _role(request.user)  # type: ignore[attr-defined]
        response: HttpResponse = get_response(request)
        return response

    return sync_middleware
