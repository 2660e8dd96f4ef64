"""The Run tab (/containers/<id>/run/): start, stop, kill, pause/resume, restart and remove a
container, its state as `podman ps -a` words it with the pid and `runc state`, and its logs
(conmon's k8s-file log: follow, timestamps, download).

Every view checks the owner (or admin) first; actions are POST only (CSRF applies) and are
written to the audit log. State changes arrive over /ws/events/: static/gantry/run.js
re-fetches the state partial when an event for this container comes in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, URLResolver, path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from engine.errors import EngineError, NotFoundError
from engine.protocol import verbs
from engine.protocol.check import Verb
from engine.protocol.verbs import MAX_STOP_TIMEOUT
from webui import engine_client
from webui.access import aget_container_for_user
from webui.answers import error_text
from webui.models import Ownership
from webui.views.common import HtmxHttpRequest, engine_action, error_response
from webui.views.containers import container_header

# Signals offered by the Kill menu (the engine accepts any valid one from the CLI).
KILL_SIGNALS = ("KILL", "TERM", "INT", "HUP", "QUIT", "USR1", "USR2", "STOP", "CONT", "WINCH")
ACTIVE = ("running", "paused")
LOG_TAIL_BYTES = 256 * 1024
_CURSOR_RE = re.compile(r"^[0-9]{1,20}:[0-9]{1,20}:[01]$")


async def _own(request: HttpRequest, container_id: str) -> tuple[Any, Ownership]:
    """The user and the ownership record (404 unless it is theirs, or they are an admin)."""
    user = await request.auser()
    return user, await aget_container_for_user(user, container_id)


async def _state(container_id: str, user: Any, node: str) -> verbs.State:
    try:
        return await engine_client.request(
            verbs.CONTAINER_STATE, verbs.Id(id=container_id), user=user, node=node
        )
    except NotFoundError as err:
        raise Http404("no such container") from err


def _commands(state: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The podman and runc commands equivalent to this tab's buttons, for the learner."""
    name, cid = state.get("name", ""), state.get("id", "")
    return [
        ("podman start", f"podman start {name}"),
        ("runc (after conmon's runc create)", f"runc start {cid[:12]}…"),
        ("podman stop", f"podman stop -t 10 {name}"),
        ("podman kill", f"podman kill -s KILL {name}"),
        ("podman pause / unpause", f"podman pause {name}   # runc pause {cid[:12]}…"),
        ("podman logs", f"podman logs -f {name}"),
        ("podman rm", f"podman rm -f {name}"),
    ]


def _when(epoch: Any) -> str:
    if not isinstance(epoch, int | float) or epoch <= 0:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _context(state: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "nav": "containers",
        "tab": "run",
        "run": state,
        "container_id": state.get("id", ""),
        "active": state.get("state") in ACTIVE,
        "signals": KILL_SIGNALS,
        "commands": _commands(state),
        "runc_json": json.dumps(state["runc"], indent=2) if state.get("runc") else "",
        "started_text": _when(state.get("started_at")),
        "finished_text": _when(state.get("finished_at")),
        **extra,
    }


@require_GET
async def run_tab(request: HttpRequest, container_id: str) -> HttpResponse:
    user, own, info = await container_header(request, container_id)
    error = ""
    state: Mapping[str, Any]
    try:
        state = await _state(container_id, user, own.node)
    except EngineError as err:
        state = {"id": container_id, "name": own.name, "state": "unknown"}
        error = error_text(err)
    ctx = _context(state, c=info, own=own, error=error)
    return render(request, "containers/tab_run.html", ctx)


@require_GET
@never_cache
async def state_partial(request: HttpRequest, container_id: str) -> HttpResponse:
    user, own = await _own(request, container_id)
    return await _render_state(request, container_id, user, own.node)


async def _render_state(
    request: HttpRequest, container_id: str, user: Any, node: str
) -> HttpResponse:
    try:
        state = await _state(container_id, user, node)
    except EngineError as err:
        return error_response(err)
    response = render(request, "containers/tab_run_state.html", _context(state))
    return response


def _int_field(request: HttpRequest, key: str, default: int, hi: int) -> int:
    raw = request.POST.get(key, "")
    if not raw.strip():
        return default
    if not raw.strip().isascii() or not raw.strip().isdigit() or int(raw) > hi:
        raise ValueError(f"{key}: a whole number of seconds from 0 to {hi}")
    return int(raw)


_SIMPLE: dict[str, Verb[verbs.Id, verbs.Summary]] = {
    "start": verbs.CONTAINER_START,
    "pause": verbs.CONTAINER_PAUSE,
    "resume": verbs.CONTAINER_RESUME,
}


def _action_args(
    request: HttpRequest, action: str, ref: str
) -> tuple[Verb[Any, verbs.Summary], Any, dict[str, Any], float]:
    """The engine verb, its arguments (checked here, and again by the engine), what the audit
    log keeps of them, and the RPC timeout an action needs."""
    base = float(settings.GANTRY_RPC_TIMEOUT)
    if action in ("stop", "restart"):
        seconds = _int_field(request, "timeout", 10, MAX_STOP_TIMEOUT)
        verb = verbs.CONTAINER_STOP if action == "stop" else verbs.CONTAINER_RESTART
        return verb, verbs.Stop(id=ref, timeout=seconds), {"timeout": seconds}, base + seconds + 30
    if action == "kill":
        signal = request.POST.get("signal", "KILL")
        if signal not in KILL_SIGNALS:
            raise ValueError(f"signal: one of {', '.join(KILL_SIGNALS)}")
        return (
            verbs.CONTAINER_KILL,
            verbs.Kill(id=ref, signal=signal),
            {"signal": signal},
            base + 10,
        )
    return _SIMPLE[action], verbs.Id(id=ref), {}, base + 50


async def _act(request: HtmxHttpRequest, container_id: str, action: str) -> HttpResponse:
    user, own = await _own(request, container_id)
    try:
        verb, args, detail, timeout = _action_args(request, action, container_id)
    except ValueError as err:
        return HttpResponse(str(err), status=400, content_type="text/plain")
    try:
        await engine_action(
            user,
            verb,
            args,
            target=container_id,
            node=own.node,
            timeout=timeout,
            detail=detail,
        )
    except EngineError as err:
        return error_response(err)
    if request.POST.get("from") == "list":  # the containers table (plain forms)
        return redirect("ui-containers")
    if not request.htmx:
        return redirect("ui-container-run", container_id=container_id)
    return await _render_state(request, container_id, user, own.node)


def _action_view(action: str) -> Any:
    @require_POST
    async def view(request: HtmxHttpRequest, container_id: str) -> HttpResponse:
        return await _act(request, container_id, action)

    view.__name__ = f"run_{action}"
    return view


@require_GET
@never_cache
async def logs(request: HttpRequest, container_id: str) -> HttpResponse:
    """The log as JSON for run.js: the tail first, then what was appended after ``cursor``."""
    user, own = await _own(request, container_id)
    cursor = request.GET.get("cursor", "")
    if cursor and not _CURSOR_RE.match(cursor):
        return HttpResponse("cursor: not valid", status=400, content_type="text/plain")
    args = verbs.Logs(
        id=container_id,
        timestamps=request.GET.get("timestamps") == "1",
        cursor=cursor or None,
        tail_bytes=None if cursor else LOG_TAIL_BYTES,
    )
    try:
        result = await engine_client.request(verbs.CONTAINER_LOGS, args, user=user, node=own.node)
    except EngineError as err:
        return error_response(err)
    response = JsonResponse(result)
    return response


@require_GET
async def logs_download(request: HttpRequest, container_id: str) -> HttpResponse:
    """The whole log as a text attachment (container output is hostile: never rendered)."""
    user, own = await _own(request, container_id)
    timestamps = request.GET.get("timestamps") == "1"
    parts: list[str] = []
    cursor = ""
    for _ in range(64):  # at most 64 MiB of log file
        args = verbs.Logs(id=container_id, timestamps=timestamps, cursor=cursor or None)
        try:
            result = await engine_client.request(
                verbs.CONTAINER_LOGS, args, user=user, node=own.node
            )
        except EngineError as err:
            return error_response(err)
        parts.append(result["data"])
        cursor = result["cursor"]
        if not result.get("more"):
            break
    response = HttpResponse("".join(parts), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{container_id[:12]}.log"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox"
    return response


ACTIONS = ("start", "stop", "kill", "pause", "resume", "restart")  # remove: containers.py

urlpatterns: list[URLPattern | URLResolver] = [
    path("containers/<str:container_id>/run/", run_tab, name="ui-container-run"),
    path("containers/<str:container_id>/run/state", state_partial, name="ui-run-state"),
    path("containers/<str:container_id>/run/logs", logs, name="ui-run-logs"),
    path(
        "containers/<str:container_id>/run/logs/download",
        logs_download,
        name="ui-run-logs-download",
    ),
] + [
    path(f"containers/<str:container_id>/run/{a}", _action_view(a), name=f"ui-run-{a}")
    for a in ACTIONS
]
