"""The ProvenanceRegistry contract binds every registration and grant to its registrant, on both
backends (the embedded chain and a real anvil node)."""

from __future__ import annotations

import hashlib

import pytest

from ailedger.errors import InputError, TransactionReverted
from ailedger.ledger.provenance import (
    AlreadyRegistered,
    NotOwner,
    ProvenanceRegistry,
    UnknownParent,
    parse_address,
)
from tests.conftest import Chain, new_signer


def h(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def three(chain: Chain) -> tuple[ProvenanceRegistry, ProvenanceRegistry, ProvenanceRegistry]:
    """The same registry seen by a victim, an attacker and a third party."""
    victim = ProvenanceRegistry.deploy(chain.ledger(new_signer()))
    attacker = ProvenanceRegistry(ledger=chain.ledger(new_signer()), address=victim.address)
    other = ProvenanceRegistry(ledger=chain.ledger(new_signer()), address=victim.address)
    return victim, attacker, other


def test_a_digest_registered_first_by_an_attacker_is_still_the_victims_to_register(
    chain: Chain,
) -> None:
    victim, attacker, _ = three(chain)
    v, a = victim.ledger.account, attacker.ledger.account
    digest = h("the victim's model")
    attacker.register(digest, 2, h("attacker's statement"))
    # squatting no longer blocks the victim: each account registers under its own name
    victim.register(digest, 2, h("victim's statement"))
    mine, theirs = victim.registration(v, digest), victim.registration(a, digest)
    assert mine is not None and theirs is not None
    assert (mine.owner, mine.statement_digest) == (v, h("victim's statement"))
    assert (theirs.owner, theirs.statement_digest) == (a, h("attacker's statement"))
    assert victim.registrants(digest) == [a, v]
    assert victim.count() == 2
    with pytest.raises(AlreadyRegistered, match=f"by this account {v}"):
        victim.register(digest, 2, h("again"))
    # the contract itself refuses a second registration by the same account
    call = victim._contract.functions.register(digest, 1, h("again"), [])
    with pytest.raises(TransactionReverted, match="digest already registered"):
        victim.ledger.transact(call)


def test_only_the_registrant_grants_and_revokes_its_registration(chain: Chain) -> None:
    victim, attacker, other = three(chain)
    v, a = victim.ledger.account, attacker.ledger.account
    digest, bob, eve = h("dataset"), h("bob's x25519 key"), h("eve's x25519 key")
    victim.register(digest, 1, h("statement"))

    # without a registration of its own, the attacker is refused before anything is sent
    with pytest.raises(NotOwner, match=f"registered by {v}, not by this account {a}"):
        attacker.grant(digest, eve)
    with pytest.raises(NotOwner, match="only the owner may revoke"):
        attacker.revoke(digest, bob)
    # and the contract refuses it too: grant acts on the caller's own registration only
    with pytest.raises(TransactionReverted, match="digest not registered"):
        attacker.ledger.transact(attacker._contract.functions.grant(digest, eve))

    victim.grant(digest, bob)
    # an attacker's own registration of the same digest has grants of its own, not the victim's
    attacker.register(digest, 1, h("squatted"))
    attacker.grant(digest, eve)
    with pytest.raises(InputError, match="no live grant"):
        attacker.revoke(digest, bob)
    assert victim.is_granted(v, digest, bob)
    assert not victim.is_granted(v, digest, eve)
    assert victim.is_granted(a, digest, eve)
    assert [g.recipient for g in victim.grants(v, digest)] == [bob]
    assert [g.recipient for g in victim.grants(a, digest)] == [eve]
    assert other.grants(other.ledger.account, digest) == []

    receipt = victim.revoke(digest, bob)
    state = other.grant_of(v, digest, bob)
    assert (state.owner, state.revoked_block, state.live) == (v, receipt.block_number, False)
    assert other.is_granted(a, digest, eve)
    with pytest.raises(NotOwner, match="only the owner may grant"):
        other.grant(digest, bob)
    with pytest.raises(InputError, match="is not registered by this account"):
        other.grant(h("registered by nobody"), bob)


def test_parents_are_registrant_digest_pairs_across_accounts(chain: Chain) -> None:
    org_a, org_b, attacker = three(chain)
    a, b, m = org_a.ledger.account, org_b.ledger.account, attacker.ledger.account
    data, model = h("org A's dataset"), h("org B's model")
    org_a.register(data, 1, h("A's statement"))
    with pytest.raises(UnknownParent, match=f"not registered by {m}"):
        org_b.register(model, 2, h("B's statement"), [(m, data)])
    org_b.register(model, 2, h("B's statement"), [(a.lower(), data)])
    record = org_b.registration(b, model)
    assert record is not None
    assert record.parents == ((a, data),)
    assert org_b.children(a, data) == [(b, model)]
    assert org_b.children(m, data) == []
    with pytest.raises(InputError, match="listed twice"):
        org_b.register(h("other"), 2, h("s"), [(a, data), (a.lower(), data)])
    with pytest.raises(InputError, match="Ethereum address"):
        org_b.register(h("other"), 2, h("s"), [("0x1234", data)])
    call = org_b._contract.functions.register(h("x"), 2, h("s"), [(m, data)])
    with pytest.raises(TransactionReverted, match="parent not registered"):
        org_b.ledger.transact(call)


@pytest.mark.parametrize("backend", ["embedded"])
def test_parse_address_checks_form_and_checksum(chain: Chain) -> None:
    account = chain.ledger(new_signer()).account
    assert parse_address(account.lower()) == account
    for bad in ["0x12", account[2:] + "00", account[:-1] + "g"]:
        with pytest.raises(InputError, match="Ethereum address"):
            parse_address(bad)
    assert parse_address("0x" + account[2:].upper()) == account
    body = account[2:]
    if body not in (body.lower(), body.upper()):  # a mixed-case address is its own checksum
        with pytest.raises(InputError, match="wrong EIP-55 checksum"):
            parse_address("0x" + body.swapcase())
