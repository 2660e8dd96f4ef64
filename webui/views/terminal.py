"""The Terminal tab (/containers/<id>/terminal/): the container's console (tty containers) and
exec shells, each in its own xterm.js pane over /ws/containers/<id>/... (webui/consumers/
terminal.py, static/gantry/terminal.js).

"New shell" asks the engine for an interactive exec session (exec -t): the image's first shell
(bash, then sh) unless the user types a command, run as the user they choose. The answer names
the session; the page opens a pane on it. A missing shell or command is said in one sentence.
"""

from __future__ import annotations

import shlex
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, URLResolver, path
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event

from engine.errors import EngineError
from engine.protocol import verbs
from webui import engine_client
from webui.answers import error_text
from webui.views.common import engine_action
from webui.views.containers import container_header

MAX_COMMAND = 4096


@require_GET
async def terminal_tab(request: HttpRequest, container_id: str) -> HttpResponse:
    user, own, info = await container_header(request, container_id)
    state = info.get("State", {}).get("Status", "")
    running = state in ("running", "paused")
    shells: list[dict[str, Any]] = []
    if running:  # shells opened earlier (another tab, before a reload) get their panes back
        try:
            found = await engine_client.request(
                verbs.EXEC_LIST,
                verbs.Container(container=container_id),
                user=user,
                node=own.node,
                timeout=5,
            )
        except EngineError:
            found = []
        shells = [
            {"exec": s["exec"], "label": " ".join(s.get("command") or [])[:40] or "shell"}
            for s in found
        ]
    return render(
        request,
        "containers/tab_terminal.html",
        {
            "nav": "containers",
            "tab": "terminal",
            "c": info,
            "container_id": container_id,
            "own": own,
            "running": running,
            "shells": shells,
            "tty": bool(info.get("Config", {}).get("Tty")),
        },
    )


def _exec_error(request: HttpRequest, message: str) -> HttpResponse:
    return render(request, "containers/terminal_error.html", {"message": message})


@require_POST
async def exec_create(request: HttpRequest, container_id: str) -> HttpResponse:
    user, own, _ = await container_header(request, container_id)
    raw = request.POST.get("command", "").strip()
    run_as = request.POST.get("user", "").strip()
    if len(raw) > MAX_COMMAND or len(run_as) > 256:
        return _exec_error(request, "the command or user is too long")
    try:
        command = shlex.split(raw)
    except ValueError as err:
        return _exec_error(request, f"the command does not parse: {err}")
    try:
        result = await engine_action(
            user,
            verbs.EXEC_CREATE,
            verbs.ExecCreate(container=container_id, command=command, user=run_as),
            target=container_id,
            node=own.node,
            timeout=30,
            detail={"command": command},
            done=lambda reply: {"command": reply["command"], "exec": reply["exec"]},
        )
    except EngineError as err:
        return _exec_error(request, error_text(err))
    label = " ".join(result["command"])[:40] + (f" ({run_as})" if run_as else "")
    return trigger_client_event(
        HttpResponse(status=204),
        "gantry:exec-created",
        {"exec": result["exec"], "label": label},
    )


urlpatterns: list[URLPattern | URLResolver] = [
    path("containers/<str:container_id>/terminal/", terminal_tab, name="ui-container-terminal"),
    path("containers/<str:container_id>/terminal/exec", exec_create, name="ui-terminal-exec"),
]
