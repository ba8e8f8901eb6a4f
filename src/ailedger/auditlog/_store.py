"""The storage interface under :class:`ailedger.auditlog.log.AuditLog`, and what stores share.

The log itself (encoding records, the Merkle tree's maths, private-field encryption, signing
checkpoints, receipts, exports) does not depend on where its rows live. A :class:`LogStore`
keeps them: ``entries`` (the exact bytes of each entry), ``tiles`` (the tree's hashes, see
:mod:`._tiles`), ``record_keys`` and ``private`` (encrypted values of sensitive fields),
``checkpoints``, ``anchors`` and ``meta`` (origin, size, the data key's id). Two stores exist:
one SQLite file (:mod:`._store_sqlite`, the default) and a PostgreSQL database shared by
several processes (:mod:`.pglog`). For the same entries both hold the same bytes.

Writes happen in commit groups (:meth:`LogStore.sequencing`): one transaction, exclusive among
the log's writers, that starts from the tree at the stored size and ends with the new size
stored; the whole group is durable when the block ends, or rolled back when it raises.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ailedger._fs import PRIVATE_FILE_MODE, open_dir
from ailedger.auditlog._tiles import TileState
from ailedger.errors import InputError, WorkspaceError

__all__ = ["KEY_BYTES", "LogStore", "check_origin", "key_aad", "key_id", "read_data_key"]

#: a log's data key, and each record key it wraps (AES-256-GCM), in bytes
KEY_BYTES = 32

#: a row of ``private``: entry index, field name, salt, nonce, ciphertext
PrivateRow = tuple[int, str, bytes, bytes, bytes]
#: a row of ``tiles``: level, index, width, data
TileRow = tuple[int, int, int, bytes]


class LogStore(ABC):
    """Where one log's rows live. The log calls it only through these methods.

    Reads may run on any thread; writes run inside :meth:`sequencing`. Methods raise
    :class:`WorkspaceError` (or :class:`~ailedger.errors.LogStoreUnavailable`) for a store
    that fails, never a driver's own exception.
    """

    #: the store for messages (a file, or a database without its password)
    where: str
    #: the SQLite file, or None for a store that is not a file
    path: Path | None = None
    #: whether a record key may be stored raw (32 bytes, written before keys were wrapped)
    legacy_raw_keys: bool = False
    #: the name of the thread that commits single appends
    sequencer_name: str = "auditlog-sequencer"

    @property
    @abstractmethod
    def writable(self) -> bool:
        """Whether this process may write (it opened the store writable)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and locks; the store is unusable afterwards."""

    @abstractmethod
    def announce_holder(self, url: str) -> None:
        """Tell other would-be writers that ``ailedger serve`` at ``url`` holds the log
        (nothing to do for a store that many processes write together)."""

    # -- commit groups ------------------------------------------------------------------------

    @abstractmethod
    def sequencing(self) -> AbstractContextManager[TileState]:
        """A commit group: the tree at the stored size, in one write transaction that no other
        writer (in any process) runs beside. Durable when the block ends; rolled back, with
        the tree's appends forgotten, when it raises."""

    @abstractmethod
    def write(
        self,
        first: int,
        datas: Sequence[bytes],
        tiles: Sequence[TileRow],
        key_rows: Sequence[tuple[int, bytes]],
        private_rows: Sequence[PrivateRow],
        size: int,
    ) -> None:
        """Store entries ``first ..`` (``datas``), the tree's changed tiles, the wrapped record
        keys and private values of those entries, and the log's new ``size``, in the open
        commit group."""

    @abstractmethod
    def last_checkpoint(self) -> tuple[int, bytes, bytes] | None:
        """The newest signed checkpoint as (size, root, note), inside a commit group."""

    @abstractmethod
    def add_checkpoint(self, size: int, root: bytes, note: bytes, created: float) -> None:
        """Store a newly signed checkpoint, inside a commit group."""

    # -- reads --------------------------------------------------------------------------------

    @abstractmethod
    def reading(self) -> AbstractContextManager[TileState]:
        """The tree as stored now (a reader follows every writer), for reads: the store's
        read methods called inside see the same log."""

    @abstractmethod
    def size(self) -> int:
        """How many entries the log holds (never waits for a commit group of this process)."""

    @abstractmethod
    def entry(self, index: int) -> object | None:
        """The stored value of entry ``index`` (bytes unless tampered), or None."""

    @abstractmethod
    def entry_rows(self, start: int, stop: int) -> list[tuple[int, object]]:
        """Stored entries with ``start <= index < stop``, in order: (index, value)."""

    @abstractmethod
    def entry_count(self) -> int:
        """How many entry rows are stored."""

    @abstractmethod
    def private(self, index: int) -> tuple[object | None, list[tuple[Any, ...]]]:
        """Entry ``index``'s wrapped record key (None if none) and its private rows
        (field, salt, nonce, ciphertext)."""

    @abstractmethod
    def erase(self, index: int) -> bool:
        """Delete entry ``index``'s record key and private values, leaving no copy in the
        store's files; whether there was a key to delete."""

    @abstractmethod
    def checkpoints(self) -> list[tuple[int, bytes]]:
        """Every signed checkpoint, oldest first: (size, note)."""

    @abstractmethod
    def latest_checkpoint(self) -> bytes | None:
        """The newest signed checkpoint's note, or None."""

    @abstractmethod
    def update_note(self, size: int, change: Callable[[bytes], bytes]) -> bytes | None:
        """Replace the note of the checkpoint of ``size`` by ``change(note)`` in one
        transaction; the note as stored then, or None if there is no such checkpoint."""

    # -- anchors ------------------------------------------------------------------------------

    @abstractmethod
    def add_anchor(self, size: int, root: bytes, chain_id: int, registry: str, now: float) -> int:
        """Store a new anchor (status ``new``); its id."""

    @abstractmethod
    def update_anchor(self, anchor_id: int, values: dict[str, Any], now: float) -> None:
        """Set columns of an anchor (names already checked)."""

    @abstractmethod
    def anchor_rows(self) -> list[tuple[Any, ...]]:
        """Every anchor: id, size, root, chain id, registry, tx, block number, block hash,
        status; oldest first."""


def check_origin(origin: str) -> None:
    """:class:`InputError` unless ``origin`` is a C2SP origin line (one word, no ``+``)."""
    if not origin or any(c.isspace() for c in origin) or "+" in origin:
        raise InputError(f"a log origin is one word without '+' (C2SP), got {origin!r}")


def key_aad(index: int) -> bytes:
    """The associated data the record key of entry ``index`` is wrapped with."""
    return f"ailedger/record-key/v1 {index}".encode()


def key_id(key: bytes) -> str:
    """A public name of a data key (SHA-256 of a label and the key), to spot the wrong file."""
    return hashlib.sha256(b"ailedger/log-key-id/v1\n" + key).hexdigest()[:32]


def read_data_key(key_path: Path | None, expected: str | None, *, writable: bool) -> bytes | None:
    """The log's data key from ``key_path``, checked against the id the log recorded
    (``expected``); made (0600) when a writable log has none yet. None for a reader without
    it (it reads entries, not private values).

    A key file cut short (a crash while it was made) is replaced when nothing was ever sealed
    under it (no recorded id); when another process makes the file first, its key is used.
    """
    if key_path is None:
        if writable:
            raise WorkspaceError("a writable log needs its data key file")
        return None
    for attempt in range(2):
        try:
            with open(key_path, "rb") as handle:
                key: bytes | None = handle.read(KEY_BYTES + 1)
        except FileNotFoundError:
            key = None
        except OSError as exc:
            raise WorkspaceError(f"cannot read the log's key {key_path}: {exc.strerror}") from exc
        if key is not None and len(key) != KEY_BYTES:
            if expected is not None or not writable:
                raise WorkspaceError(f"{key_path} is not a log key ({KEY_BYTES} bytes)")
            key_path.unlink()
            key = None
        if key is None:
            if not writable:
                return None
            if expected is not None:
                raise WorkspaceError(
                    f"the log's record keys are encrypted under {key_path}, which is missing: "
                    "restore it (without it no private value can be read)"
                )
            key = os.urandom(KEY_BYTES)
            try:
                _write_new_key(key_path, key)
            except FileExistsError as exc:
                if attempt:
                    raise WorkspaceError(
                        f"{key_path} appeared while the log was being opened"
                    ) from exc
                continue  # another writer (a replica) made it first: read theirs
        if expected is not None and key_id(key) != expected:
            raise WorkspaceError(
                f"{key_path} is not the key this log's record keys are sealed with"
            )
        return key
    raise WorkspaceError(f"cannot create the log's key {key_path}")  # pragma: no cover


def _write_new_key(path: Path, key: bytes) -> None:
    """Create ``path`` holding ``key``, exclusively and 0600 from the start, durably.

    :class:`FileExistsError` if it exists already.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        # the folder as :func:`open_dir` walks it: another user's symlink on the way is refused
        dir_fd = open_dir(path.parent, create=True, mode=0o700)
    except OSError as exc:
        raise WorkspaceError(f"cannot create {path.parent}: {exc.strerror or exc}") from exc
    try:
        fd = os.open(path.name, flags, PRIVATE_FILE_MODE, dir_fd=dir_fd)
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
