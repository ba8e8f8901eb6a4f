"""Anchoring checkpoints on chain, in batches, with receipts that reach finality.

An anchor records (SHA-256 of the origin, size, root) in the ``AnchorRegistry``, as a claim of
the account that sends it (the log's operator); anchors other accounts made for the same origin
are never read. One anchor
covers every entry up to its size, so anchoring every N entries or every T seconds costs one
transaction per batch, whatever the batch size. Each anchor's receipt moves through::

    pending   the transaction was sent (tx hash known)
    anchored  it is in a block (block number and hash)
    final     it is buried under K confirmations

A node outage leaves the newest anchor pending and loses nothing (the next attempt anchors the
newest checkpoint, which covers the older entries). A reorg that drops an anchor's block is
seen by :meth:`Anchorer.refresh`, which sends the anchor again.

Anchoring never extends a history that conflicts with what was published: before signing a
checkpoint, :meth:`Anchorer.anchor` compares the local log with every anchor its account has on
chain (:func:`check_published`), and refuses when an anchor's root differs from the local root
at its size, or an anchor covers more entries than the log holds (an older backup restored, or
entries rewritten: anchoring it would publish a fork).

Fees: by default an anchor is sent at once, priced by the ledger. Given a fee advisor (a
callable asked with how many blocks the pending anchor has waited, answering whether to send
now and with which ``maxFeePerGas`` and ``maxPriorityFeePerGas``, such as the fee scheduler
``ailedger.sentinel.fee_advice.anchor_fee_advisor`` builds), :meth:`Anchorer.anchor` sends only when
the advisor says so and with its fees; otherwise it signs nothing and reports that it waits
(:attr:`Anchorer.waiting`), and the caller asks again at a later block.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog.checkpoint import Checkpoint
from ailedger.auditlog.log import AuditLog
from ailedger.auditlog.verify import AnchorClaim
from ailedger.errors import (
    AiledgerError,
    InputError,
    LedgerError,
    NodeUnavailable,
    VerificationError,
)
from ailedger.ledger._settings import FeeAdvice

if TYPE_CHECKING:
    from ailedger.ledger import Anchor, AnchorRegistry

__all__ = [
    "AnchorRecord",
    "AnchorService",
    "Anchorer",
    "FeeAdvice",
    "FeeAdvisor",
    "chain_anchors",
    "check_published",
]


FeeAdvisor = Callable[[int], FeeAdvice]
"""Asked with the blocks a pending anchor has waited (0 when it became due), gives advice."""


@dataclass(frozen=True)
class AnchorRecord:
    """One anchor of this log as the log remembers it."""

    id: int
    size: int
    root: bytes
    chain_id: int
    registry: str
    tx_hash: str | None
    block_number: int | None
    block_hash: str | None
    status: str

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "root": "0x" + self.root.hex(),
            "chain_id": self.chain_id,
            "registry": self.registry,
            "tx_hash": self.tx_hash,
            "block_number": self.block_number,
            "block_hash": self.block_hash,
            "status": self.status,
        }


class Anchorer:
    """Anchors one log's checkpoints in one registry and tracks their receipts."""

    def __init__(
        self,
        *,
        log: AuditLog,
        registry: AnchorRegistry,
        key: Ed25519PrivateKey,
        confirmations: int = 1,
        fee_advisor: FeeAdvisor | None = None,
    ) -> None:
        if confirmations < 1:
            raise InputError("confirmations must be at least 1")
        self.fee_advisor = fee_advisor
        #: the block at which the anchor now due was first deferred by the fee advisor (None:
        #: nothing waits); callers that build a new Anchorer per attempt carry it over
        self.pending_since: int | None = None
        #: whether the last :meth:`anchor` deferred the anchor on the fee advisor's word
        self.waiting = False
        #: the fee advisor's last answer (None without an advisor or before the first ask)
        self.last_advice: FeeAdvice | None = None
        self.log = log
        self.registry = registry
        self.key = key
        self.confirmations = confirmations
        self.ledger = registry.ledger
        # (count, newest anchor) of this account's anchors already compared with the log, so
        # a long-running service reads only the new ones (the newest is re-read: a reorg).
        self._checked: tuple[int, Anchor] | None = None

    @property
    def operator(self) -> str:
        """The account that anchors (the ledger's signer): only its anchors are read."""
        return self.ledger.account

    def anchor(self, *, force: bool = False) -> AnchorRecord | None:
        """Sign a checkpoint of the current log and anchor it; None if already anchored, or
        if the fee advisor says to wait (then :attr:`waiting` is true; ``force`` sends anyway,
        with the advisor's fees).

        Raises :class:`VerificationError`, signing and anchoring nothing, when the log conflicts
        with an anchor already on chain (see :func:`check_published`). Raises
        :class:`NodeUnavailable` after the ledger's retries when the node is down; the anchor
        then stays pending and the next call retries it.
        """
        self.waiting = False
        latest = self.check()
        fees: dict[str, int] = {}
        if self.fee_advisor is not None:
            if self.log.size == 0 or (latest is not None and latest.size >= self.log.size):
                self.pending_since = None
                return None
            head = self.ledger.block_number()
            if self.pending_since is None or self.pending_since > head:
                self.pending_since = head
            advice = self.fee_advisor(head - self.pending_since)
            self.last_advice = advice
            if not advice.send and not force:
                self.waiting = True
                return None
            fees = {
                "max_fee_per_gas": advice.max_fee_per_gas,
                "max_priority_fee_per_gas": advice.max_priority_fee_per_gas,
            }
        note = self.log.checkpoint(self.key)
        checkpoint = Checkpoint.parse(note.decode().split("\n\n", 1)[0] + "\n")
        if checkpoint.size == 0:
            return None
        if latest is not None and latest.size >= checkpoint.size:
            return None
        record_id = self._insert(checkpoint)
        pending = self.registry.send_anchor(
            self.log.origin_hash, checkpoint.size, checkpoint.root_hash, **fees
        )
        self.pending_since = None
        self._update(record_id, status="pending", tx_hash=pending.tx_hash)
        receipt = self.ledger.wait(pending)
        self._update(
            record_id,
            status="anchored",
            block_number=receipt.block_number,
            block_hash=receipt.block_hash,
        )
        self.refresh()
        return self._get(record_id)

    def check(self) -> Anchor | None:
        """Compare the log with every anchor of this account on chain; return the newest.

        Raises :class:`VerificationError` naming the first anchor the log conflicts with.
        """
        origin = self.log.origin_hash
        count = self.registry.count(self.operator, origin)
        start = 0
        if self._checked is not None and 0 < self._checked[0] <= count:
            done, newest = self._checked
            again = self.registry.anchor_at(self.operator, origin, done - 1)
            if (again.size, again.root) == (newest.size, newest.root):
                start = done
        fresh = [self.registry.anchor_at(self.operator, origin, i) for i in range(start, count)]
        check_published(self.log, _claims(fresh))
        if fresh:
            self._checked = (count, fresh[-1])
        elif count == 0:
            self._checked = None
        return None if count == 0 or self._checked is None else self._checked[1]

    def refresh(self) -> list[AnchorRecord]:
        """Advance receipts (anchored -> final), re-send anchors a reorg dropped."""
        head = self.ledger.block_number()
        for record in self.records():
            if record.status == "final" or record.chain_id != self.ledger.chain_id:
                continue
            if record.block_number is None or not self._still_there(record):
                self._resend(record)
                continue
            if head - record.block_number + 1 >= self.confirmations:
                self._update(record.id, status="final")
        return self.records()

    def records(self) -> list[AnchorRecord]:
        return [_record(row) for row in self.log.anchor_rows()]

    def _still_there(self, record: AnchorRecord) -> bool:
        """Whether the chain still holds this anchor, in the block it was mined in."""
        origin = self.log.origin_hash
        for index in range(self.registry.count(self.operator, origin) - 1, -1, -1):
            anchor = self.registry.anchor_at(self.operator, origin, index)
            if anchor.size == record.size:
                return anchor.root == record.root and anchor.block_number == record.block_number
            if anchor.size < record.size:
                return False
        return False

    def _resend(self, record: AnchorRecord) -> None:
        latest = self.registry.latest(self.operator, self.log.origin_hash)
        if latest is not None and latest.size >= record.size:
            self._update(record.id, status="superseded")
            return
        pending = self.registry.send_anchor(self.log.origin_hash, record.size, record.root)
        self._update(record.id, status="pending", tx_hash=pending.tx_hash)
        receipt = self.ledger.wait(pending)
        self._update(
            record.id,
            status="anchored",
            block_number=receipt.block_number,
            block_hash=receipt.block_hash,
        )

    def _insert(self, checkpoint: Checkpoint) -> int:
        return self.log.add_anchor(
            size=checkpoint.size,
            root=checkpoint.root_hash,
            chain_id=self.ledger.chain_id,
            registry=self.registry.address,
        )

    def _update(self, record_id: int, **values: Any) -> None:
        self.log.update_anchor(record_id, **values)

    def _get(self, record_id: int) -> AnchorRecord:
        return next(r for r in self.records() if r.id == record_id)


class AnchorService:
    """Anchors in the background every ``every_entries`` entries or ``every_seconds`` seconds.

    Outages are retried at the next tick; the service never raises into the application.
    ``last_error`` holds the most recent failure, for monitoring.
    """

    def __init__(
        self,
        anchorer: Anchorer,
        *,
        every_entries: int = 1000,
        every_seconds: float = 60.0,
        tick: float = 0.5,
    ) -> None:
        if every_entries < 1 or every_seconds <= 0:
            raise InputError("anchoring needs every_entries >= 1 and every_seconds > 0")
        self.anchorer = anchorer
        self.every_entries = every_entries
        self.every_seconds = every_seconds
        self.tick = tick
        self.last_error: AiledgerError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="auditlog-anchor", daemon=True)
        self._anchored_size = 0
        self._anchored_at = time.monotonic()

    def start(self) -> AnchorService:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def step(self) -> AnchorRecord | None:
        """Anchor now if a threshold is reached (what the thread does every tick)."""
        size = self.anchorer.log.size
        waited = time.monotonic() - self._anchored_at
        due = size - self._anchored_size >= self.every_entries or (
            waited >= self.every_seconds and size > self._anchored_size
        )
        if not due:
            return None
        try:
            record = self.anchorer.anchor()
        except (NodeUnavailable, LedgerError, VerificationError) as exc:
            # VerificationError: the log conflicts with its published anchors; it stays
            # unanchored (and last_error says why) until the operator restores it.
            self.last_error = exc
            return None
        self.last_error = None
        self._anchored_size = size
        self._anchored_at = time.monotonic()
        return record

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            self.step()


def chain_anchors(
    registry: AnchorRegistry, origin_hash: bytes, *, operator: str
) -> list[AnchorClaim]:
    """Every anchor the log's ``operator`` account made of the log, as the verifier consumes
    them (anchors by any other account are not claims of the operator, and are not read)."""
    return _claims(registry.anchors(operator, origin_hash))


def check_published(log: AuditLog, anchors: Iterable[AnchorClaim]) -> None:
    """Refuse (:class:`VerificationError`) a log that conflicts with its published anchors.

    Each anchor must cover no more entries than the log holds, and its root must be the log's
    root at its size; otherwise signing or anchoring the log would publish a fork.
    """
    size = log.size
    for anchor in anchors:
        where = f"anchor #{anchor.index} on chain (block {anchor.block_number})"
        if anchor.size > size:
            raise VerificationError(
                f"{where} covers {anchor.size} entries, but the local log holds only {size}: "
                "this log.sqlite is older than what was published (a restored backup) or was "
                "truncated; refusing to sign or anchor a history that conflicts with it. "
                "Restore the newest backup of log.sqlite"
            )
        local = log.root(anchor.size)
        if local != anchor.root:
            raise VerificationError(
                f"{where} gives root {anchor.root.hex()} at size {anchor.size}, the local log "
                f"gives {local.hex()}: the log was rewritten, or restored from an older backup "
                "and appended to (a fork); refusing to sign or anchor it. Restore the newest "
                "backup of log.sqlite: what was published cannot be replaced"
            )


def _claims(anchors: Iterable[Anchor]) -> list[AnchorClaim]:
    return [
        AnchorClaim(index=a.index, size=a.size, root=a.root, block_number=a.block_number)
        for a in anchors
    ]


def _record(row: Any) -> AnchorRecord:
    return AnchorRecord(
        id=int(row[0]),
        size=int(row[1]),
        root=bytes(row[2]),
        chain_id=int(row[3]),
        registry=str(row[4]),
        tx_hash=row[5],
        block_number=None if row[6] is None else int(row[6]),
        block_hash=row[7],
        status=str(row[8]),
    )
