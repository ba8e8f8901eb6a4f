"""A Flower app that trains across machines with :class:`~.flower.LedgerStrategy`.

Flower's deployment engine (Flower 1.42; Beutel et al., "Flower: a friendly federated learning
research framework", 2020) runs a *SuperLink* (the coordinator's long-running process) and one
*SuperNode* per party; a run is an app bundle (a folder whose ``pyproject.toml`` names a
ServerApp and a ClientApp by reference) submitted to the SuperLink with ``flwr run``. The
SuperLink starts the ServerApp in a process of its own; each SuperNode starts the ClientApp for
every message it receives. This module holds both, loadable by reference:

- ``ailedger.federated.flower_app:server_app`` runs :class:`~.flower.LedgerStrategy` for
  ``num-server-rounds`` rounds over every connected SuperNode (at least ``min-nodes``) and,
  with ``rpc`` set, records each round on that node's chain (one transaction per round on a
  single-participant ``TrainingTask``, as in simulation). It signs with the V3 keystore named
  by ``keystore``, unlocked with ``$AILEDGER_PASSPHRASE``; ``contract`` names a deployed
  ``TrainingTask`` (empty: deploy one). With ``report`` set it writes a JSON report of the run
  there (the task, each round's digest, nodes, weights and transaction, the final accuracy).
- ``ailedger.federated.flower_app:client_app`` trains ailedger's logistic regression
  (:class:`~.models.LogisticRegression`) on the SuperNode's share of scikit-learn's digits:
  the SuperNode's ``--node-config 'partition-id=I num-partitions=N'`` picks share ``I`` of an
  IID split into ``N`` (:func:`~.data.partition`, seeded by ``seed``).

The digits stand in for a party's own data: a real deployment replaces :func:`partition_data`.
:func:`write_app` writes an app folder for ``flwr run``. Both apps take the run config keys of
:data:`RUN_CONFIG` (``flwr run DIR CONNECTION --run-config 'key=value ...'``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tomli_w
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from ailedger._fs import write_atomic
from ailedger.errors import InputError
from ailedger.federated.aggregate import RULES, aggregate_digest, quantize
from ailedger.federated.data import load_digits, partition
from ailedger.federated.models import LogisticRegression

__all__ = [
    "APP_NAME",
    "RUN_CONFIG",
    "client_app",
    "initial_params",
    "local_update",
    "partition_data",
    "server_app",
    "write_app",
]

FloatArray = npt.NDArray[np.float64]

#: the app's name in its bundle (``[project].name``)
APP_NAME = "ailedger-flower"
#: run config keys and their defaults (the app folder's ``[tool.flwr.app.config]``)
RUN_CONFIG: dict[str, int | float | str] = {
    "num-server-rounds": 3,
    "min-nodes": 2,
    "rule": "default",
    "rpc": "",
    "keystore": "",
    "contract": "",
    "report": "",
    "seed": 0,
    "lr": 0.1,
    "local-epochs": 1,
    "batch-size": 32,
}
_PARAMS_KEY = "params"
#: rules that need a reference computed on trusted data, which this app does not hold
_RULES_NEEDING_DATA = frozenset({"fltrust", "reputation"})


@dataclass(frozen=True)
class _RunConfig:
    rounds: int
    min_nodes: int
    rule: str
    rpc: str
    keystore: str
    contract: str
    report: str
    seed: int
    lr: float
    epochs: int
    batch_size: int

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> _RunConfig:
        merged = {**RUN_CONFIG, **values}
        out = cls(
            rounds=_int(merged, "num-server-rounds", 1),
            min_nodes=_int(merged, "min-nodes", 1),
            rule=_text(merged, "rule"),
            rpc=_text(merged, "rpc"),
            keystore=_text(merged, "keystore"),
            contract=_text(merged, "contract"),
            report=_text(merged, "report"),
            seed=_int(merged, "seed", 0),
            lr=_positive(merged, "lr"),
            epochs=_int(merged, "local-epochs", 1),
            batch_size=_int(merged, "batch-size", 1),
        )
        usable = [name for name in RULES if name not in _RULES_NEEDING_DATA]
        if out.rule not in usable:
            raise InputError(
                f"run config rule: {out.rule!r} is not usable here; use one of {', '.join(usable)}"
            )
        if out.rpc and not out.keystore:
            raise InputError(
                "run config: rpc is set but keystore is not (the rounds need a signer)"
            )
        return out


def _int(values: Mapping[str, Any], key: str, least: int) -> int:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InputError(f"run config {key}: expected an integer >= {least}, got {value!r}")
    return value


def _positive(values: Mapping[str, Any], key: str) -> float:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"run config {key}: expected a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"run config {key}: expected a positive number, got {value!r}")
    return float(value)


def _text(values: Mapping[str, Any], key: str) -> str:
    value = values[key]
    if not isinstance(value, str):
        raise InputError(f"run config {key}: expected a string, got {value!r}")
    return value


# --------------------------------------------------------------------------- the model


IntArray = npt.NDArray[np.int64]


@lru_cache(maxsize=1)
def _digits(seed: int) -> tuple[FloatArray, IntArray, FloatArray, IntArray]:
    data = load_digits(seed=seed)
    return data.x_train, data.y_train, data.x_test, data.y_test


def _model() -> LogisticRegression:
    return LogisticRegression(num_features=64, num_classes=10)


def initial_params(seed: int = 0) -> FloatArray:
    """The global model before round 1: the logistic regression's seeded initial parameters,
    a float64 vector of 650 numbers (64 x 10 weights, then 10 biases)."""
    return _model().init_params(seed)


def partition_data(
    partition_id: int, num_partitions: int, *, seed: int = 0
) -> tuple[FloatArray, IntArray]:
    """Share ``partition_id`` of an IID split of the digits training set into
    ``num_partitions``: features ``(n, 64)`` in ``[0, 1]`` and labels ``(n,)``."""
    if isinstance(num_partitions, bool) or not isinstance(num_partitions, int):
        raise InputError(f"num-partitions must be a positive integer, got {num_partitions!r}")
    if num_partitions < 1:
        raise InputError(f"num-partitions must be a positive integer, got {num_partitions!r}")
    if isinstance(partition_id, bool) or not isinstance(partition_id, int):
        raise InputError(f"partition-id must be an integer, got {partition_id!r}")
    if not 0 <= partition_id < num_partitions:
        raise InputError(f"partition-id must be in [0, {num_partitions}), got {partition_id}")
    x, y, _, _ = _digits(seed)
    shares = partition(y, num_partitions, "iid", seed=seed)
    index = shares[partition_id]
    return x[index], y[index]


def local_update(
    params: npt.ArrayLike,
    partition_id: int,
    num_partitions: int,
    *,
    server_round: int,
    seed: int = 0,
    lr: float = 0.1,
    epochs: int = 1,
    batch_size: int = 32,
) -> FloatArray:
    """What a SuperNode returns in ``server_round``: ``epochs`` of SGD from the global
    ``params`` on its share, with the batch order drawn from ``(seed, partition_id, round)``.
    Deterministic, so anyone holding the global model can recompute it."""
    x, y = partition_data(partition_id, num_partitions, seed=seed)
    rng = np.random.default_rng([seed, partition_id, server_round])
    return _model().train_local(params, x, y, epochs=epochs, lr=lr, batch_size=batch_size, rng=rng)


def _test_accuracy(params: FloatArray, seed: int) -> float:
    _, _, x_test, y_test = _digits(seed)
    return _model().evaluate(params, x_test, y_test)


# --------------------------------------------------------------------------- the apps

client_app = ClientApp()


@client_app.train()
def _train(message: Message, context: Context) -> Message:
    """One round on this SuperNode's share (module docstring)."""
    config = _RunConfig.parse(context.run_config)
    node = context.node_config
    partition_id, num_partitions = node.get("partition-id"), node.get("num-partitions")
    if not isinstance(partition_id, int) or not isinstance(num_partitions, int):
        raise InputError(
            "the SuperNode needs --node-config 'partition-id=I num-partitions=N' (integers)"
        )
    server_round = message.content.config_records["config"]["server-round"]
    if not isinstance(server_round, int):
        raise InputError(f"the train message's server-round is not an integer: {server_round!r}")
    params = message.content.array_records["arrays"][_PARAMS_KEY].numpy()
    new = local_update(
        params,
        partition_id,
        num_partitions,
        server_round=server_round,
        seed=config.seed,
        lr=config.lr,
        epochs=config.epochs,
        batch_size=config.batch_size,
    )
    size = len(partition_data(partition_id, num_partitions, seed=config.seed)[1])
    reply = RecordDict(
        {
            "arrays": ArrayRecord({_PARAMS_KEY: Array(new)}),
            "metrics": MetricRecord({"num-examples": size, "partition-id": partition_id}),
        }
    )
    return Message(content=reply, reply_to=message)


server_app = ServerApp()


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    """The coordinator's run (module docstring)."""
    config = _RunConfig.parse(context.run_config)
    report = _run_server(grid, config)
    if config.report:
        write_atomic(Path(config.report), json.dumps(report, indent=2).encode(), mode=0o644)


def _run_server(grid: Grid, config: _RunConfig) -> dict[str, Any]:
    """Run the strategy on ``grid`` (recording on chain when ``config.rpc`` is set) and return
    the JSON-able report described in the module docstring."""
    # the chain's libraries load here, in the ServerApp's process only: every ClientApp
    # process starts afresh each round, and importing them would cost each one seconds
    from ailedger.config import passphrase_source
    from ailedger.federated.flower import LedgerStrategy
    from ailedger.federated.protocol import LedgerRecorder
    from ailedger.ledger import Keystore, Ledger, Signer
    from ailedger.ledger.training import TrainingTask

    ledger = None
    recorder = None
    try:
        if config.rpc:
            signer = Signer.from_keystore(Keystore.load(Path(config.keystore)), passphrase_source())
            ledger = Ledger.connect(config.rpc, signer=signer)
            contract = (
                TrainingTask(ledger=ledger, address=config.contract)
                if config.contract
                else TrainingTask.deploy(ledger)
            )
            spec = {"app": APP_NAME, **{k.replace("-", "_"): v for k, v in asdict(config).items()}}
            for private in ("rpc", "keystore", "contract", "report"):
                spec.pop(private)
            recorder = LedgerRecorder.start(
                contract, spec=spec, rounds=config.rounds, rule=config.rule
            )
        strategy = LedgerStrategy(
            rule=config.rule,
            recorder=recorder,
            fraction_evaluate=0.0,
            min_train_nodes=config.min_nodes,
            min_available_nodes=config.min_nodes,
        )
        start = initial_params(config.seed)
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord({_PARAMS_KEY: Array(start)}),
            num_rounds=config.rounds,
        )
        final = np.asarray(result.arrays[_PARAMS_KEY].numpy(), dtype=np.float64)
        return {
            "app": APP_NAME,
            "contract": recorder.contract.address if recorder is not None else None,
            "task": recorder.task if recorder is not None else None,
            "account": ledger.account if ledger is not None else None,
            "rounds": [asdict(r) for r in strategy.rounds],
            "final_digest": aggregate_digest(quantize(final)).hex(),
            "final_accuracy": _test_accuracy(final, config.seed),
        }
    finally:
        if ledger is not None:
            ledger.close()


# --------------------------------------------------------------------------- the bundle


def write_app(folder: Path, **config: int | float | str) -> Path:
    """Write an app folder for ``flwr run`` into ``folder`` (created if missing) and return it.

    Its ``pyproject.toml`` names :data:`server_app` and :data:`client_app` by reference, so the
    bundle carries no code: every machine must have ``ailedger`` installed (with the same
    version, so that all parties compute the same thing). ``config`` (run config keys, with
    ``-`` or ``_``) replaces defaults of :data:`RUN_CONFIG`; ``flwr run --run-config``
    overrides them again per run. The folder's name must be a valid app name (letters,
    digits, ``-``).
    """
    defaults = dict(RUN_CONFIG)
    for key, value in config.items():
        name = key.replace("_", "-")
        if name not in defaults:
            raise InputError(f"unknown run config key {key!r}; use one of {', '.join(RUN_CONFIG)}")
        defaults[name] = value
    _RunConfig.parse(defaults)
    document = {
        "project": {
            "name": APP_NAME,
            "version": "1.0.0",
            "description": "ailedger's LedgerStrategy under Flower's deployment engine",
            "dependencies": ["flwr>=1.42"],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "ailedger",
                    "components": {
                        "serverapp": f"{__name__}:server_app",
                        "clientapp": f"{__name__}:client_app",
                    },
                    "config": defaults,
                }
            }
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(tomli_w.dumps(document), encoding="utf-8")
    return folder
