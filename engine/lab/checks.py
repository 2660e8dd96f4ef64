"""The lab Gantry grew from, as facts the engine reads from real state, and the commands each
step of a container amounts to.

The lab: pull gantry/on-off; `podman create -v /mnt:/mnt`; `podman mount`; touch `test` in the
merged root; `podman start` (the image runs top only while /mnt/on exists, so the first start
exits 0 at once, having written config.json); touch /mnt/on; start again (Up, running top);
`podman exec -it ... bash` and `ls` shows `test`; `podman kill`; `podman rm`.

``check()`` says which of its milestones hold *now* (the web remembers which were reached, so a
milestone stays green once it was true). ``steps()`` describes one container as the seven
steps of the lab, each with what the engine really did, at podman's level and below it, with
the real ids and paths filled in.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core import Engine
from engine.errors import EngineError, NotFoundError
from engine.hostfs import atomic
from engine.images.store import ImageRecord, Store
from engine.network import netns
from engine.protocol import CONTAINER_ID_RE, LAB_CHECKS
from engine.runtime import history
from engine.storage import mounts
from engine.storage.containers import Containers
from engine.storage.records import RUNNING, ContainerPaths, ContainerRecord

log = logging.getLogger("gantry.engine.lab")
_WORD_TEST = re.compile(r"(?:^|[\s/])test(?:\s|$)", re.M)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _image(engine: Engine, unsafe_ref: str) -> ImageRecord | None:
    from engine.images.service import Images  # resolves short names as podman does

    try:
        return engine.get(Images).find(unsafe_ref)
    except EngineError:
        return None


def _container(engine: Engine, container_id: str) -> ContainerRecord | None:
    if not container_id:
        return None
    try:
        from engine.runtime.lifecycle import Lifecycle

        return engine.get(Lifecycle).get_synced(container_id)
    except NotFoundError:
        return None


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _volume_source(record: ContainerRecord, destination: str) -> Path | None:
    for volume in record.options.volumes:
        if volume.destination.rstrip("/") == destination:
            return Path(volume.source)
    return None


def _exec_saw(engine: Engine, record: ContainerRecord, pattern: re.Pattern[str]) -> bool:
    from engine.terminal.consoles import Consoles

    consoles = engine.get(Consoles)
    seen = [str(t.get("output", "")) for t in consoles.transcripts(record.id)]
    seen += [s["output"].decode(errors="replace") for s in consoles.live_shells(record.id)]
    return any(pattern.search(_ANSI.sub("", text)) for text in seen)


def check(engine: Engine, image_ref: str, container_id: str = "") -> dict[str, Any]:
    """The lab's milestones as they are now: {"checks": {id: bool}, "facts": {...}}."""
    containers = engine.get(Containers)
    record = _container(engine, container_id)
    facts: dict[str, Any] = {"image": image_ref, "container": container_id}
    result = dict.fromkeys((c for c, _ in LAB_CHECKS), False)
    image = _image(engine, image_ref)
    result["pulled"] = image is not None
    facts["image_id"] = image.id.removeprefix("sha256:") if image else ""
    if record is not None:
        paths = containers.paths(record.id)
        facts |= {"state": record.state, "name": record.name, "exit_code": record.exit_code}
        result["created"] = True  # it exists: it was created (whatever it did since)
        result["test_file"] = (paths.upper / "test").is_file()
        result["config"] = paths.config.is_file()
        # what happened, not only what is: a start that exited 0 (no /mnt/on then) stays
        # done whatever came after (top, a kill)
        codes = history.exit_codes(record)
        result["first_exit"] = 0 in codes or (record.state == "exited" and record.exit_code == 0)
        source = _volume_source(record, "/mnt")
        facts["mnt_source"] = str(source) if source else ""
        result["mnt_on"] = source is not None and (source / "on").exists()
        if record.state == RUNNING and record.pid:
            facts["process"] = _process_name(record.pid)
        result["top_running"] = facts.get("process") == "top" or (
            "top" in history.processes_seen(record)
        )
        result["exec_saw_test"] = _exec_saw(engine, record, _WORD_TEST)
    elif container_id:
        result |= remembered(engine, container_id)  # what it had done before it went
        still_mounted = any(container_id in m.mount_point for m in mounts.mountinfo())
        result["gone"] = not still_mounted
    return {"checks": result, "facts": facts}


def _memory_file(engine: Engine, container_id: str) -> Path | None:
    if not CONTAINER_ID_RE.match(container_id):
        return None
    return Path(engine.config.root) / "lab" / f"{container_id}.json"


def remember(engine: Engine, record: ContainerRecord) -> None:
    """Before a container is removed: keep what it had done of the lab, so the lab reads
    it afterwards, whoever removed it and whether a page was open then. Never fails."""
    path = _memory_file(engine, record.id)
    if path is None:
        return
    try:
        checks = check(engine, record.image_name, record.id)["checks"]
        path.parent.mkdir(mode=0o700, exist_ok=True)
        atomic.write_json(path, {k: v for k, v in checks.items() if v is True})
    except (EngineError, OSError) as err:
        log.warning("lab: what %s did is not kept: %s", record.name, err)


def remembered(engine: Engine, container_id: str) -> dict[str, bool]:
    path = _memory_file(engine, container_id)
    try:
        data = json.loads(path.read_text()) if path else {}
    except (OSError, ValueError):
        return {}
    known = {c for c, _ in LAB_CHECKS}
    return (
        {k: True for k, v in data.items() if k in known and v is True}
        if isinstance(data, dict)
        else {}
    )


# -- one container as the lab's steps ---------------------------------------------------------
def _podman_create(record: ContainerRecord) -> str:
    o = record.options
    parts = ["podman", "create", "--name", record.name]
    for v in o.volumes:
        parts += ["-v", f"{v.source}:{v.destination}{':ro' if v.read_only else ''}"]
    for e in o.env:
        parts += ["-e", e]
    if o.workdir:
        parts += ["-w", o.workdir]
    if o.user:
        parts += ["-u", o.user]
    if o.entrypoint is not None:
        parts += ["--entrypoint", " ".join(o.entrypoint)]
    parts += ["-t"] if o.tty else []
    parts += ["-i"] if o.interactive else []
    return shlex.join([*parts, record.image_name, *o.command])


def _registry_requests(image: ImageRecord | None, ref: str) -> list[str]:
    if image is None:
        return [f"podman pull {ref}"]
    try:
        from engine.registry.refs import parse

        parsed = parse(image.names[0] if image.names else ref)
        base = f"https://{parsed.api_host}/v2/{parsed.path}"
        target = parsed.tag or parsed.digest
    except (EngineError, IndexError):
        base, target = f"https://<registry>/v2/{ref}", "latest"
    out = [f"GET {base}/manifests/{target}    # Accept: OCI index, OCI/Docker manifests"]
    for doc in image.manifest_chain:
        kind, digest = doc.get("kind"), doc.get("digest", "")
        if kind in ("manifest", "index") and digest and f"manifests/{digest}" not in out[0]:
            out.append(f"GET {base}/manifests/{digest}    # {kind}, {doc.get('mediaType', '')}")
        elif kind in ("config", "layer"):
            out.append(f"GET {base}/blobs/{digest}    # {kind}, {doc.get('size', '?')} bytes")
    return out


@dataclass(frozen=True)
class _Facts:
    """What the steps of one container say, read once."""

    record: ContainerRecord
    paths: ContainerPaths
    image: ImageRecord | None
    layer_dirs: list[str]
    overlay_command: str
    mounted: bool
    runc_binary: str
    runc_root: str  # "runc --root DIR"
    exit_dir: str
    shells: int


def steps(engine: Engine, unsafe_ref: str) -> dict[str, Any]:
    """The eight steps of the lab for one container, with done/next and the commands."""
    from engine.runtime.lifecycle import Lifecycle
    from engine.runtime.runc import Runc
    from engine.terminal.consoles import Consoles

    record = engine.get(Lifecycle).get_synced(unsafe_ref)
    containers, store, runc = engine.get(Containers), engine.get(Store), engine.get(Runc)
    paths = containers.paths(record.id)
    facts = _Facts(
        record=record,
        paths=paths,
        image=_image(engine, record.image_id) or _image(engine, record.image_name),
        layer_dirs=[str(store.layer_diff(c)) for c in record.layers],
        overlay_command=containers.overlay(record).command_line(),
        mounted=mounts.is_mounted(paths.merged),
        runc_binary=str(runc.binary),
        runc_root=f"runc --root {runc.root}",
        exit_dir=f"{runc.root.parent}/exits",
        shells=len(engine.get(Consoles).transcripts(record.id)),
    )
    return {
        "id": record.id,
        "name": record.name,
        "state": record.state,
        "steps": _storage_steps(facts) + [_network_step(facts)] + _runtime_steps(facts),
    }


def _step(key: str, title: str, done: bool, podman: list[str], low: list[str]) -> dict[str, Any]:
    return {"key": key, "title": title, "done": done, "podman": podman, "low": low}


def _storage_steps(f: _Facts) -> list[dict[str, Any]]:
    """Pull, create, mount and browse, spec: podman's commands and what they do underneath."""
    r, p, name = f.record, f.paths, f.record.name
    unpack = [
        f"gzip -dc <blob> | tar -x -C {d}    # whiteouts become 0/0 devices" for d in f.layer_dirs
    ]
    return [
        _step(
            "pull", "Pull", f.image is not None, [f"podman pull {r.image_name}"],
            [*_registry_requests(f.image, r.image_name), *unpack],
        ),
        _step(
            "create", "Create", True, [_podman_create(r)],
            [f"mkdir -p {p.upper} {p.work} {p.merged} {p.bundle}",
             f"cat {p.record}    # the container's record"],
        ),
        _step(
            "mount", "Mount & browse",
            f.mounted or r.mount_count > 0 or _has_changes(p.upper),
            [f"podman mount {name}", f"ls $(podman mount {name})",
             f"touch $(podman mount {name})/test"],
            [f.overlay_command, f"ls {p.merged}", f"touch {p.merged}/test",
             f"ls {p.upper}    # the change lands in the upper dir"],
        ),
        _step(
            "spec", "Spec", p.config.is_file(), [f"podman init {name}"],
            [f"cat {p.config}", "runc spec    # the runtime-spec template it starts from"],
        ),
    ]  # fmt: skip


def _network_step(f: _Facts) -> dict[str, Any]:
    """The network: made by the engine at each start, before runc create joins it."""
    r, name = f.record, f.record.name
    mode = r.options.network
    flags = "".join(f" -p {p.host_ip}:{p.host_port}:{p.container_port}" for p in r.options.ports)
    if mode in ("none", "host"):
        what = "a new one, loopback only" if mode == "none" else "none (the host's)"
        low = [f"config.json linux.namespaces: network: {what}"]
    else:
        ns = netns.name_of(r.id)
        low = [
            f"ip netns add {ns}",
            f"netavark --config <root>/networks/netavark setup /run/netns/{ns} < network.json",
            f"ip -n {ns} addr    # eth0 on the bridge, its address; aardvark-dns answers names",
            "iptables -t nat -S | grep NETAVARK    # the published ports' DNAT rules",
        ]
    return _step(
        "network", "Network", r.started_at is not None,
        [f"podman create --network {mode}{flags} ...", f"podman port {name}",
         f"podman inspect --format '{{{{.NetworkSettings.IPAddress}}}}' {name}"],
        low,
    )  # fmt: skip


def _runtime_steps(f: _Facts) -> list[dict[str, Any]]:
    """Start, terminal, stop and remove: podman's commands, then conmon's and runc's."""
    p, cid, name, runc = f.paths, f.record.id, f.record.name, f.runc_root
    return [
        _step(
            "start", "Start", f.record.started_at is not None, [f"podman start {name}"],
            [f"conmon --api-version 1 -c {cid} -r {f.runc_binary} -b {p.bundle} "
             f"-l k8s-file:{p.userdata}/ctr.log --exit-dir {f.exit_dir} ...",
             f"{runc} create --bundle {p.bundle} --console-socket <conmon's> {cid}",
             f"{runc} start {cid}", f"{runc} state {cid}"],
        ),
        _step(
            "terminal", "Terminal", f.shells > 0,
            [f"podman exec -it {name} bash", f"podman attach {name}"],
            [f"conmon ... --exec --exec-process-spec {p.bundle}/<exec>/exec-process-*",
             f"{runc} exec --tty --console-socket <conmon's> --process <exec-process> {cid}"],
        ),
        _step(
            "remove", "Stop & remove", False, [f"podman kill {name}", f"podman rm {name}"],
            [f"{runc} kill {cid} KILL", f"{runc} delete {cid}", f"umount {p.merged}",
             f"rm -rf {p.root}"],
        ),
    ]  # fmt: skip


def _has_changes(upper: Path) -> bool:
    try:
        return any(upper.iterdir())
    except OSError:
        return False


def touch_in_volume(engine: Engine, unsafe_ref: str, destination: str, unsafe_name: str) -> str:
    """Create an empty file in the host directory behind one of a container's volumes (the
    lab's `touch /mnt/on`, done from the browser). The name is one path component, created
    inside the volume's (allowlisted) source, never through a symlink out of it."""
    import os

    from engine.errors import InvalidInputError
    from engine.hostfs.securepath import Root

    if (
        not unsafe_name
        or "/" in unsafe_name
        or unsafe_name in (".", "..")
        or len(unsafe_name) > 255
    ):
        raise InvalidInputError("name: one file name, no '/'")
    record = engine.get(Containers).get(unsafe_ref)
    source = _volume_source(record, destination.rstrip("/") or "/")
    if source is None:
        raise NotFoundError(f"container {record.name} has no volume at {destination}")
    with Root(source) as root:
        fd = root.open(unsafe_name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        os.close(fd)
    return str(source / unsafe_name)
