"""Tests of C2SP tlog-checkpoint texts (ailedger.auditlog.checkpoint)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog._merkle import EMPTY_ROOT, leaf_hash
from ailedger.auditlog.checkpoint import (
    MAX_TREE_SIZE,
    Checkpoint,
    open_checkpoint,
    sign_checkpoint,
)
from ailedger.auditlog.note import NoteVerifier, sign_note
from ailedger.errors import InputError, SignatureError, VerificationError

KAT: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "kat" / "tlog_checkpoint.json").read_text("utf-8")
)
ROOT = leaf_hash(b"hello world")
GOOD = "example.com/log\n5\n" + base64.b64encode(ROOT).decode() + "\n"
KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
VERIFIER = NoteVerifier.from_public_key("example.com/log", KEY.public_key())


def test_spec_example_parses() -> None:
    spec = KAT["c2sp_spec_example"]
    cp = Checkpoint.parse(spec["text"])
    assert cp.origin == spec["origin"]
    assert cp.size == spec["size"]
    assert cp.root_hash == base64.b64decode(spec["root_hash_base64"])
    assert cp.extensions == ()
    assert cp.to_text() == spec["text"]
    assert spec["signed_note"].startswith(spec["text"] + "\n— ")


def test_go_sumdb_tree_format() -> None:
    go = KAT["go_sumdb_tree"]
    cp = Checkpoint(origin=go["origin"], size=go["size"], root_hash=leaf_hash(b"hello world"))
    assert cp.to_text() == go["text"]
    assert Checkpoint.parse(go["text"].encode()) == cp
    for bad in go["bad_texts"]:
        with pytest.raises(InputError):
            Checkpoint.parse(bad)


def test_extension_lines_round_trip() -> None:
    cp = Checkpoint.parse(GOOD + "ext one\n— not a signature\n")
    assert cp.extensions == ("ext one", "— not a signature")
    assert cp.to_text() == GOOD + "ext one\n— not a signature\n"


def test_empty_tree_and_largest_size() -> None:
    empty = Checkpoint(origin="o", size=0, root_hash=EMPTY_ROOT)
    assert empty.to_text().split("\n")[1] == "0"
    assert Checkpoint.parse(empty.to_text()) == empty
    big = Checkpoint(origin="o", size=MAX_TREE_SIZE, root_hash=ROOT)
    assert Checkpoint.parse(big.to_text()).size == 2**64 - 1


@pytest.mark.parametrize(
    "text",
    [
        GOOD[:-1],  # no final newline
        "example.com/log\n5\n",  # two lines
        "\n5\n" + GOOD.split("\n")[2] + "\n",  # empty origin
        GOOD.replace("\n5\n", "\n05\n"),
        GOOD.replace("\n5\n", "\n00\n"),
        GOOD.replace("\n5\n", "\n+5\n"),
        GOOD.replace("\n5\n", "\n-5\n"),
        GOOD.replace("\n5\n", "\n 5\n"),
        GOOD.replace("\n5\n", "\n5 \n"),
        GOOD.replace("\n5\n", "\n５\n"),  # a fullwidth digit
        GOOD.replace("\n5\n", "\n1_0\n"),
        GOOD.replace("\n5\n", "\n0x5\n"),
        GOOD.replace("\n5\n", f"\n{2**64}\n"),
        GOOD.replace("=\n", "\n"),  # unpadded root
        GOOD.replace("\n5\n", "\n5\n\n"),  # empty line before the root
        GOOD + "\n",  # empty extension line
        "example.com/log\n5\n" + base64.b64encode(ROOT[:31]).decode() + "\n",
        "example.com/log\n5\n" + base64.b64encode(ROOT + b"\0").decode() + "\n",
    ],
)
def test_strict_parsing(text: str) -> None:
    with pytest.raises(InputError):
        Checkpoint.parse(text)


def test_non_canonical_root_base64_is_rejected() -> None:
    encoded = base64.b64encode(ROOT).decode()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    tweaked = encoded[:-2] + alphabet[alphabet.index(encoded[-2]) ^ 1] + "="
    assert base64.b64decode(tweaked) == ROOT
    with pytest.raises(InputError, match="base64"):
        Checkpoint.parse(GOOD.replace(encoded, tweaked))


def test_invalid_utf8_is_rejected() -> None:
    with pytest.raises(InputError, match="UTF-8"):
        Checkpoint.parse(b"\xff" + GOOD.encode())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"origin": "", "size": 1, "root_hash": ROOT},
        {"origin": "a\nb", "size": 1, "root_hash": ROOT},
        {"origin": "o", "size": -1, "root_hash": ROOT},
        {"origin": "o", "size": 2**64, "root_hash": ROOT},
        {"origin": "o", "size": True, "root_hash": ROOT},
        {"origin": "o", "size": 1, "root_hash": ROOT[:31]},
        {"origin": "o", "size": 1, "root_hash": ROOT, "extensions": ("",)},
        {"origin": "o", "size": 1, "root_hash": ROOT, "extensions": ("a\nb",)},
    ],
)
def test_constructor_validates(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        Checkpoint(**kwargs)


def test_sign_and_open() -> None:
    cp = Checkpoint(origin="example.com/log", size=5, root_hash=ROOT)
    signed = sign_checkpoint(cp, "example.com/log", KEY)
    assert signed.startswith(GOOD.encode() + b"\n\xe2\x80\x94 example.com/log ")
    assert open_checkpoint(signed, [VERIFIER]) == cp
    assert open_checkpoint(signed, [VERIFIER], origin="example.com/log") == cp


def test_open_rejects_wrong_origin_key_and_tampering() -> None:
    cp = Checkpoint(origin="example.com/log", size=5, root_hash=ROOT)
    signed = sign_checkpoint(cp, "example.com/log", KEY)
    with pytest.raises(VerificationError, match=re.escape("expected 'example.com/other'")):
        open_checkpoint(signed, [VERIFIER], origin="example.com/other")
    other = Ed25519PrivateKey.from_private_bytes(b"\x08" * 32)
    with pytest.raises(SignatureError):
        open_checkpoint(
            signed, [NoteVerifier.from_public_key("example.com/log", other.public_key())]
        )
    with pytest.raises(SignatureError):
        open_checkpoint(signed.replace(b"\n5\n", b"\n6\n"), [VERIFIER])


def test_signed_non_checkpoint_is_rejected() -> None:
    bogus = sign_note("just\ntwo\n", "example.com/log", KEY)
    with pytest.raises(InputError, match="at least 3 lines"):
        open_checkpoint(bogus, [VERIFIER])
