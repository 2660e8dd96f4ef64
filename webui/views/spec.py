"""The Spec tab (/containers/<id>/spec/): the container's config.json — generate it, see it as
formatted JSON, edit it through a form for the common fields or as raw JSON (both edit one
document: static/gantry/spec.js keeps them in step), check and save it (every error shown at
its field path, the draft kept), diff it against the generated spec, reset it.

Saving posts only the raw text (``text``): the engine parses and checks exactly those bytes
and stores them as they are, so what runs is what the user saw. The form fields carry no
``name``; they only rewrite the text in the browser.

Every view checks the owner (or admin) first — another user's container is a 404; actions are
POST only (CSRF applies) and go to the audit log. Without JavaScript the page still works as
a plain form (the raw editor and Save).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, TypeVar

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, URLResolver, path, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event

from engine.errors import EngineError, NotFoundError
from engine.protocol import SPEC_MAX_BYTES, verbs
from engine.protocol.check import Verb
from webui import engine_client
from webui.access import aget_container_for_user
from webui.answers import error_text, status_of
from webui.views.common import HtmxHttpRequest, audit, error_response, htmx_redirect

A = TypeVar("A")
R = TypeVar("R")
META_SECONDS = 300.0  # how long the Spec tab's help (spec.meta) is kept per node
_meta_cache: dict[str, tuple[float, dict[str, Any]]] = {}


@dataclass(frozen=True)
class Caller:
    """Who asks (for the audit log and the engine) and which node holds the container."""

    user: Any
    node: str


async def _check_access(request: HttpRequest, container_id: str) -> Caller:
    """The caller, if they may see this container (owner or admin); 404 otherwise: someone
    else's container does not exist for them."""
    user = await request.auser()
    own = await aget_container_for_user(user, container_id)
    return Caller(user, own.node)


async def _call(verb: Verb[A, R], caller: Caller, args: A) -> R:
    try:
        return await engine_client.request(verb, args, user=caller.user, node=caller.node or None)
    except NotFoundError as err:
        raise Http404("no such container") from err


def _errors_of(err: EngineError) -> list[dict[str, str]]:
    """Every issue an engine refusal carries, or the message alone."""
    found = err.details.get("errors")
    if isinstance(found, list) and found:
        return [
            {
                "field": str(e.get("field", "")),
                "message": str(e.get("message", "")),
                "rule": str(e.get("rule", "")),
            }
            for e in found
            if isinstance(e, dict)
        ]
    return [
        {"field": str(err.details.get("field", "")), "message": error_text(err), "rule": err.code}
    ]


def _parsed(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _form_values(spec: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Initial values of the form (spec.js keeps them in step with the text afterwards)."""
    process = _obj(spec.get("process"))
    user = _obj(process.get("user"))
    caps = _obj(process.get("capabilities"))
    resources = _obj(_obj(spec.get("linux")).get("resources"))
    cpu = _obj(resources.get("cpu"))
    quota, period = cpu.get("quota"), cpu.get("period") or 100000
    bounding = set(caps.get("bounding") or [])
    capabilities = meta["capabilities"]
    engine_mounts = set(meta["engineMounts"])

    def lines(value: Any) -> str:
        return "\n".join(str(v) for v in value) if isinstance(value, list) else ""

    return {
        "args": lines(process.get("args")),
        "env": lines(process.get("env")),
        "cwd": process.get("cwd", ""),
        "uid": user.get("uid", ""),
        "gid": user.get("gid", ""),
        "hostname": spec.get("hostname", ""),
        "terminal": bool(process.get("terminal")),
        "memory": _obj(resources.get("memory")).get("limit", ""),
        "cpus": round(quota / period, 3) if isinstance(quota, int) and quota > 0 else "",
        "pids": _obj(resources.get("pids")).get("limit", ""),
        "capabilities": [
            {
                "name": cap,
                "checked": cap in bounding,
                "default": cap in capabilities["default"],
                "dangerous": cap in capabilities["dangerous"],
            }
            for cap in capabilities["all"]
        ],
        "mounts": [
            {
                "index": i,
                "destination": m.get("destination", ""),
                "source": m.get("source", ""),
                "type": m.get("type", ""),
                "options": ",".join(str(o) for o in m.get("options") or []),
                "engine": m.get("destination") in engine_mounts,
            }
            for i, m in enumerate(spec.get("mounts") or [])
            if isinstance(m, dict)
        ],
    }


def _header(name: str, state: str, mounts: list[Any] | None = None) -> dict[str, Any]:
    """What the container page's header (containers/detail.html) and its volumes
    (containers/volumes.html) show, in inspect's shape."""
    return {"Name": name, "State": {"Status": state}, "Mounts": mounts or []}


def _commands(info: dict[str, Any]) -> list[tuple[str, str]]:
    name = info.get("name", "")
    return [
        ("podman", f"podman init {name}   # writes config.json, then runc create"),
        ("Gantry CLI", f"python -m engine init {name}"),
        ("check as start will", f"python -m engine spec validate {name}"),
        ("edits vs generated", f"python -m engine spec diff {name}"),
        ("runc's own template", "runc spec   # a minimal config.json to compare with"),
    ]


async def _meta(caller: Caller) -> dict[str, Any]:
    """What the engine says about the spec's fields (the same for every container of a node)."""
    cached = _meta_cache.get(caller.node)
    if cached is not None and time.monotonic() - cached[0] < META_SECONDS:
        return cached[1]
    meta = await _call(verbs.SPEC_META, caller, verbs.NoArgs())
    _meta_cache[caller.node] = (time.monotonic(), meta)
    return meta


async def _page_context(
    container_id: str, caller: Caller, draft: str | None = None, errors: Any = None
) -> dict[str, Any]:
    info = await _call(verbs.SPEC_GET, caller, verbs.Id(id=container_id))
    meta = await _meta(caller)
    diff = None
    if info["exists"]:
        diff = await _call(verbs.SPEC_DIFF, caller, verbs.Id(id=container_id))
    text = info["text"] if draft is None else draft
    return {
        "nav": "containers",
        "tab": "spec",
        "container_id": container_id,
        "c": _header(info["name"], info["state"], info.get("mounts")),
        "info": info,
        "text": text,
        "form": _form_values(_parsed(text), meta),
        "errors": info["errors"] if errors is None else errors,
        "diff": diff,
        "help": meta["help"],
        "fields": meta["fields"],
        "commands": _commands(info),
        "running": info["state"] in ("running", "paused"),
        "meta": {"engineMounts": meta["engineMounts"], "maxBytes": SPEC_MAX_BYTES},
    }


@require_GET
async def spec_tab(request: HttpRequest, container_id: str) -> HttpResponse:
    caller = await _check_access(request, container_id)
    try:
        context = await _page_context(container_id, caller)
    except EngineError as err:
        context = {
            "nav": "containers",
            "tab": "spec",
            "container_id": container_id,
            "c": _header(container_id[:12], "unknown"),
            "engine_error": error_text(err),
        }
    return render(request, "containers/tab_spec.html", context)


async def _rewrite(
    request: HtmxHttpRequest, container_id: str, verb: Verb[verbs.Id, verbs.Json]
) -> HttpResponse:
    """generate or reset: the whole document changes, so the page is reloaded."""
    caller = await _check_access(request, container_id)
    started = time.monotonic()
    op = verb.name
    try:
        await _call(verb, caller, verbs.Id(id=container_id))
    except EngineError as err:
        await audit(caller.user, op, container_id, started, err.message)
        return _refusal(request, container_id, _errors_of(err), status=status_of(err))
    await audit(caller.user, op, container_id, started)
    return htmx_redirect(request, reverse("ui-container-spec", args=[container_id]))


@require_POST
async def generate(request: HtmxHttpRequest, container_id: str) -> HttpResponse:
    return await _rewrite(request, container_id, verbs.SPEC_GENERATE)


@require_POST
async def reset(request: HtmxHttpRequest, container_id: str) -> HttpResponse:
    return await _rewrite(request, container_id, verbs.SPEC_RESET)


def _refusal(
    request: HtmxHttpRequest, container_id: str, errors: list[dict[str, str]], status: int
) -> HttpResponse:
    """Errors as the result partial (htmx swaps it in with a 200, so the editor — and the
    draft in it — is never replaced), or as plain text for a non-htmx request."""
    if request.htmx:
        return render(
            request,
            "containers/tab_spec_result.html",
            {"errors": errors, "container_id": container_id},
        )
    text = "\n".join(
        f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors
    )
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


async def _submit(
    request: HtmxHttpRequest, container_id: str, verb: Verb[verbs.SpecText, verbs.Json]
) -> HttpResponse:
    caller = await _check_access(request, container_id)
    op = verb.name
    text = request.POST.get("text", "")
    started = time.monotonic()
    errors: list[dict[str, str]] = []
    result: dict[str, Any] = {}
    if len(text) > SPEC_MAX_BYTES:
        errors = [{"field": "", "message": f"larger than {SPEC_MAX_BYTES} bytes", "rule": "json"}]
    else:
        try:
            result = await _call(verb, caller, verbs.SpecText(id=container_id, text=text))
        except EngineError as err:
            errors = _errors_of(err)
    if op == "spec.validate" and not errors:
        errors = list(result.get("errors") or [])
    if op == "spec.put":
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        await audit(caller.user, op, container_id, started, summary)
    if not request.htmx:
        if errors or op == "spec.validate":
            context = await _page_context(container_id, caller, draft=text, errors=errors)
            context["checked"] = not errors
            context["checking"] = op == "spec.validate"
            status = 400 if errors else 200
            return render(request, "containers/tab_spec.html", context, status=status)
        return redirect("ui-container-spec", container_id=container_id)
    response = render(
        request,
        "containers/tab_spec_result.html",
        {
            "errors": errors,
            "saved": op == "spec.put" and not errors,
            "checked": op == "spec.validate" and not errors,
            "checking": op == "spec.validate",
            "container_id": container_id,
            "running": result.get("state") in ("running", "paused"),
        },
    )
    if op == "spec.put" and not errors:
        trigger_client_event(response, "spec-saved")
    return response


@require_POST
async def save(request: HtmxHttpRequest, container_id: str) -> HttpResponse:
    return await _submit(request, container_id, verbs.SPEC_PUT)


@require_POST
async def check(request: HtmxHttpRequest, container_id: str) -> HttpResponse:
    return await _submit(request, container_id, verbs.SPEC_VALIDATE)


@require_GET
@never_cache
async def diff(request: HtmxHttpRequest, container_id: str) -> HttpResponse:
    caller = await _check_access(request, container_id)
    try:
        result = await _call(verbs.SPEC_DIFF, caller, verbs.Id(id=container_id))
    except EngineError as err:
        return error_response(err)
    oob = bool(request.htmx)  # also refresh the "edited" pill
    response = render(
        request,
        "containers/tab_spec_diff.html",
        {"diff": result, "container_id": container_id, "oob": oob},
    )
    return response


urlpatterns: list[URLPattern | URLResolver] = [
    path("containers/<str:container_id>/spec/", spec_tab, name="ui-container-spec"),
    path("containers/<str:container_id>/spec/generate", generate, name="ui-spec-generate"),
    path("containers/<str:container_id>/spec/save", save, name="ui-spec-save"),
    path("containers/<str:container_id>/spec/check", check, name="ui-spec-check"),
    path("containers/<str:container_id>/spec/reset", reset, name="ui-spec-reset"),
    path("containers/<str:container_id>/spec/diff", diff, name="ui-spec-diff"),
]
