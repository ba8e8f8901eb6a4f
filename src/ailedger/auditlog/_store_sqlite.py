"""The audit log's rows in one SQLite file (the default store, see :mod:`._store`).

One file in WAL mode with ``synchronous=FULL``, so a commit group that ended is on disk. The
file and its WAL are created 0600. Erasure deletes with ``secure_delete`` (the bytes are
zeroed, free pages too) and then checkpoints and truncates the WAL, so no old copy is left in
``log.sqlite-wal`` either, even if the process dies right after.

One process writes a log at a time (``flock`` on a lock file beside it); any number read it.
In the writing process, a commit group holds the log's lock for its whole transaction, and
reads wait for it (one connection serves both).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ailedger._fs import create_private_file
from ailedger.auditlog._store import (
    KEY_BYTES,
    LogStore,
    PrivateRow,
    TileRow,
    check_origin,
    key_aad,
    key_id,
    read_data_key,
)
from ailedger.auditlog._tiles import TileState
from ailedger.errors import WorkspaceError, WorkspaceLocked

__all__ = ["SqliteStore"]

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
_PAGE = 4096
_NONCE_BYTES = 12
# Entries go in by multi-row INSERTs of this many rows (twice as many parameters, well under
# SQLite's limit): executemany releases and re-takes the GIL for every row, and while the
# preparing thread runs, each re-take can wait for the interpreter's switch interval.
_ROWS_PER_INSERT = 256
_INSERT_ENTRIES = "INSERT INTO entries (idx, data) VALUES " + ", ".join(  # noqa: S608 (placeholders)
    ["(?, ?)"] * _ROWS_PER_INSERT
)


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_rows(count: int) -> str:
    """A multi-row INSERT of ``count`` entries (SQLite keeps it prepared, by its text)."""
    return "INSERT INTO entries (idx, data) VALUES " + ", ".join(["(?, ?)"] * count)  # noqa: S608


class SqliteStore(LogStore):
    """A log's rows in one SQLite file; open it with :meth:`open`."""

    legacy_raw_keys = True

    def __init__(self, *, path: Path, conn: sqlite3.Connection, lock_fd: int | None) -> None:
        self.path = self._file = path
        self.where = str(path)
        self._conn = conn
        self._lock_fd = lock_fd
        self._db_lock = threading.RLock()
        # append_many and the sequencer take turns, so a call's records stay consecutive
        self._order_lock = threading.Lock()
        self._tree = TileState(conn, int(self._meta("size", "0")))

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        origin: str | None,
        writable: bool,
        lock_timeout: float,
        key_path: Path,
    ) -> tuple[SqliteStore, str, bytes | None]:
        """Open (creating it when writable) the file ``path``; the store, the log's origin and
        its data key (see :meth:`ailedger.auditlog.log.AuditLog.open`)."""
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
                check_origin(origin)
                if not writable:
                    raise WorkspaceError(f"the audit log at {path} is empty")
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('origin', ?), ('size', '0')", (origin,)
                )
            elif origin is not None and stored[0] != origin:
                raise WorkspaceError(f"the log at {path} is {stored[0]!r}, not {origin!r}")
            row = conn.execute("SELECT value FROM meta WHERE key = 'data_key_id'").fetchone()
            expected = None if row is None else str(row[0])
            data_key = read_data_key(key_path, expected, writable=writable)
            if expected is None and data_key is not None and writable:
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('data_key_id', ?)",
                    (key_id(data_key),),
                )
            store = cls(path=path, conn=conn, lock_fd=lock_fd)
            if writable:
                assert data_key is not None  # a writable log always makes or finds its key
                store._wrap_raw_keys(AESGCM(data_key))
            return store, origin or str(stored[0]), data_key
        except sqlite3.DatabaseError as exc:
            _close_quietly(conn, lock_fd)
            raise WorkspaceError(f"{path} is not a readable audit log: {exc}") from exc
        except BaseException:
            _close_quietly(conn, lock_fd)
            raise

    @property
    def writable(self) -> bool:
        return self._lock_fd is not None

    def close(self) -> None:
        with self._db_lock:
            self._conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def announce_holder(self, url: str) -> None:
        """Write into the lock file that ``ailedger serve`` (this process, at ``url``) holds
        the log, so other writers fail at once with a message naming it (see :func:`_lock`)."""
        assert self._lock_fd is not None
        data = _holder_description(url)
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, data, 0)

    # -- commit groups ------------------------------------------------------------------------

    @contextlib.contextmanager
    def sequencing(self) -> Iterator[TileState]:
        with self._order_lock, self._db_lock:
            start = self._tree.size
            try:
                with self._transaction():
                    yield self._tree
            except BaseException:
                self._tree.rollback(start)
                raise

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction (hold ``_db_lock``): committed, or rolled back if it raises."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise

    def write(
        self,
        first: int,
        datas: Sequence[bytes],
        tiles: Sequence[TileRow],
        key_rows: Sequence[tuple[int, bytes]],
        private_rows: Sequence[PrivateRow],
        size: int,
    ) -> None:
        params = list(itertools.chain.from_iterable(zip(itertools.count(first), datas)))
        whole = len(datas) - len(datas) % _ROWS_PER_INSERT
        step = 2 * _ROWS_PER_INSERT
        for at in range(0, 2 * whole, step):
            self._conn.execute(_INSERT_ENTRIES, params[at : at + step])
        if whole < len(datas):  # the rest in one statement too (up to 255 rows)
            self._conn.execute(_insert_rows(len(datas) - whole), params[2 * whole :])
        self._conn.executemany(
            "INSERT OR REPLACE INTO tiles (level, idx, width, data) VALUES (?, ?, ?, ?)", tiles
        )
        if key_rows:
            self._conn.executemany("INSERT INTO record_keys VALUES (?, ?)", key_rows)
            self._conn.executemany("INSERT INTO private VALUES (?, ?, ?, ?, ?)", private_rows)
        self._conn.execute("UPDATE meta SET value = ? WHERE key = 'size'", (str(size),))

    def last_checkpoint(self) -> tuple[int, bytes, bytes] | None:
        row = self._conn.execute(
            "SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]), bytes(row[2]))

    def add_checkpoint(self, size: int, root: bytes, note: bytes, created: float) -> None:
        self._conn.execute(
            "INSERT INTO checkpoints (size, root, note, created) VALUES (?, ?, ?, ?)",
            (size, root, note, created),
        )

    # -- reads --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def reading(self) -> Iterator[TileState]:
        self._sync()
        with self._db_lock:
            yield self._tree

    def size(self) -> int:
        self._sync()
        return self._tree.size

    def entry(self, index: int) -> object | None:
        with self._db_lock:
            row = self._conn.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
        return None if row is None else row[0]

    def entry_rows(self, start: int, stop: int) -> list[tuple[int, object]]:
        with self._db_lock:
            rows = self._conn.execute(
                "SELECT idx, data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, stop),
            ).fetchall()
        return [(int(idx), data) for idx, data in rows]

    def entry_count(self) -> int:
        with self._db_lock:
            return int(self._conn.execute("SELECT count(*) FROM entries").fetchone()[0])

    def private(self, index: int) -> tuple[object | None, list[tuple[Any, ...]]]:
        with self._db_lock:
            key_row = self._conn.execute(
                "SELECT key FROM record_keys WHERE idx = ?", (index,)
            ).fetchone()
            rows = self._conn.execute(
                "SELECT field, salt, nonce, ciphertext FROM private WHERE idx = ?", (index,)
            ).fetchall()
        return (None if key_row is None else key_row[0]), [tuple(row) for row in rows]

    def erase(self, index: int) -> bool:
        """Delete the rows, then copy the WAL into the file and truncate it: no copy of the
        deleted bytes is left in the file, its free pages or its WAL."""
        with self._db_lock:
            with self._transaction():
                gone = self._conn.execute(
                    "DELETE FROM record_keys WHERE idx = ?", (index,)
                ).rowcount
                self._conn.execute("DELETE FROM private WHERE idx = ?", (index,))
            self._truncate_wal(f"entry {index}'s private values were erased")
        return bool(gone > 0)

    def checkpoints(self) -> list[tuple[int, bytes]]:
        with self._db_lock:
            rows = self._conn.execute("SELECT size, note FROM checkpoints ORDER BY size").fetchall()
        return [(int(s), bytes(n)) for s, n in rows]

    def latest_checkpoint(self) -> bytes | None:
        with self._db_lock:
            row = self._conn.execute(
                "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
        return None if row is None else bytes(row[0])

    def update_note(self, size: int, change: Callable[[bytes], bytes]) -> bytes | None:
        with self._db_lock:
            row = self._conn.execute(
                "SELECT note FROM checkpoints WHERE size = ?", (size,)
            ).fetchone()
            if row is None:
                return None
            note = bytes(row[0])
            new = change(note)
            if new != note:
                self._conn.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (new, size))
            return new

    # -- anchors ------------------------------------------------------------------------------

    def add_anchor(self, size: int, root: bytes, chain_id: int, registry: str, now: float) -> int:
        with self._db_lock:
            cursor = self._conn.execute(
                "INSERT INTO anchors (size, root, chain_id, registry, status, updated) "
                "VALUES (?, ?, ?, ?, 'new', ?)",
                (size, root, chain_id, registry, now),
            )
            return int(cursor.lastrowid or 0)

    def update_anchor(self, anchor_id: int, values: dict[str, Any], now: float) -> None:
        columns = ", ".join(f"{name} = ?" for name in values)
        with self._db_lock:
            self._conn.execute(
                f"UPDATE anchors SET {columns}, updated = ? WHERE id = ?",  # noqa: S608 - names checked by the log
                (*values.values(), now, anchor_id),
            )

    def anchor_rows(self) -> list[tuple[Any, ...]]:
        with self._db_lock:
            rows = self._conn.execute(
                "SELECT id, size, root, chain_id, registry, tx_hash, block_number, block_hash, "
                "status FROM anchors ORDER BY id"
            ).fetchall()
        return [tuple(row) for row in rows]

    # -- internals ----------------------------------------------------------------------------

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
                    f"{done}, but a reader of {self._file.name} kept old copies in its WAL: "
                    "run the erasure again once readers have closed"
                )
            time.sleep(0.05)

    def _wrap_raw_keys(self, key_aead: AESGCM) -> None:
        """Encrypt the raw record keys a log written by an older version holds, then scrub
        the raw bytes from the file and its WAL."""
        select = "SELECT idx, key FROM record_keys WHERE length(key) = ? AND idx > ? ORDER BY idx"
        with self._db_lock:
            if self._conn.execute(select + " LIMIT 1", (KEY_BYTES, -1)).fetchone() is None:
                return
            with self._transaction():
                after = -1
                while rows := self._conn.execute(
                    select + " LIMIT ?", (KEY_BYTES, after, _PAGE)
                ).fetchall():
                    updates = []
                    for idx, raw in rows:
                        nonce = os.urandom(_NONCE_BYTES)
                        wrapped = key_aead.encrypt(nonce, bytes(raw), key_aad(int(idx)))
                        updates.append((nonce + wrapped, int(idx)))
                    self._conn.executemany("UPDATE record_keys SET key = ? WHERE idx = ?", updates)
                    after = int(rows[-1][0])
            self._truncate_wal("the log's record keys were encrypted")


def _close_quietly(conn: sqlite3.Connection | None, lock_fd: int | None) -> None:
    if conn is not None:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
    if lock_fd is not None:
        os.close(lock_fd)


def _lock(path: Path, timeout: float) -> int:
    """Take the log's write lock (``flock`` on ``path``), waiting up to ``timeout`` seconds.

    The lock file holds a description of its holder when the holder is ``ailedger serve``
    (written by :meth:`SqliteStore.announce_holder`); a writer that finds the lock held by a
    live serving process fails at once, saying so, instead of waiting. The description is
    cleared by whoever takes the lock next, so one left by a process that is gone blocks
    nobody.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    start = time.monotonic()
    deadline = start + timeout
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _serving_holder(fd)
            if holder is not None:
                os.close(fd)
                raise WorkspaceLocked(holder) from None
            if not said and time.monotonic() - start >= 1.0:  # a noticeable wait: say so
                logging.getLogger("ailedger.progress").info(
                    "waiting up to %.0f s for the audit log %s, being written by another process",
                    timeout,
                    path.with_suffix(""),
                )
                said = True
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
    """What :meth:`SqliteStore.announce_holder` writes into the lock file (one JSON object)."""
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
