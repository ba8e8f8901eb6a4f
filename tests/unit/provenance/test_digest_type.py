"""The Digest type: one printed form (sha256:<hex>), three accepted input forms."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ailedger.errors import InputError
from ailedger.provenance.digest import Digest
from ailedger.provenance.registry import parse_digest, parse_parent

# SHA-256("abc"), FIPS 180-2 appendix B.1
ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
OWNER = "0x00000000000000000000000000000000000000aa"


def test_known_answer_and_text_forms() -> None:
    d = Digest.of(b"abc")
    assert str(d) == "sha256:" + ABC
    assert d.hex == ABC
    assert d.hex0x == "0x" + ABC
    assert d.raw == bytes.fromhex(ABC)


@pytest.mark.parametrize(
    "text", ["sha256:" + ABC, "SHA256:" + ABC.upper(), "0x" + ABC, "0X" + ABC, ABC, f" {ABC} "]
)
def test_every_accepted_form_parses_to_the_same_digest(text: str) -> None:
    assert Digest.parse(text) == Digest.of(b"abc")
    assert parse_digest(text) == bytes.fromhex(ABC)


@pytest.mark.parametrize(
    "text",
    ["", "sha256:", "sha256:" + ABC[:-1], "0x" + ABC + "00", "sha512:" + ABC, "g" * 64, "0x"],
)
def test_malformed_text_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(InputError, match="--digest must be sha256:"):
        Digest.parse(text, "--digest")


def test_bytes_and_digests_pass_through_and_bad_lengths_are_refused() -> None:
    d = Digest.of(b"x")
    assert Digest.parse(d) is d
    assert Digest.parse(d.raw) == d
    with pytest.raises(InputError, match="32 bytes"):
        Digest.parse(b"short")
    with pytest.raises(InputError, match="32 bytes"):
        Digest(b"\x00" * 31)


def test_parents_accept_the_sha256_form_with_and_without_an_owner() -> None:
    other = "0x00000000000000000000000000000000000000bb"
    raw = bytes.fromhex(ABC)
    assert parse_parent("sha256:" + ABC, OWNER)[1] == raw
    assert parse_parent(f"{other}:sha256:{ABC}", OWNER)[1] == raw
    assert parse_parent(f"{other}:0x{ABC}", OWNER)[1] == raw
    assert parse_parent(f"{other}:sha256:{ABC}", OWNER)[0].lower() == other.lower()
    assert parse_parent(ABC, OWNER)[0].lower() == OWNER.lower()


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_printed_form_round_trips(raw: bytes) -> None:
    d = Digest(raw)
    assert Digest.parse(str(d)) == d
    assert Digest.parse(d.hex0x) == d
    assert str(d) == "sha256:" + raw.hex()
