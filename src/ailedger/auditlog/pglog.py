"""The audit log on PostgreSQL, shared by several processes (``ailedger serve`` replicas).

:class:`PostgresLog` is an :class:`ailedger.auditlog.log.AuditLog` over another store
(:class:`PostgresStore`, the :class:`._store.LogStore` interface over psycopg): everything but
storage (entry encoding, tiles, private-field encryption under the workspace's data key
``keys/log.key``, checkpoints, receipts, exports) is the same code, so for the same entries its
tiles, roots, proofs and signed checkpoints are byte-identical to the SQLite store's.

Storage: one database (or one schema, chosen with ``options=-csearch_path=...`` in the DSN)
per log, with the SQLite backend's tables: ``meta`` (origin, size, data key id), ``entries``,
``tiles``, ``checkpoints``, ``record_keys``, ``private``, ``anchors``.

One sequencer at a time
    Every commit group (a batch of :meth:`AuditLog.append` calls gathered by this process's
    background sequencer, one whole :meth:`AuditLog.append_many`, or signing a checkpoint)
    is one transaction that first takes a transaction-level advisory lock,
    ``pg_advisory_xact_lock`` (PostgreSQL 15 documentation, §13.3.5 "Advisory Locks" and
    §9.27.10 "Advisory Lock Functions"; its 64-bit key is derived from the log's origin),
    then reads the log's size, writes the
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
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ailedger.auditlog._store import (
    LogStore,
    PrivateRow,
    TileRow,
    check_origin,
    key_id,
    read_data_key,
)
from ailedger.auditlog._tiles import TileState
from ailedger.auditlog.log import AuditLog
from ailedger.errors import (
    InputError,
    LogStoreUnavailable,
    VerificationError,
    WorkspaceError,
)

if TYPE_CHECKING:
    import sqlite3

__all__ = ["PostgresLog", "PostgresStore", "describe_dsn", "parse_dsn"]

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


def _lock_key(origin: str) -> int:
    """The advisory lock (a signed 64-bit key) every commit group of the log ``origin`` takes
    (advisory locks are per database; logs of other origins there do not wait for it)."""
    digest = hashlib.sha256(b"ailedger/auditlog/sequencer\n" + origin.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


#: taken while the tables are created (before the log's origin is known)
_SCHEMA_LOCK_KEY = _lock_key("")
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


class PostgresLog(AuditLog):
    """A tamper-evident log of records in a PostgreSQL database, shared by processes: an
    :class:`AuditLog` over a :class:`PostgresStore`.

    Open it with :meth:`open` (see :func:`ailedger.auditlog.backend.open_log` for a
    workspace); close it, or use ``with``.
    """

    @classmethod
    def open(  # type: ignore[override]  # a PostgreSQL log is opened by DSN, not by file
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
        SQLite). :class:`InputError` for a malformed DSN, :class:`LogStoreUnavailable` when
        the server cannot be reached.
        """
        store, stored_origin, data_key = PostgresStore.open(
            dsn, origin=origin, writable=writable, key_path=key_path
        )
        return cls(store=store, origin=stored_origin, key_path=key_path, data_key=data_key)

    @contextlib.contextmanager
    def _sequencing(self) -> Iterator[tuple[Connection, TileState]]:
        """A commit group with its connection (for tests that hold the sequencer lock)."""
        self._require_writable()
        store = cast("PostgresStore", self._store)
        with store.sequencing() as tree:
            assert store.group_conn is not None
            yield store.group_conn, tree

    def _write(
        self,
        conn: Connection,
        tree: TileState,
        datas: Sequence[bytes],
        private: Sequence[tuple[tuple[str, bytes, bytes], ...]],
    ) -> None:
        """Add entries in the commit group :meth:`_sequencing` opened on ``conn``."""
        assert conn is cast("PostgresStore", self._store).group_conn
        self._add(tree, datas, private)


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


class PostgresStore(LogStore):
    """A log's rows in a PostgreSQL database (the module docstring tells how writers of
    several processes share it); open it with :meth:`open`."""

    sequencer_name = "pglog-sequencer"

    def __init__(self, *, dsn: str, origin: str, reader: _Session, writer: _Session | None) -> None:
        self._dsn = dsn  # holds the password: never shown
        self.where = describe_dsn(dsn)
        self._lock = _lock_key(origin)
        self._reader = reader
        self._writer = writer
        #: the connection of the open commit group (None outside one)
        self.group_conn: Connection | None = None

    @classmethod
    def open(
        cls, dsn: str, *, origin: str | None, writable: bool, key_path: Path | None
    ) -> tuple[PostgresStore, str, bytes | None]:
        """Connect, create the tables when writable (once, under a lock), check the origin and
        the data key; the store, the log's origin and its data key."""
        parse_dsn(dsn)
        if origin is not None:
            check_origin(origin)
        if writable and key_path is None:
            raise WorkspaceError("a writable PostgreSQL log needs its data key file")
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
            store = cls(dsn=dsn, origin=stored_origin, reader=reader, writer=writer)
            return store, stored_origin, data_key
        except psycopg.Error as exc:
            reader.close()
            if writer is not None:
                writer.close()
            raise _translate(exc, dsn, f"opening the log at {describe_dsn(dsn)}") from exc
        except BaseException:
            reader.close()
            if writer is not None:
                writer.close()
            raise

    @property
    def writable(self) -> bool:
        return self._writer is not None

    def close(self) -> None:
        for session in (self._writer, self._reader):
            if session is not None:
                with session.lock:
                    session.close()

    def announce_holder(self, url: str) -> None:
        """Nothing to announce: any number of processes write a PostgreSQL log together."""

    # -- commit groups ------------------------------------------------------------------------

    @contextlib.contextmanager
    def sequencing(self) -> Iterator[TileState]:
        """A transaction holding the log's sequencer lock, with the tree at the stored size.

        Whatever fails inside rolls the transaction back and drops the tree (it is reloaded
        from the database by the next group). A connection the server dropped while it was
        idle is replaced once, before anything is written.
        """
        writer = self._require_writer()
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
                    self.group_conn = conn
                    try:
                        yield tree
                    finally:
                        self.group_conn = None
            except BaseException:
                writer.tree = None
                raise

    def _group(self) -> Connection:
        if self.group_conn is None:
            raise RuntimeError("a PostgreSQL log writes only inside a commit group")
        return self.group_conn

    def write(
        self,
        first: int,
        datas: Sequence[bytes],
        tiles: Sequence[TileRow],
        key_rows: Sequence[tuple[int, bytes]],
        private_rows: Sequence[PrivateRow],
        size: int,
    ) -> None:
        with self._group().cursor() as cursor:
            # arrays, not COPY: these statements queue up in the group's pipeline
            cursor.execute(
                "INSERT INTO entries (idx, data) SELECT * FROM unnest(%s::bigint[], %s::bytea[])",
                (list(range(first, first + len(datas))), list(datas)),
            )
            cursor.executemany(_UPSERT_TILE, tiles)
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
            cursor.execute("UPDATE meta SET value = %s WHERE key = 'size'", (str(size),))

    def last_checkpoint(self) -> tuple[int, bytes, bytes] | None:
        row = (
            self._group()
            .execute("SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1")
            .fetchone()
        )
        return None if row is None else (int(row[0]), bytes(row[1]), bytes(row[2]))

    def add_checkpoint(self, size: int, root: bytes, note: bytes, created: float) -> None:
        self._group().execute(
            "INSERT INTO checkpoints (size, root, note, created) VALUES (%s, %s, %s, %s)",
            (size, root, note, created),
        )

    # -- reads --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def reading(self) -> Iterator[TileState]:
        """The read connection's tree, reloaded when the stored size moved.

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
            yield tree

    def _read(self, query: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query on the read connection (replaced once if the server dropped it)."""
        reader = self._reader
        with reader.lock, self._errors("reading the log"):
            conn = reader.conn()
            try:
                return conn.execute(query, params).fetchall()
            except psycopg.OperationalError:
                if not conn.closed:
                    raise
            return reader.conn().execute(query, params).fetchall()

    def size(self) -> int:
        with self.reading() as tree:
            return tree.size

    def entry(self, index: int) -> object | None:
        rows = self._read("SELECT data FROM entries WHERE idx = %s", (index,))
        return rows[0][0] if rows else None

    def entry_rows(self, start: int, stop: int) -> list[tuple[int, object]]:
        rows = self._read(
            "SELECT idx, data FROM entries WHERE idx >= %s AND idx < %s ORDER BY idx",
            (start, stop),
        )
        return [(int(idx), data) for idx, data in rows]

    def entry_count(self) -> int:
        rows = self._read("SELECT count(*) FROM entries")
        return int(rows[0][0]) if rows else 0

    def private(self, index: int) -> tuple[object | None, list[tuple[Any, ...]]]:
        with self._reader.lock:
            key_rows = self._read("SELECT key FROM record_keys WHERE idx = %s", (index,))
            rows = self._read(
                "SELECT field, salt, nonce, ciphertext FROM private WHERE idx = %s", (index,)
            )
        return (key_rows[0][0] if key_rows else None), rows

    def erase(self, index: int) -> bool:
        """Delete the rows, then rewrite both tables (``VACUUM FULL``) so their files hold no
        copy; the server's write-ahead log keeps one until it is recycled (see the module
        docstring), sealed under the data key."""
        writer = self._require_writer()
        with writer.lock, self._errors("erasing an entry"):
            conn = writer.conn()
            with conn.transaction():
                gone = conn.execute("DELETE FROM record_keys WHERE idx = %s", (index,)).rowcount
                conn.execute("DELETE FROM private WHERE idx = %s", (index,))
            conn.execute("VACUUM (FULL) record_keys, private")
        return gone > 0

    def checkpoints(self) -> list[tuple[int, bytes]]:
        rows = self._read("SELECT size, note FROM checkpoints ORDER BY size")
        return [(int(s), bytes(n)) for s, n in rows]

    def latest_checkpoint(self) -> bytes | None:
        rows = self._read("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1")
        return bytes(rows[0][0]) if rows else None

    def update_note(self, size: int, change: Callable[[bytes], bytes]) -> bytes | None:
        writer = self._require_writer()
        with writer.lock, self._errors("adding cosignatures"):
            conn = writer.conn()
            with conn.transaction():
                row = conn.execute(
                    "SELECT note FROM checkpoints WHERE size = %s FOR UPDATE", (size,)
                ).fetchone()
                if row is None:
                    return None
                note = bytes(row[0])
                new = change(note)
                if new != note:
                    conn.execute("UPDATE checkpoints SET note = %s WHERE size = %s", (new, size))
        return new

    # -- anchors ------------------------------------------------------------------------------

    def add_anchor(self, size: int, root: bytes, chain_id: int, registry: str, now: float) -> int:
        writer = self._require_writer()
        with writer.lock, self._errors("recording an anchor"):
            row = (
                writer.conn()
                .execute(
                    "INSERT INTO anchors (size, root, chain_id, registry, status, updated) "
                    "VALUES (%s, %s, %s, %s, 'new', %s) RETURNING id",
                    (size, root, chain_id, registry, now),
                )
                .fetchone()
            )
        assert row is not None
        return int(row[0])

    def update_anchor(self, anchor_id: int, values: dict[str, Any], now: float) -> None:
        writer = self._require_writer()
        columns = ", ".join(f"{name} = %s" for name in values)
        with writer.lock, self._errors("recording an anchor"):
            writer.conn().execute(
                f"UPDATE anchors SET {columns}, updated = %s WHERE id = %s",  # noqa: S608 - names checked by the log
                (*values.values(), now, anchor_id),
            )

    def anchor_rows(self) -> list[tuple[Any, ...]]:
        rows = self._read(
            "SELECT id, size, root, chain_id, registry, tx_hash, block_number, block_hash, "
            "status FROM anchors ORDER BY id"
        )
        return [(r[0], r[1], bytes(r[2]), *r[3:]) for r in rows]

    # -- internals ----------------------------------------------------------------------------

    def _require_writer(self) -> _Session:
        if self._writer is None:
            raise WorkspaceError(f"the audit log at {self.where} is open read-only")
        return self._writer

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            raise _translate(exc, self._dsn, doing) from exc


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
            key = read_data_key(key_path, expected, writable=True)
            assert key is not None  # a writable log always makes or finds its key
            if expected is None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('data_key_id', %s)", (key_id(key),)
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
        return stored, read_data_key(key_path, _meta(conn, "data_key_id"), writable=False)


def _meta(conn: Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
    return None if row is None else str(row[0])
