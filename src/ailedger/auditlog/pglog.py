"""The audit log on PostgreSQL, shared by several processes (``ailedger serve`` replicas).

:class:`PostgresLog` has the interface of :class:`ailedger.auditlog.log.AuditLog` and the
same bytes: the same entry encoding (:mod:`.records`), the same tiles (:mod:`._tiles`, whose
reads go through a small adapter over psycopg), the same private-field encryption under the
workspace's data key (``keys/log.key``), the same checkpoints. For the same entries its tiles,
roots, proofs and signed checkpoints are byte-identical to the SQLite backend's.

Storage: one database (or one schema, chosen with ``options=-csearch_path=...`` in the DSN)
per log, with the SQLite backend's tables: ``meta`` (origin, size, data key id), ``entries``,
``tiles``, ``checkpoints``, ``record_keys``, ``private``, ``anchors``.

One sequencer at a time
    Every commit group (a batch of :meth:`PostgresLog.append` calls gathered by this process's
    background sequencer, or one whole :meth:`PostgresLog.append_many`) is one transaction
    that first takes a transaction-level advisory lock, ``pg_advisory_xact_lock`` (PostgreSQL
    15 documentation, §13.3.5 "Advisory Locks" and §9.27.10 "Advisory Lock Functions"; its
    64-bit key is derived from the log's origin), then reads the log's size, writes the
    entries, the changed tiles and the new size, and commits. The server releases the lock
    only when the transaction ends, after its commit is durable and visible, so the next
    holder (in any process) reads the size the previous one wrote: indexes stay consecutive,
    nothing is lost or written twice. A process that dies holding the lock loses its session,
    the server aborts its transaction and the lock passes to the next waiter: failover needs
    no leader election, no lease and no timeout, and nothing the dead process had acknowledged
    can be undone (acknowledgement comes after ``COMMIT``).

    A session-level lock held by an elected leader was the alternative; it makes the other
    replicas forward their appends to the leader (another protocol) or wait for it to die.
    The per-group lock costs one extra statement per group and lets each replica commit its
    own clients' appends, alternating with the others. A group is sent as one pipeline (BEGIN,
    the lock and the size in one round trip; the writes and COMMIT in a second), so the lock
    is held for about two round trips and one WAL flush.

Each process keeps two connections: one writes (under the lock above), one reads, so reads
never wait for a commit. A read first checks the stored size, and when it moved (an append
by any process) reloads the partial tiles in one ``REPEATABLE READ`` snapshot; full tiles
never change once written.

Erasure deletes the record's key and ciphertexts, then rewrites both tables (``VACUUM
FULL``) so no copy is left in their files. PostgreSQL's write-ahead log, its archive and any
replica keep the deleted rows until they are recycled: that is why record keys are stored
wrapped under the data key, a file that never enters the database.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ailedger._fs import write_atomic
from ailedger.auditlog import _merkle
from ailedger.auditlog._tiles import TileState
from ailedger.auditlog.checkpoint import Checkpoint, sign_checkpoint
from ailedger.auditlog.log import (
    LogEntry,
    _aad,
    _check_origin,
    _encrypt_private,
    _key_aad,
    _key_id,
    _stored_bytes,
    _stored_record,
    _write_new_key,
    origin_hash,
)
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
    LogStoreUnavailable,
    VerificationError,
    WorkspaceError,
)

if TYPE_CHECKING:
    import sqlite3

    from ailedger.auditlog.log import AuditLog
    from ailedger.ledger import AnchorRegistry

__all__ = ["PostgresLog", "describe_dsn", "parse_dsn"]

Connection = psycopg.Connection[tuple[Any, ...]]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS entries (idx bigint PRIMARY KEY, data bytea NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tiles (level integer NOT NULL, idx bigint NOT NULL, "
    "width integer NOT NULL, data bytea NOT NULL, PRIMARY KEY (level, idx))",
    # hashes do not compress: store tiles out of line without trying
    "ALTER TABLE tiles ALTER COLUMN data SET STORAGE EXTERNAL",
    "CREATE TABLE IF NOT EXISTS checkpoints (size bigint PRIMARY KEY, root bytea NOT NULL, "
    "note bytea NOT NULL, created double precision NOT NULL)",
    "CREATE TABLE IF NOT EXISTS record_keys (idx bigint PRIMARY KEY, key bytea NOT NULL)",
    "CREATE TABLE IF NOT EXISTS private (idx bigint NOT NULL, field text NOT NULL, "
    "salt bytea NOT NULL, nonce bytea NOT NULL, ciphertext bytea NOT NULL, "
    "PRIMARY KEY (idx, field))",
    "CREATE TABLE IF NOT EXISTS anchors (id bigserial PRIMARY KEY, size bigint NOT NULL, "
    "root bytea NOT NULL, chain_id bigint NOT NULL, registry text NOT NULL, tx_hash text, "
    "block_number bigint, block_hash text, status text NOT NULL, "
    "updated double precision NOT NULL)",
)
_BATCH = 4096


def _lock_key(origin: str) -> int:
    """The advisory lock (a signed 64-bit key) every commit group of the log ``origin`` takes
    (advisory locks are per database; logs of other origins there do not wait for it)."""
    digest = hashlib.sha256(b"ailedger/auditlog/sequencer\n" + origin.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


#: taken while the tables are created (before the log's origin is known)
_SCHEMA_LOCK_KEY = _lock_key("")
_KEY_BYTES = 32
_NONCE_BYTES = 12
_WRAPPED_BYTES = _NONCE_BYTES + _KEY_BYTES + 16
_SIZE = "SELECT value FROM meta WHERE key = 'size'"
_UPSERT_TILE = (
    "INSERT INTO tiles (level, idx, width, data) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (level, idx) DO UPDATE SET width = EXCLUDED.width, data = EXCLUDED.data"
)


def parse_dsn(dsn: object) -> dict[str, str]:
    """The parameters of a libpq connection string (``key=value ...`` or a
    ``postgresql://`` URI); :class:`InputError` without echoing it (it may hold a password)."""
    if not isinstance(dsn, str) or not dsn.strip():
        raise InputError("the log's dsn must be a non-empty string")
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        raise InputError(
            "the log's dsn is not a PostgreSQL connection string "
            "(key=value pairs or a postgresql:// URI)"
        ) from None
    return {k: str(v) for k, v in params.items() if v is not None}


def describe_dsn(dsn: str) -> str:
    """A DSN for messages: ``postgresql://user@host:port/dbname``, never the password."""
    try:
        params = parse_dsn(dsn)
    except InputError:
        return "a malformed DSN"
    user = params.get("user", "")
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port", "5432")
    return f"postgresql://{user + '@' if user else ''}{host}:{port}/{params.get('dbname', '')}"


def _scrubbed(exc: BaseException, dsn: str) -> str:
    """The first line of a driver error, with the DSN's password (if any) blanked out."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    text = text or type(exc).__name__
    with contextlib.suppress(InputError):
        password = parse_dsn(dsn).get("password")
        if password:
            text = text.replace(password, "***")
    return text


class _Session:
    """One connection to the log's database, reopened when it breaks; with the tree it
    reads from. Use it only while holding :attr:`lock`.

    It is also what :class:`TileState` reads tiles through: ``execute`` takes SQLite's ``?``
    placeholders and runs the statement on the connection.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.lock = threading.RLock()
        self.tree: TileState | None = None
        self._conn: Connection | None = None

    def conn(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = _connect(self.dsn)
            self.tree = None
        return self._conn

    def execute(self, query: str, params: Sequence[object] = ()) -> psycopg.Cursor[Any]:
        return self.conn().execute(query.replace("?", "%s"), params)

    def load_tree(self, size: int) -> TileState:
        # TileState reads only ``execute(sql, params).fetchone()``, which this provides
        self.tree = TileState(cast("sqlite3.Connection", self), size)
        return self.tree

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
        self.tree = None


def _connect(dsn: str) -> Connection:
    # a server that never answers fails in 10 s, unless the DSN says otherwise
    if "connect_timeout" not in parse_dsn(dsn):
        dsn = make_conninfo(dsn, connect_timeout=10)
    try:
        return psycopg.connect(dsn, autocommit=True)
    except psycopg.Error as exc:
        raise LogStoreUnavailable(
            f"cannot connect to the log's PostgreSQL server at {describe_dsn(dsn)}: "
            f"{_scrubbed(exc, dsn)}"
        ) from exc


class PostgresLog:
    """A tamper-evident log of records in a PostgreSQL database, shared by processes.

    Open it with :meth:`open` (see :func:`ailedger.auditlog.backend.open_log` for a
    workspace); close it, or use ``with``.
    """

    def __init__(
        self,
        *,
        dsn: str,
        origin: str,
        reader: _Session,
        writer: _Session | None,
        key_path: Path | None,
        data_key: bytes | None,
    ) -> None:
        self._dsn = dsn  # holds the password: never shown
        self.origin = origin
        self.key_path = key_path
        self._lock = _lock_key(origin)
        self._reader = reader
        self._writer = writer
        self._key_aead = AESGCM(data_key) if data_key is not None else None
        self._queue: queue.SimpleQueue[tuple[PreparedEntry, Future[int]] | None] | None = None
        self._sequencer: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # -- life cycle -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        dsn: str,
        *,
        origin: str | None = None,
        writable: bool = True,
        key_path: Path | None = None,
    ) -> PostgresLog:
        """Open (creating its tables when writable) the log in the database ``dsn``.

        ``origin`` names a new log; an existing log keeps its own and a different one is
        refused. ``key_path`` is the log's data key file (a workspace's ``keys/log.key``),
        created (0600) by a writable log when neither it nor the database has one yet; a
        reader without it reads entries, and :meth:`show` refuses private values (as with
        SQLite). :class:`InputError` for a
        malformed DSN, :class:`LogStoreUnavailable` when the server cannot be reached.
        """
        parse_dsn(dsn)
        if origin is not None:
            _check_origin(origin)
        if writable and key_path is None:
            raise WorkspaceError("a writable PostgreSQL log needs its data key file")
        where = describe_dsn(dsn)
        reader = _Session(dsn)
        writer = _Session(dsn) if writable else None
        data_key: bytes | None
        try:
            reader.conn()
            if writer is not None:
                assert key_path is not None
                stored_origin, data_key = _initialise(writer, dsn, origin, key_path)
            else:
                stored_origin, data_key = _inspect(reader, dsn, origin, key_path)
            return cls(
                dsn=dsn,
                origin=stored_origin,
                reader=reader,
                writer=writer,
                key_path=key_path,
                data_key=data_key,
            )
        except psycopg.Error as exc:
            reader.close()
            if writer is not None:
                writer.close()
            raise _translate(exc, dsn, f"opening the log at {where}") from exc
        except BaseException:
            reader.close()
            if writer is not None:
                writer.close()
            raise

    def close(self) -> None:
        self._stop_sequencer()
        for session in (self._writer, self._reader):
            if session is not None:
                with session.lock:
                    session.close()

    def __enter__(self) -> PostgresLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def announce_holder(self, *, url: str) -> None:
        """Nothing to announce: any number of processes write a PostgreSQL log together."""
        self._require_writable()

    @property
    def writable(self) -> bool:
        return self._writer is not None

    @property
    def origin_hash(self) -> bytes:
        return origin_hash(self.origin)

    @property
    def where(self) -> str:
        """The database, for messages (no password)."""
        return describe_dsn(self._dsn)

    @property
    def size(self) -> int:
        """How many entries the log holds now (appends by every process count)."""
        with self._reading() as (_, tree):
            return tree.size

    # -- appends ----------------------------------------------------------------------------

    def append_many(
        self, records: Iterable[Mapping[str, Any]], *, sensitive: Collection[str] = ()
    ) -> range:
        """Append records all together or not at all; returns their (consecutive) indexes once
        all are durable.

        One transaction holds the whole call (and the log's sequencer lock, so other processes'
        appends wait), written in batches of 4,096 records as they come. A bad record
        (:class:`InputError`) or any other failure rolls it all back.
        """
        self._require_writable()
        names = tuple(dict.fromkeys(sensitive))
        with self._sequencing() as (conn, tree):
            start = tree.size
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
                    self._write(conn, tree, datas, private)
                    datas, private = [], []
            if datas:
                self._write(conn, tree, datas, private)
            end = tree.size
        return range(start, end)

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
        private: Sequence[tuple[tuple[str, bytes, bytes], ...]],
    ) -> int:
        """Write entries (and their private fields) as one commit group; first index."""
        with self._sequencing() as (conn, tree):
            first = tree.size
            self._write(conn, tree, datas, private)
        return first

    def _write(
        self,
        conn: Connection,
        tree: TileState,
        datas: Sequence[bytes],
        private: Sequence[tuple[tuple[str, bytes, bytes], ...]],
    ) -> None:
        """Add entries to the tree and the database in the open, locked transaction."""
        first = tree.size
        leaf = _merkle.leaf_hash
        tree.extend([leaf(data) for data in datas])
        private_rows, key_rows = _encrypt_private(first, private, self._key_aead)
        with conn.cursor() as cursor:
            # arrays, not COPY: these statements queue up in the group's pipeline
            cursor.execute(
                "INSERT INTO entries (idx, data) SELECT * FROM unnest(%s::bigint[], %s::bytea[])",
                (list(range(first, first + len(datas))), list(datas)),
            )
            cursor.executemany(_UPSERT_TILE, tree.take_writes())
            if key_rows:
                cursor.execute(
                    "INSERT INTO record_keys (idx, key) "
                    "SELECT * FROM unnest(%s::bigint[], %s::bytea[])",
                    ([r[0] for r in key_rows], [r[1] for r in key_rows]),
                )
                cursor.execute(
                    "INSERT INTO private (idx, field, salt, nonce, ciphertext) SELECT * FROM "
                    "unnest(%s::bigint[], %s::text[], %s::bytea[], %s::bytea[], %s::bytea[])",
                    tuple([r[k] for r in private_rows] for k in range(5)),
                )
            cursor.execute("UPDATE meta SET value = %s WHERE key = 'size'", (str(tree.size),))

    def _start_sequencer(self) -> queue.SimpleQueue[tuple[PreparedEntry, Future[int]] | None]:
        with self._start_lock:
            if self._queue is None:
                self._queue = queue.SimpleQueue()
                self._sequencer = threading.Thread(
                    target=self._sequence, args=(self._queue,), name="pglog-sequencer"
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
        """The exact bytes of entry ``index``; :class:`InputError` outside ``0 <= index <
        size``, :class:`VerificationError` if what is stored is not an entry."""
        with self._reading() as (conn, tree):
            size = tree.size
            if not 0 <= index < size:
                raise InputError(f"the log has no entry {index} (size {size})")
            row = conn.execute("SELECT data FROM entries WHERE idx = %s", (index,)).fetchone()
        if row is None:
            raise VerificationError(f"entry {index} is missing from the stored log of {size}")
        return _stored_bytes(row[0], f"entry {index}")

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Entries ``start`` to ``stop - 1`` in order, read in pages."""
        end = self.size if stop is None else min(stop, self.size)
        at = start
        while at < end:
            with self._reading() as (conn, _):
                rows = conn.execute(
                    "SELECT idx, data FROM entries WHERE idx >= %s AND idx < %s ORDER BY idx",
                    (at, min(end, at + _BATCH)),
                ).fetchall()
            if not rows:
                return
            for idx, data in rows:
                yield int(idx), _stored_bytes(data, f"entry {idx}")
            at = int(rows[-1][0]) + 1

    def stored_count(self) -> int:
        """How many entry rows the database holds (equal to :attr:`size` unless tampered)."""
        with self._reading() as (conn, _):
            row = conn.execute("SELECT count(*) FROM entries").fetchone()
        return int(row[0]) if row is not None else 0

    def show(self, index: int) -> LogEntry:
        """Entry ``index`` with the plaintext of its sensitive fields (``None`` once erased)."""
        data = self.entry_data(index)
        record = _stored_record(index, data)
        with self._reading() as (conn, _):
            key_row = conn.execute(
                "SELECT key FROM record_keys WHERE idx = %s", (index,)
            ).fetchone()
            rows = conn.execute(
                "SELECT field, salt, nonce, ciphertext FROM private WHERE idx = %s", (index,)
            ).fetchall()
        private: dict[str, Any] = {
            name: None
            for name, value in record.items()
            if isinstance(value, dict) and set(value) == {"commitment"}
        }
        if key_row is not None:
            key = self._unwrap_key(index, _stored_bytes(key_row[0], f"the key of entry {index}"))
            aead = AESGCM(key)
            for name, salt, nonce, ciphertext in rows:
                what = f"the private value {name!r} of entry {index}"
                try:
                    canonical = aead.decrypt(
                        _stored_bytes(nonce, what),
                        _stored_bytes(ciphertext, what),
                        _aad(index, str(name)),
                    )
                except (InvalidTag, ValueError) as exc:
                    raise VerificationError(
                        f"the private values of entry {index} do not decrypt: the stored log "
                        "was modified"
                    ) from exc
                field = record.get(name)
                commitment = field.get("commitment") if isinstance(field, dict) else None
                if not isinstance(commitment, str):
                    raise VerificationError(f"{what} has no commitment in the entry")
                private[name] = open_commitment(commitment, _stored_bytes(salt, what), canonical)
        return LogEntry(index=index, data=data, leaf_hash=_merkle.leaf_hash(data), private=private)

    def erase(self, index: int) -> bool:
        """Destroy the key and salts of entry ``index``'s sensitive values (crypto-shredding).

        The entry, its commitments and every proof are untouched. Returns whether anything was
        left to erase. The two tables are then rewritten (``VACUUM FULL``), so their files hold
        no copy; the server's write-ahead log keeps one until it is recycled (see the module
        docstring), sealed under the data key.
        """
        writer = self._require_writable()
        self.entry_data(index)
        with writer.lock, self._errors("erasing an entry"):
            conn = writer.conn()
            with conn.transaction():
                gone = conn.execute("DELETE FROM record_keys WHERE idx = %s", (index,)).rowcount
                conn.execute("DELETE FROM private WHERE idx = %s", (index,))
            conn.execute("VACUUM (FULL) record_keys, private")
        return gone > 0

    def _unwrap_key(self, index: int, stored: bytes) -> bytes:
        if len(stored) != _WRAPPED_BYTES:
            raise VerificationError(f"the stored record key of entry {index} is malformed")
        if self._key_aead is None:
            raise WorkspaceError(
                f"the private values of entry {index} are encrypted under the log's data key, "
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

    # -- the tree ---------------------------------------------------------------------------

    def root(self, size: int | None = None) -> bytes:
        """Root hash of the tree of the first ``size`` entries (default: all)."""
        with self._reading() as (_, tree):
            n = _checked_size(tree, size)
            return _merkle.tree_hash(n, tree)

    def prove_inclusion(self, index: int, size: int | None = None) -> list[bytes]:
        with self._reading() as (_, tree):
            n = _checked_size(tree, size)
            return _merkle.prove_inclusion(index, n, tree)

    def prove_consistency(self, old_size: int, size: int | None = None) -> list[bytes]:
        with self._reading() as (_, tree):
            n = _checked_size(tree, size)
            return _merkle.prove_consistency(old_size, n, tree)

    def tile(self, level: int, index: int, width: int) -> bytes:
        """C2SP tile bytes (hashes only) of tile ``(level, index)`` at ``width``."""
        with self._reading() as (_, tree):
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

        As :meth:`AuditLog.checkpoint`: refuses (:class:`VerificationError`) a tree that does
        not extend the last signed checkpoint, or, with ``registry``, that conflicts with an
        anchor ``operator`` published. Holds the sequencer lock, so the size it signs is the
        size of the log for every process.
        """
        self._require_writable()
        published = None
        if registry is not None:
            from ailedger.auditlog.anchoring import chain_anchors

            account = operator if operator is not None else registry.ledger.account
            published = chain_anchors(registry, self.origin_hash, operator=account)
        with self._sequencing() as (conn, tree):
            if published is not None:
                from ailedger.auditlog.anchoring import check_published

                # it reads only ``size`` and ``root``, which this log has with the same meaning
                check_published(cast("AuditLog", self), published)
            size = tree.size
            root = _merkle.tree_hash(size, tree)
            last = conn.execute(
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
            conn.execute(
                "INSERT INTO checkpoints (size, root, note, created) VALUES (%s, %s, %s, %s)",
                (size, root, note, time.time()),
            )
        return note

    def checkpoints(self) -> list[tuple[int, bytes]]:
        """Every signed checkpoint, oldest first: (size, signed note)."""
        with self._reading() as (conn, _):
            rows = conn.execute("SELECT size, note FROM checkpoints ORDER BY size").fetchall()
        return [(int(s), bytes(n)) for s, n in rows]

    def latest_checkpoint(self) -> bytes | None:
        with self._reading() as (conn, _):
            row = conn.execute("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        return None if row is None else bytes(row[0])

    def add_cosignatures(self, size: int, lines: Sequence[str]) -> bytes:
        """Append verified witness signature lines to the stored checkpoint of ``size``;
        return the note as now stored (as :meth:`AuditLog.add_cosignatures`)."""
        writer = self._require_writable()
        for line in lines:
            if not line.startswith("— ") or not line.endswith("\n") or line.count("\n") != 1:
                raise InputError("a cosignature is one signature line ending in a newline")
        with writer.lock, self._errors("adding cosignatures"):
            conn = writer.conn()
            with conn.transaction():
                row = conn.execute(
                    "SELECT note FROM checkpoints WHERE size = %s FOR UPDATE", (size,)
                ).fetchone()
                if row is None:
                    raise InputError(f"the log has no signed checkpoint of size {size}")
                note = bytes(row[0])
                signatures = note.split(b"\n\n")[-1]
                new = [line.encode() for line in lines if line.encode() not in signatures]
                if new:
                    note += b"".join(new)
                    conn.execute("UPDATE checkpoints SET note = %s WHERE size = %s", (note, size))
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
        writer = self._require_writable()
        with writer.lock, self._errors("recording an anchor"):
            row = (
                writer.conn()
                .execute(
                    "INSERT INTO anchors (size, root, chain_id, registry, status, updated) "
                    "VALUES (%s, %s, %s, %s, 'new', %s) RETURNING id",
                    (size, root, chain_id, registry, time.time()),
                )
                .fetchone()
            )
        assert row is not None
        return int(row[0])

    def update_anchor(self, anchor_id: int, **values: Any) -> None:
        """Record an anchor's progress (tx_hash, block_number, block_hash, status)."""
        writer = self._require_writable()
        unknown = set(values) - set(self._ANCHOR_COLUMNS)
        if unknown:
            raise InputError(f"anchors have no column {sorted(unknown)[0]!r}")
        columns = ", ".join(f"{name} = %s" for name in values)
        with writer.lock, self._errors("recording an anchor"):
            writer.conn().execute(
                f"UPDATE anchors SET {columns}, updated = %s WHERE id = %s",  # noqa: S608 - names checked above
                (*values.values(), time.time(), anchor_id),
            )

    def anchor_rows(self) -> list[tuple[Any, ...]]:
        """Every anchor row, oldest first: id, size, root, chain id, registry, tx, block, status."""
        with self._reading() as (conn, _):
            rows = conn.execute(
                "SELECT id, size, root, chain_id, registry, tx_hash, block_number, block_hash, "
                "status FROM anchors ORDER BY id"
            ).fetchall()
        return [(r[0], r[1], bytes(r[2]), *r[3:]) for r in rows]

    # -- export -----------------------------------------------------------------------------

    def export(self, directory: Path) -> int:
        """Write the log as C2SP tlog-tiles under ``directory``, exactly as
        :meth:`AuditLog.export` does (the same files, byte for byte); returns the size of the
        latest signed checkpoint, which decides what is exported."""
        note = self.latest_checkpoint()
        if note is None:
            raise InputError("the log has no signed checkpoint yet: run `ailedger log checkpoint`")
        size = Checkpoint.parse(note.decode().split("\n\n", 1)[0] + "\n").size
        for tile in _merkle.tiles_for_size(size):
            write_atomic(directory / tile.path(), self.tile(tile.level, tile.index, tile.width))
        bundles, rest = divmod(size, _merkle.TILE_WIDTH)
        for n in range(bundles + (1 if rest else 0)):
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

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            raise _translate(exc, self._dsn, doing) from exc

    @contextlib.contextmanager
    def _sequencing(self) -> Iterator[tuple[Connection, TileState]]:
        """A transaction holding the log's sequencer lock, with the tree at the stored size.

        Whatever fails inside rolls the transaction back and drops the tree (it is reloaded
        from the database by the next group). A connection the server dropped while it was
        idle is replaced once, before anything is written.
        """
        writer = self._require_writable()
        with writer.lock, self._errors("writing to the log"):
            try:
                with contextlib.ExitStack() as stack:
                    for attempt in range(2):
                        conn = writer.conn()
                        # one pipeline: BEGIN, the lock and the size cost one round trip, the
                        # writes and COMMIT another
                        opening = contextlib.ExitStack()
                        try:
                            opening.enter_context(conn.pipeline())
                            opening.enter_context(conn.transaction())
                            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock,))
                            size = _stored_size(conn)
                        except psycopg.OperationalError:
                            if attempt or not conn.closed:
                                with opening:
                                    raise
                            opening.pop_all()  # its connection is gone: nothing to end
                            continue
                        stack.enter_context(opening)
                        break
                    tree = writer.tree
                    if tree is None or tree.size != size:
                        tree = writer.load_tree(size)
                    yield conn, tree
            except BaseException:
                writer.tree = None
                raise

    @contextlib.contextmanager
    def _reading(self) -> Iterator[tuple[Connection, TileState]]:
        """The read connection and its tree, reloaded when the stored size moved.

        A connection the server dropped while it was idle is replaced once.
        """
        reader = self._reader
        with reader.lock, self._errors("reading the log"):
            conn = reader.conn()
            try:
                size = _stored_size(conn)
            except psycopg.OperationalError:
                if not conn.closed:
                    raise
                conn = reader.conn()
                size = _stored_size(conn)
            tree = reader.tree
            if tree is None or tree.size != size:
                try:
                    # the size and the partial tiles of that size, from one snapshot
                    with conn.transaction():
                        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                        tree = reader.load_tree(_stored_size(conn))
                except BaseException:
                    reader.tree = None
                    raise
            yield conn, tree

    def _require_writable(self) -> _Session:
        if self._writer is None:
            raise WorkspaceError(f"the audit log at {self.where} is open read-only")
        return self._writer


def _checked_size(tree: TileState, size: int | None) -> int:
    n = tree.size if size is None else size
    if not 0 <= n <= tree.size:
        raise InputError(f"the log has {tree.size} entries, not {n}")
    return n


def _stored_size(conn: Connection) -> int:
    row = conn.execute(_SIZE).fetchone()
    if row is None or not str(row[0]).isdigit():
        raise VerificationError("the log's stored size is missing or malformed")
    return int(row[0])


def _translate(exc: psycopg.Error, dsn: str, doing: str) -> WorkspaceError:
    """A driver error as one clear line: the server gone, or the database refusing."""
    message = f"{doing}: {_scrubbed(exc, dsn)}"
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return LogStoreUnavailable(f"the log's PostgreSQL server failed while {message}")
    return WorkspaceError(f"the log's PostgreSQL database refused {message}")


def _initialise(
    writer: _Session, dsn: str, origin: str | None, key_path: Path
) -> tuple[str, bytes]:
    """Create the tables (once, under the sequencer lock), check or record the origin and the
    data key's id; return the origin and the data key."""
    with writer.lock:
        conn = writer.conn()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
            exists = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
            if exists is None or not exists[0]:
                for statement in _SCHEMA:
                    conn.execute(statement)
            stored = _meta(conn, "origin")
            if stored is None:
                if origin is None:
                    raise WorkspaceError(f"the audit log at {describe_dsn(dsn)} has no origin")
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('origin', %s), ('size', '0')",
                    (origin,),
                )
                stored = origin
            elif origin is not None and stored != origin:
                raise WorkspaceError(
                    f"the log at {describe_dsn(dsn)} is {stored!r}, not {origin!r}"
                )
            expected = _meta(conn, "data_key_id")
            key = _data_key(key_path, expected, writable=True)
            assert key is not None  # a writable log always makes or finds its key
            if expected is None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('data_key_id', %s)", (_key_id(key),)
                )
    return stored, key


def _inspect(
    reader: _Session, dsn: str, origin: str | None, key_path: Path | None
) -> tuple[str, bytes | None]:
    """A reader's check that the database holds a log (of ``origin``); its data key."""
    with reader.lock:
        conn = reader.conn()
        row = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
        stored = _meta(conn, "origin") if row is not None and row[0] else None
        if stored is None:
            raise WorkspaceError(f"no audit log in the database at {describe_dsn(dsn)}")
        if origin is not None and stored != origin:
            raise WorkspaceError(f"the log at {describe_dsn(dsn)} is {stored!r}, not {origin!r}")
        if key_path is None:
            return stored, None
        return stored, _data_key(key_path, _meta(conn, "data_key_id"), writable=False)


def _meta(conn: Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
    return None if row is None else str(row[0])


def _data_key(key_path: Path, expected: str | None, *, writable: bool) -> bytes | None:
    """The data key in ``key_path``, checked against the id the log recorded (``expected``);
    made (0600) when a writable log has none yet. None for a reader without it."""
    for attempt in range(2):
        try:
            with open(key_path, "rb") as handle:
                key: bytes | None = handle.read(_KEY_BYTES + 1)
        except FileNotFoundError:
            key = None
        except OSError as exc:
            raise WorkspaceError(f"cannot read the log's key {key_path}: {exc.strerror}") from exc
        if key is None:
            if not writable:
                return None
            if expected is not None:
                raise WorkspaceError(
                    f"the log's record keys are encrypted under {key_path}, which is missing: "
                    "restore it (without it no private value can be read)"
                )
            key = os.urandom(_KEY_BYTES)
            try:
                _write_new_key(key_path, key)
            except WorkspaceError:
                if attempt:
                    raise
                continue  # another replica made it first: read theirs
        if len(key) != _KEY_BYTES:
            raise WorkspaceError(f"{key_path} is not a log key ({_KEY_BYTES} bytes)")
        if expected is not None and _key_id(key) != expected:
            raise WorkspaceError(
                f"{key_path} is not the key this log's record keys are sealed with"
            )
        return key
    raise WorkspaceError(f"cannot create the log's key {key_path}")  # pragma: no cover
