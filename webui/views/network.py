"""The network, as pages: a container's Network tab (one construction step: its namespace,
veth pair, addresses and routes as ``ip -n`` shows them, published ports, the iptables rules
netavark made, and the commands that do it by hand), and /networks/, the networks of this
web's node (everyone sees them; an admin creates and removes them)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, URLResolver, path
from django.views.decorators.http import require_GET, require_POST

from engine.errors import EngineError
from engine.protocol import verbs
from webui import engine_client
from webui.answers import error_text
from webui.views.common import engine_action
from webui.views.containers import container_header


@require_GET
async def container_network(request: HttpRequest, container_id: str) -> HttpResponse:
    user, own, info = await container_header(request, container_id)  # 404 if not theirs
    try:
        view = await engine_client.request(
            verbs.CONTAINER_NETWORK, verbs.Id(id=container_id), user=user, node=own.node
        )
        error = ""
    except EngineError as err:
        view, error = {}, error_text(err)
    return render(
        request,
        "containers/tab_network.html",
        {
            "nav": "containers",
            "tab": "network",
            "c": info,
            "container_id": container_id,
            "n": view,
            "error": error,
        },
    )


async def _networks(user: Any) -> tuple[list[dict[str, Any]], str]:
    try:
        found = await engine_client.request(verbs.NETWORK_LIST, verbs.NoArgs(), user=user)
    except EngineError as err:
        return [], error_text(err)
    return list(found), ""


async def _page(request: HttpRequest, user: Any, error: str = "", notice: str = "") -> HttpResponse:
    rows, unreachable = await _networks(user)
    return render(
        request,
        "networks/index.html",
        {
            "nav": "networks",
            "rows": rows,
            "error": error or unreachable,
            "notice": notice,
            "admin": user.is_superuser,
            "form": request.POST if error else {},
        },
        status=400 if error else 200,
    )


@require_GET
async def networks_page(request: HttpRequest) -> HttpResponse:
    return await _page(request, await request.auser())


def _admin(user: Any) -> None:
    if not user.is_superuser:
        raise PermissionDenied("only an admin creates or removes networks")


@require_POST
async def network_create(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    _admin(user)
    args = verbs.CreateNetwork(
        name=request.POST.get("name", "").strip()[:64],
        subnet=request.POST.get("subnet", "").strip()[:64],
        gateway=request.POST.get("gateway", "").strip()[:64],
        internal=request.POST.get("internal") == "on",
        dns=request.POST.get("dns") == "on",
    )
    try:
        made = await engine_action(user, verbs.NETWORK_CREATE, args, target=args.name)
    except EngineError as err:
        return await _page(request, user, error=error_text(err))
    subnet = made["subnets"][0]["subnet"]
    return await _page(request, user, notice=f"Network {made['name']} created ({subnet}).")


@require_POST
async def network_remove(request: HttpRequest, name: str) -> HttpResponse:
    user = await request.auser()
    _admin(user)
    try:
        await engine_action(user, verbs.NETWORK_REMOVE, verbs.NetworkName(name=name), target=name)
    except EngineError as err:
        return await _page(request, user, error=error_text(err))
    return await _page(request, user, notice=f"Network {name} removed.")


urlpatterns: list[URLPattern | URLResolver] = [
    path("containers/<str:container_id>/network/", container_network, name="ui-container-network"),
    path("networks/", networks_page, name="ui-networks"),
    path("networks/create", network_create, name="ui-network-create"),
    path("networks/<str:name>/remove", network_remove, name="ui-network-remove"),
]
