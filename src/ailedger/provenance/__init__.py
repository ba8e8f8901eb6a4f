"""Provenance of datasets and models: digests, manifests, signed in-toto statements, the
registry on chain with lineage, verified loading, and sharing with the parties granted on chain.
"""

from __future__ import annotations

from ailedger.provenance._demo import demo_provenance
from ailedger.provenance.digest import (
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
    "write_graph",
]
