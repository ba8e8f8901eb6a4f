"""Learned detectors with the scikit-learn estimator API, explained alerts, and model files.

- :class:`AnomalyDetector` learns normal traffic from an unlabelled range: robust scaling
  (median and inter-quartile range per feature) then an Isolation Forest (Liu, Ting, Zhou,
  "Isolation Forest", ICDM 2008). Its threshold is the ``alert_rate`` quantile of the training
  scores, so on traffic like the training range about ``alert_rate`` of transactions alert (the
  default 0.001 is at most one false alert per 1,000 benign transactions). An Isolation Forest
  picks split features at random, so a row extreme in one feature and typical in the rest can
  score as normal; a tail guard fixes that: a row further from the median than ``tail_margin``
  times the furthest training row, in any feature (in robust standard deviations), has the
  excess subtracted from its score. Training rows never trigger it, so the threshold is
  unchanged. Each alert names the features furthest from the training distribution.
- :class:`SupervisedDetector` is gradient boosting (scikit-learn's
  ``HistGradientBoostingClassifier``, after LightGBM: Ke et al., NeurIPS 2017) for when labels
  exist. Each alert names the features whose occlusion (replacing the value by the training
  median, one feature at a time) lowers the predicted attack probability the most.

Both follow scikit-learn's contract (``fit`` returns ``self``, learned attributes end in ``_``,
``score_samples``/``decision_function``/``predict``) and pass ``check_estimator``.

Model files (:func:`save_model`, :func:`load_model`): one JSON header line (format name,
``FORMAT_VERSION``, scikit-learn version, feature names, payload size, and a SHA-256 digest of
the payload, or an HMAC-SHA256 when a key is given), then the pickled estimator. The digest (and
the key, when used) is checked before a single byte is unpickled; a file from another format
version or scikit-learn version, or one whose digest differs, is refused with one line. Without
a key the digest catches corruption, not a forger who rewrites both: keep model files where only
their owner writes, or pass a key.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin, OutlierMixin
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest
from sklearn.exceptions import NotFittedError as SklearnNotFitted
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ailedger._fs import write_atomic
from ailedger._input import parse_json
from ailedger.errors import InputError, NotFittedError
from ailedger.sentinel.features import FEATURE_NAMES, FeatureRow

__all__ = [
    "FORMAT_VERSION",
    "Alert",
    "AnomalyDetector",
    "DetectorNotFitted",
    "ModelFileError",
    "Reason",
    "SavedModel",
    "SupervisedDetector",
    "load_model",
    "make_alerts",
    "primary_alert",
    "save_model",
]

FORMAT_VERSION = 1
_FORMAT = "ailedger-sentinel-model"
_MAX_HEADER = 1 << 20
_EXPLAIN_ROWS = 256  # rows explained per model call (times n_features + 1 probes each)

Matrix = npt.NDArray[np.float64]


class DetectorNotFitted(NotFittedError, SklearnNotFitted):  # type: ignore[misc]
    """A detector was used before ``fit`` (both ailedger's and scikit-learn's error)."""


class ModelFileError(InputError):
    """A model file cannot be used: another version, corrupted, or not a model file."""


@dataclass(frozen=True, slots=True)
class Reason:
    """One piece of evidence: a feature (or fact), its value, and why it matters."""

    feature: str
    value: float | int | str
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"feature": self.feature, "value": self.value, "why": self.why}


@dataclass(frozen=True, slots=True)
class Alert:
    """A scored transaction: what flagged it, as what, how strongly, and why.

    ``score`` is in the detector's own scale, higher meaning more suspicious. ``accounts`` names
    the addresses involved (attacker first when known).
    """

    tx: str
    block: int
    score: float
    flagged: bool
    attack_class: str
    detector: str
    reasons: tuple[Reason, ...] = ()
    accounts: tuple[str, ...] = ()
    related: tuple[str, ...] = field(default=())
    """Other transactions of the same incident (``0x`` hashes)."""

    def to_json(self) -> dict[str, Any]:
        """The JSON-lines form used by ``sentinel scan`` and the alert actions."""
        return {
            "tx": self.tx,
            "block": self.block,
            "score": self.score,
            "flagged": self.flagged,
            "class": self.attack_class,
            "detector": self.detector,
            "reasons": [r.to_json() for r in self.reasons],
            "accounts": list(self.accounts),
            "related": list(self.related),
        }


def primary_alert(alerts: Sequence[Alert], sender: str | None) -> Alert | None:
    """The alert that names a transaction's class when several flag it (None if none do).

    First an alert whose attacker (``accounts[0]``) is the transaction's own ``sender``: an
    attacker's transaction that also sat inside someone else's sandwich is the attacker's act,
    not a victim's. Then the highest score; ties keep the detectors' order.
    """
    if not alerts:
        return None
    who = sender.lower() if sender else None

    def rank(alert: Alert) -> tuple[bool, float]:
        accused = bool(alert.accounts) and who is not None and alert.accounts[0].lower() == who
        return accused, alert.score

    return max(alerts, key=rank)


def _check_fitted(estimator: BaseEstimator, attribute: str) -> None:
    try:
        check_is_fitted(estimator, attribute)
    except SklearnNotFitted as exc:
        raise DetectorNotFitted(
            f"{type(estimator).__name__} is not fitted yet: call fit first"
        ) from exc


def _feature_names(n: int, names: Sequence[str] | None) -> list[str]:
    if names is not None and len(names) == n:
        return list(names)
    if n == len(FEATURE_NAMES):
        return list(FEATURE_NAMES)
    return [f"x{j}" for j in range(n)]


class AnomalyDetector(OutlierMixin, BaseEstimator):  # type: ignore[misc]
    """Robust scaling + Isolation Forest, thresholded at a false-alert rate.

    ``alert_rate`` is the fraction of training transactions that would alert (0 < rate < 0.5);
    ``n_estimators`` and ``max_samples`` go to the forest. ``score_samples`` is scikit-learn's
    convention (lower is more abnormal); :meth:`anomaly_score` is its negation.
    """

    def __init__(
        self,
        *,
        n_estimators: int = 100,
        max_samples: int | float | str = "auto",
        alert_rate: float = 0.001,
        tail_margin: float = 3.0,
        n_reasons: int = 3,
        random_state: int | None = None,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.alert_rate = alert_rate
        self.tail_margin = tail_margin
        self.n_reasons = n_reasons
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> AnomalyDetector:
        """Learn the training distribution of ``X`` (shape ``(n_samples, n_features)``)."""
        X = validate_data(self, X, dtype=np.float64)
        if not 0.0 < self.alert_rate < 0.5:
            raise InputError(f"alert_rate must be in (0, 0.5), got {self.alert_rate}")
        if not self.tail_margin >= 1.0:
            raise InputError(f"tail_margin must be at least 1, got {self.tail_margin}")
        self.center_ = np.median(X, axis=0)
        q75, q25 = np.percentile(X, [75, 25], axis=0)
        scale = q75 - q25
        std = X.std(axis=0)
        scale = np.where(scale > 0, scale / 1.349, std)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        self.forest_ = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=self.max_samples,
            random_state=self.random_state,
        ).fit(self._scaled(X))
        self.extreme_ = np.abs(self._scaled(X)).max(axis=0) + 1.0
        train_scores = self._combined(X)
        self.offset_ = float(np.quantile(train_scores, self.alert_rate))
        return self

    def _scaled(self, X: Matrix) -> Matrix:
        scaled: Matrix = (X - self.center_) / self.scale_
        return scaled

    def _combined(self, X: Matrix) -> Matrix:
        scaled = self._scaled(X)
        excess = np.abs(scaled) / self.extreme_
        penalty = np.maximum(0.0, excess.max(axis=1, initial=0.0) - self.tail_margin)
        scores: Matrix = self.forest_.score_samples(scaled) - penalty
        return scores

    def score_samples(self, X: Any) -> Matrix:
        """Per-row normality, shape ``(n_samples,)``: lower is more abnormal."""
        _check_fitted(self, "forest_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self._combined(X)

    def decision_function(self, X: Any) -> Matrix:
        """``score_samples - offset_``: negative for rows that alert."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> npt.NDArray[np.int64]:
        """-1 for an alert (outlier), 1 for normal."""
        return np.where(self.decision_function(X) < 0, -1, 1).astype(np.int64)

    def anomaly_score(self, X: Any) -> Matrix:
        """Higher is more suspicious (``-decision_function``); positive alerts."""
        return -self.decision_function(X)

    def explain(self, X: Any, feature_names: Sequence[str] | None = None) -> list[list[Reason]]:
        """For each row, the ``n_reasons`` features furthest from the training median."""
        _check_fitted(self, "forest_")
        if np.shape(X)[0] == 0:
            return []
        X = validate_data(self, X, dtype=np.float64, reset=False)
        names = _feature_names(X.shape[1], feature_names)
        z = self._scaled(X)
        out = []
        for i in range(X.shape[0]):
            order = np.argsort(-np.abs(z[i]))[: self.n_reasons]
            out.append(
                [
                    Reason(
                        names[j],
                        float(X[i, j]),
                        f"{X[i, j]:.4g} vs training median {self.center_[j]:.4g} "
                        f"({z[i, j]:+.1f} robust SDs)",
                    )
                    for j in order
                    if z[i, j] != 0
                ]
            )
        return out


class SupervisedDetector(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Gradient boosting over labelled transactions (labels: attack class or ``benign_label``).

    ``score_samples`` is the probability of an attack (``1 - P(benign)``; the top class
    probability when no benign class was seen), ``threshold`` the probability that alerts.
    The default 0.99 is high because balanced class weights inflate attack probabilities: it
    was chosen on the benchmark's tuning seeds (never the reported ones) to keep false alerts
    at or under 1 per 1,000 benign transactions (at 0.5, up to 6.5 on a tuning seed).
    """

    def __init__(
        self,
        *,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        class_weight: str | None = "balanced",
        benign_label: Any = "benign",
        threshold: float = 0.99,
        n_reasons: int = 3,
        random_state: int | None = None,
    ) -> None:
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.class_weight = class_weight
        self.benign_label = benign_label
        self.threshold = threshold
        self.n_reasons = n_reasons
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> SupervisedDetector:
        """Learn from ``X`` (``(n_samples, n_features)``) and labels ``y`` (``(n_samples,)``)."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.model_ = HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            class_weight=self.class_weight,
            random_state=self.random_state,
        ).fit(X, y)
        self.classes_ = self.model_.classes_
        self.n_iter_ = self.model_.n_iter_
        self.median_ = np.median(X, axis=0)
        return self

    def predict_proba(self, X: Any) -> Matrix:
        """Class probabilities, shape ``(n_samples, n_classes)`` in ``classes_`` order."""
        _check_fitted(self, "model_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        proba: Matrix = self.model_.predict_proba(X)
        return proba

    def predict(self, X: Any) -> Any:
        """The most probable class of each row, shape ``(n_samples,)``."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def decision_function(self, X: Any) -> Matrix:
        """The boosted raw scores (``(n_samples,)`` for two classes, else per class)."""
        _check_fitted(self, "model_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        raw: Matrix = self.model_.decision_function(X)
        return raw

    def _benign_index(self) -> int | None:
        matches = np.flatnonzero(self.classes_ == self.benign_label)
        return int(matches[0]) if len(matches) else None

    def _attack_proba(self, proba: Matrix) -> Matrix:
        benign = self._benign_index()
        if benign is None:
            top: Matrix = proba.max(axis=1)
            return top
        attack: Matrix = 1.0 - proba[:, benign]
        return attack

    def score_samples(self, X: Any) -> Matrix:
        """Probability that each row is an attack, shape ``(n_samples,)``."""
        return self._attack_proba(self.predict_proba(X))

    def attack_class(self, X: Any) -> list[str]:
        """The most probable attack class of each row (ignoring the benign class)."""
        return self.score_and_class(X)[1]

    def score_and_class(self, X: Any) -> tuple[Matrix, list[str]]:
        """:meth:`score_samples` and :meth:`attack_class` from one prediction (half the cost)."""
        proba = self.predict_proba(X)
        scores = self._attack_proba(proba)
        masked = proba.copy()
        benign = self._benign_index()
        if benign is not None and masked.shape[1] > 1:
            masked[:, benign] = -1.0
        return scores, [str(c) for c in self.classes_[np.argmax(masked, axis=1)]]

    def explain(self, X: Any, feature_names: Sequence[str] | None = None) -> list[list[Reason]]:
        """For each row, the features whose occlusion by the training median most lowers the
        attack probability."""
        _check_fitted(self, "model_")
        if np.shape(X)[0] == 0:
            return []
        X = validate_data(self, X, dtype=np.float64, reset=False)
        names = _feature_names(X.shape[1], feature_names)
        n_rows, n_features = X.shape
        # every row and its occluded copies in one call: a tree ensemble scores each row on
        # its own, so this equals one call per row, at a fraction of the fixed cost per call
        # (in chunks of _EXPLAIN_ROWS rows, so memory stays bounded)
        idx = np.arange(n_features)
        parts = []
        for first in range(0, n_rows, _EXPLAIN_ROWS):
            chunk = X[first : first + _EXPLAIN_ROWS]
            probes = np.repeat(chunk, n_features + 1, axis=0)
            for i in range(chunk.shape[0]):
                probes[i * (n_features + 1) + idx + 1, idx] = self.median_
            parts.append(self._attack_proba(self.model_.predict_proba(probes)))
        all_scores = np.concatenate(parts)
        out = []
        for i in range(n_rows):
            score = all_scores[i * (n_features + 1) : (i + 1) * (n_features + 1)]
            drop = score[0] - score[1:]
            order = np.argsort(-drop)[: self.n_reasons]
            out.append(
                [
                    Reason(
                        names[j],
                        float(X[i, j]),
                        f"{X[i, j]:.4g} (training median {self.median_[j]:.4g}) adds "
                        f"{drop[j]:+.2f} to the attack probability",
                    )
                    for j in order
                    if drop[j] > 0
                ]
            )
        return out


def make_alerts(
    detector: AnomalyDetector | SupervisedDetector,
    X: Matrix,
    rows: Sequence[FeatureRow],
    *,
    only_flagged: bool = True,
    name: str | None = None,
) -> list[Alert]:
    """Score ``rows`` (features ``X``, aligned) and return their alerts with reasons.

    With ``only_flagged=False`` every row gets an :class:`Alert` (``flagged`` False for most);
    reasons are computed for flagged rows only (they cost a few predictions each).
    """
    if len(rows) != X.shape[0]:
        raise InputError(f"{len(rows)} rows but a matrix of {X.shape[0]}")
    if len(rows) == 0:
        return []
    if isinstance(detector, AnomalyDetector):
        scores = detector.anomaly_score(X)
        flagged = scores > 0
        classes = ["anomaly"] * len(rows)
        label = name or "isolation-forest"
    else:
        scores, classes = detector.score_and_class(X)
        flagged = scores >= detector.threshold
        label = name or "gradient-boosting"
    hits = np.flatnonzero(flagged)
    explained = dict(zip(hits.tolist(), detector.explain(X[hits]), strict=True))
    picked = hits if only_flagged else np.arange(len(rows))
    alerts = []
    for i in picked.tolist():
        row = rows[i]
        accounts = (row.sender,) + ((row.to,) if row.to else ())
        alerts.append(
            Alert(
                tx=row.tx,
                block=row.block_number,
                score=float(scores[i]),
                flagged=bool(flagged[i]),
                attack_class=classes[i] if flagged[i] else "benign",
                detector=label,
                reasons=tuple(explained.get(i, ())),
                accounts=accounts,
            )
        )
    return alerts


# ---------------------------------------------------------------------------- model files


@dataclass(frozen=True)
class SavedModel:
    """A detector read back from a model file, with the feature names it was trained on."""

    detector: AnomalyDetector | SupervisedDetector
    feature_names: tuple[str, ...]
    meta: dict[str, Any]


def _digest(payload: bytes, key: bytes | None) -> str:
    if key is None:
        return "sha256:" + hashlib.sha256(payload).hexdigest()
    return "hmac-sha256:" + hmac.new(key, payload, hashlib.sha256).hexdigest()


def save_model(
    detector: AnomalyDetector | SupervisedDetector,
    path: str | Path,
    *,
    feature_names: Sequence[str] = FEATURE_NAMES,
    key: bytes | None = None,
    meta: dict[str, Any] | None = None,
) -> None:
    """Write ``detector`` to ``path`` (header line + payload), atomically replacing it."""
    if not isinstance(detector, AnomalyDetector | SupervisedDetector):
        raise InputError(f"cannot save a {type(detector).__name__}")
    payload = pickle.dumps(detector, protocol=5)
    header = {
        "format": _FORMAT,
        "version": FORMAT_VERSION,
        "sklearn": sklearn.__version__,
        "kind": type(detector).__name__,
        "features": list(feature_names),
        "size": len(payload),
        "digest": _digest(payload, key),
        "meta": meta or {},
    }
    # an unpredictable, exclusive temp name that never follows a planted link; 0600, because
    # a model file is trusted code once its digest matches
    write_atomic(
        Path(path), json.dumps(header, sort_keys=True).encode() + b"\n" + payload, mode=0o600
    )


def load_model(path: str | Path, *, key: bytes | None = None) -> SavedModel:
    """Read a model file, checking format, versions and digest before unpickling anything."""
    name = Path(path).name
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {name}: {exc.strerror}") from exc
    newline = data.find(b"\n", 0, _MAX_HEADER)
    if newline < 0:
        raise ModelFileError(f"{name} is not an ailedger model file (no header line)")
    try:
        header = parse_json(data[:newline], what=f"{name} header")
    except InputError as exc:
        raise ModelFileError(f"{name} is not an ailedger model file ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise ModelFileError(f"{name} is not an ailedger model file")
    if header.get("version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{name} has model format version {header.get('version')!r}; this ailedger reads "
            f"version {FORMAT_VERSION}: fit the model again"
        )
    if header.get("sklearn") != sklearn.__version__:
        raise ModelFileError(
            f"{name} was saved with scikit-learn {header.get('sklearn')}, this is "
            f"{sklearn.__version__}: fit the model again"
        )
    payload = data[newline + 1 :]
    digest = header.get("digest")
    if header.get("size") != len(payload) or not isinstance(digest, str):
        raise ModelFileError(f"{name} is corrupted (payload size differs from its header)")
    if digest.startswith("hmac-sha256:") and key is None:
        raise ModelFileError(f"{name} is keyed (HMAC): pass the key to load it")
    if not hmac.compare_digest(digest, _digest(payload, key)):
        raise ModelFileError(f"{name} is corrupted or was altered (digest mismatch)")
    features = header.get("features")
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise ModelFileError(f"{name} header has no feature list")
    detector = pickle.load(io.BytesIO(payload))  # noqa: S301 (digest verified above)
    if not isinstance(detector, AnomalyDetector | SupervisedDetector):
        raise ModelFileError(f"{name} holds a {type(detector).__name__}, not a detector")
    meta = header.get("meta")
    return SavedModel(detector, tuple(features), meta if isinstance(meta, dict) else {})
