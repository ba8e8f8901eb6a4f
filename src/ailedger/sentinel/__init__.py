"""Machine learning for the chain: watch any Ethereum node for attacks, act, and time our sends.

- :class:`Ingestor` reads blocks from a :class:`~ailedger.ledger.ChainReader` (backfill, follow
  the head, checkpoint, reorgs);
- :class:`FeatureExtractor` turns them into per-transaction features with bounded state;
- :class:`AnomalyDetector` (unsupervised), :class:`SupervisedDetector` and :class:`RuleEngine`
  (sandwiches, spam floods, address poisoning, approval drains) raise explained
  :class:`Alert`\\ s; :class:`Sentinel` runs them block by block;
- :mod:`~ailedger.sentinel.actions` audits alerts, posts them to webhooks and runs mitigation
  hooks;
- :func:`run_scenario` generates benign traffic and published attacks on anvil, labels apart;
  :func:`evaluate` scores detectors on them, split by time;
- :mod:`~ailedger.sentinel.fees` (EIP-1559 base fee, forecasts, a send scheduler) and
  :mod:`~ailedger.sentinel.timing` (adaptive protocol windows) tune ailedger's own use of the
  chain.

Names load on first use: scikit-learn is imported only by code that needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ailedger.sentinel.actions import (
        AnchorDeferral,
        AuditAction,
        TrainingExclusion,
        WebhookDispatcher,
        load_hooks,
    )
    from ailedger.sentinel.detectors import (
        Alert,
        AnomalyDetector,
        Reason,
        SupervisedDetector,
        load_model,
        save_model,
    )
    from ailedger.sentinel.evaluate import elliptic_benchmark, evaluate, load_elliptic
    from ailedger.sentinel.features import FEATURE_NAMES, FeatureExtractor, FeatureRow
    from ailedger.sentinel.fees import BaseFeeForecaster, FeeScheduler, next_base_fee
    from ailedger.sentinel.ingest import BlockAdded, BlockRetracted, Ingestor
    from ailedger.sentinel.pipeline import Score, Sentinel
    from ailedger.sentinel.rules import RuleEngine
    from ailedger.sentinel.scenarios import ScenarioConfig, run_scenario
    from ailedger.sentinel.timing import AdaptiveTiming, PhaseWindows, simulate_rounds

_WHERE = {
    "AnchorDeferral": "actions",
    "AuditAction": "actions",
    "TrainingExclusion": "actions",
    "WebhookDispatcher": "actions",
    "load_hooks": "actions",
    "Alert": "detectors",
    "AnomalyDetector": "detectors",
    "Reason": "detectors",
    "SupervisedDetector": "detectors",
    "load_model": "detectors",
    "save_model": "detectors",
    "elliptic_benchmark": "evaluate",
    "evaluate": "evaluate",
    "load_elliptic": "evaluate",
    "FEATURE_NAMES": "features",
    "FeatureExtractor": "features",
    "FeatureRow": "features",
    "BaseFeeForecaster": "fees",
    "FeeScheduler": "fees",
    "next_base_fee": "fees",
    "BlockAdded": "ingest",
    "BlockRetracted": "ingest",
    "Ingestor": "ingest",
    "Score": "pipeline",
    "Sentinel": "pipeline",
    "RuleEngine": "rules",
    "ScenarioConfig": "scenarios",
    "run_scenario": "scenarios",
    "AdaptiveTiming": "timing",
    "PhaseWindows": "timing",
    "simulate_rounds": "timing",
}

__all__ = [
    "FEATURE_NAMES",
    "AdaptiveTiming",
    "Alert",
    "AnchorDeferral",
    "AnomalyDetector",
    "AuditAction",
    "BaseFeeForecaster",
    "BlockAdded",
    "BlockRetracted",
    "FeatureExtractor",
    "FeatureRow",
    "FeeScheduler",
    "Ingestor",
    "PhaseWindows",
    "Reason",
    "RuleEngine",
    "ScenarioConfig",
    "Score",
    "Sentinel",
    "SupervisedDetector",
    "TrainingExclusion",
    "WebhookDispatcher",
    "elliptic_benchmark",
    "evaluate",
    "load_elliptic",
    "load_hooks",
    "load_model",
    "next_base_fee",
    "run_scenario",
    "save_model",
    "simulate_rounds",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'ailedger.sentinel' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ailedger.sentinel.{module}"), name)
    globals()[name] = value
    return value
