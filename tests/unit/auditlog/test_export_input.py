"""Hostile exports: oversized and slow HTTP bodies, broken listings, forged anchor bindings."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog.binding import AnchorBinding, ChainAnchoring, open_binding, sign_binding
from ailedger.auditlog.log import AuditLog
from ailedger.auditlog.note import NoteVerifier
from ailedger.auditlog.verify import DirectorySource, HttpSource, read_binding, verify_export
from ailedger.errors import InputError, NodeUnavailable, SignatureError, VerificationError

OPERATOR = "0x" + "ab" * 20
REGISTRY = "0x" + "cd" * 20


class _Server:
    """A raw HTTP server on 127.0.0.1 that answers every request with ``reply(conn)``."""

    def __init__(self, reply) -> None:  # type: ignore[no-untyped-def]
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.reply = reply
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/"

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                with contextlib.suppress(OSError):
                    self.reply(conn, self.stop)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[_Server]:
    made = _Server(request.param)
    yield made
    made.close()


def _huge(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
    chunk = b"x" * 65536
    for _ in range(64):  # 4 MiB, no Content-Length
        conn.sendall(chunk)


def _huge_declared(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 200000000\r\n\r\n")


def _drip(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    while not stop.is_set():
        conn.sendall(b"x")
        time.sleep(0.05)


def _garbage(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")


@pytest.mark.parametrize("server", [_huge, _huge_declared], indirect=True)
def test_http_bodies_are_capped(server: _Server) -> None:
    source = HttpSource(server.url, max_bytes=1024 * 1024)
    with pytest.raises(InputError, match="larger than 1048576 bytes"):
        source.fetch("checkpoint")


@pytest.mark.parametrize("server", [_drip], indirect=True)
def test_a_slow_drip_is_cut_at_the_deadline(server: _Server) -> None:
    source = HttpSource(server.url, timeout=1.0, deadline=0.5)
    started = time.monotonic()
    with pytest.raises(NodeUnavailable, match="within the deadline"):
        source.fetch("checkpoint")
    assert time.monotonic() - started < 2.0  # every byte came in time, the whole did not


@pytest.mark.parametrize("server", [_garbage], indirect=True)
def test_a_non_http_answer_is_unavailable(server: _Server) -> None:
    with pytest.raises(NodeUnavailable):
        HttpSource(server.url, timeout=1.0).fetch("checkpoint")


def test_directory_files_are_capped(tmp_path: Path) -> None:
    (tmp_path / "checkpoint").write_bytes(b"x" * 2048)
    with pytest.raises(InputError, match="larger than 1024 bytes"):
        DirectorySource(tmp_path, max_bytes=1024).fetch("checkpoint")
    assert DirectorySource(tmp_path).fetch("missing/file") is None


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, NoteVerifier, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    with AuditLog.open(tmp_path / "log.sqlite", origin="input.example/log") as log:
        log.append_many({"i": i} for i in range(3))
        log.checkpoint(key)
        log.export(tmp_path / "export")
        verifier = log.verifier(key.public_key())
    return tmp_path / "export", verifier, key


@pytest.mark.parametrize(
    ("listing", "message"),
    [
        (b"[" * 50_000 + b"]" * 50_000, "nested deeper"),
        (b"[1,", "not JSON"),
        (b"[3, 3]", "lists a size twice"),
        (b"[true]", "not a list of tree sizes"),
        (b"[18446744073709551616]", "not a list of tree sizes"),
        (b"[1.0]", "not a list of tree sizes"),
    ],
)
def test_broken_checkpoint_listing_is_a_failed_check(
    exported: tuple[Path, NoteVerifier, Ed25519PrivateKey], listing: bytes, message: str
) -> None:
    export, verifier, _ = exported
    (export / "ailedger" / "checkpoints.json").write_bytes(listing)
    with pytest.raises(VerificationError, match=message):
        verify_export(DirectorySource(export), verifier)


def test_binding_round_trip_and_forgeries(
    exported: tuple[Path, NoteVerifier, Ed25519PrivateKey],
) -> None:
    export, verifier, key = exported
    source = DirectorySource(export)
    assert read_binding(source, verifier) is None  # the library's export writes none
    chains = (ChainAnchoring(chain_id=31337, registry=REGISTRY, operator=OPERATOR),)
    binding = AnchorBinding(origin=verifier.name, chains=chains)
    (export / "ailedger" / "binding").write_bytes(sign_binding(binding, key))
    opened = read_binding(source, verifier)
    assert opened == binding
    assert opened.for_chain(31337) == chains[0] and opened.for_chain(1) is None
    # signed by another key
    other = sign_binding(binding, Ed25519PrivateKey.generate())
    with pytest.raises(SignatureError):
        open_binding(other, verifier)
    # about another log, with the right key
    elsewhere = AnchorBinding(origin="other.example/log", chains=chains)
    from ailedger.auditlog.note import sign_note

    note = sign_note(elsewhere.to_text(), verifier.name, key)
    with pytest.raises(VerificationError, match="is for log"):
        open_binding(note, verifier)
    # a checkpoint is not a binding
    with pytest.raises(VerificationError, match="not an anchor binding"):
        open_binding((export / "checkpoint").read_bytes(), verifier)


@pytest.mark.parametrize(
    "line",
    [
        "anchors 0 {r} {o}",
        "anchors 1_0 {r} {o}",
        "anchors \u0661 {r} {o}",
        "anchors 1 {r}",
        "anchors 1 0x12 {o}",
        "anchor 1 {r} {o}",
        "anchors 1 {r} {o} extra",
    ],
)
def test_malformed_binding_lines(line: str) -> None:
    text = f"ailedger/anchor-binding/v1\norigin x.example/log\n{line}\n".format(
        r=REGISTRY, o=OPERATOR
    )
    with pytest.raises(InputError, match="anchor binding line 3"):
        AnchorBinding.parse(text)
