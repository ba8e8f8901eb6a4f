"""Scenarios on a real anvil: real Uniswap V2 contracts, attacks labelled apart from the chain."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ailedger.errors import InputError
from ailedger.ledger.traffic import TrafficNode
from ailedger.sentinel.scenarios import (
    ATTACK_CLASSES,
    SOURCES,
    ScenarioConfig,
    ScenarioSummary,
    read_labels,
    run_scenario,
)
from tests.conftest import AnvilNode, free_port

START = (int(time.time()) // 86_400 + 2) * 86_400  # a fixed future midnight for both runs


def _config(seed: int) -> ScenarioConfig:
    return ScenarioConfig(
        seed=seed,
        transactions=1_200,
        accounts=30,
        tokens=3,
        attack_rate=0.01,
        start_time=START,
    )


@dataclass
class Run:
    node: AnvilNode
    summary: ScenarioSummary
    labels: list[dict[str, Any]]
    path: Path
    blocks: dict[int, dict[str, Any]]


def _run(tmp: Path, seed: int) -> Run:
    node = AnvilNode(port=free_port(), state=tmp / f"state-{seed}.json")
    node.start()
    path = tmp / f"labels-{seed}.jsonl"
    with TrafficNode.connect(node.url) as traffic:
        summary = run_scenario(_config(seed), traffic, path)
        first, last = summary.blocks
        numbers = range(first, last + 1)
        replies = traffic.batch([("eth_getBlockByNumber", [hex(n), True]) for n in numbers])
    return Run(node, summary, read_labels(path), path, dict(zip(numbers, replies, strict=True)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    tmp = tmp_path_factory.mktemp("scenarios")
    made: dict[str, Run] = {}
    try:
        made["a"] = _run(tmp / "a", 11)
        made["again"] = _run(tmp / "again", 11)
        made["other"] = _run(tmp / "other", 12)
        yield made
    finally:
        for run in made.values():
            run.node.stop()


def test_labels_match_transactions_on_chain(runs: dict[str, Run]) -> None:
    run = runs["a"]
    assert run.labels, "the run produced no attack"
    for label in run.labels:
        assert label["class"] in ATTACK_CLASSES
        assert label["source"] == SOURCES[label["class"]]
        receipt = run.node.rpc("eth_getTransactionReceipt", label["tx"])
        assert isinstance(receipt, dict)
        assert int(receipt["blockNumber"], 16) == label["block"]
    # the chain carries no trace of the labels: no calldata names a class or a role
    first, last = run.summary.blocks
    words = [c.encode().hex() for c in ATTACK_CLASSES] + [b"victim".hex(), b"front".hex()]
    for number in range(first, last + 1):
        for tx in run.blocks[number]["transactions"]:
            assert not any(word in tx["input"] for word in words)
    assert run.path.parent.exists() and run.path.stat().st_size > 0


def test_benign_traffic_and_swaps_do_not_revert(runs: dict[str, Run]) -> None:
    run = runs["a"]
    spam = {label["tx"] for label in run.labels if label["role"] == "flood"}
    first, last = run.summary.blocks
    hashes = [
        tx["hash"] for number in range(first, last + 1) for tx in run.blocks[number]["transactions"]
    ]
    assert len(hashes) == run.summary.transactions
    with TrafficNode.connect(run.node.url) as traffic:
        receipts = traffic.receipts(hashes)
    failed = [h for h, r in zip(hashes, receipts, strict=True) if int(r["status"], 16) != 1]
    assert set(failed) <= spam


def test_sandwich_lands_front_victim_back_in_one_block(runs: dict[str, Run]) -> None:
    run = runs["a"]
    incidents: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for label in run.labels:
        if label["class"] == "sandwich":
            incidents[label["incident"]].append(label)
    assert incidents, "no sandwich in the run"
    for parts in incidents.values():
        assert sorted(p["role"] for p in parts) == ["back"] * 2 + ["front"] * 2 + ["victim"] * 2
        assert len({p["block"] for p in parts}) == 1
        block = run.blocks[parts[0]["block"]]
        position = {tx["hash"]: (i, tx) for i, tx in enumerate(block["transactions"])}
        placed = sorted(
            (position[p["tx"]][0], p["role"], position[p["tx"]][1]["from"]) for p in parts
        )
        assert [role for _, role, _ in placed] == ["front"] * 2 + ["victim"] * 2 + ["back"] * 2
        senders = {role: sender for _, role, sender in placed}
        assert senders["front"] == senders["back"] != senders["victim"]


def test_base_rate_is_realistic(runs: dict[str, Run]) -> None:
    for run in runs.values():
        attacks = sum(n for cls, n in run.summary.counts.items() if cls != "benign")
        assert attacks == len(run.labels)
        assert 0.003 <= attacks / run.summary.transactions <= 0.02
        assert sum(run.summary.counts.values()) == run.summary.transactions >= 1_200


def test_same_seed_same_labels_other_seed_other_parameters(runs: dict[str, Run]) -> None:
    a, again, other = runs["a"], runs["again"], runs["other"]
    assert a.path.read_bytes() == again.path.read_bytes()
    assert a.summary.parameters == again.summary.parameters
    assert a.summary.tokens == again.summary.tokens
    assert other.summary.parameters != a.summary.parameters
    assert other.summary.parameters.mix != a.summary.parameters.mix
    assert [x["tx"] for x in other.labels] != [x["tx"] for x in a.labels]


def test_blocks_carry_simulated_times(runs: dict[str, Run]) -> None:
    run = runs["a"]
    first, last = run.summary.blocks
    times = [int(run.blocks[n]["timestamp"], 16) for n in (first, last)]
    assert times[1] - times[0] == (last - first) * 12
    assert run.summary.start_time == START


def test_bad_configuration_and_missing_artifacts(tmp_path: Path, own_anvil: AnvilNode) -> None:
    with pytest.raises(InputError, match="unknown attack classes: rugpull"):
        ScenarioConfig(attacks=("rugpull",))
    with pytest.raises(InputError, match="attack_rate"):
        ScenarioConfig(attack_rate=0.9)
    with (
        TrafficNode.connect(own_anvil.url) as traffic,
        pytest.raises(InputError, match="no contract artifacts folder"),
    ):
        run_scenario(ScenarioConfig(), traffic, tmp_path / "l.jsonl", artifacts=tmp_path / "x")
    assert not (tmp_path / "l.jsonl").exists()
