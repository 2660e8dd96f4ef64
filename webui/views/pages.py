"""The pages every other part hangs from: home, the engine's status and node information."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from engine.errors import EngineError
from engine.protocol import verbs
from webui import engine_client
from webui.answers import error_text

STATUS_TIMEOUT = 2.0


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("ui-containers")


async def _node_info() -> tuple[dict[str, object] | None, str]:
    try:
        info = await engine_client.request(verbs.NODE_INFO, verbs.NoArgs(), timeout=STATUS_TIMEOUT)
        return info, ""
    except EngineError as err:
        return None, error_text(err)


@require_GET
async def engine_page(request: HttpRequest) -> HttpResponse:
    info, error = await _node_info()
    return render(request, "engine.html", {"nav": "engine", "info": info, "error": error})


@require_GET
@never_cache
async def engine_status(request: HttpRequest) -> HttpResponse:
    """The status badge as a partial: used where no websocket runs and by scripts."""
    info, error = await _node_info()
    response = render(request, "partials/engine_status.html", {"info": info, "error": error})
    return response
