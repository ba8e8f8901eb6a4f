"""Tests of C2SP tlog-proof receipts (ailedger.auditlog.proof)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog._merkle import MemoryHashStore, leaf_hash, prove_inclusion
from ailedger.auditlog.checkpoint import Checkpoint, sign_checkpoint
from ailedger.auditlog.note import NoteVerifier
from ailedger.auditlog.proof import HEADER, Receipt, verify_receipt
from ailedger.errors import (
    InputError,
    ProofError,
    RootMismatch,
    SignatureError,
    VerificationError,
)

KAT: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "kat" / "tlog_proof.json").read_text("utf-8")
)
ORIGIN = "example.com/ailedger-test"
KEY = Ed25519PrivateKey.from_private_bytes(b"\x11" * 32)
VERIFIER = NoteVerifier.from_public_key(ORIGIN, KEY.public_key())
ENTRIES = [f'{{"decision":{i}}}'.encode() for i in range(13)]


def build_log() -> tuple[MemoryHashStore, bytes]:
    store = MemoryHashStore()
    for entry in ENTRIES:
        store.append(entry)
    checkpoint = Checkpoint(origin=ORIGIN, size=store.size, root_hash=store.root())
    return store, sign_checkpoint(checkpoint, ORIGIN, KEY)


STORE, SIGNED = build_log()


def receipt_for(index: int) -> Receipt:
    hashes = tuple(prove_inclusion(index, STORE.size, STORE))
    return Receipt(index=index, hashes=hashes, checkpoint=SIGNED)


# --- format --------------------------------------------------------------------------------------


def test_spec_example_parses_and_round_trips() -> None:
    data = KAT["proof"].encode("utf-8")
    receipt = Receipt.parse(data)
    assert receipt.index == KAT["index"]
    assert receipt.extra == base64.b64decode(KAT["extra_base64"])
    assert receipt.hashes == tuple(base64.b64decode(h) for h in KAT["hashes_base64"])
    assert receipt.checkpoint.startswith((KAT["checkpoint_text"] + "\n— ").encode())
    assert data.endswith(receipt.checkpoint)
    assert receipt.to_bytes() == data
    assert Receipt.parse(KAT["proof"]) == receipt


def test_format_layout() -> None:
    h1, h2 = hashlib.sha256(b"hash1").digest(), hashlib.sha256(b"hash2").digest()
    b1, b2 = base64.b64encode(h1).decode(), base64.b64encode(h2).decode()
    plain = Receipt(index=5, hashes=(h1, h2), checkpoint=b"test checkpoint\n")
    assert plain.to_bytes() == f"{HEADER}\nindex 5\n{b1}\n{b2}\n\ntest checkpoint\n".encode()
    extra = Receipt(index=10, hashes=(h1,), checkpoint=b"cp\n", extra=b"extra information")
    encoded = base64.b64encode(b"extra information").decode()
    assert extra.to_bytes() == f"{HEADER}\nextra {encoded}\nindex 10\n{b1}\n\ncp\n".encode()
    empty = Receipt(index=0, hashes=(), checkpoint=b"cp\n")
    assert empty.to_bytes() == f"{HEADER}\nindex 0\n\ncp\n".encode()
    for r in (plain, extra, empty):
        assert Receipt.parse(r.to_bytes()) == r


@pytest.mark.parametrize(
    ("data", "why"),
    [
        # The first seven after transparency-dev/merkle proof/tlog_proof_test.go.
        (b"wrong-header\nindex 0\n\ncheckpoint\n", "starts with"),
        (b"c2sp.org/tlog-proof@v1\nextra !!notbase64!!\nindex 0\n\ncheckpoint\n", "extra"),
        (b"c2sp.org/tlog-proof@v1\n\n\ncheckpoint\n", "index"),
        (b"c2sp.org/tlog-proof@v1\nindex notanumber\n\ncheckpoint\n", "decimal"),
        (b"c2sp.org/tlog-proof@v1\nindex -5\n\ncheckpoint\n", "decimal"),
        (b"c2sp.org/tlog-proof@v1\nindex 0\n!!notbase64!!\n\ncheckpoint\n", "base64"),
        (
            b"c2sp.org/tlog-proof@v1\nindex 0\n"
            + base64.b64encode(bytes(64))
            + b"\n\ncheckpoint\n",
            "64 bytes",
        ),
        (b"c2sp.org/tlog-proof@v1\nindex 01\n\ncheckpoint\n", "leading zeros"),
        (b"c2sp.org/tlog-proof@v1\nindex 1 \n\ncheckpoint\n", "decimal"),
        (b"c2sp.org/tlog-proof@v1\nindex 18446744073709551616\n\ncp\n", "outside"),
        (b"c2sp.org/tlog-proof@v1\nindex 0\n\n", "ends with a signed checkpoint"),
        (b"c2sp.org/tlog-proof@v1\nindex 0\n", "empty line"),
        (b"c2sp.org/tlog-proof@v1\nextra \nindex 0\n\ncp\n", "extra"),
        (b"c2sp.org/tlog-proof@v1\nindex 0\nextra YQ==\n\ncp\n", "proof hash #0"),
        (b"c2sp.org/tlog-proof@v2\nindex 0\n\ncp\n", "starts with"),
        (b"c2sp.org/tlog-proof@v1\nindex \xc3\xa9\n\ncp\n", "ASCII"),
    ],
)
def test_malformed_receipts(data: bytes, why: str) -> None:
    with pytest.raises(InputError, match=why):
        Receipt.parse(data)


def test_constructor_validates() -> None:
    h = bytes(32)
    cases: list[dict[str, Any]] = [
        {"index": -1, "hashes": (), "checkpoint": b"cp"},
        {"index": 0, "hashes": (h[:31],), "checkpoint": b"cp"},
        {"index": 0, "hashes": [h], "checkpoint": b"cp"},
        {"index": 0, "hashes": (), "checkpoint": b""},
        {"index": 0, "hashes": (), "checkpoint": b"cp", "extra": b""},
    ]
    for kwargs in cases:
        with pytest.raises(InputError):
            Receipt(**kwargs)


# --- verification --------------------------------------------------------------------------------


def test_every_receipt_of_the_log_verifies() -> None:
    for index, entry in enumerate(ENTRIES):
        data = receipt_for(index).to_bytes()
        cp = verify_receipt(data, [VERIFIER], entry=entry, origin=ORIGIN)
        assert (cp.origin, cp.size, cp.root_hash) == (ORIGIN, 13, STORE.root())
        assert verify_receipt(data, [VERIFIER], leaf_hash=leaf_hash(entry)) == cp
        assert verify_receipt(Receipt.parse(data), [VERIFIER], entry=entry) == cp


def test_wrong_entry_fails() -> None:
    with pytest.raises(RootMismatch):
        verify_receipt(receipt_for(4), [VERIFIER], entry=ENTRIES[5])
    with pytest.raises(RootMismatch):
        verify_receipt(receipt_for(4), [VERIFIER], leaf_hash=ENTRIES[4].ljust(32, b"\0")[:32])


def test_untrusted_or_tampered_checkpoint_fails() -> None:
    stranger = Ed25519PrivateKey.from_private_bytes(b"\x12" * 32)
    with pytest.raises(SignatureError):
        verify_receipt(
            receipt_for(4),
            [NoteVerifier.from_public_key(ORIGIN, stranger.public_key())],
            entry=ENTRIES[4],
        )
    data = receipt_for(4).to_bytes().replace(b"\n13\n", b"\n14\n")
    with pytest.raises(SignatureError):
        verify_receipt(data, [VERIFIER], entry=ENTRIES[4])
    with pytest.raises(VerificationError, match="expected"):
        verify_receipt(receipt_for(4), [VERIFIER], entry=ENTRIES[4], origin="example.com/other")


def test_tampered_proof_fails() -> None:
    good = receipt_for(6)
    for i in range(len(good.hashes)):
        hashes = list(good.hashes)
        hashes[i] = bytes([hashes[i][0] ^ 1]) + hashes[i][1:]
        bad = Receipt(index=6, hashes=tuple(hashes), checkpoint=SIGNED)
        with pytest.raises(RootMismatch):
            verify_receipt(bad.to_bytes(), [VERIFIER], entry=ENTRIES[6])
    with pytest.raises(VerificationError):
        verify_receipt(Receipt(7, good.hashes, SIGNED), [VERIFIER], entry=ENTRIES[6])
    with pytest.raises(ProofError, match="too few"):
        verify_receipt(Receipt(6, good.hashes[:-1], SIGNED), [VERIFIER], entry=ENTRIES[6])
    with pytest.raises(ProofError, match="not in a tree"):
        verify_receipt(Receipt(13, good.hashes, SIGNED), [VERIFIER], entry=ENTRIES[6])


def test_extra_data_is_not_authenticated_and_does_not_matter() -> None:
    good = receipt_for(2)
    with_extra = Receipt(good.index, good.hashes, good.checkpoint, extra=b"context")
    assert verify_receipt(with_extra.to_bytes(), [VERIFIER], entry=ENTRIES[2]).size == 13


def test_exactly_one_leaf_argument() -> None:
    with pytest.raises(InputError, match="exactly one"):
        verify_receipt(receipt_for(0), [VERIFIER])
    with pytest.raises(InputError, match="exactly one"):
        verify_receipt(
            receipt_for(0), [VERIFIER], entry=ENTRIES[0], leaf_hash=leaf_hash(ENTRIES[0])
        )
