"""Moving update blobs between parties: content-addressed by SHA-256, checked on arrival.

Each party keeps its blobs in a :class:`BlobStore` (one file per blob, named by the hex SHA-256
of its bytes, FIPS 180-4) and serves them itself, with a :class:`BlobServer` (HTTP ``GET
/<hex digest>`` on 127.0.0.1 by default, stdlib :mod:`http.server` in a thread) or, for
parties on one machine, a shared folder (``file://`` endpoint). :func:`fetch_blob` gets a
blob from an endpoint and checks it against the digest the party revealed on chain, so a
server can withhold a blob but never substitute one: the caller gets the promised bytes, or
:class:`BlobMismatch`, or :class:`BlobUnavailable`. Since blobs are content-addressed, any
party that holds a blob may serve it: :func:`fetch_any` tries several endpoints in turn.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ailedger.errors import AiledgerError, InputError, VerificationError

__all__ = [
    "MAX_BLOB_BYTES",
    "BlobMismatch",
    "BlobServer",
    "BlobStore",
    "BlobUnavailable",
    "blob_digest",
    "fetch_any",
    "fetch_blob",
]

#: largest blob fetched or stored (bytes); a float64 model of 8 million parameters
MAX_BLOB_BYTES = 64 * 1024 * 1024
_HEX = re.compile(r"^/?([0-9a-f]{64})$")


class BlobMismatch(VerificationError):
    """A fetched blob's SHA-256 is not the digest it was fetched for."""

    def __init__(self, expected: bytes, calculated: bytes, where: str) -> None:
        self.expected = expected
        self.calculated = calculated
        self.where = where
        super().__init__(
            f"blob from {where} does not match its digest: expected {expected.hex()}, "
            f"got {calculated.hex()}"
        )


class BlobUnavailable(AiledgerError):
    """No endpoint delivered the blob (not found, refused, too large, or unreachable)."""

    exit_code = 3


def blob_digest(blob: bytes) -> bytes:
    """The SHA-256 digest that names ``blob``."""
    return hashlib.sha256(blob).digest()


def _check_digest(digest: bytes) -> str:
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise InputError("a blob digest is 32 bytes (SHA-256)")
    return digest.hex()


class BlobStore:
    """A folder of blobs, each in a file named by its hex SHA-256 digest."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def uri(self) -> str:
        """The ``file://`` endpoint of this folder (for parties sharing a file system)."""
        return self.directory.resolve().as_uri()

    def path(self, digest: bytes) -> Path:
        return self.directory / _check_digest(digest)

    def has(self, digest: bytes) -> bool:
        return self.path(digest).is_file()

    def put(self, blob: bytes) -> bytes:
        """Store ``blob`` (atomically; storing it again is a no-op) and return its digest."""
        if len(blob) > MAX_BLOB_BYTES:
            raise InputError(f"blob of {len(blob)} bytes exceeds {MAX_BLOB_BYTES}")
        digest = blob_digest(blob)
        target = self.path(digest)
        if not target.is_file():
            tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
            try:
                tmp.write_bytes(blob)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        return digest

    def get(self, digest: bytes) -> bytes:
        """The blob named ``digest``, checked; :class:`BlobUnavailable` if absent."""
        try:
            blob = self.path(digest).read_bytes()
        except FileNotFoundError as exc:
            raise BlobUnavailable(f"no blob {digest.hex()} in {self.directory}") from exc
        calculated = blob_digest(blob)
        if calculated != digest:
            raise BlobMismatch(digest, calculated, str(self.directory))
        return blob


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        match = _HEX.match(urllib.parse.urlsplit(self.path).path)
        path = self.server.store.directory / match.group(1) if match else None
        if path is None or not path.is_file():
            self.send_error(404, "no such blob")
            return
        blob = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(blob)))
        self.end_headers()
        self.wfile.write(blob)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged (the CLI's stderr is for people)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], store: BlobStore) -> None:
        self.store = store
        super().__init__(address, _Handler)


class BlobServer:
    """Serve a :class:`BlobStore` over HTTP (``GET /<hex digest>``) from a background thread.

    Binds 127.0.0.1 on a free port unless told otherwise; use it as a context manager, or call
    :meth:`close`.
    """

    def __init__(self, store: BlobStore, *, host: str = "127.0.0.1", port: int = 0) -> None:
        try:
            self._server = _Server((host, port), store)
        except OSError as exc:
            raise InputError(f"cannot serve blobs on {host}:{port}: {exc.strerror}") from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ailedger-blobs", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        shown = host.decode() if isinstance(host, bytes) else host
        return f"http://{shown}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> BlobServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fetch_blob(
    endpoint: str, digest: bytes, *, timeout: float = 10.0, max_bytes: int = MAX_BLOB_BYTES
) -> bytes:
    """Fetch the blob named ``digest`` from ``endpoint`` (``http(s)://`` or ``file://``).

    Raises :class:`BlobMismatch` if the bytes are not the ones promised, and
    :class:`BlobUnavailable` if the endpoint does not deliver them.
    """
    name = _check_digest(digest)
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme == "file":
        path = Path(urllib.request.url2pathname(parts.path)) / name
        try:
            with path.open("rb") as handle:
                blob = handle.read(max_bytes + 1)
        except OSError as exc:
            raise BlobUnavailable(f"no blob {name} at {endpoint}: {exc.strerror}") from exc
    elif parts.scheme in ("http", "https"):
        url = endpoint.rstrip("/") + "/" + name
        try:
            with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 (scheme checked)
                blob = reply.read(max_bytes + 1)
        except urllib.error.HTTPError as exc:
            raise BlobUnavailable(f"{url} answered {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BlobUnavailable(f"{url} is unreachable: {reason}") from exc
    else:
        raise BlobUnavailable(f"unsupported blob endpoint {endpoint!r} (http, https or file)")
    if len(blob) > max_bytes:
        raise BlobUnavailable(f"blob {name} at {endpoint} exceeds {max_bytes} bytes")
    calculated = blob_digest(blob)
    if calculated != digest:
        raise BlobMismatch(digest, calculated, endpoint)
    return blob


def fetch_any(
    endpoints: Sequence[str],
    digest: bytes,
    *,
    timeout: float = 10.0,
    max_bytes: int = MAX_BLOB_BYTES,
) -> bytes:
    """Fetch ``digest`` from the first of ``endpoints`` that delivers the right bytes.

    Raises :class:`BlobMismatch` if some endpoint answered only with wrong bytes (the first
    endpoint is normally the blob's owner, so this names a substituted blob), else
    :class:`BlobUnavailable` listing why each endpoint failed.
    """
    mismatch: BlobMismatch | None = None
    reasons: list[str] = []
    for endpoint in endpoints:
        try:
            return fetch_blob(endpoint, digest, timeout=timeout, max_bytes=max_bytes)
        except BlobMismatch as exc:
            mismatch = mismatch or exc
        except BlobUnavailable as exc:
            reasons.append(str(exc))
    if mismatch is not None:
        raise mismatch
    raise BlobUnavailable("; ".join(reasons) or f"no endpoint to fetch {digest.hex()} from")
