"""Real registries for pull tests: Debian's docker-registry (distribution 2.8) on loopback,
started once per session with a temp storage dir, in three flavours sharing that storage:

- ``registry``: open, plain http (what a local mirror looks like);
- ``auth_registry``: htpasswd basic auth (user "gantry", password "s3cret-pass");
- ``token_registry``: the Docker token flow: a token service (a small http server in this
  process, signing ES256 JWTs with an x5c chain the registry trusts) that hands anonymous
  pull tokens for public repositories and demands basic credentials for ``private/*``.

Images are pushed with skopeo (a real client) through the open one.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

DOCKER_REGISTRY = "/usr/bin/docker-registry"
USER, PASSWORD = "gantry", "s3cret-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    host: str
    proc: subprocess.Popen[bytes]
    storage: Path
    workdir: Path
    token_log: list[dict[str, Any]] = field(default_factory=list)

    def ref(self, name: str) -> str:
        return f"{self.host}/{name}"

    def push(self, layout: Path, tag: str, name: str, *, all_: bool = False, fmt: str = "") -> None:
        argv = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
        if all_:
            argv.append("--all")
        if fmt:
            argv += ["--format", fmt]
        argv += [f"oci:{layout}:{tag}", f"docker://{self.host}/{name}"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start_registry(
    workdir: Path, storage: Path, *, auth: dict[str, Any] | None = None, port: int = 0
) -> Registry:
    port = port or free_port()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": uuid.uuid4().hex},
    }
    if auth:
        config["auth"] = auth
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"config-{port}.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    log = open(workdir / f"registry-{port}.log", "wb")  # noqa: SIM115 (the registry owns it)
    proc = subprocess.Popen(
        [DOCKER_REGISTRY, "serve", str(path)], stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    deadline = time.monotonic() + 15
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except requests.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(
                    "docker-registry did not start: "
                    + (workdir / f"registry-{port}.log").read_text()
                ) from None
            time.sleep(0.05)
    return Registry(f"127.0.0.1:{port}", proc, storage, workdir)


def htpasswd_line(user: str, password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    # bcrypt: the only hash docker-registry's htpasswd accepts.
    salt = crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)  # noqa: S324 (cheap for tests)
    return f"{user}:{crypt.crypt(password, salt)}\n"


# -- the token service ---------------------------------------------------------------------------


class TokenService:
    """A Docker token service: /token?service=&scope=repository:NAME:pull[,push]."""

    def __init__(self, workdir: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gantry test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = workdir / "token-ca.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.requests: list[dict[str, Any]] = []
        self.port = free_port()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_GET(self) -> None:  # noqa: N802
                service.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        query = parse_qs(urlsplit(req.path).query)
        auth = req.headers.get("Authorization", "")
        self.requests.append({"path": req.path, "authorization": auth})
        user = ""
        if auth.startswith("Basic "):
            got = base64.b64decode(auth[6:]).decode(errors="replace")
            if got != f"{USER}:{PASSWORD}":
                req.send_response(401)
                req.end_headers()
                return
            user = USER
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            repo, _, actions = rest.rpartition(":")
            if repo.startswith("private/") and not user:
                req.send_response(401)
                req.end_headers()
                return
            access.append({"type": kind, "name": repo, "actions": actions.split(",")})
        body = json.dumps({"token": self.sign(user, access), "expires_in": 300}).encode()
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    def sign(self, subject: str, access: list[dict[str, Any]]) -> str:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        now = int(time.time())
        claims = {
            "iss": "gantry-test-issuer",
            "sub": subject,
            "aud": "gantry-test",
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(
            self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def registry_workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gantry-registry-"))
    (path / "storage").mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def registry(registry_workdir: Path) -> Iterator[Registry]:
    """An open docker-registry on a free loopback port."""
    if not os.path.exists(DOCKER_REGISTRY):
        pytest.skip("docker-registry is not installed (apt install docker-registry)")
    reg = start_registry(registry_workdir, registry_workdir / "storage")
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def auth_registry(registry: Registry, registry_workdir: Path) -> Iterator[Registry]:
    """The same storage behind htpasswd basic auth."""
    htpasswd = registry_workdir / "htpasswd"
    htpasswd.write_text(htpasswd_line(USER, PASSWORD))
    auth = {"htpasswd": {"realm": "gantry-test", "path": str(htpasswd)}}
    reg = start_registry(registry_workdir, registry.storage, auth=auth)
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def token_registry(registry: Registry, registry_workdir: Path) -> Iterator[Registry]:
    """The same storage behind the Docker token flow (see TokenService)."""
    tokens = TokenService(registry_workdir)
    auth = {
        "token": {
            "realm": tokens.realm,
            "service": "gantry-test",
            "issuer": "gantry-test-issuer",
            "rootcertbundle": str(tokens.bundle),
        }
    }
    reg = start_registry(registry_workdir, registry.storage, auth=auth)
    reg.token_log = tokens.requests
    yield reg
    reg.stop()
    tokens.stop()


# -- images pushed once per session -------------------------------------------------------------


@dataclass
class PushedImages:
    """What tests pull (names relative to any of the registries above)."""

    layout: Path
    built: dict[str, Any]

    OCI = "test/busybox:oci"
    SCHEMA2 = "test/busybox:v2s2"
    MULTI = "test/multi:1"
    ZSTD = "test/zstd:1"
    WHITEOUTS = "test/whiteouts:1"
    PRIVATE = "private/busybox:1"


def whiteout_layers() -> list[list[Any]]:
    """Three layers that exercise whiteouts, opaque directories and hardlinks across dirs."""
    from tests.engine.ocibuild import Dir, File, Hardlink, Opaque, Symlink, Whiteout

    base = [
        Dir("etc"),
        Dir("etc/conf"),
        File("etc/conf/old", "old\n"),
        File("etc/keep", "keep\n", mode=0o600, uid=1000, gid=1000),
        File("gone", "to be whited out\n"),
        Dir("opaque"),
        File("opaque/lower", "lower\n"),
        Dir("lib"),
        File("lib/shared", "shared content\n", mode=0o755),
        Symlink("lib/link", "shared"),
        Dir("srv", mode=0o2775, gid=50),
    ]
    second = [
        Whiteout("gone"),
        Dir("opaque"),
        Opaque("opaque"),
        File("opaque/upper", "upper\n"),
        Dir("etc"),
        Whiteout("etc/conf"),
        Dir("etc/conf"),
        File("etc/conf/new", "new\n"),
        Dir("usr"),
        Dir("usr/bin"),
        File("usr/bin/tool", "#!/bin/sh\necho tool\n", mode=0o4755),
        Dir("sbin"),
        Hardlink("sbin/tool", "usr/bin/tool"),
    ]
    third = [Dir("lib"), Whiteout("lib/link"), File("lib/added", "added\n"), Dir("empty")]
    return [base, second, third]


@pytest.fixture(scope="session")
def pushed_images(registry: Registry, registry_workdir: Path) -> PushedImages:
    from tests.engine.ocibuild import Dir, File, Layout, busybox_layer

    layout = Layout(registry_workdir / "oci")
    extra = [Dir("etc"), File("etc/motd", "hello from gantry\n"), Dir("home"), File("home/x", "x")]
    built: dict[str, Any] = {}
    built["oci"] = layout.image([busybox_layer(), extra], tag="oci")
    registry.push(layout.path, "oci", PushedImages.OCI)
    registry.push(layout.path, "oci", PushedImages.SCHEMA2, fmt="v2s2")
    registry.push(layout.path, "oci", PushedImages.PRIVATE)
    arm = layout.image([[Dir("etc"), File("etc/arch", "arm64\n")]], arch="arm64", variant="v8")
    built["arm64"] = arm
    built["multi"] = layout.index([built["oci"].manifest, arm.manifest], tag="multi")
    registry.push(layout.path, "multi", PushedImages.MULTI, all_=True)
    built["zstd"] = layout.image([busybox_layer(), extra], tag="zstd", compression=["zstd", "zstd"])
    registry.push(layout.path, "zstd", PushedImages.ZSTD)
    built["whiteouts"] = layout.image(whiteout_layers(), tag="whiteouts")
    registry.push(layout.path, "whiteouts", PushedImages.WHITEOUTS)
    return PushedImages(layout.path, built)
