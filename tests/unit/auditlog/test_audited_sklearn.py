"""audited() as a scikit-learn estimator: clone, cross_val_score, Pipeline, per-call actor.

Every test writes to a real AuditLog in a temporary folder and reads the entries back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.datasets import load_diabetes, load_iris
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from ailedger.auditlog import AuditLog, audited
from ailedger.auditlog.audited import AuditedModel, model_digest_of
from ailedger.auditlog.verify import verify_stored
from ailedger.errors import InputError

ORIGIN = "test.example/audited"


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    opened = AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def iris() -> tuple[Any, Any]:
    X, y = load_iris(return_X_y=True)
    return X, y


def records(log: AuditLog, start: int = 0) -> list[dict[str, Any]]:
    return [json.loads(data) for _, data in log.entries(start)]


def test_clone_wraps_a_clone_of_the_estimator_and_shares_the_log(log: AuditLog) -> None:
    inner = LogisticRegression(C=0.5, max_iter=300)
    model = audited(inner, log=log, actor="svc", metadata={"site": "a"})
    copy = clone(model)
    assert isinstance(copy, AuditedModel)
    assert copy.log is log
    assert copy.estimator is not inner
    assert copy.estimator.get_params() == inner.get_params()
    assert copy.get_params(deep=False)["actor"] == "svc"
    assert copy.metadata == {"site": "a"}
    assert copy.metadata is not model.metadata


def test_get_and_set_params_reach_the_wrapped_estimator(log: AuditLog) -> None:
    model = audited(LogisticRegression(C=1.0), log=log, actor="svc")
    params = model.get_params()
    assert params["estimator__C"] == 1.0
    assert set(model.get_params(deep=False)) == {
        "estimator",
        "log",
        "actor",
        "model_digest",
        "metadata",
    }
    assert model.set_params(estimator__C=0.25, actor="other") is model
    assert model.estimator.C == 0.25
    assert model.actor == "other"
    with pytest.raises(InputError, match="invalid parameter"):
        model.set_params(C=3)


def test_cross_val_score_logs_every_held_out_prediction(
    log: AuditLog, iris: tuple[Any, Any]
) -> None:
    X, y = iris
    plain = cross_val_score(LogisticRegression(max_iter=500), X, y, cv=3)
    model = audited(LogisticRegression(max_iter=500), log=log, actor="cv-run")
    assert is_classifier(model)
    scores = cross_val_score(model, X, y, cv=3)
    np.testing.assert_array_equal(scores, plain)
    # each row is held out exactly once: one decision per row of X
    assert log.size == len(X)
    logged = records(log)
    assert {r["actor"] for r in logged} == {"cv-run"}
    assert {r["metadata"]["method"] for r in logged} == {"predict"}
    assert len({r["model"] for r in logged}) == 3  # one refitted model per fold
    assert model.logged_ == []  # the folds used clones; the original was never called


def test_pipeline_ending_in_audited_logs_with_the_actor_of_each_call(
    log: AuditLog, iris: tuple[Any, Any]
) -> None:
    X, y = iris
    step = audited(LogisticRegression(max_iter=500), log=log, actor="default-actor")
    pipe = make_pipeline(StandardScaler(), step)
    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    assert pipe.fit(X, y) is pipe
    check_is_fitted(pipe)
    np.testing.assert_array_equal(pipe.predict(X[:5]), reference.predict(X[:5]))
    np.testing.assert_allclose(
        pipe.predict_proba(X[:2], actor="dr-who"), reference.predict_proba(X[:2])
    )
    assert log.size == 7
    logged = records(log)
    assert [r["actor"] for r in logged] == ["default-actor"] * 5 + ["dr-who"] * 2
    assert [r["metadata"]["method"] for r in logged] == ["predict"] * 5 + ["predict_proba"] * 2
    fitted = pipe[-1].estimator_
    assert {r["model"] for r in logged} == {model_digest_of(fitted)}
    # the input is committed in the tree; the plaintext (the row the last step saw) is private
    assert set(logged[0]["input"]) == {"commitment"}
    scaled = reference[0].transform(X[:1])[0]
    np.testing.assert_allclose(log.show(0).private["input"], scaled)
    assert logged[5]["output"] == pytest.approx(reference.predict_proba(X[:1])[0].tolist())
    assert pipe[-1].logged_ == list(range(7))
    assert list(pipe[-1].classes_) == [0, 1, 2]


def test_grid_search_sets_nested_parameters_through_the_wrapper(
    log: AuditLog, iris: tuple[Any, Any]
) -> None:
    X, y = iris
    pipe = make_pipeline(StandardScaler(), audited(LogisticRegression(), log=log, actor="gs"))
    search = GridSearchCV(pipe, {"auditedmodel__estimator__C": [0.01, 1.0]}, cv=2).fit(X, y)
    assert search.best_params_ == {"auditedmodel__estimator__C": 1.0}
    assert search.best_estimator_[-1].estimator_.C == 1.0
    # 2 candidates x 2 folds x half the rows each, then nothing for the refit
    assert log.size == 2 * len(X)


def test_a_prefit_model_names_the_given_digest_until_refitted(
    log: AuditLog, iris: tuple[Any, Any]
) -> None:
    X, y = iris
    fitted = LogisticRegression(max_iter=500).fit(X, y)
    registered = "sha256:" + "ab" * 32
    model = audited(fitted, log=log, actor="svc", model_digest=registered)
    check_is_fitted(model)
    model.predict(X[:2])
    assert model.fit(X[:100], y[:100]) is model
    model.predict(X[:1])
    assert [r["model"] for r in records(log)] == [registered] * 2 + [model.model_digest_]
    assert model.model_digest_ != registered


def test_an_unfitted_wrapper_is_not_fitted(log: AuditLog, iris: tuple[Any, Any]) -> None:
    X, _ = iris
    model = audited(LogisticRegression(), log=log, actor="svc")
    with pytest.raises(NotFittedError):
        check_is_fitted(model)
    with pytest.raises(NotFittedError):
        model.predict(X[:1])
    assert log.size == 0


def test_a_regressor_scores_r2_on_logged_predictions_and_has_no_proba(log: AuditLog) -> None:
    X, y = load_diabetes(return_X_y=True)
    model = audited(LinearRegression(), log=log, actor="svc")
    assert is_regressor(model)
    assert not hasattr(model, "predict_proba")
    kfold = KFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(model, X, y, cv=kfold)
    np.testing.assert_allclose(scores, cross_val_score(LinearRegression(), X, y, cv=kfold))
    assert log.size == len(X)
    assert all(isinstance(r["output"], float) for r in records(log))


def test_the_logged_decisions_verify_against_a_signed_checkpoint(
    log: AuditLog, iris: tuple[Any, Any]
) -> None:
    X, y = iris
    pipe = make_pipeline(StandardScaler(), audited(LogisticRegression(), log=log, actor="svc"))
    cross_val_score(pipe, X, y, cv=2)
    key = Ed25519PrivateKey.generate()
    log.checkpoint(key)
    report = verify_stored(log, log.verifier(key.public_key()), deep=True)
    assert report.size == len(X)


def test_a_bad_actor_is_refused_before_anything_is_logged(
    log: AuditLog, iris: tuple[Any, Any]
) -> None:
    X, y = iris
    with pytest.raises(InputError, match="actor"):
        audited(LogisticRegression(), log=log, actor="")
    model = audited(LogisticRegression(max_iter=500).fit(X, y), log=log, actor="svc")
    with pytest.raises(InputError, match="actor"):
        model.predict(X[:1], actor=42)  # type: ignore[arg-type]
    assert log.size == 0


def test_a_decorated_function_takes_the_actor_per_call(log: AuditLog) -> None:
    @audited(log=log, actor="fn-default", model_digest="sha256:" + "cd" * 32)
    def triage(features: list[float]) -> str:
        return "urgent" if sum(features) > 1 else "routine"

    assert triage([0.2, 0.3]) == "routine"
    assert triage([2.0], actor="nurse-3") == "urgent"
    logged = records(log)
    assert [(r["actor"], r["output"]) for r in logged] == [
        ("fn-default", "routine"),
        ("nurse-3", "urgent"),
    ]


@pytest.fixture(scope="module")
def fitted(iris: tuple[Any, Any]) -> LogisticRegression:
    X, y = iris
    return LogisticRegression(max_iter=500).fit(X, y)


@settings(max_examples=10, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=4))
def test_every_row_of_every_call_is_one_decision_and_outputs_are_unchanged(
    tmp_path_factory: pytest.TempPathFactory,
    iris: tuple[Any, Any],
    fitted: LogisticRegression,
    sizes: list[int],
) -> None:
    X, _ = iris
    with AuditLog.open(tmp_path_factory.mktemp("prop") / "log.sqlite", origin=ORIGIN) as log:
        model = audited(fitted, log=log, actor="svc")
        start = 0
        for size in sizes:
            rows = X[start : start + size]
            np.testing.assert_array_equal(model.predict(rows), fitted.predict(rows))
            start += size
        assert log.size == sum(sizes)
        outputs = [r["output"] for r in records(log)]
        assert outputs == fitted.predict(X[:start]).tolist()
