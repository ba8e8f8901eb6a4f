"""A Flower app whose strategy is ``LedgerStrategy``: robust aggregation, every round on chain.

Steps (README.md beside this file explains each one):

1. an embedded chain in ``--dir`` with a throwaway account; a ``TrainingTask`` contract and a
   single-participant task for this run (``LedgerRecorder.start``);
2. a ServerApp running ``LedgerStrategy`` (rule ``default``, a node flagged twice is no longer
   sampled) and a ClientApp training ailedger's logistic regression on each SuperNode's share
   of scikit-learn's digits (``ailedger.federated.flower_app.local_update``); SuperNode
   ``--malicious`` (partition 3) scales its update by 10 (a boosting attack);
3. Flower's simulation runtime (``flwr.simulation.run_simulation``, 4 SuperNodes, 3 rounds);
4. checks: each round's aggregate digest is the one finalised on chain; the booster is flagged,
   then excluded; replaying the rounds from the public code (same updates, same rule) gives
   every digest again, bit for bit; the final model beats the initial one on held-out digits.

For machines of their own, the same strategy runs under Flower's deployment engine
(``ailedger.federated.flower_app``: ``server_app``, ``client_app``, ``write_app``; see the
project README, "Training across machines").

Usage::

    python examples/flower_app/run.py [--dir DIR] [--summary FILE] [--rounds N]

Exit code 0 when every step gave its promised outcome, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

NODES = 4
MALICIOUS = 3  # the partition id of the booster
BOOST = 10.0


def _quiet_flower(scratch: Path) -> None:
    """Flower and Ray settings from the project's ENVIRONMENT notes: no telemetry, state in a
    short scratch folder (Ray's socket paths must stay short)."""
    for key, value in {
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": str(scratch),
        "FLWR_HOME": str(scratch),
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    }.items():
        os.environ.setdefault(key, value)


def make_client_app() -> Any:
    """Each SuperNode trains on its share; partition ``MALICIOUS`` boosts its update."""
    from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from ailedger.federated.flower_app import local_update

    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        parts = int(context.node_config["num-partitions"])
        server_round = int(message.content.config_records["config"]["server-round"])
        params = message.content.array_records["arrays"]["params"].numpy()
        new = honest_or_boosted(
            local_update(params, pid, parts, server_round=server_round), params, pid
        )
        reply = RecordDict(
            {
                "arrays": ArrayRecord({"params": Array(new)}),
                "metrics": MetricRecord({"num-examples": 1, "partition-id": pid}),
            }
        )
        return Message(content=reply, reply_to=message)

    return app


def honest_or_boosted(new: Any, params: Any, pid: int) -> Any:
    """What partition ``pid`` sends: its honest update, or the booster's scaled one."""
    return params + BOOST * (new - params) if pid == MALICIOUS else new


def replay(rounds: list[Any], rule: str) -> list[str]:
    """Recompute each round's aggregate digest from the public code alone: the same local
    updates (deterministic), in the strategy's order (by node id), aggregated by the rule."""
    from ailedger.federated.aggregate import RULES
    from ailedger.federated.flower_app import initial_params, local_update

    params = initial_params(0)
    digests = []
    for r in rounds:
        updates = []
        for node in r.nodes:
            pid = int(r.metrics[node]["partition-id"])
            new = local_update(params, pid, NODES, server_round=r.round)
            updates.append(honest_or_boosted(new, params, pid) - params)
        result = RULES[rule](updates)
        digests.append(result.digest.hex())
        params = params + result.aggregate
    return digests


def run(root: Path, rounds: int) -> dict[str, Any]:
    from flwr.app import Array, ArrayRecord, Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from ailedger.federated.data import load_digits
    from ailedger.federated.flower import LedgerStrategy
    from ailedger.federated.flower_app import initial_params
    from ailedger.federated.models import LogisticRegression
    from ailedger.federated.protocol import LedgerRecorder
    from ailedger.ledger import Ledger, Signer
    from ailedger.ledger.training import TrainingTask

    summary: dict[str, Any] = {}
    # 1. a throwaway account on an embedded chain, funded at genesis
    signer = Signer.from_key(secrets.token_bytes(32))
    with Ledger.embedded(
        root / "chain", signer=signer, genesis_balances={signer.address: 10**24}
    ) as ledger:
        contract = TrainingTask.deploy(ledger)
        recorder = LedgerRecorder.start(
            contract, spec={"example": "flower_app"}, rounds=rounds, rule="default"
        )
        print(f"1. TrainingTask {contract.address}, task {recorder.task}, account {ledger.account}")

        # 2. the apps
        strategy = LedgerStrategy(
            rule="default",
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
                grid=grid,
                initial_arrays=ArrayRecord({"params": Array(initial_params(0))}),
                num_rounds=rounds,
            )
            outcome["final"] = result.arrays["params"].numpy()

        print(f"2. ServerApp with LedgerStrategy; {NODES} SuperNodes, partition {MALICIOUS} boosts")

        # 3. Flower's simulation runtime (its per-round INFO lines silenced)
        logging.getLogger("flwr").setLevel(logging.WARNING)
        run_simulation(
            server_app=server,
            client_app=make_client_app(),
            num_supernodes=NODES,
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                "init_args": {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False},
            },
        )
        done = strategy.rounds
        print(f"3. {len(done)} rounds run")

        # 4. the checks
        booster = {
            node for r in done for node, m in r.metrics.items() if m["partition-id"] == MALICIOUS
        }
        on_chain = [contract.outcome(recorder.task, r.round - 1) for r in done]
        summary["rounds"] = [
            {
                "round": r.round,
                "digest": r.digest,
                "nodes": len(r.nodes),
                "flagged": [int(n in booster) for n in r.flagged],
                "tx": r.tx_hash,
            }
            for r in done
        ]
        summary["digests_on_chain"] = all(
            o.status == "finalized"
            and o.aggregate_digest is not None
            and o.aggregate_digest.hex() == r.digest
            for o, r in zip(on_chain, done, strict=True)
        )
        summary["booster_flagged"] = all(booster <= set(r.flagged) for r in done[:2])
        summary["booster_excluded"] = booster <= set(done[-1].excluded) and not (
            booster & set(done[-1].nodes)
        )
        summary["replayed_digests_match"] = replay(done, "default") == [r.digest for r in done]
        digits = load_digits(seed=0)  # the held-out part, which no SuperNode trained on
        model = LogisticRegression(num_features=64, num_classes=10)
        start = model.evaluate(initial_params(0), digits.x_test, digits.y_test)
        final = model.evaluate(outcome["final"], digits.x_test, digits.y_test)
        summary["accuracy"] = {"initial": round(start, 4), "final": round(final, 4)}
        for r in done:
            print(
                f"   round {r.round}: {len(r.nodes)} nodes, digest {r.digest[:16]}..., "
                f"flagged {len(r.flagged)}, excluded {len(r.excluded)}, tx {r.tx_hash}"
            )
        print(
            f"4. on chain: {summary['digests_on_chain']}; booster flagged: "
            f"{summary['booster_flagged']}, excluded: {summary['booster_excluded']}; replayed "
            f"digests match: {summary['replayed_digests_match']}; accuracy {start:.3f} -> "
            f"{final:.3f}"
        )
        summary["ok"] = bool(
            len(done) == rounds
            and summary["digests_on_chain"]
            and summary["booster_flagged"]
            and summary["booster_excluded"]
            and summary["replayed_digests_match"]
            and final > start
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="Work here (default: a temporary folder).")
    parser.add_argument("--summary", type=Path, help="Write the outcomes here as JSON.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds (at least 3; default 3).")
    args = parser.parse_args(argv)
    if args.rounds < 3:
        parser.error("--rounds must be at least 3 (the booster is excluded after two)")
    scratch = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    _quiet_flower(scratch)
    from ailedger.errors import AiledgerError

    try:
        with tempfile.TemporaryDirectory(prefix="ailedger-flower-") as tmp:
            root = Path(args.dir or tmp).resolve()
            root.mkdir(parents=True, exist_ok=True)
            try:
                summary = run(root, args.rounds)
            except AiledgerError as exc:
                summary = {"ok": False, "error": str(exc)}
                print(f"error: {exc}", file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.summary is not None:
        args.summary.write_text(json.dumps(summary, indent=1) + "\n")
    print("ok" if summary["ok"] else "FAILED")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
