"""Grants and revocations on chain; sealing for granted parties; opening only with a live grant."""

from __future__ import annotations

import io
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.crypto import envelope
from ailedger.errors import AccessDenied, InputError, VerificationError, WrongPassphrase
from ailedger.ledger.provenance import NotOwner
from ailedger.provenance.registry import register_artifact
from ailedger.provenance.sharing import (
    GrantRevoked,
    NoGrant,
    NotARecipient,
    grant,
    grants,
    open_shared,
    open_stream,
    read_public_key,
    revoke,
    seal,
    seal_stream,
    sharing_key,
    sharing_public_key,
)
from tests.unit.provenance.conftest import Party, passphrase

SECRET = b"patient,diagnosis\n1,flu\n2,measles\n" * 1000


@pytest.fixture
def parties(make_party: Callable[[str], Party]) -> tuple[Party, Party, Party]:
    return make_party("owner"), make_party("bob"), make_party("carol")


@pytest.fixture
def shared(parties: tuple[Party, Party, Party], tmp_path: Path) -> tuple[Path, bytes]:
    """A registered dataset file of the owner's: (path, its digest)."""
    owner = parties[0]
    path = tmp_path / "records.csv"
    path.write_bytes(SECRET)
    reg = register_artifact(owner.ws, owner.ledger, path, kind="dataset", signing_key=owner.key)
    return path, reg.digest


def x25519(party: Party) -> bytes:
    return envelope.dump_public_key(sharing_public_key(party.ws, passphrase), encoding="raw")


def do_open(party: Party, src: Path, dst: Path, resource: bytes) -> None:
    open_shared(party.ws, party.ledger, src, dst, resource=resource, passphrase=passphrase)


def do_seal(party: Party, src: Path, dst: Path, resource: bytes) -> list[str]:
    return list(
        seal(party.ws, party.ledger, src, dst, resource=resource, passphrase=passphrase).recipients
    )


def test_grant_seal_open_revoke_reseal(
    parties: tuple[Party, Party, Party], shared: tuple[Path, bytes], tmp_path: Path
) -> None:
    owner, bob, carol = parties
    path, resource = shared
    grant(owner.ws, owner.ledger, resource, x25519(bob))
    grant(owner.ws, owner.ledger, resource, x25519(carol))
    v1 = tmp_path / "v1.sealed"
    assert set(do_seal(owner, path, v1, resource)) == {
        envelope.key_id(x25519(p)) for p in (owner, bob, carol)
    }
    for party in (owner, bob, carol):
        out = tmp_path / f"{party.ws.path.name}.v1.csv"
        do_open(party, v1, out, resource)
        assert out.read_bytes() == SECRET

    receipt = revoke(owner.ws, owner.ledger, resource, x25519(carol))
    states = {g.recipient: g for g in grants(owner.ws, owner.ledger, resource)}
    assert states[x25519(carol)].revoked_block == receipt.block_number
    assert not states[x25519(carol)].live
    assert states[x25519(bob)].live

    with pytest.raises(GrantRevoked, match=f"revoked in block {receipt.block_number}"):
        do_open(carol, v1, tmp_path / "carol.again.csv", resource)
    assert not (tmp_path / "carol.again.csv").exists()

    v2 = tmp_path / "v2.sealed"
    sealed_for = do_seal(owner, path, v2, resource)
    assert envelope.key_id(x25519(carol)) not in sealed_for
    assert envelope.recipients(v2) == sealed_for
    with pytest.raises(AccessDenied, match="not sealed for the key"):
        envelope.open(v2, tmp_path / "carol.v2.csv", sharing_key(carol.ws, passphrase))
    assert not (tmp_path / "carol.v2.csv").exists()
    do_open(bob, v2, tmp_path / "bob.v2.csv", resource)
    assert (tmp_path / "bob.v2.csv").read_bytes() == SECRET


def test_no_grant_and_a_file_sealed_before_the_grant(
    parties: tuple[Party, Party, Party], shared: tuple[Path, bytes], tmp_path: Path
) -> None:
    owner, bob, _ = parties
    path, resource = shared
    early = tmp_path / "early.sealed"
    do_seal(owner, path, early, resource)
    with pytest.raises(NoGrant, match="ask its owner"):
        do_open(bob, early, tmp_path / "out.csv", resource)
    grant(owner.ws, owner.ledger, resource, x25519(bob))
    with pytest.raises(NotARecipient, match="sealed before the grant"):
        do_open(bob, early, tmp_path / "out.csv", resource)
    assert not (tmp_path / "out.csv").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_only_the_owner_grants_and_revokes(
    parties: tuple[Party, Party, Party], shared: tuple[Path, bytes]
) -> None:
    owner, bob, carol = parties
    _, resource = shared
    with pytest.raises(NotOwner, match="only the owner may grant"):
        grant(bob.ws, bob.ledger, resource, x25519(carol))
    grant(owner.ws, owner.ledger, resource, x25519(carol))
    with pytest.raises(NotOwner, match="only the owner may revoke"):
        revoke(bob.ws, bob.ledger, resource, x25519(carol))
    with pytest.raises(InputError, match="grant already live"):
        grant(owner.ws, owner.ledger, resource, x25519(carol))
    assert [g.live for g in grants(owner.ws, owner.ledger, resource)] == [True]


def test_a_recipient_key_of_the_wrong_type_is_refused(
    parties: tuple[Party, Party, Party], shared: tuple[Path, bytes]
) -> None:
    owner = parties[0]
    _, resource = shared
    ed25519_pem = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(InputError, match="Ed25519PublicKey, not an X25519 public key"):
        grant(owner.ws, owner.ledger, resource, ed25519_pem)
    with pytest.raises(InputError, match="neither 32 raw bytes nor PEM"):
        grant(owner.ws, owner.ledger, resource, b"\x01" * 31)
    with pytest.raises(InputError, match="X25519 public key"):
        grant(owner.ws, owner.ledger, resource, 12345)
    assert grants(owner.ws, owner.ledger, resource) == []


def test_sharing_key_is_made_once_encrypted_and_private(alice: Party) -> None:
    first = sharing_key(alice.ws, passphrase)
    path = alice.ws.path / "keys" / "x25519.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"ENCRYPTED" in path.read_bytes()
    again = sharing_key(alice.ws, passphrase)
    assert envelope.key_id(again.public_key()) == envelope.key_id(first.public_key())
    assert read_public_key(path.with_suffix(".pub").read_bytes()).public_bytes_raw() == (
        first.public_key().public_bytes_raw()
    )
    with pytest.raises(WrongPassphrase):
        sharing_key(alice.ws, lambda: "not the passphrase")


def test_a_tampered_sealed_file_does_not_open(
    parties: tuple[Party, Party, Party], shared: tuple[Path, bytes], tmp_path: Path
) -> None:
    owner, bob, _ = parties
    path, resource = shared
    grant(owner.ws, owner.ledger, resource, x25519(bob))
    sealed = tmp_path / "data.sealed"
    do_seal(owner, path, sealed, resource)
    raw = bytearray(sealed.read_bytes())
    raw[-5] ^= 1
    sealed.write_bytes(bytes(raw))
    with pytest.raises(VerificationError, match="does not authenticate"):
        do_open(bob, sealed, tmp_path / "out.csv", resource)
    assert not (tmp_path / "out.csv").exists()


def test_read_public_key_accepts_hex_and_pem(alice: Party) -> None:
    raw = x25519(alice)
    pem = (alice.ws.path / "keys" / "x25519.pub").read_bytes()
    assert read_public_key(raw.hex()).public_bytes_raw() == raw
    assert read_public_key("0x" + raw.hex()).public_bytes_raw() == raw
    assert read_public_key(pem).public_bytes_raw() == raw
    with pytest.raises(InputError):
        read_public_key("zz" * 32)


def test_streams_follow_the_same_grants(
    parties: tuple[Party, Party, Party], shared: tuple[Path, bytes]
) -> None:
    owner, bob, carol = parties
    _, resource = shared

    def stream_seal() -> bytes:
        out = io.BytesIO()
        seal_stream(
            owner.ws,
            owner.ledger,
            io.BytesIO(SECRET),
            out,
            resource=resource,
            passphrase=passphrase,
        )
        return out.getvalue()

    def stream_open(party: Party, sealed: bytes) -> bytes:
        out = io.BytesIO()
        open_stream(
            party.ws,
            party.ledger,
            io.BytesIO(sealed),
            out,
            resource=resource,
            passphrase=passphrase,
        )
        return out.getvalue()

    before = stream_seal()
    grant(owner.ws, owner.ledger, resource, x25519(bob))
    with pytest.raises(NotARecipient):
        stream_open(bob, before)  # sealed before bob's grant
    after = stream_seal()
    assert stream_open(bob, after) == SECRET
    assert stream_open(owner, before) == SECRET
    with pytest.raises(NoGrant):
        stream_open(carol, after)
    revoke(owner.ws, owner.ledger, resource, x25519(bob))
    with pytest.raises(GrantRevoked):
        stream_open(bob, after)
    with pytest.raises(VerificationError):
        stream_open(owner, after[:-1])
