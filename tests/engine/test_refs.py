from __future__ import annotations

import pytest

from engine.errors import InvalidInputError
from engine.registry import refs

HEX = "a" * 64


@pytest.mark.parametrize(
    ("given", "name", "tag", "digest"),
    [
        ("busybox", "docker.io/library/busybox", "latest", ""),
        ("busybox:1.36", "docker.io/library/busybox", "1.36", ""),
        ("library/busybox", "docker.io/library/busybox", "latest", ""),
        ("docker.io/busybox", "docker.io/library/busybox", "latest", ""),
        ("index.docker.io/library/busybox", "docker.io/library/busybox", "latest", ""),
        ("docker.io/library/busybox:latest", "docker.io/library/busybox", "latest", ""),
        ("fatherlinux/on-off", "docker.io/fatherlinux/on-off", "latest", ""),
        (
            "quay.io/fatherlinux/on-off-container",
            "quay.io/fatherlinux/on-off-container",
            "latest",
            "",
        ),
        ("127.0.0.1:5000/demo:1", "127.0.0.1:5000/demo", "1", ""),
        ("localhost/demo", "localhost/demo", "latest", ""),
        ("localhost:5000/a/b/c:v2.0-rc_1", "localhost:5000/a/b/c", "v2.0-rc_1", ""),
        (f"alpine@sha256:{HEX}", "docker.io/library/alpine", "", f"sha256:{HEX}"),
        (f"reg.io/x:3@sha256:{HEX}", "reg.io/x", "3", f"sha256:{HEX}"),
        (
            "my.registry.example:443/team/app_name",
            "my.registry.example:443/team/app_name",
            "latest",
            "",
        ),
    ],
)
def test_it_normalises_references(given: str, name: str, tag: str, digest: str) -> None:
    ref = refs.parse(given)
    assert (ref.name, ref.tag, ref.digest) == (name, tag, digest)
    assert ref.target == (digest or tag)


def test_it_talks_to_registry_1_for_docker_hub() -> None:
    assert refs.parse("busybox").api_host == "registry-1.docker.io"
    assert refs.parse("127.0.0.1:5000/x").api_host == "127.0.0.1:5000"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "Busybox",
        "busybox:",
        "busybox:-x",
        "busybox:" + "t" * 129,
        "sha256:../../x",
        "busybox@sha256:../../x",
        "busybox@sha256:" + "A" * 64,
        "busybox@md5:abc",
        "busy box",
        "../etc/passwd",
        "a//b",
        "a/-b",
        "x" * 600,
        "reg.io/" + "a" * 260,
        "bad_host!:5000/x",
    ],
)
def test_it_refuses_bad_references(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        refs.parse(bad)


def test_it_parses_platforms() -> None:
    assert str(refs.parse_platform("linux/arm64/v8")) == "linux/arm64/v8"
    assert refs.parse_platform("linux/amd64") == refs.Platform("linux", "amd64")
    assert refs.parse_platform(None) == refs.host_platform()
    for bad in ("linux", "linux/", "linux/amd64/v8/x", "../x", "linux/AMD64 "):
        if bad.strip().lower() == "linux/amd64":
            continue
        with pytest.raises(InvalidInputError):
            refs.parse_platform(bad)


def test_it_folds_registry_aliases() -> None:
    assert refs.normalize_domain("INDEX.docker.io") == "docker.io"
    assert refs.normalize_domain("127.0.0.1:5000") == "127.0.0.1:5000"
    with pytest.raises(InvalidInputError):
        refs.normalize_domain("http://evil")
