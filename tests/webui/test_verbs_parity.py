"""The web and the CLI reach the engine through the same typed verbs: one scenario (a
container's whole life, its files, its spec, the lab, images and registries) is played twice,
once through the web's client (the channel layer to a real worker) and once through the CLI's
way in (engine.api.base.invoke, in-process), and every reply is compared."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from engine.api.base import Context, invoke
from engine.core import Engine
from engine.errors import EngineError
from engine.protocol import verbs
from engine.protocol.check import Verb
from engine.runtime.lifecycle import Lifecycle
from tests.engine.runtools import RUNTIME_REASON, can_run_containers
from tests.imagetools import busybox_image
from tests.skips import requires
from webui import engine_client

pytestmark = [requires(can_run_containers(), RUNTIME_REASON), pytest.mark.privileged]

Ask = Callable[[Verb[Any, Any], Any], Awaitable[Any]]
IMAGE = "localhost/busybox:latest"

# Verbs the scenario leaves out, and why: each needs a party the scenario does not have.
NOT_PLAYED = {
    "term.attach": "a websocket viewer to stream to",
    "exec.create": "a terminal to attach to (tests/webui and tests/browser cover it)",
    "fs.download": "a reader of the events it streams to reply_to",
    "fs.upload_begin": "a browser's multipart upload (test_files_views)",
    "fs.upload_chunk": "an upload begun",
    "fs.upload_commit": "an upload begun",
    "fs.upload_abort": "an upload begun",
    "image.pull": "a registry (test_pull_cli, test_images_views)",
    "image.load": "an archive in <root>/imports (test_load)",
    "image.remove": "the scenario's image, which its second play needs",
    "sandbox.list": "a learner (the plays ask as the engine's own: test_sandbox, test_class)",
    "sandbox.touch": "a learner (the plays ask as the engine's own: test_sandbox, test_class)",
    "registry.login": "a registry (test_registry)",
}


def shape(value: Any) -> Any:
    """What a reply looks like without its values: keys, nesting and value types."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


async def play(ask: Ask, name: str, volume: Path) -> list[tuple[str, Any]]:
    """The scenario; answers (verb, reply shape) in order. ``name`` is the container's,
    ``volume`` the host directory it gets as /mnt."""
    out: list[tuple[str, Any]] = []

    async def step(verb: Verb[Any, Any], args: Any) -> Any:
        try:
            reply = await ask(verb, args)
        except EngineError as err:
            out.append((verb.name, ("error", err.code)))
            return None
        out.append((verb.name, shape(reply)))
        return reply

    for verb in (verbs.NODE_PING, verbs.NODE_INFO, verbs.IMAGE_LIST, verbs.SPEC_POLICY):
        await step(verb, verbs.NoArgs())
    await step(verbs.SPEC_META, verbs.NoArgs())
    await step(verbs.REGISTRY_LIST, verbs.NoArgs())
    await step(verbs.IMAGE_PULLS, verbs.Pulls())
    await step(verbs.IMAGE_INSPECT, verbs.Image(image=IMAGE))
    await step(verbs.REGISTRY_LOGOUT, verbs.Registry(registry="nowhere.example"))
    await step(verbs.LAB_CLEAR_SANDBOX, verbs.Sandbox(name="nobody"))
    await step(verbs.SANDBOX_USAGE, verbs.SandboxUsage(names=["nobody"]))
    network = verbs.CreateNetwork(name="parity", subnet="10.91.251.0/24", bridge="gt251")
    await step(verbs.NETWORK_CREATE, network)  # a file only: no bridge until a start
    await step(verbs.NETWORK_LIST, verbs.NoArgs())
    await step(verbs.NETWORK_INSPECT, verbs.NetworkName(name="parity"))
    await step(verbs.NETWORK_REMOVE, verbs.NetworkName(name="parity"))
    command = ["sh", "-c", "echo ready; exec sleep 60"]
    create = verbs.Create(image=IMAGE, name=name, command=command, volumes=[f"{volume}:/mnt"])
    row = await step(verbs.CONTAINER_CREATE, create)
    ref = row["Id"]
    one = verbs.Id(id=ref)
    await step(verbs.CONTAINER_LIST, verbs.ListContainers(ids=[ref]))
    await step(verbs.CONTAINER_INSPECT, one)
    await step(verbs.CONTAINER_NETWORK, one)
    await _files(step, ref)
    await _spec(step, ref)
    await step(verbs.LAB_CHECK, verbs.LabCheck(image=IMAGE, container=ref))
    await step(verbs.LAB_STEPS, one)
    await step(verbs.LAB_VOLUME_TOUCH, verbs.VolumeTouch(id=ref, destination="/mnt", name="on"))
    await _run(step, ref)
    return out


async def _files(step: Callable[[Verb[Any, Any], Any], Awaitable[Any]], ref: str) -> None:
    one = verbs.Id(id=ref)
    await step(verbs.CONTAINER_MOUNT, one)
    await step(verbs.FS_TOUCH, verbs.At(id=ref, path="/test"))
    await step(verbs.FS_LIST, verbs.FsList(id=ref, path="/"))
    await step(verbs.FS_STAT, verbs.FsStat(id=ref, path="/test"))
    await step(verbs.FS_WRITE, verbs.FsWrite(id=ref, path="/note", content="hi\n", create=True))
    await step(verbs.FS_READ, verbs.FsRead(id=ref, path="/note"))
    await step(verbs.FS_MKDIR, verbs.FsMkdir(id=ref, path="/d"))
    await step(verbs.FS_RENAME, verbs.FsRename(id=ref, path="/d", to="/e"))
    await step(verbs.FS_CHMOD, verbs.FsChmod(id=ref, path="/e", mode=0o700))
    await step(verbs.FS_DELETE, verbs.FsDelete(id=ref, path="/e"))
    await step(verbs.FS_READ, verbs.FsRead(id=ref, path="/no/such/file"))
    await step(verbs.CONTAINER_DIFF, one)
    await step(verbs.CONTAINER_STORAGE, one)
    await step(verbs.CONTAINER_UNMOUNT, verbs.Force(id=ref))


async def _spec(step: Callable[[Verb[Any, Any], Any], Awaitable[Any]], ref: str) -> None:
    one = verbs.Id(id=ref)
    await step(verbs.SPEC_GENERATE, one)
    text = (await step(verbs.SPEC_GET, one))["text"]
    edited = text.replace('"terminal": false', '"terminal": false ')
    await step(verbs.SPEC_VALIDATE, verbs.SpecText(id=ref, text="{"))
    await step(verbs.SPEC_PUT, verbs.SpecText(id=ref, text=edited))
    await step(verbs.SPEC_DIFF, one)
    await step(verbs.SPEC_RESET, one)


async def _run(step: Callable[[Verb[Any, Any], Any], Awaitable[Any]], ref: str) -> None:
    one = verbs.Id(id=ref)
    await step(verbs.CONTAINER_START, one)
    await step(verbs.CONTAINER_STATE, one)
    await step(verbs.CONTAINER_TOP, one)
    await step(verbs.EXEC_RUN, verbs.ExecRun(id=ref, command=["cat", "/note"]))
    await step(verbs.EXEC_LIST, verbs.Container(container=ref))
    await step(verbs.EXEC_TRANSCRIPTS, verbs.Container(container=ref))
    await step(verbs.CONTAINER_LOGS, verbs.Logs(id=ref))
    await step(verbs.CONTAINER_PAUSE, one)
    await step(verbs.CONTAINER_RESUME, one)
    await step(verbs.CONTAINER_RESTART, verbs.Stop(id=ref, timeout=0))
    await step(verbs.CONTAINER_KILL, verbs.Kill(id=ref, signal="TERM"))
    await step(verbs.CONTAINER_STOP, verbs.Stop(id=ref, timeout=1))
    await step(verbs.CONTAINER_START, one)  # again, after it stopped
    await step(verbs.CONTAINER_REMOVE, verbs.Force(id=ref, force=True))
    await step(verbs.CONTAINER_INSPECT, one)  # gone: not_found both ways


@pytest.fixture
def volumes(engine: Engine) -> Path:
    """Host directories for the two plays' /mnt, inside the engine's volume allowlist."""
    top = engine.config.volume_allowlist[0]
    for name in ("web", "cli"):
        (top / name).mkdir(parents=True)
    return top


async def test_the_web_and_the_cli_get_the_same_answers(
    engine_worker: Engine, volumes: Path
) -> None:
    busybox_image(engine_worker)

    async def web(verb: Verb[Any, Any], args: Any) -> Any:
        return await engine_client.request(verb, args, timeout=60)

    async def cli(verb: Verb[Any, Any], args: Any) -> Any:
        return await sync_to_async(invoke, thread_sensitive=False)(
            Context(engine_worker), verb, args
        )

    try:
        by_web = await play(web, "parity-web", volumes / "web")
        by_cli = await play(cli, "parity-cli", volumes / "cli")
    finally:
        containers = engine_worker.get(Lifecycle).containers
        for record in containers.list():
            await sync_to_async(containers.remove)(record.id, force=True)
    assert [v for v, _ in by_web] == [v for v, _ in by_cli]
    for (verb, web_reply), (_, cli_reply) in zip(by_web, by_cli, strict=True):
        assert web_reply == cli_reply, verb
    played = {v for v, _ in by_web}
    assert played | set(NOT_PLAYED) == set(verbs.VERBS)
    assert not played & set(NOT_PLAYED)
    errors = [(v, r) for v, r in by_web if isinstance(r, tuple)]
    assert errors == [
        ("fs.read", ("error", "not_found")),
        ("container.inspect", ("error", "not_found")),
    ]
