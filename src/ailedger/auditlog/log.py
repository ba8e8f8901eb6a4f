"""The audit log: an append-only RFC 6962 Merkle log in SQLite, with signed checkpoints.

Storage (one SQLite file in WAL mode, ``synchronous=FULL``, so an append that returned is on
disk): ``entries`` (the exact bytes of each entry), ``tiles`` (the tree's hashes, see
:mod:`._tiles`), ``checkpoints`` (every signed checkpoint), ``private`` and ``record_keys``
(encrypted values of sensitive fields, and the per-record keys that erasure destroys),
``anchors`` (see :mod:`.anchoring`) and ``meta``. Memory does not grow with the log.

Appends are batched: :meth:`AuditLog.append_many` writes a batch in one transaction, and
:meth:`AuditLog.append` hands single records to a background sequencer that commits whatever
has queued up together (group commit), returning once the record is durable.

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
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ailedger._fs import write_atomic
from ailedger.auditlog import _merkle
from ailedger.auditlog._tiles import TileState
from ailedger.auditlog.checkpoint import Checkpoint, sign_checkpoint
from ailedger.auditlog.note import NoteVerifier, verifier_key
from ailedger.auditlog.proof import Receipt
from ailedger.auditlog.records import (
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
        self, *, path: Path, origin: str, conn: sqlite3.Connection, lock_fd: int | None
    ) -> None:
        self.path = path
        self.origin = origin
        self._conn = conn
        self._lock_fd = lock_fd
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
    ) -> AuditLog:
        """Open (creating it when writable) the log at ``path``.

        ``origin`` names a new log (C2SP origin line); an existing log keeps its own, and a
        different ``origin`` is refused. A writable log is locked against other writers, which
        wait up to ``lock_timeout`` seconds.
        """
        if not writable and not path.exists():
            raise WorkspaceError(f"no audit log at {path}")
        lock_fd = _lock(path.with_name(path.name + ".lock"), lock_timeout) if writable else None
        try:
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
            return cls(path=path, origin=origin or str(stored[0]), conn=conn, lock_fd=lock_fd)
        except sqlite3.DatabaseError as exc:
            if lock_fd is not None:
                os.close(lock_fd)
            raise WorkspaceError(f"{path} is not a readable audit log: {exc}") from exc
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise

    @classmethod
    def for_workspace(cls, workspace: Any, *, writable: bool = True) -> AuditLog:
        """The workspace's log (``log.sqlite``), named after its signing key."""
        origin = workspace.config.get("log", {}).get("origin") or default_origin(
            workspace.public_key()
        )
        return cls.open(workspace.log_path, origin=origin, writable=writable)

    def close(self) -> None:
        self._stop_sequencer()
        with self._db_lock:
            self._conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

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
        """Append records in batches; returns their (consecutive) indexes once all are durable.

        A bad record stops the call with :class:`InputError`; the batches before it are already
        durable, and nothing of its own batch is written. (Preparing the next batch on another
        thread while one commits was measured no faster: both hold the GIL nearly throughout.)
        """
        self._require_writable()
        with self._order_lock:
            start = self._tree.size
            datas: list[bytes] = []
            private: list[tuple[tuple[str, bytes, bytes], ...]] = []
            for record in records:
                if sensitive:
                    entry = prepare(record, sensitive)
                    datas.append(entry.data)
                    private.append(entry.private)
                else:  # the common case, without prepare()'s layers
                    datas.append(encode_record(record))
                if len(datas) >= _BATCH:
                    self._commit(datas, private)
                    datas, private = [], []
            if datas:
                self._commit(datas, private)
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
            leaf = _merkle.leaf_hash
            self._tree.extend([leaf(data) for data in datas])
            params = list(itertools.chain.from_iterable(zip(itertools.count(first), datas)))
            whole = len(datas) - len(datas) % _ROWS_PER_INSERT
            step = 2 * _ROWS_PER_INSERT
            private_rows, key_rows = _encrypt_private(first, private)
            try:
                self._conn.execute("BEGIN IMMEDIATE")
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
                    self._conn.executemany(
                        "INSERT INTO private VALUES (?, ?, ?, ?, ?)", private_rows
                    )
                self._conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'size'", (str(self._tree.size),)
                )
                self._conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                self._tree.rollback(first)
                raise
            return first

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
        """The exact bytes of entry ``index``."""
        self._sync()
        with self._db_lock:
            row = self._conn.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise InputError(f"the log has no entry {index} (size {self._tree.size})")
        return bytes(row[0])

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
                yield int(idx), bytes(data)
            at = int(rows[-1][0]) + 1

    def stored_count(self) -> int:
        """How many entry rows the database holds (equal to :attr:`size` unless tampered)."""
        with self._db_lock:
            return int(self._conn.execute("SELECT count(*) FROM entries").fetchone()[0])

    def show(self, index: int) -> LogEntry:
        """Entry ``index`` with the plaintext of its sensitive fields (``None`` once erased)."""
        data = self.entry_data(index)
        record = json.loads(data)
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
            aead = AESGCM(bytes(key_row[0]))
            for name, salt, nonce, ciphertext in rows:
                canonical = aead.decrypt(bytes(nonce), bytes(ciphertext), _aad(index, name))
                commitment = record.get(name, {}).get("commitment", "")
                private[name] = open_commitment(commitment, bytes(salt), canonical)
        return LogEntry(index=index, data=data, leaf_hash=_merkle.leaf_hash(data), private=private)

    def erase(self, index: int) -> bool:
        """Destroy the key and salts of entry ``index``'s sensitive values (crypto-shredding).

        The entry, its commitments and every proof are untouched. Returns whether anything was
        left to erase.
        """
        self._require_writable()
        self.entry_data(index)
        with self._db_lock:
            self._conn.execute("BEGIN IMMEDIATE")
            gone = self._conn.execute("DELETE FROM record_keys WHERE idx = ?", (index,)).rowcount
            self._conn.execute("DELETE FROM private WHERE idx = ?", (index,))
            self._conn.execute("COMMIT")
        return gone > 0

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

    def checkpoint(self, key: Ed25519PrivateKey) -> bytes:
        """Sign (or return the already signed) checkpoint of the log's current size.

        Refuses (:class:`VerificationError`) to sign a tree that is not an extension of the
        last checkpoint it signed, which is what tampering with the stored log would produce.
        """
        self._require_writable()
        with self._db_lock:
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
    first: int, private: Sequence[tuple[tuple[str, bytes, bytes], ...]]
) -> tuple[list[tuple[int, str, bytes, bytes, bytes]], list[tuple[int, bytes]]]:
    """Encrypt each record's private values under a fresh per-record key (AES-256-GCM)."""
    private_rows = []
    key_rows = []
    for offset, fields in enumerate(private):
        if not fields:
            continue
        index = first + offset
        randomness = os.urandom(32 + 12 * len(fields))
        key = randomness[:32]
        aead = AESGCM(key)
        key_rows.append((index, key))
        for number, (name, salt, canonical) in enumerate(fields):
            nonce = randomness[32 + 12 * number : 44 + 12 * number]
            ciphertext = aead.encrypt(nonce, canonical, _aad(index, name))
            private_rows.append((index, name, salt, nonce, ciphertext))
    return private_rows, key_rows


def _aad(index: int, field: str) -> bytes:
    return f"ailedger/private/v1 {index} {field}".encode()


def _check_origin(origin: str) -> None:
    if not origin or any(c.isspace() for c in origin) or "+" in origin:
        raise InputError(f"a log origin is one word without '+' (C2SP), got {origin!r}")


def _lock(path: Path, timeout: float) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise WorkspaceLocked(
                    f"the audit log {path.with_suffix('')} is being written by another process"
                ) from None
            time.sleep(0.02)
