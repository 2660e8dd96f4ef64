from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from engine.api.base import Context
from engine.api.images import sweep_store
from engine.core import Engine
from engine.errors import ImageNotFoundError, InvalidInputError
from engine.images.store import Store
from tests.imagetools import busybox_image, make_image


def test_it_finds_images_by_id_prefix_and_name(engine: Engine) -> None:
    image = busybox_image(engine)
    store = engine.get(Store)
    assert store.get_image(image.id).id == image.id
    assert store.get_image(image.short_id).id == image.id
    assert store.get_image("localhost/busybox:latest").id == image.id
    with pytest.raises(ImageNotFoundError):
        store.get_image("localhost/nope:latest")


def test_layers_are_shared_between_images(engine: Engine) -> None:
    a = make_image(engine, [{"/a": "1"}], name="localhost/a:1")
    b = make_image(engine, [{"/a": "1"}, {"/b": "2"}], name="localhost/b:1")
    assert a.layers[0] == b.layers[0]
    assert len(list((engine.config.root / "layers").iterdir())) == 2


def test_a_name_moves_to_the_newest_image(engine: Engine) -> None:
    a = make_image(engine, [{"/a": "1"}], name="localhost/x:latest")
    b = make_image(engine, [{"/a": "2"}], name="localhost/x:latest")
    store = engine.get(Store)
    assert store.get_image("localhost/x:latest").id == b.id
    assert store.get_image(a.id).names == []


@pytest.mark.parametrize("bad", ["sha256:../../x", "sha256:" + "g" * 64, "md5:abc", ""])
def test_digests_are_checked_before_paths_are_built(engine: Engine, bad: str) -> None:
    with pytest.raises(InvalidInputError):
        engine.get(Store).layer_path(bad)


def deep_dirs(top: Path, depth: int) -> None:
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("a", dir_fd=fd)
        child = os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


def test_the_startup_sweep_removes_deep_trees_and_goes_past_a_bad_entry(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A 1500-deep tree (a crashed extraction, a half-removed container) and an entry that
    cannot be removed (a mount left in it) must not stop the sweep, nor the gc after it."""
    store = engine.get(Store)
    tmp = engine.config.root / "tmp"
    deep_dirs(tmp / "a-deep.1", 1500)
    (tmp / "b-busy.1" / "mnt").mkdir(parents=True)
    deep_dirs(tmp / "c-deep.2", 1500)
    (tmp / "d-file.1").write_text("x")
    orphan = make_image(engine, [{"/orphan": "1"}], name="localhost/orphan:1")
    store.remove_image_record(orphan.id)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(tmp / "b-busy.1" / "mnt")], check=True)
    try:
        with caplog.at_level(logging.WARNING, logger="gantry.engine.store"):
            sweep_store(Context(engine))
        assert sorted(os.listdir(tmp)) == ["b-busy.1"]
        assert os.listdir(tmp / "b-busy.1") == ["mnt"]
        assert "b-busy.1" in caplog.text
        assert list((engine.config.root / "layers").iterdir()) == []  # the gc ran
    finally:
        subprocess.run(["umount", str(tmp / "b-busy.1" / "mnt")], check=True)
    assert store.sweep_tmp() == 1
    assert os.listdir(tmp) == []


@pytest.mark.parametrize("when", ["before the open", "between the open and the lock"])
def test_a_sweep_in_the_moment_before_a_tmp_dir_is_locked_takes_nothing_away(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """The race as a test run met it: the worker's startup sweep ran while the test made an
    image, and removed a tmp dir made a moment before, not yet locked. Here a sweep runs in
    that moment on purpose; the directory handed out must exist and be held."""
    import fcntl
    import tempfile

    store = engine.get(Store)
    real_mkdtemp, real_open = tempfile.mkdtemp, os.open
    armed, swept = [when], []

    def sweep_once(moment: str) -> None:
        if armed == [moment]:
            armed.clear()
            swept.append(store.sweep_tmp())

    def mkdtemp_then_sweep(*args: Any, **kwargs: Any) -> str:
        path = real_mkdtemp(*args, **kwargs)
        sweep_once("before the open")
        return str(path)

    def open_then_sweep(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        if "layer." in str(path):
            sweep_once("between the open and the lock")
        return fd

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp_then_sweep)
    monkeypatch.setattr(os, "open", open_then_sweep)
    path = store.tmp_dir("layer")
    monkeypatch.undo()
    assert swept == [1]  # the sweep did remove the first directory
    assert path.is_dir()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by the store
    finally:
        os.close(fd)
    store.discard(path)
