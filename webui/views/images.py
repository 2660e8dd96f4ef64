"""The images pages: pull (with live per-layer progress), the image list, one image's page
(manifest chain, config, history, layers) with Remove, and registry credentials.

Images belong to the node, not to a user: any logged-in user may pull, look and remove (the
engine refuses removal while a container uses the image). Credentials are host-wide secrets,
so only admins see or change them; passwords are sent once to the engine and never shown.
Pull progress arrives over /ws/events/ (kind "pull"); static/gantry/images.js draws it. The
page renders the running and recent pulls from image.pulls, so a reload rebuilds the bars.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, URLResolver, path, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from engine.errors import EngineError, InvalidInputError, NotFoundError
from engine.protocol import verbs
from webui import engine_client, placement, pullcards
from webui.answers import error_text
from webui.views.common import HtmxHttpRequest, audit, engine_action, error_response, htmx_redirect

IMAGE_ID_RE = re.compile(r"^[0-9a-f]{64}$")
REGISTRY_RE = re.compile(r"^[A-Za-z0-9.\-\[\]:]{1,255}$")
LOGIN_TIMEOUT = 30.0


def _when(epoch: Any) -> str:
    if not isinstance(epoch, int | float) or epoch <= 0:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- the page ------------------------------------------------------------------------------------
@require_GET
async def image_list(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    jobs: list[dict[str, Any]] = []
    error = ""
    try:
        jobs = await engine_client.request(verbs.IMAGE_PULLS, verbs.Pulls(), user=user)
    except EngineError as err:
        error = error_text(err)
    ctx = {
        "nav": "images",
        "jobs": pullcards.decorate_all(jobs),
        "error": error,
        "user_is_admin": user.is_superuser,
        "nodes": await placement.nodes_to_ask(),
        "own_node": engine_client.node_name(),
    }
    return render(request, "images/list.html", ctx)


async def _images_of(user: Any, node: str) -> list[dict[str, Any]]:
    images = await engine_client.request(verbs.IMAGE_LIST, verbs.NoArgs(), user=user, node=node)
    for image in images:
        image["Node"] = node
        image["short_id"] = image["Id"][:12]
        image["size_text"] = pullcards.human(image.get("Size"))
        image["created_text"] = str(image.get("CreatedAt", ""))[:19].replace("T", " ")
    return list(images)


@require_GET
@never_cache
async def image_table(request: HttpRequest) -> HttpResponse:
    """The `podman images` table of every online node (images are per node); htmx reloads it
    whenever an image event arrives."""
    user = await request.auser()
    asked = await placement.nodes_to_ask()
    images: list[dict[str, Any]] = []
    errors: list[str] = []
    for node in asked:
        try:
            images += await _images_of(user, node)
        except EngineError as err:
            errors.append(error_text(err) if len(asked) == 1 else f"{node}: {error_text(err)}")
    context = {"images": images, "error": "; ".join(errors), "show_node": len(asked) > 1}
    return render(request, "images/table.html", context)


@require_GET
@never_cache
async def pull_jobs(request: HttpRequest) -> HttpResponse:
    """Every running and recent pull as cards (the page's fallback after a reconnect)."""
    try:
        jobs = await engine_client.request(
            verbs.IMAGE_PULLS, verbs.Pulls(), user=await request.auser()
        )
    except EngineError as err:
        return error_response(err)
    response = render(request, "images/pull_jobs.html", {"jobs": pullcards.decorate_all(jobs)})
    return response


@require_POST
async def pull(request: HtmxHttpRequest) -> HttpResponse:
    """Start a pull; answers with its progress card at once (the pull runs on)."""
    user = await request.auser()
    ref = request.POST.get("ref", "").strip()
    platform = request.POST.get("platform", "").strip()
    skip_tls = request.POST.get("skip_tls") == "on"
    started = time.monotonic()
    args = verbs.Pull(ref=ref, platform=platform, tls_verify=False if skip_tls else None)
    try:
        if not ref:
            raise InvalidInputError("give an image reference, e.g. docker.io/library/busybox")
        node = await placement.named_or_own(request.POST.get("node", ""))
        job = await engine_client.request(verbs.IMAGE_PULL, args, user=user, node=node)
    except EngineError as err:
        await audit(user, "image.pull", ref[:128], started, err.message, skip_tls=skip_tls)
        return error_response(err)
    await audit(user, "image.pull", ref[:128], started, job=job["job"], skip_tls=skip_tls)
    if not request.htmx:
        return htmx_redirect(request, reverse("ui-images"))
    return render(request, "images/pull_job.html", {"job": pullcards.decorate(job)})


# -- one image -----------------------------------------------------------------------------------
def _chain_rows(info: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for doc in info.get("ManifestChain") or []:
        if isinstance(doc, dict):
            rows.append(doc | {"size_text": pullcards.human(doc.get("size"))})
    return rows


def _requests(info: dict[str, Any]) -> list[str]:
    """The registry requests that fetched this image, for the learner."""
    names = [*info.get("RepoTags", []), *info.get("RepoDigests", [])]
    if not names or info.get("Source") not in ("registry", ""):
        return []
    name = names[0].split("@")[0]
    repo_ref = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    host, _, repo = repo_ref.partition("/")
    if host == "docker.io":
        host = "registry-1.docker.io"
    tag = name.rsplit(":", 1)[1] if repo_ref != name else ""
    out = []
    for i, doc in enumerate(info.get("ManifestChain") or []):
        kind, digest = doc.get("kind"), doc.get("digest", "")
        target = tag if i == 0 and tag else digest
        what = "manifests" if kind in ("index", "manifest") else "blobs"
        out.append(f"GET {host}/v2/{repo}/{what}/{target}")
    return out


@require_GET
async def image_detail(request: HttpRequest, image_id: str) -> HttpResponse:
    if not IMAGE_ID_RE.match(image_id):
        raise Http404("no such image")
    try:
        node = await placement.named_or_own(request.GET.get("node", ""))
        info = await engine_client.request(
            verbs.IMAGE_INSPECT, verbs.Image(image=image_id), user=await request.auser(),
            node=node,
        )  # fmt: skip
    except NotFoundError as err:
        raise Http404("no such image") from err
    except EngineError as err:  # its node is offline or silent
        return error_response(err)
    config = info.get("Config") or {}
    layers = info.get("LayerDetails") or []
    for layer in layers:
        layer["size_text"] = pullcards.human(layer.get("tar_size") or layer.get("size"))
        layer["compressed_text"] = pullcards.human(layer.get("compressed_size"))
    ctx = {
        "nav": "images",
        "image": info,
        "config": config,
        "env": config.get("Env") or [],
        "labels": sorted((config.get("Labels") or {}).items()),
        "ports": sorted(config.get("ExposedPorts") or {}),
        "history": info.get("History") or [],
        "chain": _chain_rows(info),
        "layers": layers,
        "requests": _requests(info),
        "size_text": pullcards.human(info.get("Size")),
        "pulled_text": _when(info.get("Pulled")),
        "node": node,
        "other_nodes": len(await placement.nodes_to_ask()) > 1,
    }
    return render(request, "images/detail.html", ctx)


@require_POST
async def image_remove(request: HtmxHttpRequest, image_id: str) -> HttpResponse:
    if not IMAGE_ID_RE.match(image_id):
        raise Http404("no such image")
    user = await request.auser()
    try:
        await engine_action(
            user,
            verbs.IMAGE_REMOVE,
            verbs.RemoveImage(image=image_id, force=True),
            target=image_id,
            done=lambda result: {"untagged": result.get("untagged", [])},
            node=await placement.named_or_own(request.POST.get("node", "")),
        )
    except EngineError as err:
        return error_response(err)
    return htmx_redirect(request, reverse("ui-images"))


# -- credentials (admins) ------------------------------------------------------------------------
async def _admin(request: HttpRequest) -> Any:
    user = await request.auser()
    if not user.is_superuser:
        raise PermissionDenied("registry credentials are for admins")
    return user


async def _credentials_page(request: HtmxHttpRequest, user: Any, **extra: Any) -> HttpResponse:
    try:
        logins = await engine_client.request(verbs.REGISTRY_LIST, verbs.NoArgs(), user=user)
    except EngineError as err:
        logins, extra["error"] = [], error_text(err)
    ctx = {"nav": "images", "logins": logins} | extra
    template = "images/credentials_panel.html" if request.htmx else ("images/credentials.html")
    return render(request, template, ctx)


@require_GET
async def credentials(request: HtmxHttpRequest) -> HttpResponse:
    return await _credentials_page(request, await _admin(request))


@require_POST
async def credentials_add(request: HtmxHttpRequest) -> HttpResponse:
    user = await _admin(request)
    registry = request.POST.get("registry", "").strip()
    username = request.POST.get("username", "").strip()
    password = request.POST.get("password", "")
    started = time.monotonic()
    args = verbs.Login(
        registry=registry,
        username=username,
        password=password,
        tls_verify=request.POST.get("skip_tls") != "on",
    )
    try:
        if not registry or not username or not password:
            raise InvalidInputError("registry, username and password are all needed")
        await engine_client.request(verbs.REGISTRY_LOGIN, args, user=user, timeout=LOGIN_TIMEOUT)
    except EngineError as err:
        await audit(user, "registry.login", registry[:128], started, err.message, username=username)
        return await _credentials_page(request, user, error=error_text(err), registry=registry)
    await audit(user, "registry.login", registry[:128], started, username=username)
    return await _credentials_page(request, user, saved=registry)


@require_POST
async def credentials_remove(request: HtmxHttpRequest) -> HttpResponse:
    user = await _admin(request)
    registry = request.POST.get("registry", "")
    if not REGISTRY_RE.match(registry):
        raise Http404("no such registry")
    try:
        await engine_action(
            user, verbs.REGISTRY_LOGOUT, verbs.Registry(registry=registry), target=registry
        )
    except EngineError as err:
        return error_response(err)
    return await _credentials_page(request, user)


urlpatterns: list[URLPattern | URLResolver] = [
    path("images/", image_list, name="ui-images"),
    path("images/table", image_table, name="ui-images-table"),
    path("images/pulls", pull_jobs, name="ui-images-pulls"),
    path("images/pull", pull, name="ui-images-pull"),
    path("images/credentials/", credentials, name="ui-credentials"),
    path("images/credentials/add", credentials_add, name="ui-credentials-add"),
    path("images/credentials/remove", credentials_remove, name="ui-credentials-remove"),
    path("images/<str:image_id>/", image_detail, name="ui-image-detail"),
    path("images/<str:image_id>/remove", image_remove, name="ui-image-remove"),
]
