"""Federated training: deterministic robust aggregation, attacks, contribution scores."""

from __future__ import annotations

from ailedger.federated.aggregate import RULES, AggregationResult, aggregate_digest
from ailedger.federated.attacks import ATTACKS
from ailedger.federated.contribution import exact_shapley, gtg_shapley, round_contributions
from ailedger.federated.data import load_dataset, load_mnist, partition
from ailedger.federated.models import NumpyClassifier, make_model
from ailedger.federated.simulate import SimulationConfig, SimulationResult, simulate

__all__ = [
    "ATTACKS",
    "RULES",
    "AggregationResult",
    "NumpyClassifier",
    "SimulationConfig",
    "SimulationResult",
    "aggregate_digest",
    "exact_shapley",
    "gtg_shapley",
    "load_dataset",
    "load_mnist",
    "make_model",
    "partition",
    "round_contributions",
    "simulate",
]
