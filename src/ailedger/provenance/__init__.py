"""Provenance of datasets and models: digests, manifests, signed in-toto statements, the
registry on chain with lineage, verified loading, and sharing with the parties granted on chain.

Names load on first use: the chain (web3, the embedded EVM) is imported only by code that
needs it, so `ailedger --help` and the commands that never touch a chain start fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ailedger.provenance._demo import demo_provenance
    from ailedger.provenance.bundle import Bundle, BundleMismatch, bundle_path, verify_with_bundle
    from ailedger.provenance.digest import (
        Digest,
        Manifest,
        ManifestMismatch,
        digest_artifact,
        digest_file,
        verify_manifest,
    )
    from ailedger.provenance.dsse import (
        build_statement,
        build_training_provenance,
        sign_statement,
        verify_envelope,
    )
    from ailedger.provenance.lineage import Lineage, lineage, render_tree, write_graph
    from ailedger.provenance.loading import load_verified
    from ailedger.provenance.registry import (
        AlreadyRegistered,
        NotRegistered,
        RegisteredByOther,
        Registration,
        UnknownParent,
        Verification,
        import_statement,
        lookup,
        register_artifact,
        verify_artifact,
    )
    from ailedger.provenance.sharing import GrantRevoked, NoGrant, NotARecipient

_WHERE = {
    "demo_provenance": "_demo",
    "Bundle": "bundle",
    "BundleMismatch": "bundle",
    "bundle_path": "bundle",
    "verify_with_bundle": "bundle",
    "Digest": "digest",
    "Manifest": "digest",
    "ManifestMismatch": "digest",
    "digest_artifact": "digest",
    "digest_file": "digest",
    "verify_manifest": "digest",
    "build_statement": "dsse",
    "build_training_provenance": "dsse",
    "sign_statement": "dsse",
    "verify_envelope": "dsse",
    "Lineage": "lineage",
    "lineage": "lineage",
    "render_tree": "lineage",
    "write_graph": "lineage",
    "load_verified": "loading",
    "AlreadyRegistered": "registry",
    "NotRegistered": "registry",
    "RegisteredByOther": "registry",
    "Registration": "registry",
    "UnknownParent": "registry",
    "Verification": "registry",
    "import_statement": "registry",
    "lookup": "registry",
    "register_artifact": "registry",
    "verify_artifact": "registry",
    "GrantRevoked": "sharing",
    "NoGrant": "sharing",
    "NotARecipient": "sharing",
}

__all__ = [
    "AlreadyRegistered",
    "Bundle",
    "BundleMismatch",
    "Digest",
    "GrantRevoked",
    "Lineage",
    "Manifest",
    "ManifestMismatch",
    "NoGrant",
    "NotARecipient",
    "NotRegistered",
    "RegisteredByOther",
    "Registration",
    "UnknownParent",
    "Verification",
    "build_statement",
    "build_training_provenance",
    "bundle_path",
    "demo_provenance",
    "digest_artifact",
    "digest_file",
    "import_statement",
    "lineage",
    "load_verified",
    "lookup",
    "register_artifact",
    "render_tree",
    "sign_statement",
    "verify_artifact",
    "verify_envelope",
    "verify_manifest",
    "verify_with_bundle",
    "write_graph",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'ailedger.provenance' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ailedger.provenance.{module}"), name)
    globals()[name] = value
    return value
