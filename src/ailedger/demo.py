"""The main job, end to end on the embedded chain, in a fresh temporary workspace.

1. A workspace is created: keys, settings, the contracts on the embedded chain.
2. A dataset (scikit-learn's digits) is written to a file and will be registered.
3. Four organisations train one model through the federated protocol on chain; one of them
   sends poisoned updates and is excluded by the others.
4. The dataset and the model are registered on chain with their lineage, and the model is
   loaded only through ``load_verified``.
5. The model serves predictions; each decision goes into the audit log (inputs committed).
6. An approval-drain attack runs on the chain; the sentinel reads the blocks back, its rules
   flag the drain with their reasons, and each alert goes into the audit log.
7. The log's checkpoint is anchored on chain.
8. An outside auditor, in another process, verifies the exported log against the log's public
   key and the chain; a tampered copy of the export is rejected with the entry named.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ailedger.errors import InputError, VerificationError
from ailedger.workspace import Workspace

__all__ = ["run_demo"]


def run_demo(
    say: Callable[[str], None], *, keep: Path | None = None, passphrase: str | None = None
) -> dict[str, Any]:
    """Run the demo and return its report; ``say`` receives one line per step.

    With ``keep`` (a folder that does not exist yet, or is empty) everything is created there
    and left behind: the workspace in ``keep/workspace``, the data set and model in
    ``keep/data``, the exported log in ``keep/export``; the report then names them and the
    log's verifier key. Otherwise a temporary folder is used and removed at the end.
    ``passphrase`` protects the workspace's keys (default: a random one, forgotten at the
    end, so a kept workspace needs one to be used again).
    """
    if keep is not None:
        keep = Path(os.path.abspath(keep))
        if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
            raise InputError(f"--keep {keep}: give a new or empty folder")
        keep.mkdir(parents=True, exist_ok=True)
        return _run(keep / "workspace", say, passphrase)
    with tempfile.TemporaryDirectory(prefix="ailedger-demo-") as tmp:
        return _run(Path(tmp) / "workspace", say, passphrase)


def _run(path: Path, say: Callable[[str], None], chosen: str | None) -> dict[str, Any]:
    from ailedger.auditlog import Anchorer, AuditLog, audited
    from ailedger.federated._demo import demo_training
    from ailedger.federated.data import load_dataset
    from ailedger.federated.models import make_model
    from ailedger.provenance import demo_provenance
    from ailedger.provenance.loading import load_verified
    from ailedger.sentinel._demo import demo_sentinel
    from ailedger.sentinel.actions import AuditAction

    passphrase = chosen or secrets.token_urlsafe(24)
    secret = lambda: passphrase  # noqa: E731 - a one-line callback
    say(f"1. init: a workspace with fresh keys at {path}")
    workspace = Workspace.init(path, passphrase=secret)
    report: dict[str, Any] = {"workspace": str(path)}
    data_dir = path.parent / "data"
    data_dir.mkdir(exist_ok=True)
    dataset = load_dataset("digits", seed=0)
    dataset_path = data_dir / "digits.npz"
    np.savez(
        dataset_path,
        x_train=dataset.x_train,
        y_train=dataset.y_train,
        x_test=dataset.x_test,
        y_test=dataset.y_test,
    )
    say(f"2. data: digits, {len(dataset.y_train)} training and {len(dataset.y_test)} test rows")
    with workspace.ledger(passphrase=secret) as ledger:
        say(f"   chain {ledger.chain_id} (embedded), account {ledger.account}")
        say("3. train: 4 parties through the TrainingTask contract, one sends poisoned updates")
        training = demo_training(
            ledger,
            blobs_dir=workspace.blobs_dir / "training",
            contract_address=workspace.contract_address(ledger.chain_id, "TrainingTask"),
            workspace=workspace,
            say=lambda line: say("   " + line),
        )
        if not training["malicious_excluded"]:
            raise VerificationError("the malicious party was not excluded")
        say(
            f"   final test accuracy {training['final_accuracy']:.3f}; excluded "
            f"{', '.join(a[:10] for a in training['excluded'])} (the malicious party)"
        )
        model_path = data_dir / "model.npz"
        spec = training["model_spec"]
        np.savez(model_path, params=training["params"], spec=json.dumps(spec))
        say("4. provenance: register the dataset, then the model with the dataset as parent")
        provenance = demo_provenance(workspace, secret, dataset_path, model_path, ledger=ledger)
        model_digest = str(provenance["model"]["digest"])
        say(f"   model {model_digest[:24]}… registered with lineage; loaded through load_verified")
        loaded = load_verified(
            model_path, trusted_keys=[workspace.public_key()], workspace=workspace, ledger=ledger
        )
        model = make_model(
            str(spec["model"]),
            num_features=dataset.num_features,
            num_classes=dataset.num_classes,
            **({"hidden": int(spec["hidden"])} if "hidden" in spec else {}),
        )
        params = np.asarray(loaded["params"], dtype=np.float64)
        say("5. serve: 50 predictions, each decision logged with its input committed")
        with AuditLog.for_workspace(workspace) as log:

            def classify(rows: Any) -> Any:
                return model.predict(params, np.asarray(rows, dtype=np.float64))

            served = audited(classify, log=log, actor="demo-clinic", model_digest=model_digest)
            predictions = [int(served(dataset.x_test[i : i + 1])[0]) for i in range(50)]
            correct = sum(
                p == int(y) for p, y in zip(predictions, dataset.y_test[:50], strict=True)
            )
            say(f"   {correct}/50 correct; the log holds {log.size} entries")
            say("6. sentinel: an approval-drain attack on the chain; the sentinel flags it")
            sentinel = demo_sentinel(ledger, AuditAction(log), say)
            if not sentinel["drainer_flagged"]:
                raise VerificationError("the sentinel did not flag the drainer")
            say(f"   the log now holds {log.size} entries, the alerts among them")
            say("7. anchor: sign a checkpoint and anchor it on chain")
            anchor = Anchorer(
                log=log,
                registry=workspace.anchor_registry(ledger),
                key=workspace.signing_key(secret),
            ).anchor()
            if anchor is None:
                raise VerificationError("nothing was anchored")
            say(f"   size {anchor.size} anchored in block {anchor.block_number} ({anchor.status})")
            export = path.parent / "export"
            log.export(export)
            verifier_key = log.verifier_key(workspace.public_key())
    say("8. audit: another process verifies the export with the public key and the chain")
    audit = _verify(export, verifier_key, path)
    if audit.returncode != 0:
        raise VerificationError(f"the auditor rejected the log: {audit.stderr.strip()}")
    verified = json.loads(audit.stdout)
    say(
        f"   verified: {verified['size']} entries, {verified['checkpoints']} checkpoint(s), "
        f"{verified['anchors']} anchor(s) on chain"
    )
    tampered = _tamper(export, path.parent / "tampered")
    rejected = _verify(tampered, verifier_key, path)
    if rejected.returncode != 1:
        raise VerificationError("a tampered export was not rejected")
    say(f"   a tampered copy is rejected: {rejected.stderr.strip().removeprefix('error: ')}")
    report.update(
        training={k: v for k, v in training.items() if k not in ("params", "rounds")},
        provenance=provenance,
        decisions=len(predictions),
        sentinel=sentinel,
        correct=correct,
        anchor=anchor.to_json(),
        audit=verified,
        tampering_detected=True,
        export=str(export),
        verifier_key=verifier_key,
        ok=True,
    )
    return report


def _verify(export: Path, key: str, workspace: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ailedger",
            "verify",
            str(export),
            "--key",
            key,
            "--workspace",
            str(workspace),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def _tamper(export: Path, copy: Path) -> Path:
    """A copy of the export in which one logged decision's output was changed."""
    import shutil

    from ailedger.auditlog import _merkle

    shutil.copytree(export, copy)
    bundle = next(p for p in sorted((copy / "tile" / "entries").rglob("*")) if p.is_file())
    entries = _merkle.decode_entry_bundle(bundle.read_bytes())
    victim = len(entries) - 1
    record = json.loads(entries[victim])
    record["output"] = "tampered"
    entries[victim] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    bundle.write_bytes(_merkle.encode_entry_bundle(entries))
    return copy
