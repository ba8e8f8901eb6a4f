"""A scikit-learn Pipeline whose last step is ``audited()``: every decision logged, then verified.

Steps (README.md beside this file explains each one):

1. an audit log (RFC 6962 Merkle tree, C2SP signed checkpoints) in ``--dir``, and its key;
2. ``make_pipeline(StandardScaler(), audited(LogisticRegression(), log=..., actor=...))``;
3. ``cross_val_score`` (5 folds): each held-out prediction is one logged decision, so the log
   grows by exactly one entry per row, and the scores equal the unwrapped pipeline's;
4. the pipeline fitted and serving: ``predict(X, actor="frontdesk")`` names the actor per call;
5. a signed checkpoint; the whole log verified (every leaf recomputed), and one decision's
   inclusion receipt (C2SP tlog-proof) checked as an auditor would, with only the public key.

Usage::

    python examples/sklearn_pipeline/run.py [--dir DIR] [--summary FILE]

Exit code 0 when every step gave its promised outcome, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ailedger.auditlog import AuditLog, audited, verify_receipt
from ailedger.auditlog.verify import DirectorySource, verify_export, verify_stored
from ailedger.errors import AiledgerError

ORIGIN = "example.org/sklearn-pipeline"


def run(root: Path) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, _ = train_test_split(X, y, test_size=0.2, random_state=0)

    # 1. the log; in a workspace, AuditLog.for_workspace(ws) and ws.signing_key(...) instead
    key = Ed25519PrivateKey.generate()
    with AuditLog.open(root / "log.sqlite", origin=ORIGIN) as log:
        print(f"1. audit log {log.origin} at {root / 'log.sqlite'}")

        # 2. the pipeline, its last step audited
        pipeline = make_pipeline(
            StandardScaler(),
            audited(LogisticRegression(max_iter=1000), log=log, actor="model-validation"),
        )
        print(f"2. {pipeline}")

        # 3. cross-validation: scores as without auditing, one decision per held-out row
        scores = cross_val_score(pipeline, X_train, y_train, cv=5)
        plain = cross_val_score(
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
            X_train,
            y_train,
            cv=5,
        )
        summary["cv_scores"] = [round(float(s), 4) for s in scores]
        summary["cv_scores_match_unaudited"] = bool(np.array_equal(scores, plain))
        summary["cv_decisions"] = log.size
        print(
            f"3. cross_val_score {np.mean(scores):.4f} (5 folds, same as unaudited: "
            f"{summary['cv_scores_match_unaudited']}); {log.size} decisions logged for "
            f"{len(X_train)} rows"
        )

        # 4. fitted and serving, the actor given per call
        pipeline.fit(X_train, y_train)
        before = log.size
        predictions = pipeline.predict(X_test[:10], actor="frontdesk")
        pipeline.predict_proba(X_test[10:12], actor="second-opinion")
        served = [json.loads(data) for _, data in log.entries(before)]
        summary["served_decisions"] = len(served)
        summary["actors"] = sorted({r["actor"] for r in served})
        summary["model_digest"] = served[0]["model"]
        summary["input_committed"] = set(served[0]["input"]) == {"commitment"}
        print(
            f"4. served {len(predictions)} predictions and 2 probabilities: entries "
            f"{before}..{log.size - 1}, actors {', '.join(summary['actors'])}, model "
            f"{summary['model_digest'][:23]}..., inputs committed: {summary['input_committed']}"
        )

        # 5. checkpoint; the operator's deep check; then an auditor's: the export (C2SP
        # tlog-tiles), the served decisions' exact bytes, one receipt, only the public key
        log.checkpoint(key)
        verifier = log.verifier(key.public_key())
        stored = verify_stored(log, verifier, deep=True)
        log.export(root / "export")
        held = [(i, log.entry_data(i)) for i in range(before, log.size)]
        report = verify_export(DirectorySource(root / "export"), verifier, entries=held)
        receipt = log.receipt(before)  # the first decision served to "frontdesk"
        checkpoint = verify_receipt(receipt, [verifier], entry=held[0][1])
        summary["verified_size"] = stored.size
        summary["export_entries_checked"] = report.entries_checked
        summary["receipt_size"] = checkpoint.size
        print(
            f"5. log verified: {stored.size} leaves recomputed from storage; the export checks "
            f"with the {report.entries_checked} served entries; receipt for entry {before} OK"
        )
        print(f"   verifier key for auditors: {log.verifier_key(key.public_key())}")

        summary["ok"] = bool(
            summary["cv_scores_match_unaudited"]
            and summary["cv_decisions"] == len(X_train)
            and summary["served_decisions"] == 12
            and summary["actors"] == ["frontdesk", "second-opinion"]
            and summary["input_committed"]
            and summary["verified_size"] == log.size
            and summary["export_entries_checked"] == 12
            and summary["receipt_size"] == log.size
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="Work here (default: a temporary folder).")
    parser.add_argument("--summary", type=Path, help="Write the outcomes here as JSON.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ailedger-sklearn-") as tmp:
        root = Path(args.dir or tmp).resolve()
        root.mkdir(parents=True, exist_ok=True)
        try:
            summary = run(root)
        except AiledgerError as exc:
            summary = {"ok": False, "error": str(exc)}
            print(f"error: {exc}", file=sys.stderr)
    if args.summary is not None:
        args.summary.write_text(json.dumps(summary, indent=1) + "\n")
    print("ok" if summary["ok"] else "FAILED")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
