"""Fee scheduling of all of ailedger's own transactions (``[chain] fee_policy = "scheduled"``).

On a real anvil node whose base fee is first raised by blocks loaded with transactions (each
burns 25M gas in a loop), a provenance registration under the scheduled policy waits while
the base fee is high, is sent as it falls, within the bound, with the scheduler's fees (read
back from the mined transaction); when the base fee keeps rising the bound still holds; on
the embedded chain it goes at once; and a workspace wires the policy into its ledger.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from ailedger.errors import InputError
from ailedger.ledger import FeeHook, Ledger
from ailedger.ledger.provenance import ProvenanceRegistry
from ailedger.sentinel.fee_advice import (
    DEFAULT_WAIT_BLOCKS,
    TransactionFeeAdvisor,
    configured_fee_hook,
    transaction_fee_advisor,
    use_configured_fees,
)
from ailedger.sentinel.fees import SendDecision
from ailedger.workspace import Workspace
from tests.conftest import FAST, FUNDS, AnvilNode, new_signer
from tests.integration.test_cli_fees import cli
from tests.unit.ledger.test_fee_hook import mining

WITHIN = 10
SCHEDULED = {"fee_policy": "scheduled", "fee_wait_blocks": WITHIN}
BURNER = "0x000000000000000000000000000000000000b0b0"
LOAD_GAS = 25_000_000  # of a 30M gas limit: each loaded block raises the base fee by ~8 %


class Recorder:
    """The real advisor, with each answer kept to compare with the transaction sent."""

    def __init__(self, advisor: TransactionFeeAdvisor) -> None:
        self.advisor = advisor
        self.asked: list[tuple[int, int, SendDecision]] = []

    def __call__(self, waited: int, within: int, /) -> SendDecision:
        answer = self.advisor(waited, within)
        self.asked.append((waited, within, answer))
        return answer


def _scheduled(ledger: Ledger, chain: dict[str, Any] = SCHEDULED) -> Recorder:
    hook = configured_fee_hook(chain, ledger)
    assert hook is not None and isinstance(hook.advisor, TransactionFeeAdvisor)
    recorder = Recorder(hook.advisor)
    ledger.fee_hook = dataclasses.replace(hook, advisor=recorder, stall_seconds=20.0)
    return recorder


def _base_fee(node: AnvilNode, block: int) -> int:
    got = node.rpc("eth_getBlockByNumber", hex(block), False)
    assert isinstance(got, dict)
    return int(got["baseFeePerGas"], 16)


def _load(node: AnvilNode) -> None:
    """Send one transaction that burns LOAD_GAS (anvil's unlocked first account pays)."""
    payer = node.rpc("eth_accounts")
    assert isinstance(payer, list)
    node.rpc("eth_sendTransaction", {"from": payer[0], "to": BURNER, "gas": hex(LOAD_GAS)})


def _spike(node: AnvilNode) -> None:
    """Quiet blocks, then a burst of full ones (the base fee about doubles), then 3 quiet
    ones: the base fee is high and starting to fall."""
    node.rpc("anvil_setCode", BURNER, "0x5b600056")  # JUMPDEST PUSH1 0 JUMP: burns all gas
    node.rpc("anvil_mine", hex(30))
    node.rpc("evm_setAutomine", False)
    try:
        for _ in range(10):
            _load(node)
            node.rpc("evm_mine")
    finally:
        node.rpc("evm_setAutomine", True)
    pool = node.rpc("txpool_status")
    assert isinstance(pool, dict) and int(pool["pending"], 16) == 0
    node.rpc("anvil_mine", hex(3))


def blocks(node: AnvilNode, *, loaded: bool, every: float = 0.08) -> AbstractContextManager[None]:
    """The node makes a block every ``every`` seconds, empty or loaded (automine: a block
    of its own)."""
    return mining(node, every, (lambda: _load(node)) if loaded else None)


@pytest.fixture
def on_anvil(own_anvil: AnvilNode) -> tuple[Ledger, ProvenanceRegistry]:
    signer = new_signer()
    own_anvil.fund(signer.address)
    ledger = Ledger.connect(own_anvil.url, signer=signer, settings=FAST)
    registry = ProvenanceRegistry.deploy(ledger)
    _spike(own_anvil)
    return ledger, registry


def _register(registry: ProvenanceRegistry) -> Any:
    return registry.register(secrets.token_bytes(32), 1, secrets.token_bytes(32))


def _sent_fees(node: AnvilNode, tx_hash: str) -> tuple[int, int]:
    tx = node.rpc("eth_getTransactionByHash", tx_hash)
    assert isinstance(tx, dict)
    return int(tx["maxFeePerGas"], 16), int(tx["maxPriorityFeePerGas"], 16)


def test_registration_waits_while_the_base_fee_is_high_and_sends_as_it_falls(
    own_anvil: AnvilNode, on_anvil: tuple[Ledger, ProvenanceRegistry]
) -> None:
    ledger, registry = on_anvil
    recorder = _scheduled(ledger)
    start = ledger.block_number()
    with blocks(own_anvil, loaded=False):
        receipt = _register(registry)
    first, last = recorder.asked[0], recorder.asked[-1]
    assert not first[2].send  # high and falling: it waited
    assert {within for _, within, _ in recorder.asked} == {WITHIN}
    assert receipt.block_number - start <= WITHIN + 1  # one block of slack: see test_fee_hook
    at_once = _base_fee(own_anvil, start + 1)  # what sending at once would have paid
    paid = _base_fee(own_anvil, receipt.block_number)
    assert paid < at_once
    assert _sent_fees(own_anvil, receipt.tx_hash) == (
        last[2].max_fee_per_gas,
        last[2].max_priority_fee_per_gas,
    )
    node_tip = int(str(own_anvil.rpc("eth_maxPriorityFeePerGas")), 16)
    assert receipt.effective_gas_price < at_once + node_tip  # cheaper than web3's default


def test_the_bound_holds_when_the_base_fee_never_falls(
    own_anvil: AnvilNode, on_anvil: tuple[Ledger, ProvenanceRegistry]
) -> None:
    ledger, registry = on_anvil
    recorder = _scheduled(ledger, {**SCHEDULED, "fee_wait_blocks": 6})
    start = ledger.block_number()
    with blocks(own_anvil, loaded=True):
        receipt = _register(registry)
    assert receipt.block_number - start <= 6 + 1
    assert _base_fee(own_anvil, receipt.block_number) >= _base_fee(own_anvil, start + 1)
    last = recorder.asked[-1][2]
    assert _sent_fees(own_anvil, receipt.tx_hash) == (
        last.max_fee_per_gas,
        last.max_priority_fee_per_gas,
    )


def test_the_embedded_chain_registers_at_once_through_the_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ailedger.provenance.registry import provenance_registry

    passphrase = lambda: "fee advice test"  # noqa: E731
    ws = Workspace.init(tmp_path / "ws", passphrase=passphrase, unsafe_fast_kdf=True)
    with ws.ledger(passphrase=passphrase) as ledger:
        assert ledger.fee_hook is None  # the default policy: as before
    ws.config.setdefault("chain", {}).update(SCHEDULED)
    ws.save()
    ws = Workspace.open(ws.path)
    with ws.ledger() as reading:
        assert reading.fee_hook is None  # nothing to send
    with ws.ledger(passphrase=passphrase) as ledger:
        hook = ledger.fee_hook
        assert hook is not None and hook.within == WITHIN
        assert isinstance(hook.advisor, TransactionFeeAdvisor)
        recorder = Recorder(hook.advisor)
        ledger.fee_hook = dataclasses.replace(hook, advisor=recorder, stall_seconds=60.0)
        registry = provenance_registry(ws, ledger)
        start = ledger.block_number()
        began = time.monotonic()
        receipt = _register(registry)
        assert time.monotonic() - began < 30.0
        assert receipt.block_number == start + 1
        assert [(w, within) for w, within, _ in recorder.asked] == [(0, WITHIN)]
        advice = recorder.asked[0][2]
        tx = ledger.w3.eth.get_transaction(receipt.tx_hash)
        assert (tx["maxFeePerGas"], tx["maxPriorityFeePerGas"]) == (
            advice.max_fee_per_gas,
            advice.max_priority_fee_per_gas,
        )
    # `ailedger fees plan` shows the policy in effect
    code, out, err = cli(monkeypatch, capsys, "fees", "plan", "--workspace", str(ws.path), "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["workspace_policy"] == {"fee_policy": "scheduled", "fee_wait_blocks": WITHIN}
    # without --within the plan is for the workspace's own bound
    assert plan["within_blocks"] == WITHIN


def test_a_bound_of_one_block_sends_now(own_anvil: AnvilNode) -> None:
    ledger = Ledger.connect(own_anvil.url, settings=FAST)
    own_anvil.rpc("anvil_mine", hex(5))
    advice = transaction_fee_advisor(ledger)(0, 1)
    pending = own_anvil.rpc("eth_getBlockByNumber", "pending", False)
    assert isinstance(pending, dict)
    next_base = int(pending["baseFeePerGas"], 16)
    assert advice.send
    assert advice.max_fee_per_gas >= next_base + advice.max_priority_fee_per_gas


def test_configured_fee_hook_reads_the_chain_table(tmp_path: Path) -> None:
    signer = new_signer()
    with Ledger.embedded(
        tmp_path / "chain", signer=signer, genesis_balances={signer.address: FUNDS}
    ) as ledger:
        assert configured_fee_hook({}, ledger) is None
        assert configured_fee_hook({"fee_policy": "default"}, ledger) is None
        hook = configured_fee_hook({"fee_policy": "scheduled"}, ledger)
        assert isinstance(hook, FeeHook) and hook.within == DEFAULT_WAIT_BLOCKS == 30
        assert hook.stall_seconds == 30.0
        assert FeeHook(advisor=hook.advisor).within == DEFAULT_WAIT_BLOCKS
        hook = configured_fee_hook({"fee_policy": "scheduled", "fee_stall_seconds": 2.5}, ledger)
        assert hook is not None and hook.stall_seconds == 2.5
        assert use_configured_fees(ledger, {"fee_policy": "scheduled"}).fee_hook is not None
        assert use_configured_fees(ledger, {}).fee_hook is None
        with pytest.raises(InputError, match="fee_policy"):
            configured_fee_hook({"fee_policy": "cheap"}, ledger)
        with pytest.raises(InputError, match="fee_wait_blocks"):
            configured_fee_hook({"fee_policy": "scheduled", "fee_wait_blocks": 0}, ledger)
        with pytest.raises(InputError, match="fee_stall_seconds"):
            configured_fee_hook({"fee_policy": "scheduled", "fee_stall_seconds": -1}, ledger)
        with pytest.raises(InputError, match="history_blocks"):
            transaction_fee_advisor(ledger, history_blocks=2)
        with pytest.raises(InputError, match="within"):
            transaction_fee_advisor(ledger)(0, 0)
