"""Oracle: the merged view of our layers (a real overlay mount of the layer dirs) must equal
what ``umoci unpack`` makes of the same image fetched from the registry: paths, types, modes,
owners, symlink targets, device numbers, content hashes, file mtimes and hardlink groups."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from engine.core import Engine
from engine.images.service import Images
from engine.images.store import Store
from tests.registry import PushedImages, Registry
from tests.skips import requires


def _overlay_works() -> bool:
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="gantry-ovl-probe-"))
    try:
        for d in ("a", "b", "m"):
            (base / d).mkdir()
        done = subprocess.run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={base}/a:{base}/b",
                str(base / "m"),
            ],
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            subprocess.run(["umount", str(base / "m")], check=False)
        return done.returncode == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


pytestmark = [
    requires(shutil.which("umoci") is not None, "umoci is not installed"),
    requires(shutil.which("skopeo") is not None, "skopeo is not installed"),
    requires(_overlay_works(), "cannot mount overlayfs here (needs root)"),
]


def snapshot(root: Path) -> tuple[dict[str, Any], set[frozenset[str]]]:
    entries: dict[str, Any] = {}
    inodes: dict[int, set[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            fact: dict[str, Any] = {
                "type": stat.S_IFMT(st.st_mode),
                "mode": stat.S_IMODE(st.st_mode),
                "uid": st.st_uid,
                "gid": st.st_gid,
            }
            if stat.S_ISLNK(st.st_mode):
                fact["target"] = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                fact["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
                fact["mtime"] = int(st.st_mtime)
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, set()).add(rel)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                fact["rdev"] = st.st_rdev
            entries[rel] = fact
    return entries, {frozenset(v) for v in inodes.values() if len(v) > 1}


def umoci_rootfs(registry: Registry, name: str, work: Path) -> Path:
    layout = work / "oci"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false",
         f"docker://{registry.ref(name)}", f"oci:{layout}:img"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    bundle = work / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:img", str(bundle)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return bundle / "rootfs"


@pytest.mark.privileged
@pytest.mark.parametrize("name", [PushedImages.WHITEOUTS, PushedImages.OCI])
def test_our_layers_merge_to_what_umoci_unpacks(
    engine: Engine, registry: Registry, pushed_images: PushedImages, tmp_path: Path, name: str
) -> None:
    image = engine.get(Images).pull(registry.ref(name), tls_verify=False)
    lowers = [str(p) for p in reversed(engine.get(Store).image_layer_dirs(image))]
    empty = tmp_path / "empty"
    empty.mkdir()
    merged = tmp_path / "merged"
    merged.mkdir()
    # Read-only overlay of the layer dirs alone (an empty bottom dir makes two lowers at least).
    options = f"lowerdir={':'.join([*lowers, str(empty)])}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], check=True)
    try:
        ours, our_links = snapshot(merged)
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    theirs, their_links = snapshot(umoci_rootfs(registry, name, tmp_path))
    assert ours.keys() == theirs.keys(), ours.keys() ^ theirs.keys()
    different = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
    # umoci leaves its root dir's mode to the bundle; compare the tree below it.
    assert different == {}
    assert our_links == their_links
    if name == PushedImages.WHITEOUTS:
        assert "gone" not in ours and "etc/conf/old" not in ours and "lib/link" not in ours
        assert "etc/conf/new" in ours and "opaque/upper" in ours and "opaque/lower" not in ours
        assert frozenset({"usr/bin/tool", "sbin/tool"}) in our_links
