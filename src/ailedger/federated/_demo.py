"""The training part of ``ailedger demo``: several parties in one process run the protocol on
one chain (sharing one connection), one of them malicious, on scikit-learn's digits."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ailedger.federated._classifier import _audit_hook, classifier_setup, classifier_spec
from ailedger.federated.data import load_dataset
from ailedger.federated.protocol import Party, create_task, run_local
from ailedger.federated.transport import BlobStore
from ailedger.ledger import Ledger, Signer
from ailedger.ledger.training import TrainingTask

__all__ = ["demo_training"]

_PARTY_FUNDS = 10**20


def demo_training(
    ledger: Ledger,
    *,
    blobs_dir: Path,
    contract_address: str | None = None,
    parties: int = 4,
    malicious: int = 1,
    attack: str = "scaling",
    rounds: int = 4,
    seed: int = 0,
    workspace: Any = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train a logistic regression on digits with ``parties`` parties through the protocol.

    ``ledger`` signs as the first (honest) party and funds the others (new random accounts);
    the last ``malicious`` parties play ``attack``. ``contract_address`` is the chain's
    TrainingTask (deployed here if None); blobs go to the shared folder ``blobs_dir``. With a
    ``workspace`` that has an audit log, each round is appended to it as a ``training.round``
    event. Returns a report: per-round outcomes, who was flagged and excluded, contribution
    scores, the final test accuracy, the gas spent, and the final model (``params``, a numpy
    vector, and ``model_spec``; everything else is JSON-able).
    """
    tell = say or (lambda _line: None)
    contract = (
        TrainingTask(ledger=ledger, address=contract_address)
        if contract_address
        else TrainingTask.deploy(ledger)
    )
    signers: list[Signer | None] = [ledger.signer]
    for _ in range(parties - 1):
        signer = Signer.from_key(secrets.token_bytes(32))
        ledger.transfer(signer.address, _PARTY_FUNDS)
        signers.append(signer)
    ledgers = [ledger.with_signer(s) for s in signers]
    addresses = [lg.account for lg in ledgers]
    bad = set(addresses[parties - malicious :])
    spec = classifier_spec(
        parties=parties,
        rounds=rounds,
        quorum=parties // 2 + 1,
        commit_blocks=4 * parties,
        reveal_blocks=4 * parties,
        attest_blocks=4 * parties,
        seed=seed,
    )
    task, created = create_task(contract, spec, addresses)
    tell(f"training task {task}: {parties} parties ({malicious} playing {attack}), {rounds} rounds")
    dataset = load_dataset("digits", seed=seed)
    store = BlobStore(blobs_dir)
    hook = _audit_hook(workspace, task)
    members: list[Party] = []
    test_accuracy = None
    for index, (party_ledger, address) in enumerate(zip(ledgers, addresses, strict=True)):
        setup = classifier_setup(
            spec, shard=index, attack=attack if address in bad else "none", dataset=dataset
        )
        test_accuracy = test_accuracy or setup.test_accuracy
        members.append(
            Party(
                contract=contract.with_ledger(party_ledger),
                task=task,
                spec=spec,
                initial_params=setup.initial,
                train=setup.train,
                evaluate=setup.evaluate,
                store=store,
                endpoint=store.uri,
                seed=seed,
                on_round=hook if index == 0 else None,
            )
        )
    run_local(members, miner=ledger)
    assert test_accuracy is not None
    honest = members[0]
    excluded = sorted({a for r in honest.reports for a in r.excluded})
    for report in honest.reports:
        names = ", ".join(_short(a) for a in report.excluded) or "nobody"
        tell(
            f"round {report.round}: {report.status}, {len(report.accepted)} updates aggregated, "
            f"flagged {', '.join(_short(a) for a in report.flagged) or 'nobody'}, "
            f"excluded {names}"
        )
    cumulative: dict[str, float] = {}
    for report in honest.reports:
        for address, value in report.scores.items():
            cumulative[address] = cumulative.get(address, 0.0) + value
    return {
        "task": task,
        "contract": contract.address,
        "parties": [
            {
                "address": a,
                "role": "malicious" if a in bad else "honest",
                "excluded": a in excluded,
                "contribution": cumulative.get(a, 0.0),
                "gas_used": m.gas_used,
            }
            for a, m in zip(addresses, members, strict=True)
        ],
        "attack": attack,
        "rule": spec.rule,
        "rounds": [r.to_json() for r in honest.reports],
        "excluded": excluded,
        "malicious_excluded": bad <= set(excluded),
        "final_accuracy": test_accuracy(honest.params),
        "params": honest.params,
        "model_spec": dict(spec.extra["model"]),
        "model_digest": honest.global_digest(),
        "gas_used": created.gas_used + sum(m.gas_used for m in members),
    }


def _short(address: str) -> str:
    return address[:10]
