"""The OCI distribution API client: the only module that imports requests.

Rules it keeps (docs/security.md 1.4):
- ``trust_env=False`` (no .netrc, no proxy variables: CVE-2024-47081, CVE-2023-32681).
- One requests.Session per (scheme, host, verify) so a ``verify=False`` connection of one
  registry is never reused for another (CVE-2024-35195). TLS verification is off only for the
  registry the user marked insecure; then https is tried first and plain http after it.
- Redirects are followed by hand: Authorization never crosses a host boundary (a blob 307 to
  a CDN goes without it), a downgrade to http is refused (unless it is the insecure registry
  itself), and link-local or metadata addresses are never contacted (engine.registry.hostpolicy).
- The WWW-Authenticate realm must be https, or the registry's own host when the registry is
  insecure; never a link-local address. Credentials go to the registry and its token realm
  only; foreign-layer ``urls`` are fetched without them.
- Every body is read with a cap (4 MiB manifests, 1 MiB token answers, 64 KiB error bodies),
  every request has a connect and a read timeout, and a blob that trickles is abandoned.
- Manifests fetched by digest are verified; blobs are verified for size and digest in-stream,
  resumed with Range after a dropped connection, retried with a bounded backoff
  (engine.registry.blobs, which reads through this client).
"""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from engine.errors import EngineError, InvalidImageError, RegistryError
from engine.hostfs import digests
from engine.registry import hostpolicy, manifests
from engine.registry.auth import (
    Credentials,
    basic_authorization,
    bearer,
    parse_challenge,
    same_site,
    token_url,
)
from engine.registry.manifests import Document

# verify=False is only ever used for a registry the user marked insecure, on purpose.
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
MAX_TOKEN_BODY = 1024 * 1024
MAX_ERROR_BODY = 64 * 1024
MAX_REDIRECTS = 5
API_RETRIES = 2  # per API request: a dead registry is reported within seconds
BACKOFF_MAX = 8.0
USER_AGENT = "gantry/0.1 (+python-requests)"
# What a retry may cure: the connection failed, dropped or timed out.
TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)
Response = (
    requests.Response
)  # for engine.registry.blobs, which reads the bodies this module fetches


class Cancelled(EngineError):
    code = "invalid_state"


def reason(err: BaseException) -> str:
    """A few words for a connection failure ("connection refused", "timed out", ...)."""
    text = str(err)
    for marker in ("Connection refused", "Name or service not known", "timed out", "reset"):
        if marker.lower() in text.lower():
            return marker.lower()
    return type(err).__name__.lower()


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
    except (ValueError, EngineError, *TRANSIENT):
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
        self._local = hostpolicy.check_registry(domain, self.hostname)

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

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("pull cancelled")

    def _is_registry(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme == self.scheme and parts.netloc.lower() == self.host

    def check_target(self, url: str, *, what: str) -> None:
        """Refuse URLs Gantry must never contact (engine.registry.hostpolicy)."""
        hostpolicy.check_url(
            url, what=what, registry=self.hostname, insecure=self.insecure, local=self._local
        )

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

    # -- requests ---------------------------------------------------------------------------
    def _once(self, method: str, url: str, headers: dict[str, str]) -> requests.Response:
        """One request on the session for url's host, streamed, no redirect followed; TLS is
        verified unless url is on the insecure registry's own host."""
        parts = urlsplit(url)
        verify = not (self.insecure and parts.netloc.lower() == self.host)
        session = self._session(parts.scheme, parts.netloc, verify)
        return session.request(
            method,
            url,
            headers=headers,
            stream=True,
            allow_redirects=False,
            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            verify=verify,
        )

    def send(
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
            self.check_cancel()
            own = self._is_registry(url)
            if not own:
                self.check_target(url, what=what)
            send = dict(headers)
            if own and authorization:
                send["Authorization"] = authorization
            try:
                resp = self._once(method, url, send)
            except requests.exceptions.SSLError as err:
                raise RegistryError(
                    f"{what}: TLS verification failed for {urlsplit(url).hostname} (use "
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
                resp = self.authorized(method, url, scope, headers or {}, what)
                if resp.status_code not in (429, 502, 503, 504) or attempt == API_RETRIES:
                    return resp
                resp.close()
                self.backoff(attempt)
            except TRANSIENT as err:
                if attempt == API_RETRIES:
                    raise RegistryError(
                        f"{what}: cannot reach registry {self.domain}: {reason(err)}",
                        permanent=False,
                    ) from err
                self.backoff(attempt)
        raise AssertionError("unreachable")

    def authorized(
        self, method: str, url: str, scope: str, headers: dict[str, str], what: str
    ) -> requests.Response:
        """send() with the authorization for scope, answering the registry's challenge."""
        authorization = self._auth.get(scope)
        resp = self.send(method, url, headers, authorization, what=what)
        if resp.status_code != 401 or not self._is_registry(resp.url):
            # Only the registry's own challenges are answered: a redirect target that asks
            # for credentials gets none (they would leave for its realm).
            return resp
        challenge = resp.headers.get("WWW-Authenticate", "")
        resp.close()
        authorization = self._authenticate(challenge, scope, what=what)
        self._auth[scope] = authorization
        return self.send(method, url, headers, authorization, what=what)

    def backoff(self, attempt: int) -> None:
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
            return basic_authorization(self.credentials)
        if scheme != "bearer":
            raise RegistryError(f"{what}: unsupported authentication scheme {scheme[:20]!r}")
        realm = params.get("realm", "")
        if self.credentials and not same_site(urlsplit(realm).hostname, self.domain):
            raise RegistryError(
                f"{what}: token service {urlsplit(realm).hostname or realm[:80]!r} refused: it is "
                f"not on {self.domain}'s domain (credentials are not sent there)"
            )
        self.check_target(realm, what=f"{what}: token realm")
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if self.credentials:
            headers["Authorization"] = basic_authorization(self.credentials)
        try:
            resp = self._once("GET", token_url(realm, params, scope), headers)
        except requests.exceptions.SSLError as err:
            raise RegistryError(f"{what}: token service TLS verification failed") from err
        except TRANSIENT as err:
            raise RegistryError(
                f"{what}: token service unreachable: {reason(err)}", permanent=False
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
        return bearer(body, what)

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

    # -- manifests and errors ---------------------------------------------------------------
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
        self.raise_for_status(resp, what, "image")
        data = _read_capped(resp, manifests.MAX_MANIFEST, f"{what}: manifest")
        actual = digests.of_bytes(data)
        if by_digest and actual != target:
            raise InvalidImageError(f"{what}: manifest digest mismatch (got {actual})")
        claimed = resp.headers.get("Docker-Content-Digest", "")
        if not by_digest and digests.DIGEST_RE.match(claimed) and claimed != actual:
            raise InvalidImageError(f"{what}: manifest does not match Docker-Content-Digest")
        content_type = resp.headers.get("Content-Type", "")
        return manifests.parse_document(data, content_type, actual, f"{what}: manifest {actual}")

    def raise_for_status(self, resp: requests.Response, what: str, thing: str) -> None:
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
