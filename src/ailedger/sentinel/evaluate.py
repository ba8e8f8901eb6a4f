"""Evaluating the detectors on labelled traces, split by time; and the Elliptic benchmark.

:func:`evaluate` runs the feature extractor and the rules over blocks in chain order, splits the
transactions by block number (the first ``train_fraction`` of the blocks train, the rest test:
never a random split, which would leak the future into training), fits the unsupervised
detector on the training range without labels, the supervised one and a random-forest baseline
(Breiman, "Random Forests", 2001) with them, and reports on the test range, per attack class:
precision, recall, F1, PR-AUC (average precision) and alerts per 1,000 blocks; false alerts per
1,000 benign transactions; and a held-out-class run per class (train without class X, test on
benign and X; only for classes present on both sides of the split). The rules are scored on
the same test range as a baseline, and so is the combination the sentinel runs (a rule's class
where a rule fires, the model's elsewhere, as ``rules+gradient-boosting``). Labels come from a
separate JSON-lines file (:func:`load_labels`); only the supervised fits see them. Every figure
and plot says the data are synthetic.

:func:`load_elliptic` reads the Elliptic data set in its published CSV schema (Weber et al.,
"Anti-Money Laundering in Bitcoin: Experimenting with Graph Convolutional Networks for Financial
Forensics", KDD Workshop on Anomaly Detection in Finance, 2019): ``elliptic_txs_features.csv``
with no header (txId, time step, 165 features), ``elliptic_txs_classes.csv`` (``txId,class``;
``1`` illicit, ``2`` licit, ``unknown``) and ``elliptic_txs_edgelist.csv`` (``txId1,txId2``).
:func:`elliptic_benchmark` reproduces the paper's temporal split (time steps 1-34 train, 35-49
test) and its random forest on all features (50 trees, 50 features per split), scored by the
F1 of the illicit class. The summary prints a figure only when the files are the real data set
(203,769 transactions, 234,355 edges); on anything else it says "fixture" and prints none.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import average_precision_score, f1_score

from ailedger._input import iter_json_lines
from ailedger.errors import InputError
from ailedger.ledger.chaindata import BlockRecord
from ailedger.sentinel.detectors import Alert, AnomalyDetector, SupervisedDetector, primary_alert
from ailedger.sentinel.features import FeatureExtractor, FeatureRow, rows_to_matrix
from ailedger.sentinel.rules import RuleEngine

__all__ = [
    "BENIGN",
    "ClassMetrics",
    "DetectorReport",
    "EllipticData",
    "EllipticResult",
    "EvaluationReport",
    "HeldOutResult",
    "elliptic_benchmark",
    "evaluate",
    "load_elliptic",
    "load_labels",
    "plot_report",
]

BENIGN = "benign"
SYNTHETIC = "synthetic data (generated traffic), not a measurement of a public chain"

ELLIPTIC_TRANSACTIONS = 203_769
ELLIPTIC_EDGES = 234_355
ELLIPTIC_FEATURES = 165


def load_labels(path: str | Path) -> dict[str, str]:
    """``tx hash (0x, lower-case) -> class`` from a JSON-lines labels file.

    Each line is an object with the hash under ``tx`` (or ``tx_hash``/``hash``) and the class
    under ``class`` (or ``label``); other keys (block, role, source) are ignored.
    """
    labels: dict[str, str] = {}
    name = Path(path).name
    try:
        stream = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise InputError(f"cannot read labels file {name}: {exc.strerror}") from exc
    with stream:
        for number, doc in iter_json_lines(stream, what=name):
            if not isinstance(doc, dict):
                raise InputError(f"{name} line {number}: expected a JSON object")
            tx = doc.get("tx", doc.get("tx_hash", doc.get("hash")))
            cls = doc.get("class", doc.get("label"))
            if not isinstance(tx, str) or not tx.startswith("0x") or len(tx) != 66:
                raise InputError(f"{name} line {number}: no 0x-prefixed 32-byte tx hash")
            if not isinstance(cls, str) or not cls:
                raise InputError(f"{name} line {number}: no class")
            labels[tx.lower()] = cls
    return labels


@dataclass(frozen=True)
class ClassMetrics:
    """One detector on one class over the test range."""

    precision: float
    recall: float
    f1: float
    pr_auc: float
    """Average precision; NaN when the detector has no score for this class."""
    alerts_per_1000_blocks: float
    support: int

    def to_json(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in vars(self).items()
        }


@dataclass
class DetectorReport:
    """Per-class metrics (``"attack"`` is any class vs benign) and the false-alert rate."""

    name: str
    per_class: dict[str, ClassMetrics]
    false_alerts_per_1000_benign: float


@dataclass(frozen=True)
class HeldOutResult:
    """Class ``held_out`` left out of training, tested on benign and it (flagged or not).

    ``recall``/``f1``: gradient boosting alone; ``sentinel_*``: the rules or the model flagging
    (what the sentinel runs); ``rf_f1``: the random-forest baseline fitted the same way.
    """

    held_out: str
    recall: float
    f1: float
    support: int
    sentinel_recall: float = float("nan")
    sentinel_f1: float = float("nan")
    rf_f1: float = float("nan")


@dataclass
class EvaluationReport:
    """Everything :func:`evaluate` measured; ``note`` says the data are synthetic."""

    train_blocks: tuple[int, int]
    test_blocks: tuple[int, int]
    n_train: int
    n_test: int
    detectors: dict[str, DetectorReport]
    held_out: list[HeldOutResult]
    note: str = SYNTHETIC
    plots: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "note": self.note,
            "train_blocks": list(self.train_blocks),
            "test_blocks": list(self.test_blocks),
            "n_train": self.n_train,
            "n_test": self.n_test,
            "detectors": {
                name: {
                    "false_alerts_per_1000_benign": d.false_alerts_per_1000_benign,
                    "per_class": {c: m.to_json() for c, m in d.per_class.items()},
                }
                for name, d in self.detectors.items()
            },
            "held_out": [vars(h) for h in self.held_out],
            "plots": self.plots,
        }


def _metrics(
    truth: Sequence[str],
    predicted: Sequence[str],
    scores: npt.NDArray[np.float64] | None,
    cls: str,
    n_blocks: int,
) -> ClassMetrics:
    if cls == "attack":
        is_true = np.array([t != BENIGN for t in truth])
        is_pred = np.array([p != BENIGN for p in predicted])
    else:
        is_true = np.array([t == cls for t in truth])
        is_pred = np.array([p == cls for p in predicted])
    tp = int(np.sum(is_true & is_pred))
    n_pred, n_true = int(is_pred.sum()), int(is_true.sum())
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    pr_auc = float("nan")
    if scores is not None and 0 < n_true < len(truth):
        pr_auc = float(average_precision_score(is_true, scores))
    per_1000 = 1000.0 * n_pred / n_blocks if n_blocks else 0.0
    return ClassMetrics(precision, recall, f1, pr_auc, per_1000, n_true)


def _report(
    name: str,
    truth: Sequence[str],
    predicted: Sequence[str],
    class_scores: Mapping[str, npt.NDArray[np.float64]] | None,
    classes: Sequence[str],
    n_blocks: int,
) -> DetectorReport:
    per_class = {}
    for cls in [*classes, "attack"]:
        scores = None if class_scores is None else class_scores.get(cls)
        per_class[cls] = _metrics(truth, predicted, scores, cls, n_blocks)
    benign = sum(1 for t in truth if t == BENIGN)
    false = sum(1 for t, p in zip(truth, predicted, strict=True) if t == BENIGN and p != BENIGN)
    return DetectorReport(name, per_class, 1000.0 * false / benign if benign else 0.0)


def _supervised_scores(
    model: SupervisedDetector | RandomForestClassifier, X: npt.NDArray[np.float64]
) -> dict[str, npt.NDArray[np.float64]]:
    proba = model.predict_proba(X)
    out = {str(c): proba[:, j] for j, c in enumerate(model.classes_)}
    if BENIGN in out:
        out["attack"] = 1.0 - out[BENIGN]
    return out


def evaluate(
    blocks: Iterable[BlockRecord],
    labels: Mapping[str, str],
    *,
    train_fraction: float = 0.5,
    alert_rate: float = 0.001,
    max_iter: int = 200,
    n_estimators: int = 100,
    random_state: int = 0,
    extractor: FeatureExtractor | None = None,
    rules: RuleEngine | None = None,
    plot_dir: str | Path | None = None,
) -> EvaluationReport:
    """Time-split evaluation of every detector on ``blocks`` (see the module docstring).

    ``labels`` maps ``0x`` tx hashes to classes (unlisted transactions are benign);
    ``max_iter`` sizes the gradient boosting, ``n_estimators`` the forests.
    """
    if not 0.0 < train_fraction < 1.0:
        raise InputError(f"train_fraction must be in (0, 1), got {train_fraction}")
    extractor = extractor or FeatureExtractor()
    rules = rules or RuleEngine()
    rows: list[FeatureRow] = []
    by_tx: dict[str, list[Alert]] = {}  # an alert may name a transaction of an earlier block
    for block in blocks:
        block_rows = extractor.process(block)
        rows.extend(block_rows)
        for alert in rules.scan(block_rows):
            by_tx.setdefault(alert.tx, []).append(alert)
    senders = {r.tx: r.sender for r in rows}
    rule_class: dict[str, str] = {}
    for tx, found in by_tx.items():
        chosen = primary_alert(found, senders.get(tx))
        if chosen is not None:
            rule_class[tx] = chosen.attack_class
    if not rows:
        raise InputError("no transactions to evaluate")
    numbers = sorted({r.block_number for r in rows})
    cut = numbers[min(len(numbers) - 1, max(1, int(len(numbers) * train_fraction)))]
    train = [r for r in rows if r.block_number < cut]
    test = [r for r in rows if r.block_number >= cut]
    if not train or not test:
        raise InputError("too few blocks with transactions to split by time")
    truth_train = [labels.get(r.tx, BENIGN) for r in train]
    truth_test = [labels.get(r.tx, BENIGN) for r in test]
    classes = sorted({t for t in truth_train + truth_test if t != BENIGN})
    X_train, X_test = rows_to_matrix(train), rows_to_matrix(test)
    test_blocks = sorted({r.block_number for r in test})
    n_test_blocks = test_blocks[-1] - test_blocks[0] + 1
    detectors: dict[str, DetectorReport] = {}

    # unsupervised: learns from the training range without labels
    anomaly = AnomalyDetector(
        n_estimators=n_estimators, alert_rate=alert_rate, random_state=random_state
    ).fit(X_train)
    a_score = anomaly.anomaly_score(X_test)
    a_pred = ["anomaly" if s > 0 else BENIGN for s in a_score]
    detectors["isolation-forest"] = _report(
        "isolation-forest", truth_test, a_pred, {"attack": a_score}, classes, n_test_blocks
    )

    # rules: no training at all
    r_pred = [rule_class.get(r.tx, BENIGN) for r in test]
    detectors["rules"] = _report("rules", truth_test, r_pred, None, classes, n_test_blocks)

    if len(set(truth_train)) >= 2:
        supervised = SupervisedDetector(max_iter=max_iter, random_state=random_state).fit(
            X_train, truth_train
        )
        s_attack = supervised.score_samples(X_test)
        s_class = supervised.attack_class(X_test)
        s_pred = [
            c if s >= supervised.threshold else BENIGN
            for c, s in zip(s_class, s_attack, strict=True)
        ]
        detectors["gradient-boosting"] = _report(
            "gradient-boosting",
            truth_test,
            s_pred,
            _supervised_scores(supervised, X_test),
            classes,
            n_test_blocks,
        )
        # what the sentinel runs: a rule's verdict where one fires, the model's elsewhere
        combined = [r if r != BENIGN else m for r, m in zip(r_pred, s_pred, strict=True)]
        detectors["rules+gradient-boosting"] = _report(
            "rules+gradient-boosting", truth_test, combined, None, classes, n_test_blocks
        )
        forest = RandomForestClassifier(
            n_estimators=n_estimators, class_weight="balanced", random_state=random_state, n_jobs=1
        ).fit(X_train, truth_train)
        f_pred = [str(p) for p in forest.predict(X_test)]
        detectors["random-forest"] = _report(
            "random-forest",
            truth_test,
            f_pred,
            _supervised_scores(forest, X_test),
            classes,
            n_test_blocks,
        )

    held_out = []
    # a class absent from the test range has no F1 to report (it would read as a spurious 0)
    for cls in sorted({t for t in truth_train if t != BENIGN} & set(truth_test)):
        keep = [i for i, t in enumerate(truth_train) if t != cls]
        y_keep = [truth_train[i] for i in keep]
        if len(set(y_keep)) < 2:
            continue
        model = SupervisedDetector(max_iter=max_iter, random_state=random_state).fit(
            X_train[keep], y_keep
        )
        subset = [i for i, t in enumerate(truth_test) if t in (BENIGN, cls)]
        if not subset:
            continue
        y_true = np.array([truth_test[i] == cls for i in subset])
        flagged = model.score_samples(X_test[subset]) >= model.threshold
        by_rule = np.array([r_pred[i] != BENIGN for i in subset])
        either = flagged | by_rule
        rf = RandomForestClassifier(
            n_estimators=n_estimators, class_weight="balanced", random_state=random_state, n_jobs=1
        ).fit(X_train[keep], y_keep)
        rf_flagged = np.array([str(p) != BENIGN for p in rf.predict(X_test[subset])])
        held_out.append(
            HeldOutResult(
                cls,
                float(flagged[y_true].mean()) if y_true.any() else 0.0,
                float(f1_score(y_true, flagged, zero_division=0.0)),
                int(y_true.sum()),
                float(either[y_true].mean()) if y_true.any() else 0.0,
                float(f1_score(y_true, either, zero_division=0.0)),
                float(f1_score(y_true, rf_flagged, zero_division=0.0)),
            )
        )

    report = EvaluationReport(
        (numbers[0], cut - 1),
        (cut, numbers[-1]),
        len(train),
        len(test),
        detectors,
        held_out,
    )
    if plot_dir is not None:
        report.plots = plot_report(report, plot_dir)
    return report


def plot_report(report: EvaluationReport, folder: str | Path) -> list[str]:
    """Write PNG bar charts of F1 per class and detector; each says the data are synthetic."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise InputError("plots need matplotlib: pip install matplotlib") from exc
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    names = list(report.detectors)
    classes = sorted({c for d in report.detectors.values() for c in d.per_class})
    for metric in ("f1", "recall"):
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(classes)), 4))
        width = 0.8 / max(1, len(names))
        for k, name in enumerate(names):
            values = [
                getattr(report.detectors[name].per_class[c], metric)
                if c in report.detectors[name].per_class
                else 0.0
                for c in classes
            ]
            ax.bar([i + k * width for i in range(len(classes))], values, width, label=name)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(classes))], classes, rotation=20)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} per attack class (time split) - SYNTHETIC DATA")
        ax.set_ylim(0, 1.25)
        ax.legend(fontsize=7, loc="upper center", ncol=4)
        fig.text(0.01, 0.01, SYNTHETIC, fontsize=7)
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        path = out / f"sentinel_{metric}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path))
    if report.held_out:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.bar([h.held_out for h in report.held_out], [h.recall for h in report.held_out])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("recall")
        ax.set_title("held-out class: trained without it - SYNTHETIC DATA")
        fig.text(0.01, 0.01, SYNTHETIC, fontsize=7)
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        path = out / "sentinel_held_out.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path))
    return written


# -------------------------------------------------------------------------------- Elliptic


@dataclass(frozen=True)
class EllipticData:
    """The labelled Elliptic transactions. ``labels`` is 1 illicit, 0 licit, -1 unknown."""

    tx_ids: npt.NDArray[np.int64]
    time_steps: npt.NDArray[np.int64]
    features: npt.NDArray[np.float64]
    labels: npt.NDArray[np.int64]
    n_edges: int

    @property
    def is_real(self) -> bool:
        """True only for the published data set's sizes."""
        return len(self.tx_ids) == ELLIPTIC_TRANSACTIONS and self.n_edges == ELLIPTIC_EDGES


@dataclass(frozen=True)
class EllipticResult:
    illicit_f1: float
    n_train: int
    n_test: int
    is_real: bool

    def summary(self) -> str:
        """One line; the F1 figure appears only for the real data set."""
        if not self.is_real:
            return (
                f"Elliptic loader ran on a fixture ({self.n_train} train / {self.n_test} test "
                "labelled transactions): no benchmark figure reported"
            )
        return (
            f"Elliptic (Weber et al. 2019), random forest on all features, time steps 1-34 "
            f"train / 35-49 test: illicit F1 {self.illicit_f1:.3f}"
        )


def _rows(path: Path, name: str) -> Iterable[list[str]]:
    try:
        handle = open(path, newline="", encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}") from exc
    with handle:
        yield from csv.reader(handle)


def load_elliptic(folder: str | Path) -> EllipticData:
    """Read the three Elliptic CSV files from ``folder`` (published schema; see above)."""
    base = Path(folder)
    names = ("elliptic_txs_features.csv", "elliptic_txs_classes.csv", "elliptic_txs_edgelist.csv")
    for name in names:
        if not (base / name).is_file():
            raise InputError(f"{name} not found in {base}")
    ids: list[int] = []
    steps: list[int] = []
    feats: list[list[float]] = []
    for number, row in enumerate(_rows(base / names[0], names[0]), 1):
        if len(row) != 2 + ELLIPTIC_FEATURES:
            raise InputError(
                f"{names[0]} line {number}: {len(row)} columns, expected {2 + ELLIPTIC_FEATURES}"
            )
        try:
            ids.append(int(row[0]))
            steps.append(int(float(row[1])))
            feats.append([float(v) for v in row[2:]])
        except ValueError as exc:
            raise InputError(f"{names[0]} line {number}: not a number ({exc})") from None
    index = {tx: i for i, tx in enumerate(ids)}
    labels = np.full(len(ids), -1, dtype=np.int64)
    for number, row in enumerate(_rows(base / names[1], names[1]), 1):
        if number == 1 and row[:2] == ["txId", "class"]:
            continue
        if len(row) != 2 or row[1] not in ("1", "2", "unknown"):
            raise InputError(f"{names[1]} line {number}: expected txId,class (1, 2 or unknown)")
        try:
            i = index[int(row[0])]
        except (ValueError, KeyError):
            raise InputError(f"{names[1]} line {number}: unknown txId {row[0]!r}") from None
        labels[i] = {"1": 1, "2": 0, "unknown": -1}[row[1]]
    edges = 0
    for number, row in enumerate(_rows(base / names[2], names[2]), 1):
        if number == 1 and row[:2] == ["txId1", "txId2"]:
            continue
        if len(row) != 2:
            raise InputError(f"{names[2]} line {number}: expected txId1,txId2")
        edges += 1
    features = np.asarray(feats, dtype=np.float64).reshape(len(ids), ELLIPTIC_FEATURES)
    return EllipticData(
        np.asarray(ids, dtype=np.int64), np.asarray(steps, dtype=np.int64), features, labels, edges
    )


def elliptic_benchmark(
    data: EllipticData, *, train_until: int = 34, random_state: int = 0
) -> EllipticResult:
    """Weber et al.'s random forest (50 trees, 50 features per split), temporal split."""
    known = data.labels >= 0
    train = known & (data.time_steps <= train_until)
    test = known & (data.time_steps > train_until)
    if not train.any() or not test.any():
        raise InputError("the Elliptic data have no labelled transactions on one side of the split")
    if len(set(data.labels[train].tolist())) < 2:
        raise InputError("the Elliptic training range has only one class")
    forest = RandomForestClassifier(
        n_estimators=50,
        max_features=min(50, data.features.shape[1]),
        random_state=random_state,
        n_jobs=1,
    ).fit(data.features[train], data.labels[train])
    predicted = forest.predict(data.features[test])
    f1 = float(f1_score(data.labels[test], predicted, pos_label=1, zero_division=0.0))
    return EllipticResult(f1, int(train.sum()), int(test.sum()), data.is_real)
