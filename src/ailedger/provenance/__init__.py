"""Provenance of datasets and models: digests, manifests, signed in-toto statements."""

from __future__ import annotations

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

__all__ = [
    "Manifest",
    "ManifestMismatch",
    "build_statement",
    "build_training_provenance",
    "digest_artifact",
    "digest_file",
    "sign_statement",
    "verify_envelope",
    "verify_manifest",
]
