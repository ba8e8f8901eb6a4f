"""Round-2 probe H09: idle connections (slowloris) must not keep a witness from real requests.

80 idle TCP connections held every slot of the witness's HTTP server until the request
deadline (10 s); a real request waited that long. Now one client address holds at most
``max_per_client`` connections, and the request line and headers must arrive within a short
``header_deadline``. Source addresses 127.0.0.2 and 127.0.0.1 are both loopback on Linux, so
an "attacker" and a "client" with distinct addresses run on this machine.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog.note import NoteVerifier
from ailedger.auditlog.witness import Witness, WitnessServer

ORIGIN = "round2.example/witnessed"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[WitnessServer]:
    log_key = NoteVerifier.from_public_key(ORIGIN, Ed25519PrivateKey.generate().public_key())
    with Witness.open(tmp_path / "state", {ORIGIN: [log_key]}, name="w.example") as witness:
        server = WitnessServer(
            witness,
            "127.0.0.1",
            0,
            log=lambda line: None,
            request_deadline=10.0,
            max_connections=16,
        )
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        yield server
        server.shutdown()
        server.server_close()


def _idle(server: WitnessServer, count: int, source: str) -> list[socket.socket]:
    port = int(server.server_address[1])
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        held.append(sock)
    time.sleep(0.3)  # let the server accept them all
    return held


def _get(server: WitnessServer, *, attempts: int = 1) -> int:
    """GET an unknown origin's checkpoint (404 when served); retries refused connections."""
    port = int(server.server_address[1])
    for attempt in range(attempts):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        try:
            conn.request("GET", "/" + "0" * 64 + "/checkpoint")
            return conn.getresponse().status
        except (ConnectionError, http.client.HTTPException):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2)
        finally:
            conn.close()
    raise AssertionError("unreachable")


def test_h09_idle_connections_from_one_address_do_not_delay_another(
    served: WitnessServer,
) -> None:
    held = _idle(served, 80, "127.0.0.2")
    try:
        started = time.monotonic()
        assert _get(served) == 404
        assert time.monotonic() - started < 1.5
    finally:
        for sock in held:
            sock.close()


def test_h09_idle_connections_are_dropped_at_the_header_deadline(served: WitnessServer) -> None:
    held = _idle(served, 8, "127.0.0.1")  # this address's whole share
    try:
        started = time.monotonic()
        extra = _idle(served, 1, "127.0.0.1")[0]
        extra.settimeout(1)
        with contextlib.suppress(ConnectionError):
            assert extra.recv(1) == b""  # a ninth from the same address is closed at once
        extra.close()
        # the same address is served once the header deadline (3 s) frees its slots, long
        # before the request deadline (10 s)
        assert _get(served, attempts=40) == 404
        assert time.monotonic() - started < 6
        for sock in held:  # each idle one was closed by the server
            sock.settimeout(1)
            with contextlib.suppress(ConnectionError):
                assert sock.recv(1) == b""
    finally:
        for sock in held:
            sock.close()


def test_h09_a_request_with_prompt_headers_still_gets_its_body_deadline(
    served: WitnessServer,
) -> None:
    port = int(served.server_address[1])
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        time.sleep(3.5)  # past the header deadline, within the request deadline
        sock.sendall(b"old 0\n\nxx\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 4")  # answered (a malformed request), not cut off
    assert not reply.startswith(b"HTTP/1.1 408")
