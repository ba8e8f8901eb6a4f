"""The provenance part of ``ailedger demo``: register a dataset and a model, load it verified."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ailedger.ledger import Ledger
from ailedger.provenance.digest import Digest
from ailedger.provenance.lineage import lineage
from ailedger.provenance.loading import load_verified
from ailedger.provenance.registry import register_artifact
from ailedger.workspace import Workspace

__all__ = ["demo_provenance"]


def demo_provenance(
    workspace: Workspace,
    passphrase: str | Callable[[], str],
    dataset_path: str | os.PathLike[str],
    model_path: str | os.PathLike[str],
    *,
    ledger: Ledger | None = None,
) -> dict[str, Any]:
    """Register ``dataset_path``, register ``model_path`` with it as parent, and load the model
    through :func:`~ailedger.provenance.loading.load_verified` under the workspace's own key.

    ``ledger`` (signing as the workspace's account) is used if given; otherwise the workspace's
    chain is opened and closed here. Returns a small JSON-ready report.
    """
    secret: Callable[[], str] = passphrase if callable(passphrase) else (lambda: passphrase)
    if ledger is None:
        with workspace.ledger(passphrase=secret) as own:
            return _run(workspace, own, secret, dataset_path, model_path)
    return _run(workspace, ledger, secret, dataset_path, model_path)


def _run(
    workspace: Workspace,
    ledger: Ledger,
    secret: Callable[[], str],
    dataset_path: str | os.PathLike[str],
    model_path: str | os.PathLike[str],
) -> dict[str, Any]:
    key = workspace.signing_key(secret)
    dataset = register_artifact(workspace, ledger, dataset_path, kind="dataset", signing_key=key)
    model = register_artifact(
        workspace, ledger, model_path, kind="model", signing_key=key, parents=[dataset.ref]
    )
    loaded = load_verified(
        model_path,
        trusted_keys=[workspace.public_key()],
        workspace=workspace,
        ledger=ledger,
        registrant=model.owner,
    )
    graph = lineage(workspace, ledger, model.digest, owner=model.owner)
    return {
        "dataset": dataset.to_json(),
        "model": model.to_json(),
        "lineage": [str(Digest(d)) for _, d in graph.nodes],
        "loaded": type(loaded).__name__,
        "verified": True,
    }
