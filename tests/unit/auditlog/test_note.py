"""Tests of C2SP signed notes (ailedger.auditlog.note), with known answers from Go and the spec."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog.note import (
    MAX_SIGNATURES,
    NoteVerifier,
    check_key_name,
    key_id,
    open_note,
    parse_verifier_key,
    sign_note,
    verifier_key,
)
from ailedger.errors import InputError, SignatureError

KAT = json.loads(
    (Path(__file__).resolve().parents[2] / "kat" / "signed_note.json").read_text(encoding="utf-8")
)
GO: dict[str, Any] = KAT["go"]
SPEC: dict[str, Any] = KAT["c2sp_spec_example"]
TEXT: str = GO["text"]
PETER_SIG: str = GO["peter"]["signature_line"]
ENOCH_SIG: str = GO["enoch"]["signature_line"]


def peter_private_key() -> Ed25519PrivateKey:
    # Go signer key: PRIVATE+KEY+<name>+<key ID>+base64(0x01 || 32-byte seed).
    encoded = GO["peter"]["signer_key"].split("+", 4)[4]
    raw = base64.b64decode(encoded)
    assert raw[0] == 0x01
    return Ed25519PrivateKey.from_private_bytes(raw[1:])


PETER = parse_verifier_key(GO["peter"]["verifier_key"])
ENOCH = parse_verifier_key(GO["enoch"]["verifier_key"])


def seeded_key(i: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32)


# --- keys ----------------------------------------------------------------------------------------


def test_go_verifier_keys_parse() -> None:
    assert PETER.name == "PeterNeumann"
    assert f"{PETER.key_id:08x}" == GO["peter"]["key_id"]
    assert f"{ENOCH.key_id:08x}" == GO["enoch"]["key_id"]
    assert PETER.verifier_key() == GO["peter"]["verifier_key"]


def test_key_id_and_verifier_key_from_private_key() -> None:
    public = peter_private_key().public_key()
    assert f"{key_id('PeterNeumann', public):08x}" == GO["peter"]["key_id"]
    assert verifier_key("PeterNeumann", public) == GO["peter"]["verifier_key"]
    assert NoteVerifier.from_public_key("PeterNeumann", public) == PETER


@pytest.mark.parametrize("bad", [v["key"] for v in GO["bad_verifier_keys"]])
def test_go_bad_verifier_keys_are_rejected(bad: str) -> None:
    with pytest.raises(InputError):
        parse_verifier_key(bad)


def test_every_mangled_verifier_key_is_rejected() -> None:
    # After Go's TestNewVerifier: every proper substring and every one-character change fails.
    vkey = GO["peter"]["verifier_key"]
    rejected = 0
    for i in range(len(vkey) + 1):
        for j in range(i + 1, len(vkey) + 1):
            if (i, j) == (0, len(vkey)):
                continue
            with pytest.raises(InputError):
                parse_verifier_key(vkey[i:j])
            rejected += 1
    for i in range(len(vkey)):
        changed = vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1 :]
        with pytest.raises(InputError):
            parse_verifier_key(changed)
        rejected += 1
    assert rejected > 2000


def test_verifier_keys_round_trip_including_plus_in_base64() -> None:
    keys = [verifier_key("example.com/log", seeded_key(i).public_key()) for i in range(32)]
    assert any("+" in k.split("+", 2)[2] for k in keys)
    for i, k in enumerate(keys):
        parsed = parse_verifier_key(k)
        assert parsed.verifier_key() == k
        assert parsed.key_id == key_id("example.com/log", seeded_key(i).public_key())


@pytest.mark.parametrize("name", ["", "a+b", "bad name", "tab\tname", "nbsp\u00a0name", "nl\nx"])
def test_bad_key_names_are_rejected(name: str) -> None:
    with pytest.raises(InputError):
        check_key_name(name)
    with pytest.raises(InputError):
        sign_note("text\n", name, seeded_key(1))


def test_good_key_names_are_accepted() -> None:
    for name in ["example.com/log42", "PeterNeumann", "quasimodo.example/salvatore", "é/ü"]:
        check_key_name(name)
        assert open_note(
            sign_note("x\n", name, seeded_key(2)),
            [NoteVerifier.from_public_key(name, seeded_key(2).public_key())],
        ).signers == (name,)


# --- signing -------------------------------------------------------------------------------------


def test_sign_reproduces_go_note_exactly() -> None:
    signed = sign_note(TEXT, "PeterNeumann", peter_private_key())
    assert signed.decode("utf-8") == GO["signed_by_peter"]
    assert sign_note(TEXT.encode(), "PeterNeumann", peter_private_key()) == signed


@pytest.mark.parametrize("text", ["abc", "", "line\x01\n", b"\xff\n"])
def test_sign_rejects_bad_text(text: str | bytes) -> None:
    with pytest.raises(InputError):
        sign_note(text, "PeterNeumann", peter_private_key())


def test_sign_then_open_text_with_blank_lines() -> None:
    text = "a\n\nb\n\n"
    key = seeded_key(3)
    opened = open_note(
        sign_note(text, "k", key), [NoteVerifier.from_public_key("k", key.public_key())]
    )
    assert opened.text == text


# --- opening -------------------------------------------------------------------------------------


def test_open_with_one_of_two_keys_known() -> None:
    opened = open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [PETER])
    assert opened.text == TEXT
    assert opened.signers == ("PeterNeumann",)
    text, signers = opened
    assert (text, signers) == (TEXT, ("PeterNeumann",))


def test_open_with_both_keys_known() -> None:
    opened = open_note((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), [ENOCH, PETER])
    assert opened.signers == ("PeterNeumann", "EnochRoot")


def test_open_with_no_known_key_fails() -> None:
    with pytest.raises(SignatureError, match="no signature from a trusted key"):
        open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [])


def test_open_rejects_a_bad_signature_from_a_known_key() -> None:
    bad = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(SignatureError, match="PeterNeumann\\+c74f20a3"):
        open_note(TEXT + "\n" + bad, [PETER])
    with pytest.raises(SignatureError):
        open_note(TEXT + "\n" + ENOCH_SIG + bad, [PETER, ENOCH])


def test_open_rejects_a_tampered_text() -> None:
    with pytest.raises(SignatureError):
        open_note(TEXT.replace("answer", "ANSWER") + "\n" + PETER_SIG, [PETER])


def test_open_rejects_a_short_signature_from_a_known_key() -> None:
    raw = PETER.key_id.to_bytes(4, "big") + b"\x00" * 10
    line = f"— PeterNeumann {base64.b64encode(raw).decode()}\n"
    with pytest.raises(SignatureError):
        open_note(TEXT + "\n" + line, [PETER])


def test_open_ignores_duplicates_and_unknown_keys() -> None:
    enoch_bad = ENOCH_SIG[:60] + "ABCD" + ENOCH_SIG[60:]
    note = TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + enoch_bad
    assert open_note(note, [PETER]).signers == ("PeterNeumann",)


def test_open_ignores_key_sharing_only_the_name() -> None:
    impostor = NoteVerifier.from_public_key("PeterNeumann", seeded_key(4).public_key())
    with pytest.raises(SignatureError, match="no signature"):
        open_note(TEXT + "\n" + PETER_SIG, [impostor])


def test_open_rejects_ambiguous_trusted_keys() -> None:
    twin = NoteVerifier(name=PETER.name, key_id=PETER.key_id, public_key=seeded_key(5).public_key())
    with pytest.raises(InputError, match="share the name and ID"):
        open_note(TEXT + "\n" + PETER_SIG, [PETER, twin])
    assert open_note(TEXT + "\n" + PETER_SIG, [PETER, PETER]).signers == ("PeterNeumann",)


def test_open_signature_count_limit() -> None:
    assert open_note(TEXT + "\n" + PETER_SIG * MAX_SIGNATURES, [PETER]).signers == ("PeterNeumann",)
    with pytest.raises(InputError, match="at most 100"):
        open_note(TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1), [PETER])
    with pytest.raises(InputError, match="at most 100"):
        open_note(TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1), [])


@pytest.mark.parametrize("suffix", GO["malformed_notes_suffixes"]["cases"])
def test_go_malformed_notes(suffix: str) -> None:
    with pytest.raises(InputError):
        open_note(TEXT + suffix, [PETER])


@pytest.mark.parametrize(
    "note",
    [
        b"\x01" + (TEXT + "\n" + PETER_SIG).encode(),
        b"\xff" + (TEXT + "\n" + PETER_SIG).encode(),
        (TEXT + "\n" + PETER_SIG.replace("— ", "- ")).encode(),
        (TEXT + "\n" + PETER_SIG.replace("=\n", "\n")).encode(),
        (TEXT + "\n" + PETER_SIG.replace(" x08go", " x08go ")).encode(),
        (TEXT + "\n" + "— PeterNeumann AAAA\n").encode(),
        (TEXT + "\n" + "— PeterNeumann\n").encode(),
        (TEXT + "\r\n" + PETER_SIG).encode(),
    ],
)
def test_malformed_notes(note: bytes) -> None:
    with pytest.raises(InputError):
        open_note(note, [PETER])


def test_non_canonical_base64_signature_is_rejected() -> None:
    encoded = PETER_SIG.split(" ")[2].strip()
    raw = base64.b64decode(encoded)
    assert len(raw) % 3 == 2  # so the last character carries two unused bits
    last = encoded[-2]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    tweaked = encoded[:-2] + alphabet[alphabet.index(last) | 1] + "="
    assert tweaked != encoded
    assert base64.b64decode(tweaked) == raw
    with pytest.raises(InputError, match="canonical"):
        open_note(TEXT + "\n" + PETER_SIG.replace(encoded, tweaked), [PETER])


def test_spec_example_is_well_formed_but_unverifiable() -> None:
    # The spec publishes no public key: the note parses, and no trusted key signed it.
    note: str = SPEC["note"]
    with pytest.raises(SignatureError, match="no signature from a trusted key"):
        open_note(note, [PETER])
    line = note[len(SPEC["text"]) + 1 :]
    raw = base64.b64decode(line.split(" ")[2])
    assert len(raw) == 4 + 64


def test_spec_example_text_with_a_cosigner() -> None:
    # Our own key under the spec's key name signs the spec's text; the spec's own signature line
    # (same name, another key ID) must be ignored as unknown.
    name: str = SPEC["signer"]
    key = seeded_key(6)
    mine = sign_note(SPEC["text"], name, key)
    theirs = SPEC["note"][len(SPEC["text"]) + 1 :].encode()
    verifier = NoteVerifier.from_public_key(name, key.public_key())
    opened = open_note(mine + theirs, [verifier])
    assert opened.text == SPEC["text"]
    assert opened.signers == (name,)
