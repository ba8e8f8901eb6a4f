"""The EIP-1559 rule against anvil's own base fees, the forecaster and the scheduler."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ailedger.errors import InputError, NotFittedError
from ailedger.ledger.chaindata import BlockRecord, FeeHistory, TxRecord
from ailedger.sentinel.fees import (
    INITIAL_BASE_FEE,
    BaseFeeForecaster,
    FeeForecast,
    FeeScheduler,
    base_fee_bounds,
    best_threshold,
    evolve_base_fees,
    fee_history_from_blocks,
    fee_history_from_json,
    fee_history_to_json,
    next_base_fee,
)
from tests.conftest import ANVIL, free_port, stop_process

GAS_LIMIT = 200_000
"""A small block gas limit, so a handful of transfers fills a block (target 100,000 gas)."""


class Node:
    """A loaded-on-demand anvil: automine off, blocks mined with ``evm_mine``."""

    def __init__(self, port: int, process: subprocess.Popen[bytes]) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.process = process
        self.account = Account.from_key(secrets.token_bytes(32))
        self.nonce = 0
        self.chain_id = 0

    def rpc(self, method: str, *params: object) -> Any:
        reply = requests.post(
            self.url,
            json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)},
            timeout=10,
        ).json()
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["result"]

    def send(self, payload: int, tip: int = 10**9) -> None:
        """A transfer carrying ``payload`` non-zero calldata bytes (21,000 + 16 gas each)."""
        base = int(self.rpc("eth_getBlockByNumber", "pending", False)["baseFeePerGas"], 16)
        tx = {
            "type": 2,
            "chainId": self.chain_id,
            "nonce": self.nonce,
            "to": self.account.address,
            "value": 0,
            "data": b"\x01" * payload,
            "gas": 21_000 + 40 * payload,
            "maxPriorityFeePerGas": tip,
            "maxFeePerGas": 4 * base + tip,
        }
        raw = self.account.sign_transaction(tx).raw_transaction
        self.rpc("eth_sendRawTransaction", "0x" + raw.hex())
        self.nonce += 1

    def block(self, number: int) -> dict[str, Any]:
        return dict(self.rpc("eth_getBlockByNumber", hex(number), True))


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    port = free_port()
    process = subprocess.Popen(
        [
            str(ANVIL),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--hardfork",
            "prague",
            "--silent",
            "--gas-limit",
            str(GAS_LIMIT),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    made = Node(port, process)
    try:
        for _ in range(200):
            try:
                made.chain_id = int(made.rpc("eth_chainId"), 16)
                break
            except requests.ConnectionError:
                subprocess.run(["sleep", "0.05"], check=True)
        made.rpc("anvil_setBalance", made.account.address, hex(10**24))
        made.rpc("evm_setAutomine", False)
        yield made
    finally:
        stop_process(process)


# -- the rule: EIP-1559's own cases ----------------------------------------------------------


def test_rule_cases_from_the_eip_text() -> None:
    # gas used at the target (limit // 2): the base fee stays
    assert next_base_fee(10**9, 15_000_000, 30_000_000) == 10**9
    # a full block raises it by exactly 1/8, an empty one lowers it by exactly 1/8
    assert next_base_fee(8 * 10**9, 30_000_000, 30_000_000) == 9 * 10**9
    assert next_base_fee(8 * 10**9, 0, 30_000_000) == 7 * 10**9
    # the max(..., 1): a tiny base fee still rises by 1 wei above the target
    assert next_base_fee(7, 15_000_001, 30_000_000) == 8
    assert next_base_fee(0, 30_000_000, 30_000_000) == 1
    # below the target there is no minimum: 7 * 1 // 15e6 // 8 == 0
    assert next_base_fee(7, 14_999_999, 30_000_000) == 7
    # the fork block takes INITIAL_BASE_FEE whatever its parent did
    assert next_base_fee(0, 0, 30_000_000, fork_block=True) == INITIAL_BASE_FEE == 10**9
    # integer floors, in the order the EIP writes them: (b * delta // target) // 8
    assert (
        next_base_fee(1_000, 10_001, 20_000) == 1_001
    )  # 1000 * 1 // 10000 // 8 == 0, then max(0, 1)
    assert next_base_fee(100_003, 19_999, 20_000) == 100_003 + (100_003 * 9_999 // 10_000) // 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, 0, 10), "parent_base_fee"),
        ((1, 11, 10), "exceeds"),
        ((1, 0, 1), "gas target of 0"),
        ((1, 0, 2**256), "parent_gas_limit"),
        ((True, 0, 10), "parent_base_fee"),
    ],
)
def test_rule_refuses_what_it_does_not_define(args: tuple[int, int, int], message: str) -> None:
    with pytest.raises(InputError, match=message):
        next_base_fee(*args)


@given(st.integers(0, 10**15), st.integers(0, 200))
@settings(max_examples=60, deadline=None)
def test_bounds_enclose_every_path(base: int, blocks: int) -> None:
    low, high = base_fee_bounds(base, min(blocks, 40))
    rng = np.random.default_rng(base % 997)
    used = [int(u) for u in rng.integers(0, 30_000_001, size=min(blocks, 40))]
    fee = evolve_base_fees(base, used, 30_000_000)[-1]
    assert low <= fee <= high


def test_bounds_stay_within_a_256_bit_word() -> None:
    low, high = base_fee_bounds(10**18, 2000)
    assert high == 2**256 - 1
    assert low < 10**18
    history = _trace(300, seed=4)
    fc = BaseFeeForecaster(paths=20).fit(history).forecast(2000, levels=(0.5,))
    assert fc.upper[-1] == 2**256 - 1
    assert np.all(np.isfinite(fc.quantiles))


# -- the rule against anvil ------------------------------------------------------------------


@given(load=st.lists(st.lists(st.integers(0, 60), max_size=8), min_size=2, max_size=10))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_rule_matches_anvil_base_fees(node: Node, load: list[list[int]]) -> None:
    start = int(node.rpc("eth_blockNumber"), 16)
    for payloads in load:
        for payload in payloads:
            node.send(payload)
        node.rpc("evm_mine")
    end = int(node.rpc("eth_blockNumber"), 16)
    assert end == start + len(load)
    parent = node.block(start)
    checked = 0
    for number in range(start + 1, end + 1):
        child = node.block(number)
        if number >= 2:  # anvil's block 1 keeps the genesis base fee: its fork block
            expected = next_base_fee(
                int(parent["baseFeePerGas"], 16),
                int(parent["gasUsed"], 16),
                int(parent["gasLimit"], 16),
            )
            assert int(child["baseFeePerGas"], 16) == expected, f"block {number}"
            checked += 1
        parent = child
    assert checked >= len(load) - 1


def test_fee_history_from_blocks_matches_eth_fee_history(node: Node) -> None:
    start = int(node.rpc("eth_blockNumber"), 16) + 1
    for i, payloads in enumerate([[5, 50, 0], [], [60, 60, 60, 60, 60, 60, 60], [1]]):
        for j, payload in enumerate(payloads):
            node.send(payload, tip=10**9 + 10**8 * (i + j))
        node.rpc("evm_mine")
    stop = start + 4
    records = [_record(node, n) for n in range(start, stop)]
    ours = fee_history_from_blocks(records, (10.0, 50.0, 90.0))
    theirs = fee_history_from_json(
        node.rpc("eth_feeHistory", hex(4), hex(stop - 1), [10.0, 50.0, 90.0])
    )
    assert ours.base_fee_per_gas == theirs.base_fee_per_gas
    assert ours.oldest == theirs.oldest
    assert np.allclose(ours.gas_used_ratio, theirs.gas_used_ratio)
    assert ours.reward == theirs.reward


def _record(node: Node, number: int) -> BlockRecord:
    raw = node.block(number)
    txs = []
    for i, tx in enumerate(raw["transactions"]):
        receipt = node.rpc("eth_getTransactionReceipt", tx["hash"])
        txs.append(
            TxRecord(
                hash=bytes.fromhex(tx["hash"][2:]),
                block_number=number,
                index=i,
                sender=tx["from"],
                to=tx["to"],
                value=int(tx["value"], 16),
                nonce=int(tx["nonce"], 16),
                type=int(tx["type"], 16),
                gas_limit=int(tx["gas"], 16),
                gas_used=int(receipt["gasUsed"], 16),
                effective_gas_price=int(receipt["effectiveGasPrice"], 16),
                max_fee_per_gas=int(tx["maxFeePerGas"], 16),
                max_priority_fee_per_gas=int(tx["maxPriorityFeePerGas"], 16),
                input=bytes.fromhex(tx["input"][2:]),
                status=int(receipt["status"], 16),
                contract_address=None,
                logs=(),
            )
        )
    return BlockRecord(
        number=number,
        hash=bytes.fromhex(raw["hash"][2:]),
        parent_hash=bytes.fromhex(raw["parentHash"][2:]),
        timestamp=int(raw["timestamp"], 16),
        miner=raw["miner"],
        gas_used=int(raw["gasUsed"], 16),
        gas_limit=int(raw["gasLimit"], 16),
        base_fee_per_gas=int(raw["baseFeePerGas"], 16),
        transactions=tuple(txs),
    )


# -- fee history files -----------------------------------------------------------------------


def test_fee_history_json_round_trip() -> None:
    history = FeeHistory(
        oldest=5,
        base_fee_per_gas=(10, 11, 12),
        gas_used_ratio=(0.9, 0.7),
        percentiles=(10.0, 50.0),
        reward=((1, 2), (3, 4)),
    )
    assert fee_history_from_json(json.dumps(fee_history_to_json(history))) == history
    assert (
        fee_history_from_json(
            json.dumps({"jsonrpc": "2.0", "id": 1, "result": fee_history_to_json(history)})
        )
        == history
    )


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("[]", "not a JSON object"),
        (
            '{"oldestBlock": "0x1", "baseFeePerGas": ["0x1"], "gasUsedRatio": [0.5]}',
            "one more entry",
        ),
        (
            '{"oldestBlock": "0x1", "baseFeePerGas": ["0x1", "0x2"], "gasUsedRatio": [1.5]}',
            r"gasUsedRatio\[0\]",
        ),
        (
            '{"oldestBlock": "0x1", "baseFeePerGas": ["zz", "0x2"], "gasUsedRatio": [0.5]}',
            "hex quantity",
        ),
        ('{"oldestBlock": "0x1", "baseFeePerGas": ["0x1", "0x2"], "gasUsedRatio": []}', "1 to"),
        ("{not json", "not JSON"),
    ],
)
def test_fee_history_json_refuses_malformed(doc: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        fee_history_from_json(doc)


# -- forecaster and scheduler on traces evolved with the rule ---------------------------------


def _trace(blocks: int, seed: int) -> FeeHistory:
    """A daily cycle (period 240 blocks here) with noise and bursts, evolved with the rule."""
    rng = np.random.default_rng(seed)
    t = np.arange(blocks)
    ratio = 0.5 + 0.3 * np.sin(2 * np.pi * t / 240) + rng.normal(0, 0.1, blocks)
    ratio[rng.random(blocks) < 0.02] = 1.0
    ratio = np.clip(ratio, 0, 1)
    used = [int(r * 30_000_000) for r in ratio]
    fees = evolve_base_fees(10**9, used, 30_000_000)
    tips = [(int(10**8 * (1 + r)),) for r in ratio]
    return FeeHistory(0, tuple(fees), tuple(u / 30_000_000 for u in used), (10.0,), tuple(tips))


def test_forecaster_intervals_cover_and_respect_the_rule() -> None:
    history = _trace(2000, seed=1)
    hits = total = 0
    for cut in range(1000, 1900, 60):
        part = FeeHistory(
            0,
            history.base_fee_per_gas[: cut + 1],
            history.gas_used_ratio[:cut],
            (10.0,),
            history.reward[:cut],
        )
        fc = (
            BaseFeeForecaster(block_time=360.0, paths=200)
            .fit(part)
            .forecast(20, levels=(0.05, 0.5, 0.95))
        )
        assert fc.first == cut
        assert fc.quantiles[0, 1] == history.base_fee_per_gas[cut]
        assert np.all(np.diff(fc.quantiles, axis=1) >= 0)
        assert np.all(fc.quantiles[:, 0] >= np.asarray(fc.lower) - 1e-6)
        assert np.all(fc.quantiles[:, 2] <= np.asarray(fc.upper) + 1e-6)
        actual = np.asarray(history.base_fee_per_gas[cut : cut + 20], dtype=float)
        hits += int(np.sum((actual >= fc.quantiles[:, 0]) & (actual <= fc.quantiles[:, 2])))
        total += 20
    assert hits / total >= 0.75


def test_forecaster_must_be_fitted() -> None:
    with pytest.raises(NotFittedError):
        BaseFeeForecaster().forecast(3)
    with pytest.raises(InputError, match="ahead"):
        BaseFeeForecaster().fit(_trace(50, 2)).forecast(0)


def test_scheduler_meets_its_bound_and_pays_less_than_sending_at_once() -> None:
    history = _trace(3000, seed=3)
    within = 30
    scheduler = FeeScheduler(within=within)
    forecaster = BaseFeeForecaster(block_time=360.0, paths=100)
    delays, ours, at_once = [], [], []
    for arrival in range(1000, 2800, 45):
        fee_at_once = history.base_fee_per_gas[arrival]
        for waited in range(within):
            now = arrival + waited
            part = FeeHistory(
                0,
                history.base_fee_per_gas[: now + 1],
                history.gas_used_ratio[:now],
                (10.0,),
                history.reward[:now],
            )
            forecast = forecaster.fit(part).forecast(within - waited, levels=scheduler.levels)
            tip = scheduler.tip(part, waited=waited)
            decision = scheduler.decide(
                next_base_fee=history.base_fee_per_gas[now],
                waited=waited,
                forecast=forecast,
                tip=tip,
            )
            if decision.send:
                assert (
                    decision.max_fee_per_gas
                    >= base_fee_bounds(history.base_fee_per_gas[now], scheduler.headroom)[1]
                )
                delays.append(waited)
                ours.append(history.base_fee_per_gas[now])
                at_once.append(fee_at_once)
                break
    assert len(delays) == len(range(1000, 2800, 45))
    assert max(delays) <= within - 1
    assert sum(ours) < sum(at_once)


def test_scheduler_sends_at_the_deadline_whatever_the_forecast() -> None:
    scheduler = FeeScheduler(within=10, headroom=2)
    decision = scheduler.decide(next_base_fee=10**12, waited=7, forecast=None, tip=5)
    assert decision.send and decision.max_priority_fee_per_gas == 5
    assert decision.max_fee_per_gas == base_fee_bounds(10**12, 2)[1] + 5
    with pytest.raises(InputError, match="within"):
        FeeScheduler(within=0)


def test_forecaster_finds_the_cycle_in_the_history() -> None:
    # _trace's cycle is 240 blocks; at 12 s a block that is 2880 s
    fitted = BaseFeeForecaster(period=None, block_time=12.0, paths=20).fit(_trace(1200, seed=4))
    assert abs(fitted.period_ - 240 * 12.0) <= 0.05 * 240 * 12.0
    # white noise has no cycle: no seasonal profile is used
    rng = np.random.default_rng(5)
    ratios = tuple(float(r) for r in rng.uniform(0.3, 0.7, 600))
    fees = evolve_base_fees(10**9, [int(r * 30_000_000) for r in ratios], 30_000_000)
    flat = FeeHistory(0, tuple(fees), ratios, (), ())
    assert BaseFeeForecaster(period=None, paths=20).fit(flat).period_ == float("inf")
    with pytest.raises(InputError, match="period"):
        BaseFeeForecaster(period=0.0)


def test_tip_is_the_cheapest_recently_included_unless_asked_otherwise() -> None:
    rows = tuple((t,) for t in (50, 10, 30, 20, 40))
    history = FeeHistory(0, (10**9,) * 6, (0.5,) * 5, (10.0,), rows)
    scheduler = FeeScheduler(within=10, headroom=2, tip_floor=1)
    assert scheduler.tip(history) == 10
    assert scheduler.tip(history, quantile=0.5) == 30
    # in the last headroom blocks the tip rises by 1/8 (at least 1 wei) per block
    assert scheduler.tip(history, waited=8) == 10 + 1
    assert scheduler.tip(history, waited=9) == 11 + 1
    with pytest.raises(InputError, match="quantile"):
        scheduler.tip(history, quantile=1.5)


def test_best_threshold_by_hand() -> None:
    # two equally likely paths over now, +1, deadline (+2): a threshold of 10 sends now (10);
    # one of 5 waits: path 0 finds 5 at +1, path 1 never does and pays 30 at the deadline
    # (mean 17.5); 20 sends now too (10). Sending now is best: the threshold is >= 10, < 30.
    paths = np.array([[10.0, 10.0], [5.0, 25.0], [40.0, 30.0]])
    t = best_threshold(paths)
    assert 10.0 <= t < 25.0
    # when the fee surely halves next block, waiting is best: the threshold is below now
    falling = np.array([[10.0, 10.0], [5.0, 5.0], [6.0, 6.0]])
    assert best_threshold(falling) < 10.0
    with pytest.raises(InputError, match="paths"):
        best_threshold(np.zeros((0, 3)))


def test_scheduler_with_paths_waits_for_a_forecast_trough() -> None:
    scheduler = FeeScheduler(within=10, headroom=2)
    history = _trace(1200, seed=6)
    forecast = (
        BaseFeeForecaster(block_time=360.0, paths=50)
        .fit(history)
        .forecast(10, levels=scheduler.levels, keep_paths=True)
    )
    assert forecast.paths is not None and forecast.paths.shape == (10, 50)
    trough = FeeForecast(
        first=0,
        levels=(0.5,),
        quantiles=np.full((10, 1), 100.0),
        lower=(0,) * 10,
        upper=(10**6,) * 10,
        paths=np.vstack([np.full((1, 4), 100.0), np.full((9, 4), 50.0)]),
    )
    assert not scheduler.decide(next_base_fee=100, waited=0, forecast=trough, tip=1).send
    assert scheduler.decide(next_base_fee=50, waited=0, forecast=trough, tip=1).send


def _history(ratios: list[float]) -> FeeHistory:
    limit = 30_000_000
    used = [round(r * limit) for r in ratios]
    fees = evolve_base_fees(10**9, used, limit)
    return FeeHistory(0, tuple(fees), tuple(u / limit for u in used), (), ())


def test_run_hazard_by_hand() -> None:
    # runs of full blocks: 3, 3, and 2 still going at the end (censored)
    quiet, full = [0.2] * 5, [0.9]
    ratios = quiet + full * 3 + quiet + full * 3 + quiet + full * 2
    fitted = BaseFeeForecaster(period=None, paths=20, run_prior=2.0).fit(_history(ratios))
    # 8 full blocks, 7 of them followed by a block, 5 of those by a full one
    overall = 1 - 5 / 7
    assert fitted.run_now_ == 2
    # lengths 1 and 2: 3 runs at risk, none ended; length 3: 2 at risk, both ended;
    # length 4: none at risk, the overall chance alone
    expected = {
        1: 2 * overall / 5,
        2: 2 * overall / 5,
        3: (2 + 2 * overall) / 4,
        4: overall,
    }
    for length, hazard in expected.items():
        assert fitted.run_hazard_[length] == pytest.approx(hazard, rel=1e-12)
    with pytest.raises(InputError, match="full_ratio"):
        BaseFeeForecaster(full_ratio=0.3)
    with pytest.raises(InputError, match="run_prior"):
        BaseFeeForecaster(run_prior=0.0)


def test_a_congestion_run_is_expected_to_last_as_long_as_past_ones() -> None:
    # congestion episodes of 12 full blocks at irregular times (no cycle to learn); the
    # history ends two blocks into a new one: the base fee should keep rising ten more blocks
    rng = np.random.default_rng(8)
    ratios: list[float] = []
    for _ in range(12):
        quiet = int(rng.integers(20, 60))
        ratios += [float(x) for x in rng.uniform(0.1, 0.6, quiet)] + [1.0] * 12
    ratios += [float(x) for x in rng.uniform(0.1, 0.6, 30)] + [1.0] * 2
    history = _history(ratios)
    now = history.base_fee_per_gas[-1]
    with_runs = BaseFeeForecaster(period=None, paths=400).fit(history)
    median = with_runs.forecast(12).quantile(0.5)
    # nine more full blocks: (9/8)**9 times the base fee now
    assert median[9] >= 0.95 * (9 / 8) ** 9 * now
    assert np.all(np.diff(median[:11]) > 0)
    # the linear model alone expects the episode to fade much sooner
    without = BaseFeeForecaster(period=None, paths=400, full_ratio=None).fit(history)
    assert without.forecast(12).quantile(0.5)[9] < 0.8 * median[9]


def test_a_ratio_over_one_from_a_node_counts_as_a_full_block_only() -> None:
    # gas used cannot exceed the limit; a node that says so must not send the forecast off
    ratios = (0.2, 0.3, 7.0, 7.0, 0.4, 0.2, 0.3, 0.5, 0.2, 0.3, 7.0)
    history = FeeHistory(0, (10**9,) * (len(ratios) + 1), ratios, (), ())
    fitted = BaseFeeForecaster(period=None, paths=50).fit(history)
    assert fitted.run_now_ == 1 and float(fitted.full_ratios_.max()) == 1.0
    forecast = fitted.forecast(10)
    # at most the rule's hard bound: a full block raises the base fee by 1/8
    assert np.all(forecast.quantiles <= np.asarray(forecast.upper)[:, None] + 1e-6)
    assert np.all(np.isfinite(forecast.quantiles))
