"""Witnesses: C2SP tlog-cosignature (Ed25519 cosignature/v1) and tlog-witness add-checkpoint."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import http.server
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ailedger.auditlog import _merkle
from ailedger.auditlog.checkpoint import Checkpoint, sign_checkpoint
from ailedger.auditlog.log import AuditLog
from ailedger.auditlog.note import NoteVerifier, open_note
from ailedger.auditlog.witness import (
    MAX_BODY,
    Witness,
    WitnessEndpoint,
    WitnessServer,
    WitnessVerifier,
    cosign,
    cosign_checkpoint,
    cosignature_message,
    load_witness_key,
    parse_witness_key,
    request_cosignature,
    split_note,
    verify_cosignatures,
    verify_cosigned,
)
from ailedger.errors import InputError, SignatureError, VerificationError, WorkspaceLocked

ORIGIN = "example.com/log"
LOG_KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
LOG = NoteVerifier.from_public_key(ORIGIN, LOG_KEY.public_key())
W1 = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
W2 = Ed25519PrivateKey.from_private_bytes(b"\x02" * 32)
W3 = Ed25519PrivateKey.from_private_bytes(b"\x03" * 32)


def verifier(name: str, key: Ed25519PrivateKey) -> WitnessVerifier:
    return WitnessVerifier.from_public_key(name, key.public_key())


class Tree:
    """A log held in memory: append leaves, sign checkpoints, prove consistency."""

    def __init__(self, *leaves: bytes) -> None:
        self.store = _merkle.MemoryHashStore()
        for leaf in leaves:
            self.store.append(leaf)

    def add(self, *leaves: bytes) -> Tree:
        for leaf in leaves:
            self.store.append(leaf)
        return self

    @property
    def size(self) -> int:
        return self.store.size

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(origin=ORIGIN, size=self.size, root_hash=self.store.root())

    def note(self, key: Ed25519PrivateKey = LOG_KEY, origin: str = ORIGIN) -> bytes:
        cp = Checkpoint(origin=origin, size=self.size, root_hash=self.store.root())
        return sign_checkpoint(cp, origin, key)

    def proof(self, old: int) -> list[bytes]:
        return _merkle.prove_consistency(old, self.size, self.store)


def tree(n: int, tag: bytes = b"e") -> Tree:
    return Tree(*(tag + b"%d" % i for i in range(n)))


def body(old: int, proof: list[bytes], note: bytes) -> bytes:
    lines = b"".join(base64.b64encode(h) + b"\n" for h in proof)
    return b"old %d\n" % old + lines + b"\n" + note


# --- cosignature format --------------------------------------------------------------------


def test_cosignature_line_follows_the_spec_byte_for_byte() -> None:
    cp = tree(5).checkpoint()
    line = cosign(cp, "witness.example/w1", W1, timestamp=1679315147)
    name, encoded = line.removeprefix("— ").removesuffix("\n").split(" ")
    raw = base64.b64decode(encoded)
    pub = W1.public_key().public_bytes_raw()
    key_id = hashlib.sha256(b"witness.example/w1\n\x04" + pub).digest()[:4]
    assert name == "witness.example/w1"
    assert raw[:4] == key_id
    assert raw[4:12] == (1679315147).to_bytes(8, "big")
    message = b"cosignature/v1\ntime 1679315147\n" + cp.to_text().encode()
    assert cosignature_message(cp.to_text(), 1679315147) == message
    W1.public_key().verify(raw[12:], message)  # raises if the bytes signed differ
    assert len(raw) == 4 + 8 + 64


def test_witness_key_round_trips_and_is_not_a_note_key() -> None:
    v = verifier("witness.example/w1", W1)
    vkey = v.verifier_key()
    assert base64.b64decode(vkey.split("+")[2])[0] == 0x04
    assert parse_witness_key(vkey) == v
    with pytest.raises(InputError, match="not a witness key"):
        parse_witness_key(LOG.verifier_key())
    name, _, b64 = vkey.split("+")
    with pytest.raises(InputError, match="does not match"):
        parse_witness_key(f"{name}+00000000+{b64}")


def test_verify_cosigned_k_of_n() -> None:
    note = tree(5).note()
    text = tree(5).checkpoint().to_text()
    w1, w2, w3 = (verifier(f"w{i}.example", k) for i, k in ((1, W1), (2, W2), (3, W3)))
    cosigned = (
        note
        + cosign(text, "w1.example", W1, timestamp=10).encode()
        + cosign(text, "w2.example", W2, timestamp=11).encode()
    )
    # the log key still opens the note: the cosignatures are unknown keys to it
    assert open_note(cosigned, [LOG]).signers == (ORIGIN,)
    result = verify_cosigned(cosigned, [w1, w2, w3], 2)
    assert {(c.name, c.timestamp) for c in result.cosignatures} == {
        ("w1.example", 10),
        ("w2.example", 11),
    }
    assert result.checkpoint.size == 5
    with pytest.raises(VerificationError, match=r"2 of the trusted witnesses, 3 required.*w3"):
        verify_cosigned(cosigned, [w1, w2, w3], 3)
    with pytest.raises(VerificationError, match="0 of the trusted witnesses"):
        verify_cosigned(note, [w1], 1)
    # key strings work too, and the quorum defaults to all of them
    verify_cosigned(cosigned, [w1.verifier_key(), w2.verifier_key()])
    for bad in (0, 4, True):
        with pytest.raises(InputError, match="quorum"):
            verify_cosigned(cosigned, [w1, w2, w3], bad)


def test_one_key_under_two_names_counts_once() -> None:
    text = tree(5).checkpoint().to_text()
    note = (
        tree(5).note()
        + cosign(text, "a.example", W1, timestamp=10).encode()
        + cosign(text, "b.example", W1, timestamp=10).encode()
    )
    keys = [verifier("a.example", W1), verifier("b.example", W1), verifier("c.example", W2)]
    with pytest.raises(InputError, match="between 1 and the 2 distinct"):
        verify_cosigned(note, keys, 3)
    with pytest.raises(VerificationError, match="1 of the trusted witnesses, 2 required"):
        verify_cosigned(note, keys, 2)


def test_a_bad_cosignature_from_a_trusted_witness_rejects_the_note() -> None:
    t5, t6 = tree(5), tree(6)
    # a cosignature of another checkpoint moved onto this one
    moved = t5.note() + cosign(t6.checkpoint(), "w1.example", W1, timestamp=10).encode()
    with pytest.raises(SignatureError, match=r"invalid cosignature by witness w1\.example"):
        verify_cosigned(moved, [verifier("w1.example", W1)], 1)
    # a changed timestamp breaks the signature
    line = cosign(t5.checkpoint(), "w1.example", W1, timestamp=10)
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[11] ^= 1
    forged = t5.note() + f"— w1.example {base64.b64encode(bytes(raw)).decode()}\n".encode()
    with pytest.raises(SignatureError):
        verify_cosignatures(forged, [verifier("w1.example", W1)])
    # an unknown witness (same name, another key) is ignored, not trusted
    other = t5.note() + cosign(t5.checkpoint(), "w1.example", W2, timestamp=10).encode()
    assert verify_cosignatures(other, [verifier("w1.example", W1)]) == []
    # a plain note signature (type 0x01) by the witness's key is no cosignature
    signed_plain = t5.note() + sign_checkpoint(t5.checkpoint(), "w1.example", W1).split(b"\n\n")[1]
    assert verify_cosignatures(signed_plain, [verifier("w1.example", W1)]) == []


def test_cosign_refuses_zero_time_and_non_checkpoints() -> None:
    with pytest.raises(InputError, match="zero"):
        cosign(tree(1).checkpoint(), "w", W1, timestamp=0)
    with pytest.raises(InputError):
        cosign("not a checkpoint\n", "w", W1, timestamp=5)
    with pytest.raises(InputError):
        cosignature_message("x\n", 2**63)


# --- the witness ---------------------------------------------------------------------------


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[Witness]:
    with Witness.open(tmp_path / "state", {ORIGIN: [LOG]}, name="w1.example") as w:
        yield w


def cosigns(witness: Witness, old: int, t: Tree, proof: list[bytes] | None = None) -> str:
    note = t.note()
    reply = witness.add_checkpoint(body(old, t.proof(old) if proof is None else proof, note))
    assert reply.status == 200, reply.body
    cosigned = note + reply.body
    verify_cosigned(cosigned, [witness.verifier], 1)
    return reply.body.decode()


def test_witness_cosigns_consistent_extensions_only(witness: Witness) -> None:
    cosigns(witness, 0, tree(3), [])
    cosigns(witness, 3, tree(7))
    cosigns(witness, 7, tree(7))  # the same head again
    latest = witness.latest(ORIGIN)
    assert latest is not None
    assert latest[0] == 7
    verify_cosigned(latest[1], [witness.verifier], 1)
    assert open_note(latest[1], [LOG]).signers == (ORIGIN,)


def test_witness_refuses_a_fork_at_the_same_size(witness: Witness) -> None:
    cosigns(witness, 0, tree(4), [])
    fork = tree(4, tag=b"x")
    reply = witness.add_checkpoint(body(4, [], fork.note()))
    assert reply.status == 422
    assert witness.latest(ORIGIN) is not None
    assert witness.latest(ORIGIN)[1].startswith(tree(4).checkpoint().to_text().encode())  # type: ignore[index]
    # kept as evidence of the log's misbehaviour
    [(old, note, reason)] = witness.evidence(ORIGIN)
    assert (old, note) == (4, fork.note())
    assert "root" in reason


def test_witness_refuses_a_fork_that_grew(witness: Witness) -> None:
    cosigns(witness, 0, tree(4), [])
    fork = tree(4, tag=b"x").add(b"more", b"and more")
    reply = witness.add_checkpoint(body(4, fork.proof(4), fork.note()))
    assert reply.status == 422
    assert witness.latest(ORIGIN)[0] == 4  # type: ignore[index]


def test_witness_refuses_a_rollback(witness: Witness) -> None:
    cosigns(witness, 0, tree(6), [])
    smaller = tree(4)
    # claiming the witness's own size: old > checkpoint size
    assert witness.add_checkpoint(body(6, [], smaller.note())).status == 400
    # claiming a smaller old size: conflict, naming what it holds
    reply = witness.add_checkpoint(body(4, [], smaller.note()))
    assert (reply.status, reply.body, reply.content_type) == (409, b"6\n", "text/x.tlog.size")
    reply = witness.add_checkpoint(body(0, [], smaller.note()))
    assert (reply.status, reply.body) == (409, b"6\n")
    assert witness.latest(ORIGIN)[0] == 6  # type: ignore[index]


def test_witness_status_codes_for_bad_requests(witness: Witness) -> None:
    t = tree(3)
    note = t.note()
    unknown = t.note(origin="other.example/log")
    stranger = t.note(key=W3)
    bad_sig = bytearray(note)
    bad_sig[-5] = ord("A") if bad_sig[-5] != ord("A") else ord("B")
    empty_root = Checkpoint(origin=ORIGIN, size=0, root_hash=b"\x11" * 32)
    cases = {
        "unknown log": (body(0, [], unknown), 404),
        "another key": (body(0, [], stranger), 403),
        "bad signature": (body(0, [], bytes(bad_sig)), 403),
        "no blank line": (b"old 0\n" + note, 400),
        "leading zero": (body(0, [], note).replace(b"old 0", b"old 00"), 400),
        "no old line": (b"\n" + note, 400),
        "negative": (body(0, [], note).replace(b"old 0", b"old -1"), 400),
        "huge old": (body(0, [], note).replace(b"old 0", b"old 99999999999999999999"), 400),
        "not base64": (b"old 0\n!!!!\n\n" + note, 400),
        "short hash": (b"old 0\nAAAA\n\n" + note, 400),
        "64 proof lines": (body(0, [b"\0" * 32] * 64, note), 400),
        "not UTF-8": (b"old 0\n\n\xff\xfe\n", 400),
        "not a checkpoint": (b"old 0\n\nhello\n\n\xe2\x80\x94 x AAAAAAA=\n", 400),
        "too large": (b"old 0\n\n" + b"a" * (MAX_BODY + 1), 413),
        "proof from 0": (body(0, [b"\0" * 32], note), 422),
        "size 0, wrong root": (body(0, [], sign_checkpoint(empty_root, ORIGIN, LOG_KEY)), 422),
    }
    for what, (request, status) in cases.items():
        assert witness.add_checkpoint(request).status == status, what
    assert witness.latest(ORIGIN) is None
    cosigns(witness, 0, t, [])  # and it still works


def test_witness_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Witness.open(state, {ORIGIN: [LOG]}) as first:
        cosigns(first, 0, tree(5), [])
        vkey = first.verifier.verifier_key()
        with pytest.raises(WorkspaceLocked):
            Witness.open(state, {ORIGIN: [LOG]})
    with Witness.open(state, {ORIGIN: [LOG]}) as again:
        assert again.verifier.verifier_key() == vkey
        assert again.add_checkpoint(body(0, [], tree(8).note())).body == b"5\n"
        assert again.add_checkpoint(body(5, [], tree(5, tag=b"x").note())).status == 422
        cosigns(again, 5, tree(8))
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    for name in ("witness.key", "witness.sqlite"):
        assert stat.S_IMODE(os.stat(state / name).st_mode) == 0o600
    with pytest.raises(InputError, match="named"):
        load_witness_key(state, name="another.example")


def test_concurrent_submissions_never_roll_back(witness: Witness) -> None:
    """tlog-witness: check-and-store is atomic, so of many racing requests from the same old
    size exactly one wins and the stored size never goes down."""
    cosigns(witness, 0, tree(2), [])
    bigger = [tree(n) for n in range(3, 11)]
    replies: list[int] = []

    def submit(t: Tree) -> None:
        replies.append(witness.add_checkpoint(body(2, t.proof(2), t.note())).status)

    threads = [threading.Thread(target=submit, args=(t,)) for t in bigger]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(replies) == [200] + [409] * (len(bigger) - 1)


# --- over HTTP -----------------------------------------------------------------------------


@pytest.fixture
def served(witness: Witness) -> Iterator[WitnessServer]:
    server = WitnessServer(witness, "127.0.0.1", 0, log=lambda line: None, request_deadline=0.5)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def raw_request(
    server: WitnessServer, method: str, path: str, body: bytes = b"", **headers: str
) -> tuple[int, bytes]:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=5)
    try:
        conn.putrequest(method, path)
        for name, value in headers.items():
            conn.putheader(name.replace("_", "-"), value)
        conn.endheaders()
        if body:
            conn.send(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_http_add_checkpoint_and_monitoring(served: WitnessServer, witness: Witness) -> None:
    endpoint = WitnessEndpoint(url=served.url, verifier=witness.verifier)
    t = tree(9)
    lines = request_cosignature(endpoint, t.note(), 0, [])
    verify_cosigned(t.note() + "".join(lines).encode(), [witness.verifier], 1)
    origin_hash = hashlib.sha256(ORIGIN.encode()).hexdigest()
    status, note = raw_request(served, "GET", f"/{origin_hash}/checkpoint")
    assert status == 200
    verify_cosigned(note, [witness.verifier], 1)
    assert raw_request(served, "GET", "/" + "0" * 64 + "/checkpoint")[0] == 404
    # hostile requests get their status and the server keeps serving
    assert raw_request(served, "POST", "/add-checkpoint")[0] == 411
    big = str(MAX_BODY + 1)
    assert raw_request(served, "POST", "/add-checkpoint", Content_Length=big)[0] == 413
    assert raw_request(served, "POST", "/add-checkpoint", b"x", Content_Length="1")[0] == 400
    assert raw_request(served, "POST", "/elsewhere", b"x", Content_Length="1")[0] == 404
    bigger = t.add(b"one more")
    lines = request_cosignature(endpoint, bigger.note(), 9, bigger.proof(9))
    verify_cosigned(bigger.note() + "".join(lines).encode(), [witness.verifier], 1)


def test_log_collects_cosignatures_and_recovers_from_a_conflict(
    tmp_path: Path, served: WitnessServer, witness: Witness
) -> None:
    endpoint = WitnessEndpoint(url=served.url, verifier=witness.verifier)
    problems: list[str] = []
    with AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN) as log:
        log.append_many([{"n": i} for i in range(4)])
        note, done = cosign_checkpoint(
            log, log.checkpoint(LOG_KEY), [endpoint], report=problems.append
        )
        assert done == [endpoint]
        assert log.latest_checkpoint() == note
        verify_cosigned(note, [witness.verifier], 1)
        log.append_many([{"n": i} for i in range(4, 9)])
        note, done = cosign_checkpoint(
            log, log.checkpoint(LOG_KEY), [endpoint], report=problems.append
        )
        assert done == [endpoint]
        assert witness.latest(ORIGIN)[0] == 9  # type: ignore[index]
    assert problems == []
    # a copy of the log that lost its cosignatures starts from 0, gets 409 and retries
    with AuditLog.open(tmp_path / "fresh.sqlite", origin=ORIGIN) as log:
        log.append_many([{"n": i} for i in range(12)])
        note, done = cosign_checkpoint(
            log, log.checkpoint(LOG_KEY), [endpoint], report=problems.append
        )
    assert (problems, done) == ([], [endpoint])
    assert witness.latest(ORIGIN)[0] == 12  # type: ignore[index]
    # a copy that rewrote history is refused, and says so
    with AuditLog.open(tmp_path / "fork.sqlite", origin=ORIGIN) as log:
        log.append_many([{"fork": i} for i in range(12)])
        note, done = cosign_checkpoint(
            log, log.checkpoint(LOG_KEY), [endpoint], report=problems.append
        )
    assert done == []
    [problem] = problems
    assert "refused" in problem
    assert "another history at size 12" in problem
    assert witness.latest(ORIGIN)[0] == 12  # type: ignore[index]


def test_unreachable_and_lying_witnesses_are_reported(
    tmp_path: Path, served: WitnessServer, witness: Witness
) -> None:
    impostor = WitnessEndpoint(url=served.url, verifier=verifier(witness.name, W3))
    nobody = WitnessEndpoint(url="http://127.0.0.1:9", verifier=verifier("nobody.example", W2))
    problems: list[str] = []
    with AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN) as log:
        log.append_many([{"n": 1}])
        note = log.checkpoint(LOG_KEY)
        cosigned, done = cosign_checkpoint(log, note, [impostor, nobody], report=problems.append)
    assert done == []
    assert cosigned == note
    assert len(problems) == 2
    assert "without its own cosignature" in problems[0]
    assert "unreachable" in problems[1]


def test_a_slow_drip_body_gets_408_in_time(served: WitnessServer, witness: Witness) -> None:
    """The deadline holds for the whole body, not for each read."""
    host, port = served.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=5) as sock:
        sock.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n")
        started = time.monotonic()
        reply = b""
        for _ in range(40):
            try:
                sock.sendall(b"o")
            except OSError:
                break
            time.sleep(0.05)
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                reply += sock.recv(4096)
            sock.setblocking(True)
            if reply:
                break
        elapsed = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert elapsed < 1.5
    endpoint = WitnessEndpoint(url=served.url, verifier=witness.verifier)
    assert request_cosignature(endpoint, tree(2).note(), 0, [])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    old=st.one_of(st.integers(min_value=0, max_value=2**64 + 5), st.text(max_size=5)),
    proof=st.lists(st.binary(min_size=0, max_size=40), max_size=4),
    cut=st.integers(min_value=0, max_value=400),
    flip=st.integers(min_value=0, max_value=400),
    junk=st.binary(max_size=30),
)
def test_any_body_gets_a_status_never_an_exception(
    witness: Witness, old: object, proof: list[bytes], cut: int, flip: int, junk: bytes
) -> None:
    note = bytearray(tree(3).note())
    if flip < len(note):
        note[flip] ^= 0x20
    lines = b"".join(base64.b64encode(h) + b"\n" for h in proof)
    request = b"old " + str(old).encode() + b"\n" + lines + b"\n" + bytes(note[: len(note) - cut])
    reply = witness.add_checkpoint(request + junk)
    assert reply.status in {200, 400, 403, 404, 409, 413, 422}
    assert reply.body.endswith(b"\n")


def test_a_slow_drip_of_headers_is_cut_off(served: WitnessServer, witness: Witness) -> None:
    host, port = served.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=5) as sock:
        started = time.monotonic()
        closed = False
        for char in b"POST /add-checkpoint HTTP/1.1\r\nHost: " + b"x" * 100:
            try:
                sock.sendall(bytes([char]))
            except OSError:
                closed = True
                break
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                if sock.recv(1) == b"":
                    closed = True
            sock.setblocking(True)
            if closed:
                break
            time.sleep(0.05)
        assert closed
        assert time.monotonic() - started < 2.5
    endpoint = WitnessEndpoint(url=served.url, verifier=witness.verifier)
    assert request_cosignature(endpoint, tree(2).note(), 0, [])


def test_connections_beyond_the_cap_are_closed(witness: Witness) -> None:
    server = WitnessServer(
        witness, "127.0.0.1", 0, log=lambda line: None, request_deadline=0.5, max_connections=2
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        idle = [socket.create_connection((str(host), int(port)), timeout=5) for _ in range(2)]
        time.sleep(0.2)
        with socket.create_connection((str(host), int(port)), timeout=5) as extra:
            assert extra.recv(1) == b""  # closed at once
        for sock in idle:
            assert sock.recv(1) == b""  # the idle ones are cut off after the deadline
            sock.close()
        endpoint = WitnessEndpoint(url=server.url, verifier=witness.verifier)
        assert request_cosignature(endpoint, tree(2).note(), 0, [])
    finally:
        server.shutdown()
        server.server_close()


class _Hostile(http.server.BaseHTTPRequestHandler):
    """A witness that answers with too much, or too slowly."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path.startswith("/huge"):
            self.send_response(200)
            self.send_header("Content-Length", str(10 * MAX_BODY))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(b"\xe2\x80\x94 " * (10 * MAX_BODY // 4))
        else:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_hostile_witness_replies_are_bounded_in_size_and_time(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    problems: list[str] = []
    try:
        with AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN) as log:
            log.append_many([{"n": 1}])
            note = log.checkpoint(LOG_KEY)
            witnesses = [
                WitnessEndpoint(url=f"{base}/huge", verifier=verifier("huge.example", W1)),
                WitnessEndpoint(url=f"{base}/slow", verifier=verifier("slow.example", W2)),
            ]
            started = time.monotonic()
            _, done = cosign_checkpoint(log, note, witnesses, report=problems.append, timeout=1.0)
            elapsed = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    assert done == []
    assert "larger than" in problems[0]
    assert "slow.example" in problems[1]
    assert "unreachable" in problems[1]
    assert elapsed < 4


# --- known answers (tests/kat/tlog_cosignature.json) -----------------------------------------

KAT = json.loads(
    (Path(__file__).resolve().parents[2] / "kat" / "tlog_cosignature.json").read_text("utf-8")
)


def test_kat_spec_example_parses_to_its_key_id_and_time() -> None:
    spec = KAT["c2sp_spec_example"]
    text, lines = split_note(spec["note"])
    name, key_id, raw, _ = lines[1]
    assert (name, f"{key_id:08x}") == (spec["witness_name"], spec["key_id"])
    assert len(raw) == 8 + 64
    assert int.from_bytes(raw[:8], "big") == spec["timestamp"]
    assert cosignature_message(text, spec["timestamp"]).decode() == spec["signed_message"]
    # with a key of that name that is not the witness's, the line is ignored, not trusted
    assert verify_cosignatures(spec["note"], [verifier(spec["witness_name"], W1)]) == []


def test_kat_ailedger_vector() -> None:
    vector = KAT["ailedger"]
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vector["seed_hex"]))
    line = cosign(vector["checkpoint"], vector["name"], key, timestamp=vector["timestamp"])
    assert line == vector["signature_line"]
    assert verifier(vector["name"], key).verifier_key() == vector["verifier_key"]
    result = verify_cosigned(vector["cosigned_note"], [vector["verifier_key"]], 1)
    assert result.cosignatures[0].timestamp == vector["timestamp"]


# --- the witness's invariant ---------------------------------------------------------------

#: One honest history of 40 leaves and three forks of it (at 0, 5 and 17 leaves).
HISTORIES = [[b"e%d" % i for i in range(40)]] + [
    [b"e%d" % i for i in range(at)] + [b"fork%d-%d" % (at, i) for i in range(40 - at)]
    for at in (0, 5, 17)
]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    moves=st.lists(
        st.tuples(st.integers(0, len(HISTORIES) - 1), st.integers(0, 40), st.booleans()),
        min_size=1,
        max_size=12,
    )
)
def test_cosigned_heads_always_form_one_append_only_history(
    tmp_path_factory: pytest.TempPathFactory, moves: list[tuple[int, int, bool]]
) -> None:
    """Whatever a log shows a witness (forks, rollbacks, replays, stale old sizes), all it
    cosigns is one history: sizes never shrink and each head extends the one before."""
    cosigned: list[tuple[int, bytes]] = []
    with Witness.open(tmp_path_factory.mktemp("w"), {ORIGIN: [LOG]}) as witness:
        for which, size, knows_old in moves:
            t = Tree(*HISTORIES[which][:size])
            stored = witness.latest(ORIGIN)
            old = stored[0] if stored is not None and knows_old else 0
            proof = t.proof(old) if 0 < old <= size else []
            reply = witness.add_checkpoint(body(old, proof, t.note()))
            if reply.status != 200:
                assert reply.status in {400, 409, 422}
                continue
            if cosigned:
                before_size, before_root = cosigned[-1]
                assert before_size <= size
                assert _merkle.tree_hash(before_size, t.store) == before_root
            cosigned.append((size, t.store.root()))
