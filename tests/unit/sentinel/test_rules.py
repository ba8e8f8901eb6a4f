"""Rule detectors on hand-built blocks: each attack flagged with its class and reasons, and the
benign look-alikes of each attack left alone."""

from __future__ import annotations

import pytest

from ailedger.errors import InputError
from ailedger.sentinel.detectors import Alert, primary_alert
from ailedger.sentinel.features import FeatureExtractor, FeatureRow
from ailedger.sentinel.rules import RuleEngine, find_sandwiches
from tests.unit.sentinel.test_features import (
    ChainBuilder,
    Pool,
    Tx,
    addr,
    approval_event,
    transfer_event,
)

SEL_TRANSFER = bytes.fromhex("a9059cbb")
SEL_TRANSFER_FROM = bytes.fromhex("23b872dd")
SEL_APPROVE = bytes.fromhex("095ea7b3")


class Harness:
    def __init__(self) -> None:
        self.chain = ChainBuilder()
        self.features = FeatureExtractor()
        self.rules = RuleEngine()
        self.rows: list[FeatureRow] = []

    def run(self, txs: list[Tx], **kwargs: int) -> list[Alert]:
        rows = self.features.process(self.chain.block(txs, **kwargs))
        self.rows.extend(rows)
        return self.rules.scan(rows)


def reasons(alert: Alert) -> dict[str, object]:
    return {r.feature: r.value for r in alert.reasons}


# ----------------------------------------------------------------------------------- sandwich


def test_sandwich_flags_the_incident_with_reasons() -> None:
    h = Harness()
    pool = Pool(addr("pool"), addr("t0"), addr("t1"))
    bot, victim, bystander = addr("bot"), addr("victim"), addr("bystander")
    txs = [
        Tx(bystander, addr("x"), value=1),
        pool.swap(bot, True, 5 * 10**21),
        pool.swap(victim, True, 10**21),
        pool.swap(bot, False, 4 * 10**21),
    ]
    alerts = h.run(txs)
    front, victim_row, back = h.rows[1], h.rows[2], h.rows[3]
    roles = {a.tx: reasons(a)["role"] for a in alerts}
    assert roles == {front.tx: "front-run", victim_row.tx: "victim", back.tx: "back-run"}
    for alert in alerts:
        assert alert.attack_class == "sandwich" and alert.flagged and alert.detector == "rules"
        why = reasons(alert)
        assert why["sandwicher"] == bot.lower()
        assert why["pool"] == pool.address.lower()
        assert why["frontrun_tx"] == front.tx and why["backrun_tx"] == back.tx
        assert why["victim_txs"] == victim_row.tx
        assert alert.accounts == (bot.lower(),)  # the victim is named in reasons, not blamed
        assert set(alert.related) == {front.tx, victim_row.tx, back.tx}


def split_swap(swap: Tx) -> list[Tx]:
    """A pair paid in one transaction and called in the next (no router), as scenarios do."""
    pay = Tx(
        swap.sender, swap.events[0][0], input=bytes.fromhex("a9059cbb"), events=swap.events[:1]
    )
    return [
        pay,
        Tx(swap.sender, swap.to, input=swap.input, events=swap.events[1:], gas_used=90_000),
    ]


def test_sandwich_of_paid_then_called_swaps_flags_the_payments_too() -> None:
    h = Harness()
    pool = Pool(addr("pool"), addr("t0"), addr("t1"))
    bot, victim = addr("bot"), addr("victim")
    txs = [
        *split_swap(pool.swap(bot, False, 3 * 10**21)),
        *split_swap(pool.swap(victim, False, 10**21)),
        *split_swap(pool.swap(bot, True, 2 * 10**21)),
    ]
    alerts = h.run(txs)
    assert {a.tx for a in alerts} == {r.tx for r in h.rows}
    roles = sorted(str(reasons(a)["role"]) for a in alerts)
    assert roles == sorted(
        [
            "front-run",
            "front-run payment",
            "victim",
            "victim payment",
            "back-run",
            "back-run payment",
        ]
    )


def test_buy_then_sell_without_a_victim_is_not_a_sandwich() -> None:
    h = Harness()
    pool = Pool(addr("pool"), addr("t0"), addr("t1"))
    trader = addr("trader")
    assert h.run([pool.swap(trader, True, 10**21), pool.swap(trader, False, 10**21)]) == []
    # someone in between but trading the other way is no victim either (mev-inspect-py)
    other = addr("other")
    assert (
        h.run(
            [
                pool.swap(trader, True, 10**21),
                pool.swap(other, False, 10**20),
                pool.swap(trader, False, 10**21),
            ]
        )
        == []
    )
    # nor is a victim in another pool
    pool2 = Pool(addr("pool2"), addr("t0"), addr("t1"))
    assert (
        h.run(
            [
                pool.swap(trader, True, 10**21),
                pool2.swap(other, True, 10**20),
                pool.swap(trader, False, 10**21),
            ]
        )
        == []
    )


def test_find_sandwiches_skips_router_recipients() -> None:
    h = Harness()
    pool = Pool(addr("pool"), addr("t0"), addr("t1"))
    router = "0x7a250d5630B4cF539739dF2C5dAcb4c659F2488D"
    rows = h.features.process(
        h.chain.block(
            [
                pool.swap(router, True, 10**21),
                pool.swap(addr("v"), True, 10**20),
                pool.swap(router, False, 10**21),
            ]
        )
    )
    assert find_sandwiches(rows) == []
    assert len(find_sandwiches(rows, routers=frozenset())) == 1


# ---------------------------------------------------------------------------------- poisoning


def test_address_poisoning_flagged_and_real_counterparty_not() -> None:
    h = Harness()
    token = addr("usdt")
    victim = addr("victim")
    friend = addr("friend", prefix="a1b2", suffix="c3d4")
    impostor = addr("impostor", prefix="a1b2", suffix="c3d4")
    transfer = bytes.fromhex("a9059cbb")
    # the victim pays a real counterparty
    assert (
        h.run(
            [
                Tx(
                    victim,
                    token,
                    input=transfer,
                    events=[transfer_event(token, victim, friend, 10**9)],
                )
            ]
        )
        == []
    )
    # the real counterparty sends dust back: benign
    assert h.run([Tx(friend, victim, value=1)]) == []
    # the impostor sends a zero-value token transfer to the victim
    alerts = h.run(
        [
            Tx(
                impostor,
                token,
                input=SEL_TRANSFER,
                events=[transfer_event(token, impostor, victim, 0)],
            )
        ]
    )
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.attack_class == "address_poisoning"
    why = reasons(alert)
    assert why["impostor"] == impostor.lower()
    assert why["resembles"] == friend.lower()
    assert why["victim"] == victim.lower()
    assert why["amount"] == 0
    # a look-alike paying the victim real money is not poisoning
    assert h.run([Tx(impostor, victim, value=10**18)]) == []
    # the victim paying the look-alike is the loss the poisoning was after
    loss = h.run(
        [
            Tx(
                victim,
                token,
                input=transfer,
                events=[transfer_event(token, victim, impostor, 10**18)],
            )
        ]
    )
    assert [(a.attack_class, reasons(a)["stage"]) for a in loss] == [("address_poisoning", "loss")]
    # and paying the real counterparty afterwards is still fine
    assert (
        h.run(
            [
                Tx(
                    victim,
                    token,
                    input=transfer,
                    events=[transfer_event(token, victim, friend, 10**9)],
                )
            ]
        )
        == []
    )


def test_fake_transfer_from_the_victim_to_a_lookalike_is_flagged() -> None:
    h = Harness()
    token = addr("usdc")
    victim, friend = addr("v2"), addr("f2", prefix="beef", suffix="0001")
    impostor = addr("i2", prefix="beef", suffix="0001")
    h.run([Tx(victim, friend, value=10**18)])
    # transferFrom(victim, impostor, 0), sent by the impostor: the Transfer log names the victim
    alerts = h.run(
        [
            Tx(
                impostor,
                token,
                input=SEL_TRANSFER_FROM,
                events=[transfer_event(token, victim, impostor, 0)],
            )
        ]
    )
    assert [a.attack_class for a in alerts] == ["address_poisoning"]


def test_zero_value_transfer_between_two_others_is_poisoning() -> None:
    h = Harness()
    token, caller, a, b = addr("tok"), addr("caller"), addr("a"), addr("b")
    alerts = h.run(
        [Tx(caller, token, input=SEL_TRANSFER_FROM, events=[transfer_event(token, a, b, 0)])]
    )
    assert [a.attack_class for a in alerts] == ["address_poisoning"]
    assert reasons(alerts[0])["caller"] == caller.lower()
    # a zero-value transfer of one's own tokens is not
    assert h.run([Tx(a, token, input=SEL_TRANSFER, events=[transfer_event(token, a, b, 0)])]) == []


# --------------------------------------------------------------------------------------- spam


def test_spam_flood_filling_a_block_is_flagged() -> None:
    h = Harness()
    target = addr("spam-target")
    spammers = [addr(f"spammer{k}") for k in range(3)]
    flood = [Tx(spammers[k % 3], target, value=0, gas_used=50_000) for k in range(40)]
    alerts = h.run([Tx(addr("user"), addr("shop"), value=10**18), *flood], gas_limit=2_100_000)
    assert len(alerts) == 40
    assert {a.attack_class for a in alerts} == {"spam_flood"}
    why = reasons(alerts[0])
    assert why["target"] == target.lower() or why["senders"] == "3 young accounts"
    assert why["distinct_senders"] == 3
    assert why["median_value_wei"] == 0


def test_flood_from_young_accounts_to_scattered_targets_is_flagged() -> None:
    h = Harness()
    master = addr("master")
    spammers = [addr(f"fresh{k}") for k in range(4)]
    h.run([Tx(master, s, value=10**18) for s in spammers])  # funding
    funding_txs = {r.tx for r in h.rows}
    users = [Tx(addr(f"u{k}"), addr(f"shop{k}"), value=10**17) for k in range(10)]
    flood = [Tx(spammers[k % 4], addr(f"sink{k}"), input=bytes(8)) for k in range(40)]
    alerts = h.run([*users, *flood])
    flood_txs = {r.tx for r in h.rows[-40:]}
    # the flood, and (fresh senders doing nothing) the funding that paid for it
    assert {a.tx for a in alerts} == flood_txs | funding_txs
    assert reasons(alerts[0])["senders"] == "4 young accounts"


def test_busy_popular_contract_is_not_a_flood() -> None:
    h = Harness()
    popular = addr("popular-dex")
    users = [addr(f"user{k}") for k in range(40)]
    h.run([Tx(u, addr("faucet"), value=1) for u in users])  # every user has history
    for _ in range(40):  # older than the rule's notion of young (32 blocks)
        h.run([])
    # 40 distinct, established users calling the same contract in one block
    assert h.run([Tx(u, popular, value=10**16) for u in users]) == []
    # many distinct users, zero value, but established accounts: still not a flood
    assert h.run([Tx(u, popular, value=0) for u in users]) == []


# ------------------------------------------------------------------------------ approval drain


def test_approval_drain_and_fan_out_laundering_flagged() -> None:
    h = Harness()
    token = addr("dai")
    victim, drainer = addr("dv"), addr("drainer")
    approve = h.run(
        [
            Tx(
                victim,
                token,
                input=SEL_APPROVE,
                events=[approval_event(token, victim, drainer, 2**256 - 1)],
            )
        ]
    )
    assert approve == []
    drain = h.run(
        [
            Tx(
                drainer,
                token,
                input=SEL_TRANSFER_FROM,
                events=[transfer_event(token, victim, drainer, 5 * 10**20)],
            )
        ]
    )
    assert [a.attack_class for a in drain] == ["approval_drain"] * 2
    stages = {reasons(a)["stage"]: a for a in drain}
    # the approval is flagged once the drain shows what it was for
    assert stages["preparation"].tx == h.rows[0].tx
    assert stages["preparation"].block == h.rows[0].block_number
    why = reasons(stages["exploitation"])
    assert why["stage"] == "exploitation"
    assert why["victim"] == victim.lower() and why["spender"] == drainer.lower()
    assert why["amount"] == 5 * 10**20
    drain_tx = stages["exploitation"].tx
    launder = []
    for k in range(4):
        mule = addr(f"mule{k}")
        launder += h.run(
            [
                Tx(
                    drainer,
                    token,
                    input=SEL_TRANSFER,
                    events=[transfer_event(token, drainer, mule, 10**20)],
                )
            ]
        )
    assert len(launder) == 4
    assert {a.attack_class for a in launder} == {"approval_drain"}
    assert all(reasons(a)["stage"] == "laundering" for a in launder)
    assert all(a.related == (drain_tx,) for a in launder)
    laundering_txs = {r.tx for r in h.rows[-4:]}
    assert {a.tx for a in launder} == laundering_txs


def test_drain_found_after_the_victim_approved_another_spender() -> None:
    # allowances are per spender: approving a router after the drainer does not hide the drain
    h = Harness()
    token = addr("dai")
    victim, drainer, router = addr("dv2"), addr("drainer2"), addr("router2")
    for spender in (drainer, router):
        h.run(
            [
                Tx(
                    victim,
                    token,
                    input=SEL_APPROVE,
                    events=[approval_event(token, victim, spender, 2**256 - 1)],
                )
            ]
        )
    drain = h.run(
        [
            Tx(
                drainer,
                token,
                input=SEL_TRANSFER_FROM,
                events=[transfer_event(token, victim, drainer, 7 * 10**20)],
            )
        ]
    )
    stages = {reasons(a)["stage"]: a for a in drain}
    assert set(stages) == {"preparation", "exploitation"}
    assert stages["preparation"].tx == h.rows[0].tx  # the drainer's approval, not the router's
    assert reasons(stages["exploitation"])["spender"] == drainer.lower()


def test_primary_alert_prefers_the_senders_own_act() -> None:
    attacker, bot = addr("pm-attacker"), addr("bot")
    as_victim = Alert("0x01", 5, 0.9, True, "sandwich", "rules", accounts=(bot.lower(),))
    own = Alert("0x01", 5, 0.8, True, "price_manipulation", "rules", accounts=(attacker.lower(),))
    assert primary_alert([as_victim, own], attacker) is own  # before a higher score
    assert primary_alert([as_victim, own], addr("nobody")) is as_victim  # else the score
    assert primary_alert([], attacker) is None


def test_ordinary_allowance_use_is_not_a_drain() -> None:
    h = Harness()
    token = addr("weth")
    owner, service = addr("owner"), addr("payroll")
    h.run([Tx(service, addr("somewhere"), value=1)])
    for _ in range(300):  # the spender is long established
        h.run([])
    h.run(
        [
            Tx(
                owner,
                token,
                input=SEL_APPROVE,
                events=[approval_event(token, owner, service, 10**20)],
            )
        ]
    )
    assert (
        h.run(
            [
                Tx(
                    service,
                    token,
                    input=SEL_TRANSFER_FROM,
                    events=[transfer_event(token, owner, service, 10**20)],
                )
            ]
        )
        == []
    )
    # the owner moving their own tokens after approving someone is not a drain either
    spender = addr("router")
    h.run(
        [
            Tx(
                owner,
                token,
                input=SEL_APPROVE,
                events=[approval_event(token, owner, spender, 2**256 - 1)],
            )
        ]
    )
    assert h.run([Tx(owner, spender, events=[transfer_event(token, owner, spender, 10**18)])]) == []


def test_retract_forgets_approvals() -> None:
    h = Harness()
    token = addr("dai")
    victim, drainer = addr("dv"), addr("drainer")
    h.run(
        [
            Tx(
                victim,
                token,
                input=SEL_APPROVE,
                events=[approval_event(token, victim, drainer, 2**256 - 1)],
            )
        ]
    )
    assert h.rules.state_size == 1
    h.rules.retract(h.chain.number - 1)
    assert h.rules.state_size == 0


def test_scan_refuses_rows_of_several_blocks() -> None:
    h = Harness()
    h.run([Tx(addr("a"), addr("b"))])
    h.run([Tx(addr("a"), addr("b"))])
    with pytest.raises(InputError, match="one block"):
        h.rules.scan(h.rows)


# ------------------------------------------------------------ patterns added for the benchmark


def test_drain_laundering_ends_with_its_window() -> None:
    h = Harness()
    h.rules = RuleEngine(laundering_window=4)
    token = addr("dai")
    victim, drainer = addr("dv2"), addr("drainer2")
    h.run(
        [
            Tx(
                victim,
                token,
                input=SEL_APPROVE,
                events=[approval_event(token, victim, drainer, 2**256 - 1)],
            )
        ]
    )
    h.run(
        [
            Tx(
                drainer,
                token,
                input=SEL_TRANSFER_FROM,
                events=[transfer_event(token, victim, drainer, 10**20)],
            )
        ]
    )
    for _ in range(5):  # quiet blocks
        h.run([Tx(addr("someone"), addr("shop"), value=1)])
    # the same account paying fresh addresses much later is not this drain's laundering
    later = []
    for k in range(3):
        later += h.run(
            [
                Tx(
                    drainer,
                    token,
                    input=SEL_TRANSFER,
                    events=[transfer_event(token, drainer, addr(f"late{k}"), 10**18)],
                )
            ]
        )
    assert [a for a in later if a.attack_class == "approval_drain"] == []


def test_price_manipulation_and_restore_in_one_block() -> None:
    h = Harness()
    pool = Pool(addr("pm-pool"), addr("t0"), addr("t1"))
    other = Pool(addr("pm-other"), addr("t1"), addr("t2"))
    attacker = addr("manipulator")
    txs = [
        Tx(addr("bystander"), addr("x"), value=1),
        pool.swap(attacker, True, 3 * 10**23),  # 30% of the reserve
        other.swap(attacker, True, 10**22),
        pool.swap(attacker, False, 2 * 10**23),
    ]
    alerts = h.run(txs)
    assert {a.attack_class for a in alerts} == {"price_manipulation"}
    roles = {a.tx: reasons(a)["role"] for a in alerts}
    assert roles == {h.rows[1].tx: "manipulate", h.rows[2].tx: "exploit", h.rows[3].tx: "restore"}
    # a small round trip is not manipulation, and a sandwich is not classed as one
    assert h.run([pool.swap(attacker, True, 10**21), pool.swap(attacker, False, 10**21)]) == []
    sandwich = h.run(
        [
            pool.swap(attacker, True, 3 * 10**23),
            pool.swap(addr("victim"), True, 10**21),
            pool.swap(attacker, False, 2 * 10**23),
        ]
    )
    assert {a.attack_class for a in sandwich} == {"sandwich"}


def fund(h: Harness, source: str, fresh: list[str], token: str) -> set[str]:
    """Plain ETH then tokens from ``source`` to each fresh address; the funding tx hashes."""
    start = len(h.rows)
    h.run([Tx(source, f, value=10**17) for f in fresh])
    h.run(
        [
            Tx(source, token, input=SEL_TRANSFER, events=[transfer_event(token, source, f, 10**20)])
            for f in fresh
        ]
    )
    return {r.tx for r in h.rows[start:]}


def test_sybil_funding_approval_and_collection_flagged_once_a_group_forms() -> None:
    h = Harness()
    token, source, collector = addr("tok"), addr("sybil-source"), addr("collector")
    sybils = [addr(f"sybil{k}") for k in range(4)]
    funding = fund(h, source, sybils, token)
    alerts = h.run(
        [
            Tx(
                s,
                token,
                input=SEL_APPROVE,
                events=[approval_event(token, s, collector, 2**256 - 1)],
            )
            for s in sybils
        ]
    )
    approvals = {r.tx for r in h.rows[-4:]}
    alerts += h.run(
        [
            Tx(s, token, input=SEL_TRANSFER, events=[transfer_event(token, s, collector, 10**20)])
            for s in sybils
        ]
    )
    collects = {r.tx for r in h.rows[-4:]}
    assert {a.attack_class for a in alerts} == {"sybil_laundering"}
    assert {a.tx for a in alerts} == funding | approvals | collects
    # two fresh addresses paying one account are not a group
    h2 = Harness()
    pair = [addr("p0"), addr("p1")]
    fund(h2, source, pair, token)
    quiet = h2.run(
        [
            Tx(s, token, input=SEL_TRANSFER, events=[transfer_event(token, s, collector, 10**20)])
            for s in pair
        ]
    )
    assert quiet == []


def test_small_flood_from_fresh_senders_flagged_with_its_funding() -> None:
    h = Harness()
    master = addr("spam-master")
    senders = [addr("sp0"), addr("sp1")]
    h.run([Tx(master, s, value=10**18) for s in senders])
    funding = {r.tx for r in h.rows}
    flood = h.run([Tx(senders[k % 2], addr(f"junk{k}"), input=bytes(4)) for k in range(4)])
    assert {a.attack_class for a in flood} == {"spam_flood"}
    assert {a.tx for a in flood} == funding | {r.tx for r in h.rows[-4:]}


def test_vanity_dust_then_loss_flagged() -> None:
    h = Harness()
    token, poisoner, victim = addr("tok2"), addr("poisoner"), addr("pv")
    vanity = addr("vanity")
    h.run([Tx(victim, addr("friend"), value=10**18)])  # the victim is established
    h.run([Tx(poisoner, vanity, value=10**16)])
    poison = h.run(
        [
            Tx(
                vanity,
                token,
                input=SEL_TRANSFER,
                events=[transfer_event(token, vanity, victim, 1000)],
            )
        ]
    )
    assert {a.attack_class for a in poison} == {"address_poisoning"}
    assert {a.tx for a in poison} == {h.rows[1].tx, h.rows[2].tx}
    loss = h.run(
        [
            Tx(
                victim,
                token,
                input=SEL_TRANSFER,
                events=[transfer_event(token, victim, vanity, 10**20)],
            )
        ]
    )
    assert [(a.attack_class, reasons(a)["stage"]) for a in loss] == [("address_poisoning", "loss")]
    # the impostor paying the victim is no loss
    assert h.run([Tx(vanity, victim, value=10**15)]) == []
