"""Merkle hashes kept as tiles, with memory that does not grow with the log.

The tree's hashes are grouped as in C2SP tlog-tiles: tile ``(L, N)`` holds the 256 hashes of
level ``8L`` numbered ``256N`` to ``256N+255``. Each stored tile also keeps its seven inner
rows (the nodes of levels ``8L+1 .. 8L+7`` above those hashes), so any node of the tree is one
lookup: a proof at any size touches at most one tile per tile level (four at 4 billion entries)
and hashes nothing. Full tiles are written once; the one partial tile per level lives in memory
with its inner rows (at most 255 hashes a level, 502 with the rows) and is saved with every
commit. Appending a hash to a partial tile adds only the inner nodes it completes (one on
average), so a commit costs hashes in proportion to what it appends, not to the tile's width.

The reader side implements :class:`ailedger.auditlog._merkle.HashReader` over stored-hash
indexes (Crosby and Wallach's layout), so the proof maths of :mod:`._merkle` runs unchanged.
"""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
from collections import OrderedDict
from collections.abc import Sequence

from ailedger.auditlog._merkle import (
    TILE_HEIGHT,
    TILE_WIDTH,
    node_hash,
    split_stored_hash_index,
)
from ailedger.errors import VerificationError

__all__ = ["TileState", "build_rows", "row_offsets"]

_H = 32
_sha256 = hashlib.sha256
_CACHE_TILES = 256


def build_rows(bottom: Sequence[bytes]) -> bytes:
    """Concatenate a tile's bottom row and its seven inner rows (``w >> r`` hashes in row r)."""
    rows = [b"".join(bottom)]
    row = list(bottom)
    for _ in range(1, TILE_HEIGHT):
        row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
        rows.append(b"".join(row))
    return b"".join(rows)


def _grow(rows: list[list[bytes]]) -> None:
    """Add to a partial tile's inner rows the nodes its bottom row's new hashes complete.

    Row ``r + 1`` always holds ``len(rows[r]) // 2`` hashes; once a row gains no pair, none
    above it changes.
    """
    for r in range(TILE_HEIGHT - 1):
        row, up = rows[r], rows[r + 1]
        start = 2 * len(up)
        if start + 1 >= len(row):
            return
        # node_hash inlined (RFC 6962 §2.1): about a tenth of an append's CPU is this line
        up.extend(
            [_sha256(b"\x01" + row[i] + row[i + 1]).digest() for i in range(start, len(row) - 1, 2)]
        )


def _no_rows() -> list[list[bytes]]:
    return [[] for _ in range(TILE_HEIGHT)]


def row_offsets(width: int) -> list[int]:
    """Byte offset of each of the eight rows in a tile blob of ``width``."""
    offsets, at = [], 0
    for r in range(TILE_HEIGHT):
        offsets.append(at)
        at += (width >> r) * _H
    return offsets


def _checked_blob(data: object, width: int, level: int, index: int) -> bytes:
    """A stored tile's bytes, refused unless they are a blob of the size its width implies."""
    offsets = row_offsets(width)
    size = offsets[-1] + (width >> (TILE_HEIGHT - 1)) * _H
    if not isinstance(data, bytes) or len(data) != size:
        got = f"{len(data)} bytes" if isinstance(data, bytes) else type(data).__name__
        raise VerificationError(
            f"the log's tile {level}/{index} is corrupt ({got}, want {size} bytes)"
        )
    return data


class TileState:
    """The tree of one log: full tiles in SQLite, partial tiles in memory.

    ``conn`` must hold a table ``tiles(level, idx, width, data)``. Appends change memory only;
    :meth:`take_writes` hands over the rows to write in the caller's transaction.
    """

    def __init__(self, conn: sqlite3.Connection, size: int) -> None:
        self._conn = conn
        self.size = size
        # per level, the partial tile's rows: [0] its hashes, [r] the nodes of inner row r
        self._partial: list[list[list[bytes]]] = []
        self._dirty: set[int] = set()
        self._full_writes: list[tuple[int, int, int, bytes]] = []
        self._cache: OrderedDict[tuple[int, int], tuple[int, bytes]] = OrderedDict()
        self._partial_blob: dict[int, tuple[int, bytes]] = {}
        self._load_partials()

    def _load_partials(self) -> None:
        self._partial = []
        count = self.size
        level = 0
        while count > 0:
            full, width = divmod(count, TILE_WIDTH)
            rows = _no_rows()
            if width:
                row = self._conn.execute(
                    "SELECT width, data FROM tiles WHERE level = ? AND idx = ?", (level, full)
                ).fetchone()
                if row is None or row[0] != width:
                    raise VerificationError(
                        f"the log's tile {level}/{full} is missing or has the wrong width "
                        f"for {self.size} entries"
                    )
                data = _checked_blob(row[1], width, level, full)
                for r, at in enumerate(row_offsets(width)):
                    rows[r] = [data[at + i * _H : at + (i + 1) * _H] for i in range(width >> r)]
            self._partial.append(rows)
            count = full
            level += 1

    # -- appends ------------------------------------------------------------------------------

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash (memory only until :meth:`take_writes`)."""
        self._push(0, leaf, self.size)
        self.size += 1

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Add leaf hashes in order: whole runs go into the level-0 tile at once."""
        if not self._partial:
            self._partial.append(_no_rows())
        done = 0
        while done < len(leaves):
            rows = self._partial[0]
            room = TILE_WIDTH - len(rows[0])
            run = leaves[done : done + room]
            if len(run) < room:
                rows[0].extend(run)
                _grow(rows)
                self._dirty.add(0)
                self._partial_blob.pop(0, None)
                self.size += len(run)
                return
            # the run fills the tile: the last leaf goes through _push, which grows the rows
            # and closes it
            rows[0].extend(run[:-1])
            self._push(0, run[-1], self.size + len(run) - 1)
            self.size += len(run)
            done += len(run)

    def _push(self, level: int, value: bytes, position: int) -> None:
        while True:
            if level == len(self._partial):
                self._partial.append(_no_rows())
            rows = self._partial[level]
            rows[0].append(value)
            _grow(rows)
            self._dirty.add(level)
            self._partial_blob.pop(level, None)
            if len(rows[0]) < TILE_WIDTH:
                return
            blob = b"".join(itertools.chain.from_iterable(rows))
            index = position // TILE_WIDTH
            self._full_writes.append((level, index, TILE_WIDTH, blob))
            self._cache_put((level, index), (TILE_WIDTH, blob))
            self._partial[level] = _no_rows()
            top = rows[TILE_HEIGHT - 1]
            value = node_hash(top[0], top[1])
            position = index
            level += 1

    def take_writes(self) -> list[tuple[int, int, int, bytes]]:
        """Rows ``(level, idx, width, data)`` to upsert: finished tiles and changed partials."""
        writes = self._full_writes
        self._full_writes = []
        count = self.size
        for level in range(len(self._partial)):
            full = count // TILE_WIDTH
            if level in self._dirty and self._partial[level][0]:
                width, blob = self._partial_rows(level)
                writes.append((level, full, width, blob))
            count = full
        self._dirty.clear()
        return writes

    def rollback(self, size: int) -> None:
        """Forget appends after ``size`` (their transaction failed) and reload from disk."""
        self.size = size
        self._full_writes = []
        self._dirty.clear()
        self._cache.clear()
        self._partial_blob.clear()
        self._load_partials()

    # -- reads --------------------------------------------------------------------------------

    def node(self, height: int, k: int) -> bytes:
        """Hash of node ``k`` at ``height`` (covering leaves ``k*2**height`` onward)."""
        level, r = divmod(height, TILE_HEIGHT)
        first = k << r
        index = first // TILE_WIDTH
        width, blob = self._tile(level, index)
        position = (first % TILE_WIDTH) >> r
        if position >= width >> r:
            raise VerificationError(f"node {k} at height {height} is not in a tree of {self.size}")
        at = row_offsets(width)[r] + position * _H
        return blob[at : at + _H]

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        """The :class:`HashReader` interface over stored-hash indexes."""
        return [self.node(*split_stored_hash_index(i)) for i in indexes]

    def tile_bottom(self, level: int, index: int, width: int) -> bytes:
        """The C2SP tile bytes: the first ``width`` hashes of tile ``(level, index)``."""
        have, blob = self._tile(level, index)
        if have < width:
            raise VerificationError(f"tile {level}/{index} has {have} hashes, not {width}")
        return blob[: width * _H]

    def _tile(self, level: int, index: int) -> tuple[int, bytes]:
        count = self.size
        for _ in range(level):
            count //= TILE_WIDTH
        full = count // TILE_WIDTH
        if index == full and level < len(self._partial) and self._partial[level][0]:
            return self._partial_rows(level)
        if index >= full:
            raise VerificationError(f"tile {level}/{index} is beyond the tree of {self.size}")
        cached = self._cache.get((level, index))
        if cached is not None:
            self._cache.move_to_end((level, index))
            return cached
        row = self._conn.execute(
            "SELECT width, data FROM tiles WHERE level = ? AND idx = ?", (level, index)
        ).fetchone()
        if row is None or row[0] != TILE_WIDTH:
            raise VerificationError(f"the log's tile {level}/{index} is missing")
        found = (TILE_WIDTH, _checked_blob(row[1], TILE_WIDTH, level, index))
        self._cache_put((level, index), found)
        return found

    def _partial_rows(self, level: int) -> tuple[int, bytes]:
        rows = self._partial[level]
        cached = self._partial_blob.get(level)
        if cached is None or cached[0] != len(rows[0]):
            cached = (len(rows[0]), b"".join(itertools.chain.from_iterable(rows)))
            self._partial_blob[level] = cached
        return cached

    def _cache_put(self, key: tuple[int, int], value: tuple[int, bytes]) -> None:
        self._cache[key] = value
        if len(self._cache) > _CACHE_TILES:
            self._cache.popitem(last=False)
