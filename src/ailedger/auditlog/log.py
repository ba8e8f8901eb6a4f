"""The audit log: an append-only RFC 6962 Merkle log in SQLite, with signed checkpoints.

Storage (one SQLite file in WAL mode, ``synchronous=FULL``, so an append that returned is on
disk): ``entries`` (the exact bytes of each entry), ``tiles`` (the tree's hashes, see
:mod:`._tiles`), ``checkpoints`` (every signed checkpoint), ``private`` and ``record_keys``
(encrypted values of sensitive fields, and the per-record keys that erasure destroys),
``anchors`` (see :mod:`.anchoring`) and ``meta``. Memory does not grow with the log.

Private data at rest: each record's key is itself encrypted (AES-256-GCM, bound to the entry's
index) under the log's data key, a separate 0600 file (a workspace's ``keys/log.key``), so a
copy of ``log.sqlite`` alone reveals no private value. The database file and its WAL are
created 0600. Erasure deletes the record's key and ciphertexts with ``secure_delete`` (their
bytes are zeroed, free pages too) and then checkpoints and truncates the WAL, so no old copy
of them is left in ``log.sqlite-wal`` either, even if the process dies right after.

Appends are batched: :meth:`AuditLog.append_many` writes all its records in one transaction
(all or none), batch by batch in bounded memory, and :meth:`AuditLog.append` hands single
records to a background sequencer that commits whatever has queued up together (group commit),
returning once the record is durable.

One process writes a log at a time (a lock file); any number may read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import queue
import sqlite3
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

from ailedger._fs import PRIVATE_FILE_MODE, create_private_file, open_dir, write_atomic
from ailedger._input import parse_json
from ailedger.auditlog import _merkle
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
from ailedger.errors import (
    InputError,
    VerificationError,
    WorkspaceError,
    WorkspaceLocked,
)

if TYPE_CHECKING:
    from ailedger.ledger import AnchorRegistry

__all__ = ["AuditLog", "LogEntry", "default_origin", "origin_hash"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tiles (
    level INTEGER NOT NULL, idx INTEGER NOT NULL, width INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY, root BLOB NOT NULL, note BLOB NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS record_keys (idx INTEGER PRIMARY KEY, key BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS private (
    idx INTEGER NOT NULL, field TEXT NOT NULL, salt BLOB NOT NULL, nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL, PRIMARY KEY (idx, field)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS anchors (
    id INTEGER PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL, chain_id INTEGER NOT NULL,
    registry TEXT NOT NULL, tx_hash TEXT, block_number INTEGER, block_hash TEXT,
    status TEXT NOT NULL, updated REAL NOT NULL
);
"""
_BATCH = 4096
# Entries go in by multi-row INSERTs of this many rows (twice as many parameters, well under
# SQLite's limit): executemany releases and re-takes the GIL for every row, and while the
# preparing thread runs, each re-take can wait for the interpreter's switch interval.
_ROWS_PER_INSERT = 256
_INSERT_ENTRIES = "INSERT INTO entries (idx, data) VALUES " + ", ".join(  # noqa: S608 (placeholders)
    ["(?, ?)"] * _ROWS_PER_INSERT
)


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
    """A tamper-evident log of records, stored in one SQLite file.

    Open it with :meth:`open` (or :meth:`for_workspace`); close it, or use ``with``.
    """

    def __init__(
        self,
        *,
        path: Path,
        origin: str,
        conn: sqlite3.Connection,
        lock_fd: int | None,
        key_path: Path | None = None,
        data_key: bytes | None = None,
    ) -> None:
        self.path = path
        self.origin = origin
        self._conn = conn
        self._lock_fd = lock_fd
        self.key_path = key_path
        # wraps every record key (AES-256-GCM); None only for a reader without the key file
        self._key_aead = AESGCM(data_key) if data_key is not None else None
        self._db_lock = threading.RLock()
        # append_many and the sequencer take turns, so a call's records stay consecutive
        self._order_lock = threading.Lock()
        size = int(self._meta("size", "0"))
        self._tree = TileState(conn, size)
        self._queue: queue.SimpleQueue[tuple[PreparedEntry, Future[int]] | None] | None = None
        self._sequencer: threading.Thread | None = None

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
        """Open (creating it when writable) the log at ``path``.

        ``origin`` names a new log (C2SP origin line); an existing log keeps its own, and a
        different ``origin`` is refused. A writable log is locked against other writers, which
        wait up to ``lock_timeout`` seconds.

        ``key_path`` is the log's data key (default: ``keys/<name>.key`` beside the log, so
        ``keys/log.key`` in a workspace), which encrypts the per-record keys of private
        values; a writable log creates it (0600) when the log has none yet, and wraps the raw
        record keys of a log written before it existed.
        """
        path = Path(os.path.abspath(path))  # a relative path has no file URI
        key_path = Path(os.path.abspath(key_path or path.parent / "keys" / f"{path.stem}.key"))
        if not writable and not path.exists():
            raise WorkspaceError(f"no audit log at {path}")
        lock_fd = _lock(path.with_name(path.name + ".lock"), lock_timeout) if writable else None
        conn: sqlite3.Connection | None = None
        try:
            if writable:
                # made 0600 before SQLite creates it; its -wal and -shm then get that mode too
                create_private_file(path)
            uri = path.as_uri() + ("" if writable else "?mode=ro")
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            if writable:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute("PRAGMA secure_delete = ON")
                conn.executescript(_SCHEMA)
            stored = conn.execute("SELECT value FROM meta WHERE key = 'origin'").fetchone()
            if stored is None:
                if origin is None:
                    raise WorkspaceError(f"the audit log at {path} has no origin; give one")
                _check_origin(origin)
                if not writable:
                    raise WorkspaceError(f"the audit log at {path} is empty")
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('origin', ?), ('size', '0')", (origin,)
                )
            elif origin is not None and stored[0] != origin:
                raise WorkspaceError(f"the log at {path} is {stored[0]!r}, not {origin!r}")
            data_key = _data_key(conn, key_path, writable=writable)
            log = cls(
                path=path,
                origin=origin or str(stored[0]),
                conn=conn,
                lock_fd=lock_fd,
                key_path=key_path,
                data_key=data_key,
            )
            if writable:
                log._wrap_raw_keys()
            return log
        except sqlite3.DatabaseError as exc:
            _close_quietly(conn, lock_fd)
            raise WorkspaceError(f"{path} is not a readable audit log: {exc}") from exc
        except BaseException:
            _close_quietly(conn, lock_fd)
            raise

    @classmethod
    def for_workspace(cls, workspace: Any, *, writable: bool = True) -> AuditLog:
        """The workspace's log (``log.sqlite``), named after its signing key."""
        origin = workspace.config.get("log", {}).get("origin") or default_origin(
            workspace.public_key()
        )
        return cls.open(
            workspace.log_path,
            origin=origin,
            writable=writable,
            key_path=workspace.log_key_path,
        )

    def close(self) -> None:
        self._stop_sequencer()
        with self._db_lock:
            self._conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def announce_holder(self, *, url: str) -> None:
        """Write into the lock file that ``ailedger serve`` (this process, at ``url``) holds
        the log, so other writers fail at once with a message naming it (see :func:`_lock`)."""
        self._require_writable()
        assert self._lock_fd is not None
        data = _holder_description(url)
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, data, 0)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def writable(self) -> bool:
        return self._lock_fd is not None

    @property
    def origin_hash(self) -> bytes:
        return origin_hash(self.origin)

    @property
    def size(self) -> int:
        self._sync()
        return self._tree.size

    # -- appends ----------------------------------------------------------------------------

    def append_many(
        self, records: Iterable[Mapping[str, Any]], *, sensitive: Collection[str] = ()
    ) -> range:
        """Append records all together or not at all; returns their (consecutive) indexes once
        all are durable.

        One transaction holds the whole call, written in batches of 4,096 records as they come,
        so memory does not grow with their number (``records`` may be a generator reading a
        stream). A bad record (:class:`InputError`) or any other failure rolls it all back: the
        log is left as it was. Until the call returns, the log's other users in this process
        wait. (Preparing the next batch on another thread while one is written was measured no
        faster: both hold the GIL nearly throughout.)
        """
        self._require_writable()
        names = tuple(dict.fromkeys(sensitive))
        with self._order_lock, self._db_lock:
            start = self._tree.size
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                datas: list[bytes] = []
                private: list[tuple[tuple[str, bytes, bytes], ...]] = []
                for record in records:
                    if names:
                        entry = prepare(record, names)
                        datas.append(entry.data)
                        private.append(entry.private)
                    else:  # the common case, without prepare()'s layers
                        datas.append(encode_record(record))
                    if len(datas) >= _BATCH:
                        self._write(datas, private)
                        datas, private = [], []
                if datas:
                    self._write(datas, private)
                self._conn.execute("COMMIT")
            except BaseException:
                self._abandon(start)
                raise
            return range(start, self._tree.size)

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

    def _commit(
        self,
        datas: Sequence[bytes],
        private: Sequence[tuple[tuple[str, bytes, bytes], ...]] = (),
    ) -> int:
        """Write entries (and, aligned with them or empty, their private fields) in one
        transaction; return the first one's index."""
        with self._db_lock:
            first = self._tree.size
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._write(datas, private)
                self._conn.execute("COMMIT")
            except BaseException:
                self._abandon(first)
                raise
            return first

    def _write(
        self,
        datas: Sequence[bytes],
        private: Sequence[tuple[tuple[str, bytes, bytes], ...]] = (),
    ) -> None:
        """Add entries (and, aligned with them or empty, their private fields) to the tree and
        the database, in the caller's open transaction (hold ``_db_lock``)."""
        first = self._tree.size
        leaf = _merkle.leaf_hash
        self._tree.extend([leaf(data) for data in datas])
        params = list(itertools.chain.from_iterable(zip(itertools.count(first), datas)))
        whole = len(datas) - len(datas) % _ROWS_PER_INSERT
        step = 2 * _ROWS_PER_INSERT
        private_rows, key_rows = _encrypt_private(first, private, self._key_aead)
        for at in range(0, 2 * whole, step):
            self._conn.execute(_INSERT_ENTRIES, params[at : at + step])
        self._conn.executemany(
            "INSERT INTO entries (idx, data) VALUES (?, ?)",
            zip(params[2 * whole :: 2], params[2 * whole + 1 :: 2], strict=True),
        )
        self._conn.executemany(
            "INSERT OR REPLACE INTO tiles (level, idx, width, data) VALUES (?, ?, ?, ?)",
            self._tree.take_writes(),
        )
        if key_rows:
            self._conn.executemany("INSERT INTO record_keys VALUES (?, ?)", key_rows)
            self._conn.executemany("INSERT INTO private VALUES (?, ?, ?, ?, ?)", private_rows)
        self._conn.execute("UPDATE meta SET value = ? WHERE key = 'size'", (str(self._tree.size),))

    def _abandon(self, size: int) -> None:
        """Roll back the open transaction (if any) and the tree to ``size`` entries."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")
        self._tree.rollback(size)

    def _start_sequencer(self) -> queue.SimpleQueue[tuple[PreparedEntry, Future[int]] | None]:
        with self._db_lock:
            if self._queue is None:
                self._queue = queue.SimpleQueue()
                self._sequencer = threading.Thread(
                    target=self._sequence, args=(self._queue,), name="auditlog-sequencer"
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
                with self._order_lock:
                    first = self._commit(
                        [p.data for p, _ in pending], [p.private for p, _ in pending]
                    )
            except BaseException as exc:
                for _, done in pending:
                    done.set_exception(exc)
            else:
                for offset, (_, done) in enumerate(pending):
                    done.set_result(first + offset)

    def _stop_sequencer(self) -> None:
        if self._queue is not None and self._sequencer is not None:
            self._queue.put(None)
            self._sequencer.join()
            self._queue = None
            self._sequencer = None

    # -- reads ------------------------------------------------------------------------------

    def entry_data(self, index: int) -> bytes:
        """The exact bytes of entry ``index``.

        :class:`InputError` if the log has no such entry (any index outside ``0 <= index <
        size``, however large); :class:`VerificationError` if what is stored is not an entry.
        """
        self._sync()
        with self._db_lock:
            size = self._tree.size
            if not 0 <= index < size:
                raise InputError(f"the log has no entry {index} (size {size})")
            row = self._conn.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise VerificationError(f"entry {index} is missing from the stored log of {size}")
        return _stored_bytes(row[0], f"entry {index}")

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Entries ``start`` to ``stop - 1`` in order, read in pages."""
        self._sync()
        end = self._tree.size if stop is None else min(stop, self._tree.size)
        at = start
        while at < end:
            with self._db_lock:
                rows = self._conn.execute(
                    "SELECT idx, data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                    (at, min(end, at + _BATCH)),
                ).fetchall()
            if not rows:
                return
            for idx, data in rows:
                yield int(idx), _stored_bytes(data, f"entry {idx}")
            at = int(rows[-1][0]) + 1

    def stored_count(self) -> int:
        """How many entry rows the database holds (equal to :attr:`size` unless tampered)."""
        with self._db_lock:
            return int(self._conn.execute("SELECT count(*) FROM entries").fetchone()[0])

    def show(self, index: int) -> LogEntry:
        """Entry ``index`` with the plaintext of its sensitive fields (``None`` once erased)."""
        data = self.entry_data(index)
        record = _stored_record(index, data)
        private: dict[str, Any] = {}
        with self._db_lock:
            key_row = self._conn.execute(
                "SELECT key FROM record_keys WHERE idx = ?", (index,)
            ).fetchone()
            rows = self._conn.execute(
                "SELECT field, salt, nonce, ciphertext FROM private WHERE idx = ?", (index,)
            ).fetchall()
        for name, value in record.items():
            if isinstance(value, dict) and set(value) == {"commitment"}:
                private[name] = None
        if key_row is not None:
            key = _stored_bytes(key_row[0], f"the record key of entry {index}")
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
        left to erase. When it returns, no copy of the key or the ciphertexts is left in the
        database file, its free pages or its WAL (``secure_delete`` zeroes them, and the WAL,
        which holds the page images of earlier writes, is checkpointed and truncated).
        """
        self._require_writable()
        self.entry_data(index)
        with self._db_lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                gone = self._conn.execute(
                    "DELETE FROM record_keys WHERE idx = ?", (index,)
                ).rowcount
                self._conn.execute("DELETE FROM private WHERE idx = ?", (index,))
                self._conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
            self._truncate_wal(f"entry {index}'s private values were erased")
        return gone > 0

    def _truncate_wal(self, done: str, timeout: float = 10.0) -> None:
        """Copy the WAL into the database and empty it, waiting up to ``timeout`` seconds for
        readers of older snapshots; raises :class:`WorkspaceError` if they never let go."""
        deadline = time.monotonic() + timeout
        while True:
            busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if not busy:
                return
            if time.monotonic() >= deadline:
                raise WorkspaceError(
                    f"{done}, but a reader of {self.path.name} kept old copies in its WAL: "
                    "run the erasure again once readers have closed"
                )
            time.sleep(0.05)

    def _unwrap_key(self, index: int, stored: bytes) -> bytes:
        """The record key of entry ``index`` from its stored (wrapped, or legacy raw) form."""
        if len(stored) == _KEY_BYTES:
            return stored  # a log written before record keys were wrapped, opened read-only
        if len(stored) != _WRAPPED_BYTES:
            raise VerificationError(f"the stored record key of entry {index} is malformed")
        if self._key_aead is None:
            raise WorkspaceError(
                f"the private values of entry {index} are encrypted under {self.key_path}, "
                "which this process cannot read"
            )
        try:
            return self._key_aead.decrypt(
                stored[:_NONCE_BYTES], stored[_NONCE_BYTES:], _key_aad(index)
            )
        except InvalidTag as exc:
            raise VerificationError(
                f"the record key of entry {index} does not open under {self.key_path}"
            ) from exc

    def _wrap_raw_keys(self) -> None:
        """Encrypt the raw record keys a log written by an older version holds, then scrub
        the raw bytes from the file and its WAL."""
        assert self._key_aead is not None  # a writable log always has its data key
        select = "SELECT idx, key FROM record_keys WHERE length(key) = ? AND idx > ? ORDER BY idx"
        with self._db_lock:
            if self._conn.execute(select + " LIMIT 1", (_KEY_BYTES, -1)).fetchone() is None:
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                after = -1
                while rows := self._conn.execute(
                    select + " LIMIT ?", (_KEY_BYTES, after, _BATCH)
                ).fetchall():
                    updates = []
                    for idx, raw in rows:
                        nonce = os.urandom(_NONCE_BYTES)
                        wrapped = self._key_aead.encrypt(nonce, bytes(raw), _key_aad(int(idx)))
                        updates.append((nonce + wrapped, int(idx)))
                    self._conn.executemany("UPDATE record_keys SET key = ? WHERE idx = ?", updates)
                    after = int(rows[-1][0])
                self._conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
            self._truncate_wal("the log's record keys were encrypted")

    # -- the tree ---------------------------------------------------------------------------

    def root(self, size: int | None = None) -> bytes:
        """Root hash of the tree of the first ``size`` entries (default: all)."""
        self._sync()
        n = self._tree.size if size is None else size
        self._check_size(n)
        with self._db_lock:
            return _merkle.tree_hash(n, self._tree)

    def prove_inclusion(self, index: int, size: int | None = None) -> list[bytes]:
        self._sync()
        n = self._tree.size if size is None else size
        self._check_size(n)
        with self._db_lock:
            return _merkle.prove_inclusion(index, n, self._tree)

    def prove_consistency(self, old_size: int, size: int | None = None) -> list[bytes]:
        self._sync()
        n = self._tree.size if size is None else size
        self._check_size(n)
        with self._db_lock:
            return _merkle.prove_consistency(old_size, n, self._tree)

    def tile(self, level: int, index: int, width: int) -> bytes:
        """C2SP tile bytes (hashes only) of tile ``(level, index)`` at ``width``."""
        self._sync()
        with self._db_lock:
            return self._tree.tile_bottom(level, index, width)

    def _check_size(self, n: int) -> None:
        if not 0 <= n <= self._tree.size:
            raise InputError(f"the log has {self._tree.size} entries, not {n}")

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
        with self._db_lock:
            if published is not None:
                from ailedger.auditlog.anchoring import check_published

                check_published(self, published)
            size = self._tree.size
            root = self.root(size)
            last = self._conn.execute(
                "SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
            if last is not None:
                old_size, old_root, note = int(last[0]), bytes(last[1]), bytes(last[2])
                if old_size == size and old_root == root:
                    return note
                if old_size > size:
                    raise VerificationError(
                        f"the log has {size} entries but already signed a checkpoint of "
                        f"{old_size}: entries were removed"
                    )
                recomputed = self.root(old_size)
                if recomputed != old_root:
                    raise VerificationError(
                        f"the stored log disagrees with the checkpoint it signed at size "
                        f"{old_size}: refusing to sign a forked history"
                    )
                proof = self.prove_consistency(old_size, size)
                _merkle.verify_consistency(proof, old_size, size, old_root, root)
            note = sign_checkpoint(
                Checkpoint(origin=self.origin, size=size, root_hash=root), self.origin, key
            )
            self._conn.execute(
                "INSERT INTO checkpoints (size, root, note, created) VALUES (?, ?, ?, ?)",
                (size, root, note, time.time()),
            )
            return note

    def checkpoints(self) -> list[tuple[int, bytes]]:
        """Every signed checkpoint, oldest first: (size, signed note)."""
        with self._db_lock:
            rows = self._conn.execute("SELECT size, note FROM checkpoints ORDER BY size").fetchall()
        return [(int(s), bytes(n)) for s, n in rows]

    def latest_checkpoint(self) -> bytes | None:
        found = self.checkpoints()
        return found[-1][1] if found else None

    def add_cosignatures(self, size: int, lines: Sequence[str]) -> bytes:
        """Append witness signature lines (already verified by the caller, see
        :mod:`.witness`) to the stored checkpoint of ``size``; return the note as now stored.

        The note's text and earlier signatures are kept; exports then ship the cosignatures.
        """
        self._require_writable()
        for line in lines:
            if not line.startswith("— ") or not line.endswith("\n") or line.count("\n") != 1:
                raise InputError("a cosignature is one signature line ending in a newline")
        with self._db_lock:
            row = self._conn.execute(
                "SELECT note FROM checkpoints WHERE size = ?", (size,)
            ).fetchone()
            if row is None:
                raise InputError(f"the log has no signed checkpoint of size {size}")
            note = bytes(row[0])
            new = [line.encode() for line in lines if line.encode() not in note.split(b"\n\n")[-1]]
            if new:
                note += b"".join(new)
                self._conn.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (note, size))
            return note

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
        with self._db_lock:
            cursor = self._conn.execute(
                "INSERT INTO anchors (size, root, chain_id, registry, status, updated) "
                "VALUES (?, ?, ?, ?, 'new', ?)",
                (size, root, chain_id, registry, time.time()),
            )
            return int(cursor.lastrowid or 0)

    def update_anchor(self, anchor_id: int, **values: Any) -> None:
        """Record an anchor's progress (tx_hash, block_number, block_hash, status)."""
        unknown = set(values) - set(self._ANCHOR_COLUMNS)
        if unknown:
            raise InputError(f"anchors have no column {sorted(unknown)[0]!r}")
        columns = ", ".join(f"{name} = ?" for name in values)
        with self._db_lock:
            self._conn.execute(
                f"UPDATE anchors SET {columns}, updated = ? WHERE id = ?",  # noqa: S608 - names checked above
                (*values.values(), time.time(), anchor_id),
            )

    def anchor_rows(self) -> list[tuple[Any, ...]]:
        """Every anchor row, oldest first: id, size, root, chain id, registry, tx, block, status."""
        with self._db_lock:
            rows = self._conn.execute(
                "SELECT id, size, root, chain_id, registry, tx_hash, block_number, block_hash, "
                "status FROM anchors ORDER BY id"
            ).fetchall()
        return [tuple(row) for row in rows]

    # -- export -----------------------------------------------------------------------------

    def export(self, directory: Path) -> int:
        """Write the log as C2SP tlog-tiles under ``directory``; returns the exported size.

        The latest signed checkpoint decides the size; every signed checkpoint also goes to
        ``ailedger/checkpoints/<size>`` so an auditor can check them all.
        """
        note = self.latest_checkpoint()
        if note is None:
            raise InputError("the log has no signed checkpoint yet: run `ailedger log checkpoint`")
        size = Checkpoint.parse(note.decode().split("\n\n", 1)[0] + "\n").size
        for tile in _merkle.tiles_for_size(size):
            write_atomic(directory / tile.path(), self.tile(tile.level, tile.index, tile.width))
        bundle_count, rest = divmod(size, _merkle.TILE_WIDTH)
        for n in range(bundle_count + (1 if rest else 0)):
            start = n * _merkle.TILE_WIDTH
            width = min(_merkle.TILE_WIDTH, size - start)
            data = [d for _, d in self.entries(start, start + width)]
            write_atomic(
                directory / _merkle.entries_path(n, width), _merkle.encode_entry_bundle(data)
            )
        sizes = []
        for checkpoint_size, signed in self.checkpoints():
            if checkpoint_size <= size:
                sizes.append(checkpoint_size)
                write_atomic(directory / "ailedger" / "checkpoints" / str(checkpoint_size), signed)
        write_atomic(directory / "ailedger" / "checkpoints.json", json.dumps(sizes).encode())
        write_atomic(directory / "checkpoint", note)
        return size

    # -- internals --------------------------------------------------------------------------

    def _meta(self, key: str, default: str) -> str:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else str(row[0])

    def _sync(self) -> None:
        """A reader follows the writer: reload the tree when the stored size moved."""
        if self.writable:
            return
        with self._db_lock:
            size = int(self._meta("size", "0"))
            if size != self._tree.size:
                self._tree = TileState(self._conn, size)

    def _require_writable(self) -> None:
        if not self.writable:
            raise WorkspaceError(f"the audit log at {self.path} is open read-only")


def _encrypt_private(
    first: int,
    private: Sequence[tuple[tuple[str, bytes, bytes], ...]],
    key_aead: AESGCM | None,
) -> tuple[list[tuple[int, str, bytes, bytes, bytes]], list[tuple[int, bytes]]]:
    """Encrypt each record's private values under a fresh per-record key (AES-256-GCM), and
    each record key under the log's data key (``key_aead``)."""
    private_rows = []
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
    """A BLOB read back from the database, or :class:`VerificationError` if it is not one."""
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


_KEY_BYTES = 32
_NONCE_BYTES = 12
# a wrapped record key: nonce, then the key encrypted with its 16-byte tag
_WRAPPED_BYTES = _NONCE_BYTES + _KEY_BYTES + 16


def _key_aad(index: int) -> bytes:
    return f"ailedger/record-key/v1 {index}".encode()


def _key_id(key: bytes) -> str:
    """A public name of a data key (SHA-256 of a label and the key), to spot the wrong file."""
    return hashlib.sha256(b"ailedger/log-key-id/v1\n" + key).hexdigest()[:32]


def _data_key(conn: sqlite3.Connection, key_path: Path, *, writable: bool) -> bytes | None:
    """The log's data key from ``key_path``, made (0600) if a writable log has none yet."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'data_key_id'").fetchone()
    expected = None if row is None else str(row[0])
    try:
        with open(key_path, "rb") as handle:
            key: bytes | None = handle.read(_KEY_BYTES + 1)
    except FileNotFoundError:
        key = None
    except OSError as exc:
        raise WorkspaceError(f"cannot read the log's key {key_path}: {exc.strerror}") from exc
    if key is not None and len(key) != _KEY_BYTES:
        if expected is not None or not writable:
            raise WorkspaceError(f"{key_path} is not a log key ({_KEY_BYTES} bytes)")
        # cut short by a crash while it was made: nothing was ever encrypted under it
        key_path.unlink()
        key = None
    if key is None:
        if expected is not None:
            if not writable:
                return None  # a reader without the key sees the entries, not private values
            raise WorkspaceError(
                f"the log's record keys are encrypted under {key_path}, which is missing: "
                "restore it (without it no private value can be read)"
            )
        if not writable:
            return None
        key = os.urandom(_KEY_BYTES)
        _write_new_key(key_path, key)
    if expected is not None and _key_id(key) != expected:
        raise WorkspaceError(f"{key_path} is not the key this log's record keys are sealed with")
    if expected is None and writable:
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('data_key_id', ?)", (_key_id(key),)
        )
    return key


def _write_new_key(path: Path, key: bytes) -> None:
    """Create ``path`` holding ``key``, exclusively and 0600 from the start, durably."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        # the folder as :func:`open_dir` walks it: another user's symlink on the way is refused
        dir_fd = open_dir(path.parent, create=True, mode=0o700)
    except OSError as exc:
        raise WorkspaceError(f"cannot create {path.parent}: {exc.strerror or exc}") from exc
    try:
        try:
            fd = os.open(path.name, flags, PRIVATE_FILE_MODE, dir_fd=dir_fd)
        except FileExistsError as exc:
            raise WorkspaceError(f"{path} appeared while the log was being opened") from exc
        try:
            os.write(fd, key)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path.name, dir_fd=dir_fd)
            raise
        os.close(fd)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _close_quietly(conn: sqlite3.Connection | None, lock_fd: int | None) -> None:
    if conn is not None:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
    if lock_fd is not None:
        os.close(lock_fd)


def _check_origin(origin: str) -> None:
    if not origin or any(c.isspace() for c in origin) or "+" in origin:
        raise InputError(f"a log origin is one word without '+' (C2SP), got {origin!r}")


def _lock(path: Path, timeout: float) -> int:
    """Take the log's write lock (``flock`` on ``path``), waiting up to ``timeout`` seconds.

    The lock file holds a description of its holder when the holder is ``ailedger serve``
    (written by :meth:`AuditLog.announce_holder`); a writer that finds the lock held by a live
    serving process fails at once, saying so, instead of waiting. The description is cleared
    by whoever takes the lock next, so one left by a process that is gone blocks nobody.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _serving_holder(fd)
            if holder is not None:
                os.close(fd)
                raise WorkspaceLocked(holder) from None
            if time.monotonic() >= deadline:
                os.close(fd)
                raise WorkspaceLocked(
                    f"the audit log {path.with_suffix('')} is being written by another process"
                ) from None
            time.sleep(0.02)
        else:
            os.ftruncate(fd, 0)  # a description left by an earlier holder is stale now
            return fd


_HOLDER = "ailedger serve"
_MAX_HOLDER_BYTES = 4096


def _holder_description(url: str) -> bytes:
    """What :meth:`AuditLog.announce_holder` writes into the lock file (one JSON object)."""
    return json.dumps({"holder": _HOLDER, "pid": os.getpid(), "url": url}).encode()


def _serving_holder(fd: int) -> str | None:
    """The one-line refusal to give when the lock file names a live ``ailedger serve``, else
    None (no description, a malformed one, or its process is gone)."""
    try:
        raw = os.pread(fd, _MAX_HOLDER_BYTES + 1, 0)
    except OSError:
        return None
    if not raw or len(raw) > _MAX_HOLDER_BYTES:
        return None
    try:
        found = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(found, dict) or found.get("holder") != _HOLDER:
        return None
    pid, url = found.get("pid"), found.get("url")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return None
    if not isinstance(url, str) or not url.isprintable() or len(url) > 200:
        url = "an unknown URL"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:
        pass  # PermissionError: it exists, under another user
    return (
        f"the workspace is held by `ailedger serve` (pid {pid} at {url}): "
        "write through its API, or stop it"
    )
