"""The opt-in fee policy of ailedger's own anchors (``[chain] fee_policy = "scheduled"``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger._configfile import check_config
from ailedger.auditlog.anchoring import Anchorer
from ailedger.auditlog.log import AuditLog
from ailedger.errors import InputError, WorkspaceError
from ailedger.ledger import AnchorRegistry, Ledger
from ailedger.sentinel.fee_advice import anchor_fee_advisor, configured_fee_advisor
from ailedger.sentinel.fees import SendDecision
from ailedger.service.background import AnchorLoop
from tests.conftest import FAST, AnvilNode, new_signer

WITHIN = 8


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    opened = AuditLog.open(tmp_path / "log.sqlite", origin="fees.example/log")
    yield opened
    opened.close()


def _ledger(node: AnvilNode) -> Ledger:
    signer = new_signer()
    node.fund(signer.address)
    return Ledger.connect(node.url, signer=signer, settings=FAST)


class _Recorder:
    """A real advisor whose answers are kept, to compare with the transaction sent."""

    def __init__(self, ledger: Ledger) -> None:
        self.advise = anchor_fee_advisor(ledger, within=WITHIN)
        self.asked: list[tuple[int, SendDecision]] = []

    def __call__(self, waited: int) -> SendDecision:
        answer = self.advise(waited)
        self.asked.append((waited, answer))
        return answer


def test_scheduled_anchor_pays_the_schedulers_tip_within_the_bound(
    own_anvil: AnvilNode, log: AuditLog
) -> None:
    ledger = _ledger(own_anvil)
    registry = AnchorRegistry.deploy(ledger)
    for _ in range(6):  # empty blocks: the base fee falls, the cheapest included tip is 0
        own_anvil.rpc("evm_mine")
    advisor = _Recorder(ledger)
    anchorer = Anchorer(
        log=log, registry=registry, key=Ed25519PrivateKey.generate(), fee_advisor=advisor
    )
    log.append_many({"i": i} for i in range(10))
    first_block = ledger.block_number()
    made = None
    for _ in range(WITHIN + 2):
        made = anchorer.anchor()
        if not anchorer.waiting:
            break
        own_anvil.rpc("evm_mine")
    assert made is not None and made.tx_hash is not None and made.block_number is not None
    assert made.block_number - first_block <= WITHIN  # sent (and mined) within the bound
    waited, sent = advisor.asked[-1]
    assert not advisor.asked[0][1].send  # the base fee is falling: it waited first
    assert sent.send and waited <= WITHIN - 1
    tx = ledger.w3.eth.get_transaction(made.tx_hash)  # type: ignore[arg-type]
    node_tip = int(str(own_anvil.rpc("eth_maxPriorityFeePerGas")), 16)
    assert tx["maxPriorityFeePerGas"] == sent.max_priority_fee_per_gas
    assert tx["maxFeePerGas"] == sent.max_fee_per_gas
    assert sent.max_priority_fee_per_gas < node_tip  # the scheduler's, not the node's default


def test_default_policy_sends_at_once_with_the_ledgers_fees(
    anvil: AnvilNode, log: AuditLog
) -> None:
    ledger = _ledger(anvil)
    assert configured_fee_advisor({}, ledger) is None
    assert configured_fee_advisor({"fee_policy": "default"}, ledger) is None
    assert configured_fee_advisor({"fee_policy": "scheduled"}, ledger) is not None
    anchorer = Anchorer(
        log=log, registry=AnchorRegistry.deploy(ledger), key=Ed25519PrivateKey.generate()
    )
    log.append({"i": 0})
    made = anchorer.anchor()
    assert made is not None and made.tx_hash is not None and not anchorer.waiting
    tx = ledger.w3.eth.get_transaction(made.tx_hash)  # type: ignore[arg-type]
    parent = ledger.w3.eth.get_block(tx["blockNumber"] - 1)
    node_tip = int(str(anvil.rpc("eth_maxPriorityFeePerGas")), 16)
    assert tx["maxPriorityFeePerGas"] == node_tip
    # 2 * base fee + tip (web3's default rule), the base fee of the block it was priced at
    assert tx["maxFeePerGas"] - node_tip in {
        2 * parent["baseFeePerGas"],
        2 * ledger.w3.eth.get_block(tx["blockNumber"])["baseFeePerGas"],
    }


def test_anchor_loop_retries_a_deferred_anchor_on_a_later_tick(
    own_anvil: AnvilNode, log: AuditLog
) -> None:
    ledger = _ledger(own_anvil)
    registry = AnchorRegistry.deploy(ledger)
    for _ in range(6):
        own_anvil.rpc("evm_mine")
    key = Ed25519PrivateKey.generate()
    advise = anchor_fee_advisor(ledger, within=WITHIN)

    @contextmanager
    def open_anchorer() -> Iterator[Anchorer]:  # a new Anchorer per attempt, as serve does
        yield Anchorer(log=log, registry=registry, key=key, fee_advisor=advise)

    loop = AnchorLoop(log, open_anchorer, every_entries=1, every_seconds=3600, min_gap=0.01)
    log.append({"i": 0})
    steps = 0
    while loop.anchored_size == 0 and steps < WITHIN + 2:
        assert loop.step(), loop.last_error
        steps += 1
        if loop.deferred:
            own_anvil.rpc("evm_mine")
    assert loop.anchored_size == 1 and steps > 1  # deferred at least once, then sent
    assert steps <= WITHIN  # the wait is counted across attempts, so the bound holds


def test_send_anchor_takes_both_fees_or_neither(anvil: AnvilNode) -> None:
    registry = AnchorRegistry.deploy(_ledger(anvil))
    with pytest.raises(InputError, match="both"):
        registry.send_anchor(bytes(32), 1, bytes(32), max_fee_per_gas=10**9)
    with pytest.raises(InputError, match="must not exceed"):
        registry.send_anchor(bytes(32), 1, bytes(32), max_fee_per_gas=1, max_priority_fee_per_gas=2)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("fee_policy", "cheapest", 'chain.fee_policy must be "default" or "scheduled"'),
        ("fee_policy", 3, "chain.fee_policy must be a string"),
        ("fee_wait_blocks", 0, "chain.fee_wait_blocks must be at least 1"),
        ("fee_wait_blocks", 5000, "chain.fee_wait_blocks must be at most 1000"),
        ("fee_stall_seconds", -1, "chain.fee_stall_seconds must be at least 0"),
        ("fee_stall_seconds", 100_000, "chain.fee_stall_seconds must be at most 86400"),
        ("fee_stall_seconds", "30", "chain.fee_stall_seconds must be a number"),
    ],
)
def test_bad_fee_settings_are_one_line_config_errors(key: str, value: object, message: str) -> None:
    with pytest.raises(WorkspaceError) as caught:
        check_config({"chain": {key: value}}, "config.toml")
    text = str(caught.value)
    assert text.startswith("config.toml: ") and message in text and "\n" not in text


def test_good_fee_settings_pass() -> None:
    check_config(
        {"chain": {"fee_policy": "scheduled", "fee_wait_blocks": 20, "fee_stall_seconds": 2.5}},
        "config.toml",
    )
