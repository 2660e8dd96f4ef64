"""The images verbs of the CLI (python -m engine ...), podman's words and output shapes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.engine.clitools import engine_cli as cli
from tests.registry import PASSWORD, USER, PushedImages, Registry


def test_pull_images_and_rmi(
    tmp_root: Path, registry: Registry, pushed_images: PushedImages
) -> None:
    ref = registry.ref(PushedImages.OCI)
    out = cli(tmp_root, "pull", "--tls-verify=false", ref)
    assert out.returncode == 0, out.stderr
    image_id = pushed_images.built["oci"].config_digest.removeprefix("sha256:")
    assert out.stdout.strip() == image_id
    lines = out.stderr.splitlines()
    assert lines[0] == f"Trying to pull {ref}..."
    assert "Getting image source signatures" in lines
    assert sum(line.startswith("Copying blob ") and line.endswith(" done") for line in lines) == 2
    assert "Writing manifest to image destination" in lines
    again = cli(tmp_root, "pull", "--tls-verify=false", ref)
    assert again.stderr.count("skipped: already exists") == 2

    listing = json.loads(cli(tmp_root, "images", "--format", "json").stdout)
    (entry,) = listing
    assert entry["Id"] == image_id and entry["Names"] == [ref]
    assert entry["Digest"] == pushed_images.built["oci"].manifest["digest"]
    for key in ("RepoTags", "RepoDigests", "Size", "Created", "CreatedAt", "Labels", "Containers"):
        assert key in entry
    table = cli(tmp_root, "images").stdout.splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert table[1].split()[:3] == [ref.rsplit(":", 1)[0], "oci", image_id[:12]]

    removed = cli(tmp_root, "rmi", ref)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.splitlines() == [f"Untagged: {ref}", f"Deleted: {image_id}"]
    gone = cli(tmp_root, "rmi", ref)
    assert gone.returncode == 1 and gone.stderr.startswith("Error: ") and "not known" in gone.stderr


def test_pull_errors_are_one_line(tmp_root: Path, registry: Registry) -> None:
    out = cli(tmp_root, "pull", "--tls-verify=false", registry.ref("test/absent:1"))
    assert out.returncode != 0
    assert out.stderr.splitlines()[-1].startswith("Error: pull ")
    assert "not found" in out.stderr
    bad = cli(tmp_root, "pull", "sha256:../../x")
    assert bad.returncode == 125 and len(bad.stderr.strip().splitlines()) == 1  # as podman


def test_login_and_logout(
    tmp_root: Path, auth_registry: Registry, pushed_images: PushedImages
) -> None:
    host = auth_registry.host
    wrong = cli(
        tmp_root, "login", "-u", USER, "--password-stdin", "--tls-verify=false", host, stdin="x\n"
    )
    assert wrong.returncode != 0 and "refused" in wrong.stderr
    ok = cli(
        tmp_root,
        "login",
        "-u",
        USER,
        "--password-stdin",
        "--tls-verify=false",
        host,
        stdin=PASSWORD,
    )
    assert ok.returncode == 0 and ok.stdout.strip() == "Login Succeeded!", ok.stderr
    pulled = cli(
        tmp_root, "pull", "-q", "--tls-verify=false", auth_registry.ref(PushedImages.PRIVATE)
    )
    assert pulled.returncode == 0, pulled.stderr
    assert cli(tmp_root, "logout", host).stdout.strip() == f"Removed login credentials for {host}"
    assert cli(tmp_root, "logout", host).returncode == 125
