"""The sentinel's scoring loop: micro-batches (several blocks per model call) give exactly the
scores, alerts and retractions of the block-by-block path, on hand-built traffic."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from ailedger.errors import InputError
from ailedger.ledger.chaindata import BlockRecord
from ailedger.sentinel.detectors import AnomalyDetector, SavedModel, SupervisedDetector
from ailedger.sentinel.features import FEATURE_NAMES, FeatureExtractor, rows_to_matrix
from ailedger.sentinel.ingest import BlockAdded, BlockRetracted, IngestEvent
from ailedger.sentinel.pipeline import STAGES, Sentinel
from ailedger.sentinel.rules import RuleEngine
from tests.unit.sentinel.test_evaluate import synthetic_trace

TRAIN_BLOCKS = 30


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def trace() -> tuple[list[BlockRecord], dict[str, str]]:
    return synthetic_trace(n_blocks=60, seed=3)


def _model(kind: str, blocks: Sequence[BlockRecord], labels: dict[str, str]) -> SavedModel:
    rows = FeatureExtractor().process_many(blocks[:TRAIN_BLOCKS])
    X = rows_to_matrix(rows)
    detector: AnomalyDetector | SupervisedDetector
    if kind == "supervised":
        y = [labels.get(r.tx, "benign") for r in rows]
        detector = SupervisedDetector(max_iter=20, random_state=0).fit(X, y)
    else:
        # a high alert rate so that the test half has model alerts (and explanations)
        detector = AnomalyDetector(n_estimators=30, alert_rate=0.05, random_state=0).fit(X)
    return SavedModel(detector, FEATURE_NAMES, {})


def _sentinel(model: SavedModel | None, blocks: Sequence[BlockRecord]) -> Sentinel:
    """A sentinel whose extractor and rules have seen the training blocks (as in a run)."""
    extractor, rules = FeatureExtractor(), RuleEngine()
    for block in blocks[:TRAIN_BLOCKS]:
        rules.scan(extractor.process(block))
    return Sentinel(model=model, extractor=extractor, rules=rules)


@pytest.mark.parametrize("kind", ["supervised", "anomaly", "rules-only"])
def test_micro_batches_score_exactly_as_block_by_block(
    kind: str, trace: tuple[list[BlockRecord], dict[str, str]]
) -> None:
    blocks, labels = trace
    model = None if kind == "rules-only" else _model(kind, blocks, labels)
    one = _sentinel(model, blocks)
    expected = [one.add(block) for block in blocks[TRAIN_BLOCKS:]]
    many = _sentinel(model, blocks)
    got: list[Any] = []
    rest = blocks[TRAIN_BLOCKS:]
    for first in range(0, len(rest), 7):  # uneven batches: 7, 7, ..., 2
        got.extend(many.add_many(rest[first : first + 7]))
    assert got == expected  # scores (floats compared exactly), classes, reasons, alerts
    assert len(got) == len(rest)
    assert [s.block for scores, _ in got for s in scores] == [
        block.number for block in rest for _ in block.transactions
    ]
    flagged = [a for _, alerts in got for a in alerts]
    assert flagged, "the trace has attacks: something must alert"
    if model is not None:
        learned = [a for a in flagged if a.detector in ("gradient-boosting", "isolation-forest")]
        assert learned and all(a.reasons for a in learned)
    assert (many.transactions, many.blocks) == (one.transactions, one.blocks)
    assert set(many.seconds) == set(STAGES) and all(v >= 0 for v in many.seconds.values())


def test_run_in_batches_equals_adding_block_by_block(
    trace: tuple[list[BlockRecord], dict[str, str]],
) -> None:
    blocks, labels = trace
    model = _model("supervised", blocks, labels)
    one = _sentinel(model, blocks)
    scores: list[Any] = []
    alerts: list[Any] = []
    for block in blocks[TRAIN_BLOCKS:]:
        s, a = one.add(block)
        scores.extend(s)
        alerts.extend(a)
    assert _sentinel(model, blocks).run(blocks[TRAIN_BLOCKS:], batch_blocks=4) == (scores, alerts)
    with pytest.raises(InputError, match="batch_blocks"):
        _sentinel(model, blocks).run(blocks, batch_blocks=0)


def test_handle_many_retracts_alerts_of_their_own_block(
    trace: tuple[list[BlockRecord], dict[str, str]],
) -> None:
    """Adds and retractions in one list: each alert is retracted with the block it came from."""
    blocks, labels = trace
    model = _model("supervised", blocks, labels)
    rest = blocks[TRAIN_BLOCKS:]
    events: list[IngestEvent] = [BlockAdded(b) for b in rest[:6]]
    # a reorg drops the last three blocks (rest[5] holds a sandwich), then the same blocks
    # come back (as they would on another branch)
    events += [BlockRetracted(b.number, b.hash) for b in reversed(rest[3:6])]
    events += [BlockAdded(b) for b in rest[3:]]
    one = _sentinel(model, blocks)
    expected = [one.handle(event) for event in events]
    many = _sentinel(model, blocks)
    got = many.handle_many(events[:5]) + many.handle_many(events[5:])
    assert got == expected
    retracted = [alert for _, _, gone in got for alert in gone]
    raised_there = [alert for _, new, _ in reversed(got[3:6]) for alert in new]
    assert retracted and sorted(retracted, key=repr) == sorted(raised_there, key=repr)
    assert {a.block for a in retracted} <= {b.number for b in rest[3:6]}
    assert many.blocks == one.blocks == len(rest)


def test_batched_explanations_equal_one_model_call_per_row(
    trace: tuple[list[BlockRecord], dict[str, str]],
) -> None:
    """The occlusion probes of many rows in one call give each row's own explanation."""
    blocks, labels = trace
    detector = _model("supervised", blocks, labels).detector
    assert isinstance(detector, SupervisedDetector)
    X = rows_to_matrix(FeatureExtractor().process_many(blocks))[:40]
    got = detector.explain(X, FEATURE_NAMES)
    n = X.shape[1]
    for i in range(X.shape[0]):  # the reference: one prediction per row, as before
        probe = np.repeat(X[i : i + 1], n + 1, axis=0)
        probe[np.arange(n) + 1, np.arange(n)] = detector.median_
        score = detector._attack_proba(detector.model_.predict_proba(probe))
        drop = score[0] - score[1:]
        order = [j for j in np.argsort(-drop)[: detector.n_reasons] if drop[j] > 0]
        assert [r.feature for r in got[i]] == [FEATURE_NAMES[j] for j in order]
        assert [r.value for r in got[i]] == [float(X[i, j]) for j in order]
    assert any(got), "some rows must have reasons"
