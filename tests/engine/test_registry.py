"""The registry client against a hostile registry (tests/engine/hostile.py): every lie is a
clear error, no credential leaks, and nothing is left half-stored (docs/security.md B1-B10,
G1, G4)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.core import Engine
from engine.errors import EngineError, InvalidImageError, RegistryError
from engine.images.service import Images
from engine.registry import blobs
from engine.registry import client as registry_mod
from engine.registry.credentials import Credentials
from engine.registry.manifests import DOCKER_V1, OCI_INDEX
from tests.engine.hostile import NAME, Hostile, Reply, self_signed
from tests.engine.ocibuild import File, sha, tar_bytes


@pytest.fixture
def evil() -> Iterator[Hostile]:
    server = Hostile()
    yield server
    server.stop()


@pytest.fixture
def other() -> Iterator[Hostile]:
    """A second server: a "CDN", a token realm or an attacker's host."""
    server = Hostile()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_mod, "BACKOFF_MAX", 0.01)


def pull(engine: Engine, ref: str, **kw: Any) -> Any:
    return engine.get(Images).pull(ref, tls_verify=False, **kw)


def nothing_stored(engine: Engine) -> bool:
    root = engine.config.root
    return all(
        not list((root / sub).iterdir()) for sub in ("images", "layers", "blobs/sha256", "tmp")
    )


def test_it_pulls_from_the_hostile_server_when_it_behaves(engine: Engine, evil: Hostile) -> None:
    evil.serve_image()
    image = pull(engine, evil.ref())
    assert image.names == [evil.ref()]


def test_manifest_digest_mismatch_is_refused(engine: Engine, evil: Hostile) -> None:
    parts = evil.serve_image()
    lie = sha(parts["manifest"] + b" ")
    evil.routes[f"/v2/{NAME}/manifests/{lie}"] = Reply(
        body=parts["manifest"], headers={"Content-Type": json.loads(parts["manifest"])["mediaType"]}
    )
    with pytest.raises(InvalidImageError, match="manifest digest mismatch"):
        pull(engine, f"{evil.host}/{NAME}@{lie}")
    evil.routes[f"/v2/{NAME}/manifests/1"].headers["Docker-Content-Digest"] = lie  # type: ignore[union-attr]
    with pytest.raises(InvalidImageError, match="Docker-Content-Digest"):
        pull(engine, evil.ref())
    assert nothing_stored(engine)


def test_blob_digest_mismatch_stores_nothing(engine: Engine, evil: Hostile) -> None:
    parts = evil.serve_image()
    blob = bytearray(parts["blob"])
    blob[-9] ^= 0x01  # inside the gzip trailer: the tar still parses, the digest does not match
    evil.routes[f"/v2/{NAME}/blobs/{sha(parts['blob'])}"] = Reply(body=bytes(blob))
    with pytest.raises(InvalidImageError, match="digest mismatch|decompress"):
        pull(engine, evil.ref())
    assert nothing_stored(engine)


def test_wrong_sizes_are_refused(engine: Engine, evil: Hostile) -> None:
    parts = evil.serve_image()
    route = f"/v2/{NAME}/blobs/{sha(parts['blob'])}"
    evil.routes[route] = Reply(body=parts["blob"] + b"\0")
    with pytest.raises(InvalidImageError, match="size mismatch"):
        pull(engine, evil.ref())
    assert nothing_stored(engine)


def test_a_wrong_diff_id_is_refused(engine: Engine, evil: Hostile) -> None:
    tar = tar_bytes([File("a", b"different")])
    blob = gzip.compress(tar, mtime=0)
    evil.serve_image(layer=blob)  # the config still names the default layer's diff id
    with pytest.raises(InvalidImageError, match="diff_id mismatch"):
        pull(engine, evil.ref())
    assert nothing_stored(engine)


@pytest.mark.parametrize(
    ("edit", "content_type", "message"),
    [
        (lambda m: m.update(manifests=[]), None, "both manifests and layers"),
        (lambda m: None, OCI_INDEX, "does not match Content-Type"),
        (lambda m: m.update(schemaVersion=1, mediaType=DOCKER_V1[1]), DOCKER_V1[1], "schema 1"),
        (lambda m: m["layers"][0].update(digest="sha256:../../x"), None, "not a sha256 digest"),
        (lambda m: m["layers"][0].update(digest="sha256:" + "A" * 64), None, "sha256 digest"),
        (lambda m: m["layers"][0].update(mediaType="text/html"), None, "unsupported"),
        (lambda m: m["config"].update(size=-1), None, "size"),
    ],
    ids=[
        "manifests-and-layers",
        "mediatype-vs-content-type",
        "schema1",
        "digest-path",
        "upper",
        "type",
        "neg",
    ],
)
def test_ambiguous_or_unsafe_manifests_are_refused(
    engine: Engine, evil: Hostile, edit: Any, content_type: str | None, message: str
) -> None:
    evil.serve_image(manifest_edit=edit)
    if content_type:
        evil.routes[f"/v2/{NAME}/manifests/1"].headers["Content-Type"] = content_type  # type: ignore[union-attr]
    with pytest.raises(InvalidImageError, match=message):
        pull(engine, evil.ref())
    assert not any(".." in s.path for s in evil.seen)
    assert nothing_stored(engine)


def test_huge_manifests_are_capped(engine: Engine, evil: Hostile) -> None:
    evil.serve_image()
    route = f"/v2/{NAME}/manifests/1"
    big = b'{"schemaVersion": 2, "pad": "' + b"x" * (50 * 1024 * 1024) + b'"}'
    evil.routes[route] = Reply(body=big)
    with pytest.raises(RegistryError, match="larger than 4194304"):
        pull(engine, evil.ref())
    evil.routes[route] = Reply(body=big[: 6 * 1024 * 1024], chunked=True)  # no length to trust
    with pytest.raises(RegistryError, match="larger than 4194304"):
        pull(engine, evil.ref())
    assert nothing_stored(engine)


def test_indexes_have_depth_and_count_limits(engine: Engine, evil: Hostile) -> None:
    parts = evil.serve_image()
    platform = {"os": "linux", "architecture": "amd64"}
    desc = {
        "mediaType": json.loads(parts["manifest"])["mediaType"],
        "digest": sha(parts["manifest"]),
        "size": len(parts["manifest"]),
        "platform": platform,
    }
    # Content addressing makes a loop impossible to serve (a document cannot hold its own
    # digest), so what a hostile registry can do is nest deep.
    for _ in range(5):
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc]})
        raw = body.encode()
        evil.routes[f"/v2/{NAME}/manifests/{sha(raw)}"] = Reply(
            body=raw, headers={"Content-Type": OCI_INDEX}
        )
        desc = {"mediaType": OCI_INDEX, "digest": sha(raw), "size": len(raw), "platform": platform}
    evil.routes[f"/v2/{NAME}/manifests/deep"] = Reply(body=raw, headers={"Content-Type": OCI_INDEX})
    with pytest.raises(InvalidImageError, match="nested more than 3 deep"):
        pull(engine, evil.ref("deep"))
    many = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc] * 10_000}
    evil.routes[f"/v2/{NAME}/manifests/many"] = Reply(
        body=json.dumps(many).encode(), headers={"Content-Type": OCI_INDEX}
    )
    with pytest.raises(InvalidImageError, match="more than 1024"):
        pull(engine, evil.ref("many"))
    assert nothing_stored(engine)


def _challenge(realm: str) -> Reply:
    return Reply(401, b"{}", headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="evil"'})


@pytest.mark.parametrize(
    "realm",
    ["foreign-http", "http://169.254.169.254/token", "https://169.254.169.254/t", "ftp://x/"],
)
def test_token_realms_are_checked_before_any_credential_leaves(
    engine: Engine, evil: Hostile, other: Hostile, realm: str
) -> None:
    parts = evil.serve_image()
    if realm == "foreign-http":
        realm = f"http://localhost:{other.port}/token"  # another host name, plain http
    evil.routes[f"/v2/{NAME}/manifests/1"] = _challenge(realm)
    engine.get(Credentials).set(evil.host, "alice", "secret")
    with pytest.raises(RegistryError, match="refusing|refused"):
        pull(engine, evil.ref())
    assert other.seen == []
    assert parts


def test_bearer_tokens_are_bounded(engine: Engine, evil: Hostile) -> None:
    evil.serve_image()
    evil.routes[f"/v2/{NAME}/manifests/1"] = _challenge(evil.url("/token"))
    evil.routes["/token"] = Reply(body=b'{"token": "' + b"t" * (2 * 1024 * 1024) + b'"}')
    with pytest.raises(RegistryError, match="token: larger than"):
        pull(engine, evil.ref())


def test_redirects_never_carry_authorization_to_another_host(
    engine: Engine, evil: Hostile, other: Hostile
) -> None:
    parts = evil.serve_image()
    blob_route = f"/v2/{NAME}/blobs/{sha(parts['blob'])}"

    def authed(reply: Reply) -> Any:
        def route(req: Any) -> Reply:
            if req.headers.get("Authorization") != "Basic YWxpY2U6c2VjcmV0":
                return Reply(401, b"{}", headers={"WWW-Authenticate": 'Basic realm="evil"'})
            return reply

        return route

    for path, reply in list(evil.routes.items()):
        evil.routes[path] = authed(reply)  # type: ignore[arg-type]
    evil.routes[blob_route] = authed(Reply(307, headers={"Location": other.url("/cdn/blob")}))
    other.routes["/cdn/blob"] = Reply(body=parts["blob"])
    engine.get(Credentials).set(evil.host, "alice", "secret")
    image = pull(engine, evil.ref())
    assert image.id == sha(parts["config"])
    cdn = [s for s in other.seen if s.path == "/cdn/blob"]
    assert cdn and all("Authorization" not in s.headers for s in cdn)
    assert any("Authorization" in s.headers for s in evil.seen)


@pytest.mark.parametrize(
    "target",
    ["http://169.254.169.254/latest/meta-data", "file:///etc/passwd", "http://localhost:1/x"],
)
def test_redirects_to_forbidden_places_are_refused(
    engine: Engine, evil: Hostile, target: str
) -> None:
    parts = evil.serve_image()
    evil.routes[f"/v2/{NAME}/blobs/{sha(parts['blob'])}"] = Reply(307, headers={"Location": target})
    with pytest.raises(RegistryError, match="refus"):
        pull(engine, evil.ref())
    assert nothing_stored(engine)


def test_foreign_layers_are_fetched_without_credentials(
    engine: Engine, evil: Hostile, other: Hostile
) -> None:
    parts = evil.serve_image(
        manifest_edit=lambda m: m["layers"][0].update(urls=[other.url("/foreign")])
    )
    del evil.routes[f"/v2/{NAME}/blobs/{sha(parts['blob'])}"]
    other.routes["/foreign"] = Reply(body=parts["blob"])
    engine.get(Credentials).set(evil.host, "alice", "secret")
    pull(engine, evil.ref())
    assert [s for s in other.seen if s.path == "/foreign"]
    assert all("Authorization" not in s.headers for s in other.seen)


def test_a_dropped_blob_resumes_with_range(engine: Engine, evil: Hostile) -> None:
    parts = evil.serve_image(tar=tar_bytes([File("big", bytes(range(256)) * 8192)]))
    blob = parts["blob"]
    route = f"/v2/{NAME}/blobs/{sha(blob)}"
    calls: list[str] = []

    def flaky(req: Any) -> Reply:
        rng = req.headers.get("Range", "")
        calls.append(rng)
        if not rng:
            return Reply(body=blob, cut_after=len(blob) // 3)
        start = int(rng.removeprefix("bytes=").rstrip("-"))
        return Reply(
            206,
            blob[start:],
            headers={"Content-Range": f"bytes {start}-{len(blob) - 1}/{len(blob)}"},
        )

    evil.routes[route] = flaky
    pull(engine, evil.ref())
    assert calls[0] == "" and calls[1].startswith("bytes=")


def test_a_registry_that_dies_mid_blob_is_a_clear_error(engine: Engine, evil: Hostile) -> None:
    parts = evil.serve_image()
    route = f"/v2/{NAME}/blobs/{sha(parts['blob'])}"
    evil.routes[route] = Reply(body=parts["blob"], cut_after=100)
    with pytest.raises(RegistryError, match="download failed after 4 retries"):
        pull(engine, evil.ref())
    assert nothing_stored(engine)


def test_a_trickling_registry_is_given_up(
    engine: Engine, evil: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blobs, "STALL_WINDOW", 0.3)
    parts = evil.serve_image()
    evil.routes[f"/v2/{NAME}/blobs/{sha(parts['blob'])}"] = Reply(body=parts["blob"], trickle=0.05)
    with pytest.raises(RegistryError, match="too slow"):
        pull(engine, evil.ref())


def test_503_is_retried(engine: Engine, evil: Hostile) -> None:
    parts = evil.serve_image()
    route = f"/v2/{NAME}/manifests/1"
    good = evil.routes[route]
    assert isinstance(good, Reply)
    answers = iter([Reply(503, b"{}"), good])
    evil.routes[route] = lambda req: next(answers)
    assert pull(engine, evil.ref()).id == sha(parts["config"])


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_insecure_tls_does_not_stick_to_other_hosts(engine: Engine, tmp_path: Path) -> None:
    """CVE-2024-35195: verify=False for registry B must not leak to A's connections."""
    b = Hostile(tls=self_signed(tmp_path, "registry-b"))
    a = Hostile(tls=self_signed(tmp_path, "cdn-a"))
    try:
        parts = b.serve_image()
        a.routes["/blob"] = Reply(body=parts["blob"])
        b.routes[f"/v2/{NAME}/blobs/{sha(parts['blob'])}"] = Reply(
            307, headers={"Location": a.url("/blob")}
        )
        with pytest.raises(RegistryError, match="TLS verification failed"):
            pull(engine, b.ref())  # B is insecure by the user's choice; A is not
        assert any(s.path.startswith("/v2/") for s in b.seen)
        with pytest.raises(RegistryError, match="TLS verification failed"):
            engine.get(Images).pull(b.ref(), tls_verify=True)
    finally:
        a.stop()
        b.stop()
    assert nothing_stored(engine)


def test_errors_are_one_line(engine: Engine, evil: Hostile) -> None:
    evil.serve_image()
    evil.routes[f"/v2/{NAME}/manifests/1"] = Reply(
        403, b'{"errors":[{"code":"DENIED","message":"no"}]}'
    )
    with pytest.raises(EngineError) as err:
        pull(engine, evil.ref())
    assert "access denied" in err.value.message and "\n" not in err.value.message


def test_only_the_registry_module_imports_requests() -> None:
    engine_dir = Path(__file__).resolve().parents[2] / "engine"
    offenders = [
        str(p.relative_to(engine_dir))
        for p in engine_dir.rglob("*.py")
        if p.relative_to(engine_dir) != Path("registry/client.py")
        and any(
            line.strip().startswith(("import requests", "from requests", "import urllib3"))
            for line in p.read_text().splitlines()
        )
    ]
    assert offenders == []


def test_a_redirect_target_cannot_ask_for_the_credentials(
    engine: Engine, evil: Hostile, other: Hostile
) -> None:
    parts = evil.serve_image()
    realm = Hostile()
    try:
        evil.routes[f"/v2/{NAME}/blobs/{sha(parts['blob'])}"] = Reply(
            307, headers={"Location": other.url("/cdn")}
        )
        other.routes["/cdn"] = _challenge(realm.url("/token"))
        engine.get(Credentials).set(evil.host, "alice", "secret")
        with pytest.raises(RegistryError, match="access denied"):
            pull(engine, evil.ref())
        assert realm.seen == []
        assert all("Authorization" not in s.headers for s in other.seen)
    finally:
        realm.stop()


def test_link_local_registries_are_refused(engine: Engine) -> None:
    with pytest.raises(RegistryError, match="link-local"):
        pull(engine, "169.254.169.254/latest:1")


def test_credentials_go_to_no_token_service_of_another_domain(
    engine: Engine, evil: Hostile
) -> None:
    """An https realm on any public host passed the address checks; the registry's password
    went with it. Only the registry's host (or its domain) gets them now."""
    evil.serve_image()
    evil.routes[f"/v2/{NAME}/manifests/1"] = _challenge("https://auth.example.org/token")
    engine.get(Credentials).set(evil.host, "alice", "secret")
    with pytest.raises(RegistryError, match="credentials are not sent there"):
        pull(engine, evil.ref())


@pytest.mark.parametrize(
    ("realm", "registry", "ok"),
    [
        ("auth.docker.io", "registry-1.docker.io", True),
        ("quay.io", "quay.io", True),
        ("127.0.0.1", "127.0.0.1:5000", True),
        ("auth.example.org", "registry.example.com", False),
        ("evil.io", "docker.io", False),
        ("127.0.0.2", "127.0.0.1:5000", False),
        ("0.1", "127.0.0.1", False),
        ("", "quay.io", False),
    ],
)
def test_same_site(realm: str, registry: str, ok: bool) -> None:
    from engine.registry.auth import same_site

    assert same_site(realm, registry) is ok
