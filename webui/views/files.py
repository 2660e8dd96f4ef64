"""The Files tab: an explorer over a container's merged root (engine verbs fs.*).

Paths in URLs are the container's own paths; the engine resolves them inside the container's
root whatever they hold (``..``, ``%2e%2e%2f`` once decoded, symlinks). Names that come out of
the container are hostile: templates show them through the ``visible`` filter (control and
bidi characters as escapes) inside ``hx-disable`` regions, and downloads are attachments with
nosniff, a sandbox CSP and an RFC 5987 file name. Every view checks ownership (404 for others);
actions are POST (CSRF) and audited.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote, unquote, urlencode

from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.urls import URLPattern, URLResolver, path, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event

from engine.errors import EngineError, InvalidInputError, InvalidStateError
from engine.protocol import verbs
from engine.protocol.check import Verb
from engine.protocol.verbs import MAX_WRITE
from webui import engine_client
from webui.access import aget_container_for_user
from webui.answers import error_text, status_of
from webui.bulklane import new_lane, read_lane
from webui.models import Ownership
from webui.views.common import HtmxHttpRequest, audit, engine_action, error_response
from webui.views.containers import container_header

PAGE = 500
UPLOAD_CHUNK = 384 * 1024  # bytes per engine message (each stays under 512 KiB)
MAX_PATH = 4096
_BAD_NAME = re.compile(r"[/\x00]")
_ASCII_SAFE = re.compile(r"[^A-Za-z0-9._ +()\[\]-]")


def _path(value: str | None) -> str:
    text = value or "/"
    if len(text) > MAX_PATH * 4:
        raise InvalidInputError("path: too long")
    return text


def _posted(value: str | None) -> str:
    """A path from a form field: pages send paths percent-encoded, so that names holding
    CR, LF or other control characters survive the browser's form encoding unchanged."""
    return _path(unquote(value or "/"))


def _name(value: str | None) -> str:
    name = (value or "").strip()
    if not name or name in (".", "..") or _BAD_NAME.search(name) or len(name) > 255:
        raise InvalidInputError(f"name {name[:60]!r}: one file name, without '/'")
    return name


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


async def _owner(request: HttpRequest, container_id: str) -> tuple[Any, Any]:
    user = await request.auser()
    return user, await aget_container_for_user(user, container_id)


def files_url(container_id: str, dir_path: str) -> str:
    return reverse("ui-files", args=[container_id]) + "?" + urlencode({"path": dir_path})


def changed(message: str = "") -> HttpResponse:
    """An action's answer: nothing to swap; listeners reload the listing."""
    return trigger_client_event(
        HttpResponse(status=204), "gantry:files-changed", {"message": message}
    )


# -- listing -----------------------------------------------------------------------------------


async def _list(user: Any, own: Any, dir_path: str, offset: int) -> dict[str, Any]:
    args = verbs.FsList(id=own.container_id, path=dir_path, offset=offset, limit=PAGE)
    listing = await engine_client.request(verbs.FS_LIST, args, user=user, node=own.node)
    # the engine may cut a page short (long names): it says where the next one starts
    directory = listing.get("path") or "/"
    listing["dir"] = directory
    decorate(listing["entries"], own.container_id, directory)
    if listing.get("next_offset"):
        listing["more_url"] = (
            reverse("ui-files-rows", args=[own.container_id])
            + "?"
            + urlencode({"path": directory, "offset": listing["next_offset"]})
        )
    return listing


def decorate(entries: list[dict[str, Any]], container_id: str, directory: str) -> None:
    """Links and encoded paths for each row, built once here (a page has hundreds of rows;
    the template only prints them)."""
    files_base = reverse("ui-files", args=[container_id]) + "?path="
    view_base = reverse("ui-file-view", args=[container_id]) + "?path="
    for e in entries:
        penc = quote(_join(directory, e["name"]), safe="/")
        e["penc"] = penc
        e.setdefault("target", None)
        if e.get("raw") or e["type"] not in ("dir", "file", "link"):
            e["href"] = ""
        elif e["type"] == "file":
            e["href"] = view_base + penc
        else:
            e["href"] = files_base + penc


async def _open_file(user: Any, own: Any, unsafe_path: str | None, err: EngineError) -> str:
    """A path that is no directory (a symlink to a file, /etc/os-release → ../usr/lib/...):
    the file view's URL when the engine, resolving it inside the container, finds a regular
    file there; "" otherwise (the listing's error stands)."""
    if err.code == "not_found" or not unsafe_path:
        return ""
    try:
        entry = await engine_client.request(
            verbs.FS_STAT,
            verbs.FsStat(id=own.container_id, path=_path(unsafe_path), follow=True),
            user=user,
            node=own.node,
        )
    except EngineError:
        return ""
    if entry.get("type") != "file":
        return ""
    return reverse("ui-file-view", args=[own.container_id]) + "?" + urlencode({"path": unsafe_path})


@require_GET
async def files_tab(request: HttpRequest, container_id: str) -> HttpResponse:
    user, own, info = await container_header(request, container_id)
    ctx: dict[str, Any] = {
        "nav": "containers",
        "tab": "files",
        "c": info,
        "container_id": container_id,
        "requested": request.GET.get("path", "/"),
    }
    try:
        ctx["listing"] = await _list(user, own, _path(request.GET.get("path")), 0)
    except EngineError as err:
        opened = await _open_file(user, own, request.GET.get("path"), err)
        if opened:
            return HttpResponseRedirect(opened)
        ctx["error"] = error_text(err)
        return render(request, "containers/files.html", ctx, status=status_of(err))
    return render(request, "containers/files.html", ctx)


@require_GET
@never_cache
async def files_rows(request: HttpRequest, container_id: str) -> HttpResponse:
    """The listing's rows from ``offset`` (the "load more" row, and refreshes)."""
    user, own = await _owner(request, container_id)
    try:
        offset = max(0, int(request.GET.get("offset", "0")))
        listing = await _list(user, own, _path(request.GET.get("path")), offset)
    except (ValueError, EngineError) as err:
        return error_response(
            err if isinstance(err, EngineError) else InvalidInputError("bad offset")
        )
    template = "containers/files_rows.html" if offset else "containers/files_table.html"
    response = render(request, template, {"listing": listing, "container_id": container_id})
    return response


# -- viewing and editing --------------------------------------------------------------------------
@require_GET
async def file_view(request: HttpRequest, container_id: str) -> HttpResponse:
    user, own, info = await container_header(request, container_id)
    file_path = _path(request.GET.get("path"))
    ctx: dict[str, Any] = {
        "nav": "containers",
        "tab": "files",
        "c": info,
        "container_id": container_id,
        "path": file_path,
    }
    try:
        ctx["f"] = await engine_client.request(
            verbs.FS_READ, verbs.FsRead(id=container_id, path=file_path), user=user, node=own.node
        )
        ctx["path"] = ctx["f"]["path"]
    except EngineError as err:
        ctx["error"] = error_text(err)
        return render(request, "containers/file_view.html", ctx, status=status_of(err))
    return render(request, "containers/file_view.html", ctx)


@require_POST
async def file_save(request: HtmxHttpRequest, container_id: str) -> HttpResponse:
    """Save the editor's text. The version token says which content the user edited; if the
    file changed since, the engine refuses and the user's text is kept in the editor."""
    user, own = await _owner(request, container_id)
    file_path = _posted(request.POST.get("path"))
    content = request.POST.get("content", "").replace("\r\n", "\n")
    if len(content.encode("utf-8")) > MAX_WRITE:
        return HttpResponse(
            f"too large to save from the editor (over {MAX_WRITE} bytes): upload it instead",
            status=413,
            content_type="text/plain; charset=utf-8",
        )
    token = request.POST.get("token") or None
    ctx: dict[str, Any] = {"container_id": container_id, "path": file_path}
    try:
        saved = await engine_action(
            user,
            verbs.FS_WRITE,
            verbs.FsWrite(id=container_id, path=file_path, content=content, token=token),
            target=container_id,
            node=own.node,
            detail={"path": file_path},
            done=lambda reply: {"size": reply["size"]},
        )
    except EngineError as err:
        ctx.update(
            f={"text": content, "token": token or "", "editable": True},
            error=error_text(err),
            # "changed" / "deleted" (since it was opened, or while saving); "" for others
            conflict=(err.current or "other") if isinstance(err, InvalidStateError) else "",
        )
        status = 200 if request.htmx else (409 if ctx["conflict"] else 400)
        return render(request, "containers/file_editor.html", ctx, status=status)
    ctx.update(
        f={"text": content, "token": saved["token"], "editable": True, "size": saved["size"]},
        saved=True,
    )
    return render(request, "containers/file_editor.html", ctx)


# -- small actions ------------------------------------------------------------------------------
async def _act(
    request: HtmxHttpRequest, container_id: str, verb: Verb[Any, Any], build: Callable[[Any], Any]
) -> HttpResponse:
    """Run one fs verb whose arguments ``build`` makes from the POST data and the container
    id; 204 and the gantry:files-changed event on success."""
    user, own = await _owner(request, container_id)
    started = time.monotonic()
    try:
        args = build(request.POST)
        await engine_client.request(
            verb, verb.args(id=container_id, **args), user=user, node=own.node
        )
    except EngineError as err:
        await audit(user, verb.name, container_id, started, err.message)
        return error_response(err)
    await audit(user, verb.name, container_id, started, **args)
    if not request.htmx:
        back = _posted(request.POST.get("dir")) if request.POST.get("dir") else None
        back = back or (args["path"].rsplit("/", 1)[0] or "/")
        return HttpResponseRedirect(files_url(container_id, back))
    return changed()


def _new_entry(post: Any) -> dict[str, Any]:
    return {"path": _join(_posted(post.get("dir")), _name(post.get("name")))}


def _rename_args(post: Any) -> dict[str, Any]:
    src = _posted(post.get("path"))
    return {
        "path": src,
        "to": _join(src.rstrip("/").rsplit("/", 1)[0] or "/", _name(post.get("name"))),
    }


def _delete_args(post: Any) -> dict[str, Any]:
    return {"path": _posted(post.get("path")), "recursive": post.get("recursive") == "1"}


def _chmod_args(post: Any) -> dict[str, Any]:
    mode = (post.get("mode") or "").strip()
    if not re.fullmatch(r"[0-7]{3,4}", mode):
        raise InvalidInputError(f"mode {mode[:10]!r}: octal digits like 0755")
    return {"path": _posted(post.get("path")), "mode": int(mode, 8)}


def _small_action(verb: Verb[Any, Any], build: Callable[[Any], dict[str, Any]]) -> Any:
    """The view of one small fs action (touch, mkdir, rename, delete, chmod)."""

    @require_POST
    async def view(request: HtmxHttpRequest, container_id: str) -> HttpResponse:
        return await _act(request, container_id, verb, build)

    view.__name__ = "file_" + verb.name.removeprefix("fs.")
    return view


file_touch = _small_action(verbs.FS_TOUCH, _new_entry)
file_mkdir = _small_action(verbs.FS_MKDIR, _new_entry)
file_rename = _small_action(verbs.FS_RENAME, _rename_args)
file_delete = _small_action(verbs.FS_DELETE, _delete_args)
file_chmod = _small_action(verbs.FS_CHMOD, _chmod_args)


# -- transfers ----------------------------------------------------------------------------------
async def _upload_one(
    user: Any, own: Ownership, directory: str, upload: UploadedFile
) -> dict[str, Any]:
    """One file of an upload: streamed to the engine in chunks, renamed into place only when
    complete, aborted (the old file kept) on any failure. Answers the file's result."""
    started = time.monotonic()
    target = ""
    try:
        target = _join(directory, _name(upload.name))
        begin = verbs.UploadBegin(id=own.container_id, path=target, size=upload.size or 0)
        begun = await engine_client.request(verbs.FS_UPLOAD_BEGIN, begin, user=user, node=own.node)
        upload_id = verbs.UploadId(upload=begun["upload"])
        try:
            offset = 0
            upload.seek(0)
            # (UploadedFile.chunks() ignores the size for in-memory files: read ourselves)
            while chunk := upload.read(UPLOAD_CHUNK):
                part = verbs.UploadChunk(upload=upload_id.upload, offset=offset, data=chunk)
                await engine_client.request(verbs.FS_UPLOAD_CHUNK, part, user=user, node=own.node)
                offset += len(chunk)
            done = await engine_client.request(
                verbs.FS_UPLOAD_COMMIT, upload_id, user=user, node=own.node
            )
        except BaseException:
            with contextlib.suppress(EngineError):
                await engine_client.request(
                    verbs.FS_UPLOAD_ABORT, upload_id, user=user, node=own.node
                )
            raise
    except EngineError as err:
        await audit(user, "fs.upload", own.container_id, started, err.message, path=target)
        return {"name": upload.name, "ok": False, "error": error_text(err)}
    await audit(user, "fs.upload", own.container_id, started, path=done["path"], size=done["size"])
    return {"name": upload.name, "ok": True, "path": done["path"], "size": done["size"]}


@require_POST
async def file_upload(request: HtmxHttpRequest, container_id: str) -> HttpResponse:
    """Files from a multipart form (``files``, several) into directory ``dir``. htmx gets
    the upload's result to show (and the listing reloads); a plain form a redirect."""
    user, own = await _owner(request, container_id)
    directory = _posted(request.POST.get("dir"))
    results = [await _upload_one(user, own, directory, f) for f in request.FILES.getlist("files")]
    failed = [r for r in results if not r["ok"]]
    if request.htmx:
        ok = len(results) - len(failed)
        response = render(request, "containers/upload_result.html", {"ok": ok, "failed": failed})
        return trigger_client_event(response, "gantry:files-changed")
    if failed:
        return HttpResponse(
            "; ".join(f"{r['name']}: {r['error']}" for r in failed),
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    return HttpResponseRedirect(files_url(container_id, directory))


def content_disposition(name: str) -> str:
    """attachment; filename="ascii"; filename*=UTF-8''percent-encoded (RFC 6266/5987): no
    CR, LF, quote or backslash can reach the header."""
    fallback = _ASCII_SAFE.sub("_", name)[:150].strip(" .") or "download"
    encoded = quote(name[:255], safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


@require_GET
@never_cache
async def file_download(request: HttpRequest, container_id: str) -> HttpResponseBase:
    """A file (or a folder as tar), streamed from the engine as it reads it: over the bulk
    lane when the channel layer has one (webui/bulklane.py), else as channel messages."""
    user, own = await _owner(request, container_id)
    file_path = _path(request.GET.get("path"))
    lane = new_lane()
    args = verbs.FsDownload(id=container_id, path=file_path, lane=lane or None)
    events = engine_client.stream(verbs.FS_DOWNLOAD, args, user=user, node=own.node)
    try:
        begin = await anext(events)
    except StopAsyncIteration:
        return HttpResponse("download: the engine sent nothing", status=502)
    except EngineError as err:
        return error_response(err)
    used_lane = bool(lane) and begin.get("lane") == lane

    async def body() -> AsyncIterator[bytes]:
        try:
            if used_lane and lane:
                async for chunk in read_lane(lane):
                    yield chunk
            async for event in events:  # the chunks (without the lane), then the reply
                if event.get("type") == "fs.chunk" and isinstance(event.get("data"), bytes):
                    yield event["data"]
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    tar = begin.get("kind") == "tar"
    response = StreamingHttpResponse(
        body(), content_type="application/x-tar" if tar else "application/octet-stream"
    )
    if not tar and isinstance(begin.get("size"), int):
        response["Content-Length"] = str(begin["size"])
    response["Content-Disposition"] = content_disposition(str(begin.get("name") or "download"))
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox"
    return response


urlpatterns: list[URLPattern | URLResolver] = [
    path("containers/<str:container_id>/files/", files_tab, name="ui-files"),
    path("containers/<str:container_id>/files/rows", files_rows, name="ui-files-rows"),
    path("containers/<str:container_id>/files/view", file_view, name="ui-file-view"),
    path("containers/<str:container_id>/files/save", file_save, name="ui-file-save"),
    path("containers/<str:container_id>/files/touch", file_touch, name="ui-file-touch"),
    path("containers/<str:container_id>/files/mkdir", file_mkdir, name="ui-file-mkdir"),
    path("containers/<str:container_id>/files/rename", file_rename, name="ui-file-rename"),
    path("containers/<str:container_id>/files/delete", file_delete, name="ui-file-delete"),
    path("containers/<str:container_id>/files/chmod", file_chmod, name="ui-file-chmod"),
    path("containers/<str:container_id>/files/upload", file_upload, name="ui-file-upload"),
    path("containers/<str:container_id>/files/download", file_download, name="ui-file-download"),
]
