"""/nodes/: the engine nodes that share this Redis (engine.protocol.nodes), live: online or
offline (5 s without a heartbeat), last heartbeat, versions, containers, load, free memory and
disk. Instructors and admins see it; an admin can forget a node that stays offline (its record
only: nothing on the node is touched)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, URLResolver, path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from engine.protocol import nodes
from webui import placement
from webui.access import sees_everyone
from webui.models import AuditEvent, Ownership

REGISTRY_TIMEOUT = 2.0  # seconds: the page says the registry is out of reach, never hangs


def _viewer(request: HttpRequest) -> Any:
    if not sees_everyone(request.user):
        raise PermissionDenied("the nodes page is for instructors and admins")
    return request.user


def _client() -> Any:
    import redis

    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=REGISTRY_TIMEOUT,
        socket_connect_timeout=REGISTRY_TIMEOUT,
    )


def _row(record: dict[str, Any], now: float) -> dict[str, Any]:
    seen = record.get("LastSeen")
    return record | {
        "ago": max(0.0, now - seen) if isinstance(seen, int | float) else None,
        "versions": record.get("Versions") if isinstance(record.get("Versions"), dict) else {},
    }


def _context() -> dict[str, Any]:
    import redis

    client = _client()
    try:
        now, records = nodes.listing(client)
    except (redis.RedisError, OSError) as err:
        return {"rows": [], "error": f"the node registry is out of reach: {err}"}
    finally:
        client.close()
    rows = [_row(r, now) for r in records]
    return {"rows": rows, "error": "", "online": sum(r["Status"] == nodes.ONLINE for r in rows)}


@require_GET
def nodes_page(request: HttpRequest) -> HttpResponse:
    _viewer(request)
    return render(request, "nodes/index.html", {"nav": "nodes"} | _context())


@require_GET
@never_cache
def nodes_table(request: HttpRequest) -> HttpResponse:
    _viewer(request)
    return render(request, "nodes/table.html", _context())


@require_POST
def forget_node(request: HttpRequest, name: str) -> HttpResponse:
    """Forget an offline node (admins): its registry record and the web's records of the
    containers on it (who owned what). Nothing on the node itself is touched; if it comes
    back, its containers show again (to admins). 409 while it is online."""
    if not request.user.is_superuser:
        raise PermissionDenied("only an admin forgets a node")
    client = _client()
    try:
        forgotten = nodes.forget(client, name)
    except ValueError as err:
        return HttpResponse(str(err), status=409, content_type="text/plain; charset=utf-8")
    finally:
        client.close()
    if not forgotten:
        text = f"node {name[:63]}: no such node"
        return HttpResponse(text, status=404, content_type="text/plain; charset=utf-8")
    owned, _ = Ownership.objects.filter(node=name).delete()
    AuditEvent.objects.create(
        user=request.user, action="node.forget", target=name, detail={"containers": owned}
    )
    placement.forget_cache()
    return render(request, "nodes/table.html", _context())


urlpatterns: list[URLPattern | URLResolver] = [
    path("nodes/", nodes_page, name="ui-nodes"),
    path("nodes/table", nodes_table, name="ui-nodes-table"),
    path("nodes/<str:name>/forget", forget_node, name="ui-nodes-forget"),
]
