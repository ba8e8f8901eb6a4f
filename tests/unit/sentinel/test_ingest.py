"""Ingestor: backfill and follow in order, retract exactly the blocks a reorg dropped, resume
from the checkpoint without yielding anything twice, refuse deep reorgs and bad ranges."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ailedger.errors import InputError, ReorgTooDeep, WrongChain
from ailedger.ledger import ChainReader, Ledger, LedgerSettings, Signer
from ailedger.sentinel.ingest import BlockAdded, BlockRetracted, IngestEvent, Ingestor
from tests.conftest import AnvilNode

FAST = LedgerSettings(retries=2, backoff=0.01, backoff_max=0.02)


def _mine(node: AnvilNode, count: int, *, value: int = 1) -> None:
    """Mine ``count`` blocks, each with one transfer of ``value`` wei (so branches differ)."""
    sender = str(node.rpc("eth_accounts")[0])  # type: ignore[index]
    for _ in range(count):
        tx = node.rpc(
            "eth_sendTransaction", {"from": sender, "to": "0x" + "42" * 20, "value": hex(value)}
        )
        # anvil answers before its automine has finished: wait for the block to exist
        deadline = time.monotonic() + 10
        while node.rpc("eth_getTransactionReceipt", tx) is None:
            assert time.monotonic() < deadline, "anvil did not mine the transaction"
            time.sleep(0.005)


def _head(node: AnvilNode) -> int:
    return int(str(node.rpc("eth_blockNumber")), 16)


def _hash(node: AnvilNode, number: int) -> bytes:
    block: Any = node.rpc("eth_getBlockByNumber", hex(number), False)
    return bytes.fromhex(block["hash"][2:])


def _describe(events: list[IngestEvent]) -> list[tuple[str, int]]:
    return [
        ("add", e.block.number) if isinstance(e, BlockAdded) else ("retract", e.number)
        for e in events
    ]


@pytest.fixture
def reader(own_anvil: AnvilNode) -> Iterator[ChainReader]:
    with ChainReader.connect(own_anvil.url, settings=FAST, batch_size=4) as made:
        yield made


def test_backfill_yields_every_block_once_in_order(
    own_anvil: AnvilNode, reader: ChainReader, tmp_path: Path
) -> None:
    _mine(own_anvil, 9)
    ingest = Ingestor(reader, tmp_path / "ingest.json", start=2, stop=8)
    events = list(ingest.events())
    assert _describe(events) == [("add", n) for n in range(2, 8)]
    for event in events:
        assert isinstance(event, BlockAdded)
        assert event.block.hash == _hash(own_anvil, event.block.number)
    # without a stop it reads to the head as it was when called
    rest = Ingestor(reader, tmp_path / "other.json", start=7)
    assert _describe(list(rest.events())) == [("add", n) for n in range(7, 10)]


def test_reorg_retracts_exactly_the_dropped_blocks(
    own_anvil: AnvilNode, reader: ChainReader, tmp_path: Path
) -> None:
    node = own_anvil
    _mine(node, 3)
    snapshot = node.rpc("evm_snapshot")
    _mine(node, 3, value=1)  # blocks 4-6 on the old branch
    ingest = Ingestor(reader, tmp_path / "ingest.json", start=1, reorg_depth=5)
    assert _describe(list(ingest.events())) == [("add", n) for n in range(1, 7)]
    old = {n: _hash(node, n) for n in range(4, 7)}
    kept = {n: _hash(node, n) for n in range(1, 4)}
    node.rpc("evm_revert", snapshot)
    _mine(node, 4, value=2)  # blocks 4-7 on the new branch
    events = list(ingest.events())
    assert _describe(events) == [
        ("retract", 6),
        ("retract", 5),
        ("retract", 4),
        ("add", 4),
        ("add", 5),
        ("add", 6),
        ("add", 7),
    ]
    retracted = [e for e in events if isinstance(e, BlockRetracted)]
    assert {e.number: e.hash for e in retracted} == old
    added = [e.block for e in events if isinstance(e, BlockAdded)]
    assert added[0].parent_hash == kept[3]
    assert all(block.hash == _hash(node, block.number) for block in added)
    assert all(block.hash != old.get(block.number) for block in added)


def test_reorg_to_a_shorter_chain_while_following(
    own_anvil: AnvilNode, reader: ChainReader, tmp_path: Path
) -> None:
    node = own_anvil
    _mine(node, 2)
    snapshot = node.rpc("evm_snapshot")
    _mine(node, 3, value=1)
    ingest = Ingestor(reader, tmp_path / "ingest.json", start=1, poll_interval=0.02)
    list(ingest.events())
    node.rpc("evm_revert", snapshot)
    _mine(node, 1, value=3)  # the new chain (head 3) is shorter than the old (head 5)
    stop = threading.Event()
    seen: list[IngestEvent] = []
    for event in ingest.events(follow=True, stop_event=stop):
        seen.append(event)
        if isinstance(event, BlockAdded) and event.block.number == 3:
            stop.set()
    assert _describe(seen) == [("retract", 5), ("retract", 4), ("retract", 3), ("add", 3)]


def test_follow_picks_up_new_blocks_until_stopped(
    own_anvil: AnvilNode, reader: ChainReader, tmp_path: Path
) -> None:
    _mine(own_anvil, 2)
    ingest = Ingestor(reader, tmp_path / "ingest.json", start=0, stop=6, poll_interval=0.02)
    seen: list[int] = []
    miner = threading.Timer(0.2, _mine, args=(own_anvil, 4))
    miner.start()
    try:
        for event in ingest.events(follow=True):
            assert isinstance(event, BlockAdded)
            seen.append(event.block.number)
    finally:
        miner.join()
    assert seen == list(range(6))


def test_restart_from_checkpoint_yields_nothing_twice(
    own_anvil: AnvilNode, reader: ChainReader, tmp_path: Path
) -> None:
    _mine(own_anvil, 10)
    checkpoint = tmp_path / "ws" / "ingest.json"
    first = Ingestor(reader, checkpoint, start=1)
    processed: list[int] = []
    for event in first.events():
        assert isinstance(event, BlockAdded)
        processed.append(event.block.number)
        first.commit()
        if event.block.number == 4:
            break
    # the consumer took block 5 but crashed before committing it
    uncommitted = [e.block.number for e in first.events() if isinstance(e, BlockAdded)][:1]
    assert uncommitted == [5]
    assert checkpoint.stat().st_mode & 0o777 == 0o600
    saved = json.loads(checkpoint.read_text())
    assert saved["next"] == 5 and saved["window"][-1][0] == 4
    second = Ingestor(reader, checkpoint, start=1)
    resumed = []
    for event in second.events():
        assert isinstance(event, BlockAdded)
        resumed.append(event.block.number)
        second.commit()
    assert resumed == list(range(5, 11))  # block 5 replayed (never committed), 1-4 not
    assert sorted(processed + resumed) == list(range(1, 11))
    third = Ingestor(reader, checkpoint, start=1)
    assert list(third.events()) == []


def test_event_batches_group_blocks_read_together_and_commit_whole_lists(
    own_anvil: AnvilNode, reader: ChainReader, tmp_path: Path
) -> None:
    _mine(own_anvil, 11)  # the reader fixture reads 4 blocks per request
    expected = _describe(list(Ingestor(reader, tmp_path / "a.json", start=1).events()))
    checkpoint = tmp_path / "b.json"
    ingest = Ingestor(reader, checkpoint, start=1)
    lists = []
    for events in ingest.event_batches(max_blocks=3):
        lists.append(_describe(events))
        # handed out whole: the state is the one after the list's last event
        assert ingest.state().next == events[-1].block.number + 1  # type: ignore[union-attr]
        ingest.commit()
        if len(lists) == 2:
            break
    # at most 3 per list, and a list never spans two requests (blocks 1-4, 5-8, 9-11)
    assert lists == [[("add", 1), ("add", 2), ("add", 3)], [("add", 4)]]
    resumed = Ingestor(reader, checkpoint, start=1)
    rest = [_describe(events) for events in resumed.event_batches(max_blocks=8)]
    assert rest == [[("add", n) for n in range(5, 9)], [("add", n) for n in range(9, 12)]]
    assert [e for part in lists + rest for e in part] == expected
    with pytest.raises(InputError, match="max_blocks"):
        next(resumed.event_batches(max_blocks=0))


def test_event_batches_carry_a_reorg_in_order(
    own_anvil: AnvilNode, reader: ChainReader, tmp_path: Path
) -> None:
    node = own_anvil
    _mine(node, 3)
    snapshot = node.rpc("evm_snapshot")
    _mine(node, 3, value=1)
    ingest = Ingestor(reader, tmp_path / "ingest.json", start=1, reorg_depth=5)
    assert [e for part in ingest.event_batches() for e in _describe(part)] == [
        ("add", n) for n in range(1, 7)
    ]
    ingest.commit()
    node.rpc("evm_revert", snapshot)
    _mine(node, 4, value=2)
    parts = [_describe(part) for part in ingest.event_batches(max_blocks=10)]
    flat = [e for part in parts for e in part]
    assert flat == [("retract", 6), ("retract", 5), ("retract", 4)] + [
        ("add", n) for n in range(4, 8)
    ]
    # retractions come before (never in the same list as) the blocks read after them
    assert parts[0] == [("retract", 6), ("retract", 5), ("retract", 4)]


def test_reorg_deeper_than_the_window_is_refused(
    own_anvil: AnvilNode, reader: ChainReader, tmp_path: Path
) -> None:
    node = own_anvil
    _mine(node, 2)
    snapshot = node.rpc("evm_snapshot")
    _mine(node, 4, value=1)  # blocks 3-6
    ingest = Ingestor(reader, tmp_path / "ingest.json", start=1, reorg_depth=3)
    list(ingest.events())
    ingest.commit()
    before = ingest.state()
    node.rpc("evm_revert", snapshot)
    _mine(node, 5, value=2)  # replaces blocks 3-6: four blocks, more than the three remembered
    with pytest.raises(ReorgTooDeep, match="reorg depth 3") as caught:
        list(ingest.events())
    assert "\n" not in str(caught.value)
    assert ingest.state() == before  # nothing retracted, nothing moved


def test_reorg_below_the_first_block_restarts_it(
    own_anvil: AnvilNode, reader: ChainReader, tmp_path: Path
) -> None:
    node = own_anvil
    _mine(node, 1)
    snapshot = node.rpc("evm_snapshot")
    _mine(node, 2, value=1)  # blocks 2-3
    ingest = Ingestor(reader, tmp_path / "ingest.json", start=2, reorg_depth=5)
    list(ingest.events())
    node.rpc("evm_revert", snapshot)
    _mine(node, 2, value=2)
    assert _describe(list(ingest.events())) == [
        ("retract", 3),
        ("retract", 2),
        ("add", 2),
        ("add", 3),
    ]


def test_bad_ranges_and_checkpoints(anvil: AnvilNode, tmp_path: Path) -> None:
    reader = ChainReader.connect(anvil.url, settings=FAST)
    checkpoint = tmp_path / "ingest.json"
    with pytest.raises(InputError, match="empty or inverted"):
        Ingestor(reader, checkpoint, start=5, stop=5)
    with pytest.raises(InputError, match="empty or inverted"):
        Ingestor(reader, checkpoint, start=5, stop=3)
    with pytest.raises(InputError, match="reorg_depth"):
        Ingestor(reader, checkpoint, reorg_depth=0)
    head = reader.head()
    with pytest.raises(InputError, match="past the chain's head"):
        list(Ingestor(reader, checkpoint, start=0, stop=head + 5).events())
    for content in (b"{not json", b"[]", b'{"version": 99}', b'{"version": 1, "chain_id": -1}'):
        checkpoint.write_bytes(content)
        with pytest.raises(InputError, match=str(checkpoint)):
            Ingestor(reader, checkpoint)
    window = [[3, "0x" + "00" * 32]]
    checkpoint.write_text(
        json.dumps({"version": 1, "chain_id": 1, "start": 0, "next": 4, "window": window})
    )
    with pytest.raises(WrongChain):
        Ingestor(reader, checkpoint)
    checkpoint.write_text(
        json.dumps({"version": 1, "chain_id": 1, "start": 0, "next": 9, "window": window})
    )
    with pytest.raises(InputError, match="window"):
        Ingestor(reader, checkpoint)


def test_backfill_on_the_embedded_chain(tmp_path: Path) -> None:
    funder = Signer.from_key(secrets.token_bytes(32))
    with Ledger.embedded(
        tmp_path / "chain", signer=funder, genesis_balances={funder.address: 10**24}
    ) as ledger:
        receipts = [ledger.transfer("0x" + "77" * 20, n + 1) for n in range(3)]
        reader = ChainReader.from_ledger(ledger)
        ingest = Ingestor(reader, tmp_path / "ingest.json", start=1)
        events = list(ingest.events())
        assert _describe(events) == [("add", 1), ("add", 2), ("add", 3)]
        values = [e.block.transactions[0].value for e in events if isinstance(e, BlockAdded)]
        assert values == [1, 2, 3]
        assert [r.block_number for r in receipts] == [1, 2, 3]
        ingest.commit()
        ledger.transfer("0x" + "77" * 20, 4)
        again = Ingestor(reader, tmp_path / "ingest.json", start=1)
        assert _describe(list(again.events())) == [("add", 4)]
