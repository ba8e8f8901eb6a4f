"""Blobs between parties: content-addressed stores, a real HTTP server, digests checked, and
hostile peers (malformed endpoints, slow drips, floods of idle sockets) that end as one
``BlobUnavailable`` within the deadline."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ailedger.errors import InputError
from ailedger.federated import transport
from ailedger.federated.transport import (
    BlobMismatch,
    BlobServer,
    BlobStore,
    BlobUnavailable,
    announce_url,
    blob_digest,
    check_endpoint,
    choose_address,
    fetch_any,
    fetch_blob,
)
from tests.conftest import free_port

WILDCARD = "0.0.0.0"  # noqa: S104 (an address to announce, never bound here)
BLOB = b"an update blob \x00\x01\x02" * 100


def test_store_names_blobs_by_sha256_and_checks_them(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    digest = store.put(BLOB)
    assert digest == hashlib.sha256(BLOB).digest() == blob_digest(BLOB)
    assert store.path(digest).name == digest.hex()
    assert store.put(BLOB) == digest
    assert store.get(digest) == BLOB
    assert sorted(p.name for p in store.directory.iterdir()) == [digest.hex()]
    store.path(digest).write_bytes(BLOB + b"!")
    with pytest.raises(BlobMismatch) as info:
        store.get(digest)
    assert info.value.expected == digest
    assert info.value.calculated == blob_digest(BLOB + b"!")
    with pytest.raises(BlobUnavailable, match="no blob"):
        store.get(blob_digest(b"absent"))
    with pytest.raises(InputError, match="32 bytes"):
        store.get(b"short")


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 (a test server)
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_http_server_serves_allowed_blobs_that_fetch_checks(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "served")
    digest = store.put(BLOB)
    with BlobServer(store, digests=[digest]) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert fetch_blob(server.url, digest) == BLOB
        with pytest.raises(BlobUnavailable, match="404"):
            fetch_blob(server.url, blob_digest(b"never stored"))
        with pytest.raises(BlobUnavailable, match="exceeds"):
            fetch_blob(server.url, digest, max_bytes=10)
        for path in ("/../config.toml", "/" + "a" * 63, "/%2e%2e/keys"):
            assert get_status(server.url + path) == 404
        # a server that substitutes other bytes under the promised name is caught
        store.path(digest).write_bytes(b"poisoned update")
        with pytest.raises(BlobMismatch, match="does not match its digest"):
            fetch_blob(server.url, digest)
        url = server.url
    with pytest.raises(BlobUnavailable, match="unreachable"):
        fetch_blob(url, digest, timeout=2)


def test_the_server_serves_only_the_blobs_of_its_task(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    own = store.put(BLOB)
    other_task = store.put(b"a blob of another task")
    with BlobServer(store) as server:
        assert get_status(f"{server.url}/{own.hex()}") == 404
        server.allow(own)
        assert server.allowed(own)
        assert fetch_blob(server.url, own) == BLOB
        assert store.has(other_task)
        assert get_status(f"{server.url}/{other_task.hex()}") == 404
        with pytest.raises(BlobUnavailable, match="404"):
            fetch_blob(server.url, other_task)


class CountingStore(BlobStore):
    """A store that counts every look at its folder."""

    looks = 0

    @property  # type: ignore[override]
    def directory(self) -> Path:
        self.looks += 1
        return self._directory

    @directory.setter
    def directory(self, value: Path) -> None:
        self._directory = value


def test_other_paths_get_404_without_touching_the_file_system(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "blobs")
    digest = store.put(BLOB)
    with BlobServer(store, digests=[digest]) as server:
        store.looks = 0
        paths = [
            "/", "/config.toml", "/../keys/ethereum.json", "/%2e%2e/keys", f"/{digest.hex()}/",
            f"/{digest.hex().upper()}", f"/{digest.hex()}?x=1", f"//{digest.hex()}",
            f"/blobs/{digest.hex()}", "/" + "0" * 64,
        ]  # fmt: skip
        for path in paths:
            assert get_status(server.url + path) == 404, path
        assert store.looks == 0
        assert fetch_blob(server.url, digest) == BLOB
        assert store.looks == 1


def test_file_endpoints_and_fallback_to_other_holders(tmp_path: Path) -> None:
    owner = BlobStore(tmp_path / "owner")
    peer = BlobStore(tmp_path / "peer")
    digest = peer.put(BLOB)
    assert fetch_blob(peer.uri, digest) == BLOB
    with pytest.raises(BlobUnavailable, match="no blob"):
        fetch_blob(owner.uri, digest)
    with pytest.raises(BlobUnavailable, match="unsupported"):
        fetch_blob("ftp://example.org", digest)
    with BlobServer(owner, digests=[digest]) as server:
        assert fetch_any([server.url, peer.uri], digest) == BLOB
        with pytest.raises(BlobUnavailable) as info:
            fetch_any([server.url, owner.uri], digest)
        assert "404" in str(info.value)
        assert "no blob" in str(info.value)
        owner.path(digest).write_bytes(b"substituted")
        assert fetch_any([server.url, peer.uri], digest) == BLOB
        with pytest.raises(BlobMismatch):
            fetch_any([server.url], digest)
    with pytest.raises(BlobUnavailable, match="no endpoint"):
        fetch_any([], digest)


def test_a_fifo_under_a_file_endpoint_does_not_stall_the_fetch(tmp_path: Path) -> None:
    digest = blob_digest(BLOB)
    (tmp_path / "shared").mkdir()

    os.mkfifo(tmp_path / "shared" / digest.hex())
    started = time.monotonic()
    with pytest.raises(BlobUnavailable, match="not a regular file"):
        fetch_blob((tmp_path / "shared").as_uri(), digest)
    assert time.monotonic() - started < 1


# --------------------------------------------------------------------------- hostile endpoints

MALFORMED = [
    "http://[::1",
    "http://a b/",
    "ftp://x",
    "http://",
    "http:///blobs",
    "http://:8080",
    "https://?x",
    "http://127.0.0.1:99999",
    "http://127.0.0.1:port",
    "http://127.0.0.1:0",
    f"http://{WILDCARD}:8080",
    "http://[::]:8080",
    "http://::1:8080",
    "http://user:secret@127.0.0.1:1",
    "http://127.0.0.1:1/?q=1",
    "http://127.0.0.1:1/#frag",
    "http://127.0.0.1:1/a b",
    "http://127.0.0.1\x00:1",
    "http://exa\nmple.org",
    "http://" + "a" * 64 + ".org",
    "http://-bad-.org",
    "http://b\u00fccher.de",
    "file://remote-host/share",
    "javascript:alert(1)",
    "127.0.0.1:8080",
    "",
    "http://" + "a" * 3000,
]


@pytest.mark.parametrize("endpoint", MALFORMED)
def test_a_malformed_endpoint_is_unavailable_never_another_error(endpoint: str) -> None:
    with pytest.raises(BlobUnavailable, match="endpoint") as info:
        fetch_blob(endpoint, blob_digest(BLOB), timeout=1)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError):
        check_endpoint(endpoint)


def test_good_endpoints_pass_the_check(tmp_path: Path) -> None:
    for endpoint in (
        "http://127.0.0.1:8080",
        "https://blobs.example.org/party/7/",
        "http://[::1]:9000",
        "http://party-3.internal:80",
        tmp_path.as_uri(),
    ):
        assert check_endpoint(endpoint) == endpoint


class HostilePeer:
    """A TCP server on 127.0.0.1 that treats every connection with ``behave``."""

    def __init__(self, behave: Callable[[socket.socket], None]) -> None:
        self.behave = behave
        # the request line of the connection being served, per serving thread
        self.request = threading.local()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with conn:
            try:
                self.request.data = conn.recv(4096)
                self.behave(conn)
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@pytest.fixture
def hostile() -> Iterator[Callable[[Callable[[socket.socket], None]], HostilePeer]]:
    peers: list[HostilePeer] = []

    def start(behave: Callable[[socket.socket], None]) -> HostilePeer:
        peers.append(HostilePeer(behave))
        return peers[-1]

    yield start
    for peer in peers:
        peer.close()


def drip(data: bytes, stop_after: float = 30.0) -> Callable[[socket.socket], None]:
    """Send ``data`` one byte every 0.5 s (then keep the connection open)."""

    def behave(conn: socket.socket) -> None:
        for byte in data:
            conn.sendall(bytes([byte]))
            time.sleep(0.5)
        time.sleep(stop_after)

    return behave


@pytest.mark.parametrize(
    "trickle",
    [
        b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 200,
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 200,
    ],
    ids=["headers", "body"],
)
def test_a_slow_drip_peer_cannot_hold_a_fetch_past_its_deadline(
    hostile: Callable[[Callable[[socket.socket], None]], HostilePeer], trickle: bytes
) -> None:
    peer = hostile(drip(trickle))
    started = time.monotonic()
    with pytest.raises(BlobUnavailable, match="did not deliver within 2 s"):
        fetch_blob(peer.url, blob_digest(BLOB), timeout=2)
    assert 1.9 < time.monotonic() - started < 3.0


def reply(raw: bytes) -> Callable[[socket.socket], None]:
    def behave(conn: socket.socket) -> None:
        conn.sendall(raw)

    return behave


def endless_body(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    chunk = b"z" * 65536
    for _ in range(64):
        conn.sendall(chunk)


@pytest.mark.parametrize(
    ("behave", "message"),
    [
        (reply(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"), "answered 500"),
        (reply(b"HTTP/1.1 302 Found\r\nLocation: file:///etc/passwd\r\n\r\n"), "answered 302"),
        (reply(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n"), "exceeds 100000"),
        (endless_body, "exceeds 100000 bytes"),
        (reply(b"SSH-2.0-OpenSSH_9.6\r\n"), "unreachable"),
        (reply(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort"), "sent 5 of the 50 bytes"),
        (reply(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n"), "unreachable"),
        (reply(b""), "unreachable"),
        (reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwrong"), "does not match"),
    ],
    ids=["500", "redirect", "declared-too-large", "endless", "not-http", "truncated",
         "header-flood", "closed", "mismatch"],
)  # fmt: skip
def test_a_bad_reply_is_one_ailedger_error(
    hostile: Callable[[Callable[[socket.socket], None]], HostilePeer],
    behave: Callable[[socket.socket], None],
    message: str,
) -> None:
    peer = hostile(behave)
    with pytest.raises((BlobUnavailable, BlobMismatch), match=message):
        fetch_blob(peer.url, blob_digest(BLOB), timeout=5, max_bytes=100_000)


def test_a_refused_connection_is_unavailable() -> None:
    with pytest.raises(BlobUnavailable, match="unreachable"):
        fetch_blob(f"http://127.0.0.1:{free_port()}", blob_digest(BLOB), timeout=2)


# --------------------------------------------------------------------------- the server under load


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (within 5 s) without sending anything."""
    sock.settimeout(5)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_idle_sockets_cannot_lock_out_a_real_fetch(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    digest = store.put(BLOB)
    with BlobServer(store, digests=[digest], max_connections=16, idle_timeout=30) as server:
        idle = [socket.create_connection((server.host, server.port)) for _ in range(100)]
        try:
            idle[0].sendall(b"GET /")  # an incomplete request is idle too
            for _ in range(3):
                assert fetch_blob(server.url, digest, timeout=5) == BLOB
            # the oldest idle connections were closed to make room
            assert closed_by_server(idle[0])
        finally:
            for sock in idle:
                sock.close()


def test_an_idle_connection_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    with (
        BlobServer(store, idle_timeout=0.5) as server,
        socket.create_connection((server.host, server.port)) as sock,
    ):
        sock.sendall(b"GET /")
        started = time.monotonic()
        assert closed_by_server(sock)
        assert time.monotonic() - started < 2


def test_a_bad_bind_is_an_input_error(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    with BlobServer(store) as server, pytest.raises(InputError, match="cannot serve blobs"):
        BlobServer(store, port=server.port)
    with pytest.raises(InputError, match="cannot serve blobs"):
        BlobServer(store, port=99999)


# --------------------------------------------------------------------------- the announced address


def test_the_announced_address_is_reachable_not_a_wildcard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert announce_url("127.0.0.1", 8080) == "http://127.0.0.1:8080"
    assert announce_url("::1", 8080) == "http://[::1]:8080"
    assert announce_url("10.1.2.3", 80) == "http://10.1.2.3:80"
    assert announce_url(WILDCARD, 80, announce="https://party.example.org/b/") == (
        "https://party.example.org/b"
    )
    with pytest.raises(InputError, match="malformed blob endpoint"):
        announce_url(WILDCARD, 80, announce=f"http://{WILDCARD}:80")
    # the choice: the interface towards the chain node, else a non-loopback address
    assert choose_address(["10.0.0.5", "192.168.1.2"]) == "10.0.0.5"
    assert choose_address(["127.0.0.1", None, "127.0.1.1", "192.168.1.2"]) == "192.168.1.2"
    assert choose_address([None, "fe80::1", "fd00::2"]) == "fd00::2"
    assert choose_address([WILDCARD, "127.0.0.1", "169.254.1.1", "224.0.0.1"]) is None
    # with the machine's own routing table, a wildcard announces one of its addresses
    url = announce_url(WILDCARD, 8080, peer="127.0.0.1")
    host = url.removeprefix("http://").rsplit(":", 1)[0]
    assert host not in (WILDCARD, "127.0.0.1")
    assert host == transport._routed_address(socket.AF_INET, None)
    # a machine with no address but loopback: refuse, saying what to do
    monkeypatch.setattr(transport, "_routed_address", lambda family, peer: None)
    monkeypatch.setattr(transport, "_local_addresses", lambda family: ["127.0.0.1", "::1"])
    for wildcard in (WILDCARD, "::", ""):
        with pytest.raises(InputError, match="pass --announce URL"):
            announce_url(wildcard, 8080)


def test_a_fallback_with_wrong_bytes_does_not_blame_the_owner(
    tmp_path: Path, hostile: Callable[[Callable[[socket.socket], None]], HostilePeer]
) -> None:
    digest = blob_digest(BLOB)
    liar = hostile(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwrong"))
    owner = BlobStore(tmp_path / "owner")
    with pytest.raises(BlobUnavailable, match=r"no blob .* does not match") as info:
        fetch_any([owner.uri, liar.url], digest)
    assert not isinstance(info.value, BlobMismatch)
    with pytest.raises(BlobMismatch):
        fetch_any([liar.url, owner.uri], digest)


def test_slow_fallbacks_share_one_total_deadline(
    hostile: Callable[[Callable[[socket.socket], None]], HostilePeer],
) -> None:
    slow = [hostile(drip(b"HTTP/1.1 200 OK\r\n")) for _ in range(4)]
    started = time.monotonic()
    with pytest.raises(BlobUnavailable, match="not tried"):
        fetch_any([p.url for p in slow], blob_digest(BLOB), timeout=1, total=1.5)
    assert time.monotonic() - started < 2.5
