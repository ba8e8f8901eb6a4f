"""Provenance of datasets and models: digests, manifests, signed in-toto statements, the
registry on chain with lineage, verified loading, and sharing with the parties granted on chain.
"""

from __future__ import annotations

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
