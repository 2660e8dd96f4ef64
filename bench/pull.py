"""Pull benchmark: Gantry vs podman vs the shell floor, side by side, fresh storage each time.

    /opt/gantry/venv/bin/python -m bench.pull [--rounds 5] [--large]

Builds (once, cached under /var/tmp/gantry-bench) a four-layer image of about 100 MB
compressed with more than 10,000 files: a Debian bookworm minbase made by mmdebstrap, plus
generated layers (many small text files, incompressible data, mixed files). It is pushed to a
local docker-registry (Debian's) on loopback, then each round times, in rotating order:

  gantry  python -m engine --root FRESH pull --tls-verify=false REF
  podman  podman --root FRESH --runroot FRESH pull --tls-verify=false REF
  floor   for every layer at once: curl BLOB | gzip -dc | tar -x -C FRESH/N

and prints the medians and the ratios (targets: gantry <= 0.8 x podman, <= 1.2 x floor).
``--large`` pulls a big image instead (issue 17): ten generated layers, about 1.1 GB
uncompressed and 52,000 entries (small text files, directories, symlinks and hard links, and
two layers of large incompressible files), gzip -1; targets gantry <= 0.9 x floor and <= 0.4
x podman, and Gantry's peak RSS (the CLI process, which is the engine) under 300 MB.
Run as root; needs mmdebstrap, docker-registry, skopeo, podman and curl.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

CACHE = Path("/var/tmp/gantry-bench")
REPO = Path(__file__).resolve().parent.parent
NAME = "bench/debian-plus"
TAG = "1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sh(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv[:3])}...: {done.stderr.strip()[-800:]}")
    return done


# -- the image ---------------------------------------------------------------------------------


def _tar(entries: list[tuple[str, bytes | None, int]]) -> bytes:
    """entries: (name, data or None for a directory, mode)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, 1_700_000_000
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def generated_layers() -> list[bytes]:
    rng = random.Random(42)
    words = [f"word{i}" for i in range(5000)]
    small: list[tuple[str, bytes | None, int]] = [("srv", None, 0o755)]
    for d in range(40):
        small.append((f"srv/site{d}", None, 0o755))
        for f in range(60):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(20, 400)))
            small.append((f"srv/site{d}/page{f}.html", text.encode(), 0o644))
    blobs: list[tuple[str, bytes | None, int]] = [("opt", None, 0o755), ("opt/data", None, 0o755)]
    for i in range(16):
        blobs.append((f"opt/data/blob{i}.bin", rng.randbytes(2 * 1024 * 1024), 0o644))
    mixed: list[tuple[str, bytes | None, int]] = [("var", None, 0o755), ("var/cache", None, 0o755)]
    for d in range(10):
        mixed.append((f"var/cache/d{d}", None, 0o755))
        for f in range(100):
            half = rng.randbytes(5000)
            mixed.append((f"var/cache/d{d}/f{f}", half + half, 0o644))
    return [_tar(small), _tar(blobs), _tar(mixed)]


LARGE_NAME = "bench/large"


def large_layer(index: int, path: Path) -> None:
    """Layer ``index`` of the large image, written as a tar to ``path``: layers 0-7 hold
    6,500 entries each (small text files in 50 directories, a symlink and a hard link per
    directory), layers 8 and 9 sixteen incompressible 32 MiB files each."""
    rng = random.Random(1000 + index)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, data: bytes | None = None, kind: bytes = tarfile.REGTYPE) -> None:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = 1_700_000_000, 0o755 if data is None else 0o644
            info.type = tarfile.DIRTYPE if data is None and kind == tarfile.REGTYPE else kind
            if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = (data or b"").decode()
                tar.addfile(info)
            elif info.type == tarfile.DIRTYPE:
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))

        top = f"big{index}"
        add(top)
        if index >= 8:
            for f in range(16):
                add(f"{top}/blob{f}.bin", rng.randbytes(32 * 1024 * 1024))
            return
        for d in range(50):
            add(f"{top}/d{d}")
            for f in range(127):
                add(f"{top}/d{d}/f{f}.txt", rng.randbytes(rng.randint(64, 3000)).hex().encode())
            add(f"{top}/d{d}/link", b"f0.txt", tarfile.SYMTYPE)
            add(f"{top}/d{d}/hard", f"{top}/d{d}/f1.txt".encode(), tarfile.LNKTYPE)


def large_tars(work: Path) -> list[Path]:
    paths = []
    for index in range(10):
        path = work / f"layer{index}.tar"
        large_layer(index, path)
        paths.append(path)
    return paths


def build_layout(large: bool = False) -> Path:
    """The OCI layout of the bench image (cached)."""
    layout = CACHE / ("oci-large" if large else "oci")
    if (layout / "index.json").exists():
        return layout
    tmp = CACHE / f"{layout.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "blobs/sha256").mkdir(parents=True)
    if large:
        print("generating the large image's layers (once)...", flush=True)
        tars = large_tars(tmp)
    else:
        minbase = CACHE / "minbase.tar"
        if not minbase.exists():
            print("building a Debian bookworm minbase with mmdebstrap (once)...", flush=True)
            sh(["mmdebstrap", "--variant=minbase", "--format=tar", "bookworm", str(minbase)])
        tars = [minbase]
        for i, data in enumerate(generated_layers()):
            tars.append(tmp / f"gen{i}.tar")
            tars[-1].write_bytes(data)
    descs, diff_ids = [], []
    for tar in tars:
        diff_ids.append("sha256:" + _sha256_file(tar))
        gz = tmp / "layer.gz"
        with open(tar, "rb") as src, open(gz, "wb") as dst:
            subprocess.run(["gzip", "-1" if large else "-6", "-n", "-c"], stdin=src, stdout=dst,
                           check=True)  # fmt: skip
        descs.append(_blob_file(tmp, gz, "application/vnd.oci.image.layer.v1.tar+gzip"))
        if tar.parent == tmp:
            tar.unlink()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-11-28T00:00:00Z",
        "config": {"Cmd": ["/bin/bash"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    cdesc = _blob(tmp, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cdesc, "layers": descs}
    mdesc = _blob(tmp, json.dumps(manifest).encode(), OCI_MANIFEST)
    mdesc["annotations"] = {"org.opencontainers.image.ref.name": TAG}
    (tmp / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (tmp / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [mdesc]}))
    tmp.rename(layout)
    return layout


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _blob_file(layout: Path, path: Path, media_type: str) -> dict[str, Any]:
    digest = _sha256_file(path)
    size = path.stat().st_size
    path.rename(layout / "blobs/sha256" / digest)
    return {"mediaType": media_type, "digest": "sha256:" + digest, "size": size}


def _blob(layout: Path, data: bytes, media_type: str) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / digest[7:]).write_bytes(data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


# -- the registry ------------------------------------------------------------------------------


def start_registry(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    storage = CACHE / "registry"
    storage.mkdir(parents=True, exist_ok=True)
    config = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    path = workdir / "registry.yml"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("docker-registry did not start")


# -- the contenders ----------------------------------------------------------------------------


PEAK_RSS: list[float] = []  # MiB, each gantry pull's process (the engine: the CLI runs it)


def run_gantry(ref: str, work: Path) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "GANTRY_CONFIG": "/nonexistent"}
    argv = [sys.executable, "-m", "engine", "--root", str(work), "pull", "-q",
            "--tls-verify=false", ref]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"gantry pull failed ({proc.returncode})")
    PEAK_RSS.append(usage.ru_maxrss / 1024)


def run_podman(ref: str, work: Path) -> None:
    sh(
        [
            "podman", "--root", str(work / "root"), "--runroot", str(work / "run"),
            "--storage-driver", "overlay", "--runtime", "runc", "--events-backend", "none",
            "pull", "-q", "--tls-verify=false", ref,
        ]
    )  # fmt: skip


def run_floor(host: str, layers: list[str], work: Path, name: str = NAME) -> None:
    procs = []
    for i, digest in enumerate(layers):
        target = work / str(i)
        target.mkdir(parents=True)
        url = f"http://{host}/v2/{name}/blobs/{digest}"
        script = f"curl -sf {url} | gzip -dc | tar -x -C {target}"
        procs.append(subprocess.Popen(["sh", "-c", script]))
    for proc in procs:
        if proc.wait() != 0:
            sys.exit("floor pipeline failed")


def settle() -> None:
    """Flush the last run's writes before the next one starts. Trees are deleted only at the
    end: on ext4, deleting 10,000s of files makes the next minutes of inode creation slow
    (freed-block and discard work), which would punish whoever runs next."""
    os.sync()
    time.sleep(2.0)


def one_pull(name: str, ref: str, host: str, layers: list[str], work: Path) -> tuple[float, float]:
    """One contender's pull into ``work`` on a settled machine: (seconds, CPU seconds)."""
    settle()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    if name == "gantry":
        run_gantry(ref, work)
    elif name == "podman":
        run_podman(ref, work)
    else:
        run_floor(host, layers, work, ref.split("/", 1)[1].rsplit(":", 1)[0])
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--large", action="store_true", help="the 1 GB, 52,000-entry image")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run me as root (podman and the floor extract device nodes and owners)")
    CACHE.mkdir(parents=True, exist_ok=True)
    layout = build_layout(args.large)
    manifest_desc = json.loads((layout / "index.json").read_text())["manifests"][0]
    blob = layout / "blobs/sha256" / manifest_desc["digest"][7:]
    manifest = json.loads(blob.read_text())
    layers = [d["digest"] for d in manifest["layers"]]
    compressed = sum(d["size"] for d in manifest["layers"])
    files = 0
    workdir = Path(tempfile.mkdtemp(prefix="gantry-bench-", dir="/var/tmp"))
    proc, host = start_registry(workdir)
    ref = f"{host}/{LARGE_NAME if args.large else NAME}:{TAG}"
    times: dict[str, list[float]] = {"gantry": [], "podman": [], "floor": []}
    cpus: dict[str, list[float]] = {"gantry": [], "podman": [], "floor": []}
    try:
        sh(
            [
                "skopeo",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                f"oci:{layout}:{TAG}",
                f"docker://{ref}",
            ]
        )
        contenders = list(times)
        for round_no in range(args.rounds):
            order = contenders[round_no % 3 :] + contenders[: round_no % 3]
            for name in order:
                work = workdir / f"{name}-{round_no}"
                work.mkdir()
                elapsed, cpu = one_pull(name, ref, host, layers, work)
                times[name].append(elapsed)
                cpus[name].append(cpu)
                if name == "floor" and not files:
                    files = sum(len(f) + len(d) for _, d, f in os.walk(work))
                load = os.getloadavg()[0]
                print(
                    f"round {round_no + 1} {name:6} {elapsed:6.2f}s  "
                    f"cpu {cpu:5.2f}s  load {load:.1f}"
                )
        proc.terminate()
        proc.wait(10)
        report(times, cpus, len(layers), compressed, files, args.large)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        # Last: deleting ~7 GB of trees makes inode creation slow for minutes (see README).
        print(f"\nremoving {workdir} ...", flush=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def report(
    times: dict[str, list[float]],
    cpus: dict[str, list[float]],
    layer_count: int,
    compressed: int,
    files: int,
    large: bool = False,
) -> None:
    contenders = list(times)
    med = {k: statistics.median(v) for k, v in times.items()}
    print()
    print(f"image: {layer_count} layers, {compressed / 1e6:.1f} MB compressed, {files} entries")
    print(f"{'':8}{'median':>9} {'cpu':>7}  rounds (wall seconds)")
    for name in contenders:
        rounds = " ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:8}{med[name]:8.2f}s {statistics.median(cpus[name]):6.2f}s  {rounds}")
    targets = ("0.40", "0.90") if large else ("0.80", "1.20")
    print(f"gantry / podman = {med['gantry'] / med['podman']:.2f}  (target <= {targets[0]})")
    print(f"gantry / floor  = {med['gantry'] / med['floor']:.2f}  (target <= {targets[1]})")
    print(f"gantry peak RSS = {max(PEAK_RSS):.0f} MiB  (target < 300 MiB)")


if __name__ == "__main__":
    sys.exit(main())
