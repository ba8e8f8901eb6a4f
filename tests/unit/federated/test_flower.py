"""The Flower strategy under Flower's own simulation runtime, recording on the embedded chain."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ailedger.federated.aggregate import aggregate_digest, quantize
from ailedger.federated.protocol import LedgerRecorder
from ailedger.ledger import Ledger, Signer
from ailedger.ledger.training import TrainingTask

flwr = pytest.importorskip("flwr")

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

from ailedger.federated.flower import LedgerStrategy  # noqa: E402

NODES = 4
ROUNDS = 3
DIM = 6


@pytest.fixture
def flower_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """ENVIRONMENT.md's settings; ray's socket paths must stay short, so a folder in /tmp."""
    folder = tempfile.mkdtemp(prefix="ray")
    for key, value in {
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": folder,
        "FLWR_HOME": folder,
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    }.items():
        monkeypatch.setenv(key, value)
    yield
    shutil.rmtree(folder, ignore_errors=True)


def client_app() -> ClientApp:
    """Nodes fit y = X w on their own synthetic data; the last node boosts its update 10x."""
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        node = int(context.node_config["partition-id"])
        (w,) = message.content["arrays"].to_numpy_ndarrays()
        rng = np.random.default_rng(node)
        x = rng.normal(size=(40, DIM))
        y = x @ np.arange(1.0, DIM + 1.0)
        new = w - 0.1 * x.T @ (x @ w - y) / len(y)
        if node == NODES - 1:
            new = w + 10.0 * (new - w)
        reply = RecordDict(
            {"arrays": ArrayRecord([new]), "metrics": MetricRecord({"num-examples": 40})}
        )
        return Message(content=reply, reply_to=message)

    return app


def test_strategy_aggregates_with_the_rule_and_records_each_round(
    tmp_path: Path, flower_env: None
) -> None:
    signer = Signer.from_key(secrets.token_bytes(32))
    with Ledger.embedded(
        tmp_path / "chain", signer=signer, genesis_balances={signer.address: 10**24}
    ) as ledger:
        contract = TrainingTask.deploy(ledger)
        recorder = LedgerRecorder.start(
            contract, spec={"run": "flower test"}, rounds=ROUNDS, rule="default"
        )
        strategy = LedgerStrategy(
            recorder=recorder,
            exclude_after=2,
            fraction_evaluate=0.0,
            min_train_nodes=NODES,
            min_available_nodes=NODES,
        )
        outcome: dict[str, Any] = {}
        server = ServerApp()

        @server.main()
        def main(grid: Grid, context: Context) -> None:
            result = strategy.start(
                grid=grid, initial_arrays=ArrayRecord([np.zeros(DIM)]), num_rounds=ROUNDS
            )
            outcome["final"] = result.arrays.to_numpy_ndarrays()[0]

        run_simulation(
            server_app=server,
            client_app=client_app(),
            num_supernodes=NODES,
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                "init_args": {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False},
            },
        )

        rounds = strategy.rounds
        assert [r.round for r in rounds] == list(range(1, ROUNDS + 1))
        assert [len(r.nodes) for r in rounds] == [NODES, NODES, NODES - 1]
        booster = set(rounds[0].nodes) - set(rounds[-1].nodes)
        assert len(booster) == 1
        assert booster <= set(rounds[0].flagged)
        assert booster <= set(rounds[1].flagged)
        assert rounds[-1].excluded == tuple(booster)
        assert rounds[-1].flagged == ()
        for k, r in enumerate(rounds):
            recorded = contract.outcome(recorder.task, k)
            assert recorded.status == "finalized"
            assert recorded.aggregate_digest is not None
            assert recorded.aggregate_digest.hex() == r.digest
            assert r.tx_hash == recorder.receipts[k].tx_hash
        assert contract.task_info(recorder.task).finished
        final = outcome["final"]
        assert final.shape == (DIM,)
        assert np.all(np.isfinite(final))
        # the booster never steered the model: every coordinate moved toward the true weights
        assert np.all(final > 0)
        assert aggregate_digest(quantize(final)) != aggregate_digest(quantize(np.zeros(DIM)))
