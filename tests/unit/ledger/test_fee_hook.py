"""The ledger's fee hook: ``transact`` asks an advisor when to send and at which fees.

The advisors here are fixed policies (always wait, wait N blocks, fail) so that the ledger's
own part is tested: waiting block by block on a real node, the bound in blocks, the
wall-clock bound on a chain that makes no block by itself, the fallback, and that without a
hook nothing changes. The fee scheduler itself is tested in tests/unit/sentinel.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ailedger.errors import InputError, NodeUnavailable
from ailedger.ledger import FeeHook, Ledger
from ailedger.ledger.provenance import ProvenanceRegistry
from tests.conftest import FAST, FUNDS, AnvilNode, new_signer

FEE = 50 * 10**9  # an advised fee cap far above anvil's base fee, and far from the default's
TIP = 7  # wei: no default pricing gives this tip


@dataclass(frozen=True)
class Advice:
    send: bool
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    reason: str


class WaitFor:
    """Says wait until ``blocks`` blocks have passed (never, with None); records each ask."""

    def __init__(self, blocks: int | None, fee: int = FEE, tip: int = TIP) -> None:
        self.blocks = blocks
        self.fee = fee
        self.tip = tip
        self.asked: list[tuple[int, int]] = []

    def __call__(self, waited: int, within: int, /) -> Advice:
        self.asked.append((waited, within))
        go = self.blocks is not None and waited >= self.blocks
        # the fees change with each ask, so the mined ones show which answer was used
        return Advice(go, self.fee + waited, self.tip + waited, "test")


class Failing:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, waited: int, within: int, /) -> Advice:
        self.calls += 1
        raise NodeUnavailable("the node at http://127.0.0.1:1 did not answer (test)")


def _ledger(node: AnvilNode) -> Ledger:
    signer = new_signer()
    node.fund(signer.address)
    return Ledger.connect(node.url, signer=signer, settings=FAST)


@contextmanager
def mining(
    node: AnvilNode, every: float = 0.08, make_block: Callable[[], None] | None = None
) -> Iterator[None]:
    """The node makes a block every ``every`` seconds (as a chain with a block time does):
    an empty one, or what ``make_block`` makes."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every):
            if make_block is not None:
                make_block()
            else:
                node.rpc("evm_mine")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _mined(node: AnvilNode, tx_hash: str) -> dict[str, Any]:
    tx = node.rpc("eth_getTransactionByHash", tx_hash)
    assert isinstance(tx, dict)
    return tx


def _register(registry: ProvenanceRegistry) -> Any:
    return registry.register(secrets.token_bytes(32), 1, secrets.token_bytes(32))


def test_waits_block_by_block_then_sends_with_the_advised_fees(own_anvil: AnvilNode) -> None:
    ledger = _ledger(own_anvil)
    registry = ProvenanceRegistry.deploy(ledger)
    advisor = WaitFor(3)
    ledger.fee_hook = FeeHook(advisor=advisor, within=10, stall_seconds=20.0)
    start = ledger.block_number()
    with mining(own_anvil):
        receipt = _register(registry)
    waits = [w for w, _ in advisor.asked]
    assert waits[0] == 0 and waits == sorted(waits) and len(waits) >= 2
    assert all(within == 10 for _, within in advisor.asked)
    last = waits[-1]
    assert last >= 3  # it waited for the advisor's word
    assert receipt.block_number - start <= 10
    tx = _mined(own_anvil, receipt.tx_hash)
    assert int(tx["maxFeePerGas"], 16) == FEE + last
    assert int(tx["maxPriorityFeePerGas"], 16) == TIP + last


def test_the_bound_in_blocks_sends_even_if_the_advisor_never_says_so(
    own_anvil: AnvilNode,
) -> None:
    ledger = _ledger(own_anvil)
    registry = ProvenanceRegistry.deploy(ledger)
    advisor = WaitFor(None)
    ledger.fee_hook = FeeHook(advisor=advisor, within=4, stall_seconds=20.0)
    start = ledger.block_number()
    with mining(own_anvil):
        receipt = _register(registry)
    last = advisor.asked[-1][0]
    assert last >= 3  # waited up to the bound ...
    assert receipt.block_number - start <= 4 + 1  # ... and no further (one block of slack:
    # the miner may make one between the last ask and the send)
    tx = _mined(own_anvil, receipt.tx_hash)
    assert int(tx["maxFeePerGas"], 16) == FEE + last  # the last advice's fees


def test_a_head_that_moves_back_and_forth_does_not_hold_a_send_forever(
    own_anvil: AnvilNode,
) -> None:
    ledger = _ledger(own_anvil)
    advisor = WaitFor(None)
    ledger.fee_hook = FeeHook(advisor=advisor, within=5, stall_seconds=20.0)
    snapshot = own_anvil.rpc("evm_snapshot")

    def flip() -> None:  # the head goes N+1, N, N+1, ... (a reorg loop, or a lying node)
        nonlocal snapshot
        own_anvil.rpc("evm_mine")
        time.sleep(0.05)
        own_anvil.rpc("evm_revert", snapshot)
        snapshot = own_anvil.rpc("evm_snapshot")

    started = time.monotonic()
    with mining(own_anvil, every=0.05, make_block=flip):
        advice = ledger._await_advice(ledger.fee_hook)
    assert time.monotonic() - started < 15  # well before the 20 s stall bound
    assert not advice.send and len(advisor.asked) <= 5  # each new head counted as a block


def test_fee_bound_is_a_deadline_for_this_threads_sends(own_anvil: AnvilNode) -> None:
    ledger = _ledger(own_anvil)
    registry = ProvenanceRegistry.deploy(ledger)
    advisor = WaitFor(2)
    ledger.fee_hook = FeeHook(advisor=advisor, within=50, stall_seconds=20.0)
    other = ledger.with_signer(new_signer())
    assert other.fee_hook is ledger.fee_hook  # with_signer keeps the hook
    seen: list[int | None] = []
    start = ledger.block_number()
    with ledger.fee_bound(9), ledger.fee_bound(20):
        assert ledger.current_fee_bound() == 9 and other.current_fee_bound() == 9
        thread = threading.Thread(target=lambda: seen.append(ledger.current_fee_bound()))
        thread.start()
        thread.join()
        with mining(own_anvil):
            first = _register(registry)
            between = len(advisor.asked)
            second = _register(registry)  # one after the other: the same deadline
    assert seen == [50]  # another thread keeps the hook's bound
    assert all(within <= 9 for _, within in advisor.asked)
    assert advisor.asked[between][1] < advisor.asked[0][1]  # the second had less time left
    assert first.block_number <= second.block_number <= start + 9 + 1
    assert ledger.current_fee_bound() == 50
    with ledger.fee_bound(0):  # no blocks left: at once
        assert ledger.current_fee_bound() == 1
    with pytest.raises(InputError), ledger.fee_bound("3"):  # type: ignore[arg-type]
        pass
    head = ledger.block_number()
    with ledger.fee_deadline(head + 7):  # a block number (a training phase's deadline)
        assert ledger.current_fee_bound() == 7
        with ledger.fee_deadline(None):  # none: the enclosing one holds
            assert ledger.current_fee_bound() == 7
    with ledger.fee_deadline(head - 3):  # passed: at once
        assert ledger.current_fee_bound() == 1


def test_a_node_that_makes_no_block_gets_the_transaction_after_the_stall(
    own_anvil: AnvilNode,
) -> None:
    ledger = _ledger(own_anvil)  # anvil mines on demand only: no block comes by itself
    registry = ProvenanceRegistry.deploy(ledger)
    advisor = WaitFor(None)
    ledger.fee_hook = FeeHook(advisor=advisor, within=20, stall_seconds=0.4)
    began = time.monotonic()
    receipt = _register(registry)
    took = time.monotonic() - began
    assert advisor.asked == [(0, 20)]
    assert 0.4 <= took < 10.0
    tx = _mined(own_anvil, receipt.tx_hash)
    assert int(tx["maxFeePerGas"], 16) == FEE
    assert int(tx["maxPriorityFeePerGas"], 16) == TIP


def test_the_embedded_chain_sends_at_once_with_the_advised_fees(tmp_path: Path) -> None:
    signer = new_signer()
    with Ledger.embedded(
        tmp_path / "chain", signer=signer, genesis_balances={signer.address: FUNDS}
    ) as ledger:
        registry = ProvenanceRegistry.deploy(ledger)
        advisor = WaitFor(None)
        ledger.fee_hook = FeeHook(advisor=advisor, within=20, stall_seconds=60.0)
        began = time.monotonic()
        receipt = _register(registry)
        assert time.monotonic() - began < 30.0  # not the 60 s stall
        assert advisor.asked == [(0, 20)]
        tx = ledger.w3.eth.get_transaction(receipt.tx_hash)
        assert tx["maxFeePerGas"] == FEE
        assert tx["maxPriorityFeePerGas"] == TIP
        # every send without its own fees is scheduled (training sends with a gas limit) ...
        paid = ledger.wait(ledger.send({"to": signer.address, "value": 1, "gas": 21000}))
        assert len(advisor.asked) == 2
        assert ledger.w3.eth.get_transaction(paid.tx_hash)["maxFeePerGas"] == FEE  # type: ignore[arg-type]
        # ... and one that sets them (an anchor the anchoring advisor priced) is not
        own = {"maxFeePerGas": FEE + 1, "maxPriorityFeePerGas": TIP + 1}
        ledger.wait(ledger.send({"to": signer.address, "value": 1, "gas": 21000, **own}))
        assert len(advisor.asked) == 2


@pytest.mark.parametrize("advisor", [Failing(), WaitFor(0, fee=5, tip=9)], ids=["raises", "bad"])
def test_a_failing_advisor_falls_back_to_the_default_price(
    own_anvil: AnvilNode, caplog: pytest.LogCaptureFixture, advisor: Any
) -> None:
    ledger = _ledger(own_anvil)
    registry = ProvenanceRegistry.deploy(ledger)
    ledger.fee_hook = FeeHook(advisor=advisor, within=5)
    with caplog.at_level(logging.WARNING, logger="ailedger.ledger"):
        receipt = _register(registry)  # not lost
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "default price" in warnings[0].getMessage()
    assert receipt.block_number == ledger.block_number()
    tx = _mined(own_anvil, receipt.tx_hash)
    parent = own_anvil.rpc("eth_getBlockByNumber", hex(receipt.block_number - 1), False)
    assert isinstance(parent, dict)
    tip = int(str(own_anvil.rpc("eth_maxPriorityFeePerGas")), 16)
    # web3.py's default rule, as Ledger.send prices without a hook
    assert int(tx["maxPriorityFeePerGas"], 16) == tip
    assert int(tx["maxFeePerGas"], 16) == 2 * int(parent["baseFeePerGas"], 16) + tip


def test_without_a_hook_transact_sends_at_once_as_before(
    own_anvil: AnvilNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = _ledger(own_anvil)
    registry = ProvenanceRegistry.deploy(ledger)
    assert ledger.fee_hook is None and ledger.current_fee_bound() is None
    methods: list[str] = []
    provider: Any = ledger.w3.provider
    real = provider._post

    def counting(body: bytes) -> Any:  # passes every request on to the node, as it was
        sent = json.loads(body)
        methods.extend(r["method"] for r in (sent if isinstance(sent, list) else [sent]))
        return real(body)

    monkeypatch.setattr(provider, "_post", counting)
    start = ledger.block_number()
    with ledger.fee_bound(2):  # no hook: changes nothing
        receipt = _register(registry)
    assert receipt.block_number == start + 1  # at once
    assert "eth_feeHistory" not in methods
    assert methods.count("eth_sendRawTransaction") == 1
    tx = _mined(own_anvil, receipt.tx_hash)
    parent = own_anvil.rpc("eth_getBlockByNumber", hex(start), False)
    assert isinstance(parent, dict)
    tip = int(str(own_anvil.rpc("eth_maxPriorityFeePerGas")), 16)
    assert int(tx["maxFeePerGas"], 16) == 2 * int(parent["baseFeePerGas"], 16) + tip


def test_fee_hook_refuses_bad_bounds() -> None:
    with pytest.raises(InputError, match="within"):
        FeeHook(advisor=WaitFor(None), within=0)
    with pytest.raises(InputError, match="stall_seconds"):
        FeeHook(advisor=WaitFor(None), stall_seconds=-1.0)
