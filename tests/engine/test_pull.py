"""Pulls from a real docker-registry (tests/registry.py) of images built and pushed with
skopeo by the tests: OCI, Docker schema 2, a multi-arch index, zstd layers, whiteouts."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from engine.core import Engine
from engine.errors import EngineError, InvalidStateError, RegistryError
from engine.events import RecordingPublisher
from engine.images.pull import PullJob
from engine.images.service import Images
from engine.images.store import Store
from engine.registry.credentials import Credentials
from tests.registry import PushedImages, Registry


def pull(engine: Engine, ref: str, **kw: Any) -> Any:
    return engine.get(Images).pull(ref, tls_verify=False, **kw)


def rootfs_file(engine: Engine, image: Any, rel: str) -> Path:
    """The topmost layer's copy of a file (what a merged view would show)."""
    for diff in reversed(engine.get(Store).image_layer_dirs(image)):
        if os.path.lexists(diff / rel):
            return diff / rel
    raise AssertionError(f"{rel} in no layer")


def test_it_pulls_an_oci_image(
    engine: Engine, registry: Registry, pushed_images: PushedImages
) -> None:
    built = pushed_images.built["oci"]
    image = pull(engine, registry.ref(PushedImages.OCI))
    assert image.id == built.config_digest
    assert image.diff_ids == built.diff_ids
    assert image.names == [registry.ref(PushedImages.OCI)]
    assert image.digest == built.manifest["digest"]
    assert [c["kind"] for c in image.manifest_chain] == ["manifest", "config", "layer", "layer"]
    busybox = rootfs_file(engine, image, "bin/busybox")
    assert busybox.read_bytes() == Path("/bin/busybox").read_bytes()
    assert stat.S_IMODE(busybox.stat().st_mode) == 0o755
    assert rootfs_file(engine, image, "etc/motd").read_text() == "hello from gantry\n"
    store = engine.get(Store)
    for chain in image.layers:
        layer_dir = store.layer_path(chain)
        assert stat.S_IMODE(layer_dir.stat().st_mode) == 0o700
        assert store.get_layer(chain).entries > 0
    assert list((engine.config.root / "tmp").iterdir()) == []


def test_it_pulls_docker_schema2_and_shares_layers(
    engine: Engine, registry: Registry, pushed_images: PushedImages
) -> None:
    oci = pull(engine, registry.ref(PushedImages.OCI))
    events: list[tuple[PullJob, bool]] = []
    v2 = pull(
        engine, registry.ref(PushedImages.SCHEMA2), progress=lambda j, f: events.append((j, f))
    )
    assert v2.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    assert v2.diff_ids == oci.diff_ids and v2.layers == oci.layers
    job = events[-1][0]
    assert {layer.state for layer in job.layers} == {"exists"}  # nothing fetched twice
    assert len(list((engine.config.root / "layers").iterdir())) == 2


def test_it_picks_the_platform_from_an_index(
    engine: Engine, registry: Registry, pushed_images: PushedImages
) -> None:
    amd = pull(engine, registry.ref(PushedImages.MULTI), platform="linux/amd64")
    assert amd.id == pushed_images.built["oci"].config_digest
    assert [c["kind"] for c in amd.manifest_chain][:2] == ["index", "manifest"]
    assert amd.digest == pushed_images.built["multi"]["digest"]
    arm = pull(engine, registry.ref(PushedImages.MULTI), platform="linux/arm64")
    assert arm.platform == "linux/arm64/v8"
    assert rootfs_file(engine, arm, "etc/arch").read_text() == "arm64\n"
    with pytest.raises(EngineError, match="no image for platform linux/s390x"):
        pull(engine, registry.ref(PushedImages.MULTI), platform="linux/s390x")


def test_it_pulls_zstd_layers(
    engine: Engine, registry: Registry, pushed_images: PushedImages
) -> None:
    image = pull(engine, registry.ref(PushedImages.ZSTD))
    store = engine.get(Store)
    assert {store.get_layer(c).media_type for c in image.layers} == {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    }
    assert rootfs_file(engine, image, "etc/motd").read_text() == "hello from gantry\n"


def test_it_pulls_by_digest(
    engine: Engine, registry: Registry, pushed_images: PushedImages
) -> None:
    digest = pushed_images.built["oci"].manifest["digest"]
    image = pull(engine, registry.ref(f"test/busybox@{digest}"))
    assert image.names == []
    assert image.repo_digests == [registry.ref(f"test/busybox@{digest}")]


def test_whiteouts_and_hardlinks_arrive_in_overlay_form(
    engine: Engine, registry: Registry, pushed_images: PushedImages
) -> None:
    image = pull(engine, registry.ref(PushedImages.WHITEOUTS))
    dirs = engine.get(Store).image_layer_dirs(image)
    gone = (dirs[1] / "gone").lstat()
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert os.getxattr(dirs[1] / "opaque", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(dirs[1] / "etc/conf", "trusted.overlay.opaque") == b"y"
    assert (dirs[1] / "etc/conf/new").is_file()
    assert (dirs[1] / "sbin/tool").stat().st_ino == (dirs[1] / "usr/bin/tool").stat().st_ino
    assert stat.S_IMODE((dirs[1] / "usr/bin/tool").stat().st_mode) == 0o4755


def test_unknown_images_and_dead_registries_are_one_sentence(
    engine: Engine, registry: Registry
) -> None:
    with pytest.raises(RegistryError, match="not found") as err:
        pull(engine, registry.ref("test/nothing-here:1"))
    assert "\n" not in err.value.message
    with pytest.raises(RegistryError, match="cannot reach registry"):
        from tests.registry import free_port

        pull(engine, f"127.0.0.1:{free_port()}/x:1")


def test_basic_auth_needs_credentials(
    engine: Engine, auth_registry: Registry, pushed_images: PushedImages
) -> None:
    ref = auth_registry.ref(PushedImages.PRIVATE)
    with pytest.raises(RegistryError, match="requires authentication"):
        pull(engine, ref)
    from tests.registry import PASSWORD, USER

    creds = engine.get(Credentials)
    with pytest.raises(RegistryError, match="refused"):
        creds.login(auth_registry.host, USER, "wrong", tls_verify=False)
    creds.login(auth_registry.host, USER, PASSWORD, tls_verify=False)
    auth_file = engine.config.root / "auth.json"
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    assert PASSWORD not in auth_file.read_text()  # base64, as podman keeps it
    image = pull(engine, ref)
    assert image.id == pushed_images.built["oci"].config_digest


def test_token_auth_anonymous_and_with_credentials(
    engine: Engine, token_registry: Registry, pushed_images: PushedImages
) -> None:
    image = pull(engine, token_registry.ref(PushedImages.OCI))
    assert image.id == pushed_images.built["oci"].config_digest
    assert token_registry.token_log[-1]["authorization"] == ""
    private = token_registry.ref(PushedImages.PRIVATE)
    with pytest.raises(RegistryError, match="requires authentication"):
        pull(engine, private)
    from tests.registry import PASSWORD, USER

    engine.get(Credentials).set(token_registry.host, USER, PASSWORD)
    pull(engine, private)
    assert token_registry.token_log[-1]["authorization"].startswith("Basic ")
    engine.get(Credentials).set(token_registry.host, USER, "bad")
    with pytest.raises(RegistryError, match="wrong username or password"):
        pull(engine, private)


def test_two_pulls_of_one_image_at_once(
    engine: Engine, registry: Registry, pushed_images: PushedImages
) -> None:
    results: list[Any] = []
    errors: list[BaseException] = []
    other = Engine(engine.config)  # a second engine (as the CLI next to the worker)

    def run(e: Engine) -> None:
        try:
            results.append(pull(e, registry.ref(PushedImages.WHITEOUTS)))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(e,)) for e in (engine, other, engine)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len({r.id for r in results}) == 1
    assert len(list((engine.config.root / "layers").iterdir())) == 3
    assert list((engine.config.root / "tmp").iterdir()) == []


def test_background_pulls_publish_progress_and_keep_their_job(
    engine: Engine, registry: Registry, pushed_images: PushedImages
) -> None:
    publisher = RecordingPublisher()
    images = engine.get(Images)
    job = images.start_pull(
        registry.ref(PushedImages.ZSTD), tls_verify=False, user="7", publisher=publisher
    )
    again = images.start_pull(
        registry.ref(PushedImages.ZSTD), tls_verify=False, publisher=publisher
    )
    assert again.id == job.id  # the same pull, not a second one
    deadline = time.monotonic() + 60
    while job.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.state == "done", job.error

    def kinds() -> list[tuple[str, str]]:
        return [(g, e["kind"]) for g, e in publisher.events]

    # the image event follows the job's last progress event, from the same thread
    while ("gantry.events", "image") not in kinds() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ("gantry.events", "pull") in kinds() and ("gantry.events", "image") in kinds()
    pulls = [e for _, e in publisher.events if e["kind"] == "pull"]
    assert pulls[-1]["state"] == "done" and "container" not in pulls[-1]
    assert all(layer["state"] == "done" for layer in pulls[-1]["layers"])
    snapshot = images.jobs()[0]
    assert snapshot["job"] == job.id and snapshot["image"] == job.image_id
    failed = images.start_pull(registry.ref("test/nope:1"), tls_verify=False, publisher=publisher)
    while failed.running:
        time.sleep(0.05)
    assert failed.state == "error" and "not found" in failed.error


def test_rmi_refuses_an_image_in_use_and_collects_layers(
    engine: Engine, registry: Registry, pushed_images: PushedImages
) -> None:
    images = engine.get(Images)
    oci = pull(engine, registry.ref(PushedImages.OCI))
    wh = pull(engine, registry.ref(PushedImages.WHITEOUTS))
    ctr = engine.config.root / "containers" / ("c" * 64)
    ctr.mkdir(parents=True)
    (ctr / "container.json").write_text(
        json.dumps({"id": "c" * 64, "name": "web", "image_id": wh.id, "layers": wh.layers})
    )
    with pytest.raises(InvalidStateError, match="in use by container web"):
        images.remove(wh.id)
    result = images.remove(registry.ref(PushedImages.OCI))
    assert result["deleted"] == [oci.id]
    store = engine.get(Store)
    assert not any(store.has_layer(c) for c in oci.layers)
    assert all(store.has_layer(c) for c in wh.layers)
    assert not store.has_blob(oci.digest) and store.has_blob(wh.digest)


def test_rmi_by_name_untags_first(
    engine: Engine, registry: Registry, pushed_images: PushedImages
) -> None:
    images = engine.get(Images)
    a = pull(engine, registry.ref(PushedImages.OCI))
    pull(engine, registry.ref(PushedImages.PRIVATE))
    assert len(images.find(a.id).names) == 2
    with pytest.raises(InvalidStateError, match="multiple names"):
        images.remove(a.id)
    assert images.remove(registry.ref(PushedImages.PRIVATE))["untagged"] == [
        registry.ref(PushedImages.PRIVATE)
    ]
    assert images.remove(a.short_id, force=True)["deleted"] == [a.id]
    assert images.images() == []
    assert list((engine.config.root / "layers").iterdir()) == []
