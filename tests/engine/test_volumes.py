"""Volumes: -v SRC:DST[:OPTS] parsing and the allowlist policy (no symlink out of it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.errors import InvalidInputError, NotFoundError, PolicyError
from engine.storage.volumes import Volume, check_volume, check_volumes, parse_volume


@pytest.fixture
def config(tmp_path: Path) -> EngineConfig:
    allowed = tmp_path / "allowed"
    (allowed / "data" / "inner").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (allowed / "in-link").symlink_to("data/inner")
    (allowed / "out-link").symlink_to(tmp_path / "outside")
    (allowed / "up-link").symlink_to("..")
    return EngineConfig(root=tmp_path / "root", volume_allowlist=(allowed,))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("/a:/b", Volume("/a", "/b", False)),
        ("/a:/b:ro", Volume("/a", "/b", True)),
        ("/a:/b:rw,z", Volume("/a", "/b", False)),
        ("/a:/b:Z,ro", Volume("/a", "/b", True)),
    ],
)
def test_it_parses_podmans_forms(spec: str, expected: Volume) -> None:
    assert parse_volume(spec) == expected
    assert parse_volume(expected.spec()) == expected


@pytest.mark.parametrize(
    "spec", ["", "/a", ":/b", "/a:", "/a:/b:ro:x", "/a:/b:shared", "/a:/b:rshared", "/a\x00:/b"]
)
def test_it_refuses_malformed_specs(spec: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_volume(spec)


def test_sources_resolve_inside_the_allowlist(config: EngineConfig, tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    assert check_volume(config, parse_volume(f"{allowed}/data:/mnt")).source == f"{allowed}/data"
    assert check_volume(config, parse_volume(f"{allowed}:/mnt")).source == str(allowed)
    # a symlink that stays inside is resolved to its real path
    assert check_volume(config, parse_volume(f"{allowed}/in-link:/m")).source == (
        f"{allowed}/data/inner"
    )


@pytest.mark.parametrize(
    ("rel", "error"),
    [
        ("out-link", PolicyError),
        ("up-link", PolicyError),
        ("up-link/outside", PolicyError),
        ("../outside", PolicyError),
        ("missing", NotFoundError),
    ],
)
def test_escapes_are_refused(config: EngineConfig, tmp_path: Path, rel: str, error: type) -> None:
    with pytest.raises(error):
        check_volume(config, parse_volume(f"{tmp_path}/allowed/{rel}:/mnt"))


def test_destinations_are_policed(config: EngineConfig, tmp_path: Path) -> None:
    src = f"{tmp_path}/allowed/data"
    assert check_volume(config, parse_volume(f"{src}:/x/../y/")).destination == "/y"
    for dst in ("/proc", "/sys/fs", "/dev/x", "/proc/../proc/1"):
        with pytest.raises(PolicyError):
            check_volume(config, parse_volume(f"{src}:{dst}"))
    for dst in ("relative", "/", "/.."):
        with pytest.raises(InvalidInputError):
            check_volume(config, parse_volume(f"{src}:{dst}"))
    with pytest.raises(InvalidInputError, match="twice"):
        check_volumes(config, [parse_volume(f"{src}:/m"), parse_volume(f"{src}:/m/")])


def test_an_empty_allowlist_allows_nothing(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="allowlist is empty"):
        check_volume(EngineConfig(root=tmp_path), parse_volume(f"{os.getcwd()}:/mnt"))
