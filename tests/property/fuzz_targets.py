"""Fuzz targets: every parser of outside data, its valid seeds, and the property it must hold.

The parsers: JSON and JSON lines (``ailedger._input``), C2SP checkpoints, signed notes and
verifier keys, tlog-proof receipts, tile and entry-bundle paths, entry bundles, a whole tiles
export (``verify_export``), tiles stored in log.sqlite (``_tiles.TileState``), sealed files
(``envelope.OpenReader``), task files (``TaskRef.load``), config.toml (``Workspace.open``),
JSON-RPC replies (``ledger._rpc.check_reply``), cosigned checkpoints and a witness's
add-checkpoint requests.

Shared by the property tests (``tests/property/test_fuzz_parsers.py``, hypothesis) and the long
campaign (``benchmarks/fuzz.py``). A target takes raw bytes and either returns a value or raises
an :class:`~ailedger.errors.AiledgerError`; anything else (``ValueError``, ``UnicodeError``,
``RecursionError``, a crash) is a bug. For authenticated formats the target also checks that an
input which verifies means what the valid seed meant (:class:`Forgery` otherwise): a mutated
signed note opens only with the same text, a mutated receipt or export verifies only for the
same tree, a mutated sealed file opens only to the same plaintext.

Mutations (:func:`apply_ops`) are plain data, so hypothesis can draw and shrink them and the
benchmark can draw them from a seeded :class:`random.Random`.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import io
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import web3  # noqa: F401 - raises the recursion limit to 100,000, as in the CLI
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ailedger import _input
from ailedger.auditlog import _merkle
from ailedger.auditlog._tiles import TileState, build_rows
from ailedger.auditlog.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from ailedger.auditlog.note import NoteVerifier, open_note, parse_verifier_key, sign_note
from ailedger.auditlog.proof import Receipt, verify_receipt
from ailedger.auditlog.verify import verify_export
from ailedger.auditlog.witness import Witness, WitnessVerifier, cosign, verify_cosigned
from ailedger.crypto import envelope
from ailedger.errors import AccessDenied, AiledgerError, NodeUnavailable
from ailedger.federated.protocol import TaskRef, TaskSpec, model_digest
from ailedger.ledger._rpc import RESULT_CHECKS, NodeReplyError, check_reply
from ailedger.ledger.account import Signer, recover_digest_signer
from ailedger.workspace import Workspace

__all__ = [
    "OPS",
    "TARGETS",
    "Forgery",
    "Target",
    "apply_ops",
    "classify",
]


class Forgery(AssertionError):
    """A mutated authenticated document verified with a meaning other than the original's."""


Op = tuple[str, int, int, bytes]
"""A mutation: (kind, position, amount, bytes); positions are taken modulo the input length."""

OPS = ("flip", "set", "insert", "delete", "truncate", "duplicate", "repeat", "token")

#: byte strings that break parsers: line ends, Unicode separators, bad UTF-8, big numbers
TOKENS: tuple[bytes, ...] = (
    b"\n",
    b"\r\n",
    b"\n\n",
    b"\r",
    "\u2028".encode(),
    "\u2029".encode(),
    "\u0085".encode(),
    b"\xff",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xef\xbb\xbf",
    b"\x00",
    b"\t",
    b"\x7f",
    b" ",
    "\u2014 ".encode(),
    b"[" * 200,
    b"{" * 200,
    b'{"a":' * 100,
    b"1e999",
    b"-1e999",
    b"9" * 5000,
    b"1" + b"0" * 20,
    b"18446744073709551616",
    b"-0",
    b"0.0000000000000000000000000000001e-400",
    b"NaN",
    b"Infinity",
    b'"\\ud800"',
    b'"\\udfff\\ud800"',
    b"\\u0000",
    b'"a":1,"a":2',
    b"=",
    b"==",
    b"+",
    b"/",
    b"x000/" * 1500,
    b"AAAA",
)


def apply_ops(data: bytes, ops: Sequence[Op], tokens: Sequence[bytes] = TOKENS) -> bytes:
    """Apply mutations in order; each op's position wraps around the current length."""
    buf = bytearray(data)
    for kind, position, amount, payload in ops:
        n = len(buf)
        pos = position % (n + 1)
        if kind == "flip" and n:
            buf[position % n] ^= 1 << (amount % 8)
        elif kind == "set" and n:
            buf[position % n] = amount % 256
        elif kind == "insert":
            buf[pos:pos] = payload
        elif kind == "delete":
            del buf[pos : pos + 1 + amount % 64]
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "duplicate":
            piece = buf[pos : pos + 1 + amount % 256]
            buf[pos:pos] = piece
        elif kind == "repeat":
            piece = buf[pos : pos + 1 + amount % 8]
            buf[pos:pos] = piece * (amount % 20_000)
        elif kind == "token":
            buf[pos:pos] = tokens[amount % len(tokens)]
    return bytes(buf)


def classify(exc: BaseException) -> str:
    """``rejected`` (an AiledgerError), ``forgery``, ``crash`` (the process would die), else
    ``internal`` (a traceback the user would see)."""
    if isinstance(exc, Forgery):
        return "forgery"
    if isinstance(exc, RecursionError | MemoryError):
        return "crash"
    if isinstance(exc, AiledgerError):
        return "rejected"
    return "internal"


@dataclass(frozen=True)
class Target:
    """A parser under test: ``run(data)`` returns a value or raises an AiledgerError."""

    name: str
    run: Callable[[bytes], object]
    seeds: tuple[bytes, ...]
    tokens: tuple[bytes, ...] = field(default=())
    #: a limit on input size that the parser itself enforces (the generators stay below it)
    max_size: int = 64 * 1024

    @property
    def all_tokens(self) -> tuple[bytes, ...]:
        return self.tokens + TOKENS


# --------------------------------------------------------------------------- fixed keys

NOTE_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"fuzz note key").digest())
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"fuzz other key").digest())
ORIGIN = "fuzz.example/log"
VERIFIER = NoteVerifier.from_public_key(ORIGIN, NOTE_KEY.public_key())
SEAL_KEY = X25519PrivateKey.from_private_bytes(hashlib.sha256(b"fuzz seal key").digest())
SEAL_OTHER = X25519PrivateKey.from_private_bytes(hashlib.sha256(b"fuzz seal other").digest())


# --------------------------------------------------------------------------- JSON


def _check_json_value(value: Any) -> None:
    """A parsed value must be plain, finite JSON that re-encodes as UTF-8."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError) as exc:
        raise Forgery(f"parse_json returned a value that is not valid JSON: {exc}") from exc


def run_json(data: bytes) -> object:
    value = _input.parse_json(data, what="fuzz", max_bytes=1024 * 1024)
    _check_json_value(value)
    return value


def run_json_lines(data: bytes) -> object:
    values = list(_input.iter_json_lines(io.BytesIO(data), what="fuzz", max_line=64 * 1024))
    # lines split on \n only: U+2028, U+0085 and \r never start a line
    expected = [i for i, line in enumerate(data.split(b"\n"), 1) if line.strip()]
    if [n for n, _ in values] != expected[: len(values)] or len(values) != len(expected):
        raise Forgery(f"JSON lines numbered {[n for n, _ in values]}, expected {expected}")
    for _, value in values:
        _check_json_value(value)
    return values


RECORD = {
    "time": "2026-11-30T12:00:00.000000+00:00",
    "actor": "service-1",
    "model": "sha256:" + "ab" * 32,
    "input": [1, 2.5, -3e-7, None, True, False],
    "output": {"label": "cat", "score": 0.9731, "text": 'caf\u00e9 \u2028 \U0001f600 \\ " /'},
    "n": 18446744073709551615,
}
JSON_SEEDS = (
    json.dumps(RECORD).encode(),
    json.dumps(RECORD, ensure_ascii=False, indent=1).encode(),
    b'{"jsonrpc":"2.0","id":1,"result":"0x539"}',
    b'{"jsonrpc":"2.0","id":7,"error":{"code":-32000,"message":"execution reverted","data":"0x"}}',
    b'[{"a":[[[[]]]]},{"b":{"c":{"d":{}}}}]',
    b'"\\ud83d\\ude00 \\u2028 \\u0085"',
    b"[]",
    b"0",
)
JSON_LINES_SEEDS = (
    b"\n".join(json.dumps(dict(RECORD, n=i), ensure_ascii=False).encode() for i in range(3))
    + b"\n",
    b'{"a":1}\r\n\r\n{"b":"\xe2\x80\xa8"}\n  \n[1,2]',
    b'{"a":"x\xc2\x85y"}\n',
)


# --------------------------------------------------------------------------- checkpoints, notes

ROOT_300: bytes
STORE = _merkle.MemoryHashStore()
ENTRIES = [f"entry {i}".encode() * (1 + i % 3) for i in range(300)]
for _e in ENTRIES:
    STORE.append(_e)
CHECKPOINT = Checkpoint(
    origin=ORIGIN, size=300, root_hash=_merkle.tree_hash(300, STORE), extensions=("ext 1",)
)
CHECKPOINT_100 = Checkpoint(origin=ORIGIN, size=100, root_hash=_merkle.tree_hash(100, STORE))
NOTE = sign_checkpoint(CHECKPOINT, ORIGIN, NOTE_KEY)
NOTE_100 = sign_checkpoint(CHECKPOINT_100, ORIGIN, NOTE_KEY)
# the same text with a second (unknown) signer after ours: still opens with our key
NOTE_TWO = NOTE + sign_note(CHECKPOINT.to_text(), "other.example", OTHER_KEY).split(b"\n\n", 1)[1]
TEXT_NOTE = sign_note("hello \u2014 world\nsecond line\n", ORIGIN, NOTE_KEY)


def run_checkpoint_text(data: bytes) -> object:
    checkpoint = Checkpoint.parse(data)
    if checkpoint.to_text().encode() != data:
        raise Forgery("Checkpoint.parse accepted a non-canonical text")
    return checkpoint


def _note_text(note: bytes) -> str:
    return note.decode()[: note.decode().rfind("\n\n") + 1]


def run_note(data: bytes) -> object:
    opened = open_note(data, [VERIFIER])
    if opened.text not in (_note_text(NOTE), _note_text(TEXT_NOTE)):
        raise Forgery(f"a mutated note opened with text {opened.text!r}")
    return opened


def run_verifier_key(data: bytes) -> object:
    text = data.decode("utf-8", "surrogateescape")  # as Python decodes undecodable argv bytes
    verifier = parse_verifier_key(text)
    name, hex_id, encoded = text.split("+", 2)
    if verifier.verifier_key() != f"{name}+{hex_id.lower()}+{encoded}":
        raise Forgery(f"a non-canonical verifier key was accepted: {text!r}")
    return verifier


def run_signed_checkpoint(data: bytes) -> object:
    checkpoint = open_checkpoint(data, [VERIFIER], origin=ORIGIN)
    if checkpoint not in (CHECKPOINT, CHECKPOINT_100):
        raise Forgery(f"a mutated checkpoint verified as {checkpoint!r}")
    return checkpoint


# --------------------------------------------------------------------------- tlog-proof

RECEIPT_INDEX = 7
RECEIPT = Receipt(
    index=RECEIPT_INDEX,
    hashes=tuple(_merkle.prove_inclusion(RECEIPT_INDEX, 300, STORE)),
    checkpoint=NOTE,
    extra=b"opaque",
).to_bytes()
RECEIPT_PLAIN = Receipt(
    index=299, hashes=tuple(_merkle.prove_inclusion(299, 300, STORE)), checkpoint=NOTE
).to_bytes()


def run_receipt(data: bytes) -> object:
    parsed = Receipt.parse(data)
    if parsed.to_bytes() != data:
        raise Forgery("Receipt.parse accepted a non-canonical receipt")
    if parsed.index < len(ENTRIES):
        checkpoint = verify_receipt(parsed, [VERIFIER], entry=ENTRIES[parsed.index])
        if checkpoint != CHECKPOINT or parsed.hashes not in _valid_paths():
            raise Forgery(f"a mutated receipt verified: index {parsed.index}, {checkpoint!r}")
    return parsed


def _valid_paths() -> tuple[tuple[bytes, ...], ...]:
    return (Receipt.parse(RECEIPT).hashes, Receipt.parse(RECEIPT_PLAIN).hashes)


# --------------------------------------------------------------------------- tiles


def _export_files() -> dict[str, bytes]:
    files = {
        "checkpoint": NOTE,
        "ailedger/checkpoints.json": b"[100, 300]",
        "ailedger/checkpoints/100": NOTE_100,
        "ailedger/checkpoints/300": NOTE,
    }
    for tile in _merkle.tiles_for_size(300):
        files[tile.path()] = _merkle.read_tile_data(tile, STORE)
        if tile.level == 0:
            first = tile.index * _merkle.TILE_WIDTH
            bundle = ENTRIES[first : first + tile.width]
            files[_merkle.entries_path(tile.index, tile.width)] = _merkle.encode_entry_bundle(
                bundle
            )
    return files


EXPORT = _export_files()
EXPORT_PATHS = tuple(sorted(EXPORT))


class _MemorySource:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def fetch(self, path: str) -> bytes | None:
        return self.files.get(path)

    def __str__(self) -> str:
        return "memory"


def run_export(data: bytes) -> object:
    """Byte 0 picks which file of a 300-entry export the rest of the input replaces."""
    if not data:
        return None
    path = EXPORT_PATHS[data[0] % len(EXPORT_PATHS)]
    files = dict(EXPORT, **{path: data[1:]})
    report = verify_export(_MemorySource(files), VERIFIER)
    if (report.size, report.root) != (300, CHECKPOINT.root_hash):
        raise Forgery(f"a mutated export verified for another tree: {report!r}")
    content = data[1:]
    if path.startswith("tile/entries/"):
        if _merkle.decode_entry_bundle(content) != _merkle.decode_entry_bundle(EXPORT[path]):
            raise Forgery(f"a mutated entry bundle {path} verified")
    elif path.startswith("tile/") and content[: len(EXPORT[path])] != EXPORT[path]:
        raise Forgery(f"a mutated tile {path} verified")
    return report


def run_tile_path(data: bytes) -> object:
    text = data.decode("latin-1")
    if text.startswith("tile/entries/"):
        index, width = _merkle.parse_entries_path(text)
        return _merkle.entries_path(index, width)
    return _merkle.parse_tile_path(text)


def run_entry_bundle(data: bytes) -> object:
    entries = _merkle.decode_entry_bundle(data)
    if _merkle.encode_entry_bundle(entries) != data:
        raise Forgery("an entry bundle does not re-encode to itself")
    return entries


_STORED_SIZE = 600  # two full level-0 tiles and a partial one of 88, a partial level 1 of 2
_STORED_LEAVES = [_merkle.leaf_hash(b"stored %d" % i) for i in range(_STORED_SIZE)]


def _stored_rows() -> list[tuple[int, int, int, bytes]]:
    rows = []
    for tile in _merkle.tiles_for_size(_STORED_SIZE):
        if tile.level == 0:
            first = tile.index * _merkle.TILE_WIDTH
            bottom = _STORED_LEAVES[first : first + tile.width]
        else:
            bottom = [
                _merkle.root_from_leaf_hashes(_STORED_LEAVES[i * 256 : (i + 1) * 256])
                for i in range(tile.width)
            ]
        rows.append((tile.level, tile.index, tile.width, build_rows(bottom)))
    return rows


STORED_ROWS = _stored_rows()
STORED_ROOT = _merkle.root_from_leaf_hashes(_STORED_LEAVES)


def run_stored_tile(data: bytes) -> object:
    """A tampered ``tiles`` row in log.sqlite: byte 0 picks the row (low bits) and how its
    values are stored (bits 4-5: blob, text, a text width, an integer), bytes 1-2 its width,
    the rest its data; the tree is reopened and asked for its root and a proof."""
    if len(data) < 3:
        return None
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE tiles (level, idx, width, data, PRIMARY KEY (level, idx))")
        conn.executemany("INSERT INTO tiles VALUES (?, ?, ?, ?)", STORED_ROWS)
        level, index, _, _ = STORED_ROWS[data[0] % len(STORED_ROWS)]
        width: object = int.from_bytes(data[1:3], "big")
        blob: object = data[3:]
        mode = (data[0] >> 4) % 4
        if mode == 1:
            blob = data[3:].decode("latin-1")
        elif mode == 2:
            width = str(width) + "x"
        elif mode == 3:
            blob = int.from_bytes(data[3:11], "big") >> 16
        conn.execute(
            "UPDATE tiles SET width = ?, data = ? WHERE level = ? AND idx = ?",
            (width, blob, level, index),
        )
        state = TileState(conn, _STORED_SIZE)
        root = _merkle.tree_hash(_STORED_SIZE, state)
        leaf = min(index * 256 ** (level + 1) + data[0], _STORED_SIZE - 1)  # in the tampered tile
        proof = _merkle.prove_inclusion(leaf, _STORED_SIZE, state)
        if len(root) != 32 or any(len(h) != 32 for h in proof):
            raise Forgery("a tampered tile gave hashes that are not 32 bytes")
        return root
    finally:
        conn.close()


def _stored_seeds() -> tuple[bytes, ...]:
    return tuple(
        bytes([k]) + width.to_bytes(2, "big") + blob
        for k, (_, _, width, blob) in enumerate(STORED_ROWS)
    )


# --------------------------------------------------------------------------- sealed files

PLAINTEXTS = (b"", b"short secret", bytes(range(256)) * 12)
SEALER = Signer.from_key(hashlib.sha256(b"fuzz sealer").digest())
CONTEXTS = (b"resource-1", b"")


def _sealed(plaintext: bytes, recipients: list[X25519PrivateKey], context: bytes) -> bytes:
    out = io.BytesIO()
    keys = [k.public_key() for k in recipients]
    with envelope.SealWriter(out, keys, signer=SEALER, context=context, chunk_size=1024) as w:
        w.write(plaintext)
    return out.getvalue()


SEALED = (
    _sealed(PLAINTEXTS[0], [SEAL_KEY], CONTEXTS[0]),
    _sealed(PLAINTEXTS[1], [SEAL_OTHER, SEAL_KEY], CONTEXTS[1]),
    _sealed(PLAINTEXTS[2], [SEAL_KEY], CONTEXTS[0]),
)


def _accept(header: envelope.SealedHeader) -> None:
    if header.sender_address != SEALER.address.lower() or header.context not in CONTEXTS:
        raise AccessDenied(f"not sealed by {SEALER.address} for a known resource")


def run_sealed(data: bytes) -> object:
    reader = envelope.OpenReader(data, SEAL_KEY, recover=recover_digest_signer, accept=_accept)
    with reader:
        plaintext = reader.read()
    header = reader.header
    if plaintext not in PLAINTEXTS or (header.sender_address, header.context) not in {
        (SEALER.address.lower(), c) for c in CONTEXTS
    }:
        raise Forgery(f"a mutated sealed file opened to {plaintext[:40]!r}, {header!r}")
    return plaintext


# --------------------------------------------------------------------------- task files, config

_SPEC = TaskSpec(
    shape=(3, 2),
    initial_digest=model_digest([0.0] * 6),
    rounds=2,
    quorum=2,
    extra={"model": "linear", "lr": 0.1, "note": "\u2028"},
)
TASK_REF = TaskRef(
    chain_id=1337,
    contract="0x" + "12" * 20,
    task=1,
    spec=_SPEC,
    participants=("0x" + "34" * 20, "0x" + "56" * 20),
)
TASK_SEEDS = (
    (json.dumps(TASK_REF.to_json(), indent=1) + "\n").encode(),
    json.dumps({k: v for k, v in TASK_REF.to_json().items() if k != "spec_digest"}).encode(),
)

_SCRATCH = Path(tempfile.mkdtemp(prefix="ailedger-fuzz-"))
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)


def run_task_file(data: bytes) -> object:
    path = _SCRATCH / "task.json"
    path.write_bytes(data)
    ref = TaskRef.load(path)
    ref.spec.digest()
    return ref


CONFIG_SEEDS = (
    b'format = 1\n\n[chain]\nbackend = "embedded"\nconfirmations = 1\nretries = 3\n'
    b'backoff = 0.5\n\n[chain.contracts.1337]\nAnchorRegistry = "0x' + b"ab" * 20 + b'"\n\n'
    b'[log]\norigin = "example.org/log"\n',
    b'[chain]\nbackend = "rpc"\nrpc = "http://127.0.0.1:8545"\nrequest_timeout = 10.0\n'
    b"receipt_timeout = 120\npoll_interval = 0.1\nbackoff_max = 8\n",
)


def run_config(data: bytes) -> object:
    workspace = _SCRATCH / "workspace"
    workspace.mkdir(mode=0o700, exist_ok=True)
    config = workspace / "config.toml"
    config.touch(mode=0o600)
    config.write_bytes(data)
    opened = Workspace.open(workspace)
    return opened.settings()


# --------------------------------------------------------------------------- JSON-RPC replies


RPC_METHODS = tuple(sorted(RESULT_CHECKS))


def run_rpc_reply(data: bytes) -> object:
    """Byte 0 picks the method called; the rest is the node's reply body."""
    if not data:
        return None
    method = RPC_METHODS[data[0] % len(RPC_METHODS)]
    try:
        reply = check_reply(method, 1, data[1:], max_bytes=1024 * 1024)
    except NodeReplyError as exc:  # what Ledger does with it
        raise NodeUnavailable(f"the node {exc}") from exc
    _check_json_value(reply)
    return reply


def _rpc_seed(method: str, reply: bytes) -> bytes:
    return bytes([RPC_METHODS.index(method)]) + reply


RPC_SEEDS = (
    _rpc_seed("eth_chainId", b'{"jsonrpc":"2.0","id":1,"result":"0x539"}'),
    _rpc_seed(
        "eth_getBlockByNumber",
        b'{"jsonrpc":"2.0","id":1,"result":{"number":"0x1b4","hash":"0x' + b"ab" * 32 + b'",'
        b'"transactions":[],"baseFeePerGas":"0x7","gasUsed":"0x0"}}',
    ),
    _rpc_seed(
        "eth_call",
        b'{"jsonrpc":"2.0","id":1,"error":{"code":3,"message":"execution reverted: no",'
        b'"data":"0x08c379a0"}}',
    ),
    _rpc_seed(
        "eth_getTransactionReceipt",
        b'{"jsonrpc":"2.0","id":1,"result":{"status":"0x1","blockNumber":"0x2","blockHash":"0x'
        + b"cd" * 32
        + b'","gasUsed":"0x5208","effectiveGasPrice":"0x1","contractAddress":null,"logs":[{}]}}',
    ),
    _rpc_seed("eth_getLogs", b'{"jsonrpc":"2.0","id":1,"result":[]}'),
)


# --------------------------------------------------------------------------- witnesses

WITNESS_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"fuzz witness").digest())
WITNESS = WitnessVerifier.from_public_key("witness.example", WITNESS_KEY.public_key())
COSIGNED = NOTE + cosign(CHECKPOINT, WITNESS.name, WITNESS_KEY, timestamp=1_700_000_000).encode()
COSIGNED_TWO = COSIGNED + cosign(CHECKPOINT, "w2.example", OTHER_KEY, timestamp=5).encode()


def run_cosigned(data: bytes) -> object:
    cosigned = verify_cosigned(data, [WITNESS])
    if cosigned.checkpoint != CHECKPOINT or [c.timestamp for c in cosigned.cosignatures] != [
        1_700_000_000
    ]:
        raise Forgery(f"a mutated cosigned checkpoint verified: {cosigned!r}")
    return cosigned


_WITNESS: list[Witness] = []


def run_witness_request(data: bytes) -> object:
    """An add-checkpoint request body to a witness following our log (state kept between
    inputs, as a running witness keeps it): it answers, and cosigns only our own notes."""
    if not _WITNESS:
        _WITNESS.append(Witness.open(_SCRATCH / "witness", {ORIGIN: [VERIFIER]}, name="w.fuzz"))
        atexit.register(_WITNESS[0].close)
    reply = _WITNESS[0].add_checkpoint(data)
    if reply.ok:
        note = data.partition(b"\n\n")[2]
        if open_checkpoint(note, [VERIFIER]) not in (CHECKPOINT, CHECKPOINT_100):
            raise Forgery("the witness cosigned a checkpoint our log never signed")
    return reply


def _proof_lines(proof: list[bytes]) -> bytes:
    return b"".join(base64.b64encode(h) + b"\n" for h in proof)


WITNESS_SEEDS = (
    b"old 0\n\n" + NOTE_100,
    b"old 100\n" + _proof_lines(_merkle.prove_consistency(100, 300, STORE)) + b"\n" + NOTE,
    b"old 0\n\n" + NOTE,
)


# --------------------------------------------------------------------------- the registry

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("json", run_json, JSON_SEEDS, (b'"', b"\\", b",", b":", b"}", b"]")),
        Target("json-lines", run_json_lines, JSON_LINES_SEEDS, (b'"', b"}", b"\n{}\n")),
        Target("checkpoint", run_checkpoint_text, (CHECKPOINT.to_text().encode(),)),
        Target("signed-note", run_note, (NOTE, NOTE_TWO, TEXT_NOTE), ("\u2014 ".encode(),)),
        Target(
            "verifier-key",
            run_verifier_key,
            (
                VERIFIER.verifier_key().encode(),
                NoteVerifier.from_public_key("\u00e9t\u00e9", OTHER_KEY.public_key())
                .verifier_key()
                .encode(),
            ),
            (b"+", b"\x80", b"\xed\xa0\x80"),
        ),
        Target(
            "signed-checkpoint",
            run_signed_checkpoint,
            (NOTE, NOTE_100, NOTE_TWO),
            ("\u2014 fuzz.example/log ".encode(),),
        ),
        Target(
            "tlog-proof",
            run_receipt,
            (RECEIPT, RECEIPT_PLAIN),
            (b"index ", b"extra ", b"c2sp.org/tlog-proof@v1\n"),
        ),
        Target(
            "tile-path",
            run_tile_path,
            tuple(p.encode() for p in EXPORT_PATHS if p.startswith("tile/")),
            (b"x", b"/", b".p/", b"entries/", b"255", b"256"),
        ),
        Target(
            "entry-bundle",
            run_entry_bundle,
            tuple(EXPORT[p] for p in EXPORT_PATHS if p.startswith("tile/entries/")),
            (b"\xff\xff", b"\x00\x00"),
        ),
        Target(
            "tiles-export",
            run_export,
            tuple(bytes([i]) + EXPORT[p] for i, p in enumerate(EXPORT_PATHS)),
            (b"[", b"]", b",", b"300"),
        ),
        Target("stored-tiles", run_stored_tile, _stored_seeds()),
        Target("cosigned-note", run_cosigned, (COSIGNED, COSIGNED_TWO), ("\u2014 ".encode(),)),
        Target("witness-request", run_witness_request, WITNESS_SEEDS, (b"old ", b"\n\n")),
        Target("sealed", run_sealed, SEALED, (envelope.MAGIC, b"\x00\x00\x04\x00")),
        Target("task-file", run_task_file, TASK_SEEDS, (b'"', b"}", b"null", b"[]")),
        Target("config", run_config, CONFIG_SEEDS, (b"[", b"]", b'"', b"=", b"[[chain]]\n")),
        Target("rpc-reply", run_rpc_reply, RPC_SEEDS, (b'"0x', b'"result":', b"{}")),
    )
}
