from __future__ import annotations

import pytest

from engine.core import Engine
from engine.errors import ImageNotFoundError, InvalidInputError
from engine.store import Store
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
