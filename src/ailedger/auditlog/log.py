"""The audit log: an append-only RFC 6962 Merkle log with signed checkpoints.

:class:`AuditLog` is the log itself, whatever stores its rows (a :class:`._store.LogStore`):
one SQLite file by default (:mod:`._store_sqlite`: :meth:`AuditLog.open`), or a PostgreSQL
database shared by several processes (:class:`ailedger.auditlog.pglog.PostgresLog`). It holds
everything that does not depend on the store: encoding records (:mod:`.records`), the tree
(:mod:`._tiles`, RFC 6962 maths in :mod:`._merkle`), private-field encryption, signing
checkpoints (C2SP tlog-checkpoint), receipts (C2SP tlog-proof), exports (C2SP tlog-tiles).
Memory does not grow with the log.

Private data at rest: the plaintext of each sensitive field is encrypted (AES-256-GCM) under
a fresh per-record key, itself encrypted (AES-256-GCM, bound to the entry's index) under the
log's data key, a separate 0600 file (a workspace's ``keys/log.key``), so a copy of the
store alone reveals no private value. Erasure destroys the record's key and ciphertexts
(crypto-shredding): the entry, its commitments and every proof stay as they were.

Appends are batched: :meth:`AuditLog.append_many` writes all its records in one commit group
(all or none), batch by batch in bounded memory, and :meth:`AuditLog.append` hands single
records to a background sequencer that commits whatever has queued up together (group commit),
returning once the record is durable. :meth:`AuditLog.append_encoded` appends entries already
encoded (and, optionally, hashed) by the caller, as the service does with batches.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import random
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ailedger._fs import sync_files, write_atomic
from ailedger._input import parse_json
from ailedger.auditlog import _merkle
from ailedger.auditlog._store import KEY_BYTES as _KEY_BYTES
from ailedger.auditlog._store import LogStore, PrivateRow
from ailedger.auditlog._store import key_aad as _key_aad
from ailedger.auditlog._tiles import TileState
from ailedger.auditlog.checkpoint import Checkpoint, sign_checkpoint
from ailedger.auditlog.note import NoteVerifier, verifier_key
from ailedger.auditlog.proof import Receipt
from ailedger.auditlog.records import (
    MAX_ENTRY_BYTES,
    PreparedEntry,
    decision_record,
    encode_record,
    open_commitment,
    prepare,
)
from ailedger.errors import InputError, VerificationError, WorkspaceError

if TYPE_CHECKING:
    from ailedger.ledger import AnchorRegistry

__all__ = ["AuditLog", "LogEntry", "default_origin", "origin_hash"]

_BATCH = 4096
_NONCE_BYTES = 12
# a wrapped record key: nonce, then the key encrypted with its 16-byte tag
_WRAPPED_BYTES = _NONCE_BYTES + _KEY_BYTES + 16

#: a record's sensitive fields as :func:`prepare` gives them: (name, salt, canonical value)
_Private = tuple[tuple[str, bytes, bytes], ...]


def origin_hash(origin: str) -> bytes:
    """The 32-byte id of a log on chain: SHA-256 of its origin line."""
    return hashlib.sha256(origin.encode()).digest()


def default_origin(public_key: Ed25519PublicKey) -> str:
    """An origin unique to a signing key: ``ailedger.local/log/<16 hex digits>``."""
    raw = public_key.public_bytes_raw()
    return f"ailedger.local/log/{hashlib.sha256(raw).hexdigest()[:16]}"


@dataclass(frozen=True)
class LogEntry:
    """One entry as the log holds it, with the plaintext of its sensitive fields."""

    index: int
    data: bytes
    leaf_hash: bytes
    private: dict[str, Any]  # field -> value, or None once erased

    @property
    def record(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.data)
        return parsed


class AuditLog:
    """A tamper-evident log of records, over a store of its rows (SQLite by default).

    Open it with :meth:`open` (a SQLite file) or :meth:`for_workspace` (the store the
    workspace's config names); close it, or use ``with``.
    """

    def __init__(
        self,
        *,
        store: LogStore,
        origin: str,
        key_path: Path | None = None,
        data_key: bytes | None = None,
    ) -> None:
        self._store = store
        #: the SQLite file holding the log (None for a log in PostgreSQL)
        self.path = store.path
        self.origin = origin
        self.key_path = key_path
        # wraps every record key (AES-256-GCM); None only for a reader without the key file
        self._key_aead = AESGCM(data_key) if data_key is not None else None
        self._queue: queue.SimpleQueue[tuple[PreparedEntry, Future[int]] | None] | None = None
        self._sequencer: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # -- life cycle -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        origin: str | None = None,
        writable: bool = True,
        lock_timeout: float = 10.0,
        key_path: Path | None = None,
    ) -> AuditLog:
        """Open (creating it when writable) the SQLite log at ``path``.

        ``origin`` names a new log (C2SP origin line); an existing log keeps its own, and a
        different ``origin`` is refused. A writable log is locked against other writers, which
        wait up to ``lock_timeout`` seconds.

        ``key_path`` is the log's data key (default: ``keys/<name>.key`` beside the log, so
        ``keys/log.key`` in a workspace), which encrypts the per-record keys of private
        values; a writable log creates it (0600) when the log has none yet, and wraps the raw
        record keys of a log written before it existed.
        """
        from ailedger.auditlog._store_sqlite import SqliteStore

        path = Path(os.path.abspath(path))  # a relative path has no file URI
        key_path = Path(os.path.abspath(key_path or path.parent / "keys" / f"{path.stem}.key"))
        store, stored_origin, data_key = SqliteStore.open(
            path, origin=origin, writable=writable, lock_timeout=lock_timeout, key_path=key_path
        )
        return AuditLog(store=store, origin=stored_origin, key_path=key_path, data_key=data_key)

    @classmethod
    def for_workspace(cls, workspace: Any, *, writable: bool = True) -> AuditLog:
        """The workspace's log, in the store its config names (``[log] backend``: SQLite's
        ``log.sqlite`` by default, see :func:`ailedger.auditlog.backend.open_log`), named after
        its signing key unless ``[log] origin`` says otherwise."""
        from ailedger.auditlog.backend import open_log

        return open_log(workspace, writable=writable)

    def close(self) -> None:
        self._stop_sequencer()
        self._store.close()

    def announce_holder(self, *, url: str) -> None:
        """Say that ``ailedger serve`` (this process, at ``url``) holds the log, so other
        writers fail at once with a message naming it (a SQLite log's lock file; nothing for
        a PostgreSQL log, which any number of processes write together)."""
        self._require_writable()
        self._store.announce_holder(url)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def writable(self) -> bool:
        return self._store.writable

    @property
    def where(self) -> str:
        """Where the log is stored, for messages (a file, or a database without password)."""
        return self._store.where

    @property
    def origin_hash(self) -> bytes:
        return origin_hash(self.origin)

    @property
    def size(self) -> int:
        """How many entries the log holds now."""
        return self._store.size()

    # -- appends ----------------------------------------------------------------------------

    def append_many(
        self, records: Iterable[Mapping[str, Any]], *, sensitive: Collection[str] = ()
    ) -> range:
        """Append records all together or not at all; returns their (consecutive) indexes once
        all are durable.

        One commit group holds the whole call, written in batches of 4,096 records as they
        come, so memory does not grow with their number (``records`` may be a generator
        reading a stream). A bad record (:class:`InputError`) or any other failure rolls it
        all back: the log is left as it was. Until the call returns, the log's other writers
        wait. (Preparing the next batch on another thread while one is written was measured
        no faster: both hold the GIL nearly throughout.)
        """
        self._require_writable()
        names = tuple(dict.fromkeys(sensitive))
        batches: Iterable[tuple[list[bytes], list[_Private]]] = self._encoded(records, names)
        if isinstance(records, Sequence) and len(records) <= _BATCH:
            # encoded before taking the sequencer, so it overlaps another writer's disk flush
            batches = list(batches)
        with self._store.sequencing() as tree:
            start = tree.size
            for datas, private in batches:
                self._add(tree, datas, private)
            end = tree.size
        return range(start, end)

    def append_encoded(
        self, datas: Sequence[bytes], *, leaf_hashes: Sequence[bytes] | None = None
    ) -> range:
        """Append entries given as their bytes, all together or not at all; returns their
        (consecutive) indexes once all are durable.

        Each item must be what :func:`.records.encode_record` returns for a record (RFC 8785
        bytes of a JSON object, at most :data:`.records.MAX_ENTRY_BYTES`): a caller that has
        encoded a batch already (the service, see :func:`.records.encode_json_records`) saves
        encoding it again. ``leaf_hashes``, when given, are the entries' RFC 6962 leaf hashes
        (:func:`._merkle.leaf_hash`), computed by the caller (the service's batch encoder
        process); the first, the last and 16 others drawn at random are checked (a shifted
        or wrongly computed list is refused; hashing every entry again would cost a twentieth
        of the service's batched rate). Anything else is refused
        (:class:`InputError`) before anything is written; the bytes are logged as given.
        """
        self._require_writable()
        # checked with C loops (map, set, min, max): a generator costs a tenth of the append
        if not set(map(type, datas)) <= {bytes}:
            raise InputError("an encoded log entry is bytes")
        if datas and not 0 < min(map(len, datas)) <= max(map(len, datas)) <= MAX_ENTRY_BYTES:
            raise InputError(f"an encoded log entry is 1 to {MAX_ENTRY_BYTES} bytes")
        if leaf_hashes is not None and (
            len(leaf_hashes) != len(datas)
            or not set(map(type, leaf_hashes)) <= {bytes}
            or not set(map(len, leaf_hashes)) <= {_merkle.HASH_SIZE}
            or any(
                leaf_hashes[at] != _merkle.leaf_hash(datas[at]) for at in _spot_checks(len(datas))
            )
        ):
            raise InputError("the leaf hashes given are not those of the entries")
        with self._store.sequencing() as tree:
            start = tree.size
            for at in range(0, len(datas), _BATCH):
                end = at + _BATCH
                leaves = None if leaf_hashes is None else leaf_hashes[at:end]
                self._add(tree, datas[at:end], (), leaves)
            end = tree.size
        return range(start, end)

    @staticmethod
    def _encoded(
        records: Iterable[Mapping[str, Any]], names: tuple[str, ...]
    ) -> Iterator[tuple[list[bytes], list[_Private]]]:
        """The records' tree entries (and private parts), in batches of up to ``_BATCH``."""
        datas: list[bytes] = []
        private: list[_Private] = []
        for record in records:
            if names:
                entry = prepare(record, names)
                datas.append(entry.data)
                private.append(entry.private)
            else:  # the common case, without prepare()'s layers
                datas.append(encode_record(record))
            if len(datas) >= _BATCH:
                yield datas, private
                datas, private = [], []
        if datas:
            yield datas, private

    def append(self, record: Mapping[str, Any], *, sensitive: Collection[str] = ()) -> int:
        """Append one record; returns its index once it is durable.

        Concurrent callers (threads) are committed together by the background sequencer.
        """
        self._require_writable()
        prepared = prepare(record, sensitive)
        done: Future[int] = Future()
        self._start_sequencer().put((prepared, done))
        return done.result()

    def append_decision(
        self,
        *,
        model: str,
        input: Any,
        output: Any,
        actor: str,
        metadata: Mapping[str, Any] | None = None,
        sensitive: Collection[str] = (),
    ) -> int:
        """Log one AI decision; its input is always committed, never in the tree."""
        record = decision_record(
            model=model, input=input, output=output, actor=actor, metadata=metadata
        )
        return self.append(record, sensitive=("input", *sensitive))

    def _commit(self, datas: Sequence[bytes], private: Sequence[_Private] = ()) -> int:
        """Write entries (and, aligned with them or empty, their private fields) as one commit
        group; return the first one's index."""
        with self._store.sequencing() as tree:
            first = tree.size
            self._add(tree, datas, private)
        return first

    def _add(
        self,
        tree: TileState,
        datas: Sequence[bytes],
        private: Sequence[_Private],
        leaf_hashes: Sequence[bytes] | None = None,
    ) -> None:
        """Add entries (and, aligned with them or empty, their private fields; and their leaf
        hashes, when known) to the tree and the store, in the open commit group whose tree is
        ``tree``."""
        first = tree.size
        if leaf_hashes is None:
            # _merkle.leaf_hash inlined (RFC 6962 §2.1: SHA-256(0x00 || entry)): a call less
            sha256 = hashlib.sha256
            leaf_hashes = [sha256(b"\x00" + data).digest() for data in datas]
        tree.extend(leaf_hashes)
        private_rows, key_rows = _encrypt_private(first, private, self._key_aead)
        self._store.write(first, datas, tree.take_writes(), key_rows, private_rows, tree.size)

    def _start_sequencer(self) -> queue.SimpleQueue[tuple[PreparedEntry, Future[int]] | None]:
        with self._start_lock:
            if self._queue is None:
                self._queue = queue.SimpleQueue()
                self._sequencer = threading.Thread(
                    target=self._sequence, args=(self._queue,), name=self._store.sequencer_name
                )
                self._sequencer.daemon = True
                self._sequencer.start()
            return self._queue

    def _sequence(self, work: queue.SimpleQueue[tuple[PreparedEntry, Future[int]] | None]) -> None:
        stopping = False
        while not stopping:
            item = work.get()
            if item is None:
                break
            pending = [item]
            while len(pending) < _BATCH:
                try:
                    more = work.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                pending.append(more)
            try:
                first = self._commit([p.data for p, _ in pending], [p.private for p, _ in pending])
            except BaseException as exc:
                for _, done in pending:
                    done.set_exception(exc)
            else:
                for offset, (_, done) in enumerate(pending):
                    done.set_result(first + offset)

    def _stop_sequencer(self) -> None:
        with self._start_lock:
            work, thread = self._queue, self._sequencer
            self._queue = self._sequencer = None
        if work is not None and thread is not None:
            work.put(None)
            thread.join()

    # -- reads ------------------------------------------------------------------------------

    def entry_data(self, index: int) -> bytes:
        """The exact bytes of entry ``index``.

        :class:`InputError` if the log has no such entry (any index outside ``0 <= index <
        size``, however large); :class:`VerificationError` if what is stored is not an entry.
        """
        with self._store.reading() as tree:
            size = tree.size
            if not 0 <= index < size:
                raise InputError(f"the log has no entry {index} (size {size})")
            stored = self._store.entry(index)
        if stored is None:
            raise VerificationError(f"entry {index} is missing from the stored log of {size}")
        return _stored_bytes(stored, f"entry {index}")

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Entries ``start`` to ``stop - 1`` in order, read in pages."""
        size = self.size
        end = size if stop is None else min(stop, size)
        at = start
        while at < end:
            rows = self._store.entry_rows(at, min(end, at + _BATCH))
            if not rows:
                return
            for idx, data in rows:
                yield idx, _stored_bytes(data, f"entry {idx}")
            at = rows[-1][0] + 1

    def stored_count(self) -> int:
        """How many entry rows the store holds (equal to :attr:`size` unless tampered)."""
        return self._store.entry_count()

    def show(self, index: int) -> LogEntry:
        """Entry ``index`` with the plaintext of its sensitive fields (``None`` once erased)."""
        data = self.entry_data(index)
        record = _stored_record(index, data)
        key_value, rows = self._store.private(index)
        private: dict[str, Any] = {
            name: None
            for name, value in record.items()
            if isinstance(value, dict) and set(value) == {"commitment"}
        }
        if key_value is not None:
            key = _stored_bytes(key_value, f"the record key of entry {index}")
            try:
                aead = AESGCM(self._unwrap_key(index, key))
                for name, salt, nonce, ciphertext in rows:
                    what = f"the private value {name!r} of entry {index}"
                    canonical = aead.decrypt(
                        _stored_bytes(nonce, what),
                        _stored_bytes(ciphertext, what),
                        _aad(index, str(name)),
                    )
                    field = record.get(name)
                    commitment = field.get("commitment") if isinstance(field, dict) else None
                    if not isinstance(commitment, str):
                        raise VerificationError(f"{what} has no commitment in the entry")
                    private[name] = open_commitment(
                        commitment, _stored_bytes(salt, what), canonical
                    )
            except (InvalidTag, ValueError) as exc:
                raise VerificationError(
                    f"the private values of entry {index} do not decrypt: the stored log was "
                    "modified"
                ) from exc
        return LogEntry(index=index, data=data, leaf_hash=_merkle.leaf_hash(data), private=private)

    def erase(self, index: int) -> bool:
        """Destroy the key and salts of entry ``index``'s sensitive values (crypto-shredding).

        The entry, its commitments and every proof are untouched. Returns whether anything was
        left to erase. When it returns, the store's files hold no copy of the key or the
        ciphertexts: SQLite zeroes them (``secure_delete``) and checkpoints and truncates its
        WAL; PostgreSQL rewrites both tables (``VACUUM FULL``), though its write-ahead log
        keeps a copy until it is recycled, sealed under the data key (see
        :mod:`ailedger.auditlog.pglog`).
        """
        self._require_writable()
        self.entry_data(index)
        return self._store.erase(index)

    def _unwrap_key(self, index: int, stored: bytes) -> bytes:
        """The record key of entry ``index`` from its stored (wrapped, or legacy raw) form."""
        if len(stored) == _KEY_BYTES and self._store.legacy_raw_keys:
            return stored  # a log written before record keys were wrapped, opened read-only
        if len(stored) != _WRAPPED_BYTES:
            raise VerificationError(f"the stored record key of entry {index} is malformed")
        if self._key_aead is None:
            raise WorkspaceError(
                f"the private values of entry {index} are encrypted under "
                f"{self.key_path or 'the log data key'}, which this process cannot read"
            )
        try:
            return self._key_aead.decrypt(
                stored[:_NONCE_BYTES], stored[_NONCE_BYTES:], _key_aad(index)
            )
        except InvalidTag as exc:
            raise VerificationError(
                f"the record key of entry {index} does not open under {self.key_path}"
            ) from exc

    # -- the tree ---------------------------------------------------------------------------

    def root(self, size: int | None = None) -> bytes:
        """Root hash of the tree of the first ``size`` entries (default: all)."""
        with self._store.reading() as tree:
            return _merkle.tree_hash(_checked_size(tree, size), tree)

    def prove_inclusion(self, index: int, size: int | None = None) -> list[bytes]:
        with self._store.reading() as tree:
            return _merkle.prove_inclusion(index, _checked_size(tree, size), tree)

    def prove_consistency(self, old_size: int, size: int | None = None) -> list[bytes]:
        with self._store.reading() as tree:
            return _merkle.prove_consistency(old_size, _checked_size(tree, size), tree)

    def tile(self, level: int, index: int, width: int) -> bytes:
        """C2SP tile bytes (hashes only) of tile ``(level, index)`` at ``width``."""
        with self._store.reading() as tree:
            return tree.tile_bottom(level, index, width)

    # -- checkpoints ------------------------------------------------------------------------

    def verifier(self, public_key: Ed25519PublicKey) -> NoteVerifier:
        return NoteVerifier.from_public_key(self.origin, public_key)

    def verifier_key(self, public_key: Ed25519PublicKey) -> str:
        """The C2SP verifier key string an auditor needs: ``<origin>+<id>+<key>``."""
        return verifier_key(self.origin, public_key)

    def checkpoint(
        self,
        key: Ed25519PrivateKey,
        *,
        registry: AnchorRegistry | None = None,
        operator: str | None = None,
    ) -> bytes:
        """Sign (or return the already signed) checkpoint of the log's current size.

        Refuses (:class:`VerificationError`) to sign a tree that is not an extension of the
        last checkpoint it signed, which is what tampering with the stored log would produce.
        It runs as a commit group, so the size it signs is the log's for every writer.

        With ``registry`` (the log's ``AnchorRegistry`` on a chain), it first reads every
        anchor that ``operator`` (default: the registry's ledger account) published for this
        log, and refuses, signing nothing, when the log conflicts with any of them (see
        :func:`ailedger.auditlog.anchoring.check_published`): a restored backup or a rewritten
        log is never signed over what the chain already holds. Chain errors propagate
        (:class:`NodeUnavailable`, :class:`LedgerError`).
        """
        self._require_writable()
        published = None
        if registry is not None:
            from ailedger.auditlog.anchoring import chain_anchors

            account = operator if operator is not None else registry.ledger.account
            # read before taking the log's lock: appends need not wait for the node
            published = chain_anchors(registry, self.origin_hash, operator=account)
        with self._store.sequencing() as tree:
            if published is not None:
                from ailedger.auditlog.anchoring import check_published

                check_published(self, published)
            size = tree.size
            root = _merkle.tree_hash(size, tree)
            last = self._store.last_checkpoint()
            if last is not None:
                old_size, old_root, note = last
                if old_size == size and old_root == root:
                    return note
                if old_size > size:
                    raise VerificationError(
                        f"the log has {size} entries but already signed a checkpoint of "
                        f"{old_size}: entries were removed"
                    )
                if _merkle.tree_hash(old_size, tree) != old_root:
                    raise VerificationError(
                        f"the stored log disagrees with the checkpoint it signed at size "
                        f"{old_size}: refusing to sign a forked history"
                    )
                proof = _merkle.prove_consistency(old_size, size, tree)
                _merkle.verify_consistency(proof, old_size, size, old_root, root)
            note = sign_checkpoint(
                Checkpoint(origin=self.origin, size=size, root_hash=root), self.origin, key
            )
            self._store.add_checkpoint(size, root, note, time.time())
        return note

    def checkpoints(self) -> list[tuple[int, bytes]]:
        """Every signed checkpoint, oldest first: (size, signed note)."""
        return self._store.checkpoints()

    def latest_checkpoint(self) -> bytes | None:
        return self._store.latest_checkpoint()

    def add_cosignatures(self, size: int, lines: Sequence[str]) -> bytes:
        """Append witness signature lines (already verified by the caller, see
        :mod:`.witness`) to the stored checkpoint of ``size``; return the note as now stored.

        The note's text and earlier signatures are kept; exports then ship the cosignatures.
        """
        self._require_writable()
        for line in lines:
            if not line.startswith("— ") or not line.endswith("\n") or line.count("\n") != 1:
                raise InputError("a cosignature is one signature line ending in a newline")

        def add(note: bytes) -> bytes:
            signatures = note.split(b"\n\n")[-1]
            new = [line.encode() for line in lines if line.encode() not in signatures]
            return note + b"".join(new)

        stored = self._store.update_note(size, add)
        if stored is None:
            raise InputError(f"the log has no signed checkpoint of size {size}")
        return stored

    def receipt(self, index: int, *, checkpoint: bytes | None = None) -> Receipt:
        """A C2SP tlog-proof for entry ``index`` against ``checkpoint`` (default: latest)."""
        note = checkpoint or self.latest_checkpoint()
        if note is None:
            raise InputError("the log has no signed checkpoint yet: run `ailedger log checkpoint`")
        text = note.decode().split("\n\n", 1)[0] + "\n"
        size = Checkpoint.parse(text).size
        if index >= size:
            raise InputError(f"entry {index} is not covered by the checkpoint of size {size}")
        return Receipt(
            index=index, hashes=tuple(self.prove_inclusion(index, size)), checkpoint=note
        )

    # -- anchors (rows of :mod:`.anchoring`) -------------------------------------------------

    _ANCHOR_COLUMNS = ("tx_hash", "block_number", "block_hash", "status")

    def add_anchor(self, *, size: int, root: bytes, chain_id: int, registry: str) -> int:
        """Remember an anchor about to be sent; returns its id."""
        self._require_writable()
        return self._store.add_anchor(size, root, chain_id, registry, time.time())

    def update_anchor(self, anchor_id: int, **values: Any) -> None:
        """Record an anchor's progress (tx_hash, block_number, block_hash, status)."""
        self._require_writable()
        unknown = set(values) - set(self._ANCHOR_COLUMNS)
        if unknown:
            raise InputError(f"anchors have no column {sorted(unknown)[0]!r}")
        self._store.update_anchor(anchor_id, values, time.time())

    def anchor_rows(self) -> list[tuple[Any, ...]]:
        """Every anchor row, oldest first: id, size, root, chain id, registry, tx, block, status."""
        return self._store.anchor_rows()

    # -- export -----------------------------------------------------------------------------

    def export(self, directory: Path) -> int:
        """Write the log as C2SP tlog-tiles under ``directory``; returns the exported size.

        The latest signed checkpoint decides the size; every signed checkpoint also goes to
        ``ailedger/checkpoints/<size>`` so an auditor can check them all.

        Every file is written atomically (a temporary file renamed over the name), but not
        fsynced one by one: the tiles, bundles and checkpoint copies are made durable together
        by one :func:`ailedger._fs.sync_files` pass, and only then is ``checkpoint`` written
        (durably, last), so after a crash the top-level checkpoint never names tiles that are
        not on disk.
        """
        note = self.latest_checkpoint()
        if note is None:
            raise InputError("the log has no signed checkpoint yet: run `ailedger log checkpoint`")
        size = Checkpoint.parse(note.decode().split("\n\n", 1)[0] + "\n").size
        written: list[Path] = []

        def put(path: Path, data: bytes) -> None:
            write_atomic(path, data, durable=False)
            written.append(path)

        for tile in _merkle.tiles_for_size(size):
            put(directory / tile.path(), self.tile(tile.level, tile.index, tile.width))
        bundle_count, rest = divmod(size, _merkle.TILE_WIDTH)
        for n in range(bundle_count + (1 if rest else 0)):
            start = n * _merkle.TILE_WIDTH
            width = min(_merkle.TILE_WIDTH, size - start)
            data = [d for _, d in self.entries(start, start + width)]
            put(directory / _merkle.entries_path(n, width), _merkle.encode_entry_bundle(data))
        sizes = []
        for checkpoint_size, signed in self.checkpoints():
            if checkpoint_size <= size:
                sizes.append(checkpoint_size)
                put(directory / "ailedger" / "checkpoints" / str(checkpoint_size), signed)
        put(directory / "ailedger" / "checkpoints.json", json.dumps(sizes).encode())
        sync_files(written, directory)
        write_atomic(directory / "checkpoint", note)
        return size

    # -- internals --------------------------------------------------------------------------

    def _require_writable(self) -> None:
        if not self.writable:
            raise WorkspaceError(f"the audit log at {self.where} is open read-only")


def _checked_size(tree: TileState, size: int | None) -> int:
    """``size`` (default: the tree's), or :class:`InputError` if the tree has fewer entries."""
    n = tree.size if size is None else size
    if not 0 <= n <= tree.size:
        raise InputError(f"the log has {tree.size} entries, not {n}")
    return n


def _spot_checks(n: int, samples: int = 16) -> list[int]:
    """Positions of ``n`` entries whose given leaf hashes are checked: the first, the last and
    ``samples`` others at random."""
    if n == 0:
        return []
    return [0, n - 1, *(random.randrange(n) for _ in range(samples))]


def _encrypt_private(
    first: int, private: Sequence[_Private], key_aead: AESGCM | None
) -> tuple[list[PrivateRow], list[tuple[int, bytes]]]:
    """Encrypt each record's private values under a fresh per-record key (AES-256-GCM), and
    each record key under the log's data key (``key_aead``)."""
    private_rows: list[PrivateRow] = []
    key_rows = []
    for offset, fields in enumerate(private):
        if not fields:
            continue
        if key_aead is None:
            raise WorkspaceError("the audit log is open without its data key")
        index = first + offset
        randomness = os.urandom(44 + 12 * len(fields))
        key = randomness[:32]
        aead = AESGCM(key)
        wrap_nonce = randomness[32:44]
        key_rows.append((index, wrap_nonce + key_aead.encrypt(wrap_nonce, key, _key_aad(index))))
        for number, (name, salt, canonical) in enumerate(fields):
            nonce = randomness[44 + 12 * number : 56 + 12 * number]
            ciphertext = aead.encrypt(nonce, canonical, _aad(index, name))
            private_rows.append((index, name, salt, nonce, ciphertext))
    return private_rows, key_rows


def _stored_bytes(value: object, what: str) -> bytes:
    """A BLOB read back from the store, or :class:`VerificationError` if it is not one."""
    if isinstance(value, bytes):
        return value
    kinds = {str: "TEXT", int: "INTEGER", float: "REAL", type(None): "NULL"}
    kind = kinds.get(type(value), type(value).__name__)
    raise VerificationError(
        f"{what} is stored as {kind}, not bytes: the log was modified outside ailedger"
    )


def _stored_record(index: int, data: bytes) -> dict[str, Any]:
    """The JSON object a stored entry holds, or :class:`VerificationError`."""
    try:
        record = parse_json(data, what=f"entry {index}", max_bytes=MAX_ENTRY_BYTES)
    except InputError as exc:
        raise VerificationError(f"the stored {exc}") from exc
    if not isinstance(record, dict):
        raise VerificationError(f"the stored entry {index} is not a JSON object")
    return record


def _aad(index: int, field: str) -> bytes:
    return f"ailedger/private/v1 {index} {field}".encode()
