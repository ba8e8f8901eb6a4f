"""Gas per round of the TrainingTask protocol, and what recording costs a simulation.

1. Gas: n parties (synthetic least-squares updates of 650 values, the size of a digits
   logistic regression) run rounds of commit / reveal / attest on the embedded chain; we
   report the gas of all their transactions per round (steady state: rounds after the first,
   whose first writes to fresh storage slots cost more), per party and per transaction kind.
2. Recording: ``ailedger train simulate``'s loop on digits with and without a
   :class:`LedgerRecorder` (one ``record`` transaction per round on the embedded chain);
   the ratio of wall times is the ledger's overhead (data loaded once, one warm-up run).

Prints a table and writes ``benchmarks/results/training_protocol.json``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ailedger.federated.data import load_dataset
from ailedger.federated.protocol import (
    LedgerRecorder,
    Party,
    TaskSpec,
    create_task,
    model_digest,
    run_local,
)
from ailedger.federated.simulate import SimulationConfig, simulate
from ailedger.federated.transport import BlobStore
from ailedger.ledger import Ledger, Signer
from ailedger.ledger.training import TrainingTask

DIM = 650
RESULTS = Path(__file__).parent / "results" / "training_protocol.json"


def gas_per_round(n: int, rounds: int = 4) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        funder = Signer.from_key(secrets.token_bytes(32))
        with Ledger.embedded(
            root / "chain", signer=funder, genesis_balances={funder.address: 10**27}
        ) as ledger:
            contract = TrainingTask.deploy(ledger)
            signers = [Signer.from_key(secrets.token_bytes(32)) for _ in range(n)]
            for s in signers:
                ledger.transfer(s.address, 10**21)
            spec = TaskSpec(
                shape=(DIM,),
                initial_digest=model_digest(np.zeros(DIM)),
                rounds=rounds,
                quorum=n // 2 + 1,
                contribution="weights",
                exclude_after=rounds + 1,
                commit_blocks=4 * n,
                reveal_blocks=4 * n,
                attest_blocks=4 * n,
            )
            task, created = create_task(contract, spec, [s.address for s in signers])
            store = BlobStore(root / "blobs")
            parties = []
            for i, s in enumerate(signers):
                rng = np.random.default_rng(i)
                parties.append(
                    Party(
                        contract=contract.with_ledger(ledger.with_signer(s)),
                        task=task,
                        spec=spec,
                        initial_params=np.zeros(DIM),
                        train=lambda w, rng=rng: 0.01 * rng.normal(size=DIM),
                        store=store,
                        endpoint=store.uri,
                    )
                )
            run_local(parties, miner=ledger)
            per_round = [sum(p.reports[r].gas_used for p in parties) for r in range(rounds)]
    steady = statistics.mean(per_round[1:])
    return {
        "parties": n,
        "create_task_gas": created.gas_used,
        "gas_per_round": per_round,
        "steady_gas_per_round": steady,
        "steady_gas_per_party_round": steady / n,
    }


def recorder_overhead(
    rounds: int = 10,
    clients: int = 10,
    data: str = "digits",
    data_dir: Path | None = None,
    *,
    model: str = "logreg",
    background: bool = True,
) -> dict[str, Any]:
    """Wall time of the same simulation without and with each round recorded on chain.

    The two alternate, twice each, and the best of each counts, so other load on the machine
    hits both alike.
    """
    config = SimulationConfig(
        data=data, data_dir=data_dir, clients=clients, rounds=rounds, seed=0, model=model
    )
    dataset = load_dataset(data, data_dir, seed=0)
    simulate(config, dataset=dataset)
    without_runs, with_runs, gas_per_round = [], [], 0.0
    recorder_seconds: list[float] = []
    for _ in range(2):
        start = time.perf_counter()
        plain = simulate(config, dataset=dataset)
        without_runs.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as folder:
            signer = Signer.from_key(secrets.token_bytes(32))
            with Ledger.embedded(
                Path(folder), signer=signer, genesis_balances={signer.address: 10**27}
            ) as ledger:
                contract = TrainingTask.deploy(ledger)
                recorder = LedgerRecorder.start(
                    contract,
                    spec=config.to_json(),
                    rounds=rounds,
                    rule=config.rule,
                    background=background,
                )
                inside: list[float] = []

                def timed_recorder(
                    result: Any, recorder: LedgerRecorder = recorder, inside: list[float] = inside
                ) -> None:
                    began = time.perf_counter()
                    recorder(result)
                    inside.append(time.perf_counter() - began)

                start = time.perf_counter()
                recorded = simulate(config, dataset=dataset, on_round=timed_recorder)
                began = time.perf_counter()
                recorder.flush()
                inside.append(time.perf_counter() - began)
                with_runs.append(time.perf_counter() - start)
                recorder_seconds.append(sum(inside))
                gas_per_round = recorder.gas_used / rounds
        assert recorded.model_digest == plain.model_digest
    without, with_ledger = min(without_runs), min(with_runs)
    return {
        "data": data,
        "model": model,
        "recorder": "background" if background else "inline",
        "rounds": rounds,
        "clients": clients,
        "seconds_without_ledger": without,
        "seconds_with_ledger": with_ledger,
        "round_seconds_without_ledger": without / rounds,
        "overhead": with_ledger / without - 1,
        "recorder_seconds_per_round": min(recorder_seconds) / rounds,
        "recorder_share_of_round": min(recorder_seconds) / without,
        "record_gas_per_round": gas_per_round,
    }


MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-clients", type=int, default=100, help="FLTrust's setting: 100")
    parser.add_argument("--mnist-rounds", type=int, default=5)
    args = parser.parse_args()
    gas = [gas_per_round(n) for n in (3, 4, 8)]
    overheads = [recorder_overhead()]
    if MNIST.is_dir():
        overheads.append(recorder_overhead(rounds=3, clients=20, data="mnist", data_dir=MNIST))
        for model in ("logreg", "mlp"):
            for background in (False, True):
                overheads.append(
                    recorder_overhead(
                        rounds=args.mnist_rounds,
                        clients=args.mnist_clients,
                        data="mnist",
                        data_dir=MNIST,
                        model=model,
                        background=background,
                    )
                )
    print(f"{'parties':>8} {'gas/round':>12} {'gas/party/round':>16} {'create_task':>12}")
    for row in gas:
        print(
            f"{row['parties']:>8} {row['steady_gas_per_round']:>12.0f} "
            f"{row['steady_gas_per_party_round']:>16.0f} {row['create_task_gas']:>12}"
        )
    for overhead in overheads:
        print(
            f"simulate {overhead['data']} {overhead['model']} ({overhead['recorder']} recorder), "
            f"{overhead['rounds']} rounds x "
            f"{overhead['clients']} clients: {overhead['seconds_without_ledger']:.2f} s without "
            f"the ledger, {overhead['seconds_with_ledger']:.2f} s with it (overhead "
            f"{100 * overhead['overhead']:.1f}% end to end; the recorder itself "
            f"{1000 * overhead['recorder_seconds_per_round']:.0f} ms a round = "
            f"{100 * overhead['recorder_share_of_round']:.1f}% of a round; "
            f"{overhead['record_gas_per_round']:.0f} gas "
            "per recorded round)"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"gas": gas, "recorder": overheads}, indent=1) + "\n")


if __name__ == "__main__":
    main()
