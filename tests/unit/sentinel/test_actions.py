"""Acting on alerts: audit entries, webhooks against a local receiver, hooks, mitigations."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ailedger.auditlog import AuditLog
from ailedger.errors import InputError
from ailedger.sentinel.actions import (
    AnchorDeferral,
    AuditAction,
    Delivery,
    TrainingExclusion,
    WebhookDispatcher,
    alert_id,
    run_hooks,
    verify_signature,
)

ALERT: dict[str, Any] = {
    "tx": "0x" + "ab" * 32,
    "block": 12,
    "class": "sandwich",
    "detector": "rules.sandwich",
    "score": 1.0,
    "accounts": ["0x00000000000000000000000000000000000000aA"],
    "reasons": [["same_pool", 1, "front and back run in one pool"]],
}


@dataclass
class Receiver:
    """A local webhook receiver that fails the first ``failures`` requests with ``status``."""

    failures: int = 0
    status: int = 503
    retry_after: str | None = None
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                state.requests.append((dict(self.headers.items()), body))
                failing = len(state.requests) <= state.failures
            self.send_response(state.status if failing else 204)
            if failing and state.retry_after is not None:
                self.send_header("Retry-After", state.retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook?x=1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_alert_is_appended_to_the_audit_log_and_retracted_by_a_new_entry(tmp_path: Path) -> None:
    log = AuditLog.open(tmp_path / "log.sqlite", origin="sentinel.example/log")
    try:
        action = AuditAction(log)
        first = action(ALERT)
        second = action.retract(ALERT, reason="block 12 dropped by a reorg")
        assert (first, second) == (0, 1)
        entry = json.loads(log.entry_data(0))
        assert entry["type"] == "sentinel.alert"
        assert entry["alert"]["class"] == "sandwich"
        assert entry["alert_id"] == alert_id(ALERT)
        retraction = json.loads(log.entry_data(1))
        assert retraction["type"] == "sentinel.retraction"
        assert retraction["alert_id"] == entry["alert_id"]
    finally:
        log.close()


def test_an_alert_without_tx_or_class_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'class'"):
        AuditAction(AuditLog.open(tmp_path / "l.sqlite", origin="x.example/l"))({"tx": "0x1"})


def test_webhook_retries_server_errors_then_delivers_signed_body(receiver: Receiver) -> None:
    receiver.failures = 2
    outcomes: list[Delivery] = []
    with WebhookDispatcher(
        [receiver.url], secret=b"s3cret", backoff=0.01, outcomes=outcomes.append
    ) as dispatcher:
        dispatcher.submit(ALERT)
    assert len(outcomes) == 1
    assert outcomes[0].delivered and outcomes[0].attempts == 3 and outcomes[0].status == 204
    assert len(receiver.requests) == 3
    ids = {headers["X-Ailedger-Delivery"] for headers, _ in receiver.requests}
    assert ids == {alert_id(ALERT)}, "one delivery id across retries, so receivers dedupe"
    headers, body = receiver.requests[-1]
    assert headers["X-Ailedger-Attempt"] == "3"
    assert verify_signature(b"s3cret", body, headers["X-Ailedger-Signature"])
    assert not verify_signature(b"other", body, headers["X-Ailedger-Signature"])
    assert json.loads(body)["tx"] == ALERT["tx"]


def test_webhook_does_not_retry_a_client_error(receiver: Receiver) -> None:
    receiver.failures, receiver.status = 5, 400
    outcomes: list[Delivery] = []
    with WebhookDispatcher([receiver.url], backoff=0.01, outcomes=outcomes.append) as d:
        d.submit(ALERT)
    assert [(o.delivered, o.attempts, o.status) for o in outcomes] == [(False, 1, 400)]


def test_webhook_honours_retry_after_on_429(receiver: Receiver) -> None:
    receiver.failures, receiver.status, receiver.retry_after = 1, 429, "1"
    dispatcher = WebhookDispatcher([receiver.url], backoff=0.0, max_backoff=5)
    outcome = dispatcher.deliver(receiver.url, b"{}", "d1")
    assert outcome.delivered and outcome.attempts == 2


def test_webhook_gives_up_after_its_retries_on_a_dead_endpoint() -> None:
    # a port nobody listens on: connection refused every time
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dispatcher = WebhookDispatcher([f"http://127.0.0.1:{port}/"], retries=2, backoff=0.01)
    outcome = dispatcher.deliver(f"http://127.0.0.1:{port}/", b"{}", "d1")
    assert not outcome.delivered and outcome.attempts == 3 and outcome.status is None
    assert "Connection" in outcome.error or "refused" in outcome.error.lower()


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/", "http://", "http://u:p@127.0.0.1/", "http://127.0.0.1:99999/"]
)
def test_bad_webhook_urls_are_refused_at_configuration(url: str) -> None:
    with pytest.raises(InputError):
        WebhookDispatcher([url])


def test_a_full_queue_drops_and_counts_instead_of_blocking(receiver: Receiver) -> None:
    dispatcher = WebhookDispatcher([receiver.url], queue_size=2)
    for _ in range(5):
        dispatcher.submit(ALERT)  # not started: nothing drains the queue
    assert dispatcher.dropped == 3


def test_a_failing_hook_is_reported_and_the_others_still_run() -> None:
    seen: list[str] = []

    def broken(alert: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    failures = run_hooks([("broken", broken), ("ok", lambda a: seen.append(a["tx"]))], ALERT)
    assert failures == [("broken", "RuntimeError: boom")]
    assert seen == [ALERT["tx"]]


def test_training_exclusion_marks_only_parties_of_the_task(tmp_path: Path) -> None:
    path = tmp_path / "exclusions.json"
    party = "0x00000000000000000000000000000000000000aa"
    hook = TrainingExclusion(path, task="0xtask", parties=[party, "0x" + "bb" * 20])
    assert hook(ALERT) == [party]
    assert hook(ALERT) == [party]  # the same alert twice marks once
    other = dict(ALERT, accounts=["0x" + "cc" * 20])
    assert hook(other) == []
    assert TrainingExclusion.marked(path, "0xtask") == {party: [alert_id(ALERT)]}
    assert TrainingExclusion.marked(path, "0xother") == {}


def test_anchor_deferral_holds_sends_during_congestion_within_a_cap(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "defer.json"
    deferral = AnchorDeferral(path, hold=60, max_hold=150, clock=lambda: now[0])
    assert deferral(ALERT) is None  # a sandwich is not congestion
    assert AnchorDeferral.deferred_until(path, clock=lambda: now[0]) is None
    flood = dict(ALERT, **{"class": "spam_flood"})
    assert deferral(flood) == 1060
    now[0] = 1050
    assert deferral(flood) == 1110
    now[0] = 1100
    assert deferral(flood) == 1150  # capped at since + max_hold, however long the alarm rings
    assert AnchorDeferral.deferred_until(path, clock=lambda: now[0]) == 1150
    now[0] = 1151
    assert AnchorDeferral.deferred_until(path, clock=lambda: now[0]) is None


def test_a_corrupted_state_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "exclusions.json"
    path.write_text('{"tasks": {"t": 1}, "tasks": {}}')
    with pytest.raises(InputError, match="duplicate"):
        TrainingExclusion.marked(path, "t")


HOSTILE_STATES = [
    b"[" * 100_000 + b"]" * 100_000,  # nested far past the recursion limit
    b"\xff\xfe not utf-8",
    b'"just a string"',
    b'{"tasks": [1, 2, 3]}',
    b'{"tasks": {"t": [1]}}',
    b'{"tasks": {"t": {"0x00000000000000000000000000000000000000aa": "not a list"}}}',
    b'{"tasks": {"t": {"0x00000000000000000000000000000000000000aa": [{"deep": [[]]}]}}}',
    b'{"since": "yesterday", "until": [1]}',
    b'{"since": true, "until": 1e999}',
    b'{"until": NaN}',
    b"{" + b" " * (2 << 20) + b"}",  # larger than a state file may be
]


@pytest.mark.parametrize("data", HOSTILE_STATES, ids=range(len(HOSTILE_STATES)))
def test_hostile_state_files_give_input_errors_or_are_ignored(tmp_path: Path, data: bytes) -> None:
    """exclusions.json and defer.json are files anyone with the folder could have written: each
    reader and writer either works on them or refuses with InputError, never another error."""
    path = tmp_path / "state.json"
    party = "0x00000000000000000000000000000000000000aa"
    alert = dict(ALERT, **{"class": "spam_flood", "accounts": [party]})
    calls: list[Callable[[], object]] = [
        lambda: TrainingExclusion.marked(path, "t"),
        lambda: TrainingExclusion(path, task="t", parties=[party])(alert),
        lambda: AnchorDeferral.deferred_until(path, clock=lambda: 1000.0),
        lambda: AnchorDeferral(path, clock=lambda: 1000.0)(alert),
    ]
    refusals: list[str] = []
    for call in calls:
        path.write_bytes(data)
        try:
            call()
        except InputError as exc:
            refusals.append(str(exc))
    assert all("\n" not in r and len(r) < 600 for r in refusals), refusals
