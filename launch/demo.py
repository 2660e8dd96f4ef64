"""The lab's demo images: built here from Debian packages (no internet registry), kept as OCI
image layouts under $GANTRY_DEMO_DIR, rebuilt only when their recipe changes, and pushed into
the local registry that `./gantry run` starts, so the lab works offline.

    python -m launch.demo build          build the layouts that are missing or stale
    python -m launch.demo check          exit 1 (saying which) if a layout is not built
    python -m launch.demo push HOST:PORT push what the registry does not serve yet; print the
                                         references, one per line

A recipe is a directory, demo/<name>/: recipe.json (the kind of layer, its packages, the files
it adds, the image config) and the files it names. An image is rebuilt when the hash of its
recipe directory, of this file, of the suite and epoch below (and, for busybox, of
/bin/busybox) is not the one stamped beside its layout. Every timestamp in an image is EPOCH:
the builds are reproducible.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

IMAGES = ("on-off", "busybox")
SUITE = "bookworm"
EPOCH = 1735689600  # 2025-01-01T00:00:00Z
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RECIPES = Path(__file__).resolve().parent.parent / "demo"
TAR_SAME_EVERY_TIME = [
    "--numeric-owner", "--owner=0", "--group=0", f"--mtime=@{EPOCH}", "--format=pax",
    "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
]  # fmt: skip
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


class BuildFailed(Exception):
    pass


def say(text: str) -> None:
    print(f"gantry: {text}", file=sys.stderr, flush=True)


def demo_dir() -> Path:
    return Path(os.environ.get("GANTRY_DEMO_DIR") or "/opt/gantry/demo")


def recipe(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((RECIPES / name / "recipe.json").read_text())
    return loaded


def recipe_hash(name: str) -> str:
    """The hash of everything that decides the image."""
    digest = hashlib.sha256(f"{SUITE} {EPOCH} {PATH_ENV}\n".encode())
    digest.update(Path(__file__).read_bytes())
    for path in sorted((RECIPES / name).rglob("*")):
        if path.is_file():
            mode = stat.S_IMODE(path.stat().st_mode)
            digest.update(f"{path.relative_to(RECIPES)} {mode:o}\n".encode())
            digest.update(path.read_bytes())
    if recipe(name)["layer"] == "busybox":
        digest.update(Path("/bin/busybox").read_bytes())
    return digest.hexdigest()


def created() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH))


def run(args: list[str], log: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    """A step of a build, its output appended to the build's log."""
    with log.open("a") as out:
        out.write(f"+ {shlex.join(args)}\n")
        out.flush()
        done = subprocess.run(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, **kw
        )
    if done.returncode != 0:
        raise BuildFailed(f"{args[0]} exited {done.returncode}")
    return done


# -- layers ------------------------------------------------------------------------------------
def layer_mmdebstrap(name: str, spec: dict[str, Any], tar: Path, work: Path, log: Path) -> None:
    """Debian's essential set plus spec["include"], the recipe's files installed at their
    paths; no apt lists or caches, docs, man pages or locales, no device nodes."""
    mirror = os.environ.get("GANTRY_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    security = os.environ.get(
        "GANTRY_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security"
    )
    hooks = []
    for source, dest in spec.get("files", {}).items():
        path = RECIPES / name / source
        mode = f"{stat.S_IMODE(path.stat().st_mode):04o}"
        hooks.append(f'--customize-hook=install -D -m {mode} {shlex.quote(str(path))} "$1"{dest}')
    run(
        [
            "mmdebstrap",
            "--mode=root",
            "--variant=essential",
            "--format=tar",
            "--include=" + ",".join(spec.get("include", [])),
            "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/info/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-include=/usr/share/locale/locale.alias",
            *hooks,
            '--customize-hook=rm -f "$1/etc/hostname" "$1/etc/resolv.conf" '
            '"$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old',
            '--customize-hook=rm -rf "$1/var/lib/apt" "$1/var/cache/apt" "$1/var/log/apt"',
            "--skip=cleanup/apt",
            "--skip=output/dev",
            SUITE,
            str(tar),
            f"deb {mirror} {SUITE} main",
            f"deb {mirror} {SUITE}-updates main",
            f"deb {security} {SUITE}-security main",
        ],  # fmt: skip
        log,
        env=os.environ | {"SOURCE_DATE_EPOCH": str(EPOCH)},
    )
    (work / "dev-only" / "dev").mkdir(parents=True)  # no device nodes: the runtime makes /dev
    run(["tar", "-C", str(work / "dev-only"), "-rf", str(tar), *TAR_SAME_EVERY_TIME, "./dev"], log)


def layer_busybox(name: str, spec: dict[str, Any], tar: Path, work: Path, log: Path) -> None:
    """Debian's static busybox, every applet a relative symlink to /bin/busybox where
    busybox says it belongs."""
    root = work / "rootfs"
    for sub in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "home", "var", "dev", "proc", "sys"):
        (root / sub).mkdir(mode=0o755, parents=True, exist_ok=True)
    (root / "root").mkdir(mode=0o700)
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)  # noqa: S103 (an image's /tmp is sticky and open to all)
    shutil.copyfile("/bin/busybox", root / "bin" / "busybox")
    os.chmod(root / "bin" / "busybox", 0o755)  # noqa: S103 (a program of the image)
    listed = subprocess.run(
        [str(root / "bin" / "busybox"), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in listed:
        parent = applet.rpartition("/")[0]
        if not parent or os.path.lexists(root / applet):  # linuxrc; the first one wins
            continue
        up = "" if parent == "bin" else "../" * (parent.count("/") + 1) + "bin/"
        os.symlink(up + "busybox", root / applet)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    run(["tar", "-C", str(root), "-cf", str(tar), "--sort=name", *TAR_SAME_EVERY_TIME, "."], log)


LAYERS = {"mmdebstrap": layer_mmdebstrap, "busybox": layer_busybox}


def busybox_version() -> str:
    return subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "busybox-static"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip


def config_args(spec: dict[str, Any]) -> list[str]:
    """umoci config's arguments for the recipe's image config."""
    config = spec["config"]
    words = {
        "suite": SUITE,
        "busybox_version": busybox_version() if "busybox" in spec["layer"] else "",
    }
    args = [f"--config.cmd={word}" for word in config["cmd"]]
    args += [f"--config.env={PATH_ENV}", f"--config.workingdir={config['workingdir']}"]
    if "stopsignal" in config:
        args.append(f"--config.stopsignal={config['stopsignal']}")
    for key, value in config["labels"].items():
        args.append(f"--config.label={key}={value.format(**words)}")
    return args


def assemble(name: str, spec: dict[str, Any], work: Path, log: Path) -> Path:
    """A one-layer OCI layout tagged latest, in work/layout."""
    layout, tar = work / "layout", work / "layer.tar"
    LAYERS[spec["layer"]](name, spec, tar, work, log)
    image = f"{layout}:latest"
    run(["umoci", "init", "--layout", str(layout)], log)
    run(["umoci", "new", "--image", image], log)
    run(
        ["umoci", "raw", "add-layer", "--image", image, f"--history.created={created()}",
         f"--history.created_by=gantry: the demo recipe {name}", str(tar)],
        log,
    )  # fmt: skip
    run(
        ["umoci", "config", "--image", image, "--no-history", f"--created={created()}",
         "--author=Gantry", *config_args(spec)],
        log,
    )  # fmt: skip
    run(["umoci", "gc", "--layout", str(layout)], log)
    return layout


# -- build, check, push ------------------------------------------------------------------------
def build_one(name: str) -> None:
    """The layout demo_dir()/name, if it is missing or its recipe changed."""
    top = demo_dir()
    dest, stamp = top / name, top / f".stamp-{name}"
    digest = recipe_hash(name)
    why = "first run only"
    if (dest / "index.json").is_file():
        if stamp.is_file() and stamp.read_text().strip() == digest:
            return
        why = "its recipe changed"
    say(f"building demo image gantry/{name} ({why})")
    started = time.monotonic()
    work, log = top / f".build-{name}", top / f".build-{name}.log"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700)
    log.write_text("")
    try:
        layout = assemble(name, recipe(name), work, log)
    except (BuildFailed, OSError, subprocess.CalledProcessError) as err:
        shutil.rmtree(work, ignore_errors=True)
        say(f"building the demo image gantry/{name} failed ({err}); the end of {log}:")
        print("\n".join(log.read_text().splitlines()[-25:]), file=sys.stderr)
        say("(GANTRY_DEMO=0 ./gantry run starts without the demo images)")
        raise SystemExit(1) from None
    subprocess.run(["chmod", "-R", "a+rX", str(layout)], check=True)
    shutil.rmtree(dest, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    layout.rename(dest)
    stamp.write_text(digest + "\n")
    shutil.rmtree(work, ignore_errors=True)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    seconds = time.monotonic() - started
    say(f"built gantry/{name} in {seconds:.0f} s: {size / 1048576:.1f} MiB in {dest}")


def build() -> None:
    top = demo_dir()
    top.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(top, 0o755)  # noqa: S103 (the layouts are world-readable, as a test checks)
    with (top / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two set-ups at once build each image once
        for name in IMAGES:
            build_one(name)


def check() -> int:
    for name in IMAGES:
        if not (demo_dir() / name / "index.json").is_file():
            say(
                f"demo image gantry/{name} is not built (./gantry setup builds it): "
                "starting without the demo registry"
            )
            return 1
    return 0


def layout_digest(layout: Path) -> str:
    """The manifest digest the layout's index.json names."""
    index = json.loads((layout / "index.json").read_text())
    return str(index["manifests"][0]["digest"])


def served_digest(registry: str, name: str) -> str:
    """What the registry serves as gantry/NAME:latest ("" if nothing)."""
    request = urllib.request.Request(
        f"http://{registry}/v2/gantry/{name}/manifests/latest",
        method="HEAD",
        headers={"Accept": ", ".join(MANIFEST_TYPES)},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as answer:
            return str(answer.headers.get("Docker-Content-Digest", ""))
    except OSError:
        return ""


def push(registry: str) -> list[str]:
    """Our own layouts into our own registry (no signature policy applies), unless it
    already serves the same digests; answers the references."""
    refs = []
    for name in IMAGES:
        ref = f"{registry}/gantry/{name}:latest"
        layout = demo_dir() / name
        if served_digest(registry, name) != layout_digest(layout):
            say(f"pushing demo image gantry/{name} to the local registry")
            subprocess.run(
                ["skopeo", "copy", "--quiet", "--insecure-policy", "--preserve-digests",
                 "--dest-tls-verify=false", f"oci:{layout}:latest", f"docker://{ref}"],
                stdout=subprocess.DEVNULL, check=True,
            )  # fmt: skip
        refs.append(ref)
    return refs


def main(argv: list[str]) -> int:
    if argv[:1] == ["build"]:
        build()
        return 0
    if argv[:1] == ["check"]:
        return check()
    if argv[:1] == ["push"] and len(argv) == 2:
        print("\n".join(push(argv[1])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
