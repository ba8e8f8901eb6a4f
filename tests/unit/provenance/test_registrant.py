"""Registrations are bound to their registrant: a squatter who registers a victim's digest first
gains nothing, on both backends (issue 11, item 2)."""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from ailedger.crypto import envelope
from ailedger.crypto.canonical import canonical_json
from ailedger.errors import InputError, VerificationError
from ailedger.ledger.provenance import UnknownParent
from ailedger.provenance.digest import digest_artifact
from ailedger.provenance.dsse import sign_statement
from ailedger.provenance.lineage import lineage, render_tree
from ailedger.provenance.loading import load_verified
from ailedger.provenance.registry import (
    REGISTRANT_ANNOTATION,
    RegisteredByOther,
    import_statement,
    parse_parent,
    register_artifact,
    verify_artifact,
)
from ailedger.provenance.sharing import grant, grants, revoke, sharing_public_key
from tests.unit.provenance.conftest import Party, passphrase


class Trap:
    """Unpickling it creates the folder ``marker``: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


@pytest.fixture
def orgs(make_party: Callable[[str], Party]) -> tuple[Party, Party, Party]:
    """A victim, an attacker and a partner of the victim's, on one registry."""
    return make_party("victim"), make_party("mallory"), make_party("bob")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "records.csv"
    path.write_text("patient,diagnosis\n1,flu\n")
    return path


def x25519(party: Party) -> bytes:
    return envelope.dump_public_key(sharing_public_key(party.ws, passphrase), encoding="raw")


def test_the_victim_registers_grants_and_verifies_after_a_squatter(
    orgs: tuple[Party, Party, Party], dataset: Path
) -> None:
    victim, mallory, bob = orgs
    # the attack: mallory registers the victim's digest first, with her own signed statement
    squat = register_artifact(
        mallory.ws, mallory.ledger, dataset, kind="dataset", signing_key=mallory.key
    )
    reg = register_artifact(
        victim.ws, victim.ledger, dataset, kind="dataset", signing_key=victim.key
    )
    assert reg.digest == squat.digest
    assert (reg.owner, squat.owner) == (victim.ledger.account, mallory.ledger.account)

    grant(victim.ws, victim.ledger, reg.digest, x25519(bob))
    # mallory's grants act on her own registration only; she cannot revoke the victim's
    grant(mallory.ws, mallory.ledger, reg.digest, x25519(mallory))
    with pytest.raises(InputError, match="no live grant"):
        revoke(mallory.ws, mallory.ledger, reg.digest, x25519(bob))
    for party in (victim, bob):
        seen = grants(party.ws, party.ledger, reg.digest, owner=victim.ledger.account)
        assert [(g.recipient, g.live) for g in seen] == [(x25519(bob), True)]
    assert [g.recipient for g in grants(victim.ws, victim.ledger, reg.digest)] == [x25519(bob)]
    assert victim.registry.is_granted(victim.ledger.account, reg.digest, x25519(bob))
    assert not victim.registry.is_granted(victim.ledger.account, reg.digest, x25519(mallory))

    ok = verify_artifact(victim.ws, victim.ledger, dataset, trusted_keys=[victim.key.public_key()])
    assert ok.registration == reg
    # even a verifier that also trusts mallory's key checks the victim's registration
    both = [victim.key.public_key(), mallory.key.public_key()]
    ok = verify_artifact(victim.ws, victim.ledger, dataset, trusted_keys=both)
    assert ok.registration.owner == victim.ledger.account


def test_load_verified_never_accepts_the_attackers_registration(
    orgs: tuple[Party, Party, Party], tmp_path: Path
) -> None:
    victim, mallory, _ = orgs
    marker = tmp_path / "unpickled"
    trojan = tmp_path / "model.pkl"
    trojan.write_bytes(pickle.dumps(Trap(marker)))
    squat = register_artifact(
        mallory.ws, mallory.ledger, trojan, kind="model", signing_key=mallory.key
    )
    # mallory's statement in the victim's blobs too, as if handed over with the file
    import_statement(victim.ws, (mallory.ws.blobs_dir / squat.statement_digest.hex()).read_bytes())
    trusting_both = [victim.key.public_key(), mallory.key.public_key()]
    for kwargs in ({}, {"registrant": victim.ledger.account}, {"expected": squat.digest}):
        with pytest.raises(RegisteredByOther) as info:
            load_verified(
                trojan,
                trusted_keys=trusting_both,
                workspace=victim.ws,
                ledger=victim.ledger,
                **kwargs,  # type: ignore[arg-type]
            )
        message = str(info.value)
        assert mallory.ledger.account in message
        assert victim.ledger.account in message
        assert "\n" not in message
        assert not marker.exists()


def test_a_copied_statement_does_not_bind_to_another_registrant(
    orgs: tuple[Party, Party, Party], tmp_path: Path
) -> None:
    victim, mallory, bob = orgs
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights" * 300)
    reg = register_artifact(victim.ws, victim.ledger, model, kind="model", signing_key=victim.key)
    blob = (victim.ws.blobs_dir / reg.statement_digest.hex()).read_bytes()
    # mallory registers the digest with the victim's own signed statement under her name
    mallory.registry.register(reg.digest, 2, reg.statement_digest)

    # bob, a partner, verifies the victim's model with the victim's key and statement
    assert import_statement(bob.ws, blob) == reg.statement_digest
    trusted = [victim.key.public_key()]
    ok = verify_artifact(
        bob.ws, bob.ledger, model, trusted_keys=trusted, registrant=victim.ledger.account
    )
    assert ok.registration == reg
    with pytest.raises(VerificationError, match="names registrant") as info:
        verify_artifact(
            bob.ws, bob.ledger, model, trusted_keys=trusted, registrant=mallory.ledger.account
        )
    assert victim.ledger.account in str(info.value)
    assert mallory.ledger.account in str(info.value)
    # without --registrant, bob trusts his own account, which registered nothing
    with pytest.raises(
        RegisteredByOther, match=f"not by the trusted registrant {bob.ledger.account}"
    ):
        verify_artifact(bob.ws, bob.ledger, model, trusted_keys=trusted)


def test_a_statement_naming_no_or_another_registrant_is_refused(
    orgs: tuple[Party, Party, Party], tmp_path: Path
) -> None:
    victim, mallory, _ = orgs
    trusted = [victim.key.public_key()]
    cases = [(None, "names no registrant"), (mallory.ledger.account, "names registrant")]
    for i, (named, expect) in enumerate(cases):
        model = tmp_path / f"model{i}.bin"
        model.write_bytes(b"weights" * (300 + i))
        manifest = digest_artifact(model)
        statement = manifest.to_statement()
        if named is not None:
            statement["subject"][0]["annotations"] = {REGISTRANT_ANNOTATION: named}
        blob = canonical_json(sign_statement(statement, victim.key))
        statement_digest = import_statement(victim.ws, blob)
        victim.registry.register(bytes.fromhex(manifest.root_digest), 2, statement_digest)
        with pytest.raises(VerificationError, match=expect) as info:
            verify_artifact(victim.ws, victim.ledger, model, trusted_keys=trusted)
        assert victim.ledger.account in str(info.value)
        assert named is None or named in str(info.value)


def test_lineage_crosses_organisations_and_ignores_squatters(
    orgs: tuple[Party, Party, Party], dataset: Path, tmp_path: Path
) -> None:
    org_a, mallory, org_b = orgs
    data = register_artifact(org_a.ws, org_a.ledger, dataset, kind="dataset", signing_key=org_a.key)
    register_artifact(mallory.ws, mallory.ledger, dataset, kind="dataset", signing_key=mallory.key)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x07" * 512)
    with pytest.raises(UnknownParent, match=f"not registered by {org_b.ledger.account}"):
        register_artifact(
            org_b.ws,
            org_b.ledger,
            weights,
            kind="model",
            signing_key=org_b.key,
            parents=[data.digest],
        )
    model = register_artifact(
        org_b.ws, org_b.ledger, weights, kind="model", signing_key=org_b.key, parents=[data.ref]
    )
    assert model.parents == (data.ref,)

    graph = lineage(org_b.ws, org_b.ledger, model.digest)
    assert graph.root == model.ref
    assert set(graph.nodes) == {model.ref, data.ref}
    assert graph.edges() == [(data.ref, model.ref)]
    assert graph.names == {model.ref: "weights.bin"}  # org A's statement is not here yet
    import_statement(org_b.ws, (org_a.ws.blobs_dir / data.statement_digest.hex()).read_bytes())
    graph = lineage(org_b.ws, org_b.ledger, model.digest)
    assert graph.names[data.ref] == "records.csv"
    assert f"by {org_a.ledger.account}" in render_tree(graph)
    # the children of org A's dataset are org B's model, not anything of mallory's
    assert lineage(org_a.ws, org_a.ledger, data.digest).children == (model.ref,)
    assert lineage(org_b.ws, org_b.ledger, data.digest, owner=mallory.ledger.account).children == ()
    with pytest.raises(RegisteredByOther, match=mallory.ledger.account):
        lineage(org_b.ws, org_b.ledger, data.digest)


@pytest.mark.parametrize("backend", ["embedded"])
def test_parse_parent_names_a_registrant_or_defaults_to_ours(alice: Party) -> None:
    own = alice.ledger.account
    digest = hashlib.sha256(b"x").digest()
    assert parse_parent(digest.hex(), own) == (own, digest)
    other = "0x" + "ab" * 20
    assert parse_parent(f"{other}:0x{digest.hex()}", own)[1] == digest
    assert parse_parent(f"{other}:0x{digest.hex()}", own)[0].lower() == other
    for bad in [
        "0x12:" + digest.hex(),
        f"{other}:",
        f"{other}:{digest.hex()}:x",
        ":" + digest.hex(),
    ]:
        with pytest.raises(InputError):
            parse_parent(bad, own)
