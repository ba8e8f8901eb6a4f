"""RFC 6962 Merkle tree maths for the audit log: hashing, stored-hash layout, proofs and tiles.

Sources:

- Hashing and the tree shape: RFC 6962 §2.1 (MTH), with leaf hash ``SHA-256(0x00 || d)``, node
  hash ``SHA-256(0x01 || l || r)`` and the empty tree's root ``SHA-256("")``.
- Proof generation: RFC 6962 §2.1.1 (PATH, the audit path) and §2.1.2 (PROOF/SUBPROOF, the
  consistency proof). Proof verification: RFC 9162 §2.1.3.2 and §2.1.4.2, whose numbered steps
  the verifiers follow.
- Stored-hash layout: the dense post-order numbering of Crosby and Wallach, "Efficient Data
  Structures for Tamper-Evident Logging" (USENIX Security 2009) §3.3, as used by Go's
  ``golang.org/x/mod/sumdb/tlog``. Appending leaf ``n`` stores its leaf hash and then the hash of
  every subtree that leaf completes, so hashes are only ever appended.
- Tiles: C2SP tlog-tiles (https://c2sp.org/tlog-tiles), tiles of height 8 (256 hashes wide).

Every hash is 32 bytes. Sizes and indexes are leaf counts and zero-based leaf positions. This
module imports only the standard library, so anyone can audit it on its own.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ailedger.errors import InputError, ProofError, RootMismatch

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "HashReader",
    "MemoryHashStore",
    "Tile",
    "decode_entry_bundle",
    "encode_entry_bundle",
    "entries_path",
    "leaf_hash",
    "node_hash",
    "parse_entries_path",
    "parse_tile_path",
    "prove_consistency",
    "prove_inclusion",
    "read_tile_data",
    "root_from_leaf_hashes",
    "split_stored_hash_index",
    "stored_hash_count",
    "stored_hash_index",
    "stored_hashes",
    "stored_hashes_for_record_hash",
    "tile_hash_indexes",
    "tiles_for_size",
    "tree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
_MAX_TILE_LEVEL = 63
_MAX_ENTRY_SIZE = 0xFFFF


# --- hashing (RFC 6962 §2.1) -------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """Return the leaf hash ``SHA-256(0x00 || data)`` of one log entry."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the interior node hash ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return MTH of a whole list of leaf hashes, in memory (tests and small trees).

    Combining pairs level by level and lifting an odd last node unchanged gives the same tree as
    RFC 6962's split at the largest power of two below the size.
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    level = [_checked_hash(h, "leaf hash") for h in leaf_hashes]
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


# --- stored-hash layout (Crosby and Wallach §3.3) ----------------------------------------------


class HashReader(Protocol):
    """Reads stored hashes by their stored-hash index (see :func:`stored_hash_index`).

    ``read_hashes`` returns exactly one 32-byte hash per requested index, in the order asked.
    The functions here always ask for indexes in increasing order, in a single call.
    """

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]: ...


def stored_hash_index(level: int, n: int) -> int:
    """Return where the hash of node ``n`` at ``level`` sits in the dense stored-hash order.

    Level 0 holds leaf hashes; node ``n`` at level ``L`` covers leaves ``[n * 2**L, (n+1) * 2**L)``.
    """
    if level < 0 or n < 0:
        raise InputError(f"stored hash coordinates must be non-negative, got ({level}, {n})")
    # The node is stored right after the last leaf it covers, (n + 1) * 2**level - 1, and after
    # the `level` lower nodes that leaf also completes. Leaf k is stored at 2k - popcount(k).
    last_leaf = ((n + 1) << level) - 1
    return 2 * last_leaf - last_leaf.bit_count() + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """Invert :func:`stored_hash_index`: return the ``(level, n)`` stored at ``index``."""
    if index < 0:
        raise InputError(f"stored hash index must be non-negative, got {index}")
    # Leaf k sits at 2k - popcount(k) <= index, so the leaf stored at or before `index` is at
    # least index // 2 and at most a few (popcount) positions later.
    leaf = index // 2
    while _leaf_position(leaf + 1) <= index:
        leaf += 1
    level = index - _leaf_position(leaf)
    return level, leaf >> level


def stored_hash_count(n: int) -> int:
    """Return how many hashes are stored for a tree of ``n`` leaves."""
    if n < 0:
        raise InputError(f"tree size must be non-negative, got {n}")
    if n == 0:
        return 0
    # The last leaf's own hash, plus one hash for every subtree it completes.
    return _leaf_position(n - 1) + 1 + _trailing_zeros(n)


def stored_hashes(n: int, data: bytes, reader: HashReader) -> list[bytes]:
    """Return the hashes to append when storing entry ``data`` as leaf ``n``."""
    return stored_hashes_for_record_hash(n, leaf_hash(data), reader)


def stored_hashes_for_record_hash(n: int, record_hash: bytes, reader: HashReader) -> list[bytes]:
    """Return the hashes to append when storing leaf ``n`` with leaf hash ``record_hash``.

    The first is ``record_hash`` itself, written at ``stored_hash_index(0, n)``; each following
    one is a subtree completed by this leaf. ``reader`` must hold the hashes of leaves ``< n``.
    """
    if n < 0:
        raise InputError(f"leaf index must be non-negative, got {n}")
    current = _checked_hash(record_hash, "record hash")
    completed = _trailing_zeros(n + 1)
    # Completing the level-(l+1) node needs its left child: node (n >> l) - 1 at level l.
    # Listed from the highest level down, so the indexes come out in increasing order.
    indexes = [stored_hash_index(level, (n >> level) - 1) for level in reversed(range(completed))]
    lefts = _read(reader, indexes)
    out = [current]
    for left in reversed(lefts):
        current = node_hash(left, current)
        out.append(current)
    return out


def tree_hash(n: int, reader: HashReader) -> bytes:
    """Return the root hash (MTH) of the tree of the first ``n`` leaves, from stored hashes.

    The tree of size 0 has root ``SHA-256("")`` (RFC 6962 §2.1), not an all-zero hash.
    """
    if n < 0:
        raise InputError(f"tree size must be non-negative, got {n}")
    if n == 0:
        return EMPTY_ROOT
    return _range_hashes([(0, n)], reader)[0]


def prove_inclusion(index: int, n: int, reader: HashReader) -> list[bytes]:
    """Return the audit path (RFC 6962 §2.1.1) of leaf ``index`` in the tree of size ``n``.

    The path runs from the leaf's sibling up to the root's child.
    """
    if not 0 <= index < n:
        raise InputError(f"leaf index {index} is not in a tree of size {n}")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, n
    while hi - lo > 1:
        mid = lo + _split_point(hi - lo)
        if index < mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
    ranges.reverse()
    return _range_hashes(ranges, reader)


def prove_consistency(m: int, n: int, reader: HashReader) -> list[bytes]:
    """Return the consistency proof (RFC 6962 §2.1.2) that the size-``m`` tree prefixes size ``n``.

    The proof is empty when ``m`` is 0 or equal to ``n``.
    """
    if not 0 <= m <= n:
        raise InputError(f"cannot prove tree size {m} is a prefix of tree size {n}")
    if m in (0, n):
        return []
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, n
    # SUBPROOF(m, D[lo:hi], b) with b true exactly while lo == 0 (the left spine).
    while m != hi:
        mid = lo + _split_point(hi - lo)
        if m <= mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
    if lo != 0:
        ranges.append((lo, hi))
    ranges.reverse()
    return _range_hashes(ranges, reader)


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) ---------------------------------------------


def verify_inclusion(
    proof: Sequence[bytes], index: int, n: int, leaf_hash: bytes, root: bytes
) -> None:
    """Check that ``proof`` shows leaf ``leaf_hash`` at ``index`` in the tree of size ``n``.

    Returns nothing on success. Raises :class:`ProofError` when the proof cannot be for this
    index and size, and :class:`RootMismatch` when it yields a root other than ``root``.
    """
    _check_size(index, "leaf index")
    _check_size(n, "tree size")
    leaf = _checked_hash(leaf_hash, "leaf hash")
    expected = _checked_hash(root, "root hash")
    path = [_checked_proof_hash(h, i, "inclusion") for i, h in enumerate(proof)]
    # 1. The index must lie inside the tree.
    if index >= n:
        raise ProofError(f"inclusion proof: leaf index {index} is not in a tree of size {n}")
    # 2. fn walks the leaf's position up the tree, sn the last leaf's position.
    fn, sn = index, n - 1
    # 3. Start from the leaf hash.
    r = leaf
    # 4. Fold in each proof hash as a left or a right sibling.
    for p in path:
        # 4a. Reaching the root with hashes left over means the proof is too long.
        if sn == 0:
            raise ProofError(
                f"inclusion proof for leaf {index} in size {n} has {len(path)} hashes, too many"
            )
        # 4b. A set low bit, or being the last node of its level, makes p a left sibling.
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # 4b.ii. A last node with no right sibling rises unchanged past levels.
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        # 4c. Move one level up.
        fn >>= 1
        sn >>= 1
    # 5. The path must have reached the root, and the root must match.
    if sn != 0:
        raise ProofError(
            f"inclusion proof for leaf {index} in size {n} has {len(path)} hashes, too few"
        )
    if r != expected:
        raise RootMismatch(expected, r, what=f"inclusion proof root (leaf {index}, size {n})")


def verify_consistency(
    proof: Sequence[bytes], m: int, n: int, old_root: bytes, new_root: bytes
) -> None:
    """Check that ``proof`` shows the size-``m`` tree ``old_root`` is a prefix of ``new_root``.

    Returns nothing on success. Raises :class:`ProofError` when the proof cannot be for these
    sizes, and :class:`RootMismatch` when it yields another old or new root. Size 0 is the empty
    tree: its root must be ``SHA-256("")`` and its proof empty.
    """
    _check_size(m, "old tree size")
    _check_size(n, "new tree size")
    old = _checked_hash(old_root, "old root")
    new = _checked_hash(new_root, "new root")
    path = [_checked_proof_hash(h, i, "consistency") for i, h in enumerate(proof)]
    if m > n:
        raise ProofError(f"consistency proof: old size {m} is larger than new size {n}")
    if m == 0 or m == n:
        if path:
            raise ProofError(
                f"consistency proof from size {m} to {n} must be empty, has {len(path)} hashes"
            )
        if m == 0:
            if old != EMPTY_ROOT:
                raise RootMismatch(EMPTY_ROOT, old, what="empty tree root")
            if n == 0 and new != EMPTY_ROOT:
                raise RootMismatch(EMPTY_ROOT, new, what="empty tree root")
        elif old != new:
            raise RootMismatch(old, new, what=f"root of the same tree size {n}")
        return
    # 1. Between distinct non-empty sizes the proof cannot be empty.
    if not path:
        raise ProofError(f"consistency proof from size {m} to {n} is empty")
    # 2. When the old tree is a complete subtree, its root is the proof's implicit first hash.
    if m & (m - 1) == 0:
        path.insert(0, old)
    # 3. fn and sn are the last old and last new leaf.
    fn, sn = m - 1, n - 1
    # 4. Skip the levels where the old tree's last node is a right child already inside path[0].
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. Both reconstructions start from the first hash.
    fr = sr = path[0]
    # 6. Fold in each following hash.
    for c in path[1:]:
        # 6a. Reaching the new root with hashes left over means the proof is too long.
        if sn == 0:
            raise ProofError(f"consistency proof from size {m} to {n} has too many hashes")
        # 6b. A left sibling belongs to both trees; a right sibling only to the new one.
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        # 6c. Move one level up.
        fn >>= 1
        sn >>= 1
    # 7. Both roots must be rebuilt, and the path must have reached the new root.
    if sn != 0:
        raise ProofError(f"consistency proof from size {m} to {n} has too few hashes")
    if fr != old:
        raise RootMismatch(old, fr, what=f"old root (size {m})")
    if sr != new:
        raise RootMismatch(new, sr, what=f"new root (size {n})")


# --- an in-memory store ------------------------------------------------------------------------


class MemoryHashStore:
    """An append-only list of stored hashes in memory, implementing :class:`HashReader`.

    For tests and small tools; the audit log's SQLite storage offers the same reader.
    """

    def __init__(self) -> None:
        self._hashes: list[bytes] = []
        self._size = 0

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    def append(self, data: bytes) -> int:
        """Append one entry as the next leaf; return its leaf index."""
        return self.append_leaf_hash(leaf_hash(data))

    def append_leaf_hash(self, record_hash: bytes) -> int:
        """Append an already computed leaf hash as the next leaf; return its leaf index."""
        index = self._size
        self._hashes.extend(stored_hashes_for_record_hash(index, record_hash, self))
        self._size += 1
        return index

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        """Return the stored hashes at ``indexes``; raise :class:`InputError` for unknown ones."""
        out = []
        for i in indexes:
            if not 0 <= i < len(self._hashes):
                raise InputError(f"stored hash {i} does not exist ({len(self._hashes)} stored)")
            out.append(self._hashes[i])
        return out

    def root(self) -> bytes:
        """Return the root hash of the whole tree."""
        return tree_hash(self._size, self)


# --- tiles (C2SP tlog-tiles) -------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """One tile: ``width`` consecutive hashes at tile ``level``, tile number ``index``.

    Hash ``i`` of tile ``(L, N)`` is the root of leaves
    ``[(N*256 + i) * 256**L, (N*256 + i + 1) * 256**L)``, that is the tree node at level ``8*L``
    with node number ``N*256 + i``. A tile narrower than 256 is partial.
    """

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not 0 <= self.level <= _MAX_TILE_LEVEL:
            raise InputError(f"tile level must be in 0..{_MAX_TILE_LEVEL}, got {self.level}")
        if self.index < 0:
            raise InputError(f"tile index must be non-negative, got {self.index}")
        if not 1 <= self.width <= TILE_WIDTH:
            raise InputError(f"tile width must be in 1..{TILE_WIDTH}, got {self.width}")

    @property
    def is_partial(self) -> bool:
        """True when the tile holds fewer than 256 hashes."""
        return self.width < TILE_WIDTH

    def path(self) -> str:
        """Return the tile's resource path, ``tile/<L>/<N>[.p/<W>]``."""
        return f"tile/{self.level}/{_encode_tile_index(self.index)}{_width_suffix(self.width)}"


def entries_path(index: int, width: int = TILE_WIDTH) -> str:
    """Return the entry bundle path ``tile/entries/<N>[.p/<W>]`` for leaves of level-0 tile N."""
    if index < 0:
        raise InputError(f"entry bundle index must be non-negative, got {index}")
    if not 1 <= width <= TILE_WIDTH:
        raise InputError(f"entry bundle width must be in 1..{TILE_WIDTH}, got {width}")
    return f"tile/entries/{_encode_tile_index(index)}{_width_suffix(width)}"


# at most 7 groups of 3 digits: every index of a 64-bit tree, and never too long for int()
_TILE_PATH = re.compile(
    r"tile/(?P<level>0|[1-9][0-9]?)/(?P<index>(?:x[0-9]{3}/){0,6}[0-9]{3})(?:\.p/(?P<width>[1-9][0-9]{0,2}))?",
    re.ASCII,
)
_ENTRIES_PATH = re.compile(
    r"tile/entries/(?P<index>(?:x[0-9]{3}/){0,6}[0-9]{3})(?:\.p/(?P<width>[1-9][0-9]{0,2}))?",
    re.ASCII,
)


def parse_tile_path(path: str) -> Tile:
    """Parse a canonical ``tile/<L>/<N>[.p/<W>]`` path; raise :class:`InputError` otherwise."""
    match = _TILE_PATH.fullmatch(path)
    if match is None:
        raise InputError(f"not a tile path: {path!r}")
    index = _decode_tile_index(match["index"])
    width = _decode_width(match["width"], path)
    tile = Tile(level=int(match["level"]), index=index, width=width)
    if tile.path() != path:
        raise InputError(f"tile path is not in canonical form: {path!r}")
    return tile


def parse_entries_path(path: str) -> tuple[int, int]:
    """Parse a canonical entry bundle path; return ``(index, width)``."""
    match = _ENTRIES_PATH.fullmatch(path)
    if match is None:
        raise InputError(f"not an entry bundle path: {path!r}")
    index = _decode_tile_index(match["index"])
    width = _decode_width(match["width"], path)
    if entries_path(index, width) != path:
        raise InputError(f"entry bundle path is not in canonical form: {path!r}")
    return index, width


def tiles_for_size(n: int) -> list[Tile]:
    """Return every tile a tree of ``n`` leaves has, full then partial, level by level.

    At level L there are ``n // 256**(L+1)`` full tiles and, if ``(n // 256**L) % 256`` is not
    zero, one partial tile of that width. Empty tiles do not exist.
    """
    _check_size(n, "tree size")
    tiles: list[Tile] = []
    level = 0
    covered = n  # number of hashes at this tile level: n // 256**level
    while covered > 0:
        full, partial = divmod(covered, TILE_WIDTH)
        tiles.extend(Tile(level=level, index=i) for i in range(full))
        if partial:
            tiles.append(Tile(level=level, index=full, width=partial))
        covered = full
        level += 1
    return tiles


def tile_hash_indexes(tile: Tile) -> list[int]:
    """Return the stored-hash indexes of the hashes ``tile`` holds, in order."""
    first = tile.index * TILE_WIDTH
    return [stored_hash_index(TILE_HEIGHT * tile.level, first + i) for i in range(tile.width)]


def read_tile_data(tile: Tile, reader: HashReader) -> bytes:
    """Return the tile's bytes: its hashes concatenated (``32 * width`` bytes)."""
    return b"".join(_read(reader, tile_hash_indexes(tile)))


def encode_entry_bundle(entries: Iterable[bytes]) -> bytes:
    """Encode entries as a bundle: each is a big-endian uint16 length, then its bytes."""
    out = bytearray()
    for entry in entries:
        if len(entry) > _MAX_ENTRY_SIZE:
            raise InputError(f"an entry bundle holds entries up to 65535 bytes, got {len(entry)}")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def decode_entry_bundle(data: bytes) -> list[bytes]:
    """Decode an entry bundle into its entries; raise :class:`InputError` if truncated."""
    entries = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise InputError("entry bundle ends inside a length prefix")
        size = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if pos + size > len(data):
            raise InputError(f"entry bundle ends inside an entry of {size} bytes")
        entries.append(data[pos : pos + size])
        pos += size
    return entries


# --- helpers -----------------------------------------------------------------------------------


def _trailing_zeros(x: int) -> int:
    return (x & -x).bit_length() - 1


def _leaf_position(k: int) -> int:
    return 2 * k - k.bit_count()


def _split_point(size: int) -> int:
    """Return the largest power of two strictly below ``size`` (``size >= 2``)."""
    return 1 << ((size - 1).bit_length() - 1)


def _range_hashes(ranges: Sequence[tuple[int, int]], reader: HashReader) -> list[bytes]:
    """Return MTH of each leaf range, reading every stored hash needed in one call.

    Each range splits into complete, aligned subtrees of decreasing size, all of which are stored.
    """
    pieces: list[list[int]] = []
    for lo, hi in ranges:
        indexes = []
        while lo < hi:
            height = (hi - lo).bit_length() - 1
            indexes.append(stored_hash_index(height, lo >> height))
            lo += 1 << height
        pieces.append(indexes)
    wanted = sorted({i for piece in pieces for i in piece})
    stored = dict(zip(wanted, _read(reader, wanted), strict=True))
    out = []
    for piece in pieces:
        subtrees = [stored[i] for i in piece]
        acc = subtrees[-1]
        for left in reversed(subtrees[:-1]):
            acc = node_hash(left, acc)
        out.append(acc)
    return out


def _read(reader: HashReader, indexes: Sequence[int]) -> list[bytes]:
    if not indexes:
        return []
    hashes = reader.read_hashes(indexes)
    if len(hashes) != len(indexes):
        raise InputError(f"hash reader returned {len(hashes)} hashes for {len(indexes)} indexes")
    for h in hashes:
        if len(h) != HASH_SIZE:
            raise InputError(f"hash reader returned a {len(h)}-byte hash, want {HASH_SIZE}")
    return hashes


def _checked_hash(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        size = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise InputError(f"{what} must be {HASH_SIZE} bytes, got {size}")
    return bytes(value)


def _checked_proof_hash(value: bytes, position: int, kind: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise ProofError(f"{kind} proof hash #{position} is not a {HASH_SIZE}-byte hash")
    return bytes(value)


def _check_size(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{what} must be a non-negative integer, got {value!r}")


def _encode_tile_index(index: int) -> str:
    digits = str(index)
    digits = digits.zfill(-(-len(digits) // 3) * 3)
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([f"x{g}" for g in groups[:-1]] + [groups[-1]])


def _decode_tile_index(encoded: str) -> int:
    return int(encoded.replace("x", "").replace("/", ""))


def _decode_width(encoded: str | None, path: str) -> int:
    if encoded is None:
        return TILE_WIDTH
    width = int(encoded)
    if width >= TILE_WIDTH:
        raise InputError(f"partial tile width must be below {TILE_WIDTH}: {path!r}")
    return width


def _width_suffix(width: int) -> str:
    return "" if width == TILE_WIDTH else f".p/{width}"
