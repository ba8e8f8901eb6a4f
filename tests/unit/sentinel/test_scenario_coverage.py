"""Every attack class on both sides of a time split, and the rules finding each on a real EVM.

One scenario on the test's own anvil, with a base rate high enough that each class gets
several incidents in a short run; the rules never see the labels. The scenario starts at a
fixed time so every run builds the same chain (its daily cycle follows the block timestamps).
"""

from __future__ import annotations

from pathlib import Path

from ailedger.ledger.reader import ChainReader
from ailedger.ledger.traffic import TrafficNode
from ailedger.sentinel.detectors import Alert, primary_alert
from ailedger.sentinel.features import FeatureExtractor
from ailedger.sentinel.rules import RuleEngine
from ailedger.sentinel.scenarios import ATTACK_CLASSES, ScenarioConfig, read_labels, run_scenario
from tests.conftest import AnvilNode

START = 2_000_000_000  # 2033-05-18, after any anvil's genesis until then


def test_each_class_lands_in_both_halves_and_the_rules_find_it(
    tmp_path: Path, own_anvil: AnvilNode
) -> None:
    labels_path = tmp_path / "labels.jsonl"
    config = ScenarioConfig(
        seed=5,
        transactions=3_000,
        accounts=40,
        tokens=4,
        attack_rate=0.03,
        start_time=START,
    )
    with TrafficNode.connect(own_anvil.url) as node:
        summary = run_scenario(config, node, labels_path)
    labels = read_labels(labels_path)
    first, last = summary.blocks
    middle = (first + last) // 2
    for cls in ATTACK_CLASSES:
        blocks = [d["block"] for d in labels if d["class"] == cls]
        assert any(b <= middle for b in blocks), f"{cls} missing from the first half"
        assert any(b > middle for b in blocks), f"{cls} missing from the second half"

    truth = {str(d["tx"]).lower(): str(d["class"]) for d in labels}
    extractor, rules = FeatureExtractor(), RuleEngine()
    by_tx: dict[str, list[Alert]] = {}  # an alert may name a transaction of an earlier block
    senders: dict[str, str] = {}
    with ChainReader.connect(own_anvil.url, timeout=30.0) as reader:
        for block in reader.blocks(1, last + 1):
            rows = extractor.process(block)
            found = rules.scan(rows)
            if block.number < first:
                continue  # setup (deployments, initial grants): it primes the state, unscored
            senders.update((row.tx, row.sender) for row in rows)
            for alert in found:
                by_tx.setdefault(alert.tx, []).append(alert)
    predicted = {}
    for tx, alerts in by_tx.items():
        chosen = primary_alert(alerts, senders.get(tx))
        if chosen is not None:
            predicted[tx] = chosen.attack_class
    for cls in ATTACK_CLASSES:
        true = {tx for tx, c in truth.items() if c == cls}
        flagged = {tx for tx, c in predicted.items() if c == cls}
        hit = len(true & flagged)
        f1 = 2 * hit / (len(true) + len(flagged))
        assert f1 >= 0.9, f"{cls}: F1 {f1:.2f} ({hit} of {len(true)}, {len(flagged)} flagged)"
    false = [tx for tx in predicted if tx not in truth]
    assert len(false) <= 3, f"{len(false)} benign transactions flagged"
