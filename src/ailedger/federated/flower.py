"""A Flower strategy that aggregates with ailedger's rules and records every round on chain.

For Flower 1.42's message API (``flwr.serverapp``; Beutel et al., "Flower: a friendly
federated learning research framework", 2020): :class:`LedgerStrategy` keeps FedAvg's sampling
and messaging (``flwr.serverapp.strategy.FedAvg``) and replaces its aggregation. Each round:

1. the replies' arrays are flattened, in the order of the global ``ArrayRecord``'s keys, into
   one float64 vector per node, and the update is ``client - global``; replies in canonical
   order (by node id);
2. a rule of :data:`ailedger.federated.aggregate.RULES` aggregates the updates in fixed point,
   deterministically, so anyone holding the updates recomputes the same digest; a node's
   reported example count is never used as a weight (it cannot be checked);
3. the new global model is ``global + aggregate``, cast back to each array's dtype;
4. the aggregate's digest and the digest of each node's share of it (the rule's weights) are
   recorded on chain by a :class:`~ailedger.federated.protocol.LedgerRecorder` (one
   transaction per round, on a single-participant ``TrainingTask``);
5. a node flagged by the rule in ``exclude_after`` rounds is no longer sampled.

The strategy runs unchanged under Flower's simulation runtime (``run_simulation``) and under
its deployment engine (a SuperLink and SuperNodes as separate processes): the ServerApp and
ClientApp of :mod:`.flower_app` are the deployable form.

Flower's server is one trusted coordinator, so the ledger here is a tamper-evident record of
what it did, not the decentralised protocol of :mod:`.protocol`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from ailedger.errors import AggregationError, InputError
from ailedger.federated.aggregate import DEFAULT_MAX_NORM, RULES
from ailedger.federated.protocol import LedgerRecorder, scores_digest

__all__ = ["FlowerRound", "LedgerStrategy"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class FlowerRound:
    """One aggregated round: ``round`` as Flower counts (from 1), the aggregate's hex
    ``digest``, the ``nodes`` whose updates were aggregated (by node id), those ``rejected``
    (wrong arrays) or ``flagged`` by the rule, the ``excluded`` nodes after the round, each
    node's ``weight`` in the aggregate, the recording transaction (None without a ledger), and
    the ``metrics`` each aggregated node reported with its update (its ``MetricRecord``'s
    numbers, by node id; what a node reports is its own claim, never used to aggregate).
    """

    round: int
    digest: str
    nodes: tuple[int, ...]
    rejected: tuple[int, ...]
    flagged: tuple[int, ...]
    excluded: tuple[int, ...]
    weights: dict[int, float]
    tx_hash: str | None
    gas_used: int
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)


class LedgerStrategy(FedAvg):
    """FedAvg's plumbing with ailedger's deterministic aggregation and an on-chain record.

    ``rule`` names an entry of :data:`~ailedger.federated.aggregate.RULES` (``fltrust`` needs
    ``rule_options={"root": ...}``); ``recorder`` records each round (None: no ledger);
    ``exclude_after`` stops sampling a node flagged that many times (None: never). Other
    keywords go to :class:`flwr.serverapp.strategy.FedAvg`.
    """

    def __init__(
        self,
        *,
        rule: str = "default",
        rule_options: Mapping[str, Any] | None = None,
        recorder: LedgerRecorder | None = None,
        exclude_after: int | None = None,
        max_norm: float = DEFAULT_MAX_NORM,
        **fedavg: Any,
    ) -> None:
        if rule not in RULES:
            raise InputError(f"unknown rule {rule!r}; use one of {', '.join(RULES)}")
        if exclude_after is not None and exclude_after < 1:
            raise InputError(f"exclude_after must be >= 1, got {exclude_after}")
        super().__init__(**fedavg)
        self.rule = rule
        self.rule_options = dict(rule_options or {})
        self.recorder = recorder
        self.exclude_after = exclude_after
        self.max_norm = max_norm
        self.rounds: list[FlowerRound] = []
        self.excluded: set[int] = set()
        self._flags: dict[int, int] = {}
        self._global: ArrayRecord | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's sampling, minus the excluded nodes; remembers the global arrays sent."""
        self._global = arrays
        messages = super().configure_train(server_round, arrays, config, grid)
        return [m for m in messages if m.metadata.dst_node_id not in self.excluded]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the updates with the rule and record the round (module docstring)."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid or self._global is None:
            return None, None
        keys = list(self._global.keys())
        base = [self._global[k].numpy() for k in keys]
        base_flat = _flatten(base)
        nodes: list[int] = []
        rejected: list[int] = []
        updates: list[FloatArray] = []
        reported: dict[int, dict[str, float]] = {}
        for message in sorted(valid, key=lambda m: m.metadata.src_node_id):
            node = int(message.metadata.src_node_id)
            record = message.content[self.arrayrecord_key]
            if not isinstance(record, ArrayRecord) or list(record.keys()) != keys:
                rejected.append(node)
                continue
            arrays = [record[k].numpy() for k in keys]
            if [a.shape for a in arrays] != [b.shape for b in base]:
                rejected.append(node)
                continue
            updates.append(_flatten(arrays) - base_flat)
            nodes.append(node)
            reported[node] = _numbers(message)
        if not updates:
            return None, None
        try:
            result = RULES[self.rule](updates, max_norm=self.max_norm, **self.rule_options)
        except AggregationError as exc:
            raise AggregationError(f"round {server_round}: {exc}") from exc
        new_flat = base_flat + result.aggregate
        out = ArrayRecord()
        start = 0
        for key, old in zip(keys, base, strict=True):
            piece = new_flat[start : start + old.size].reshape(old.shape)
            out[key] = Array(np.asarray(piece, dtype=old.dtype))
            start += old.size
        flagged = tuple(nodes[k] for k in result.flagged)
        for node in (*flagged, *rejected):
            self._flags[node] = self._flags.get(node, 0) + 1
        if self.exclude_after is not None:
            self.excluded |= {n for n, c in self._flags.items() if c >= self.exclude_after}
        weights = {node: float(w) for node, w in zip(nodes, result.weights, strict=True)}
        tx_hash, gas = None, 0
        if self.recorder is not None:
            scores = scores_digest(
                self.recorder.task, server_round - 1, {str(n): w for n, w in weights.items()}
            )
            receipt = self.recorder.record(server_round - 1, result.digest, scores)
            tx_hash, gas = receipt.tx_hash, receipt.gas_used
        self.rounds.append(
            FlowerRound(
                round=server_round,
                digest=result.digest.hex(),
                nodes=tuple(nodes),
                rejected=tuple(rejected),
                flagged=flagged,
                excluded=tuple(sorted(self.excluded)),
                weights=weights,
                tx_hash=tx_hash,
                gas_used=gas,
                metrics=reported,
            )
        )
        metrics = self.train_metrics_aggr_fn(
            [m.content for m in valid if int(m.metadata.src_node_id) in nodes],
            self.weighted_by_key,
        )
        metrics["flagged"] = len(flagged)
        metrics["rejected"] = len(rejected)
        return out, metrics


def _numbers(message: Message) -> dict[str, float]:
    """The scalar numbers of a reply's metric records (lists are left out)."""
    out: dict[str, float] = {}
    for record in message.content.metric_records.values():
        for key, value in record.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[key] = float(value)
    return out


def _flatten(arrays: list[npt.NDArray[Any]]) -> FloatArray:
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
