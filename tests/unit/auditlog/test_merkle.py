"""Tests of the RFC 6962 maths in ailedger.auditlog._merkle.

Known answers come from tests/kat/*.json (their sources are recorded there). A naive recursive
implementation of RFC 6962 §2.1 (MTH, PATH, PROOF), written straight from the RFC's definitions,
is compared against the stored-hash implementation.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ailedger.auditlog._merkle import (
    EMPTY_ROOT,
    MemoryHashStore,
    Tile,
    decode_entry_bundle,
    encode_entry_bundle,
    entries_path,
    leaf_hash,
    node_hash,
    parse_entries_path,
    parse_tile_path,
    prove_consistency,
    prove_inclusion,
    read_tile_data,
    root_from_leaf_hashes,
    split_stored_hash_index,
    stored_hash_count,
    stored_hash_index,
    stored_hashes,
    tile_hash_indexes,
    tiles_for_size,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from ailedger.errors import InputError, ProofError, RootMismatch, VerificationError

KAT = Path(__file__).resolve().parents[2] / "kat"


def load(name: str) -> Any:
    return json.loads((KAT / name).read_text(encoding="utf-8"))


RFC = load("rfc6962_merkle.json")
ARGON = load("ct_argon2020.json")
TILES = load("tlog_tiles.json")
LEAVES = [bytes.fromhex(x) for x in RFC["leaves_hex"]]


# --- a naive reference, straight from RFC 6962 §2.1 ---------------------------------------------


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    if len(d) == 0:
        return _sha(b"")
    if len(d) == 1:
        return _sha(b"\x00" + d[0])
    k = _k(len(d))
    return _sha(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


def store_of(leaves: Sequence[bytes]) -> MemoryHashStore:
    store = MemoryHashStore()
    for leaf in leaves:
        store.append(leaf)
    return store


DATA = [f"entry {i}".encode() for i in range(40)]
STORE = store_of(DATA)


class RecordingReader:
    """Wraps a store and records every read_hashes call."""

    def __init__(self, inner: MemoryHashStore) -> None:
        self.inner = inner
        self.calls: list[list[int]] = []

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        self.calls.append(list(indexes))
        return self.inner.read_hashes(indexes)


# --- hashing -------------------------------------------------------------------------------------


def test_hasher_known_answers() -> None:
    h = RFC["hasher"]
    assert EMPTY_ROOT.hex() == h["empty_root"]
    assert leaf_hash(b"").hex() == h["empty_leaf"]["leaf_hash"]
    assert leaf_hash(bytes.fromhex(h["leaf"]["data_hex"])).hex() == h["leaf"]["leaf_hash"]
    node = node_hash(h["node"]["left_ascii"].encode(), h["node"]["right_ascii"].encode())
    assert node.hex() == h["node"]["node_hash"]


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = leaf_hash(b"Hello"), leaf_hash(b"World")
    assert node_hash(a, b) != leaf_hash(a + b)
    assert node_hash(a, b) != node_hash(b, a)


@pytest.mark.parametrize("size", range(1, 9))
def test_reference_roots(size: int) -> None:
    want = RFC["roots"][str(size)]
    store = store_of(LEAVES[:size])
    assert tree_hash(size, store).hex() == want
    assert root_from_leaf_hashes([leaf_hash(x) for x in LEAVES[:size]]).hex() == want
    assert ref_mth(LEAVES[:size]).hex() == want


def test_empty_tree() -> None:
    assert tree_hash(0, MemoryHashStore()) == EMPTY_ROOT
    assert root_from_leaf_hashes([]) == EMPTY_ROOT
    assert MemoryHashStore().root() == EMPTY_ROOT


# --- inclusion -----------------------------------------------------------------------------------


def _inclusion_probes(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[str, int, int, list[bytes], bytes, bytes]]:
    """Corruptions of a good inclusion proof, after transparency-dev/merkle's verify_test.go."""
    some = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    probes = [
        ("index + 1", index + 1, size, proof, root, leaf),
        ("index ^ 2", index ^ 2, size, proof, root, leaf),
        ("size * 2", index, size * 2, proof, root, leaf),
        ("wrong leaf", index, size, proof, root, leaf_hash(b"WrongLeaf")),
        ("empty root", index, size, proof, EMPTY_ROOT, leaf),
        ("random root", index, size, proof, some, leaf),
        ("trailing root", index, size, [*proof, root], root, leaf),
        ("preceding root", index, size, [root, *proof], root, leaf),
    ]
    if index > 0:
        probes.append(("index - 1", index - 1, size, proof, root, leaf))
    if size // 2 > index:
        probes.append(("size / 2", index, size // 2, proof, root, leaf))
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes.append((f"proof[{i}] bit 3", index, size, flipped, root, leaf))
    if proof:
        probes.append(("removed component", index, size, proof[:-1], root, leaf))
    if len(proof) > 1:
        probes.append(("inserted component", index, size, [proof[0], some, *proof[1:]], root, leaf))
    return probes


@pytest.mark.parametrize(
    "vector", RFC["inclusion"], ids=lambda v: f"{v['leaf_index']}-in-{v['tree_size']}"
)
def test_inclusion_known_answers(vector: dict[str, Any]) -> None:
    index, size = vector["leaf_index"], vector["tree_size"]
    want = [bytes.fromhex(h) for h in vector["proof"]]
    root = bytes.fromhex(RFC["roots"][str(size)])
    leaf = leaf_hash(LEAVES[index])
    store = store_of(LEAVES[:size])

    assert prove_inclusion(index, size, store) == want
    assert ref_path(index, LEAVES[:size]) == want
    verify_inclusion(want, index, size, leaf, root)

    accepted = []
    for desc, i, n, proof, r, lf in _inclusion_probes(index, size, want, root, leaf):
        try:
            verify_inclusion(proof, i, n, lf, r)
        except VerificationError:
            continue
        accepted.append(desc)
    assert accepted == []


def test_inclusion_single_leaf() -> None:
    h = leaf_hash(b"data")
    verify_inclusion([], 0, 1, h, h)
    with pytest.raises(RootMismatch):
        verify_inclusion([], 0, 1, h, leaf_hash(b"other"))


def test_inclusion_argon2020_real_ct_log() -> None:
    path = [base64.b64decode(h) for h in ARGON["audit_path"]]
    root = base64.b64decode(ARGON["sha256_root_hash"])
    leaf = leaf_hash(base64.b64decode(ARGON["leaf_input"]))
    verify_inclusion(path, ARGON["leaf_index"], ARGON["tree_size"], leaf, root)
    path[7] = bytes([path[7][0] ^ 1]) + path[7][1:]
    with pytest.raises(RootMismatch):
        verify_inclusion(path, ARGON["leaf_index"], ARGON["tree_size"], leaf, root)


def test_inclusion_errors_name_what_failed() -> None:
    root = STORE.root()
    proof = prove_inclusion(3, 40, STORE)
    leaf = leaf_hash(DATA[3])
    with pytest.raises(ProofError, match="not in a tree of size 40"):
        verify_inclusion(proof, 40, 40, leaf, root)
    with pytest.raises(ProofError, match="too many"):
        verify_inclusion([*proof, root], 3, 40, leaf, root)
    with pytest.raises(ProofError, match="too few"):
        verify_inclusion(proof[:-1], 3, 40, leaf, root)
    with pytest.raises(ProofError, match="#1"):
        verify_inclusion([proof[0], b"short"], 3, 40, leaf, root)
    with pytest.raises(RootMismatch) as caught:
        verify_inclusion(proof, 3, 40, leaf_hash(b"x"), root)
    assert caught.value.expected == root


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ((-1, 40), "non-negative"),
        ((3, -1), "non-negative"),
    ],
)
def test_inclusion_rejects_negative_inputs(args: tuple[int, int], why: str) -> None:
    with pytest.raises(InputError, match=why):
        verify_inclusion([], args[0], args[1], leaf_hash(b""), EMPTY_ROOT)


def test_inclusion_rejects_malformed_caller_hashes() -> None:
    with pytest.raises(InputError, match="root hash"):
        verify_inclusion([], 0, 1, leaf_hash(b""), b"\x00" * 31)
    with pytest.raises(InputError, match="leaf hash"):
        verify_inclusion([], 0, 1, b"", EMPTY_ROOT)


def test_prove_inclusion_rejects_out_of_range() -> None:
    for index, size in [(0, 0), (40, 40), (-1, 3), (41, 40)]:
        with pytest.raises(InputError):
            prove_inclusion(index, size, STORE)


# --- consistency ---------------------------------------------------------------------------------


def _consistency_probes(
    m: int, n: int, proof: list[bytes], old: bytes, new: bytes
) -> list[tuple[str, int, int, list[bytes], bytes, bytes]]:
    """Corruptions of a good consistency proof, after transparency-dev/merkle's verify_test.go."""
    probes = [
        ("m + 1", m + 1, n, proof, old, new),
        ("m ^ 2", m ^ 2, n, proof, old, new),
        ("n * 2", m, n * 2, proof, old, new),
        ("wrong old root", m, n, proof, leaf_hash(b"WrongRoot"), new),
        ("wrong new root", m, n, proof, old, leaf_hash(b"WrongRoot")),
        ("swapped roots", m, n, proof, new, old),
        ("empty proof", m, n, [], old, new),
        ("trailing old", m, n, [*proof, old], old, new),
        ("trailing new", m, n, [*proof, new], old, new),
        ("preceding old", m, n, [old, *proof], old, new),
        ("preceding new", m, n, [new, *proof], old, new),
        ("preceding proof[0]", m, n, [proof[0], *proof], old, new),
        ("truncated", m, n, proof[:-1], old, new),
    ]
    if m > 1:
        probes.append(("m - 1", m - 1, n, proof, old, new))
    if n // 2 >= m:
        probes.append(("n / 2", m, n // 2, proof, old, new))
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((f"proof[{i}] bit 4", m, n, flipped, old, new))
    return probes


@pytest.mark.parametrize(
    "vector", RFC["consistency"], ids=lambda v: f"{v['size1']}-to-{v['size2']}"
)
def test_consistency_known_answers(vector: dict[str, Any]) -> None:
    m, n = vector["size1"], vector["size2"]
    want = [bytes.fromhex(h) for h in vector["proof"]]
    old = bytes.fromhex(RFC["roots"][str(m)])
    new = bytes.fromhex(RFC["roots"][str(n)])
    store = store_of(LEAVES[:n])

    assert prove_consistency(m, n, store) == want
    if m != n:
        assert ref_proof(m, LEAVES[:n]) == want
    verify_consistency(want, m, n, old, new)

    if not want:
        return
    accepted = []
    for desc, mm, nn, proof, o, w in _consistency_probes(m, n, want, old, new):
        try:
            verify_consistency(proof, mm, nn, o, w)
        except VerificationError:
            continue
        accepted.append(desc)
    assert accepted == []


def test_consistency_base64_vector_matches() -> None:
    v = RFC["consistency_1_8_base64"]
    proof = [base64.b64decode(h) for h in v["proof"]]
    root1, root2 = base64.b64decode(v["root1"]), base64.b64decode(v["root2"])
    assert root1.hex() == RFC["roots"]["1"]
    assert root2.hex() == RFC["roots"]["8"]
    verify_consistency(proof, v["size1"], v["size2"], root1, root2)


def test_consistency_argon2020_real_ct_log() -> None:
    proof = [base64.b64decode(h) for h in ARGON["consistency"]]
    old = base64.b64decode(ARGON["consistency_first_root"])
    new = base64.b64decode(ARGON["sha256_root_hash"])
    m, n = ARGON["consistency_first"], ARGON["tree_size"]
    verify_consistency(proof, m, n, old, new)
    with pytest.raises(VerificationError):
        verify_consistency(proof, m + 1, n, old, new)
    proof[0] = bytes([proof[0][0] ^ 0x80]) + proof[0][1:]
    with pytest.raises(RootMismatch):
        verify_consistency(proof, m, n, old, new)


def test_consistency_edge_sizes() -> None:
    root = STORE.root()
    verify_consistency([], 0, 0, EMPTY_ROOT, EMPTY_ROOT)
    verify_consistency([], 0, 40, EMPTY_ROOT, root)
    verify_consistency([], 40, 40, root, root)
    with pytest.raises(RootMismatch, match="empty tree root"):
        verify_consistency([], 0, 40, root, root)
    with pytest.raises(RootMismatch, match="empty tree root"):
        verify_consistency([], 0, 0, EMPTY_ROOT, root)
    with pytest.raises(RootMismatch):
        verify_consistency([], 40, 40, root, EMPTY_ROOT)
    with pytest.raises(ProofError, match="must be empty"):
        verify_consistency([root], 40, 40, root, root)
    with pytest.raises(ProofError, match="must be empty"):
        verify_consistency([root], 0, 40, EMPTY_ROOT, root)
    with pytest.raises(ProofError, match="larger"):
        verify_consistency([], 5, 4, root, root)
    with pytest.raises(ProofError, match="is empty"):
        verify_consistency([], 5, 40, tree_hash(5, STORE), root)


def test_consistency_errors_name_which_root() -> None:
    proof = prove_consistency(7, 40, STORE)
    old, new = tree_hash(7, STORE), STORE.root()
    with pytest.raises(RootMismatch, match="old root"):
        verify_consistency(proof, 7, 40, tree_hash(6, STORE), new)
    with pytest.raises(RootMismatch, match="new root"):
        verify_consistency(proof, 7, 40, old, tree_hash(39, STORE))


def test_prove_consistency_rejects_bad_sizes() -> None:
    for m, n in [(5, 4), (-1, 3), (3, 41)]:
        with pytest.raises(InputError):
            prove_consistency(m, n, STORE)


# --- against the naive reference -----------------------------------------------------------------


def test_fast_code_matches_rfc_reference_up_to_33_leaves() -> None:
    data = DATA[:33]
    store = store_of(data)
    for n in range(1, len(data) + 1):
        root = ref_mth(data[:n])
        assert tree_hash(n, store) == root
        for i in range(n):
            assert prove_inclusion(i, n, store) == ref_path(i, data[:n])
        for m in range(1, n):
            assert prove_consistency(m, n, store) == ref_proof(m, data[:n])


# --- stored-hash layout --------------------------------------------------------------------------


def test_stored_hash_layout_small_tree() -> None:
    # Leaf 0, leaf 1, node(1,0), leaf 2, leaf 3, node(1,1), node(2,0), leaf 4: the append order.
    expected = [(0, 0), (0, 1), (1, 0), (0, 2), (0, 3), (1, 1), (2, 0), (0, 4)]
    assert [stored_hash_index(level, n) for level, n in expected] == list(range(8))
    assert [split_stored_hash_index(i) for i in range(8)] == expected


def test_split_stored_hash_index_inverts() -> None:
    for level in range(10):
        for n in range(100):
            assert split_stored_hash_index(stored_hash_index(level, n)) == (level, n)


def test_stored_hash_count_and_contents() -> None:
    store = MemoryHashStore()
    for i, data in enumerate(DATA):
        new = stored_hashes(i, data, store)
        assert new[0] == leaf_hash(data)
        store.append(data)
        assert stored_hash_count(i + 1) == len(store._hashes)
    for index, h in enumerate(store._hashes):
        level, n = split_stored_hash_index(index)
        assert h == ref_mth(DATA[n << level : (n + 1) << level])
    assert stored_hash_count(0) == 0


def test_reads_are_one_call_in_increasing_order() -> None:
    reader = RecordingReader(STORE)
    prove_inclusion(13, 37, reader)
    prove_consistency(13, 37, reader)
    tree_hash(37, reader)
    assert len(reader.calls) == 3
    for call in reader.calls:
        assert call == sorted(set(call))


def test_reader_returning_too_few_hashes_is_rejected() -> None:
    class Short:
        def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
            return STORE.read_hashes(indexes)[:-1]

    with pytest.raises(InputError, match="returned"):
        tree_hash(37, Short())


def test_memory_store_rejects_unknown_index() -> None:
    with pytest.raises(InputError, match="does not exist"):
        STORE.read_hashes([10_000])
    assert STORE.size == 40


# --- tiles ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", TILES["index_encodings"], ids=lambda v: str(v["n"]))
def test_tile_index_encoding(vector: dict[str, Any]) -> None:
    n, encoded = vector["n"], vector["encoded"]
    assert Tile(level=0, index=n).path() == f"tile/0/{encoded}"
    assert Tile(level=3, index=n, width=7).path() == f"tile/3/{encoded}.p/7"
    assert entries_path(n) == f"tile/entries/{encoded}"
    assert parse_tile_path(f"tile/2/{encoded}.p/255") == Tile(level=2, index=n, width=255)
    assert parse_entries_path(f"tile/entries/{encoded}.p/3") == (n, 3)


@pytest.mark.parametrize(
    "path",
    [
        *[v["path"] for v in TILES["bad_paths"]],
        "tile/0/x000/001",
        "tile/0/1",
        "tile/0/0001",
        "tile/00/001",
        "tile/64/001",
        "tile/0/001.p/256",
        "tile/0/001.p/0",
        "tile/0/001.p/05",
        "tile/0/x001",
        "tile/entries/001",
        "/tile/0/001",
    ],
)
def test_bad_tile_paths_are_rejected(path: str) -> None:
    with pytest.raises(InputError):
        parse_tile_path(path)


def test_bad_entries_paths_are_rejected() -> None:
    for path in ["tile/entries/x000/001", "tile/entries/001.p/256", "tile/0/001"]:
        with pytest.raises(InputError):
            parse_entries_path(path)


@pytest.mark.parametrize("vector", TILES["tree_tiles"], ids=lambda v: str(v["size"]))
def test_tiles_for_size_spec_examples(vector: dict[str, Any]) -> None:
    tiles = tiles_for_size(vector["size"])
    full: dict[str, int] = {}
    partial: dict[str, int] = {}
    for tile in tiles:
        key = str(tile.level)
        if tile.is_partial:
            assert key not in partial
            partial[key] = tile.width
        else:
            full[key] = full.get(key, 0) + 1
    assert full == vector["full"]
    assert partial == vector["partial_widths"]
    assert len(set(tiles)) == len(tiles)


def test_tiles_for_small_sizes() -> None:
    assert tiles_for_size(0) == []
    assert tiles_for_size(1) == [Tile(level=0, index=0, width=1)]
    assert [t.path() for t in tiles_for_size(257)] == [
        "tile/0/000",
        "tile/0/001.p/1",
        "tile/1/000.p/1",
    ]


def test_tile_data_holds_subtree_roots() -> None:
    data = [i.to_bytes(2, "big") for i in range(600)]
    store = store_of(data)
    tiles = tiles_for_size(600)
    assert [t.path() for t in tiles] == [
        "tile/0/000",
        "tile/0/001",
        "tile/0/002.p/88",
        "tile/1/000.p/2",
    ]
    level0 = read_tile_data(tiles[0], store)
    assert level0 == b"".join(leaf_hash(x) for x in data[:256])
    partial0 = read_tile_data(tiles[2], store)
    assert partial0 == b"".join(leaf_hash(x) for x in data[512:600])
    level1 = read_tile_data(tiles[3], store)
    assert level1 == root_from_leaf_hashes([leaf_hash(x) for x in data[:256]]) + (
        root_from_leaf_hashes([leaf_hash(x) for x in data[256:512]])
    )
    assert len(tile_hash_indexes(Tile(level=0, index=0))) == 256


def test_partial_tile_is_prefix_of_full_tile() -> None:
    data = [bytes([i]) for i in range(256)]
    store = store_of(data)
    full = read_tile_data(Tile(level=0, index=0), store)
    partial = read_tile_data(Tile(level=0, index=0, width=100), store)
    assert full.startswith(partial)
    assert len(partial) == 100 * 32


def test_tile_constructor_validates() -> None:
    for kwargs in [
        {"level": -1, "index": 0},
        {"level": 64, "index": 0},
        {"level": 0, "index": -1},
        {"level": 0, "index": 0, "width": 0},
        {"level": 0, "index": 0, "width": 257},
    ]:
        with pytest.raises(InputError):
            Tile(**kwargs)


def test_entry_bundles_round_trip() -> None:
    entries = [b"", b"a", b"\x00" * 300, bytes(range(256))]
    bundle = encode_entry_bundle(entries)
    assert bundle[:2] == b"\x00\x00"
    assert bundle[2:5] == b"\x00\x01a"
    assert decode_entry_bundle(bundle) == entries
    with pytest.raises(InputError, match="inside an entry"):
        decode_entry_bundle(bundle[:-1])
    with pytest.raises(InputError, match="length prefix"):
        decode_entry_bundle(b"\x00")
    with pytest.raises(InputError, match="65535"):
        encode_entry_bundle([b"x" * 65536])
