"""Small numpy models whose parameters are one flat float64 vector.

A federated update is then a 1-D array (new parameters minus old), which is what
:mod:`ailedger.federated.aggregate` takes. Two models:

- :class:`LogisticRegression`: multinomial logistic regression (softmax regression), logits
  ``x W + b``;
- :class:`MLP`: one hidden ReLU layer, logits ``relu(x W1 + b1) W2 + b2`` (e.g. 784-64-10),
  initialised after He et al. 2015 ("Delving deep into rectifiers", ``N(0, 2 / fan_in)``)
  for the ReLU layer and Glorot and Bengio 2010 (uniform, ``sqrt(6 / (fan_in + fan_out))``)
  for the output layer.

Both minimise the mean softmax cross-entropy with plain mini-batch SGD (optionally with L2
weight decay), the local solver of FedAvg (McMahan et al. 2017, "Communication-efficient
learning of deep networks from decentralized data", AISTATS). Layout of the flat vector, in
order: each weight matrix in C order (``(fan_in, fan_out)``), then its bias.

:class:`NumpyClassifier` wraps either model in scikit-learn's estimator API (``fit`` returns
``self``, ``predict``, ``predict_proba``, ``score``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClassifierMixin

from ailedger.errors import InputError, NotFittedError

__all__ = [
    "MLP",
    "MODELS",
    "LogisticRegression",
    "Model",
    "NumpyClassifier",
    "make_model",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_EVAL_CHUNK = 8192


def _softmax_inplace(logits: FloatArray) -> FloatArray:
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


class Model(ABC):
    """A classifier over ``num_features`` inputs and ``num_classes`` classes whose state is a
    flat float64 parameter vector of length :attr:`num_params` (module docstring)."""

    def __init__(self, *, num_features: int, num_classes: int) -> None:
        for label, value, low in (
            ("num_features", num_features, 1),
            ("num_classes", num_classes, 2),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{label} must be an int >= {low}, got {value!r}")
        self.num_features = num_features
        self.num_classes = num_classes
        self._shapes = self._layer_shapes()
        self.num_params = sum(int(np.prod(s)) for s in self._shapes)

    @property
    @abstractmethod
    def name(self) -> str:
        """Short name, the key of :data:`MODELS`."""

    @abstractmethod
    def _layer_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the parameter blocks in vector order."""

    @abstractmethod
    def _init_blocks(self, rng: np.random.Generator) -> list[FloatArray]:
        """Initial values of each block."""

    @abstractmethod
    def _forward_backward(
        self, blocks: list[FloatArray], grads: list[FloatArray] | None, x: FloatArray, y: IntArray
    ) -> float:
        """Mean cross-entropy on ``(x, y)``; with ``grads``, also write its gradient there."""

    @abstractmethod
    def _logits(self, blocks: list[FloatArray], x: FloatArray) -> FloatArray:
        """Logits, shape ``(len(x), num_classes)``."""

    def spec(self) -> dict[str, Any]:
        """A JSON-able description of the architecture (for task specs and logs)."""
        return {
            "model": self.name,
            "num_features": self.num_features,
            "num_classes": self.num_classes,
            "num_params": self.num_params,
        }

    # ------------------------------------------------------------------ parameter vector

    def _views(self, params: FloatArray) -> list[FloatArray]:
        out: list[FloatArray] = []
        start = 0
        for shape in self._shapes:
            size = int(np.prod(shape))
            out.append(params[start : start + size].reshape(shape))
            start += size
        return out

    def check_params(self, params: npt.ArrayLike) -> FloatArray:
        """``params`` as a float64 vector of length :attr:`num_params`, or :class:`InputError`."""
        p = np.asarray(params, dtype=np.float64)
        if p.shape != (self.num_params,):
            raise InputError(
                f"{self.name} needs a parameter vector of shape ({self.num_params},), got {p.shape}"
            )
        if not np.all(np.isfinite(p)):
            raise InputError(f"{self.name}: parameters hold NaN or infinity")
        return p

    def _check_data(self, x: npt.ArrayLike, y: npt.ArrayLike | None) -> tuple[FloatArray, IntArray]:
        xa = np.asarray(x, dtype=np.float64)
        if xa.ndim != 2 or xa.shape[1] != self.num_features:
            raise InputError(f"x must have shape (n, {self.num_features}), got {xa.shape}")
        if y is None:
            return xa, np.zeros(0, dtype=np.int64)
        ya = np.asarray(y)
        if ya.shape != (xa.shape[0],) or not np.issubdtype(ya.dtype, np.integer):
            raise InputError(f"y must be {xa.shape[0]} integer labels, got {ya.dtype} {ya.shape}")
        if ya.size and (int(ya.min()) < 0 or int(ya.max()) >= self.num_classes):
            raise InputError(f"labels must lie in [0, {self.num_classes})")
        return xa, ya.astype(np.int64)

    def init_params(self, seed: int = 0) -> FloatArray:
        """Initial parameters, deterministic given ``seed``."""
        rng = np.random.default_rng(seed)
        return np.concatenate([b.ravel() for b in self._init_blocks(rng)])

    # ------------------------------------------------------------------ training and use

    def loss_and_grad(
        self, params: npt.ArrayLike, x: npt.ArrayLike, y: npt.ArrayLike
    ) -> tuple[float, FloatArray]:
        """Mean cross-entropy on ``(x, y)`` and its gradient (shape ``(num_params,)``)."""
        p = self.check_params(params)
        xa, ya = self._check_data(x, y)
        grad = np.zeros_like(p)
        loss = self._forward_backward(self._views(p), self._views(grad), xa, ya)
        return loss, grad

    def train_local(
        self,
        params: npt.ArrayLike,
        x: npt.ArrayLike,
        y: npt.ArrayLike,
        *,
        epochs: int = 1,
        lr: float = 0.1,
        batch_size: int = 32,
        rng: np.random.Generator,
        weight_decay: float = 0.0,
    ) -> FloatArray:
        """Run ``epochs`` of mini-batch SGD from ``params`` and return the new parameters.

        Each epoch visits the examples in an order drawn from ``rng``; the last batch of an
        epoch may be smaller. ``params`` is not modified.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise InputError(f"epochs must be a non-negative int, got {epochs!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
        if not (lr > 0 and np.isfinite(lr)) or not (weight_decay >= 0):
            raise InputError(f"lr must be positive and weight_decay >= 0, got {lr}, {weight_decay}")
        p = self.check_params(params).copy()
        xa, ya = self._check_data(x, y)
        n = xa.shape[0]
        if n == 0:
            return p
        blocks = self._views(p)
        grad = np.zeros_like(p)
        grads = self._views(grad)
        with np.errstate(over="ignore", invalid="ignore"):
            self._sgd(p, blocks, grad, grads, xa, ya, epochs, lr, batch_size, rng, weight_decay)
        if not np.all(np.isfinite(p)):
            raise InputError(f"{self.name}: training diverged (lr={lr} too large?)")
        return p

    def _sgd(
        self,
        p: FloatArray,
        blocks: list[FloatArray],
        grad: FloatArray,
        grads: list[FloatArray],
        xa: FloatArray,
        ya: IntArray,
        epochs: int,
        lr: float,
        batch_size: int,
        rng: np.random.Generator,
        weight_decay: float,
    ) -> None:
        n = xa.shape[0]
        for _ in range(epochs):
            order = rng.permutation(n)
            for start in range(0, n, batch_size):
                batch = order[start : start + batch_size]
                self._forward_backward(blocks, grads, xa[batch], ya[batch])
                if weight_decay:
                    grad += weight_decay * p
                p -= lr * grad

    def predict_proba(self, params: npt.ArrayLike, x: npt.ArrayLike) -> FloatArray:
        """Class probabilities, shape ``(len(x), num_classes)``."""
        blocks = self._views(self.check_params(params))
        xa, _ = self._check_data(x, None)
        out = np.empty((xa.shape[0], self.num_classes), dtype=np.float64)
        for start in range(0, xa.shape[0], _EVAL_CHUNK):
            chunk = slice(start, start + _EVAL_CHUNK)
            out[chunk] = _softmax_inplace(self._logits(blocks, xa[chunk]))
        return out

    def predict(self, params: npt.ArrayLike, x: npt.ArrayLike) -> IntArray:
        """Most probable class of each example, int64 shape ``(len(x),)``."""
        blocks = self._views(self.check_params(params))
        xa, _ = self._check_data(x, None)
        out = np.empty(xa.shape[0], dtype=np.int64)
        for start in range(0, xa.shape[0], _EVAL_CHUNK):
            chunk = slice(start, start + _EVAL_CHUNK)
            out[chunk] = np.argmax(self._logits(blocks, xa[chunk]), axis=1)
        return out

    def evaluate(self, params: npt.ArrayLike, x: npt.ArrayLike, y: npt.ArrayLike) -> float:
        """Accuracy (fraction in ``[0, 1]``) on ``(x, y)``."""
        xa, ya = self._check_data(x, y)
        if xa.shape[0] == 0:
            raise InputError("cannot evaluate on zero examples")
        return float(np.mean(self.predict(params, xa) == ya))

    def loss(self, params: npt.ArrayLike, x: npt.ArrayLike, y: npt.ArrayLike) -> float:
        """Mean cross-entropy (nats) on ``(x, y)``."""
        blocks = self._views(self.check_params(params))
        xa, ya = self._check_data(x, y)
        if xa.shape[0] == 0:
            raise InputError("cannot compute a loss on zero examples")
        total = 0.0
        for start in range(0, xa.shape[0], _EVAL_CHUNK):
            chunk = slice(start, start + _EVAL_CHUNK)
            total += self._forward_backward(blocks, None, xa[chunk], ya[chunk]) * len(ya[chunk])
        return total / int(xa.shape[0])


def _cross_entropy(probs: FloatArray, y: IntArray) -> float:
    picked = probs[np.arange(y.shape[0]), y]
    return float(-np.mean(np.log(np.maximum(picked, 1e-300))))


class LogisticRegression(Model):
    """Multinomial logistic regression: ``softmax(x W + b)``; parameters ``W`` then ``b``."""

    @property
    def name(self) -> str:
        return "logreg"

    def _layer_shapes(self) -> list[tuple[int, ...]]:
        return [(self.num_features, self.num_classes), (self.num_classes,)]

    def _init_blocks(self, rng: np.random.Generator) -> list[FloatArray]:
        w = rng.normal(0.0, 0.01, size=(self.num_features, self.num_classes))
        return [w, np.zeros(self.num_classes)]

    def _logits(self, blocks: list[FloatArray], x: FloatArray) -> FloatArray:
        w, b = blocks
        out: FloatArray = x @ w + b
        return out

    def _forward_backward(
        self, blocks: list[FloatArray], grads: list[FloatArray] | None, x: FloatArray, y: IntArray
    ) -> float:
        probs = _softmax_inplace(self._logits(blocks, x))
        loss = _cross_entropy(probs, y)
        if grads is not None:
            delta = probs
            delta[np.arange(y.shape[0]), y] -= 1.0
            delta /= y.shape[0]
            np.matmul(x.T, delta, out=grads[0])
            np.sum(delta, axis=0, out=grads[1])
        return loss


class MLP(Model):
    """One hidden ReLU layer: ``softmax(relu(x W1 + b1) W2 + b2)``; parameters ``W1, b1, W2,
    b2``."""

    def __init__(self, *, num_features: int, num_classes: int, hidden: int = 64) -> None:
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise InputError(f"hidden must be a positive int, got {hidden!r}")
        self.hidden = hidden
        super().__init__(num_features=num_features, num_classes=num_classes)

    @property
    def name(self) -> str:
        return "mlp"

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "hidden": self.hidden}

    def _layer_shapes(self) -> list[tuple[int, ...]]:
        d, h, k = self.num_features, self.hidden, self.num_classes
        return [(d, h), (h,), (h, k), (k,)]

    def _init_blocks(self, rng: np.random.Generator) -> list[FloatArray]:
        d, h, k = self.num_features, self.hidden, self.num_classes
        w1 = rng.normal(0.0, np.sqrt(2.0 / d), size=(d, h))
        limit = np.sqrt(6.0 / (h + k))
        w2 = rng.uniform(-limit, limit, size=(h, k))
        return [w1, np.zeros(h), w2, np.zeros(k)]

    def _logits(self, blocks: list[FloatArray], x: FloatArray) -> FloatArray:
        w1, b1, w2, b2 = blocks
        hidden = np.maximum(x @ w1 + b1, 0.0)
        out: FloatArray = hidden @ w2 + b2
        return out

    def _forward_backward(
        self, blocks: list[FloatArray], grads: list[FloatArray] | None, x: FloatArray, y: IntArray
    ) -> float:
        w1, b1, w2, b2 = blocks
        hidden = x @ w1
        hidden += b1
        np.maximum(hidden, 0.0, out=hidden)
        logits = hidden @ w2
        logits += b2
        probs = _softmax_inplace(logits)
        loss = _cross_entropy(probs, y)
        if grads is not None:
            delta = probs
            delta[np.arange(y.shape[0]), y] -= 1.0
            delta /= y.shape[0]
            np.matmul(hidden.T, delta, out=grads[2])
            np.sum(delta, axis=0, out=grads[3])
            back = delta @ w2.T
            back *= hidden > 0
            np.matmul(x.T, back, out=grads[0])
            np.sum(back, axis=0, out=grads[1])
        return loss


#: model constructors by name; each takes ``num_features=``, ``num_classes=``
MODELS: dict[str, Callable[..., Model]] = {"logreg": LogisticRegression, "mlp": MLP}


def make_model(name: str, *, num_features: int, num_classes: int, **options: Any) -> Model:
    """Build the model ``name`` (a key of :data:`MODELS`); ``options`` go to its constructor
    (``hidden=`` for the MLP)."""
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}; use one of {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](num_features=num_features, num_classes=num_classes, **options)
    except TypeError as exc:
        raise InputError(f"bad options for model {name!r}: {exc}") from exc


class NumpyClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """scikit-learn estimator over :class:`LogisticRegression` or :class:`MLP`.

    ``fit(X, y)`` trains from ``init_params(seed)`` for ``epochs`` of SGD and returns
    ``self``; labels may be any sortable values (``classes_`` maps them to indices). After
    ``fit``: ``classes_``, ``model_``, ``params_`` (the flat vector), ``n_features_in_``.
    """

    def __init__(
        self,
        model: str = "logreg",
        *,
        hidden: int = 64,
        epochs: int = 20,
        lr: float = 0.1,
        batch_size: int = 32,
        weight_decay: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.seed = seed

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> NumpyClassifier:
        """Train on ``X`` (``(n, d)``) and labels ``y`` (``(n,)``); returns ``self``."""
        xa = np.asarray(X, dtype=np.float64)
        ya = np.asarray(y)
        if xa.ndim != 2 or ya.shape != (xa.shape[0],):
            raise InputError(f"X must be (n, d) and y (n,), got {xa.shape} and {ya.shape}")
        classes, encoded = np.unique(ya, return_inverse=True)
        if classes.shape[0] < 2:
            raise InputError("fit needs at least two classes")
        options = {"hidden": self.hidden} if self.model == "mlp" else {}
        model = make_model(
            self.model, num_features=xa.shape[1], num_classes=int(classes.shape[0]), **options
        )
        rng = np.random.default_rng(self.seed)
        params = model.train_local(
            model.init_params(self.seed),
            xa,
            encoded.astype(np.int64),
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            rng=rng,
            weight_decay=self.weight_decay,
        )
        self.classes_ = classes
        self.model_ = model
        self.params_ = params
        self.n_features_in_ = xa.shape[1]
        return self

    def _fitted(self) -> Model:
        model: Model | None = getattr(self, "model_", None)
        if model is None:
            raise NotFittedError("this NumpyClassifier is not fitted yet: call fit first")
        return model

    def predict_proba(self, X: npt.ArrayLike) -> FloatArray:
        """Class probabilities, columns in the order of ``classes_``."""
        return self._fitted().predict_proba(self.params_, X)

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[Any]:
        """Predicted labels (values of ``classes_``)."""
        indices = self._fitted().predict(self.params_, X)
        out: npt.NDArray[Any] = self.classes_[indices]
        return out
