"""Acting on alerts: audit them, post them to webhooks, and hand them to mitigation hooks.

Every alert the sentinel raises is a decision an AI made about the chain, so it is audited like
any other: :class:`AuditAction` appends it to the workspace's log (and appends a retraction when
the block it came from is dropped by a reorg; the log is append-only, so nothing is rewritten).

:class:`WebhookDispatcher` posts each alert as JSON to configured URLs from a background thread,
so a slow receiver never holds up scoring. Deliveries carry an id (the same on every retry, so a
receiver can drop duplicates) and, with a shared secret, an HMAC-SHA256 of the body in
``X-Ailedger-Signature: sha256=<hex>`` (the scheme GitHub and Stripe use for their webhooks).
Failed deliveries are retried with exponential backoff and full jitter (Brooker, "Exponential
Backoff And Jitter", AWS Architecture Blog, 2015): connection errors, timeouts, 408, 429 (whose
``Retry-After`` is honoured up to the backoff cap) and 5xx are retried; other 4xx answers are
final. The queue is bounded: when it is full, new alerts are counted as dropped, never block.

Mitigation hooks are callables ``hook(alert)``; users add their own through the Python entry
point group ``ailedger.sentinel.hooks``. A failing hook is reported and the others still run.
Two are built in: :class:`TrainingExclusion` marks a training party named by an alert for the
exclusion vote, and :class:`AnchorDeferral` asks the anchoring service to hold its sends while
a fee spike or spam flood is under way. Both keep their state in small JSON files in the
workspace (written atomically) so other processes read them.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import math
import queue
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, TypeGuard

from ailedger._fs import write_atomic
from ailedger._input import parse_json
from ailedger.errors import InputError

__all__ = [
    "HOOK_GROUP",
    "AlertLike",
    "AnchorDeferral",
    "AuditAction",
    "Delivery",
    "TrainingExclusion",
    "WebhookDispatcher",
    "alert_document",
    "alert_id",
    "json_safe",
    "load_hooks",
    "run_hooks",
    "verify_signature",
]

log = logging.getLogger(__name__)

#: entry point group where users register their own mitigation hooks
HOOK_GROUP = "ailedger.sentinel.hooks"

#: attack classes that mean the chain is congested on purpose or by accident
CONGESTION_CLASSES = frozenset({"spam_flood", "fee_spike"})

_MAX_STATE_BYTES = 1 << 20


class AlertLike(Protocol):
    """Anything with a JSON form: the detectors' alerts."""

    def to_json(self) -> dict[str, Any]: ...


def alert_document(alert: AlertLike | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON form of ``alert`` (an object with ``to_json()`` or a mapping), checked.

    It must name the transaction (``tx``) and the attack ``class``; anything else is kept.
    """
    doc: dict[str, Any] = json_safe(dict(alert) if isinstance(alert, Mapping) else alert.to_json())
    for key in ("tx", "class"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise InputError(f"an alert needs a non-empty string {key!r}")
    return doc


#: integers beyond this lose precision in IEEE 754 doubles (RFC 8785 refuses them)
_SAFE_INT = 2**53 - 1


def json_safe(value: Any) -> Any:
    """``value`` with integers beyond 2**53 - 1 in magnitude written as decimal strings.

    Token amounts (uint256) exceed what JSON numbers carry exactly in most readers and what
    RFC 8785 canonical JSON (the audit log's encoding) accepts; as strings they keep every
    digit, as Ethereum's own JSON-RPC does with hex quantities.
    """
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -_SAFE_INT <= value <= _SAFE_INT else str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def alert_id(doc: Mapping[str, Any]) -> str:
    """A stable id for an alert: the same transaction, class and detector give the same id."""
    key = json.dumps(
        [doc.get("tx"), doc.get("class"), doc.get("detector", "")], separators=(",", ":")
    )
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _accounts(doc: Mapping[str, Any]) -> set[str]:
    """The accounts an alert names (``accounts``, ``sender``, ``from``), lower-cased."""
    found: set[str] = set()
    for key in ("accounts", "sender", "from", "attacker"):
        value = doc.get(key)
        values = value if isinstance(value, list | tuple) else [value]
        found.update(v.lower() for v in values if isinstance(v, str) and v.startswith("0x"))
    return found


# ------------------------------------------------------------------------------- audit log


class _Appender(Protocol):
    def append(self, record: Mapping[str, Any], *, sensitive: Any = ()) -> int: ...


class AuditAction:
    """Append each alert (and each retraction) to an audit log; returns the entry's index."""

    def __init__(self, audit_log: _Appender, *, actor: str = "ailedger-sentinel") -> None:
        self._log = audit_log
        self._actor = actor

    def __call__(self, alert: AlertLike | Mapping[str, Any]) -> int:
        doc = alert_document(alert)
        record = {
            "type": "sentinel.alert",
            "actor": self._actor,
            "alert_id": alert_id(doc),
            "alert": doc,
        }
        return self._log.append(record)

    def retract(self, alert: AlertLike | Mapping[str, Any], *, reason: str) -> int:
        """Record that ``alert`` no longer stands (its block left the canonical chain)."""
        doc = alert_document(alert)
        record = {
            "type": "sentinel.retraction",
            "actor": self._actor,
            "alert_id": alert_id(doc),
            "tx": doc["tx"],
            "reason": reason,
        }
        return self._log.append(record)


# --------------------------------------------------------------------------------- webhooks


@dataclass(frozen=True)
class Delivery:
    """The outcome of posting one alert to one webhook."""

    url: str
    delivery_id: str
    attempts: int
    status: int | None
    """The last HTTP status, or None when no answer came."""
    delivered: bool
    error: str = ""


def _check_webhook_url(url: str) -> urllib.parse.SplitResult:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as exc:
        raise InputError(f"bad webhook URL {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"a webhook URL must be http:// or https:// with a host, got {url!r}")
    if parts.username or parts.password:
        raise InputError("a webhook URL must not carry credentials; use a secret instead")
    return parts


@dataclass
class _Job:
    url: str
    body: bytes
    delivery_id: str
    attempt: int = 0


@dataclass
class WebhookDispatcher:
    """Post alerts to ``urls`` from a background thread, retrying with backoff.

    ``timeout`` bounds each request (seconds); ``retries`` is the number of attempts after the
    first; ``backoff`` the first delay and ``max_backoff`` the cap. ``secret`` signs bodies.
    ``outcomes`` receives every final :class:`Delivery` (for status lines and tests).
    """

    urls: Sequence[str]
    secret: bytes | None = None
    timeout: float = 5.0
    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    queue_size: int = 1000
    outcomes: Callable[[Delivery], None] | None = None
    dropped: int = 0
    _queue: queue.Queue[_Job | None] = field(init=False, repr=False)
    _thread: threading.Thread | None = field(init=False, default=None, repr=False)
    _stop: threading.Event = field(init=False, default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        for url in self.urls:
            _check_webhook_url(url)
        if self.retries < 0 or self.timeout <= 0 or self.backoff < 0 or self.queue_size < 1:
            raise InputError("webhook retries, timeout, backoff and queue size must be positive")
        self._queue = queue.Queue(self.queue_size)

    def start(self) -> WebhookDispatcher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ailedger-webhooks", daemon=True)
            self._thread.start()
        return self

    def __enter__(self) -> WebhookDispatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, alert: AlertLike | Mapping[str, Any]) -> None:
        """Queue ``alert`` for every URL; never blocks (a full queue drops and counts)."""
        doc = alert_document(alert)
        body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        delivery = alert_id(doc)
        for url in self.urls:
            try:
                self._queue.put_nowait(_Job(url, body, delivery))
            except queue.Full:
                self.dropped += 1
                log.warning("webhook queue full: alert %s to %s dropped", delivery, url)

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued (within ``timeout`` seconds if given), then stop."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
        self._thread = None

    def deliver(self, url: str, body: bytes, delivery_id: str) -> Delivery:
        """Post ``body`` to ``url`` now, retrying as configured; the final outcome."""
        job = _Job(url, body, delivery_id)
        while True:
            status, error, retry_after = self._attempt(job)
            job.attempt += 1
            if status is not None and 200 <= status < 300:
                return Delivery(url, delivery_id, job.attempt, status, True)
            final = status is not None and status < 500 and status not in (408, 429)
            if final or job.attempt > self.retries or self._stop.is_set():
                return Delivery(url, delivery_id, job.attempt, status, False, error)
            delay = random.uniform(0, min(self.max_backoff, self.backoff * 2 ** (job.attempt - 1)))
            if retry_after is not None:
                delay = min(self.max_backoff, max(delay, retry_after))
            if self._stop.wait(delay):
                return Delivery(url, delivery_id, job.attempt, status, False, "stopped")

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            outcome = self.deliver(job.url, job.body, job.delivery_id)
            if not outcome.delivered:
                log.warning(
                    "webhook %s: alert %s not delivered after %d attempts (%s)",
                    outcome.url,
                    outcome.delivery_id,
                    outcome.attempts,
                    outcome.error or f"HTTP {outcome.status}",
                )
            if self.outcomes is not None:
                self.outcomes(outcome)

    def _attempt(self, job: _Job) -> tuple[int | None, str, float | None]:
        parts = _check_webhook_url(job.url)
        connection_type = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_type(parts.hostname or "", parts.port, timeout=self.timeout)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "ailedger-sentinel",
            "X-Ailedger-Delivery": job.delivery_id,
            "X-Ailedger-Attempt": str(job.attempt + 1),
        }
        if self.secret is not None:
            mac = hmac.new(self.secret, job.body, hashlib.sha256).hexdigest()
            headers["X-Ailedger-Signature"] = f"sha256={mac}"
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        try:
            connection.request("POST", target, body=job.body, headers=headers)
            response = connection.getresponse()
            response.read(1 << 16)
            retry_after = _retry_after(response.getheader("Retry-After"))
            return response.status, f"HTTP {response.status}", retry_after
        except (OSError, http.client.HTTPException) as exc:
            return None, f"{type(exc).__name__}: {exc}", None
        finally:
            connection.close()


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return float(int(value.strip()))


def verify_signature(secret: bytes, body: bytes, header: str) -> bool:
    """True when ``header`` (``sha256=<hex>``) is the HMAC of ``body``; for receivers."""
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


# ------------------------------------------------------------------------------------ hooks


Hook = Callable[[dict[str, Any]], object]


def load_hooks(group: str = HOOK_GROUP) -> list[tuple[str, Hook]]:
    """The users' mitigation hooks registered under the entry point ``group``, by name.

    A hook that fails to import raises :class:`InputError` naming it: a configured
    mitigation that silently does nothing is worse than a clear failure at start.
    """
    hooks: list[tuple[str, Hook]] = []
    for point in sorted(entry_points(group=group), key=lambda p: p.name):
        try:
            hook = point.load()
        except Exception as exc:
            raise InputError(
                f"sentinel hook {point.name!r} ({point.value}) failed to load: {exc}"
            ) from exc
        if not callable(hook):
            raise InputError(f"sentinel hook {point.name!r} ({point.value}) is not callable")
        hooks.append((point.name, hook))
    return hooks


def run_hooks(
    hooks: Iterable[tuple[str, Hook]], alert: AlertLike | Mapping[str, Any]
) -> list[tuple[str, str]]:
    """Call every hook with the alert's JSON form; returns ``(name, error)`` for hooks that
    raised (each is also logged). One failing hook never stops the others."""
    doc = alert_document(alert)
    failures: list[tuple[str, str]] = []
    for name, hook in hooks:
        try:
            hook(dict(doc))
        except Exception as exc:
            failures.append((name, f"{type(exc).__name__}: {exc}"))
            log.warning("sentinel hook %s failed on alert %s: %s", name, alert_id(doc), exc)
    return failures


def _read_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data = path.read_bytes()
    if len(data) > _MAX_STATE_BYTES:
        raise InputError(f"{path} is larger than {_MAX_STATE_BYTES} bytes")
    doc = parse_json(data, what=str(path))
    if not isinstance(doc, dict):
        raise InputError(f"{path} must hold a JSON object")
    return doc


def _write_state(path: Path, doc: Mapping[str, Any]) -> None:
    data = json.dumps(doc, sort_keys=True, indent=1).encode() + b"\n"
    write_atomic(path, data, mode=0o600)


class TrainingExclusion:
    """Mark training parties named by alerts for the exclusion vote of ``task``.

    ``parties`` are the task's party addresses. Marks accumulate in ``path`` (JSON:
    ``{"task": ..., "parties": {address: [alert ids]}}``); the training protocol reads them
    with :meth:`marked` and votes to exclude those parties. An alert that names no party of the
    task does nothing.
    """

    def __init__(self, path: Path, *, task: str, parties: Iterable[str]) -> None:
        self.path = path
        self.task = task
        self.parties = {p.lower() for p in parties}

    def __call__(self, alert: AlertLike | Mapping[str, Any]) -> list[str]:
        doc = alert_document(alert)
        hit = sorted(_accounts(doc) & self.parties)
        if not hit:
            return []
        state = _read_state(self.path)
        tasks = state.setdefault("tasks", {})
        if not isinstance(tasks, dict):
            raise InputError(f'{self.path}: "tasks" must be an object')
        marks = tasks.setdefault(self.task, {})
        if not isinstance(marks, dict):
            raise InputError(f"{self.path}: task {self.task!r} must map parties to alert ids")
        for party in hit:
            ids = marks.setdefault(party, [])
            if not isinstance(ids, list):
                raise InputError(f"{self.path}: party {party} must map to a list of alert ids")
            if alert_id(doc) not in ids:
                ids.append(alert_id(doc))
        _write_state(self.path, state)
        return hit

    @staticmethod
    def marked(path: Path, task: str) -> dict[str, list[str]]:
        """The parties of ``task`` marked so far, with the ids of the alerts that marked them."""
        tasks = _read_state(path).get("tasks", {})
        marks = tasks.get(task, {}) if isinstance(tasks, dict) else {}
        if not isinstance(marks, dict):
            raise InputError(f"{path}: task {task!r} must map parties to alert ids")
        return {str(k): [str(i) for i in v] for k, v in marks.items() if isinstance(v, list)}


class AnchorDeferral:
    """Ask the anchoring service to hold its sends while the chain is congested.

    A congestion alert (``spam_flood``, ``fee_spike``) defers sends for ``hold`` seconds from
    now (extending any deferral under way); :meth:`deferred_until` tells the anchoring loop
    whether to wait. ``max_hold`` caps any deferral, so an attacker who keeps the alarm ringing
    delays anchors by at most that much before they go out anyway.
    """

    def __init__(
        self,
        path: Path,
        *,
        hold: float = 120.0,
        max_hold: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if hold <= 0 or max_hold < hold:
            raise InputError("deferral hold must be positive and at most max_hold")
        self.path = path
        self.hold = hold
        self.max_hold = max_hold
        self.clock = clock

    def __call__(self, alert: AlertLike | Mapping[str, Any]) -> float | None:
        doc = alert_document(alert)
        if doc["class"] not in CONGESTION_CLASSES:
            return None
        now = self.clock()
        state = _read_state(self.path)
        started, ending = state.get("since"), state.get("until")
        since = float(started) if _is_time(started) else now
        if not _is_time(ending) or float(ending) < now:
            since = now
        until = min(now + self.hold, since + self.max_hold)
        _write_state(
            self.path, {"since": since, "until": until, "reason": doc["class"], "tx": doc["tx"]}
        )
        return until

    @staticmethod
    def deferred_until(path: Path, *, clock: Callable[[], float] = time.time) -> float | None:
        """When the current deferral ends (Unix seconds), or None when sends may go now."""
        with contextlib.suppress(FileNotFoundError):
            until = _read_state(path).get("until")
            if _is_time(until) and until > clock():
                return float(until)
        return None


def _is_time(value: object) -> TypeGuard[float]:
    """Whether a state file's value is a usable Unix time (a finite number, not a boolean)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
