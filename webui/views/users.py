"""/users/: the admins' Users page. Add one user or many at once (their one-time passwords are
shown once, or downloaded as CSV), set a role, disable or enable, reset a password. Every
change goes to the audit log; the rules live in webui/users.py, shared with ``./gantry users``.
"""

from __future__ import annotations

import csv
import io
import time
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, URLResolver, path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from engine.errors import EngineError, InvalidInputError
from webui import users
from webui.answers import error_text
from webui.views.common import HtmxHttpRequest, audit

MAX_BATCH = 200  # names in one "add many"


async def _admin(request: HttpRequest) -> Any:
    user = await request.auser()
    if not user.is_superuser:  # the admin role (webui.users)
        raise PermissionDenied("the users page is for admins")
    return user


async def _page(request: HtmxHttpRequest, status: int = 200, **extra: Any) -> HttpResponse:
    from asgiref.sync import sync_to_async

    rows = await sync_to_async(users.rows)()
    ctx = {"nav": "users", "rows": rows, "roles": users.ROLES} | extra
    template = "users/panel.html" if request.htmx else "users/list.html"
    return render(request, template, ctx, status=status)


@require_GET
@never_cache
async def user_list(request: HtmxHttpRequest) -> HttpResponse:
    await _admin(request)
    return await _page(request)


def _names(raw: str) -> list[str]:
    """Names pasted one per line (or separated by spaces or commas), in order, once each."""
    seen: dict[str, None] = {}
    for name in raw.replace(",", " ").split():
        seen.setdefault(name.strip(), None)
    names = list(seen)
    if not names:
        raise InvalidInputError("give at least one name", field="names")
    if len(names) > MAX_BATCH:
        raise InvalidInputError(f"at most {MAX_BATCH} names at once", field="names")
    for name in names:
        users.check_name(name)
    return names


def _add_all(names: list[str], role: str) -> list[dict[str, str]]:
    """Add every name, all or none: any refusal leaves nobody added."""
    from django.db import transaction

    users.check_role(role)
    with transaction.atomic():
        return [
            {"name": name, "password": users.add(name, role).password, "role": role}
            for name in names
        ]


@require_POST
async def user_add(request: HtmxHttpRequest) -> HttpResponse:
    """Add one or many users; their one-time passwords come back once, on the page or as a
    CSV download (``download=csv``)."""
    from asgiref.sync import sync_to_async

    admin = await _admin(request)
    started = time.monotonic()
    role = request.POST.get("role", users.LEARNER)
    try:
        added = await sync_to_async(_add_all)(_names(request.POST.get("names", "")), role)
    except EngineError as err:
        return await _page(request, status=_status(request), error=error_text(err))
    for row in added:
        await audit(admin, "user.add", row["name"], started, role=role)
    if request.POST.get("download") == "csv":
        return _csv(added)
    return await _page(request, added=added)


def _status(request: HtmxHttpRequest) -> int:
    """htmx swaps only 2xx answers: a refusal comes back as 200 to htmx, 400 otherwise."""
    return 200 if request.htmx else 400


def _csv(rows: list[dict[str, str]]) -> HttpResponse:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["name", "role", "one-time password"])
    for row in rows:
        writer.writerow([row["name"], row["role"], row["password"]])
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="gantry-users.csv"'
    response["Cache-Control"] = "no-store"  # passwords: never kept by a cache
    return response


@require_POST
async def user_change(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """One change to one user: ``action`` role (with ``role``), disable, enable or password."""
    from asgiref.sync import sync_to_async

    admin = await _admin(request)
    started = time.monotonic()
    action = request.POST.get("action", "")
    try:
        user = await sync_to_async(users.find)(name)
        extra = await sync_to_async(_apply)(admin, user, action, request.POST.get("role", ""))
    except EngineError as err:
        await audit(admin, f"user.{action[:20]}", name[:64], started, err.message)
        return await _page(request, status=_status(request), error=error_text(err))
    await audit(admin, f"user.{action}", name, started, **extra.get("detail", {}))
    return await _page(request, **extra.get("show", {}))


def _apply(admin: Any, user: Any, action: str, role: str) -> dict[str, Any]:
    if action == "role":
        if user.pk == admin.pk and role != users.ADMIN:
            raise InvalidInputError("an admin cannot take away their own admin role")
        users.set_role(user, role)
        return {"detail": {"role": role}, "show": {"saved": f"{user.get_username()} is {role}"}}
    if action in ("disable", "enable"):
        if user.pk == admin.pk:
            raise InvalidInputError("an admin cannot disable themselves")
        users.set_active(user, action == "enable")
        return {"show": {"saved": f"{user.get_username()}: {action}d"}}
    if action == "password":
        password = users.set_password(user)
        return {"show": {"reset": {"name": user.get_username(), "password": password}}}
    raise InvalidInputError(f"action {action[:20]!r}: role, disable, enable or password")


urlpatterns: list[URLPattern | URLResolver] = [
    path("users/", user_list, name="ui-users"),
    path("users/add", user_add, name="ui-users-add"),
    path("users/<str:name>/change", user_change, name="ui-users-change"),
]
