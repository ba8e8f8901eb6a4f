"""TileState (ailedger.auditlog._tiles) keeps partial tiles' inner rows incrementally.

The reference is :mod:`ailedger.auditlog._merkle` (the stored-hash layout of Go's sumdb/tlog,
itself checked against C2SP and Go vectors in test_merkle.py): whatever the pattern of appends
and commits, every C2SP tile equals ``read_tile_data`` over a :class:`MemoryHashStore` of the same
leaves, every stored row blob equals a from-scratch :func:`build_rows` of its bottom row, and a
TileState reopened from the stored rows continues exactly where the first one stopped.
"""

from __future__ import annotations

import hashlib
import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from ailedger.auditlog._merkle import (
    HASH_SIZE,
    MemoryHashStore,
    read_tile_data,
    stored_hash_count,
    tiles_for_size,
)
from ailedger.auditlog._tiles import TileState, build_rows


def _leaf(i: int) -> bytes:
    return hashlib.sha256(b"\x00" + i.to_bytes(4, "big")).digest()


def _db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE tiles (level INT, idx INT, width INT, data BLOB, PRIMARY KEY(level, idx))"
    )
    return conn


def _commit(conn: sqlite3.Connection, tree: TileState) -> None:
    conn.executemany("INSERT OR REPLACE INTO tiles VALUES (?, ?, ?, ?)", tree.take_writes())


def _check(conn: sqlite3.Connection, tree: TileState, store: MemoryHashStore) -> None:
    n = store.size
    assert tree.size == n
    for tile in tiles_for_size(n):
        assert tree.tile_bottom(tile.level, tile.index, tile.width) == read_tile_data(tile, store)
    for level, index, width, data in conn.execute("SELECT level, idx, width, data FROM tiles"):
        bottom = [data[i * HASH_SIZE : (i + 1) * HASH_SIZE] for i in range(width)]
        assert data == build_rows(bottom), (level, index, width)
    # every stored hash of small trees; the last 2,000 (the partial tiles' rows) of big ones
    some = range(max(0, stored_hash_count(n) - 2000), stored_hash_count(n))
    assert tree.read_hashes(some) == store.read_hashes(some)


def _run(batches: list[int], reopen_every: int, check_every: int = 1) -> None:
    conn, store = _db(), MemoryHashStore()
    tree = TileState(conn, 0)
    for number, count in enumerate(batches):
        first = store.size
        leaves = [_leaf(i) for i in range(first, first + count)]
        if count == 1 and number % 2:
            tree.append(leaves[0])
        else:
            tree.extend(leaves)
        for leaf in leaves:
            store.append_leaf_hash(leaf)
        _commit(conn, tree)
        if reopen_every and number % reopen_every == reopen_every - 1:
            tree = TileState(conn, store.size)
        if number % check_every == 0 or number == len(batches) - 1:
            _check(conn, tree, store)


@settings(max_examples=25, deadline=None)
@given(
    batches=st.lists(st.one_of(st.integers(1, 3), st.integers(1, 300)), min_size=1, max_size=12),
    reopen_every=st.integers(0, 3),
)
def test_tiles_match_the_reference_for_any_commit_pattern(
    batches: list[int], reopen_every: int
) -> None:
    _run(batches, reopen_every)


def test_single_appends_across_tile_boundaries() -> None:
    _run([1] * 600, reopen_every=7, check_every=13)


def test_rollback_forgets_uncommitted_appends() -> None:
    conn, store = _db(), MemoryHashStore()
    tree = TileState(conn, 0)
    leaves = [_leaf(i) for i in range(300)]
    tree.extend(leaves)
    for leaf in leaves:
        store.append_leaf_hash(leaf)
    _commit(conn, tree)
    tree.extend([_leaf(i) for i in range(300, 700)])  # never committed
    tree.rollback(300)
    _check(conn, tree, store)
    more = [_leaf(i) for i in range(300, 520)]
    tree.extend(more)
    for leaf in more:
        store.append_leaf_hash(leaf)
    _commit(conn, tree)
    _check(conn, tree, store)


def test_a_second_level_tile_fills() -> None:
    """65,536 leaves fill tile 1/0; a few more start the next level-1 partial tile."""
    _run([4000] * 16 + [1000, 1, 1, 37], reopen_every=5, check_every=6)
