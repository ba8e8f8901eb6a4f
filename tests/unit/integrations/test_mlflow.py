"""MLflow models with provenance: a local MLflow file store (no server), the embedded chain."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from ailedger.auditlog import AuditLog
from ailedger.errors import InputError, NodeUnavailable, SignatureError
from ailedger.integrations.mlflow import (
    TAG_PREFIX,
    load_audited,
    register_model,
    resolve_model,
)
from ailedger.provenance.bundle import bundle_path
from ailedger.provenance.digest import ManifestMismatch
from ailedger.provenance.dsse import TrustedKey
from tests.unit.provenance.conftest import Party, make_party  # noqa: F401 (a fixture)

# MLflow starts its telemetry client when imported: never let it send anything from a test
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
mlflow = pytest.importorskip("mlflow")
mlflow_sklearn = pytest.importorskip("mlflow.sklearn")


@pytest.fixture
def backend() -> str:
    """The embedded chain (the integration never touches the chain itself)."""
    return "embedded"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local MLflow file store as both tracking and registry URI; nothing is sent anywhere."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    uri = (tmp_path / "mlruns").as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture
def logged(store: str) -> tuple[Any, Any]:
    """An iris classifier logged and registered the usual MLflow way, as ``models:/iris/1``."""
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X, y)
    with mlflow.start_run():
        mlflow_sklearn.log_model(
            model,
            name="model",
            registered_model_name="iris",
            serialization_format="pickle",
            pip_requirements=["scikit-learn"],  # MLflow's inference starts a subprocess
        )
    return model, X


@pytest.fixture
def alice(make_party: Callable[[str], Party]) -> Party:  # noqa: F811
    return make_party("alice")


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    opened = AuditLog.open(tmp_path / "log.sqlite", origin="test.example/mlflow")
    yield opened
    opened.close()


def test_register_tags_mlflow_and_serves_audited(
    store: str, logged: tuple[Any, Any], alice: Party, log: AuditLog
) -> None:
    model, X = logged
    done = register_model(alice.ws, alice.ledger, "models:/iris/1", signing_key=alice.key)
    folder = done.model.path
    assert (folder / "MLmodel").is_file()
    assert done.bundle == bundle_path(folder) and done.bundle.is_file()
    assert json.loads(done.bundle.read_text())["digest"] == str(done.digest)
    # MLflow itself now knows the digest: on the version, the logged model and the run
    client = mlflow.MlflowClient()
    version = client.get_model_version("iris", "1")
    assert version.tags[f"{TAG_PREFIX}digest"] == str(done.digest)
    assert version.tags[f"{TAG_PREFIX}registrant"] == alice.ledger.account
    assert client.get_logged_model(version.model_id).tags[f"{TAG_PREFIX}digest"] == str(done.digest)
    assert client.get_run(version.run_id).data.tags[f"{TAG_PREFIX}digest"] == str(done.digest)
    assert done.bundle_uri is not None
    assert [a.path for a in client.list_artifacts(version.run_id, "ailedger")] == [
        f"ailedger/{done.model.key}.ailedger.json"
    ]

    served = load_audited(
        "models:/iris/1",
        log=log,
        actor="triage",
        trusted_keys=[alice.ws.public_key()],
        ledger=alice.ledger,
        flavor="sklearn",
    )
    np.testing.assert_array_equal(served.predict(X[:3]), model.predict(X[:3]))
    served.predict(X[:1], actor="dr-b")
    entries = [json.loads(data) for _, data in log.entries()]
    assert [e["actor"] for e in entries] == ["triage"] * 3 + ["dr-b"]
    assert {e["model"] for e in entries} == {str(done.digest)}
    assert entries[0]["metadata"]["mlflow_model_uri"] == "models:/iris/1"

    # without the bundle beside the folder, the one logged in MLflow is fetched
    done.bundle.unlink()
    client.set_registered_model_alias("iris", "champion", "1")
    again = load_audited(
        "models:/iris@champion",
        log=log,
        actor="triage",
        trusted_keys=[alice.ws.public_key()],
        ledger=alice.ledger,
    )
    assert again.digest == str(done.digest)
    assert again.predict(X[:2]).tolist() == model.predict(X[:2]).tolist()


def test_a_changed_model_or_an_untrusted_key_is_refused_before_loading(
    store: str,
    logged: tuple[Any, Any],
    alice: Party,
    log: AuditLog,
    make_party: Callable[[str], Party],  # noqa: F811
) -> None:
    register_model(alice.ws, alice.ledger, "models:/iris/1", signing_key=alice.key)
    mallory = make_party("mallory")
    keys: list[TrustedKey] = [mallory.ws.public_key()]
    with pytest.raises(SignatureError):
        load_audited("models:/iris/1", log=log, actor="a", trusted_keys=keys, ledger=alice.ledger)
    folder = resolve_model("models:/iris/1").path
    pickled = folder / "model.pkl"
    pickled.write_bytes(pickled.read_bytes() + b"\x00")
    with pytest.raises(ManifestMismatch, match=r"model\.pkl"):
        load_audited(
            "models:/iris/1",
            log=log,
            actor="a",
            trusted_keys=[alice.ws.public_key()],
            ledger=alice.ledger,
        )
    assert log.size == 0


def test_bad_uris_and_a_missing_mlflow_are_one_line_input_errors(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InputError, match="not an MLflow model URI"):
        resolve_model("s3://bucket/model")
    with pytest.raises(InputError, match="MLflow"):
        resolve_model("models:/no-such-model/1")
    with pytest.raises(InputError, match="flavor"):
        load_audited("models:/iris/1", log=None, actor="a", trusted_keys=[], flavor="../x")  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(InputError, match=r"pip install 'ailedger\[mlflow\]'"):
        resolve_model("models:/iris/1")


def test_an_unreachable_tracking_server_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NodeUnavailable, match="tracking server is unavailable"):
        resolve_model("models:/iris/1", tracking_uri=f"http://127.0.0.1:{port}")
