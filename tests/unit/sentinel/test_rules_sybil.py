"""Sybil fan-out/fan-in laundering in its several shapes, and what must stay quiet."""

from __future__ import annotations

from ailedger.sentinel.detectors import Alert
from tests.unit.sentinel.test_features import Tx, addr, approval_event, transfer_event
from tests.unit.sentinel.test_rules import (
    SEL_APPROVE,
    SEL_TRANSFER,
    SEL_TRANSFER_FROM,
    Harness,
    reasons,
)

MAX = 2**256 - 1


def _classes(alerts: list[Alert]) -> set[str]:
    return {a.attack_class for a in alerts}


def test_tokens_before_gas_money_in_one_block_still_make_fresh_addresses() -> None:
    h = Harness()
    token, source, collector = addr("t-first"), addr("src-tf"), addr("coll-tf")
    sybils = [addr(f"tf{k}") for k in range(3)]
    # the token transfers land before the ETH in the same block: the addresses are first seen
    # as token recipients, then get their gas money
    h.run(
        [
            Tx(source, token, input=SEL_TRANSFER, events=[transfer_event(token, source, s, 10**20)])
            for s in sybils
        ]
        + [Tx(source, s, value=10**17) for s in sybils]
    )
    funding = {r.tx for r in h.rows}
    alerts = h.run(
        [
            Tx(s, token, input=SEL_TRANSFER, events=[transfer_event(token, s, collector, 10**20)])
            for s in sybils
        ]
    )
    assert _classes(alerts) == {"sybil_laundering"}
    assert {a.tx for a in alerts} == funding | {r.tx for r in h.rows[-3:]}
    why = reasons(alerts[-1])
    assert why["source"] == source.lower() and why["collector"] == collector.lower()
    assert why["sybils"] == 3


def test_collector_pulling_with_transfer_from_is_sybil_not_approval_drain() -> None:
    h = Harness()
    token, source, collector = addr("t-pull"), addr("src-pull"), addr("coll-pull")
    sybils = [addr(f"pull{k}") for k in range(4)]
    h.run([Tx(source, s, value=10**17) for s in [*sybils, collector]])
    h.run(
        [
            Tx(source, token, input=SEL_TRANSFER, events=[transfer_event(token, source, s, 10**20)])
            for s in sybils
        ]
    )
    alerts = h.run(
        [
            Tx(s, token, input=SEL_APPROVE, events=[approval_event(token, s, collector, MAX)])
            for s in sybils
        ]
    )
    alerts += h.run(
        [
            Tx(
                collector,
                token,
                input=SEL_TRANSFER_FROM,
                events=[transfer_event(token, s, collector, 10**20)],
            )
            for s in sybils
        ]
    )
    assert _classes(alerts) == {"sybil_laundering"}
    pulls = {r.tx for r in h.rows[-4:]}
    assert pulls <= {a.tx for a in alerts}
    # the collector's own gas money (same source) belongs to the incident too
    assert h.rows[4].tx in {a.tx for a in alerts}


def test_ether_fanned_out_and_back_in_is_flagged() -> None:
    h = Harness()
    source, collector = addr("src-eth"), addr("coll-eth")
    sybils = [addr(f"eth{k}") for k in range(3)]
    h.run([Tx(source, s, value=2 * 10**18) for s in sybils])
    alerts = h.run([Tx(s, collector, value=19 * 10**17) for s in sybils])
    assert _classes(alerts) == {"sybil_laundering"}
    assert len({a.tx for a in alerts}) == 6


def test_customers_of_one_funder_paying_one_merchant_after_ordinary_use_are_quiet() -> None:
    """An exchange funds new users, who use their accounts, then pay the same shop: only an
    address's first few transactions after funding can be a Sybil's collection."""
    h = Harness()
    exchange, shop = addr("exchange"), addr("shop")
    users = [addr(f"user-x{k}") for k in range(3)]
    h.run([Tx(exchange, u, value=10**18) for u in users])
    for k in range(5):
        h.run([Tx(u, addr(f"friend{k}-{u}"), value=10**15) for u in users])
    assert h.run([Tx(u, shop, value=10**17) for u in users]) == []


def test_established_accounts_paying_one_collector_are_not_sybils() -> None:
    h = Harness()
    token, collector = addr("t-est"), addr("coll-est")
    olds = [addr(f"old{k}") for k in range(4)]
    h.run([Tx(o, addr("somewhere"), value=10**15) for o in olds])  # known before any funding
    h.run([Tx(addr("src-est"), o, value=10**17) for o in olds])
    alerts = h.run(
        [
            Tx(o, token, input=SEL_TRANSFER, events=[transfer_event(token, o, collector, 10**20)])
            for o in olds
        ]
    )
    assert alerts == []


def test_retract_forgets_token_first_recipients() -> None:
    h = Harness()
    token, source = addr("t-ret"), addr("src-ret")
    h.run(
        [
            Tx(
                source,
                token,
                input=SEL_TRANSFER,
                events=[transfer_event(token, source, addr("ret0"), 10**20)],
            )
        ]
    )
    assert h.rules.state_size == 1
    h.rules.retract(h.chain.number - 1)
    assert h.rules.state_size == 0


def test_new_holder_who_used_the_address_before_approving_is_drained_not_a_sybil() -> None:
    # the demo's story: newly funded holders pay someone, then approve a phisher who empties them
    h = Harness()
    token, funder, drainer, friend = addr("t-new"), addr("src-new"), addr("drn-new"), addr("fr")
    victims = [addr(f"new{k}") for k in range(2)]
    h.run([Tx(funder, v, value=10**17) for v in [*victims, drainer]])
    h.run(
        [
            Tx(funder, token, input=SEL_TRANSFER, events=[transfer_event(token, funder, v, 10**21)])
            for v in victims
        ]
    )
    h.run(
        [
            Tx(v, token, input=SEL_TRANSFER, events=[transfer_event(token, v, friend, 10**18)])
            for v in victims
        ]
    )
    h.run(
        [
            Tx(v, token, input=SEL_APPROVE, events=[approval_event(token, v, drainer, MAX)])
            for v in victims
        ]
    )
    alerts = h.run(
        [
            Tx(
                drainer,
                token,
                input=SEL_TRANSFER_FROM,
                events=[transfer_event(token, v, drainer, 10**20)],
            )
            for v in victims
        ]
    )
    assert "approval_drain" in _classes(alerts)
    assert all(drainer.lower() in a.accounts for a in alerts if a.attack_class == "approval_drain")
