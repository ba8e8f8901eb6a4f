"""Grants and revocations on chain; sealing for granted parties; opening only with a live grant,
only a version of the named resource signed by its owner, and never an older version than one
already opened."""

from __future__ import annotations

import io
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.crypto import envelope
from ailedger.errors import (
    AccessDenied,
    InputError,
    SignatureError,
    VerificationError,
    WrongPassphrase,
)
from ailedger.ledger.account import recover_digest_signer
from ailedger.ledger.provenance import NotOwner
from ailedger.provenance.registry import register_artifact
from ailedger.provenance.sharing import (
    GrantRevoked,
    NoGrant,
    NotARecipient,
    NotEntitled,
    OlderVersion,
    OpenedFile,
    Version,
    WrongResource,
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


def account(party: Party) -> str:
    return party.ws.keystore().address


def do_open(
    party: Party,
    src: Path,
    dst: Path,
    resource: bytes,
    owner: Party | None = None,
    *,
    unsafe_allow_older: bool = False,
) -> OpenedFile:
    return open_shared(
        party.ws,
        party.ledger,
        src,
        dst,
        resource=resource,
        passphrase=passphrase,
        owner=None if owner is None else account(owner),
        unsafe_allow_older=unsafe_allow_older,
    )


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
        do_open(party, v1, out, resource, owner)
        assert out.read_bytes() == SECRET

    receipt = revoke(owner.ws, owner.ledger, resource, x25519(carol))
    states = {g.recipient: g for g in grants(owner.ws, owner.ledger, resource)}
    assert states[x25519(carol)].revoked_block == receipt.block_number
    assert not states[x25519(carol)].live
    assert states[x25519(bob)].live

    with pytest.raises(GrantRevoked, match=f"revoked in block {receipt.block_number}"):
        do_open(carol, v1, tmp_path / "carol.again.csv", resource, owner)
    assert not (tmp_path / "carol.again.csv").exists()

    v2 = tmp_path / "v2.sealed"
    sealed_for = do_seal(owner, path, v2, resource)
    assert envelope.key_id(x25519(carol)) not in sealed_for
    assert envelope.recipients(v2) == sealed_for
    with pytest.raises(AccessDenied, match="not sealed for the key"):
        envelope.open(
            v2,
            tmp_path / "carol.v2.csv",
            sharing_key(carol.ws, passphrase),
            recover=recover_digest_signer,
        )
    assert not (tmp_path / "carol.v2.csv").exists()
    do_open(bob, v2, tmp_path / "bob.v2.csv", resource, owner)
    assert (tmp_path / "bob.v2.csv").read_bytes() == SECRET


def test_no_grant_and_a_file_sealed_before_the_grant(
    parties: tuple[Party, Party, Party], shared: tuple[Path, bytes], tmp_path: Path
) -> None:
    owner, bob, _ = parties
    path, resource = shared
    early = tmp_path / "early.sealed"
    do_seal(owner, path, early, resource)
    with pytest.raises(NoGrant, match="ask its owner"):
        do_open(bob, early, tmp_path / "out.csv", resource, owner)
    grant(owner.ws, owner.ledger, resource, x25519(bob))
    with pytest.raises(NotARecipient, match="sealed before the grant"):
        do_open(bob, early, tmp_path / "out.csv", resource, owner)
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
    good = sealed.read_bytes()
    raw = bytearray(good)
    raw[-100] ^= 1  # in the last chunk
    sealed.write_bytes(bytes(raw))
    with pytest.raises(VerificationError, match="does not authenticate"):
        do_open(bob, sealed, tmp_path / "out.csv", resource, owner)
    assert not (tmp_path / "out.csv").exists()
    for at in (-65, -33, -1):  # r, s and v of the owner's signature
        raw = bytearray(good)
        raw[at] ^= 1
        sealed.write_bytes(bytes(raw))
        with pytest.raises(SignatureError):
            do_open(bob, sealed, tmp_path / "out.csv", resource, owner)
    for cut in (1, 65):  # the signature cut short, or gone
        sealed.write_bytes(good[:-cut])
        with pytest.raises(VerificationError):
            do_open(bob, sealed, tmp_path / "out.csv", resource, owner)
    assert not (tmp_path / "out.csv").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


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
            owner=account(owner),
            unsafe_allow_older=True,  # "before" is opened after "after" here
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


# The attacks of issue 11 (item 3): a grantee's X25519 key is public on chain, so anyone can
# wrap a data key for it; what only the owner can do is sign.


def _sealed_by_owner(owner: Party, path: Path, resource: bytes, tmp_path: Path) -> Path:
    sealed = tmp_path / "genuine.sealed"
    do_seal(owner, path, sealed, resource)
    return sealed


class _Impostor:
    """Claims ``name``'s address, signs with ``key``'s account."""

    def __init__(self, name: str, key: Party) -> None:
        self.address = name
        self._signer = key.ws.signer(passphrase)

    def sign_digest(self, digest: bytes) -> bytes:
        return self._signer.sign_digest(digest)


def test_content_sealed_by_an_attacker_for_the_grantees_key_is_refused(
    parties: tuple[Party, Party, Party], shared: tuple[Path, bytes], tmp_path: Path
) -> None:
    owner, bob, mallory = parties
    path, resource = shared
    grant(owner.ws, owner.ledger, resource, x25519(bob))
    # Mallory copies the binding (resource, registry, chain, a fresh version) of a genuine
    # file and wraps a data key for bob's public key (read from the chain's grants).
    binding = envelope.read_header(_sealed_by_owner(owner, path, resource, tmp_path)).context
    fake = tmp_path / "fake.csv"
    fake.write_bytes(b"patient,diagnosis\n1,none: send your records to mallory\n")
    bob_key = next(g.recipient for g in grants(owner.ws, owner.ledger, resource))

    as_herself = tmp_path / "as-herself.sealed"
    mallory_signer = mallory.ws.signer(passphrase)
    envelope.seal(fake, as_herself, [bob_key], signer=mallory_signer, context=binding)
    with pytest.raises(NotEntitled, match=f"sealed by {account(mallory)}, who may not write"):
        do_open(bob, as_herself, tmp_path / "out.csv", resource, owner)

    as_owner = tmp_path / "as-owner.sealed"
    impostor = _Impostor(account(owner), mallory)
    envelope.seal(fake, as_owner, [bob_key], signer=impostor, context=binding)
    with pytest.raises(SignatureError, match="not signed by its sender"):
        do_open(bob, as_owner, tmp_path / "out.csv", resource, owner)

    out = io.BytesIO()
    with pytest.raises(SignatureError):
        open_stream(
            bob.ws,
            bob.ledger,
            io.BytesIO(as_owner.read_bytes()),
            out,
            resource=resource,
            passphrase=passphrase,
            owner=account(owner),
        )
    assert not (tmp_path / "out.csv").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_the_attackers_own_registration_of_the_digest_is_another_resource(
    parties: tuple[Party, Party, Party], shared: tuple[Path, bytes], tmp_path: Path
) -> None:
    owner, bob, mallory = parties
    path, resource = shared
    grant(owner.ws, owner.ledger, resource, x25519(bob))
    # Mallory registers the same digest as hers, grants bob and seals her content under it:
    # a resource is an owner's registration, and bob asked for the owner's.
    register_artifact(mallory.ws, mallory.ledger, path, kind="dataset", signing_key=mallory.key)
    grant(mallory.ws, mallory.ledger, resource, x25519(bob))
    fake = tmp_path / "fake.csv"
    fake.write_bytes(b"forged")
    sealed = tmp_path / "mallory.sealed"
    do_seal(mallory, fake, sealed, resource)
    with pytest.raises(WrongResource, match=f"of {account(mallory)}'s 0x{resource.hex()}"):
        do_open(bob, sealed, tmp_path / "out.csv", resource, owner)
    opened = do_open(bob, sealed, tmp_path / "out.csv", resource, mallory)
    assert (opened.owner, opened.sender) == (account(mallory), account(mallory))


def test_a_file_sealed_for_resource_a_does_not_open_as_resource_b(
    parties: tuple[Party, Party, Party], shared: tuple[Path, bytes], tmp_path: Path
) -> None:
    owner, bob, _ = parties
    path_a, resource_a = shared
    path_b = tmp_path / "other.csv"
    path_b.write_bytes(b"another dataset\n")
    resource_b = register_artifact(
        owner.ws, owner.ledger, path_b, kind="dataset", signing_key=owner.key
    ).digest
    for resource in (resource_a, resource_b):
        grant(owner.ws, owner.ledger, resource, x25519(bob))
    sealed_a = tmp_path / "a.sealed"
    do_seal(owner, path_a, sealed_a, resource_a)
    with pytest.raises(WrongResource, match=f"0x{resource_a.hex()}, not of"):
        do_open(bob, sealed_a, tmp_path / "out.csv", resource_b, owner)
    with pytest.raises(WrongResource):
        do_open(owner, sealed_a, tmp_path / "out.csv", resource_b)
    assert not (tmp_path / "out.csv").exists()
    assert do_open(bob, sealed_a, tmp_path / "out.csv", resource_a, owner).resource == resource_a


def test_a_replayed_older_version_is_refused_unless_allowed(
    parties: tuple[Party, Party, Party], shared: tuple[Path, bytes], tmp_path: Path
) -> None:
    owner, bob, _ = parties
    path, resource = shared
    grant(owner.ws, owner.ledger, resource, x25519(bob))
    old, new = tmp_path / "old.sealed", tmp_path / "new.sealed"
    first = seal(owner.ws, owner.ledger, path, old, resource=resource, passphrase=passphrase)
    path.write_bytes(SECRET + b"3,mumps\n")
    second = seal(owner.ws, owner.ledger, path, new, resource=resource, passphrase=passphrase)
    assert second.version > first.version
    assert second.version.block >= first.version.block

    out = tmp_path / "out.csv"
    opened = do_open(bob, new, out, resource, owner)
    assert (opened.version, opened.first) == (second.version, True)
    assert opened.to_json()["first_opened_here"] is True
    with pytest.raises(OlderVersion, match=f"version {first.version} .* older than version"):
        do_open(bob, old, out, resource, owner)
    assert out.read_bytes() == SECRET + b"3,mumps\n"  # the refused replay wrote nothing
    replayed = do_open(bob, old, out, resource, owner, unsafe_allow_older=True)
    assert (replayed.version, replayed.older) == (first.version, True)
    assert out.read_bytes() == SECRET
    with pytest.raises(OlderVersion):  # the unsafe open did not lower the bar
        do_open(bob, old, out, resource, owner)
    again = do_open(bob, new, out, resource, owner)  # the same version opens again
    assert (again.version, again.older, again.first) == (second.version, False, False)

    book = bob.ws.path / "sharing" / "versions.json"
    assert stat.S_IMODE(book.stat().st_mode) == 0o600
    assert stat.S_IMODE(book.parent.stat().st_mode) == 0o700


def test_versions_increase_within_a_block_and_across_workspaces_state(
    parties: tuple[Party, Party, Party], shared: tuple[Path, bytes], tmp_path: Path
) -> None:
    owner = parties[0]
    path, resource = shared
    versions = [
        seal(
            owner.ws,
            owner.ledger,
            path,
            tmp_path / f"{i}.s",
            resource=resource,
            passphrase=passphrase,
        ).version
        for i in range(3)
    ]
    assert versions == sorted(set(versions))
    head = owner.ledger.block_number()
    assert all(v.block <= head for v in versions)
    assert versions[0] == Version(versions[0].block, versions[0].counter)


def test_a_corrupt_version_book_is_a_clear_error(
    parties: tuple[Party, Party, Party], shared: tuple[Path, bytes], tmp_path: Path
) -> None:
    from ailedger.errors import WorkspaceError

    owner = parties[0]
    path, resource = shared
    book = owner.ws.path / "sharing" / "versions.json"
    book.parent.mkdir(mode=0o700)
    book.write_text('{"sealed": {"k": [1, "x"]}, "opened": {}}')
    with pytest.raises(WorkspaceError, match="malformed version"):
        do_seal(owner, path, tmp_path / "s", resource)
    book.write_text("[" * 100_000)
    with pytest.raises(WorkspaceError, match="nested deeper"):
        do_seal(owner, path, tmp_path / "s", resource)
    assert not (tmp_path / "s").exists()


def test_only_the_owner_seals(
    parties: tuple[Party, Party, Party], shared: tuple[Path, bytes], tmp_path: Path
) -> None:
    owner, bob, _ = parties
    path, resource = shared
    grant(owner.ws, owner.ledger, resource, x25519(bob))
    with pytest.raises(InputError, match="not registered by this workspace's account"):
        do_seal(bob, path, tmp_path / "s", resource)
    assert not (tmp_path / "s").exists()
