"""Ingestion: backfill a block range, follow the head, survive restarts and reorganisations.

:class:`Ingestor` reads blocks through a :class:`~ailedger.ledger.ChainReader` and yields, in
order, :class:`BlockAdded` (a block joined the chain ingested so far) and
:class:`BlockRetracted` (a block already yielded left the canonical chain). It remembers the
hashes of the last ``reorg_depth`` blocks it added (the window) and, for every new block,
checks that its ``parentHash`` is the newest remembered hash; in follow mode it also checks at
each poll that the newest remembered block is still canonical. On a mismatch it walks back,
asking the node for the canonical hash at each remembered height, to the newest block both
chains share (the common ancestor), yields a retraction for every remembered block above it
(newest first), and goes on adding the new branch from the ancestor's child. This is the
scheme of go-ethereum's ``core/blockchain.go`` (``reorg``: collect the old chain back to the
common ancestor, then the new one) with the remembered window in place of the database.

A reorganisation that replaces every remembered block raises :class:`ReorgTooDeep` before
anything is retracted (unless the window reaches back to the first block ingested: then every
block ingested is retracted and ingestion starts over from there).

Checkpoint and delivery guarantee
---------------------------------
The checkpoint is a small JSON file (written whole with :func:`ailedger._fs.write_atomic`,
read back with :func:`ailedger._input.parse_json`) holding the chain id, the first block
ingested, the next block to read and the window. It is written only by :meth:`Ingestor.commit`,
which records the state after the last event yielded. So:

- an event yielded before a ``commit()`` is never yielded again after a restart;
- an event yielded after the last ``commit()`` (the consumer crashed, or stopped without
  committing) is yielded again after a restart, in the same order if the chain is unchanged
  (or, if the chain reorganised meanwhile, the state is rebuilt from the committed window:
  the consumer sees retractions of committed blocks as needed, never of uncommitted ones);
- a consumer that commits after it has durably processed each event (or each batch of events)
  therefore processes every block exactly once in effect, and loses nothing: at most the
  events since its last commit are replayed.

Memory is bounded by the window (``reorg_depth`` hashes) and the reader's batch, not by the
length of the chain.

Micro-batches: :meth:`Ingestor.event_batches` hands out the same events as lists, each holding
only blocks the reader read together (:meth:`~ailedger.ledger.ChainReader.block_batches`), so
a consumer can score a list with one model call without waiting for blocks that have not
arrived; it commits after a whole list, with the same guarantee per list.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ailedger._fs import write_atomic
from ailedger._input import parse_json
from ailedger.errors import BlockNotFound, InputError, ReorgTooDeep, WrongChain
from ailedger.ledger import BlockRecord, ChainReader

__all__ = [
    "CHECKPOINT_VERSION",
    "BlockAdded",
    "BlockRetracted",
    "IngestEvent",
    "IngestState",
    "Ingestor",
]

CHECKPOINT_VERSION = 1
_MAX_CHECKPOINT_BYTES = 1024 * 1024
_MAX_DEPTH = 10_000


@dataclass(frozen=True, slots=True)
class BlockAdded:
    """A block that joined the chain ingested so far (parent: the previous block added)."""

    block: BlockRecord


@dataclass(frozen=True, slots=True)
class BlockRetracted:
    """A block yielded earlier that is no longer canonical: undo what came from it.

    Retractions come newest first, before the blocks of the new branch.
    """

    number: int
    hash: bytes


IngestEvent = BlockAdded | BlockRetracted


@dataclass(frozen=True, slots=True)
class IngestState:
    """Where ingestion stands: the checkpoint's content.

    ``start``: the first block ingested; ``next``: the next block to read; ``window``: the
    (number, hash) of the last blocks added, oldest first, consecutive, ending at ``next - 1``.
    """

    chain_id: int
    start: int
    next: int
    window: tuple[tuple[int, bytes], ...]

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "version": CHECKPOINT_VERSION,
                "chain_id": self.chain_id,
                "start": self.start,
                "next": self.next,
                "window": [[number, "0x" + h.hex()] for number, h in self.window],
            },
            indent=1,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, *, what: str) -> IngestState:
        """Parse a checkpoint; anything malformed raises :class:`InputError` naming ``what``."""
        doc = parse_json(data, what=what, max_bytes=_MAX_CHECKPOINT_BYTES)
        if not isinstance(doc, dict):
            raise InputError(f"{what}: not a JSON object")
        if doc.get("version") != CHECKPOINT_VERSION:
            raise InputError(
                f"{what}: checkpoint version {doc.get('version')!r}, expected {CHECKPOINT_VERSION}"
            )
        for key in ("chain_id", "start", "next"):
            value = doc.get(key)
            if type(value) is not int or value < 0:
                raise InputError(f"{what}: {key!r} must be a non-negative integer")
        window_raw = doc.get("window")
        if not isinstance(window_raw, list):
            raise InputError(f"{what}: 'window' must be a list")
        window: list[tuple[int, bytes]] = []
        for item in window_raw:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or type(item[0]) is not int
                or not isinstance(item[1], str)
                or len(item[1]) != 66
                or not item[1].startswith("0x")
            ):
                raise InputError(f"{what}: a window entry is not [number, 32-byte hash]")
            try:
                window.append((item[0], bytes.fromhex(item[1][2:])))
            except ValueError:
                raise InputError(f"{what}: a window hash is not hex") from None
        state = cls(doc["chain_id"], doc["start"], doc["next"], tuple(window))
        numbers = [number for number, _ in window]
        if numbers and (
            numbers != list(range(numbers[0], numbers[0] + len(numbers)))
            or numbers[-1] != state.next - 1
            or numbers[0] < state.start
        ):
            raise InputError(f"{what}: the window does not end at the block before 'next'")
        if state.next < state.start:
            raise InputError(f"{what}: 'next' is before 'start'")
        return state


class Ingestor:
    """Yields the blocks of ``[start, stop)`` (or from ``start`` on, following the head) once.

    ``checkpoint``: the file that keeps the progress (in the workspace; created by the first
    :meth:`commit`). If it exists, ingestion resumes from it: at its next block, or at ``start``
    if that is later (blocks in between are skipped). ``reorg_depth``: how many recent block
    hashes are remembered for reorganisation checks. ``poll_interval``: seconds between looks
    at the head when following.
    """

    def __init__(
        self,
        reader: ChainReader,
        checkpoint: Path,
        *,
        start: int = 0,
        stop: int | None = None,
        reorg_depth: int = 12,
        poll_interval: float = 1.0,
    ) -> None:
        for name, value in (("start", start), ("reorg_depth", reorg_depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{name} must be a non-negative integer, not {value!r}")
        if not 1 <= reorg_depth <= _MAX_DEPTH:
            raise InputError(f"reorg_depth must be 1-{_MAX_DEPTH}, not {reorg_depth}")
        if stop is not None:
            if isinstance(stop, bool) or not isinstance(stop, int):
                raise InputError(f"stop must be an integer, not {stop!r}")
            if stop <= start:
                raise InputError(f"empty or inverted block range: from {start} to {stop}")
        if not poll_interval >= 0:
            raise InputError(f"poll_interval must be >= 0 seconds, not {poll_interval!r}")
        self.reader = reader
        self.checkpoint = checkpoint
        self.stop = stop
        self.reorg_depth = reorg_depth
        self.poll_interval = poll_interval
        chain_id = reader.chain_id()
        saved = self._load(chain_id)
        if saved is None:
            self._start, self._next = start, start
            self._window: deque[tuple[int, bytes]] = deque(maxlen=reorg_depth)
        else:
            self._start = saved.start
            self._next = saved.next
            self._window = deque(saved.window, maxlen=reorg_depth)
            if start > self._next:  # the caller skips ahead: the remembered blocks are behind
                self._start, self._next = start, start
                self._window.clear()
        self._chain_id = chain_id
        self._committed = self.state()

    # -- public ---------------------------------------------------------------------------

    def state(self) -> IngestState:
        """The state after the last event yielded (what :meth:`commit` would write)."""
        return IngestState(self._chain_id, self._start, self._next, tuple(self._window))

    @property
    def committed(self) -> IngestState:
        """The state last written to the checkpoint (or loaded from it)."""
        return self._committed

    def commit(self) -> None:
        """Record that every event yielded so far has been processed (atomic write)."""
        state = self.state()
        if state != self._committed:
            write_atomic(self.checkpoint, state.to_json(), mode=0o600)
            self._committed = state

    def events(
        self, *, follow: bool = False, stop_event: threading.Event | None = None
    ) -> Iterator[IngestEvent]:
        """Added and retracted blocks, in order.

        Without ``follow`` it ends at ``stop`` (which must not be past the head) or, without a
        ``stop``, at the head as it was when called. With ``follow`` it polls the head every
        ``poll_interval`` seconds until ``stop`` is reached or ``stop_event`` is set.
        """
        for event in self._stream(follow, stop_event):
            if event is not None:
                yield event

    def event_batches(
        self,
        *,
        follow: bool = False,
        stop_event: threading.Event | None = None,
        max_blocks: int = 32,
    ) -> Iterator[list[IngestEvent]]:
        """The events of :meth:`events`, in order, grouped for micro-batch scoring.

        A list holds at most ``max_blocks`` events, and only events whose blocks were already
        in memory together (read in one batch by the reader): a list never waits for the node
        to fill up, so grouping adds no delay between a block's arrival and its scoring beyond
        the time to score the list. When a list is handed out, :meth:`state` is the state after
        its last event: commit after processing the whole list.
        """
        if isinstance(max_blocks, bool) or not isinstance(max_blocks, int) or max_blocks < 1:
            raise InputError(f"max_blocks must be a positive integer, not {max_blocks!r}")
        pending: list[IngestEvent] = []
        for event in self._stream(follow, stop_event):
            if event is not None:
                pending.append(event)
                if len(pending) < max_blocks:
                    continue
            if pending:
                yield pending
                pending = []
        if pending:
            yield pending

    def _stream(
        self, follow: bool, stop_event: threading.Event | None
    ) -> Iterator[IngestEvent | None]:
        """The events, with None wherever what follows has to be read from the node first."""
        head = self.reader.head()
        if not follow and self.stop is not None and self.stop > head + 1:
            raise InputError(
                f"the range ends at block {self.stop - 1}, past the chain's head ({head})"
            )
        end = self.stop if self.stop is not None or follow else head + 1
        while True:
            if stop_event is not None and stop_event.is_set():
                return
            if end is not None and self._next >= end and not self._window_moved(head):
                return
            yield from self._reconcile(head)
            target = head + 1 if end is None else min(end, head + 1)
            if self._next < target:
                try:
                    yield from self._advance(target, stop_event)
                except BlockNotFound:
                    if not follow:
                        raise
                    # the chain got shorter since the head was read (a reorg): look again
                head = self.reader.head()
                continue
            if not follow:
                return
            yield None
            if stop_event is not None:
                if stop_event.wait(self.poll_interval):
                    return
            else:
                threading.Event().wait(self.poll_interval)
            head = self.reader.head()

    # -- internals ------------------------------------------------------------------------

    def _load(self, chain_id: int) -> IngestState | None:
        try:
            data = self.checkpoint.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise InputError(f"cannot read {self.checkpoint}: {exc.strerror or exc}") from exc
        state = IngestState.from_json(data, what=str(self.checkpoint))
        if state.chain_id != chain_id:
            raise WrongChain(state.chain_id, chain_id, f"{self.checkpoint} (checkpoint)")
        return state

    def _window_moved(self, head: int) -> bool:
        """Whether the newest remembered block has left the canonical chain."""
        if not self._window:
            return False
        number, block_hash = self._window[-1]
        return number > head or self.reader.block_hash(number) != block_hash

    def _reconcile(self, head: int) -> Iterator[IngestEvent | None]:
        if self._window_moved(head):
            yield from self._rewind(head)
            yield None

    def _advance(
        self, target: int, stop_event: threading.Event | None
    ) -> Iterator[IngestEvent | None]:
        """Add blocks ``_next`` to ``target - 1``, stopping early at a reorganisation; None
        after each batch the reader read together."""
        batches = self.reader.block_batches(self._next, target)
        try:
            for batch in batches:
                for block in batch:
                    tip = self._window[-1] if self._window else None
                    if (
                        tip is not None
                        and tip[0] == block.number - 1
                        and tip[1] != block.parent_hash
                    ):
                        yield None
                        yield from self._rewind(self.reader.head())
                        yield None
                        return
                    self._window.append((block.number, block.hash))
                    self._next = block.number + 1
                    yield BlockAdded(block)
                    if stop_event is not None and stop_event.is_set():
                        return
                yield None
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def _rewind(self, head: int) -> Iterator[IngestEvent]:
        """Retract remembered blocks down to the common ancestor (newest first)."""
        dropped: list[tuple[int, bytes]] = []
        ancestor: int | None = None
        for number, block_hash in reversed(self._window):
            if number <= head and self.reader.block_hash(number) == block_hash:
                ancestor = number
                break
            dropped.append((number, block_hash))
        if ancestor is None:
            oldest = self._window[0][0]
            if oldest > self._start:
                raise ReorgTooDeep(
                    f"the chain reorganised below block {oldest}: more than the "
                    f"{len(self._window)} remembered blocks changed (reorg depth "
                    f"{self.reorg_depth}); re-ingest from an earlier block or raise the depth"
                )
        for number, block_hash in dropped:
            self._window.pop()
            self._next = number
            yield BlockRetracted(number, block_hash)
