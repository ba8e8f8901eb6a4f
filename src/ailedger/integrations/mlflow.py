"""MLflow models with provenance: register a logged model on chain, serve it verified and audited.

MLflow users keep logging models as they do (``mlflow.sklearn.log_model(...,
registered_model_name=...)``) and add one call per model:

- :func:`register_model` resolves a model URI (``models:/<name>/<version>``,
  ``models:/<name>@<alias>``, ``models:/<model_id>``, ``runs:/<run_id>/<path>``; MLflow 3's
  "Model URIs") to the model's artifact folder (the folder holding ``MLmodel``), registers the
  folder as a model with :func:`ailedger.provenance.register_artifact` (a model-signing manifest
  of every file, signed, on chain, with a bundle beside the folder), then records the result in
  MLflow itself: tags ``ailedger.digest``, ``ailedger.registrant``, ``ailedger.chain_id``,
  ``ailedger.registry``, ``ailedger.statement_digest``, ``ailedger.tx`` and ``ailedger.bundle``
  on the model version, the logged model and the run (whichever the URI has), and the bundle
  itself as a run artifact ``ailedger/<model>.ailedger.json``, so whoever can read the
  model from the MLflow registry can also fetch its evidence.
- :func:`load_audited` copies the artifact folder into a private temporary folder, verifies
  the copy against the chain and a trusted key (:func:`ailedger.provenance.verify_with_bundle`),
  loads that copy with MLflow (``pyfunc`` by default, or a flavor such as ``sklearn``) and wraps
  it with :func:`ailedger.auditlog.audited`, so each prediction is logged naming the registered
  digest. Nothing is unpickled before the check, and a folder changed after it is never loaded.

``registered_model_meta``, which MLflow writes into the artifact folder when a version is
created, is left out of the manifest, so registering on chain before or after registering in
MLflow gives the same digest. mlflow is imported on first use (``pip install
'ailedger[mlflow]'``).
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog.audited import AuditedModel
from ailedger.auditlog.log import AuditLog
from ailedger.errors import InputError, NodeUnavailable
from ailedger.ledger import Ledger
from ailedger.provenance.bundle import BUNDLE_SUFFIX, bundle_path, verify_with_bundle
from ailedger.provenance.digest import Digest
from ailedger.provenance.dsse import TrustedKey
from ailedger.provenance.registry import (
    Registration,
    Verification,
    provenance_registry,
    register_artifact,
)
from ailedger.workspace import Workspace

__all__ = [
    "IGNORED_FILES",
    "TAG_PREFIX",
    "MlflowModel",
    "MlflowRegistration",
    "load_audited",
    "register_model",
    "resolve_model",
    "verify_model",
]

#: prefix of the tags written in MLflow
TAG_PREFIX = "ailedger."
#: files MLflow adds to an artifact folder after logging, left out of the manifest
IGNORED_FILES = ("registered_model_meta",)
_BUNDLE_DIR = "ailedger"
_FLAVOR = re.compile(r"[a-z][a-z0-9_]{0,39}")
_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE", "BAD_REQUEST"}


@dataclass(frozen=True)
class MlflowModel:
    """A model URI resolved: its local artifact folder and what MLflow knows it by (registered
    ``name`` and ``version``, MLflow 3 ``model_id``, the ``run_id`` that logged it)."""

    uri: str
    path: Path
    name: str | None = None
    version: str | None = None
    model_id: str | None = None
    run_id: str | None = None

    @property
    def key(self) -> str:
        """A file-name-safe name for the model (for its bundle among a run's artifacts)."""
        raw = self.model_id or (f"{self.name}-v{self.version}" if self.name else self.path.name)
        return re.sub(r"[^A-Za-z0-9._-]", "_", raw)


@dataclass(frozen=True)
class MlflowRegistration:
    """The result of :func:`register_model`: the model, its registration and its bundle (a file
    beside the artifact folder, and ``bundle_uri`` where it was logged in MLflow, if it was)."""

    model: MlflowModel
    registration: Registration
    bundle: Path
    bundle_uri: str | None
    tags: Mapping[str, str]

    @property
    def digest(self) -> Digest:
        """The model's digest (root of the manifest of its artifact folder)."""
        return Digest(self.registration.digest)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "model_uri": self.model.uri,
            "path": str(self.model.path),
            "name": self.model.name,
            "version": self.model.version,
            "model_id": self.model.model_id,
            "run_id": self.model.run_id,
            "bundle": str(self.bundle),
            "bundle_uri": self.bundle_uri,
            "tags": dict(self.tags),
            **self.registration.to_json(),
        }


def _mlflow() -> Any:
    try:
        return importlib.import_module("mlflow")
    except ImportError as exc:
        raise InputError(
            "the MLflow integration needs mlflow: pip install 'ailedger[mlflow]'"
        ) from exc


def _translate(exc: BaseException, what: str) -> Exception:
    code = getattr(exc, "error_code", None)
    message = str(getattr(exc, "message", None) or exc).strip().splitlines()
    first = (message[0] if message else type(exc).__name__)[:300]
    cause: BaseException | None = exc
    for _ in range(8):  # MLflow wraps a refused connection in an MlflowException
        if cause is None:
            break
        if isinstance(cause, OSError) and not isinstance(cause, FileNotFoundError):
            return NodeUnavailable(f"the MLflow tracking server is unavailable ({what}): {first}")
        cause = cause.__cause__ or cause.__context__
    if code is not None and code not in _NOT_FOUND:
        return InputError(f"MLflow: {what} ({code}): {first}")
    return InputError(f"MLflow: {what}: {first}")


def _client(tracking_uri: str | None) -> Any:
    mlflow = _mlflow()
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def resolve_model(
    model_uri: str,
    *,
    tracking_uri: str | None = None,
    dst_path: str | os.PathLike[str] | None = None,
) -> MlflowModel:
    """Find the local artifact folder of ``model_uri`` and the MLflow entities behind it.

    With a local (``file:``) artifact store the folder is MLflow's own; otherwise MLflow
    downloads it into ``dst_path`` (default: a new temporary folder). Raises
    :class:`InputError` for a malformed or unknown URI, or a folder with no ``MLmodel``, and
    :class:`NodeUnavailable` when the tracking server cannot be reached.
    """
    if not isinstance(model_uri, str) or not re.fullmatch(r"(models|runs):/\S+", model_uri):
        raise InputError(
            f"not an MLflow model URI: {model_uri!r} (models:/NAME/VERSION, models:/NAME@ALIAS,"
            " models:/MODEL_ID or runs:/RUN_ID/PATH)"
        )
    mlflow = _mlflow()
    client = _client(tracking_uri)
    name = version = model_id = run_id = None
    body = model_uri.split(":/", 1)[1].strip("/")
    try:
        if model_uri.startswith("runs:/"):
            run_id = body.split("/", 1)[0]
        elif "@" in body:
            name, alias = body.rsplit("@", 1)
            found = client.get_model_version_by_alias(name, alias)
            version, model_id, run_id = str(found.version), found.model_id, found.run_id
        elif "/" in body:
            name, version = body.rsplit("/", 1)
            found = client.get_model_version(name, version)
            model_id, run_id = found.model_id, found.run_id
        else:
            model_id = body
            run_id = client.get_logged_model(model_id).source_run_id
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri,
            dst_path=None if dst_path is None else os.fspath(dst_path),
            tracking_uri=tracking_uri,
            registry_uri=tracking_uri,
        )
    except InputError:
        raise
    except Exception as exc:
        raise _translate(exc, f"cannot resolve {model_uri}") from exc
    path = Path(local)
    if not (path / "MLmodel").is_file():
        raise InputError(f"{model_uri} is not an MLflow model: no MLmodel file in {path}")
    return MlflowModel(
        uri=model_uri,
        path=path,
        name=name,
        version=version,
        model_id=model_id or None,
        run_id=run_id or None,
    )


def register_model(
    workspace: Workspace,
    ledger: Ledger,
    model_uri: str,
    *,
    signing_key: Ed25519PrivateKey,
    parents: Iterable[bytes | tuple[str, bytes]] = (),
    tracking_uri: str | None = None,
    dst_path: str | os.PathLike[str] | None = None,
    log_bundle: bool = True,
) -> MlflowRegistration:
    """Register the artifact folder of ``model_uri`` on chain as a model and record its digest
    in MLflow (module docstring).

    ``parents`` are the registered datasets (or models) it came from, as for
    :func:`~ailedger.provenance.register_artifact`; the ledger signs as the registrant and
    ``signing_key`` signs the statement. With ``log_bundle`` the bundle is also logged as an
    artifact of the run that logged the model (when there is one). Raises what
    :func:`resolve_model` and :func:`~ailedger.provenance.register_artifact` raise
    (:class:`~ailedger.provenance.AlreadyRegistered` when this account registered the same
    folder already).
    """
    model = resolve_model(model_uri, tracking_uri=tracking_uri, dst_path=dst_path)
    registration = register_artifact(
        workspace,
        ledger,
        model.path,
        kind="model",
        signing_key=signing_key,
        parents=parents,
        ignore=IGNORED_FILES,
        write_bundle=True,
    )
    assert registration.bundle is not None
    client = _client(tracking_uri)
    bundle_uri = None
    if log_bundle and model.run_id is not None:
        with tempfile.TemporaryDirectory(prefix="ailedger-mlflow-") as tmp:
            named = Path(tmp) / f"{model.key}{BUNDLE_SUFFIX}"
            shutil.copyfile(registration.bundle, named)
            try:
                client.log_artifact(model.run_id, str(named), artifact_path=_BUNDLE_DIR)
            except Exception as exc:
                raise _translate(exc, f"cannot log the bundle to run {model.run_id}") from exc
        bundle_uri = f"runs:/{model.run_id}/{_BUNDLE_DIR}/{named.name}"
    receipt = registration.receipt
    tags = {
        f"{TAG_PREFIX}digest": str(Digest(registration.digest)),
        f"{TAG_PREFIX}registrant": registration.owner,
        f"{TAG_PREFIX}chain_id": str(ledger.chain_id),
        f"{TAG_PREFIX}statement_digest": str(Digest(registration.statement_digest)),
        f"{TAG_PREFIX}registry": provenance_registry(workspace, ledger).address,
    }
    if receipt is not None:
        tags[f"{TAG_PREFIX}tx"] = receipt.tx_hash
    if bundle_uri is not None:
        tags[f"{TAG_PREFIX}bundle"] = bundle_uri
    _set_tags(client, model, tags)
    return MlflowRegistration(
        model=model,
        registration=registration,
        bundle=registration.bundle,
        bundle_uri=bundle_uri,
        tags=tags,
    )


def _set_tags(client: Any, model: MlflowModel, tags: Mapping[str, str]) -> None:
    try:
        if model.name is not None and model.version is not None:
            for key, value in tags.items():
                client.set_model_version_tag(model.name, model.version, key, value)
        if model.model_id is not None:
            client.set_logged_model_tags(model.model_id, dict(tags))
        if model.run_id is not None:
            for key, value in tags.items():
                client.set_tag(model.run_id, key, value)
    except Exception as exc:
        raise _translate(exc, f"cannot tag {model.uri}") from exc


def _model_tags(client: Any, model: MlflowModel) -> dict[str, str]:
    """The ailedger tags MLflow holds for ``model`` (version, else logged model, else run)."""
    try:
        if model.name is not None and model.version is not None:
            found = dict(client.get_model_version(model.name, model.version).tags)
        elif model.model_id is not None:
            found = dict(client.get_logged_model(model.model_id).tags)
        elif model.run_id is not None:
            found = dict(client.get_run(model.run_id).data.tags)
        else:
            found = {}
    except Exception as exc:
        raise _translate(exc, f"cannot read the tags of {model.uri}") from exc
    return {k: str(v) for k, v in found.items() if k.startswith(TAG_PREFIX)}


def verify_model(
    model_uri: str,
    copy_to: str | os.PathLike[str],
    *,
    trusted_keys: Sequence[TrustedKey],
    ledger: Ledger | None = None,
    rpc: str | None = None,
    workspace: Workspace | None = None,
    registrant: str | None = None,
    bundle: str | os.PathLike[str] | None = None,
    tracking_uri: str | None = None,
) -> tuple[Path, Verification]:
    """Copy the artifact folder of ``model_uri`` into the folder ``copy_to`` and verify the
    copy from its bundle; returns the verified copy's path and the verification.

    The bundle is ``bundle``, else the one beside the artifact folder, else the one the
    ``ailedger.bundle`` tag points to in MLflow. The chain is ``ledger``, the node at ``rpc``
    or ``workspace``'s chain. ``registrant`` pins the trusted registrant (default: the
    bundle's). Raises :class:`~ailedger.provenance.ManifestMismatch` naming a changed file,
    :class:`~ailedger.provenance.BundleMismatch`, :class:`~ailedger.provenance.NotRegistered`,
    :class:`~ailedger.errors.SignatureError`, and :class:`InputError` when no bundle is found
    or no chain is given.
    """
    model = resolve_model(model_uri, tracking_uri=tracking_uri)
    target = Path(os.fspath(copy_to)) / model.path.name
    try:
        shutil.copytree(model.path, target, symlinks=True)
    except (OSError, shutil.Error) as exc:
        raise InputError(f"cannot copy {model.path} to verify it: {exc}") from exc
    tags = _model_tags(_client(tracking_uri), model)
    evidence: Path
    if bundle is not None:
        evidence = Path(os.fspath(bundle))
    elif bundle_path(model.path).is_file():
        evidence = bundle_path(model.path)
    elif f"{TAG_PREFIX}bundle" in tags:
        try:
            fetched = _mlflow().artifacts.download_artifacts(
                artifact_uri=tags[f"{TAG_PREFIX}bundle"],
                dst_path=os.fspath(copy_to),
                tracking_uri=tracking_uri,
            )
        except Exception as exc:
            raise _translate(exc, "cannot fetch the bundle") from exc
        evidence = Path(fetched)
    else:
        raise InputError(
            f"{model_uri} has no bundle beside {model.path} and no {TAG_PREFIX}bundle tag: "
            "register it with ailedger.integrations.mlflow.register_model, or give bundle="
        )
    expected = tags.get(f"{TAG_PREFIX}digest")
    with ExitStack() as stack:
        chain = ledger
        if chain is None and rpc is not None:
            chain = stack.enter_context(Ledger.connect(rpc))
        elif chain is None and workspace is not None:
            chain = stack.enter_context(workspace.ledger())
        if chain is None:
            raise InputError("give a chain to check the model against: ledger=, rpc= or workspace=")
        verification = verify_with_bundle(
            target,
            chain,
            trusted_keys=trusted_keys,
            bundle=evidence,
            registrant=registrant,
            expected=expected,
        )
    return target, verification


def load_audited(
    model_uri: str,
    *,
    log: AuditLog,
    actor: str,
    trusted_keys: Sequence[TrustedKey],
    ledger: Ledger | None = None,
    rpc: str | None = None,
    workspace: Workspace | None = None,
    registrant: str | None = None,
    bundle: str | os.PathLike[str] | None = None,
    flavor: str = "pyfunc",
    tracking_uri: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> AuditedModel:
    """Verify the model at ``model_uri`` (:func:`verify_model`), load the verified copy with
    ``mlflow.<flavor>.load_model`` and wrap it so each prediction is logged to ``log`` by
    ``actor`` (per call: ``predict(X, actor=...)``), naming the registered digest.

    The copy is deleted once loaded: flavors that read their files lazily after
    ``load_model`` (custom ``code_paths``) are not supported. Raises what
    :func:`verify_model` raises, and :class:`InputError` for an unknown flavor or a model
    MLflow cannot load.
    """
    if not isinstance(flavor, str) or not _FLAVOR.fullmatch(flavor):
        raise InputError(f"not an MLflow flavor name: {flavor!r} (e.g. pyfunc, sklearn)")
    _mlflow()
    try:
        loader = importlib.import_module(f"mlflow.{flavor}")
    except ImportError as exc:
        raise InputError(f"MLflow has no flavor {flavor!r} here: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="ailedger-mlflow-") as tmp:
        os.chmod(tmp, 0o700)
        path, verification = verify_model(
            model_uri,
            tmp,
            trusted_keys=trusted_keys,
            ledger=ledger,
            rpc=rpc,
            workspace=workspace,
            registrant=registrant,
            bundle=bundle,
            tracking_uri=tracking_uri,
        )
        try:
            model = loader.load_model(str(path))
        except Exception as exc:
            raise _translate(exc, f"cannot load {model_uri} as {flavor}") from exc
    digest = str(Digest(verification.registration.digest))
    return AuditedModel(
        model,
        log=log,
        actor=actor,
        model_digest=digest,
        metadata={"mlflow_model_uri": model_uri, **dict(metadata or {})},
    )
