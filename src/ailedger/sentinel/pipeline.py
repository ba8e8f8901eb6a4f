"""The sentinel's scoring loop: blocks in, a score per transaction and alerts out.

:class:`Sentinel` feeds each block to the feature extractor, runs the rule detectors on its
rows and, when a model was fitted, scores every transaction with it. A rule names the attack
class; the model adds how unusual the transaction is and why. Blocks that leave the canonical
chain (a reorg, reported by :class:`~ailedger.sentinel.ingest.Ingestor`) are retracted: the
extractor and the rules forget them, and the alerts that came from them are handed back so the
caller can retract them too (in the audit log, to webhooks).

Micro-batches. A model call has a fixed cost (scikit-learn validates its input and walks every
tree once per call: about 15 ms for a boosting model of 100 iterations and 7 classes here,
whatever the number of rows), so scoring block by block spent most of its time on it.
:meth:`Sentinel.add_many` runs the extractor and the rules block by block (they are stateful and
ordered) and then scores the rows of all its blocks in one model call, and explains every
flagged row in one more; scores and alerts are split back per block, so each alert stays tied
to its block for retraction. A tree ensemble scores each row on its own, so the results are
those of :meth:`Sentinel.add` block by block, bit for bit (a test checks it).
:meth:`Sentinel.handle_many` takes the event lists of
:meth:`~ailedger.sentinel.ingest.Ingestor.event_batches` (blocks already in memory together, so
batching adds no wait). Calls on fewer than ``_SINGLE_THREAD_ROWS`` rows run with one OpenMP
thread (threadpoolctl): on a small shared machine, threads spinning on a few rows cost more
than they save.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
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
    primary_alert,
)
from ailedger.sentinel.features import (
    FEATURE_NAMES,
    FeatureExtractor,
    FeatureRow,
    rows_to_matrix,
)
from ailedger.sentinel.ingest import BlockAdded, BlockRetracted, IngestEvent
from ailedger.sentinel.rules import RuleEngine

__all__ = ["STAGES", "Score", "Sentinel"]

#: the stages of :meth:`Sentinel.add_many` timed in :attr:`Sentinel.seconds`: feature
#: extraction, rule detectors, the model call (scores and explanations), merging into scores
STAGES = ("features", "rules", "model", "merge")

#: model calls on fewer rows than this run with one OpenMP thread
_SINGLE_THREAD_ROWS = 20_000
_threads: Any = None  # threadpoolctl's controller, made once (it inspects the loaded libraries)


@contextlib.contextmanager
def _one_thread(rows: int) -> Iterator[None]:
    """Limit OpenMP (scikit-learn's tree ensembles) to one thread for a small call."""
    global _threads
    if rows >= _SINGLE_THREAD_ROWS:
        yield
        return
    if _threads is None:
        from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

        _threads = ThreadpoolController()
    with _threads.limit(limits=1, user_api="openmp"):
        yield


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
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        """Wall seconds spent so far in each of :data:`STAGES` (for profiling)."""

    def add(self, block: BlockRecord) -> tuple[list[Score], list[Alert]]:
        """Score ``block``: a :class:`Score` per transaction and the flagged alerts.

        Rule alerts may name transactions of earlier blocks (laundering is recognised once its
        fan-out is established); they are returned with the block that completed them.
        """
        return self.add_many([block])[0]

    def add_many(self, blocks: Sequence[BlockRecord]) -> list[tuple[list[Score], list[Alert]]]:
        """Score consecutive ``blocks`` with one model call: per block, as :meth:`add` would
        return it, ``(scores, flagged alerts)``."""
        clock = time.perf_counter
        spent = self.seconds
        per_block: list[tuple[BlockRecord, list[FeatureRow], list[Alert]]] = []
        for block in blocks:
            t0 = clock()
            rows = self.extractor.process(block)
            t1 = clock()
            per_block.append((block, rows, [a for a in self.rules.scan(rows) if a.flagged]))
            spent["features"] += t1 - t0
            spent["rules"] += clock() - t1
        all_rows = [row for _, rows, _ in per_block for row in rows]
        model_alerts: list[Alert] = []
        t0 = clock()
        if self.detector is not None and all_rows:
            with _one_thread(len(all_rows)):
                model_alerts = make_alerts(
                    self.detector, rows_to_matrix(all_rows), all_rows, only_flagged=False
                )
        t1 = clock()
        out: list[tuple[list[Score], list[Alert]]] = []
        position = 0
        for block, rows, alerts in per_block:
            mine = model_alerts[position : position + len(rows)] if model_alerts else []
            position += len(rows)
            out.append(self._finish(block, rows, alerts, mine))
        spent["model"] += t1 - t0
        spent["merge"] += clock() - t1
        return out

    def _finish(
        self,
        block: BlockRecord,
        rows: list[FeatureRow],
        alerts: list[Alert],
        model_alerts: list[Alert],
    ) -> tuple[list[Score], list[Alert]]:
        """Merge a block's rule and model alerts into its scores; remember its alerts."""
        by_tx: dict[str, list[Alert]] = {}
        for alert in alerts:
            by_tx.setdefault(alert.tx, []).append(alert)
        scores = []
        for k, row in enumerate(rows):
            model = model_alerts[k] if model_alerts else None
            found = by_tx.get(row.tx, [])
            if model is not None and model.flagged:
                found = [*found, model]
            strongest = primary_alert(found, row.sender)
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

    def handle_many(
        self, events: Sequence[IngestEvent]
    ) -> list[tuple[list[Score], list[Alert], list[Alert]]]:
        """Apply ``events`` in order, each run of added blocks scored with one model call:
        per event, ``(scores, new alerts, retracted alerts)`` as :meth:`handle` returns it."""
        out: list[tuple[list[Score], list[Alert], list[Alert]]] = []
        run: list[BlockRecord] = []
        for event in [*events, None]:
            if isinstance(event, BlockAdded):
                run.append(event.block)
                continue
            if run:
                out.extend((scores, alerts, []) for scores, alerts in self.add_many(run))
                run = []
            if event is not None:
                out.append(self.handle(event))
        return out

    def run(
        self, blocks: Iterable[BlockRecord], *, batch_blocks: int = 32
    ) -> tuple[list[Score], list[Alert]]:
        """Score every block of ``blocks`` in order (no reorgs), ``batch_blocks`` per model
        call: all scores and alerts."""
        if isinstance(batch_blocks, bool) or not isinstance(batch_blocks, int) or batch_blocks < 1:
            raise InputError(f"batch_blocks must be a positive integer, not {batch_blocks!r}")
        scores: list[Score] = []
        alerts: list[Alert] = []
        pending: list[BlockRecord] = []
        for block in _with_end(blocks):
            if block is not None:
                pending.append(block)
                if len(pending) < batch_blocks:
                    continue
            for s, a in self.add_many(pending):
                scores.extend(s)
                alerts.extend(a)
            pending = []
        return scores, alerts


def _with_end(blocks: Iterable[BlockRecord]) -> Iterator[BlockRecord | None]:
    """``blocks``, then None (the end), without holding them all."""
    yield from blocks
    yield None
