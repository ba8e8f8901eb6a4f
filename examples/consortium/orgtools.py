"""What an organisation's own code does beside the ``ailedger`` CLI in the consortium example.

Two commands, each run by ``run.py`` as a process of its own:

``dataset OUT``
    Write scikit-learn's bundled digits data set (8x8 images, 1,797 rows, UCI's "Optical
    Recognition of Handwritten Digits") as a CSV file: 64 pixel columns ``p0..p63`` (0-16),
    then the label ``digit``. This is the data set clinic A registers and shares.

``predict --workspace WS --model MODEL --trust PEM --rpc URL --count N``
    Load the trained model through :func:`ailedger.provenance.load_verified` (its bytes,
    bundle, registration on chain and signature are checked before anything is loaded), wrap
    it with :func:`ailedger.auditlog.audited`, and classify ``N`` test digits: one decision
    per row goes into the workspace's audit log, the input committed, never stored in the
    tree. Prints one JSON object: ``{"count", "correct", "log_size", "model"}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


def write_dataset(out: Path) -> None:
    """Write the digits data set to ``out`` as CSV (a header row, then 1,797 rows)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*(f"p{i}" for i in range(64)), "digit"])
        for row, label in zip(digits.data, digits.target, strict=True):
            writer.writerow([*(int(v) for v in row), int(label)])


class DigitsClassifier:
    """The federated model as a scikit-learn style estimator (``predict(X)`` only)."""

    def __init__(self, params: npt.NDArray[np.float64], spec: dict[str, Any]) -> None:
        from ailedger.federated.models import make_model

        options = {"hidden": int(spec["hidden"])} if "hidden" in spec else {}
        self.net = make_model(
            str(spec["model"]),
            num_features=int(spec["num_features"]),
            num_classes=int(spec["num_classes"]),
            **options,
        )
        self.params = params

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """The most probable digit of each row of ``x`` (shape ``(n, 64)``)."""
        return self.net.predict(self.params, np.asarray(x, dtype=np.float64))


def predict(workspace: Path, model: Path, trust: Path, rpc: str, count: int) -> dict[str, Any]:
    """Serve ``count`` audited predictions with the verified ``model``; returns the tally."""
    from ailedger.auditlog import AuditLog, audited
    from ailedger.crypto.keys import load_verification_key
    from ailedger.federated.data import load_dataset
    from ailedger.provenance import load_verified
    from ailedger.workspace import Workspace

    loaded = load_verified(model, trusted_keys=[load_verification_key(trust)], rpc=rpc)
    bundle = json.loads(Path(str(model) + ".ailedger.json").read_text())
    digest = str(bundle["digest"])  # sha256:<hex>, as registered
    classifier = DigitsClassifier(
        np.asarray(loaded["params"], dtype=np.float64), json.loads(str(loaded["spec"]))
    )
    # the same preprocessing and held-out split as the training task's (data digits, seed 0)
    data = load_dataset("digits", seed=0)
    x, y = data.x_test[:count], data.y_test[:count]
    with AuditLog.for_workspace(Workspace.open(workspace)) as log:
        served = audited(classifier, log=log, actor="clinic-a/triage", model_digest=digest)
        predicted = served.predict(x)
        size = log.size
    correct = int(np.sum(np.asarray(predicted) == np.asarray(y)))
    return {"count": len(y), "correct": correct, "log_size": size, "model": digest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("dataset", help="write the digits data set as CSV")
    made.add_argument("out", type=Path)
    served = commands.add_parser("predict", help="audited predictions with the verified model")
    served.add_argument("--workspace", type=Path, required=True)
    served.add_argument("--model", type=Path, required=True)
    served.add_argument("--trust", type=Path, required=True)
    served.add_argument("--rpc", required=True)
    served.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    if args.command == "dataset":
        write_dataset(args.out)
        return
    try:
        result = predict(args.workspace, args.model, args.trust, args.rpc, args.count)
    except Exception as exc:  # one line, as the CLI does, so run.py can name the step
        sys.stderr.write(f"error: {type(exc).__name__}: {str(exc).splitlines()[0]}\n")
        sys.exit(1)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
