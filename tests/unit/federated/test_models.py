"""Unit tests of ailedger.federated.models: gradients, training, the scikit-learn wrapper."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from ailedger.errors import InputError, NotFittedError
from ailedger.federated.data import load_digits
from ailedger.federated.models import MLP, LogisticRegression, Model, NumpyClassifier, make_model

DIGITS = load_digits(seed=0)


def _models() -> list[Model]:
    return [
        LogisticRegression(num_features=64, num_classes=10),
        MLP(num_features=64, num_classes=10, hidden=16),
    ]


@pytest.mark.parametrize("model", _models(), ids=lambda m: m.name)
def test_gradient_matches_finite_differences(model: Model) -> None:
    params = model.init_params(1) + 0.05
    x, y = DIGITS.x_train[:25], DIGITS.y_train[:25]
    _, grad = model.loss_and_grad(params, x, y)
    rng = np.random.default_rng(0)
    for i in rng.choice(model.num_params, 20, replace=False):
        step = np.zeros_like(params)
        step[i] = 1e-6
        numeric = (model.loss(params + step, x, y) - model.loss(params - step, x, y)) / 2e-6
        assert numeric == pytest.approx(grad[i], abs=1e-7, rel=1e-5)


@pytest.mark.parametrize("model", _models(), ids=lambda m: m.name)
def test_training_learns_digits_and_leaves_input_alone(model: Model) -> None:
    start = model.init_params(0)
    before = start.copy()
    trained = model.train_local(
        start, DIGITS.x_train, DIGITS.y_train, epochs=5, lr=0.5, rng=np.random.default_rng(0)
    )
    np.testing.assert_array_equal(start, before)
    assert trained.shape == (model.num_params,)
    assert model.evaluate(start, DIGITS.x_test, DIGITS.y_test) < 0.3
    assert model.evaluate(trained, DIGITS.x_test, DIGITS.y_test) > 0.9
    assert model.loss(trained, DIGITS.x_test, DIGITS.y_test) < model.loss(
        start, DIGITS.x_test, DIGITS.y_test
    )
    proba = model.predict_proba(trained, DIGITS.x_test[:7])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(proba.argmax(axis=1), model.predict(trained, DIGITS.x_test[:7]))


def test_training_and_init_are_deterministic() -> None:
    model = MLP(num_features=64, num_classes=10, hidden=8)
    assert np.array_equal(model.init_params(5), model.init_params(5))
    assert not np.array_equal(model.init_params(5), model.init_params(6))
    runs = [
        model.train_local(
            model.init_params(0), DIGITS.x_train, DIGITS.y_train, rng=np.random.default_rng(9)
        )
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_parameter_layout() -> None:
    assert LogisticRegression(num_features=784, num_classes=10).num_params == 7850
    mlp = make_model("mlp", num_features=784, num_classes=10, hidden=64)
    assert mlp.num_params == 784 * 64 + 64 + 64 * 10 + 10
    assert mlp.spec() == {
        "model": "mlp",
        "num_features": 784,
        "num_classes": 10,
        "num_params": 50890,
        "hidden": 64,
    }


def test_bad_input() -> None:
    model = LogisticRegression(num_features=64, num_classes=10)
    params = model.init_params()
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="parameter vector of shape"):
        model.evaluate(params[:-1], DIGITS.x_test, DIGITS.y_test)
    with pytest.raises(InputError, match="NaN or infinity"):
        model.predict(np.full_like(params, np.nan), DIGITS.x_test)
    with pytest.raises(InputError, match="x must have shape"):
        model.predict(params, DIGITS.x_test[:, :10])
    with pytest.raises(InputError, match="labels must lie in"):
        model.train_local(params, DIGITS.x_test[:3], np.array([0, 1, 10]), rng=rng)
    with pytest.raises(InputError, match="batch_size"):
        model.train_local(params, DIGITS.x_test, DIGITS.y_test, batch_size=0, rng=rng)
    with pytest.raises(InputError, match="diverged"):
        model.train_local(params, DIGITS.x_test * 1e200, DIGITS.y_test, lr=1e200, rng=rng)
    with pytest.raises(InputError, match="unknown model"):
        make_model("cnn", num_features=4, num_classes=2)
    with pytest.raises(InputError, match="num_classes"):
        LogisticRegression(num_features=4, num_classes=1)


def test_sklearn_wrapper() -> None:
    clf = NumpyClassifier("mlp", hidden=32)
    with pytest.raises(NotFittedError):
        clf.predict(DIGITS.x_test)
    labels = np.array([f"digit-{d}" for d in DIGITS.y_train])
    assert clf.fit(DIGITS.x_train, labels) is clf
    predicted = clf.predict(DIGITS.x_test)
    assert predicted[0].startswith("digit-")
    truth = np.array([f"digit-{d}" for d in DIGITS.y_test])
    assert clf.score(DIGITS.x_test, truth) > 0.9
    assert clf.predict_proba(DIGITS.x_test).shape == (DIGITS.x_test.shape[0], 10)
    copy = clone(clf)
    assert copy.get_params()["hidden"] == 32
    assert not hasattr(copy, "params_")
