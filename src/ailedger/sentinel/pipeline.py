"""The sentinel's scoring loop: blocks in, a score per transaction and alerts out.

:class:`Sentinel` feeds each block to the feature extractor, runs the rule detectors on its
rows and, when a model was fitted, scores every transaction with it. A rule names the attack
class; the model adds how unusual the transaction is and why. Blocks that leave the canonical
chain (a reorg, reported by :class:`~ailedger.sentinel.ingest.Ingestor`) are retracted: the
extractor and the rules forget them, and the alerts that came from them are handed back so the
caller can retract them too (in the audit log, to webhooks).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ailedger.errors import InputError
from ailedger.ledger.chaindata import BlockRecord
from ailedger.sentinel.actions import json_safe
from ailedger.sentinel.detectors import (
    Alert,
    AnomalyDetector,
    ModelFileError,
    SavedModel,
    SupervisedDetector,
    make_alerts,
)
from ailedger.sentinel.features import FEATURE_NAMES, FeatureExtractor, rows_to_matrix
from ailedger.sentinel.ingest import BlockAdded, BlockRetracted, IngestEvent
from ailedger.sentinel.rules import RuleEngine

__all__ = ["Score", "Sentinel"]


@dataclass(frozen=True, slots=True)
class Score:
    """One transaction as ``sentinel scan`` prints it (a JSON line)."""

    tx: str
    block: int
    score: float
    """The model's anomaly score (above 0: beyond the learned threshold); 0.0 without a model."""
    flagged: bool
    attack_class: str
    """The class of the strongest alert on this transaction, or ``benign``."""
    reasons: tuple[dict[str, Any], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "tx": self.tx,
            "block": self.block,
            "score": self.score,
            "flagged": self.flagged,
            "class": self.attack_class,
            "reasons": json_safe(list(self.reasons)),
        }


class Sentinel:
    """Score blocks one at a time with bounded memory; undo retracted blocks.

    ``model`` is a fitted detector read with :func:`~ailedger.sentinel.detectors.load_model`
    (None: rules only). ``reorg_depth`` is how many recent blocks keep their alerts for
    retraction; it must not exceed the extractor's own.
    """

    def __init__(
        self,
        *,
        model: SavedModel | None = None,
        extractor: FeatureExtractor | None = None,
        rules: RuleEngine | None = None,
        reorg_depth: int = 64,
    ) -> None:
        if model is not None and tuple(model.feature_names) != FEATURE_NAMES:
            raise ModelFileError(
                "the model was fitted on other features than this ailedger extracts: fit it again"
            )
        self.detector: AnomalyDetector | SupervisedDetector | None = (
            None if model is None else model.detector
        )
        self.extractor = extractor or FeatureExtractor(reorg_depth=reorg_depth)
        if self.extractor.reorg_depth < reorg_depth:
            raise InputError("the extractor keeps fewer blocks than the sentinel's reorg depth")
        self.rules = rules or RuleEngine()
        self.reorg_depth = reorg_depth
        self._alerts: OrderedDict[int, list[Alert]] = OrderedDict()
        self.transactions = 0
        self.blocks = 0

    def add(self, block: BlockRecord) -> tuple[list[Score], list[Alert]]:
        """Score ``block``: a :class:`Score` per transaction and the flagged alerts.

        Rule alerts may name transactions of earlier blocks (laundering is recognised once its
        fan-out is established); they are returned with the block that completed them.
        """
        rows = self.extractor.process(block)
        alerts = [a for a in self.rules.scan(rows) if a.flagged]
        model_alerts: list[Alert] = []
        if self.detector is not None and rows:
            model_alerts = make_alerts(
                self.detector, rows_to_matrix(rows), rows, only_flagged=False
            )
        by_tx: dict[str, list[Alert]] = {}
        for alert in alerts:
            by_tx.setdefault(alert.tx, []).append(alert)
        scores = []
        for k, row in enumerate(rows):
            model = model_alerts[k] if model_alerts else None
            found = by_tx.get(row.tx, [])
            if model is not None and model.flagged:
                found = [*found, model]
            strongest = found[0] if found else None
            reasons: list[dict[str, Any]] = []
            for alert in found:
                reasons.extend(dict(r.to_json(), detector=alert.detector) for r in alert.reasons)
            scores.append(
                Score(
                    tx=row.tx,
                    block=row.block_number,
                    score=0.0 if model is None else model.score,
                    flagged=bool(found),
                    attack_class=strongest.attack_class if strongest else "benign",
                    reasons=tuple(reasons),
                )
            )
        flagged = alerts + [a for a in model_alerts if a.flagged]
        self._alerts[block.number] = flagged
        while len(self._alerts) > self.reorg_depth:
            self._alerts.popitem(last=False)
        self.transactions += len(rows)
        self.blocks += 1
        return scores, flagged

    def retract(self, number: int) -> list[Alert]:
        """Undo block ``number`` (the newest added); the alerts that came from it."""
        self.extractor.retract(number)
        self.rules.retract(number)
        self.blocks -= 1
        return self._alerts.pop(number, [])

    def handle(self, event: IngestEvent) -> tuple[list[Score], list[Alert], list[Alert]]:
        """Apply one ingestion event: ``(scores, new alerts, retracted alerts)``."""
        if isinstance(event, BlockAdded):
            scores, alerts = self.add(event.block)
            return scores, alerts, []
        if isinstance(event, BlockRetracted):
            return [], [], self.retract(event.number)
        raise InputError(f"unknown ingestion event {event!r}")

    def run(self, blocks: Iterable[BlockRecord]) -> tuple[list[Score], list[Alert]]:
        """Score every block of ``blocks`` in order (no reorgs): all scores and alerts."""
        scores: list[Score] = []
        alerts: list[Alert] = []
        for block in blocks:
            s, a = self.add(block)
            scores.extend(s)
            alerts.extend(a)
        return scores, alerts
