"""The OCI distribution API client: the only module that imports requests.

Rules it keeps (docs/security.md 1.4):
- ``trust_env=False`` (no .netrc, no proxy variables: CVE-2024-47081, CVE-2023-32681).
- One requests.Session per (scheme, host, verify) so a ``verify=False`` connection of one
  registry is never reused for another (CVE-2024-35195). TLS verification is off only for the
  registry the user marked insecure; then https is tried first and plain http after it.
- Redirects are followed by hand: Authorization never crosses a host boundary (a blob 307 to
  a CDN goes without it), a downgrade to http is refused (unless it is the insecure registry
  itself), and link-local or metadata addresses are never contacted.
- The WWW-Authenticate realm must be https, or the registry's own host when the registry is
  insecure; never a link-local address. Credentials go to the registry and its token realm
  only; foreign-layer ``urls`` are fetched without them.
- Every body is read with a cap (4 MiB manifests, 1 MiB token answers, 64 KiB error bodies),
  every request has a connect and a read timeout, and a blob that trickles is abandoned.
- Manifests fetched by digest are verified; blobs are verified for size and digest in-stream,
  resumed with Range after a dropped connection, retried with a bounded backoff.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from engine import digests, manifests
from engine.errors import EngineError, InvalidImageError, RegistryError
from engine.manifests import Descriptor, Document

log = logging.getLogger("gantry.engine.registry")
# verify=False is only ever used for a registry the user marked insecure, on purpose.
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
MAX_TOKEN_BODY = 1024 * 1024
MAX_ERROR_BODY = 64 * 1024
MAX_REDIRECTS = 5
RETRIES = 4  # per blob (each retry resumes where the last one stopped)
API_RETRIES = 2  # per API request: a dead registry is reported within seconds
BACKOFF_MAX = 8.0
CHUNK = 1024 * 1024
# A blob that delivers less than this many bytes in STALL_WINDOW seconds is given up on.
STALL_WINDOW = 60.0
STALL_MIN_BYTES = 16 * 1024
USER_AGENT = "gantry/0.1 (+python-requests)"
_METADATA_IPS = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
    ipaddress.ip_address("192.0.0.192"),
}
_TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)
Credentials = tuple[str, str]


class Cancelled(EngineError):
    code = "invalid_state"


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return ip


def _is_forbidden(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip in _METADATA_IPS or ip.is_link_local or ip.is_unspecified or ip.is_multicast


def _is_private(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_private or ip.is_loopback or ip.is_reserved


def _addresses(hostname: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    literal = _ip_literal(hostname)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []  # the request itself will fail with a clear error
    out = []
    for info in infos:
        try:
            out.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        except ValueError:
            continue
    return out


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """('bearer'|'basic'|..., params) from a WWW-Authenticate header (first challenge)."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for match in re.finditer(
        r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))', rest
    ):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)[:2048]
    return scheme.lower(), params


def _error_message(resp: requests.Response) -> str:
    """The registry's own words from an error body ({"errors": [{"code", "message"}]})."""
    try:
        data = _read_capped(resp, MAX_ERROR_BODY, "error body", strict=False)
        body = json.loads(data)
        errors = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            code = str(errors[0].get("code", ""))[:60]
            message = str(errors[0].get("message", ""))[:200]
            return f"{code.lower()}: {message}" if code else message
    except (ValueError, EngineError, *_TRANSIENT):
        pass
    return resp.reason.lower() if resp.reason else ""


def _read_capped(resp: requests.Response, cap: int, what: str, *, strict: bool = True) -> bytes:
    """Read a whole body but never more than cap bytes (RegistryError past it when strict)."""
    length = resp.headers.get("Content-Length")
    if strict and length and length.isdigit() and int(length) > cap:
        resp.close()
        raise RegistryError(f"{what}: larger than {cap} bytes", status=resp.status_code)
    out = bytearray()
    deadline = time.monotonic() + READ_TIMEOUT * 2
    try:
        for chunk in resp.raw.stream(65536, decode_content=False):
            out += chunk
            if len(out) > cap:
                if not strict:
                    return bytes(out[:cap])
                raise RegistryError(f"{what}: larger than {cap} bytes", status=resp.status_code)
            if time.monotonic() > deadline:
                raise RegistryError(f"{what}: the registry is too slow", permanent=False)
    finally:
        resp.close()
    return bytes(out)


class Client:
    """A client for one registry (one pull, login or probe). Thread-safe for parallel blobs.

    ``domain`` is the reference's registry (docker.io, 127.0.0.1:5000); ``api_host`` where its
    API lives. ``insecure`` turns off TLS verification for that host only."""

    def __init__(
        self,
        domain: str,
        api_host: str,
        *,
        insecure: bool = False,
        credentials: Credentials | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.domain = domain
        self.host = api_host.lower()
        self.hostname = urlsplit(f"//{self.host}").hostname or self.host
        self.insecure = insecure
        self.credentials = credentials
        self.cancel = cancel or threading.Event()
        self._sessions: dict[tuple[str, str, bool], requests.Session] = {}
        self._auth: dict[str, str] = {}
        self._lock = threading.Lock()
        self._scheme: str | None = None if insecure else "https"
        addresses = _addresses(self.hostname)
        self._local = bool(addresses) and all(_is_private(ip) for ip in addresses)
        if any(_is_forbidden(ip) for ip in addresses):
            raise RegistryError(f"registry {domain}: link-local and metadata addresses refused")

    # -- plumbing ---------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _session(self, scheme: str, netloc: str, verify: bool) -> requests.Session:
        key = (scheme, netloc.lower(), verify)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                session = requests.Session()
                session.trust_env = False
                session.verify = verify
                session.headers["User-Agent"] = USER_AGENT
                adapter = HTTPAdapter(pool_connections=2, pool_maxsize=16, max_retries=0)
                session.mount(f"{scheme}://", adapter)
                self._sessions[key] = session
            return session

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("pull cancelled")

    def _is_registry(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme == self.scheme and parts.netloc.lower() == self.host

    def check_target(self, url: str, *, what: str) -> None:
        """Refuse URLs Gantry must never contact (see the module docstring)."""
        parts = urlsplit(url)
        hostname = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https"):
            raise RegistryError(f"{what}: scheme {parts.scheme[:20]!r} refused")
        if not hostname:
            raise RegistryError(f"{what}: {url[:120]!r} has no host (refused)")
        same_host = hostname == self.hostname
        if parts.scheme == "http" and not (self.insecure and same_host):
            raise RegistryError(f"{what}: refusing plain http to {hostname}")
        if same_host:
            return
        for ip in _addresses(hostname):
            if _is_forbidden(ip):
                raise RegistryError(f"{what}: refusing link-local/metadata address {ip}")
            if _is_private(ip) and not self._local:
                raise RegistryError(f"{what}: refusing private address {ip} for {hostname}")

    @property
    def scheme(self) -> str:
        if self._scheme is None:
            self._scheme = self._probe_scheme()
        return self._scheme

    def _probe_scheme(self) -> str:
        """Insecure registries: https without verification if it answers, else http."""
        session = self._session("https", self.host, False)
        try:
            resp = session.get(
                f"https://{self.host}/v2/",
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                allow_redirects=False,
                stream=True,
            )
            resp.close()
            return "https"
        except requests.exceptions.SSLError:
            return "http"
        except requests.ConnectionError:
            return "http"

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        authorization: str | None,
        *,
        what: str,
    ) -> requests.Response:
        """One request, following redirects by hand (see the module docstring)."""
        for _ in range(MAX_REDIRECTS + 1):
            self._check_cancel()
            parts = urlsplit(url)
            own = self._is_registry(url)
            if not own:
                self.check_target(url, what=what)
            send = dict(headers)
            if own and authorization:
                send["Authorization"] = authorization
            verify = not (self.insecure and parts.netloc.lower() == self.host)
            session = self._session(parts.scheme, parts.netloc, verify)
            try:
                resp = session.request(
                    method,
                    url,
                    headers=send,
                    stream=True,
                    allow_redirects=False,
                    timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                    verify=verify,
                )
            except requests.exceptions.SSLError as err:
                raise RegistryError(
                    f"{what}: TLS verification failed for {parts.hostname} (use "
                    "--tls-verify=false only for a registry you trust)",
                    status=0,
                ) from err
            if resp.status_code in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                location = resp.headers["Location"]
                resp.close()
                url = urljoin(url, location)
                continue
            return resp
        raise RegistryError(f"{what}: too many redirects")

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        headers: dict[str, str] | None = None,
        what: str,
    ) -> requests.Response:
        """A request to the registry API with authentication handled; raises RegistryError
        when the registry is unreachable (with retries for connection failures)."""
        url = f"{self.scheme}://{self.host}{path}"
        for attempt in range(API_RETRIES + 1):
            try:
                resp = self._authorized(method, url, scope, headers or {}, what)
                if resp.status_code not in (429, 502, 503, 504) or attempt == API_RETRIES:
                    return resp
                resp.close()
                self._backoff(attempt)
            except _TRANSIENT as err:
                if attempt == API_RETRIES:
                    raise RegistryError(
                        f"{what}: cannot reach registry {self.domain}: {_reason(err)}",
                        permanent=False,
                    ) from err
                self._backoff(attempt)
        raise AssertionError("unreachable")

    def _authorized(
        self, method: str, url: str, scope: str, headers: dict[str, str], what: str
    ) -> requests.Response:
        authorization = self._auth.get(scope)
        resp = self._send(method, url, headers, authorization, what=what)
        if resp.status_code != 401 or not self._is_registry(resp.url):
            # Only the registry's own challenges are answered: a redirect target that asks
            # for credentials gets none (they would leave for its realm).
            return resp
        challenge = resp.headers.get("WWW-Authenticate", "")
        resp.close()
        authorization = self._authenticate(challenge, scope, what=what)
        self._auth[scope] = authorization
        return self._send(method, url, headers, authorization, what=what)

    def _backoff(self, attempt: int) -> None:
        delay = min(BACKOFF_MAX, 0.5 * 2**attempt)
        if self.cancel.wait(delay):
            raise Cancelled("pull cancelled")

    # -- authentication ---------------------------------------------------------------------
    def _authenticate(self, challenge: str, scope: str, *, what: str) -> str:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self.credentials:
                raise RegistryError(
                    f"{what}: {self.domain} requires authentication (log in first)", status=401
                )
            user, password = self.credentials
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if scheme != "bearer":
            raise RegistryError(f"{what}: unsupported authentication scheme {scheme[:20]!r}")
        realm = params.get("realm", "")
        self.check_target(realm, what=f"{what}: token realm")
        query = {"service": params["service"]} if "service" in params else {}
        if scope or params.get("scope"):
            query["scope"] = scope or params["scope"]
        url = realm + (("&" if "?" in realm else "?") + urlencode(query) if query else "")
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if self.credentials:
            user, password = self.credentials
            headers["Authorization"] = (
                "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            )
        parts = urlsplit(url)
        verify = not (self.insecure and parts.netloc.lower() == self.host)
        session = self._session(parts.scheme, parts.netloc, verify)
        try:
            resp = session.get(
                url,
                headers=headers,
                stream=True,
                allow_redirects=False,
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                verify=verify,
            )
        except requests.exceptions.SSLError as err:
            raise RegistryError(f"{what}: token service TLS verification failed") from err
        except _TRANSIENT as err:
            raise RegistryError(
                f"{what}: token service unreachable: {_reason(err)}", permanent=False
            ) from err
        if resp.status_code in (401, 403):
            resp.close()
            if self.credentials:
                raise RegistryError(
                    f"{what}: authentication to {self.domain} failed (wrong username or password)",
                    status=401,
                )
            raise RegistryError(f"{what}: {self.domain} requires authentication", status=401)
        if resp.status_code != 200:
            message = _error_message(resp)
            raise RegistryError(f"{what}: token service answered {resp.status_code} {message}")
        body = manifests.load_json(_read_capped(resp, MAX_TOKEN_BODY, "token"), "token answer")
        token = body.get("token") or body.get("access_token")
        if (
            not isinstance(token, str)
            or not token
            or not token.isascii()
            or not token.isprintable()
        ):
            raise RegistryError(f"{what}: the token service sent no usable token")
        return f"Bearer {token}"

    def ping(self) -> None:
        """GET /v2/ with authentication (what login uses to check credentials)."""
        resp = self.request("GET", "/v2/", scope="", what=f"log in to {self.domain}")
        status = resp.status_code
        resp.close()
        if status == 401:
            raise RegistryError(f"log in to {self.domain}: credentials refused", status=401)
        if status >= 400:
            raise RegistryError(
                f"log in to {self.domain}: registry answered {status}", status=status
            )

    # -- manifests and blobs ----------------------------------------------------------------
    def get_manifest(self, repo: str, target: str, *, what: str) -> Document:
        """Fetch an index or manifest by tag or digest, capped at 4 MiB and verified."""
        by_digest = target.startswith("sha256:")
        if by_digest:
            digests.check(target)
        resp = self.request(
            "GET",
            f"/v2/{repo}/manifests/{target}",
            scope=f"repository:{repo}:pull",
            headers={"Accept": manifests.ACCEPT, "Accept-Encoding": "identity"},
            what=what,
        )
        self._raise_for_status(resp, what, "image")
        data = _read_capped(resp, manifests.MAX_MANIFEST, f"{what}: manifest")
        actual = digests.of_bytes(data)
        if by_digest and actual != target:
            raise InvalidImageError(f"{what}: manifest digest mismatch (got {actual})")
        claimed = resp.headers.get("Docker-Content-Digest", "")
        if not by_digest and digests.DIGEST_RE.match(claimed) and claimed != actual:
            raise InvalidImageError(f"{what}: manifest does not match Docker-Content-Digest")
        content_type = resp.headers.get("Content-Type", "")
        return manifests.parse_document(data, content_type, actual, f"{what}: manifest {actual}")

    def _raise_for_status(self, resp: requests.Response, what: str, thing: str) -> None:
        """One sentence for a failed request; ``thing`` is "image" or "blob"."""
        status = resp.status_code
        if status == 200:
            return
        message = _error_message(resp)
        if status == 404:
            if thing == "image":
                raise RegistryError(
                    f"{what}: image not found in {self.domain} (no such repository or tag)",
                    status=404,
                )
            raise RegistryError(f"{what}: not found in {self.domain}", status=404)
        if status in (401, 403):
            raise RegistryError(
                f"{what}: access denied by {self.domain} (the image does not exist or needs "
                "credentials: log in first)",
                status=status,
            )
        if status == 429:
            raise RegistryError(f"{what}: {self.domain} says too many requests", status=429)
        raise RegistryError(
            f"{what}: {self.domain} answered {status} {message}".strip(),
            status=status,
            permanent=status < 500,
        )

    def get_blob_bytes(self, repo: str, desc: Descriptor, cap: int, *, what: str) -> bytes:
        """A small blob (config) read whole, verified for size and digest."""
        if desc.size > cap:
            raise InvalidImageError(f"{what}: {desc.digest} is larger than {cap} bytes")
        reader = BlobReader(self, repo, desc, what=what)
        out = bytearray()
        while chunk := reader.read(CHUNK):
            out += chunk
        return bytes(out)

    def open_blob(
        self,
        repo: str,
        desc: Descriptor,
        *,
        what: str,
        progress: Callable[[int], None] | None = None,
    ) -> BlobReader:
        return BlobReader(self, repo, desc, what=what, progress=progress)


def _reason(err: BaseException) -> str:
    text = str(err)
    for marker in ("Connection refused", "Name or service not known", "timed out", "reset"):
        if marker.lower() in text.lower():
            return marker.lower()
    return type(err).__name__.lower()


class BlobReader:
    """A blob as a stream: read(n) returns verified-so-far bytes; at the end the size and the
    digest are checked (InvalidImageError on a mismatch), so a consumer that reads to EOF has
    read exactly the blob. Dropped connections resume with Range (or skip ahead on a 200)."""

    def __init__(
        self,
        client: Client,
        repo: str,
        desc: Descriptor,
        *,
        what: str,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.client = client
        self.repo = repo
        self.desc = desc
        self.what = f"{what}: blob {desc.digest[:19]}"
        self.progress = progress
        self.offset = 0
        self.hasher = hashlib.sha256()
        self.done = False
        self._resp: requests.Response | None = None
        self._use_urls = False
        self._failures = 0
        self._window = (time.monotonic(), 0)

    def _url(self) -> tuple[str, bool]:
        """(url, is_registry)."""
        if self._use_urls:
            return self.desc.urls[0], False
        client = self.client
        return f"{client.scheme}://{client.host}/v2/{self.repo}/blobs/{self.desc.digest}", True

    def _open(self) -> None:
        headers = {"Accept-Encoding": "identity"}
        if self.offset:
            headers["Range"] = f"bytes={self.offset}-"
        url, own = self._url()
        client = self.client
        if own:
            resp = client._authorized(
                "GET", url, f"repository:{self.repo}:pull", headers, self.what
            )
        else:
            # A foreign layer: no credentials, and only to a host we may contact.
            client.check_target(url, what=self.what)
            resp = client._send("GET", url, headers, None, what=self.what)
        if resp.status_code == 404 and own and self.desc.urls and not self.offset:
            resp.close()
            self._use_urls = True
            return self._open()
        if resp.status_code == 206 and self.offset:
            content_range = resp.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {self.offset}-"):
                resp.close()
                raise RegistryError(f"{self.what}: bad Content-Range {content_range[:60]!r}")
        elif resp.status_code == 200:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) != self.desc.size:
                resp.close()
                raise InvalidImageError(
                    f"{self.what}: size mismatch (registry sends {length} bytes, the manifest "
                    f"says {self.desc.size})"
                )
            if self.offset:
                self._skip(resp, self.offset)
        else:
            client._raise_for_status(resp, self.what, "blob")
        self._resp = resp

    @staticmethod
    def _skip(resp: requests.Response, count: int) -> None:
        """The server ignored Range: throw away what we already have."""
        while count > 0:
            chunk = resp.raw.read1(min(count, CHUNK), decode_content=False)
            if not chunk:
                raise ConnectionError("connection closed while skipping")
            count -= len(chunk)

    def _retry(self, err: BaseException) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None
        self._failures += 1
        if self._failures > RETRIES:
            raise RegistryError(
                f"{self.what}: download failed after {RETRIES} retries: {_reason(err)}",
                permanent=False,
            ) from err
        log.info("%s: retrying at byte %d after %s", self.what, self.offset, err)
        self.client._backoff(self._failures - 1)

    def _check_stall(self, got: int) -> None:
        start, seen = self._window
        seen += got
        now = time.monotonic()
        if now - start >= STALL_WINDOW:
            if seen < STALL_MIN_BYTES:
                raise RegistryError(f"{self.what}: the registry is too slow", permanent=False)
            start, seen = now, 0
        self._window = (start, seen)

    def read(self, n: int = -1) -> bytes:
        if self.done:
            return b""
        if n is None or n < 0:
            n = CHUNK
        while True:
            self.client._check_cancel()
            try:
                if self._resp is None:
                    self._open()
                assert self._resp is not None
                chunk = self._resp.raw.read1(min(n, CHUNK), decode_content=False)
                if not chunk and self.offset < self.desc.size:
                    raise ConnectionError("connection closed before the end of the blob")
            except _TRANSIENT as err:
                self._retry(err)
                continue
            except RegistryError as err:
                if err.permanent:
                    raise
                self._retry(err)
                continue
            self._check_stall(len(chunk))
            if not chunk:
                self._finish()
                return b""
            self.offset += len(chunk)
            if self.offset > self.desc.size:
                self.close()
                raise InvalidImageError(
                    f"{self.what}: size mismatch (more than the {self.desc.size} bytes declared)"
                )
            self.hasher.update(chunk)
            if self.progress is not None:
                self.progress(len(chunk))
            if self.offset == self.desc.size:
                self._finish()
            return chunk

    def _finish(self) -> None:
        """Everything arrived: check size and digest (raises InvalidImageError)."""
        if self.done:
            return
        self.done = True
        self.close()
        if self.offset != self.desc.size:
            raise InvalidImageError(
                f"{self.what}: size mismatch ({self.offset} bytes, {self.desc.size} declared)"
            )
        actual = "sha256:" + self.hasher.hexdigest()
        if actual != self.desc.digest:
            raise InvalidImageError(f"{self.what}: digest mismatch (got {actual})")

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


def redacted(params: dict[str, Any]) -> dict[str, Any]:
    """For logs: never print a password."""
    return {k: ("***" if "pass" in k.lower() else v) for k, v in params.items()}
