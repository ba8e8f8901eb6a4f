"""The audit API (ailedger.service.api and app) in process, over a temporary log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from ailedger._input import _check_depth
from ailedger.auditlog import AuditLog
from ailedger.auditlog.checkpoint import open_checkpoint
from ailedger.auditlog.proof import verify_receipt
from ailedger.errors import NodeUnavailable, VerificationError, WorkspaceLocked
from ailedger.service.api import _nesting_at_most
from ailedger.service.app import create_app
from ailedger.service.auth import ApiKeys, Scope
from ailedger.service.background import AnchorLoop, CheckpointSigner
from ailedger.service.context import ServiceContext
from ailedger.workspace import Workspace

ORIGIN = "api.example/log"
MAX_BODY = 256 * 1024


@dataclass
class Service:
    client: TestClient
    log: AuditLog
    key: Ed25519PrivateKey
    tokens: dict[str, str]

    def auth(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[scope]}"}

    def wait_for_checkpoint(self, size: int, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            health = self.client.get("/healthz").json()
            if health["checkpoint_size"] is not None and health["checkpoint_size"] >= size:
                return self.client.get("/log/checkpoint").content
            assert time.monotonic() < deadline, health
            time.sleep(0.02)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    log = AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN)
    keys = ApiKeys(path=tmp_path / "service" / "api_keys.sqlite", refresh_interval=0.0)
    tokens = {scope.value: keys.create([scope])[1] for scope in Scope}
    key = Ed25519PrivateKey.generate()
    ctx = ServiceContext(workspace=Workspace(path=tmp_path, config={}), log=log, keys=keys)
    signer = CheckpointSigner(log, key, interval=0.05)
    app = create_app(ctx, max_body=MAX_BODY, signer=signer)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Service(client=client, log=log, key=key, tokens=tokens)
    keys.close()
    log.close()


def one_line_error(response: Any, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str) and body["error"] and "\n" not in body["error"]
    return str(body["error"])


# -- appending and reading back ---------------------------------------------------------------


def test_append_one_and_a_batch_read_back_and_prove(service: Service) -> None:
    client, log = service.client, service.log
    append = service.auth("append")
    one = client.post(
        "/v1/entries", json={"decision": "approve", "applicant": "A-1"}, headers=append
    )
    assert (one.status_code, one.json()) == (201, {"index": 0})
    batch = [{"decision": "deny", "n": i, "ssn": f"{i:09d}"} for i in range(3)]
    many = client.post("/v1/entries", params={"sensitive": "ssn"}, json=batch, headers=append)
    assert (many.status_code, many.json()) == (201, {"first": 1, "count": 3})
    assert log.size == 4

    public = client.get("/v1/entries/2")
    assert public.status_code == 200
    doc = public.json()
    assert doc["record"]["n"] == 1 and set(doc["record"]["ssn"]) == {"commitment"}
    assert doc["private"] is None and "000000001" not in public.text
    private = client.get("/v1/entries/2", headers=service.auth("read")).json()
    assert private["private"] == {"ssn": "000000001"}
    assert private["leaf_hash"] == log.show(2).leaf_hash.hex()
    # an append-only key reads what anyone reads, not the private values
    assert client.get("/v1/entries/2", headers=append).json()["private"] is None

    note = service.wait_for_checkpoint(4)
    verifier = log.verifier(service.key.public_key())
    assert open_checkpoint(note, [verifier], origin=ORIGIN).size >= 4
    for index in range(4):
        proof = client.get(f"/v1/entries/{index}/proof")
        assert proof.status_code == 200
        assert proof.headers["content-type"].startswith("text/plain")
        checkpoint = verify_receipt(
            proof.content, [verifier], entry=log.entry_data(index), origin=ORIGIN
        )
        assert checkpoint.size >= 4
        with pytest.raises(VerificationError):
            verify_receipt(proof.content, [verifier], entry=b'{"forged":1}', origin=ORIGIN)

    erased = client.post("/v1/entries/2/erase", headers=service.auth("admin"))
    assert (erased.status_code, erased.json()) == (200, {"index": 2, "erased": True})
    after = client.get("/v1/entries/2", headers=service.auth("read")).json()
    assert after["private"] == {"ssn": None}
    assert client.get("/v1/anchors").json() == []


def test_proof_waits_for_a_checkpoint(tmp_path: Path) -> None:
    # without a signer nothing signs: an entry not covered yet answers 425 with Retry-After
    log = AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN)
    ctx = ServiceContext(workspace=Workspace(path=tmp_path, config={}), log=log)
    with log, TestClient(create_app(ctx)) as client:
        assert one_line_error(client.get("/log/checkpoint"), 404)
        assert client.post("/v1/entries", json={"a": 1}).json() == {"index": 0}
        early = client.get("/v1/entries/0/proof")
        assert "not covered by a signed checkpoint" in one_line_error(early, 425)
        assert early.headers["retry-after"] == "1"
        log.checkpoint(Ed25519PrivateKey.generate())
        assert client.get("/v1/entries/0/proof").status_code == 200


# -- bad input: the right 4xx, one line, nothing appended --------------------------------------

BAD_BODIES: list[tuple[str, bytes, dict[str, Any], int, str]] = [
    ("malformed JSON", b'{"a": 1', {}, 400, "not JSON"),
    ("duplicate keys", b'{"a": 1, "a": 2}', {}, 400, "duplicate"),
    ("invalid UTF-8", b'{"a": "\xff"}', {}, 400, "UTF-8"),
    ("too deep", b"[" * 1000 + b"]" * 1000, {}, 400, "deep"),
    ("a string", b'"hello"', {}, 422, "string"),
    ("a number", b"12", {}, 422, "number"),
    ("empty batch", b"[]", {}, 422, "empty"),
    ("non-object in batch", b'[{"a": 1}, 2, {"b": 3}]', {}, 422, "item 1"),
    # what the batch path's decoder leaves to the exact one (ailedger.auditlog.records)
    ("duplicate keys in a batch", b'[{"a": 1}, {"b": {"c": 1, "c": 2}}]', {}, 400, "duplicate"),
    ("NaN in a batch", b'[{"a": 1}, {"b": NaN}]', {}, 400, "NaN"),
    ("overflow in a batch", b'[{"a": 1}, {"b": 1e999}]', {}, 400, "finite"),
    ("lone surrogate in a batch", b'[{"a": "\\ud800"}]', {}, 400, "surrogate"),
    ("unsafe integer in a batch", b'[{"a": 9007199254740993}]', {}, 422, "canonicalised"),
    ("entry too large in a batch", json.dumps([{"a": "x" * 70_000}]).encode(), {}, 422, "at most"),
    ("null in batch", b'[{"a": 1}, null]', {}, 422, "item 1"),
    ("missing sensitive field", b'{"a": 1}', {"sensitive": "ssn"}, 422, "ssn"),
    (
        "sensitive field missing from the last of a batch",
        b'[{"ssn": 1}, {"ssn": 2}, {"a": 3}]',
        {"sensitive": "ssn"},
        422,
        "ssn",
    ),
    ("sensitive twice", b'{"ssn": 1}', {"sensitive": ["ssn", "ssn"]}, 400, "twice"),
    ("entry too large", json.dumps({"a": "x" * 70_000}).encode(), {}, 422, "at most"),
    ("batch too large", b"[" + b",".join([b"{}"] * 10_001) + b"]", {}, 413, "10000"),
    ("body too large", b'{"a": "' + b"x" * MAX_BODY + b'"}', {}, 413, "larger than"),
]


@pytest.mark.parametrize(
    ("body", "params", "status", "needle"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
def test_bad_bodies_append_nothing(
    service: Service, body: bytes, params: dict[str, Any], status: int, needle: str
) -> None:
    client = service.client
    assert client.post("/v1/entries", json={"seed": 1}, headers=service.auth("append")).json() == {
        "index": 0
    }
    response = client.post(
        "/v1/entries",
        content=body,
        params=params,
        headers={**service.auth("append"), "Content-Type": "application/json"},
    )
    assert needle in one_line_error(response, status)
    assert service.log.size == 1
    assert service.log.stored_count() == 1


def test_a_chunked_body_over_the_limit_is_refused(service: Service) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"a": "'
        for _ in range(MAX_BODY // 4096 + 2):
            yield b"x" * 4096
        yield b'"}'

    response = service.client.post("/v1/entries", content=chunks(), headers=service.auth("append"))
    assert "larger than" in one_line_error(response, 413)
    assert service.log.size == 0


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/entries/abc", 400),
        ("/v1/entries/1.5", 400),
        ("/v1/entries/%D9%A1", 400),  # an Arabic-Indic digit one
        ("/v1/entries/" + "9" * 40, 400),
        ("/v1/entries/1", 404),
        ("/v1/entries/-1", 404),
        ("/v1/entries/" + "9" * 25, 404),
        ("/v1/entries/7/proof", 404),
        ("/v1/entries/x/proof", 400),
    ],
)
def test_bad_indexes(service: Service, path: str, status: int) -> None:
    service.client.post("/v1/entries", json={"a": 1}, headers=service.auth("append"))
    one_line_error(service.client.get(path), status)


def test_keys_and_scopes(service: Service) -> None:
    client = service.client
    assert "API key is required" in one_line_error(client.post("/v1/entries", json={"a": 1}), 401)
    one_line_error(client.post("/v1/entries", json={"a": 1}, headers=service.auth("read")), 403)
    one_line_error(
        client.post("/v1/entries", json={"a": 1}, headers={"Authorization": "Bearer nope"}), 401
    )
    assert service.log.size == 0
    client.post("/v1/entries", json={"a": 1}, headers=service.auth("append"))
    one_line_error(client.post("/v1/entries/0/erase", headers=service.auth("append")), 403)
    one_line_error(client.post("/v1/entries/0/erase"), 401)
    assert client.post("/v1/entries/0/erase", headers=service.auth("admin")).status_code == 200


def test_unknown_route_and_method_are_json(service: Service) -> None:
    one_line_error(service.client.get("/v1/nothing"), 404)
    one_line_error(service.client.delete("/v1/entries"), 405)


# -- concurrency --------------------------------------------------------------------------------


def test_concurrent_single_appends_get_distinct_indexes(service: Service) -> None:
    client, headers = service.client, service.auth("append")
    got: dict[int, dict[str, int]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(thread: int) -> None:
        try:
            for n in range(200 // 16 + 1):
                record = {"thread": thread, "n": n}
                response = client.post("/v1/entries", json=record, headers=headers)
                assert response.status_code == 201, response.text
                with lock:
                    got[response.json()["index"]] = record
                if n % 4 == 0:  # a bad record, committed in a group with good ones, fails alone
                    bad = client.post("/v1/entries", json={"big": "x" * 70_000}, headers=headers)
                    assert bad.status_code == 422, bad.text
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    total = 16 * (200 // 16 + 1)
    assert sorted(got) == list(range(total))  # distinct, none lost
    assert service.log.size == total
    for index, record in got.items():
        assert json.loads(service.log.entry_data(index)) == record


# -- metrics and health -------------------------------------------------------------------------


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_metrics_and_healthz(service: Service) -> None:
    client, headers = service.client, service.auth("append")
    client.post("/v1/entries", json={"a": 1}, headers=headers)
    client.post("/v1/entries", json=[{"b": i} for i in range(5)], headers=headers)
    client.post("/v1/entries", content=b"[]", headers=headers)
    service.wait_for_checkpoint(6)
    health = client.get("/healthz")
    assert health.json() == {"status": "ok", "size": 6, "checkpoint_size": 6}
    text = client.get("/metrics").text
    assert metric(text, "ailedger_appends_total") == 6
    assert metric(text, "ailedger_log_size") == 6
    assert metric(text, "ailedger_checkpoint_size") == 6
    assert metric(text, 'ailedger_append_seconds_count{kind="single"}') == 1
    assert metric(text, 'ailedger_append_seconds_count{kind="batch"}') == 1
    assert metric(text, "ailedger_batch_entries_sum") == 5
    assert metric(text, 'ailedger_http_responses_total{status="201"}') == 2
    assert metric(text, 'ailedger_http_responses_total{status="422"}') == 1
    schema = client.get("/openapi.json").json()
    assert {"/v1/entries", "/v1/entries/{index}/proof", "/log/checkpoint"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 404  # no page that loads a CDN's scripts


# -- anchoring through an outage ----------------------------------------------------------------


def test_anchor_loop_backs_off_through_an_outage_and_reports_the_lag(tmp_path: Path) -> None:
    # a node on a port nothing listens on: the real connection error, translated by the ledger
    from contextlib import contextmanager

    from ailedger.auditlog.anchoring import Anchorer
    from ailedger.ledger import AnchorRegistry, Ledger, LedgerSettings

    log = AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN)
    settings = LedgerSettings(retries=1, backoff=0.01, backoff_max=0.01)

    @contextmanager
    def unreachable() -> Iterator[Anchorer]:
        with Ledger.connect("http://127.0.0.1:9", settings=settings) as ledger:
            registry = AnchorRegistry(ledger=ledger, address="0x" + "11" * 20)
            yield Anchorer(log=log, registry=registry, key=Ed25519PrivateKey.generate())

    with log:
        log.append_many([{"n": i} for i in range(5)])
        loop = AnchorLoop(log, unreachable, every_entries=2, every_seconds=60, tick=0.05)
        assert loop.due() and loop.lag_entries() == 5
        assert loop.step() is False
        assert isinstance(loop.last_error, NodeUnavailable)
        assert loop.failures == 1 and not loop.due()  # backing off
        assert loop.lag_entries() == 5 and loop.lag_seconds() > 0
        log.append({"n": 5})  # appends go on during the outage
        assert loop.lag_entries() == 6


# -- the write lock's holder --------------------------------------------------------------------


def test_a_writer_finds_the_serving_holder_at_once(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    code = (
        "import sys, time\n"
        "from ailedger.auditlog import AuditLog\n"
        f"log = AuditLog.open({str(path)!r}, origin={ORIGIN!r})\n"
        "log.announce_holder(url='http://127.0.0.1:8123')\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        started = time.monotonic()
        with pytest.raises(WorkspaceLocked) as caught:
            AuditLog.open(path, lock_timeout=10)
        assert time.monotonic() - started < 2  # at once, not after the 10 s timeout
        assert str(caught.value) == (
            f"the workspace is held by `ailedger serve` (pid {holder.pid} at "
            "http://127.0.0.1:8123): write through its API, or stop it"
        )
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    # the holder is gone: its description, still in the file, blocks nobody
    assert b"ailedger serve" in (tmp_path / "log.sqlite.lock").read_bytes()
    with AuditLog.open(path) as log:
        assert log.size == 0
    assert (tmp_path / "log.sqlite.lock").read_bytes() == b""


def test_a_description_naming_a_dead_process_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    AuditLog.open(path, origin=ORIGIN).close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "log.sqlite.lock"
    lock.write_text(json.dumps({"holder": "ailedger serve", "pid": dead.pid, "url": "http://x"}))
    # held by this process (another open of it) while the description names a dead process:
    # the usual wait and message, not the serve one
    with AuditLog.open(path) as log:
        log.announce_holder(url="http://127.0.0.1:1")
        fd = os.open(lock, os.O_RDWR)
        try:
            os.pwrite(fd, json.dumps({"holder": "ailedger serve", "pid": dead.pid}).encode(), 0)
            os.ftruncate(fd, len(json.dumps({"holder": "ailedger serve", "pid": dead.pid})))
        finally:
            os.close(fd)
        with pytest.raises(WorkspaceLocked, match="being written by another process"):
            AuditLog.open(path, lock_timeout=0.1)


def test_the_service_anchors_in_the_background(tmp_path: Path) -> None:
    from contextlib import contextmanager

    from ailedger.auditlog.anchoring import Anchorer

    def passphrase() -> str:
        return "correct horse battery staple"

    ws = Workspace.init(tmp_path / "ws", passphrase=passphrase, unsafe_fast_kdf=True)
    key = ws.signing_key(passphrase)
    log = AuditLog.for_workspace(ws)

    @contextmanager
    def open_anchorer() -> Iterator[Anchorer]:
        with ws.ledger(passphrase=passphrase) as ledger:
            yield Anchorer(log=log, registry=ws.anchor_registry(ledger), key=key)

    loop = AnchorLoop(log, open_anchorer, every_entries=3, every_seconds=60, tick=0.05)
    ctx = ServiceContext(workspace=ws, log=log)
    app = create_app(ctx, signer=CheckpointSigner(log, key, interval=0.05), anchor_loop=loop)
    with log, TestClient(app) as client:
        assert client.post("/v1/entries", json=[{"n": i} for i in range(5)]).status_code == 201
        deadline = time.monotonic() + 30
        while True:
            anchors = client.get("/v1/anchors").json()
            confirmed = [a for a in anchors if a["status"] in ("anchored", "final")]
            if confirmed and confirmed[-1]["size"] == 5:
                break
            assert time.monotonic() < deadline, anchors
            time.sleep(0.05)
        assert confirmed[-1]["block_number"] is not None
        assert confirmed[-1]["root"] == "0x" + log.root(5).hex()
        while metric(text := client.get("/metrics").text, "ailedger_anchor_lag_entries") != 0:
            assert time.monotonic() < deadline, text  # the loop has not seen its receipt yet
            time.sleep(0.05)
        assert metric(text, "ailedger_anchor_failures") == 0
        assert metric(text, "ailedger_anchor_deferred") == 0  # no fee advisor: never deferred
        client.post("/v1/entries", json={"n": 5})
        assert metric(client.get("/metrics").text, "ailedger_anchor_lag_entries") == 1


# -- the hot path: FastAppend and the body's depth scan -----------------------------------------


def test_fast_path_and_fastapi_route_answer_alike(tmp_path: Path) -> None:
    log = AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN)
    keys = ApiKeys(path=tmp_path / "service" / "api_keys.sqlite", refresh_interval=0.0)
    _, token = keys.create([Scope.APPEND])
    ctx = ServiceContext(workspace=Workspace(path=tmp_path, config={}), log=log, keys=keys)
    app = create_app(ctx, max_body=MAX_BODY)
    headers = {"Authorization": f"Bearer {token}"}
    cases: list[tuple[dict[str, Any], int, Any]] = [
        ({"json": {"a": 1}}, 201, None),
        ({"json": [{"b": 1}, {"b": 2}]}, 201, None),
        ({"json": {"ssn": 1}, "params": {"sensitive": "ssn"}}, 201, None),
        ({"content": b"[1]"}, 422, "item 0"),
        ({"content": b'{"a":'}, 400, "not JSON"),
        ({"json": {"a": 1}, "params": {"sensitive": ""}}, 400, "not a field name"),
    ]
    answers: dict[bool, list[tuple[int, Any]]] = {}
    with log, keys, TestClient(app, raise_server_exceptions=False) as client:
        for fast in (True, False):
            if not fast:
                app.fast_append = None  # type: ignore[attr-defined]
            got = []
            for kwargs, status, needle in cases:
                response = client.post("/v1/entries", headers=headers, **kwargs)
                if needle is None:
                    assert response.status_code == status, response.text
                    body = response.json()
                    got.append((status, sorted(body)))  # indexes differ between the rounds
                else:
                    assert needle in one_line_error(response, status)
                    got.append((status, needle))
            answers[fast] = got
        assert answers[True] == answers[False]
        assert log.size == 2 * 4
        one_line_error(client.post("/v1/entries", json={"a": 1}), 401)
        metrics = client.get("/metrics").text
    # the fast path counted its answers too: 3 + 3 created, 4 + 4 refused (one is a 401)
    assert metric(metrics, 'ailedger_http_responses_total{status="201"}') == 6
    assert metric(metrics, 'ailedger_http_responses_total{status="401"}') == 1


def test_a_revoked_key_is_refused_on_the_fast_path(service: Service) -> None:
    keys = service.client.app.state.service.keys  # type: ignore[attr-defined]
    key, token = keys.create([Scope.APPEND], name="short-lived")
    headers = {"Authorization": f"Bearer {token}"}
    assert service.client.post("/v1/entries", json={"a": 1}, headers=headers).status_code == 201
    assert keys.revoke(key.id)
    refused = service.client.post("/v1/entries", json={"a": 2}, headers=headers)
    assert "revoked" in one_line_error(refused, 401)
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert service.log.size == 1


def test_a_malformed_content_length_is_refused(service: Service) -> None:
    import anyio

    app = service.client.app
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b'{"a": 1}', "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/entries",
        "query_string": b"",
        "headers": [
            (b"content-length", b"8x"),
            (b"authorization", f"Bearer {service.tokens['append']}".encode()),
        ],
    }
    anyio.run(app, scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"]) == {"error": "malformed Content-Length"}
    assert service.log.size == 0


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


_TRICKY_TEXT = st.text(alphabet='[]{}"\\ab\n\u00e9', max_size=8)
_VALUES = st.recursive(
    st.none() | st.integers() | _TRICKY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TRICKY_TEXT, inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=150, deadline=None)
@given(value=_VALUES, limit=st.integers(min_value=0, max_value=8))
def test_the_depth_scan_is_exact_on_json(value: Any, limit: int) -> None:
    body = json.dumps(value, ensure_ascii=False).encode()
    assert _nesting_at_most(body, limit) == (_depth(value) <= limit)


@settings(max_examples=150, deadline=None)
@given(
    value=_VALUES,
    cut=st.integers(min_value=0, max_value=400),
    junk=st.binary(max_size=4),
    limit=st.integers(min_value=0, max_value=6),
)
def test_the_depth_scan_never_passes_what_is_too_deep(
    value: Any, cut: int, junk: bytes, limit: int
) -> None:
    # broken JSON too: whenever the scan says "shallow enough", the exact check agrees
    body = json.dumps(value, ensure_ascii=False).encode()
    broken = body[:cut] + junk + body[cut:]
    if _nesting_at_most(broken, limit):
        text = broken.decode("utf-8", errors="replace")
        _check_depth(text, limit, "body")  # raises InputError if deeper than limit
