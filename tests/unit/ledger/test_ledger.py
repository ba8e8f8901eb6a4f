"""Ledger behaviour, run on both backends: the embedded chain and a real anvil node."""

from __future__ import annotations

import hashlib

import pytest

from ailedger.errors import ContractNotFound, InputError, LedgerError, TransactionReverted
from ailedger.ledger import AnchorRegistry, load_artifact
from tests.conftest import Chain, new_signer


def h(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def test_anchor_and_read_back(chain: Chain) -> None:
    ledger = chain.ledger(new_signer())
    registry = AnchorRegistry.deploy(ledger)
    origin = h("example.org/log")
    me = ledger.account
    receipts = [registry.anchor(origin, size, h(f"root {size}")) for size in (1, 2, 10)]
    assert [r.block_number for r in receipts] == sorted(r.block_number for r in receipts)
    assert all(r.gas_used > 21000 for r in receipts)
    assert registry.count(me, origin) == 3
    assert [a.size for a in registry.anchors(me, origin)] == [1, 2, 10]
    latest = registry.latest(me, origin)
    assert latest is not None
    assert (latest.size, latest.root, latest.index, latest.anchorer) == (10, h("root 10"), 2, me)
    assert latest.block_number == receipts[-1].block_number
    assert registry.anchor_at(me, origin, 1).root == h("root 2")
    assert registry.latest(me, h("other")) is None
    assert registry.latest(new_signer().address, origin) is None  # another account has none


def test_anchored_event_is_emitted(chain: Chain) -> None:
    ledger = chain.ledger(new_signer())
    registry = AnchorRegistry.deploy(ledger)
    origin = h("events")
    registry.anchor(origin, 7, h("r"))
    contract = ledger.contract(load_artifact("AnchorRegistry"), registry.address)
    logs = ledger.logs(
        contract, "Anchored", argument_filters={"anchorer": ledger.account, "origin": origin}
    )
    assert len(logs) == 1
    args = logs[0]["args"]
    assert (args["size"], args["root"], args["index"]) == (7, h("r"), 0)
    assert args["anchorer"] == ledger.account


@pytest.mark.parametrize("size", [5, 4])
def test_size_must_increase(chain: Chain, size: int) -> None:
    ledger = chain.ledger(new_signer())
    registry = AnchorRegistry.deploy(ledger)
    origin = h("log")
    registry.anchor(origin, 5, h("a"))
    with pytest.raises(TransactionReverted) as info:
        registry.anchor(origin, size, h("b"))
    assert info.value.reason == "size must increase"
    assert registry.count(ledger.account, origin) == 1


def test_anchors_are_kept_per_account(chain: Chain) -> None:
    """A squatter anchoring an origin first (even at the largest size) claims nothing for
    another account: the owner still anchors it, and each reads only its own anchors."""
    owner, squatter = new_signer(), new_signer()
    ledger = chain.ledger(owner)
    registry = AnchorRegistry.deploy(ledger)
    origin = h("owned")
    theirs = AnchorRegistry(ledger=chain.ledger(squatter), address=registry.address)
    theirs.anchor(origin, 2**64 - 1, h("squat"))
    registry.anchor(origin, 1, h("a"))
    registry.anchor(origin, 2, h("b"))
    assert [(a.size, a.root) for a in registry.anchors(owner.address, origin)] == [
        (1, h("a")),
        (2, h("b")),
    ]
    assert [a.size for a in registry.anchors(squatter.address, origin)] == [2**64 - 1]
    assert registry.latest(owner.address, origin).size == 2  # type: ignore[union-attr]
    with pytest.raises(TransactionReverted, match="size must increase"):
        theirs.anchor(origin, 3, h("c"))  # its own history still only grows
    assert registry.count(squatter.address, origin) == 1


def test_several_transactions_in_flight(chain: Chain) -> None:
    ledger = chain.ledger(new_signer())
    registry = AnchorRegistry.deploy(ledger)
    origin = h("flight")
    pending = [registry.send_anchor(origin, size, h(str(size))) for size in range(1, 9)]
    assert [p.nonce for p in pending] == list(range(pending[0].nonce, pending[0].nonce + 8))
    receipts = [ledger.wait(p) for p in pending]
    assert len({r.tx_hash for r in receipts}) == 8
    assert [a.size for a in registry.anchors(ledger.account, origin)] == list(range(1, 9))


@pytest.mark.parametrize(
    ("origin", "size", "root"),
    [
        (b"\x01" * 31, 1, b"\x02" * 32),
        (b"\x01" * 32, 1, b"\x02" * 33),
        (b"\x01" * 32, 0, b"\x02" * 32),
        (b"\x01" * 32, 2**64, b"\x02" * 32),
        (b"\x01" * 32, -1, b"\x02" * 32),
    ],
)
def test_malformed_arguments_are_refused_before_sending(
    chain: Chain, origin: bytes, size: int, root: bytes
) -> None:
    ledger = chain.ledger(new_signer())
    registry = AnchorRegistry.deploy(ledger)
    block = ledger.block_number()
    with pytest.raises(InputError):
        registry.anchor(origin, size, root)
    assert ledger.block_number() == block


def test_unknown_contract_address(chain: Chain) -> None:
    ledger = chain.ledger(new_signer())
    with pytest.raises(ContractNotFound, match="no contract at"):
        AnchorRegistry(ledger=ledger, address="0x" + "12" * 20)


def test_address_of_another_contract(chain: Chain) -> None:
    ledger = chain.ledger(new_signer())
    registry = AnchorRegistry.deploy(ledger)
    # An account with code that is not the registry: deploy a contract whose runtime is 1 byte.
    init_code = bytes.fromhex("60fe600052600160" + "1ff3")  # returns 0xfe (INVALID) as code
    receipt = ledger.wait(ledger.send({"data": init_code}))
    other = receipt.raw["contractAddress"]
    assert ledger.code(other)
    with pytest.raises(ContractNotFound, match="is not AnchorRegistry"):
        AnchorRegistry(ledger=ledger, address=other)
    assert AnchorRegistry(ledger=ledger, address=registry.address).address == registry.address


def test_malformed_address(chain: Chain) -> None:
    ledger = chain.ledger(new_signer())
    with pytest.raises(InputError, match="not an Ethereum address"):
        ledger.balance("0x1234")


def test_reads_need_no_signer(chain: Chain) -> None:
    writer = chain.ledger(new_signer())
    registry = AnchorRegistry.deploy(writer)
    registry.anchor(h("r"), 3, h("x"))
    reader = chain.ledger(None)
    reading = AnchorRegistry(ledger=reader, address=registry.address)
    assert reading.count(writer.account, h("r")) == 1
    with pytest.raises(LedgerError, match="no account"):
        AnchorRegistry(ledger=reader, address=registry.address).anchor(h("r"), 4, h("y"))


def test_transfer_moves_value(chain: Chain) -> None:
    ledger = chain.ledger(new_signer())
    target = new_signer().address
    ledger.transfer(target, 12345)
    assert ledger.balance(target) == 12345


def test_an_implausible_anchor_count_is_refused_not_read(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node claiming more anchors than a verifier reads is refused in one call, not looped."""
    from ailedger.ledger import anchors as anchors_module

    ledger = chain.ledger(new_signer())
    registry = AnchorRegistry.deploy(ledger)
    origin = h("example.org/log")
    for size in (1, 2, 3):
        registry.anchor(origin, size, h(f"root {size}"))
    monkeypatch.setattr(anchors_module, "MAX_ANCHORS", 2)
    with pytest.raises(LedgerError, match="claims 3 anchors"):
        registry.anchors(ledger.account, origin)
