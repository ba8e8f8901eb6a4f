"""Logging the decisions of AI code: a wrapper for estimators and callables.

``audited(model, log=..., actor=...)`` returns an :class:`AuditedModel` that behaves like
``model`` and logs every prediction it makes: one decision record per input row (the return
value of ``predict``, ``predict_proba``, ``predict_log_proba`` or ``decision_function``),
committed in one batch per call, before the predictions are handed back. The actor is given
per call (``model.predict(X, actor="clinician-7")``) or defaults to the one given at
construction.

:class:`AuditedModel` follows scikit-learn's estimator contract (scikit-learn developer guide,
"Developing scikit-learn estimators": parameters stored unchanged by ``__init__``,
``get_params``/``set_params`` with nested ``estimator__*`` names, ``fit`` returning ``self``,
``__sklearn_tags__``, ``__sklearn_is_fitted__`` and the ``__sklearn_clone__`` protocol), so it
works with ``sklearn.base.clone``, ``cross_val_score``, ``GridSearchCV`` and as the last step of
a ``Pipeline``; there it logs what the last step sees (the transformed rows), so wrap the whole
pipeline instead to log the raw inputs. A clone shares the log (the log is where decisions go,
not a learned state) and wraps a clone of the estimator. ``fit`` fits a clone of the wrapped
estimator into ``estimator_``; decisions of a model fitted that way name the SHA-256 of its
pickle, since the digest given at construction described the model before it was refitted.

Used bare as a decorator it wraps a function, which then also takes ``actor=`` per call::

    @audited(log=log, model_digest="sha256:...", actor="triage-service")
    def triage(features): ...

and as a context manager it closes nothing but makes the audited scope explicit::

    with audited(classifier, log=log, actor="svc") as model:
        model.predict(X)

scikit-learn is imported only by the methods that need it (``fit``, ``score``, tags, clone),
so importing :mod:`ailedger.auditlog` stays fast.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import pickle
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ailedger.auditlog.log import AuditLog
from ailedger.auditlog.records import decision_record
from ailedger.errors import InputError

__all__ = ["AuditedModel", "audited", "model_digest_of"]

_PREDICT_METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function")
_PARAMS = ("estimator", "log", "actor", "model_digest", "metadata")


def model_digest_of(model: Any) -> str:
    """A content digest for an in-memory model: ``sha256:<hex>`` of its pickle (protocol 5).

    Prefer the digest of the registered model file (see :mod:`ailedger.provenance`); this is a
    fallback for models that never touched a file. Raises :class:`InputError` for a model that
    cannot be pickled.
    """
    try:
        data = pickle.dumps(model, protocol=5)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise InputError(
            f"cannot digest a {type(model).__name__} (it does not pickle: {exc}); "
            "give model_digest="
        ) from exc
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _check_actor(actor: Any) -> str:
    if not isinstance(actor, str) or not actor:
        raise InputError(f"the actor must be a non-empty string, got {actor!r}")
    return actor


class _Logged:
    """A prediction method of :class:`AuditedModel`, present only when the wrapped model has it
    (as scikit-learn's ``available_if``), so ``hasattr`` answers as for the model itself."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: AuditedModel | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        method = getattr(obj._target(), self.name)  # AttributeError when the model lacks it
        name = self.name

        def call(X: Any, *args: Any, actor: str | None = None, **kwargs: Any) -> Any:
            return obj._predict(method, name, X, args, kwargs, actor)

        call.__name__ = call.__qualname__ = name
        call.__doc__ = (
            f"The wrapped model's ``{name}``, each row's result logged as a decision by "
            "``actor`` (default: the one given at construction)."
        )
        return call


class AuditedModel:
    """A model whose predictions are logged; every other attribute is the model's own.

    Parameters (scikit-learn's: read back by :meth:`get_params`, changed by :meth:`set_params`):
    ``estimator`` the model (anything with a prediction method), ``log`` the
    :class:`~ailedger.auditlog.log.AuditLog` decisions go to, ``actor`` the default actor,
    ``model_digest`` the model's digest (``sha256:<hex>``; default: of its pickle) and
    ``metadata`` added to every record. ``logged_`` lists the log indexes written.
    """

    predict = _Logged("predict")
    predict_proba = _Logged("predict_proba")
    predict_log_proba = _Logged("predict_log_proba")
    decision_function = _Logged("decision_function")

    def __init__(
        self,
        estimator: Any,
        *,
        log: AuditLog,
        actor: str,
        model_digest: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.estimator = estimator
        self.log = log
        self.actor = actor
        self.model_digest = model_digest
        self.metadata = metadata

    # -- the wrapped model's own attributes ---------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # only reached for names not found on the wrapper; the guard keeps copy and pickle,
        # which look attributes up before __init__ ran, from recursing
        if name.startswith("__") or name in _PARAMS or name == "estimator_":
            raise AttributeError(name)
        return getattr(self._target(), name)

    def _target(self) -> Any:
        """The model predictions come from: the one :meth:`fit` made, else ``estimator``."""
        state = self.__dict__
        if "estimator_" in state:
            return state["estimator_"]
        if "estimator" not in state:
            raise AttributeError("estimator")
        return state["estimator"]

    @property
    def logged_(self) -> list[int]:
        """Indexes of the log entries this wrapper wrote, in order."""
        logged: list[int] = self.__dict__.setdefault("_logged", [])
        return logged

    @property
    def logged(self) -> list[int]:
        """Alias of :attr:`logged_` (the name of earlier versions)."""
        return self.logged_

    @property
    def digest(self) -> str:
        """The digest that decisions name: of the model fitted by :meth:`fit`, else
        ``model_digest``, else of the wrapped model's pickle (computed once)."""
        if "model_digest_" in self.__dict__:
            return str(self.__dict__["model_digest_"])
        if self.model_digest is not None:
            return self.model_digest
        cached = self.__dict__.get("_digest")
        if cached is None:
            cached = self.__dict__["_digest"] = model_digest_of(self.estimator)
        return str(cached)

    @property
    def _estimator_type(self) -> str | None:
        inner = getattr(self.estimator, "_estimator_type", None)
        if inner is not None:
            return str(inner)
        if hasattr(self.estimator, "__sklearn_tags__"):
            kind = self.estimator.__sklearn_tags__().estimator_type
            return None if kind is None else str(kind)
        return None

    # -- scikit-learn's estimator contract ----------------------------------------------------

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters; with ``deep``, the estimator's as ``estimator__*``."""
        params = {name: getattr(self, name) for name in _PARAMS}
        if deep and hasattr(self.estimator, "get_params"):
            for key, value in self.estimator.get_params(deep=True).items():
                params[f"estimator__{key}"] = value
        return params

    def set_params(self, **params: Any) -> AuditedModel:
        """Set parameters (``estimator__*`` ones on the wrapped estimator); returns ``self``."""
        nested: dict[str, Any] = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in _PARAMS or (sub and name != "estimator"):
                raise InputError(
                    f"invalid parameter {key!r} for AuditedModel: valid ones are "
                    f"{', '.join(_PARAMS)} and estimator__*"
                )
            if sub:
                nested[sub] = value
            else:
                setattr(self, name, value)
                self.__dict__.pop("_digest", None)
        if nested:
            if not hasattr(self.estimator, "set_params"):
                raise InputError(f"{type(self.estimator).__name__} has no set_params")
            self.estimator.set_params(**nested)
            self.__dict__.pop("_digest", None)
        return self

    def __sklearn_clone__(self) -> AuditedModel:
        """An unfitted copy: a clone of the estimator, the same log, copies of the rest."""
        from sklearn.base import clone

        return type(self)(
            clone(self.estimator, safe=False),
            log=self.log,
            actor=self.actor,
            model_digest=self.model_digest,
            metadata=copy.deepcopy(self.metadata),
        )

    def __sklearn_tags__(self) -> Any:
        """The wrapped estimator's tags (classifier, regressor, ...), else the default ones."""
        if hasattr(self.estimator, "__sklearn_tags__"):
            return copy.deepcopy(self.estimator.__sklearn_tags__())
        from sklearn.utils import Tags, TargetTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False))

    def __sklearn_is_fitted__(self) -> bool:
        """Fitted by :meth:`fit`, or wrapping a model that is fitted (scikit-learn's test:
        ``__sklearn_is_fitted__``, else an attribute ending in ``_``)."""
        if "estimator_" in self.__dict__:
            return True
        inner = self.estimator
        if hasattr(inner, "__sklearn_is_fitted__"):
            return bool(inner.__sklearn_is_fitted__())
        return any(
            k.endswith("_") and not k.startswith("__") for k in getattr(inner, "__dict__", {})
        )

    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> AuditedModel:
        """Fit a clone of ``estimator`` on ``X`` (n_samples rows) and ``y`` into
        ``estimator_``; returns ``self``. Nothing is logged: fitting makes no decision."""
        from sklearn.base import clone

        if not hasattr(self.estimator, "fit"):
            raise InputError(f"{type(self.estimator).__name__} has no fit()")
        fitted = clone(self.estimator, safe=False)
        result = fitted.fit(X, y, **fit_params) if y is not None else fitted.fit(X, **fit_params)
        self.estimator_ = fitted if result is None else result
        self.model_digest_ = model_digest_of(self.estimator_)
        self.__dict__.pop("_digest", None)
        return self

    def score(
        self, X: Any, y: Any, sample_weight: Any = None, *, actor: str | None = None
    ) -> float:
        """Accuracy (a classifier) or R² (a regressor) of the logged predictions on ``X``
        against ``y``; for other models, the model's own ``score`` (then nothing is logged)."""
        kind = self._estimator_type
        if kind in ("classifier", "regressor"):
            from sklearn.metrics import accuracy_score, r2_score

            metric = accuracy_score if kind == "classifier" else r2_score
            return float(metric(y, self.predict(X, actor=actor), sample_weight=sample_weight))
        target = self._target()
        if not hasattr(target, "score"):
            raise InputError(f"{type(target).__name__} has no score()")
        return float(target.score(X, y, sample_weight=sample_weight))

    def __repr__(self) -> str:
        return f"AuditedModel(estimator={self.estimator!r}, actor={self.actor!r})"

    # -- logging ------------------------------------------------------------------------------

    def _predict(
        self,
        method: Callable[..., Any],
        name: str,
        inputs: Any,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        actor: str | None,
    ) -> Any:
        who = _check_actor(self.actor if actor is None else actor)
        outputs = method(inputs, *args, **kwargs)
        rows = list(np.asarray(inputs)) if hasattr(inputs, "__len__") else [inputs]
        results = list(np.asarray(outputs)) if hasattr(outputs, "__len__") else [outputs]
        if len(rows) != len(results):
            raise InputError(f"{name} returned {len(results)} results for {len(rows)} inputs")
        digest = self.digest
        extra = dict(self.metadata or {})
        records = [
            decision_record(
                model=digest,
                input=_jsonable(row),
                output=_jsonable(result),
                actor=who,
                metadata={**extra, "method": name},
            )
            for row, result in zip(rows, results, strict=True)
        ]
        self.logged_.extend(self.log.append_many(records, sensitive=("input",)))
        return outputs

    def __enter__(self) -> AuditedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def audited(
    model: Any = None,
    *,
    log: AuditLog,
    actor: str,
    model_digest: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Any:
    """Wrap an estimator (or, used as a decorator, a function) so its decisions are logged.

    An object with a prediction method becomes an :class:`AuditedModel`; a function (or, with
    no ``model``, the function decorated) is called as before, plus an ``actor=`` keyword that
    overrides ``actor`` for that call, and its return value is logged as one decision.
    """
    _check_actor(actor)
    if model is not None and any(hasattr(model, m) for m in _PREDICT_METHODS):
        return AuditedModel(
            model, log=log, actor=actor, model_digest=model_digest, metadata=metadata
        )
    if model is not None and not callable(model):
        raise InputError("audited() takes an estimator with predict(), or a function")

    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
        digest = (
            model_digest
            or "sha256:"
            + hashlib.sha256(f"{function.__module__}.{function.__qualname__}".encode()).hexdigest()
        )

        @functools.wraps(function)
        def logged(inputs: Any, *args: Any, actor: str | None = None, **kwargs: Any) -> Any:
            who = _check_actor(default_actor if actor is None else actor)
            output = function(inputs, *args, **kwargs)
            record = decision_record(
                model=digest,
                input=_jsonable(inputs),
                output=_jsonable(output),
                actor=who,
                metadata={**dict(metadata or {}), "function": function.__qualname__},
            )
            log.append(record, sensitive=("input",))
            return output

        return logged

    default_actor = actor
    return wrap(model) if model is not None else wrap
