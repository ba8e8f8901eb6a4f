"""Moving update blobs between parties: content-addressed by SHA-256, checked on arrival.

Each party keeps its blobs in a :class:`BlobStore` (one file per blob, named by the hex SHA-256
of its bytes, FIPS 180-4) and serves them itself, with a :class:`BlobServer` (HTTP ``GET
/<hex digest>`` on 127.0.0.1 by default, an asyncio server in a thread) or, for parties on one
machine, a shared folder (``file://`` endpoint). :func:`fetch_blob` gets a blob from an
endpoint and checks it against the digest the party revealed on chain, so a server can
withhold a blob but never substitute one: the caller gets the promised bytes, or
:class:`BlobMismatch`, or :class:`BlobUnavailable`. Since blobs are content-addressed, any
party that holds a blob may serve it: :func:`fetch_any` tries several endpoints in turn.

Endpoints are announced on chain by the parties themselves, so they are outside data: a
malformed one, a peer that refuses, stalls, drips one byte at a time or sends too much, all
end as :class:`BlobUnavailable` within the request's deadline, never as another exception.
The server is hostile-peer aware too: it serves only the digests it was told to
(:meth:`BlobServer.allow`), answers anything else with 404 without touching the file system,
closes a connection that sends no complete request within ``idle_timeout``, and at
``max_connections`` drops the oldest connection still waiting for its request, so idle
sockets cannot lock out a real fetch.

Where a fetch may go (SSRF): an announced endpoint would otherwise make every party send
requests to any host on its network. A host name is resolved once, every address checked,
and the connection made to the checked address (no second lookup a rebinding DNS server could
answer differently). Refused by default: link-local (169.254.0.0/16, including the cloud
metadata address 169.254.169.254, and fe80::/10), multicast, unspecified (0.0.0.0, ::) and
broadcast (255.255.255.255) addresses, also written as IPv4-mapped IPv6. Loopback and private
ranges stay allowed (consortia run on private networks, tests on 127.0.0.1); with
``allowed_networks`` only addresses inside those networks are fetched from. Redirects are
never followed (any status but 200 fails). A refused endpoint is one more
:class:`BlobUnavailable`: its party is faulty, nobody else.

Relaying (so a party that serves its update to some honest parties and not others cannot split
their views): a party stores and serves every blob of its task it fetched and checked, and
while it is still asking the blob's owner it answers ``503`` for that digest, which
:func:`fetch_any` retries until its deadline instead of giving up on that peer (``relay``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import ipaddress
import os
import re
import socket
import stat
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from ailedger._fs import write_atomic
from ailedger.errors import AiledgerError, InputError, VerificationError

__all__ = [
    "MAX_BLOB_BYTES",
    "BlobMismatch",
    "BlobPending",
    "BlobServer",
    "BlobStore",
    "BlobUnavailable",
    "announce_url",
    "blob_digest",
    "check_endpoint",
    "fetch_any",
    "fetch_blob",
    "parse_networks",
]

#: largest blob fetched or stored (bytes); a float64 model of 8 million parameters
MAX_BLOB_BYTES = 64 * 1024 * 1024
_MAX_ENDPOINT = 2048
_CHUNK = 64 * 1024
_MAX_REQUEST_HEAD = 8 * 1024
_REQUEST_PATH = re.compile(r"/([0-9a-f]{64})\Z")
_HOSTNAME = re.compile(
    r"(?=.{1,253}\.?\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z",
    re.ASCII,
)
_PATH_CHARS = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%/-]*\Z", re.ASCII)
#: addresses used only to ask the routing table which interface is the way out; a UDP
#: ``connect`` sends no packet (RFC 5737 and RFC 3849 documentation addresses)
_ROUTE_PROBES = {socket.AF_INET: "192.0.2.1", socket.AF_INET6: "2001:db8::1"}


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
    """No endpoint delivered the blob (malformed, not found, refused, too large, too slow or
    unreachable)."""

    exit_code = 3


class BlobPending(BlobUnavailable):
    """The peer does not hold the blob yet but is fetching it from its owner (``503``): ask
    again shortly."""


Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_RETRY_PENDING = 0.1  # seconds between asks to a peer that is still fetching (BlobPending)


def parse_networks(values: Iterable[str | Network]) -> tuple[Network, ...]:
    """Networks in CIDR notation (``10.0.0.0/8``, ``fd00::/8``, a bare address is a /32 or
    /128); :class:`InputError` naming a malformed one."""
    networks: list[Network] = []
    for value in values:
        if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(value)
            continue
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError as exc:
            raise InputError(f"not a network in CIDR notation: {value!r} ({exc})") from exc
    return tuple(networks)


def _refusal(address: str, allowed: Sequence[Network] | None) -> str | None:
    """Why ``address`` may not be fetched from, or None when it may (module docstring)."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
            address.split("%")[0]
        )
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return f"{ip} is the unspecified address"
    if ip.is_link_local:
        return f"{ip} is link-local (cloud metadata services live there)"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    if ip == _BROADCAST:
        return f"{ip} is the broadcast address"
    if allowed is not None and not any(ip.version == n.version and ip in n for n in allowed):
        return f"{ip} is outside the allowed peer networks"
    return None


def _resolve(endpoint: _Endpoint, timeout: float, allowed: Sequence[Network] | None) -> str:
    """The one address ``endpoint``'s host is fetched from: resolved once (within
    ``timeout`` seconds), the first address that passes :func:`_refusal`."""
    found: list[list[str]] = []
    failure: list[BaseException] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(endpoint.host, endpoint.port or 80, type=socket.SOCK_STREAM)
            found.append([str(info[4][0]) for info in infos])
        except (OSError, UnicodeError) as exc:
            failure.append(exc)

    # getaddrinfo cannot be interrupted: it runs aside, and the fetch gives up at the deadline
    worker = threading.Thread(target=lookup, name="ailedger-resolve", daemon=True)
    worker.start()
    worker.join(timeout)
    if failure:
        raise BlobUnavailable(f"cannot resolve {endpoint.host!r}: {failure[0]}")
    if not found:
        raise BlobUnavailable(f"resolving {endpoint.host!r} took more than {timeout:g} s")
    reasons = []
    for address in dict.fromkeys(found[0]):
        reason = _refusal(address, allowed)
        if reason is None:
            return address
        reasons.append(reason)
    shown = "; ".join(reasons) or "no address"
    raise BlobUnavailable(f"refusing to fetch from {endpoint.host!r}: {shown}")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to ``host`` (its name in the ``Host`` header) at the already checked ``address``."""

    def __init__(self, host: str, port: int | None, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``host`` (SNI and certificate checked for that name) at ``address``."""

    def __init__(self, host: str, port: int | None, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


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
            # 0600 from creation, never through a planted name or another user's symlink
            write_atomic(target, blob, mode=0o600)
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


# --------------------------------------------------------------------------- endpoints


@dataclass(frozen=True)
class _Endpoint:
    scheme: str
    host: str
    port: int | None
    path: str


def _parse_endpoint(endpoint: object) -> _Endpoint:
    """Check an endpoint someone announced; :class:`BlobUnavailable` saying why it is unusable."""
    if not isinstance(endpoint, str) or not endpoint:
        raise BlobUnavailable("empty blob endpoint")
    shown = repr(endpoint[:80])
    if len(endpoint) > _MAX_ENDPOINT or not endpoint.isascii() or not endpoint.isprintable():
        raise BlobUnavailable(f"malformed blob endpoint {shown}: not a printable ASCII URL")
    if any(c.isspace() for c in endpoint):
        raise BlobUnavailable(f"malformed blob endpoint {shown}: contains white space")
    try:
        parts = urllib.parse.urlsplit(endpoint)
        scheme = parts.scheme.lower()
        if scheme == "file":
            if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
                raise ValueError("a file endpoint is a local folder (file:///path)")
            return _Endpoint("file", "", None, urllib.request.url2pathname(parts.path))
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme {scheme!r} (use http, https or file)")
        host, port = parts.hostname, parts.port  # .port raises ValueError when malformed
        if not host:
            raise ValueError("no host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("credentials in an endpoint")
        if parts.query or parts.fragment:
            raise ValueError("a query or fragment in an endpoint")
        if port == 0:
            raise ValueError("port 0")
        if not _PATH_CHARS.match(parts.path):
            raise ValueError("invalid characters in the path")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            if not _HOSTNAME.match(host) or host.replace(".", "").isdigit():
                raise ValueError(f"invalid host {host!r}") from None
        else:
            if address.is_unspecified:
                raise ValueError(f"{host} is no address to fetch from")
            if address.version == 6 and f"[{host}]" not in parts.netloc.lower():
                raise ValueError("an IPv6 host goes in brackets")
    except ValueError as exc:
        raise BlobUnavailable(f"malformed blob endpoint {shown}: {exc}") from exc
    return _Endpoint(scheme, host, port, parts.path.rstrip("/"))


def check_endpoint(endpoint: str) -> str:
    """``endpoint`` if :func:`fetch_blob` would accept it, else :class:`InputError` (for an
    endpoint given by the user, e.g. ``train join --announce``)."""
    try:
        _parse_endpoint(endpoint)
    except BlobUnavailable as exc:
        raise InputError(str(exc)) from exc
    return endpoint


def _host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return address == "localhost"


def _usable(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_unspecified or ip.is_link_local or ip.is_multicast)


def _routed_address(family: socket.AddressFamily, peer: str | None) -> str | None:
    """The local address of the interface that routes to ``peer`` (no packet is sent)."""
    target = peer or _ROUTE_PROBES[family]
    try:
        infos = socket.getaddrinfo(target, 9, family, socket.SOCK_DGRAM)
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(infos[0][4])
            return str(probe.getsockname()[0])
    except (OSError, IndexError, UnicodeError):
        return None


def _local_addresses(family: socket.AddressFamily) -> list[str]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, family, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [str(info[4][0]) for info in infos]


def choose_address(candidates: Iterable[str | None]) -> str | None:
    """The first of ``candidates`` that other machines may reach (not loopback, link-local,
    multicast or unspecified); None when there is none."""
    return next((a for a in candidates if a is not None and _usable(a)), None)


def announce_url(
    host: str, port: int, *, announce: str | None = None, peer: str | None = None
) -> str:
    """The endpoint to announce for a blob server bound to ``host:port``.

    ``announce`` (checked) wins. A server bound to a wildcard (``0.0.0.0``, ``::``, empty)
    announces the address of the interface that routes to ``peer`` (the chain node's host),
    or else a non-loopback address of this machine; :class:`InputError` when neither can be
    told, since announcing ``0.0.0.0`` would make every other party fetch from itself.
    """
    if announce is not None:
        return check_endpoint(announce).rstrip("/")
    try:
        unspecified = host == "" or ipaddress.ip_address(host).is_unspecified
    except ValueError:
        unspecified = False
    if not unspecified:
        return f"http://{_host_in_url(host)}:{port}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    candidates = [
        _routed_address(family, peer) if peer else None,
        _routed_address(family, None),
        *_local_addresses(family),
    ]
    address = choose_address(candidates)
    if address is None:
        raise InputError(
            f"cannot tell which address of this machine other parties reach (serving on "
            f"{host or 'every interface'}); pass --announce URL"
        )
    return f"http://{_host_in_url(address)}:{port}"


# --------------------------------------------------------------------------- the server


class BlobServer:
    """Serve the allowed blobs of a :class:`BlobStore` over HTTP (``GET /<hex digest>``) from
    a background thread.

    Binds 127.0.0.1 on a free port unless told otherwise; serves only the digests passed as
    ``digests`` or to :meth:`allow` (a party allows its own updates and the blobs it fetched
    for its task, never the rest of the folder). One request per connection. A connection
    that sends no complete request within ``idle_timeout`` seconds is closed; with
    ``max_connections`` open, a new one displaces the oldest that is still waiting for its
    request (or is refused, if every one is sending); a response must be taken at
    ``min_rate`` bytes per second (after ``idle_timeout`` of grace) or the connection is
    closed. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        store: BlobStore,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        digests: Iterable[bytes] = (),
        max_connections: int = 64,
        idle_timeout: float = 5.0,
        min_rate: float = 256 * 1024,
    ) -> None:
        self.store = store
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.min_rate = min_rate
        self._allowed: set[str] = {_check_digest(d) for d in digests}
        self._pending: dict[str, int] = {}  # digests being fetched from their owner (503)
        self._lock = threading.Lock()
        # connections by arrival: every open one, and those still waiting for their request
        self._open: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._waiting: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ailedger-blobs", daemon=True
        )
        self._thread.start()
        start = asyncio.start_server(
            self._serve, host or None, port, limit=_MAX_REQUEST_HEAD, backlog=128
        )
        try:
            self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(30)
        except (OSError, OverflowError, ValueError) as exc:
            self._stop_loop()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise InputError(f"cannot serve blobs on {host}:{port}: {reason}") from exc
        address = self._server.sockets[0].getsockname()
        self.host: str = str(address[0])
        self.port: int = int(address[1])

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` as bound (a wildcard host is no address to announce: see
        :func:`announce_url`)."""
        return f"http://{_host_in_url(self.host)}:{self.port}"

    def allow(self, digest: bytes) -> None:
        """Serve the blob named ``digest`` from now on."""
        name = _check_digest(digest)
        with self._lock:
            self._allowed.add(name)

    def allowed(self, digest: bytes) -> bool:
        with self._lock:
            return _check_digest(digest) in self._allowed

    def _pending_add(self, digest: bytes) -> None:
        """Answer ``503`` for ``digest`` (until as many discards): this party is asking its
        owner for it (see :func:`fetch_any`'s ``relay``)."""
        name = _check_digest(digest)
        with self._lock:
            self._pending[name] = self._pending.get(name, 0) + 1

    def _pending_discard(self, digest: bytes) -> None:
        name = _check_digest(digest)
        with self._lock:
            left = self._pending.get(name, 0) - 1
            if left > 0:
                self._pending[name] = left
            else:
                self._pending.pop(name, None)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = self._waiting[task] = writer
        try:
            if len(self._open) > self.max_connections and not self._displace(task):
                return
            try:
                async with asyncio.timeout(self.idle_timeout):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            del self._waiting[task]
            await self._answer(head, writer)
        except (OSError, TimeoutError):
            pass  # the peer went away or was too slow: nothing to tell it
        finally:
            self._waiting.pop(task, None)
            self._open.pop(task, None)
            writer.transport.abort()

    def _displace(self, newcomer: asyncio.Task[None]) -> bool:
        """Make room for ``newcomer`` by closing the oldest connection still waiting for its
        request (its task then ends on its own); False (the newcomer is refused) if no other
        one is waiting."""
        oldest = next((t for t in self._waiting if t is not newcomer), None)
        if oldest is None:
            return False
        self._waiting.pop(oldest).transport.abort()
        self._open.pop(oldest, None)
        return True

    async def _answer(self, head: bytes, writer: asyncio.StreamWriter) -> None:
        line = head.split(b"\r\n", 1)[0].split(b" ")
        if len(line) != 3 or not line[2].startswith(b"HTTP/1."):
            await self._status(writer, 400, "Bad Request")
            return
        if line[0] != b"GET":
            await self._status(writer, 405, "Method Not Allowed")
            return
        match = _REQUEST_PATH.match(line[1].decode("latin-1"))
        with self._lock:
            allowed = match is not None and match.group(1) in self._allowed
            pending = match is not None and match.group(1) in self._pending
        if match is not None and not allowed and pending:
            await self._status(writer, 503, "Service Unavailable")
            return
        if match is None or not allowed:
            await self._status(writer, 404, "Not Found")
            return
        try:
            handle = (self.store.directory / match.group(1)).open("rb")
        except OSError:
            await self._status(writer, 404, "Not Found")
            return
        with handle:
            size = os.fstat(handle.fileno()).st_size
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % size
            )
            async with asyncio.timeout(self.idle_timeout + size / self.min_rate):
                while chunk := handle.read(_CHUNK):
                    writer.write(chunk)
                    await writer.drain()

    async def _status(self, writer: asyncio.StreamWriter, code: int, reason: str) -> None:
        body = f"{code} {reason}\n".encode()
        writer.write(
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        async with asyncio.timeout(self.idle_timeout):
            await writer.drain()

    async def _shutdown(self) -> None:
        self._server.close()
        tasks = list(self._open)
        for writer in self._open.values():
            writer.transport.abort()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        finally:
            self._stop_loop()

    def __enter__(self) -> BlobServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- fetching


def _read_file(endpoint: _Endpoint, name: str, where: str, max_bytes: int) -> bytes:
    path = Path(endpoint.path) / name
    try:
        # O_NONBLOCK: a FIFO planted under the blob's name cannot stall the open or the read
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BlobUnavailable(f"no blob {name} at {where}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BlobUnavailable(f"blob {name} at {where} is not a regular file")
        if info.st_size > max_bytes:
            raise BlobUnavailable(f"blob {name} at {where} exceeds {max_bytes} bytes")
        try:
            return handle.read(max_bytes + 1)
        except OSError as exc:
            raise BlobUnavailable(f"cannot read blob {name} at {where}: {exc.strerror}") from exc


def _read_http(
    endpoint: _Endpoint,
    name: str,
    url: str,
    timeout: float,
    max_bytes: int,
    allowed: Sequence[Network] | None,
) -> bytes:
    """GET ``url`` within ``timeout`` seconds in all (name lookup, connect, headers and body):
    a timer shuts the socket down at the deadline, so a peer dripping one byte at a time
    cannot extend it the way a per-read socket timeout would let it. The host is resolved
    once and its address checked (module docstring); the connection goes to that address."""
    started = time.monotonic()
    address = _resolve(endpoint, timeout, allowed)
    left = max(timeout - (time.monotonic() - started), 0.001)  # the lookup took its part
    connection_type = (
        _PinnedHTTPSConnection if endpoint.scheme == "https" else _PinnedHTTPConnection
    )
    connection = connection_type(endpoint.host, endpoint.port, address=address, timeout=left)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(left, expire)
    timer.daemon = True
    timer.start()
    try:
        connection.connect()
        if expired.is_set():
            raise TimeoutError
        connection.request(
            "GET", f"{endpoint.path}/{name}", headers={"Accept": "application/octet-stream"}
        )
        reply = connection.getresponse()
        if reply.status == 503:
            raise BlobPending(f"{url} answered 503: the peer is still fetching it")
        if 300 <= reply.status < 400:
            raise BlobUnavailable(
                f"{url} answered {reply.status} {reply.reason[:80]}: redirects are not followed"
            )
        if reply.status != 200:
            raise BlobUnavailable(f"{url} answered {reply.status} {reply.reason[:80]}")
        declared = reply.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise BlobUnavailable(f"blob {name} at {url} exceeds {max_bytes} bytes")
        chunks: list[bytes] = []
        total = 0
        while chunk := reply.read(min(_CHUNK, max_bytes + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise BlobUnavailable(f"blob {name} at {url} exceeds {max_bytes} bytes")
        if expired.is_set():
            raise TimeoutError
        if declared is not None and declared.isdigit() and total != int(declared):
            raise BlobUnavailable(f"{url} sent {total} of the {declared} bytes it announced")
        return b"".join(chunks)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if expired.is_set() or isinstance(exc, TimeoutError):
            elapsed = time.monotonic() - started
            raise BlobUnavailable(
                f"{url} did not deliver within {timeout:g} s (gave up after {elapsed:.1f} s)"
            ) from exc
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise BlobUnavailable(f"{url} is unreachable: {reason or type(exc).__name__}") from exc
    finally:
        timer.cancel()
        connection.close()


def fetch_blob(
    endpoint: str,
    digest: bytes,
    *,
    timeout: float = 10.0,
    max_bytes: int = MAX_BLOB_BYTES,
    allowed_networks: Iterable[str | Network] | None = None,
) -> bytes:
    """Fetch the blob named ``digest`` from ``endpoint`` (``http(s)://`` or ``file://``).

    ``timeout`` (seconds) bounds the whole request, not each read; at most ``max_bytes`` are
    read. An HTTP host must resolve to an address the module docstring allows (within
    ``allowed_networks`` when given, CIDR strings or networks). Raises :class:`BlobMismatch`
    if the bytes are not the ones promised, and :class:`BlobUnavailable` (:class:`BlobPending`
    for a peer still fetching it) if the endpoint is malformed, refused or does not deliver
    them; nothing else, whatever the endpoint or the peer does.
    """
    name = _check_digest(digest)
    allowed = None if allowed_networks is None else parse_networks(allowed_networks)
    parsed = _parse_endpoint(endpoint)
    if parsed.scheme == "file":
        blob = _read_file(parsed, name, endpoint, max_bytes)
    else:
        url = endpoint.rstrip("/") + "/" + name
        blob = _read_http(parsed, name, url, timeout, max_bytes, allowed)
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
    total: float | None = None,
    max_bytes: int = MAX_BLOB_BYTES,
    allowed_networks: Iterable[str | Network] | None = None,
    relay: BlobServer | None = None,
) -> bytes:
    """Fetch ``digest`` from the first of ``endpoints`` that delivers the right bytes.

    ``timeout`` bounds each request and ``total`` (default ``timeout`` times the number of
    endpoints) all of them together, so slow peers among the fallbacks cannot multiply the
    wait. A peer that answers that it is still fetching the blob itself (:class:`BlobPending`)
    is asked again until ``total`` runs out. ``allowed_networks`` as for :func:`fetch_blob`.

    ``relay`` is the caller's own :class:`BlobServer`: while the first endpoint (the blob's
    owner) is asked, it answers ``503`` for ``digest``; once the blob arrives it is stored in
    the relay's store and served (before the ``503`` stops), so peers the owner did not serve
    get it from the caller. Raises :class:`BlobMismatch` if the first endpoint answered with
    other bytes and none delivered, else :class:`BlobUnavailable` listing why each endpoint
    failed (a fallback that sent wrong bytes included).
    """
    allowed = None if allowed_networks is None else parse_networks(allowed_networks)
    deadline = time.monotonic() + (total if total is not None else timeout * len(endpoints))
    mismatch: BlobMismatch | None = None
    reasons: dict[str, str] = {}
    todo = list(enumerate(endpoints))
    relaying = [relay] if relay is not None else []

    def release() -> None:
        """Stop answering 503 for the digest (once)."""
        while relaying:
            relaying.pop()._pending_discard(digest)

    if relay is not None:
        relay._pending_add(digest)
    try:
        while todo:
            pending: list[tuple[int, str]] = []
            for position, endpoint in todo:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    reasons.setdefault(endpoint, "not tried (out of time)")
                    continue
                try:
                    blob = fetch_blob(
                        endpoint,
                        digest,
                        timeout=min(timeout, remaining),
                        max_bytes=max_bytes,
                        allowed_networks=allowed,
                    )
                except BlobMismatch as exc:
                    if position == 0:
                        mismatch = exc
                    reasons[endpoint] = str(exc)
                except BlobPending as exc:
                    reasons[endpoint] = str(exc)
                    pending.append((position, endpoint))
                except BlobUnavailable as exc:
                    reasons[endpoint] = str(exc)
                else:
                    if relay is not None:
                        relay.store.put(blob)
                        relay.allow(digest)
                    return blob
                finally:
                    if position == 0:
                        release()  # the owner was asked: no more 503 either way
            todo = pending
            if todo:
                time.sleep(max(0.0, min(_RETRY_PENDING, deadline - time.monotonic())))
    finally:
        release()
    if mismatch is not None:
        raise mismatch
    shown = "; ".join(reasons.values())
    raise BlobUnavailable(shown or f"no endpoint to fetch {digest.hex()} from")
