"""The service's background work: signing checkpoints as the log grows, and anchoring them.

:class:`CheckpointSigner` signs a checkpoint of the log at most once per ``interval`` seconds
(default 1 s), and only when the log grew, so the served checkpoint covers an acknowledged
entry within about one interval: the integration pattern of Tessera (transparency-dev/tessera),
which sequences entries continuously and publishes a checkpoint on a fixed short period.

:class:`AnchorLoop` anchors the log on chain every ``every_entries`` entries or
``every_seconds`` seconds (whichever comes first) with :class:`ailedger.auditlog.anchoring.
Anchorer`, which refuses to anchor a log that conflicts with its published anchors. Attempts
are at least ``min_gap`` seconds apart (default 5 s, never more than ``every_seconds``), however
many entries came meanwhile: one anchor covers every entry before it, and on the embedded
chain each attempt takes the process's CPU from the appends (anchoring every half second at
a few thousand appends per second cost a third of the throughput). A failed
attempt (node down, the embedded chain busy) is logged and retried with exponential backoff
(doubling from ``tick`` up to ``max_backoff`` seconds); appends never wait for the chain. The
lag (entries and seconds since the last confirmed anchor) is exposed for ``/metrics``.

Both run on daemon threads, started and stopped by the app's lifespan.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ailedger.auditlog.checkpoint import Checkpoint
from ailedger.errors import InputError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ailedger.auditlog.anchoring import Anchorer
    from ailedger.auditlog.log import AuditLog
    from ailedger.service.context import ServiceContext

__all__ = ["AnchorLoop", "CheckpointSigner", "checkpoint_size", "served_checkpoint"]

_log = logging.getLogger("ailedger.service")

#: where :func:`served_checkpoint` finds the process's signer in ``ServiceContext.extra``
SIGNER_KEY = "checkpoint_signer"
ANCHOR_KEY = "anchor_loop"


def checkpoint_size(note: bytes) -> int:
    """The tree size a signed checkpoint note states."""
    return Checkpoint.parse(note.decode().split("\n\n", 1)[0] + "\n").size


def served_checkpoint(ctx: ServiceContext) -> tuple[int, bytes] | None:
    """The checkpoint the service serves, ``(size, signed note)``, or None before the first.

    The running :class:`CheckpointSigner`'s latest when there is one (no database read), else
    the log's latest stored checkpoint.
    """
    signer = ctx.extra.get(SIGNER_KEY)
    if isinstance(signer, CheckpointSigner):
        found = signer.latest()
        if found is not None:
            return found
    note = ctx.log.latest_checkpoint()
    return None if note is None else (checkpoint_size(note), note)


def _check_seconds(value: float, what: str) -> float:
    if isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


class CheckpointSigner:
    """Signs a checkpoint of ``log`` with ``key`` when it grew, at most once per ``interval``.

    :meth:`notify` (called after an append) wakes it early; without it the log is still looked
    at every ``interval``. A failure (the log disagrees with what it signed before) is logged,
    kept in :attr:`last_error` and retried the next interval; it never stops the thread.
    """

    def __init__(
        self,
        log: AuditLog,
        key: Ed25519PrivateKey,
        *,
        interval: float = 1.0,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self.log = log
        self.key = key
        self.interval = _check_seconds(interval, "the checkpoint interval")
        self.last_error: Exception | None = None
        self._on_error = on_error
        self._latest: tuple[int, bytes] | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def latest(self) -> tuple[int, bytes] | None:
        """The newest checkpoint signed or found: ``(size, signed note)``."""
        with self._lock:
            return self._latest

    def sign(self) -> tuple[int, bytes] | None:
        """Sign a checkpoint now if the log grew since the last one; return the latest."""
        with self._lock:
            latest = self._latest
        if latest is None:
            note = self.log.latest_checkpoint()
            latest = None if note is None else (checkpoint_size(note), note)
        if latest is None or self.log.size > latest[0]:
            note = self.log.checkpoint(self.key)
            latest = (checkpoint_size(note), note)
        with self._lock:
            if self._latest is None or latest[0] >= self._latest[0]:
                self._latest = latest
            return self._latest

    def notify(self) -> None:
        """The log grew: sign soon (no sooner than ``interval`` after the last signature)."""
        self._wake.set()

    def start(self) -> CheckpointSigner:
        """Sign once now (so a checkpoint is served from the start), then run the thread."""
        self._step()
        self._thread = threading.Thread(target=self._run, name="ailedger-checkpoints", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (after a last signature if the log grew)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _step(self) -> None:
        try:
            self.sign()
        except Exception as exc:  # never let the thread die: report, retry next interval
            self.last_error = exc
            _log.warning("signing a checkpoint failed: %s", exc)
            if self._on_error is not None:
                self._on_error(exc)
        else:
            self.last_error = None

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            spacing = self.interval - (time.monotonic() - last)
            if spacing > 0 and self._stop.wait(spacing):
                break
            self._step()
            last = time.monotonic()
        self._step()


class AnchorLoop:
    """Anchors ``log`` every ``every_entries`` entries or ``every_seconds`` seconds, attempts
    at least ``min_gap`` seconds apart.

    ``open_anchorer`` gives, for one attempt, a context manager holding an
    :class:`~ailedger.auditlog.anchoring.Anchorer` (it opens the chain on entry and closes it
    on exit, so the embedded chain is held only while anchoring). Failures back off
    exponentially from ``tick`` to ``max_backoff`` seconds and are kept in
    :attr:`last_error`; the thread never stops on one.
    """

    def __init__(
        self,
        log: AuditLog,
        open_anchorer: Callable[[], AbstractContextManager[Anchorer]],
        *,
        every_entries: int = 1000,
        every_seconds: float = 60.0,
        tick: float = 0.5,
        max_backoff: float = 60.0,
        min_gap: float = 5.0,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        if isinstance(every_entries, bool) or not isinstance(every_entries, int):
            raise InputError("anchoring every N entries needs an integer N")
        if every_entries < 1:
            raise InputError(f"anchoring every N entries needs N >= 1, got {every_entries}")
        self.log = log
        self.open_anchorer = open_anchorer
        self.every_entries = every_entries
        self.every_seconds = _check_seconds(every_seconds, "the anchoring period")
        self.tick = _check_seconds(tick, "the anchoring tick")
        self.max_backoff = _check_seconds(max_backoff, "the anchoring backoff")
        self.min_gap = min(_check_seconds(min_gap, "the gap between anchors"), self.every_seconds)
        self.last_error: Exception | None = None
        self.failures = 0
        self._on_error = on_error
        self._anchored_size = self._confirmed_size()
        self._anchored_at = time.monotonic()
        self._attempted_at = time.monotonic()
        self._last_try: float | None = None  # when step() last ran (None: not yet)
        self._retry_at = 0.0
        self._pending_since: int | None = None
        #: whether the last attempt was deferred by the fee advisor (retried at a later tick)
        self.deferred = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the lag ------------------------------------------------------------------------

    @property
    def anchored_size(self) -> int:
        """Entries covered by the newest confirmed (mined) anchor."""
        return self._anchored_size

    def lag_entries(self) -> int:
        """Entries appended since the newest confirmed anchor."""
        return max(0, self.log.size - self._anchored_size)

    def lag_seconds(self) -> float:
        """Seconds since the newest confirmed anchor (since start when there is none yet);
        0 when every entry is anchored."""
        if self.lag_entries() == 0:
            return 0.0
        return time.monotonic() - self._anchored_at

    def _confirmed_size(self) -> int:
        sizes = [int(row[1]) for row in self.log.anchor_rows() if row[8] in ("anchored", "final")]
        return max(sizes, default=0)

    # -- running ------------------------------------------------------------------------

    def due(self) -> bool:
        """Whether a threshold is reached (and no backoff is running, and the last attempt is
        at least ``min_gap`` seconds old)."""
        now = time.monotonic()
        if now < self._retry_at:
            return False
        if self._last_try is not None and now - self._last_try < self.min_gap:
            return False
        behind = self.log.size - self._anchored_size
        return behind >= self.every_entries or (
            behind > 0 and now - self._attempted_at >= self.every_seconds
        )

    def step(self) -> bool:
        """Anchor now; return whether it worked (failures are kept, not raised)."""
        self._attempted_at = self._last_try = time.monotonic()
        try:
            with self.open_anchorer() as anchorer:
                # a fee advisor may defer the anchor: the wait is counted from the block it
                # was first deferred at, carried over from attempt to attempt
                anchorer.pending_since = self._pending_since
                anchorer.anchor()
                self._pending_since = anchorer.pending_since
                self.deferred = anchorer.waiting
                anchorer.refresh()
        except Exception as exc:  # node down, chain busy, conflict: report and back off
            self.failures += 1
            self.last_error = exc
            backoff = min(self.max_backoff, self.tick * 2.0 ** min(self.failures, 30))
            self._retry_at = time.monotonic() + backoff
            _log.warning("anchoring failed (retry in %.1f s): %s", backoff, exc)
            if self._on_error is not None:
                self._on_error(exc)
            return False
        self.failures = 0
        self.last_error = None
        self._retry_at = 0.0
        confirmed = self._confirmed_size()
        if confirmed > self._anchored_size:
            self._anchored_size = confirmed
            self._anchored_at = time.monotonic()
        return True

    def start(self) -> AnchorLoop:
        self._thread = threading.Thread(target=self._run, name="ailedger-anchoring", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            if self.due():
                self.step()
