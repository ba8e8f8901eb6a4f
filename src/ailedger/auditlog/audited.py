"""Logging the decisions of AI code: a wrapper for estimators and callables.

``audited(model, log=..., actor=...)`` returns an object that behaves like ``model`` and logs
every prediction it makes: one decision record per input row (scikit-learn's ``predict`` and
``predict_proba``, or a plain callable's return value), committed in one batch per call, before
the predictions are handed back. Used bare as a decorator it wraps a function::

    @audited(log=log, model_digest="sha256:...", actor="triage-service")
    def triage(features): ...

and as a context manager it closes nothing but makes the audited scope explicit::

    with audited(classifier, log=log, actor="svc") as model:
        model.predict(X)
"""

from __future__ import annotations

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


def model_digest_of(model: Any) -> str:
    """A content digest for an in-memory model: SHA-256 of its pickle.

    Prefer the digest of the registered model file (see :mod:`ailedger.provenance`); this is a
    fallback for models that never touched a file.
    """
    return "sha256:" + hashlib.sha256(pickle.dumps(model, protocol=5)).hexdigest()


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


class AuditedModel:
    """A model whose predictions are logged; every other attribute is the model's own."""

    def __init__(
        self,
        model: Any,
        *,
        log: AuditLog,
        actor: str,
        model_digest: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self._model = model
        self._log = log
        self._actor = actor
        self._digest = model_digest or model_digest_of(model)
        self._metadata = dict(metadata or {})
        self.logged: list[int] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._model, name)
        if name in _PREDICT_METHODS and callable(attribute):
            return functools.partial(self._predict, attribute, name)
        return attribute

    def _predict(
        self, method: Callable[..., Any], name: str, inputs: Any, *args: Any, **kwargs: Any
    ) -> Any:
        outputs = method(inputs, *args, **kwargs)
        rows = list(np.asarray(inputs)) if hasattr(inputs, "__len__") else [inputs]
        results = list(np.asarray(outputs)) if hasattr(outputs, "__len__") else [outputs]
        if len(rows) != len(results):
            raise InputError(f"{name} returned {len(results)} results for {len(rows)} inputs")
        records = [
            decision_record(
                model=self._digest,
                input=_jsonable(row),
                output=_jsonable(result),
                actor=self._actor,
                metadata={**self._metadata, "method": name},
            )
            for row, result in zip(rows, results, strict=True)
        ]
        self.logged.extend(self._log.append_many(records, sensitive=("input",)))
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
    """Wrap an estimator (or, used as a decorator, a function) so its decisions are logged."""
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
        def logged(inputs: Any, *args: Any, **kwargs: Any) -> Any:
            output = function(inputs, *args, **kwargs)
            record = decision_record(
                model=digest,
                input=_jsonable(inputs),
                output=_jsonable(output),
                actor=actor,
                metadata={**dict(metadata or {}), "function": function.__qualname__},
            )
            log.append(record, sensitive=("input",))
            return output

        return logged

    return wrap(model) if model is not None else wrap
