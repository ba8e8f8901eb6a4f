"""The learned detectors: scikit-learn's estimator checks, false-alert rate, explanations, and
model files that refuse another version or corruption."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from ailedger.errors import AiledgerError, NotFittedError
from ailedger.sentinel.detectors import (
    Alert,
    AnomalyDetector,
    ModelFileError,
    Reason,
    SupervisedDetector,
    load_model,
    make_alerts,
    save_model,
)
from ailedger.sentinel.features import FEATURE_NAMES, FeatureExtractor, rows_to_matrix
from tests.unit.sentinel.test_features import ChainBuilder, Tx, addr


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # OpenMP threads fight over the machine's two shared cores; one thread is much faster here
    with threadpool_limits(1):
        yield


@parametrize_with_checks(
    [
        AnomalyDetector(n_estimators=20, alert_rate=0.1, random_state=0),
        SupervisedDetector(max_iter=3, random_state=0),
    ]
)
def test_scikit_learn_estimator_checks(estimator: Any, check: Any) -> None:
    check(estimator)


@settings(max_examples=5, deadline=None)
@given(
    rows=st.integers(min_value=20, max_value=60),
    cols=st.integers(min_value=1, max_value=5),
    seed=st.integers(0, 2**16),
)
def test_fit_returns_self_and_predicts_plus_minus_one(rows: int, cols: int, seed: int) -> None:
    X = np.random.default_rng(seed).normal(size=(rows, cols))
    detector = AnomalyDetector(n_estimators=10, alert_rate=0.05, random_state=seed)
    assert detector.fit(X) is detector
    assert set(np.unique(detector.predict(X))) <= {-1, 1}
    y = np.where(X[:, 0] > 0, "attack", "benign")
    supervised = SupervisedDetector(max_iter=3, random_state=seed)
    assert supervised.fit(X, y) is supervised


def test_anomaly_detector_false_alert_rate_on_normal_traffic() -> None:
    rng = np.random.default_rng(1)
    train = rng.lognormal(size=(4000, 6))
    fresh = rng.lognormal(size=(4000, 6))
    detector = AnomalyDetector(random_state=0).fit(train)
    alerts_per_1000 = 1000 * np.mean(detector.predict(fresh) == -1)
    assert alerts_per_1000 <= 2.5
    odd = np.median(train, axis=0, keepdims=True)
    odd[0, 4] = 500.0
    assert detector.predict(odd)[0] == -1
    reasons = detector.explain(odd, ["a", "b", "c", "d", "e", "f"])[0]
    assert reasons[0].feature == "e" and reasons[0].value == 500.0
    assert "robust SDs" in reasons[0].why


def _rows_and_matrix() -> tuple[list[Any], np.ndarray]:
    chain = ChainBuilder()
    ext = FeatureExtractor()
    rows = []
    for i in range(60):
        rows += ext.process(
            chain.block([Tx(addr(f"u{i % 7}"), addr(f"v{i % 5}"), value=10**17 + i)])
        )
    return rows, rows_to_matrix(rows)


def test_alerts_explain_themselves() -> None:
    rows, X = _rows_and_matrix()
    X = X.copy()
    X[-1, FEATURE_NAMES.index("value_log10")] = 40.0
    detector = AnomalyDetector(alert_rate=0.02, random_state=0).fit(X[:-1])
    alerts = make_alerts(detector, X, rows)
    assert rows[-1].tx in {a.tx for a in alerts}
    alert = next(a for a in alerts if a.tx == rows[-1].tx)
    assert alert.flagged and alert.attack_class == "anomaly" and alert.score > 0
    assert alert.reasons[0].feature == "value_log10" and alert.reasons[0].value == 40.0
    doc = alert.to_json()
    assert {"tx", "block", "score", "flagged", "class", "reasons", "detector"} <= set(doc)
    assert doc["reasons"][0] == {
        "feature": "value_log10",
        "value": 40.0,
        "why": alert.reasons[0].why,
    }
    json.dumps(doc)
    every = make_alerts(detector, X, rows, only_flagged=False)
    assert [a.tx for a in every] == [r.tx for r in rows]
    quiet = [a for a in every if not a.flagged]
    assert quiet and all(a.reasons == () and a.attack_class == "benign" for a in quiet)


def test_supervised_detector_names_class_and_driving_feature() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(600, 5))
    y = np.array(["benign"] * 600, dtype=object)
    y[X[:, 2] > 1.5] = "spam_flood"
    detector = SupervisedDetector(max_iter=15, random_state=0).fit(X, y)
    probe = np.zeros((1, 5))
    probe[0, 2] = 3.0
    assert detector.attack_class(probe) == ["spam_flood"]
    assert detector.score_samples(probe)[0] > 0.5
    reasons = detector.explain(probe, ["a", "b", "c", "d", "e"])[0]
    assert reasons[0].feature == "c"


def test_unfitted_detector_raises_ailedger_error() -> None:
    with pytest.raises(NotFittedError, match="fit"):
        AnomalyDetector().predict(np.zeros((1, 2)))
    with pytest.raises(AiledgerError):
        SupervisedDetector().predict(np.zeros((1, 2)))


# ---------------------------------------------------------------------------------- model files


@pytest.fixture
def fitted() -> tuple[AnomalyDetector, np.ndarray]:
    X = np.random.default_rng(3).normal(size=(300, len(FEATURE_NAMES)))
    return AnomalyDetector(n_estimators=20, random_state=0).fit(X), X


def test_model_file_round_trip(tmp_path: Path, fitted: tuple[AnomalyDetector, np.ndarray]) -> None:
    detector, X = fitted
    save_model(detector, tmp_path / "m.model", meta={"range": [1, 100]})
    saved = load_model(tmp_path / "m.model")
    assert saved.feature_names == FEATURE_NAMES
    assert saved.meta == {"range": [1, 100]}
    np.testing.assert_array_equal(saved.detector.score_samples(X), detector.score_samples(X))


def _one_line(exc: pytest.ExceptionInfo[ModelFileError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_corrupted_model_file_refused(
    tmp_path: Path, fitted: tuple[AnomalyDetector, np.ndarray]
) -> None:
    path = tmp_path / "m.model"
    save_model(fitted[0], path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError) as exc:
        load_model(path)
    assert "corrupted" in _one_line(exc)
    path.write_bytes(bytes(data[:-1]))
    with pytest.raises(ModelFileError, match="corrupted"):
        load_model(path)
    path.write_bytes(b"\x80\x04not a model at all")
    with pytest.raises(ModelFileError, match="not an ailedger model file"):
        load_model(path)
    with pytest.raises(ModelFileError, match="cannot read"):
        load_model(tmp_path / "missing.model")


def test_model_file_of_another_version_refused(
    tmp_path: Path, fitted: tuple[AnomalyDetector, np.ndarray]
) -> None:
    path = tmp_path / "m.model"
    save_model(fitted[0], path)
    header, payload = path.read_bytes().split(b"\n", 1)
    doc = json.loads(header)
    doc["version"] = 99
    path.write_bytes(json.dumps(doc).encode() + b"\n" + payload)
    with pytest.raises(ModelFileError) as exc:
        load_model(path)
    assert "version 99" in _one_line(exc)
    doc["version"] = 1
    doc["sklearn"] = "0.1"
    path.write_bytes(json.dumps(doc).encode() + b"\n" + payload)
    with pytest.raises(ModelFileError, match=r"scikit-learn 0\.1"):
        load_model(path)


def test_keyed_model_file_needs_the_key(
    tmp_path: Path, fitted: tuple[AnomalyDetector, np.ndarray]
) -> None:
    path = tmp_path / "m.model"
    save_model(fitted[0], path, key=b"k" * 32)
    assert load_model(path, key=b"k" * 32).detector.n_estimators == 20
    with pytest.raises(ModelFileError, match="key"):
        load_model(path)
    with pytest.raises(ModelFileError, match="digest mismatch"):
        load_model(path, key=b"x" * 32)


def test_reason_and_alert_are_plain_data() -> None:
    alert = Alert("0x" + "00" * 32, 3, 0.5, False, "benign", "rules", (Reason("f", 1, "w"),))
    assert alert.to_json()["class"] == "benign"
    assert alert.to_json()["reasons"] == [{"feature": "f", "value": 1, "why": "w"}]


def test_score_and_class_match_the_separate_calls() -> None:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(300, 4))
    y = np.where(X[:, 0] > 1.0, "spam", np.where(X[:, 1] > 1.0, "drain", "benign"))
    model = SupervisedDetector(max_iter=20, random_state=0).fit(X, y)
    scores, classes = model.score_and_class(X[:50])
    assert np.array_equal(scores, model.score_samples(X[:50]))
    assert classes == model.attack_class(X[:50])
    assert set(classes) <= {"spam", "drain"}
