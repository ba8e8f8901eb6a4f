"""Time-split evaluation on a small hand-built trace, the labels file, plots, and the Elliptic
loader on a fixture written here with the published columns."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from ailedger.errors import InputError
from ailedger.ledger.chaindata import BlockRecord
from ailedger.sentinel.evaluate import (
    BENIGN,
    elliptic_benchmark,
    evaluate,
    load_elliptic,
    load_labels,
)
from tests.unit.sentinel.test_features import ChainBuilder, Pool, Tx, addr


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(1):
        yield


def synthetic_trace(n_blocks: int = 60, seed: int = 7) -> tuple[list[BlockRecord], dict[str, str]]:
    """Benign transfers and swaps with a few sandwiches and spam floods, and their labels."""
    rng = random.Random(seed)
    chain = ChainBuilder()
    pool = Pool(addr("pool"), addr("t0"), addr("t1"))
    users = [addr(f"user{k}") for k in range(25)]
    blocks: list[BlockRecord] = []
    labels: dict[str, str] = {}
    for b in range(n_blocks):
        txs = [
            Tx(rng.choice(users), rng.choice(users), value=rng.randint(10**15, 10**18))
            for _ in range(rng.randint(4, 8))
        ]
        txs += [
            pool.swap(rng.choice(users), rng.random() < 0.5, rng.randint(10**18, 10**20))
            for _ in range(2)
        ]
        attack: dict[int, str] = {}
        if b % 10 == 5:  # a sandwich around one user's swap
            bot = addr(f"bot{b}")
            size = rng.randint(10**21, 5 * 10**21)
            txs = [
                pool.swap(bot, True, size),
                pool.swap(rng.choice(users), True, 10**20),
                pool.swap(bot, False, size),
                *txs,
            ]
            attack = {0: "sandwich", 1: "sandwich", 2: "sandwich"}  # front, victim, back
        if b % 20 == 12:  # a flood from two fresh accounts
            spammers = [addr(f"spam{b}-{k}") for k in range(2)]
            flood = [
                Tx(spammers[k % 2], addr("spam-target"), value=0, gas_used=40_000)
                for k in range(30)
            ]
            attack = {len(txs) + k: "spam_flood" for k in range(30)}
            txs = txs + flood
        block = chain.block(txs)
        for i, cls in attack.items():
            labels["0x" + block.transactions[i].hash.hex()] = cls
        blocks.append(block)
    return blocks, labels


def write_labels(labels: dict[str, str], path: Path) -> None:
    with open(path, "w") as out:
        for tx, cls in labels.items():
            out.write(json.dumps({"tx": tx, "block": 0, "class": cls, "role": "x"}) + "\n")


def test_time_split_evaluation_with_baselines_and_plots(tmp_path: Path) -> None:
    blocks, labels = synthetic_trace()
    write_labels(labels, tmp_path / "labels.jsonl")
    loaded = load_labels(tmp_path / "labels.jsonl")
    assert loaded == labels
    report = evaluate(
        blocks,
        loaded,
        train_fraction=0.5,
        max_iter=15,
        n_estimators=20,
        plot_dir=tmp_path / "plots",
    )
    # split by time: every training block precedes every test block
    assert report.train_blocks[1] < report.test_blocks[0]
    assert report.train_blocks[0] == blocks[0].number and report.test_blocks[1] == blocks[-1].number
    assert report.n_train + report.n_test == sum(len(b.transactions) for b in blocks)
    assert set(report.detectors) == {
        "isolation-forest",
        "rules",
        "gradient-boosting",
        "rules+gradient-boosting",
        "random-forest",
    }
    rules = report.detectors["rules"]
    assert rules.per_class["sandwich"].f1 == 1.0
    assert rules.per_class["spam_flood"].f1 == 1.0
    assert rules.false_alerts_per_1000_benign == 0.0
    assert rules.per_class["sandwich"].alerts_per_1000_blocks == pytest.approx(
        1000 * 3 * 3 / (report.test_blocks[1] - report.test_blocks[0] + 1)
    )
    boosted = report.detectors["gradient-boosting"].per_class
    # ranking, not the alerting threshold (tuned for a full-size model, not 15 iterations)
    assert boosted["spam_flood"].pr_auc > 0.9
    assert 0.0 <= boosted["attack"].pr_auc <= 1.0
    assert {h.held_out for h in report.held_out} == {"sandwich", "spam_flood"}
    for held in report.held_out:
        # the rules need no training: the sentinel (rules or model) still finds a held-out class
        assert held.sentinel_recall == 1.0
        assert held.sentinel_f1 >= held.f1
        assert 0.0 <= held.rf_f1 <= 1.0
    doc = report.to_json()
    json.dumps(doc)
    assert "synthetic" in doc["note"]
    assert len(report.plots) == 3
    for plot in report.plots:
        assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_labels_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text('{"tx": "0x12", "class": "sandwich"}\n')
    with pytest.raises(InputError, match="line 1"):
        load_labels(path)
    path.write_text('{"tx": "0x' + "ab" * 32 + '"}\n')
    with pytest.raises(InputError, match="no class"):
        load_labels(path)
    path.write_text("not json\n")
    with pytest.raises(InputError, match="line 1"):
        load_labels(path)
    with pytest.raises(InputError, match="cannot read"):
        load_labels(tmp_path / "missing.jsonl")


def test_evaluate_refuses_bad_split() -> None:
    blocks, labels = synthetic_trace(n_blocks=4)
    with pytest.raises(InputError, match="train_fraction"):
        evaluate(blocks, labels, train_fraction=1.0)
    with pytest.raises(InputError, match="no transactions"):
        evaluate([], labels)


# ----------------------------------------------------------------------------------- Elliptic


def write_elliptic_fixture(folder: Path, per_step: int = 6, seed: int = 0) -> dict[str, int]:
    """The published column layout at a tiny size; illicit rows shifted in feature 0."""
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "test": 0}
    tx = 1000
    with (
        open(folder / "elliptic_txs_features.csv", "w", newline="") as feats,
        open(folder / "elliptic_txs_classes.csv", "w", newline="") as classes,
        open(folder / "elliptic_txs_edgelist.csv", "w", newline="") as edges,
    ):
        fw, cw, ew = csv.writer(feats), csv.writer(classes), csv.writer(edges)
        cw.writerow(["txId", "class"])
        ew.writerow(["txId1", "txId2"])
        for step in range(1, 50):
            for k in range(per_step):
                label = "1" if k == 0 else ("unknown" if k == 1 else "2")
                values = rng.normal(size=165)
                if label == "1":
                    values[0] += 8.0
                fw.writerow([tx, step, *(f"{v:.6f}" for v in values)])
                cw.writerow([tx, label])
                if k:
                    ew.writerow([tx - 1, tx])
                if label != "unknown":
                    counts["train" if step <= 34 else "test"] += 1
                tx += 1
    return counts


def test_elliptic_fixture_split_and_no_figure(tmp_path: Path) -> None:
    counts = write_elliptic_fixture(tmp_path)
    data = load_elliptic(tmp_path)
    assert data.features.shape == (49 * 6, 165)
    assert not data.is_real
    result = elliptic_benchmark(data)
    assert (result.n_train, result.n_test) == (counts["train"], counts["test"])
    assert result.illicit_f1 > 0.9  # the fixture's illicit rows are easy by construction
    summary = result.summary()
    assert "fixture" in summary
    assert "F1" not in summary and f"{result.illicit_f1:.3f}" not in summary


def test_elliptic_bad_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_elliptic(tmp_path)
    write_elliptic_fixture(tmp_path, per_step=3)
    with open(tmp_path / "elliptic_txs_features.csv", "a") as out:
        out.write("1,2,3\n")
    with pytest.raises(InputError, match="columns"):
        load_elliptic(tmp_path)
    write_elliptic_fixture(tmp_path, per_step=3)
    with open(tmp_path / "elliptic_txs_classes.csv", "a") as out:
        out.write("1000,3\n")
    with pytest.raises(InputError, match="class"):
        load_elliptic(tmp_path)


def test_benign_constant() -> None:
    assert BENIGN == "benign"


def test_held_out_run_only_for_classes_on_both_sides_of_the_split() -> None:
    """A class seen only in training has no test support: no held-out F1 (not a spurious 0)."""
    blocks, labels = synthetic_trace(n_blocks=40)
    early = blocks[2].transactions[0]
    labels["0x" + early.hash.hex()] = "approval_drain"
    report = evaluate(blocks, labels, max_iter=10, n_estimators=10)
    assert report.train_blocks[1] >= blocks[2].number
    assert {h.held_out for h in report.held_out} == {"sandwich", "spam_flood"}
    assert report.detectors["rules"].per_class["approval_drain"].support == 0
