"""A hostile registry: a small http.server that speaks just enough of the distribution API to
serve one image, and can be told to lie (wrong digests, sizes, media types), to send too much,
to redirect, to demand odd authentication, to die mid-blob or to trickle. The real
docker-registry cannot be made to misbehave; this stands in for the malicious peer."""

from __future__ import annotations

import gzip
import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.engine.ocibuild import OCI_CONFIG, OCI_MANIFEST, File, sha, tar_bytes

NAME = "evil/image"


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up mid-answer are the point of these tests: no tracebacks."""


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None  # close the connection after this many body bytes
    length: int | None = None  # Content-Length to claim (default: len(body))
    chunked: bool = False
    trickle: float = 0.0  # seconds between single bytes


Route = Callable[[BaseHTTPRequestHandler], Reply] | Reply


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class Hostile:
    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def do_GET(self) -> None:  # noqa: N802
                hostile.handle(self)

            do_HEAD = do_GET  # noqa: N815

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}{path}"

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        self.seen.append(Seen(req.command, req.path, dict(req.headers.items())))
        route = self.routes.get(req.path.split("?")[0])
        if route is None:
            reply = Reply(404, b'{"errors":[{"code":"NOT_FOUND","message":"nope"}]}')
        else:
            reply = route(req) if callable(route) else route
        req.send_response(reply.status)
        for key, value in reply.headers.items():
            req.send_header(key, value)
        if reply.chunked:
            req.send_header("Transfer-Encoding", "chunked")
        else:
            length = len(reply.body) if reply.length is None else reply.length
            req.send_header("Content-Length", str(length))
        req.end_headers()
        if req.command == "HEAD":
            return
        body = reply.body if reply.cut_after is None else reply.body[: reply.cut_after]
        try:
            if reply.trickle:
                for i in range(len(body)):
                    req.wfile.write(body[i : i + 1])
                    req.wfile.flush()
                    time.sleep(reply.trickle)
            elif reply.chunked:
                for i in range(0, len(body), 65536):
                    part = body[i : i + 65536]
                    req.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                req.wfile.write(b"0\r\n\r\n")
            else:
                req.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if reply.cut_after is not None:
            req.close_connection = True

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- an image -------------------------------------------------------------------------------
    def serve_image(
        self,
        *,
        tag: str = "1",
        tar: bytes | None = None,
        layer: bytes | None = None,
        manifest_edit: Callable[[dict[str, Any]], None] | None = None,
        name: str = NAME,
    ) -> dict[str, Any]:
        """Serve a one-layer image (``tar``, gzipped; ``layer`` replaces the blob but not the
        config's diff id); returns its parts (blob bytes, config, manifest)."""
        tar = tar or tar_bytes([File("hello", b"hello\n" * 1000), File("etc/motd", "hostile\n")])
        blob = layer if layer is not None else gzip.compress(tar, mtime=0)
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [sha(tar)]},
                "config": {"Cmd": ["/hello"]},
            }
        ).encode()
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha(config), "size": len(config)},
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha(blob),
                    "size": len(blob),
                }
            ],
        }
        if manifest_edit:
            manifest_edit(manifest)
        raw = json.dumps(manifest).encode()
        headers = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha(raw)}
        self.routes[f"/v2/{name}/manifests/{tag}"] = Reply(body=raw, headers=headers)
        self.routes[f"/v2/{name}/manifests/{sha(raw)}"] = Reply(body=raw, headers=headers)
        self.routes[f"/v2/{name}/blobs/{sha(config)}"] = Reply(body=config)
        self.routes[f"/v2/{name}/blobs/{sha(blob)}"] = Reply(body=blob)
        self.routes["/v2/"] = Reply(body=b"{}")
        return {"blob": blob, "config": config, "manifest": raw, "tar": tar, "name": name}

    def ref(self, tag: str = "1", name: str = NAME) -> str:
        return f"{self.host}/{name}:{tag}"


def self_signed(tmp: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A throwaway certificate (for the TLS cases)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / f"{name}-{id(key)}.crt", tmp / f"{name}-{id(key)}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
