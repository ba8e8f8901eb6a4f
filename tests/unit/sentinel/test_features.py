"""Feature extraction from hand-built chain records (no chain needed), and the builders that
the other sentinel tests share."""

from __future__ import annotations

import csv
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from eth_utils import keccak, to_checksum_address

from ailedger.errors import InputError
from ailedger.ledger.chaindata import BlockRecord, LogRecord, TxRecord
from ailedger.sentinel import features as F
from ailedger.sentinel.features import (
    FEATURE_NAMES,
    FeatureExtractor,
    decode_approval,
    decode_swap,
    decode_transfer,
    is_lookalike,
    rows_to_matrix,
    write_csv,
    write_parquet,
)

GWEI = 10**9

# ------------------------------------------------------------------------------------ builders


def addr(seed: str | int, *, prefix: str | None = None, suffix: str | None = None) -> str:
    """A deterministic checksummed address; ``prefix``/``suffix`` force its first/last hex."""
    digits = hashlib.sha256(str(seed).encode()).hexdigest()[:40]
    if prefix:
        digits = prefix + digits[len(prefix) :]
    if suffix:
        digits = digits[: 40 - len(suffix)] + suffix
    return str(to_checksum_address("0x" + digits))


def word(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


def uint(value: int) -> bytes:
    return value.to_bytes(32, "big")


Event = tuple[str, tuple[bytes, ...], bytes]


def transfer_event(token: str, src: str, dst: str, amount: int) -> Event:
    return token, (F.TRANSFER_TOPIC, word(src), word(dst)), uint(amount)


def nft_transfer_event(token: str, src: str, dst: str, token_id: int) -> Event:
    return token, (F.TRANSFER_TOPIC, word(src), word(dst), uint(token_id)), b""


def approval_event(token: str, owner: str, spender: str, amount: int) -> Event:
    return token, (F.APPROVAL_TOPIC, word(owner), word(spender)), uint(amount)


@dataclass
class Tx:
    sender: str
    to: str | None
    value: int = 0
    input: bytes = b""
    events: list[Event] = field(default_factory=list)
    gas_used: int = 21_000
    tip: int = GWEI


@dataclass
class Pool:
    """A Uniswap V2 pair's arithmetic (0.3% fee) producing the logs the pair emits."""

    address: str
    token0: str
    token1: str
    reserve0: int = 10**24
    reserve1: int = 10**24

    def swap(self, trader: str, zero_for_one: bool, amount_in: int) -> Tx:
        r_in, r_out = (
            (self.reserve0, self.reserve1) if zero_for_one else (self.reserve1, self.reserve0)
        )
        out = amount_in * 997 * r_out // (r_in * 1000 + amount_in * 997)
        token_in, token_out = (
            (self.token0, self.token1) if zero_for_one else (self.token1, self.token0)
        )
        if zero_for_one:
            self.reserve0 += amount_in
            self.reserve1 -= out
            amounts = (amount_in, 0, 0, out)
        else:
            self.reserve1 += amount_in
            self.reserve0 -= out
            amounts = (0, amount_in, out, 0)
        events: list[Event] = [
            transfer_event(token_in, trader, self.address, amount_in),
            transfer_event(token_out, self.address, trader, out),
            (self.address, (F.SYNC_TOPIC,), uint(self.reserve0) + uint(self.reserve1)),
            (
                self.address,
                (F.SWAP_TOPIC, word(trader), word(trader)),
                b"".join(uint(a) for a in amounts),
            ),
        ]
        # swap(uint256,uint256,address,bytes)
        return Tx(
            trader,
            self.address,
            input=bytes.fromhex("022c0d9f") + bytes(96),
            events=events,
            gas_used=110_000,
        )


class ChainBuilder:
    """Assembles BlockRecords from Tx specs: hashes, indices and log indices filled in."""

    def __init__(self, start: int = 1, base_fee: int = 10 * GWEI) -> None:
        self.number = start
        self.base_fee = base_fee
        self.nonces: dict[str, int] = {}

    def block(
        self, txs: Sequence[Tx], *, gas_limit: int = 30_000_000, gas_used: int | None = None
    ) -> BlockRecord:
        records = []
        log_index = 0
        for i, spec in enumerate(txs):
            logs = []
            for address, topics, data in spec.events:
                logs.append(LogRecord(address, topics, data, log_index))
                log_index += 1
            nonce = self.nonces.get(spec.sender, 0)
            self.nonces[spec.sender] = nonce + 1
            records.append(
                TxRecord(
                    hash=keccak(f"{self.number}:{i}:{spec.sender}:{nonce}".encode()),
                    block_number=self.number,
                    index=i,
                    sender=spec.sender,
                    to=spec.to,
                    value=spec.value,
                    nonce=nonce,
                    type=2,
                    gas_limit=max(21_000, spec.gas_used * 3 // 2),
                    gas_used=spec.gas_used,
                    effective_gas_price=self.base_fee + spec.tip,
                    max_fee_per_gas=2 * self.base_fee + spec.tip,
                    max_priority_fee_per_gas=spec.tip,
                    input=spec.input,
                    status=1,
                    contract_address=None,
                    logs=tuple(logs),
                )
            )
        used = gas_used if gas_used is not None else sum(t.gas_used for t in records)
        block = BlockRecord(
            number=self.number,
            hash=keccak(f"block {self.number}".encode()),
            parent_hash=keccak(f"block {self.number - 1}".encode()),
            timestamp=1_700_000_000 + 12 * self.number,
            miner=addr("miner"),
            gas_used=used,
            gas_limit=gas_limit,
            base_fee_per_gas=self.base_fee,
            transactions=tuple(records),
        )
        self.number += 1
        return block


def lower(address: str) -> str:
    return address.lower()


# --------------------------------------------------------------------------------------- tests


def test_event_topics_are_the_keccak_of_their_signatures() -> None:
    assert keccak(text="Transfer(address,address,uint256)") == F.TRANSFER_TOPIC
    assert keccak(text="Approval(address,address,uint256)") == F.APPROVAL_TOPIC
    assert keccak(text="Swap(address,uint256,uint256,uint256,uint256,address)") == F.SWAP_TOPIC
    assert keccak(text="Sync(uint112,uint112)") == F.SYNC_TOPIC


def test_erc20_transfer_and_approval_decode() -> None:
    token, a, b = addr("token"), addr("a"), addr("b")
    log = LogRecord(*transfer_event(token, a, b, 12345), 7)
    decoded = decode_transfer(log)
    assert decoded == F.TokenTransfer(lower(token), lower(a), lower(b), 12345, 7)
    approval = decode_approval(LogRecord(*approval_event(token, a, b, 2**256 - 1), 0))
    assert approval is not None and approval.amount == 2**256 - 1
    assert approval.owner == lower(a) and approval.spender == lower(b)


def test_erc721_transfer_with_the_same_topic_is_not_an_erc20_amount() -> None:
    nft, a, b = addr("nft"), addr("a"), addr("b")
    log = LogRecord(*nft_transfer_event(nft, a, b, 42), 0)
    assert decode_transfer(log) is None
    chain = ChainBuilder()
    row = FeatureExtractor().process(
        chain.block([Tx(a, nft, events=[nft_transfer_event(nft, a, b, 42)])])
    )[0]
    assert row.transfers == ()
    assert row.feature("erc721_transfers") == 1
    assert row.feature("erc20_transfers") == 0
    # a non-standard data length is ignored rather than misread
    odd = LogRecord(nft, (F.TRANSFER_TOPIC, word(a), word(b)), uint(1) + b"\x00", 0)
    assert decode_transfer(odd) is None


def test_swap_decodes_direction_amounts_and_reserves_before() -> None:
    pool = Pool(addr("pool"), addr("t0"), addr("t1"), 10**21, 4 * 10**21)
    r0, r1 = pool.reserve0, pool.reserve1
    tx = pool.swap(addr("trader"), True, 10**19)
    sync = LogRecord(*tx.events[2], 2)
    reserves = F.decode_sync(sync)
    swap = decode_swap(LogRecord(*tx.events[3], 3), reserves)
    assert swap is not None
    assert swap.zero_for_one and swap.amount_in == 10**19
    assert swap.reserves_before == (r0, r1)
    expected_out = 10**19 * 997 * r1 // (r0 * 1000 + 10**19 * 997)
    assert swap.amount_out == expected_out
    p_before, p_after = r1 / r0, (r1 - expected_out) / (r0 + 10**19)
    assert swap.price_impact == pytest.approx(abs(p_after / p_before - 1))
    assert swap.reserve_share == pytest.approx(10**19 / r0)


def test_transaction_and_account_features() -> None:
    chain = ChainBuilder(base_fee=20 * GWEI)
    a, b, c = addr("a"), addr("b"), addr("c")
    ext = FeatureExtractor(window=3)
    ext.process(chain.block([Tx(a, b, value=10**18, tip=2 * GWEI)]))
    chain.block([])  # a gap block is skipped by the extractor's caller: numbers still increase
    rows = ext.process(chain.block([Tx(a, c, value=0), Tx(c, b, value=5)]))
    first = rows[0]
    assert first.feature("sender_age_blocks") == 2
    assert first.feature("sender_new") == 0
    assert first.feature("recipient_new") == 1
    assert first.feature("sender_fan_out") == 2  # b and c, both inside the 3-block window
    assert first.feature("sender_txs_window") == 2
    assert first.feature("fee_premium_gwei") == pytest.approx(1.0)
    assert first.feature("max_fee_headroom_gwei") == pytest.approx(21.0)
    assert first.feature("zero_value") == 1
    assert rows[1].feature("recipient_fan_in") == 2  # b heard from a and c
    for _ in range(3):
        ext.process(chain.block([]))
    later = ext.process(chain.block([Tx(a, c)]))[0]
    assert later.feature("sender_fan_out") == 1  # b slid out of the window


def test_sandwich_shape_position_features() -> None:
    chain = ChainBuilder()
    pool = Pool(addr("pool"), addr("t0"), addr("t1"))
    bot, victim = addr("bot"), addr("victim")
    rows = FeatureExtractor().process(
        chain.block(
            [
                pool.swap(bot, True, 10**20),
                pool.swap(victim, True, 10**20),
                pool.swap(bot, False, 10**20),
            ]
        )
    )
    assert [r.feature("own_reverse_swap_after") for r in rows] == [1, 0, 0]
    assert [r.feature("own_reverse_swap_before") for r in rows] == [0, 0, 1]
    assert [r.feature("between_other_sender") for r in rows] == [0, 1, 0]
    assert [r.feature("pool_txs_before") for r in rows] == [0, 1, 2]


def _run(blocks: Sequence[BlockRecord], ext: FeatureExtractor) -> list[tuple[float, ...]]:
    return [row.values for block in blocks for row in ext.process(block)]


def test_retracting_a_block_undoes_its_state() -> None:
    chain = ChainBuilder()
    a, b = addr("a"), addr("b")
    blocks = [chain.block([Tx(a, b), Tx(b, addr(f"n{i}"))]) for i in range(4)]
    orphan = ChainBuilder(start=5).block([Tx(addr("x"), a), Tx(a, addr("y"), value=3)])
    replacement = ChainBuilder(start=5).block([Tx(a, b, value=7)])
    clean = FeatureExtractor()
    expected = _run([*blocks, replacement], clean)
    ext = FeatureExtractor()
    _run(blocks, ext)
    ext.process(orphan)
    assert ext.retract(5) == [t.hash for t in orphan.transactions]
    assert ext.first_seen(addr("x")) is None
    assert _run([replacement], ext) == expected[-1:]
    assert ext.state_size == clean.state_size
    with pytest.raises(InputError, match="newest"):
        ext.retract(3)


def test_blocks_must_come_in_order() -> None:
    chain = ChainBuilder(start=10)
    ext = FeatureExtractor()
    block = chain.block([Tx(addr("a"), addr("b"))])
    ext.process(block)
    with pytest.raises(InputError, match="not after"):
        ext.process(block)


def test_state_stays_bounded_over_many_blocks() -> None:
    chain = ChainBuilder()
    ext = FeatureExtractor(window=8, max_accounts=200, max_events=8)
    hub = addr("hub")
    sizes = []
    for i in range(300):
        txs = [Tx(addr(f"s{i}-{k}"), addr(f"r{i}-{k}")) for k in range(4)] + [
            Tx(hub, addr(f"h{i}"))
        ]
        ext.process(chain.block(txs))
        sizes.append(ext.state_size)
    assert ext.accounts_tracked <= 200
    # 200 accounts, each with at most 4 kinds x 8 events
    assert max(sizes) <= 200 + 200 * 4 * 8
    assert max(sizes[100:]) <= max(sizes[:100]) + 40  # flat once the cap is reached


def test_lookalike_detection_is_prefix_and_suffix() -> None:
    real = addr("real", prefix="abcd", suffix="1234")
    fake = addr("fake", prefix="abcd", suffix="1234")
    assert is_lookalike(real, fake)
    assert not is_lookalike(real, real.lower())
    assert not is_lookalike(real, addr("other", prefix="abcd"))


def test_matrix_and_exports(tmp_path: Path) -> None:
    chain = ChainBuilder()
    token = addr("token")
    a, b = addr("a"), addr("b")
    rows = FeatureExtractor().process(
        chain.block(
            [
                Tx(
                    a,
                    token,
                    input=bytes.fromhex("a9059cbb"),
                    events=[transfer_event(token, a, b, 5)],
                ),
                Tx(b, a, value=1),
            ]
        )
    )
    matrix = rows_to_matrix(rows)
    assert matrix.shape == (2, len(FEATURE_NAMES))
    assert matrix[0, FEATURE_NAMES.index("selector_transfer")] == 1
    assert rows_to_matrix([]).shape == (0, len(FEATURE_NAMES))

    assert write_csv(rows, tmp_path / "f.csv") == 2
    with open(tmp_path / "f.csv", newline="") as handle:
        read = list(csv.DictReader(handle))
    assert read[0]["tx"] == rows[0].tx and float(read[0]["erc20_transfers"]) == 1

    import pyarrow.parquet as pq

    assert write_parquet(rows, tmp_path / "f.parquet") == 2
    table = pq.read_table(tmp_path / "f.parquet")
    assert table.column_names[:2] == ["tx", "block"]
    assert table.column("value_log10").to_pylist() == [r.feature("value_log10") for r in rows]


def test_parquet_without_pyarrow_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(InputError, match=r"ailedger\[sentinel\]"):
        write_parquet([], tmp_path / "x.parquet")


def test_bad_settings_refused() -> None:
    with pytest.raises(InputError, match="window"):
        FeatureExtractor(window=0)
