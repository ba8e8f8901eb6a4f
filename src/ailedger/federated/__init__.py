"""Federated training: deterministic robust aggregation, attacks, contribution scores."""

from __future__ import annotations

from ailedger.federated.aggregate import RULES, AggregationResult, aggregate_digest
from ailedger.federated.attacks import ATTACKS
from ailedger.federated.contribution import exact_shapley, gtg_shapley, round_contributions

__all__ = [
    "ATTACKS",
    "RULES",
    "AggregationResult",
    "aggregate_digest",
    "exact_shapley",
    "gtg_shapley",
    "round_contributions",
]
