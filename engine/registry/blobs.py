"""Registry blobs as verified streams: what a pull reads layers and configs through.

A blob is read through engine.registry.client's Client (so every request keeps its rules: redirects
by
hand, credentials for the registry only, foreign-layer ``urls`` fetched without them). It is
verified for size and digest in-stream, resumed with Range after a dropped connection (or
skipped ahead when the server ignores Range), retried with a bounded backoff, and abandoned
when it trickles (less than STALL_MIN_BYTES in STALL_WINDOW seconds).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

from engine.errors import InvalidImageError, RegistryError
from engine.registry.client import TRANSIENT, Client, Response, reason
from engine.registry.manifests import Descriptor

log = logging.getLogger("gantry.engine.registry")

CHUNK = 1024 * 1024
RETRIES = 4  # per blob (each retry resumes where the last one stopped)
# A blob that delivers less than this many bytes in STALL_WINDOW seconds is given up on.
STALL_WINDOW = 60.0
STALL_MIN_BYTES = 16 * 1024


def read_blob(client: Client, repo: str, desc: Descriptor, cap: int, *, what: str) -> bytes:
    """A small blob (config) read whole, verified for size and digest."""
    if desc.size > cap:
        raise InvalidImageError(f"{what}: {desc.digest} is larger than {cap} bytes")
    reader = BlobReader(client, repo, desc, what=what)
    out = bytearray()
    while chunk := reader.read(CHUNK):
        out += chunk
    return bytes(out)


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
        self._resp: Response | None = None
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
            resp = client.authorized("GET", url, f"repository:{self.repo}:pull", headers, self.what)
        else:
            # A foreign layer: no credentials, and only to a host we may contact.
            client.check_target(url, what=self.what)
            resp = client.send("GET", url, headers, None, what=self.what)
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
            client.raise_for_status(resp, self.what, "blob")
        self._resp = resp

    @staticmethod
    def _skip(resp: Response, count: int) -> None:
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
                f"{self.what}: download failed after {RETRIES} retries: {reason(err)}",
                permanent=False,
            ) from err
        log.info("%s: retrying at byte %d after %s", self.what, self.offset, err)
        self.client.backoff(self._failures - 1)

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
            self.client.check_cancel()
            try:
                if self._resp is None:
                    self._open()
                assert self._resp is not None
                chunk = self._resp.raw.read1(min(n, CHUNK), decode_content=False)
                if not chunk and self.offset < self.desc.size:
                    raise ConnectionError("connection closed before the end of the blob")
            except TRANSIENT as err:
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
