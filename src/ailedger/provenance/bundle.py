"""Bundles: the evidence of a registration, kept beside the artifact it describes.

In the spirit of sigstore model-signing's ``model.sig`` (``sigstore/model-transparency``: the
signature travels with the model), ``provenance register`` writes ``ARTIFACT.ailedger.json``
next to the file or folder ``ARTIFACT`` (beside, not inside a folder, so the folder's files and
digest stay as registered). It holds the signed statement byte for byte as registered, and what
a verifier needs to find the registration on chain::

    {"mediaType": "application/vnd.ailedger.bundle.v1+json",
     "name": ARTIFACT_NAME, "kind": "dataset" | "model",
     "digest": "sha256:<root digest of the manifest>",
     "registrant": "0x<account>", "chain_id": N, "registry": "0x<ProvenanceRegistry>",
     "statement_digest": "sha256:<SHA-256 of the envelope bytes>",
     "dsse_envelope": "<base64 of the exact registered envelope bytes (RFC 8785 JSON)>"}

Verifying with a bundle (:func:`verify_with_bundle`) needs only the artifact, the bundle, a node
of the chain and the trusted public keys, never the registrant's workspace:

1. parse the bundle; its envelope must hash to its ``statement_digest``;
2. the node must serve ``chain_id``; the registrant must be the trusted one (when one is
   named); the registry address must hold the ``ProvenanceRegistry`` code (and be the pinned
   one, when one is given);
3. the registrant's registration of ``digest`` must exist and name the envelope's SHA-256;
4. a trusted key must have signed the envelope, whose statement names the registrant and is
   a model-signing manifest of ``digest`` (:func:`~ailedger.provenance.registry.trusted_manifest`);
5. the artifact's files must match that manifest.

The bundle itself is not trusted: each field is checked against the chain or the signature, so
an altered bundle fails at step 1, 3 or 4. The registry address is taken from the bundle; what
binds the artifact's content is the trusted signature, and the chain adds that the registrant
registered that very statement.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ailedger._fs import write_atomic
from ailedger._input import parse_json
from ailedger.errors import InputError, VerificationError
from ailedger.ledger import Ledger
from ailedger.ledger.provenance import ProvenanceRegistry, parse_address
from ailedger.provenance.digest import Digest, Manifest, ManifestMismatch, verify_manifest
from ailedger.provenance.dsse import TrustedKey
from ailedger.provenance.registry import (
    KINDS,
    NotRegistered,
    RegisteredByOther,
    Registration,
    Verification,
    parse_envelope,
    trusted_manifest,
)

__all__ = [
    "BUNDLE_SUFFIX",
    "MEDIA_TYPE",
    "Bundle",
    "BundleMismatch",
    "bundle_path",
    "read_bundle",
    "verify_with_bundle",
    "write_bundle",
]

MEDIA_TYPE = "application/vnd.ailedger.bundle.v1+json"
BUNDLE_SUFFIX = ".ailedger.json"
_MAX_BUNDLE_BYTES = 96 * 1024 * 1024


class BundleMismatch(VerificationError):
    """A bundle does not match the chain, the trusted registrant or its own contents."""


@dataclass(frozen=True, kw_only=True)
class Bundle:
    """A parsed bundle (see the module docstring); ``envelope`` holds the exact bytes."""

    name: str
    kind: str
    digest: Digest
    registrant: str
    chain_id: int
    registry: str
    statement_digest: Digest
    envelope: bytes

    def to_json(self) -> dict[str, Any]:
        """The bundle's JSON document."""
        return {
            "mediaType": MEDIA_TYPE,
            "name": self.name,
            "kind": self.kind,
            "digest": str(self.digest),
            "registrant": self.registrant,
            "chain_id": self.chain_id,
            "registry": self.registry,
            "statement_digest": str(self.statement_digest),
            "dsse_envelope": base64.b64encode(self.envelope).decode("ascii"),
        }


def bundle_path(artifact: str | os.PathLike[str]) -> Path:
    """Where the bundle of ``artifact`` lives: ``ARTIFACT.ailedger.json`` beside it (for a
    folder ``data/``, ``data.ailedger.json`` next to the folder)."""
    p = Path(os.path.abspath(os.fspath(artifact)))
    return p.with_name(p.name + BUNDLE_SUFFIX)


def write_bundle(
    artifact: str | os.PathLike[str],
    envelope: bytes,
    registration: Registration,
    *,
    chain_id: int,
    registry: str,
) -> Path:
    """Write the bundle of a registration beside ``artifact``; returns its path.

    ``envelope`` must be the exact registered bytes (they hash to the registration's
    ``statement_digest``). An existing bundle is replaced atomically.
    """
    if Digest.of(envelope).raw != registration.statement_digest:
        raise InputError("the envelope bytes are not the registered statement")
    bundle = Bundle(
        name=Path(os.path.abspath(os.fspath(artifact))).name,
        kind=registration.kind,
        digest=Digest(registration.digest),
        registrant=registration.owner,
        chain_id=chain_id,
        registry=parse_address(registry, "registry"),
        statement_digest=Digest(registration.statement_digest),
        envelope=envelope,
    )
    target = bundle_path(artifact)
    data = json.dumps(bundle.to_json(), indent=1, sort_keys=True).encode() + b"\n"
    write_atomic(target, data, mode=0o644)
    return target


def read_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read and parse a bundle file.

    Raises :class:`InputError` when the file cannot be read and :class:`BundleMismatch` when it
    is malformed or its envelope does not hash to its ``statement_digest`` (it was altered).
    """
    p = os.fspath(path)
    try:
        with open(p, "rb") as fh:
            data = fh.read(_MAX_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read the bundle {p!r}: {exc.strerror}") from exc
    try:
        doc = parse_json(data, what=f"bundle {p!r}", max_bytes=_MAX_BUNDLE_BYTES)
    except InputError as exc:
        raise BundleMismatch(f"{exc} (the bundle is damaged)") from exc
    try:
        return _parse(doc)
    except InputError as exc:
        raise BundleMismatch(f"bundle {p!r}: {exc}") from exc


def _parse(doc: Any) -> Bundle:
    if not isinstance(doc, dict):
        raise InputError("not a JSON object")
    if doc.get("mediaType") != MEDIA_TYPE:
        raise InputError(f"mediaType is not {MEDIA_TYPE}")

    def text(key: str) -> str:
        value = doc.get(key)
        if not isinstance(value, str):
            raise InputError(f"{key} is missing or not a string")
        return value

    chain_id = doc.get("chain_id")
    if not isinstance(chain_id, int) or isinstance(chain_id, bool) or chain_id <= 0:
        raise InputError("chain_id is missing or not a positive integer")
    kind = text("kind")
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}")
    try:
        envelope = base64.b64decode(text("dsse_envelope"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError("dsse_envelope is not base64") from exc
    bundle = Bundle(
        name=text("name"),
        kind=kind,
        digest=Digest.parse(text("digest"), "digest"),
        registrant=parse_address(text("registrant"), "registrant"),
        chain_id=chain_id,
        registry=parse_address(text("registry"), "registry"),
        statement_digest=Digest.parse(text("statement_digest"), "statement_digest"),
        envelope=envelope,
    )
    if Digest.of(envelope) != bundle.statement_digest:
        raise InputError(
            f"its envelope hashes to {Digest.of(envelope)}, not to its statement_digest "
            f"{bundle.statement_digest}: it was altered"
        )
    return bundle


def verify_with_bundle(
    artifact: str | os.PathLike[str],
    ledger: Ledger,
    *,
    trusted_keys: Sequence[TrustedKey],
    bundle: str | os.PathLike[str] | Bundle | None = None,
    registrant: str | None = None,
    registry: str | None = None,
    expected: bytes | Digest | str | None = None,
    recheck: Callable[[Manifest], None] | None = None,
) -> Verification:
    """Verify ``artifact`` from its bundle and the chain (steps in the module docstring).

    ``bundle`` defaults to :func:`bundle_path` of the artifact; ``registrant`` (the trusted
    account) and ``registry`` (a pinned registry address) default to the bundle's; ``expected``
    is the digest the artifact must have. ``recheck`` compares the artifact with the verified
    manifest (default: :func:`verify_manifest` on the files). Raises :class:`BundleMismatch`
    for a bundle of another chain, registrant, registry or digest, or one that was altered;
    :class:`NotRegistered` when the chain has no such registration;
    :class:`~ailedger.provenance.digest.ManifestMismatch` naming the file that differs;
    :class:`~ailedger.errors.SignatureError` when no trusted key signed the statement.
    """
    if not trusted_keys:
        raise InputError("give at least one trusted public key")
    found = (
        bundle
        if isinstance(bundle, Bundle)
        else read_bundle(bundle if bundle is not None else bundle_path(artifact))
    )
    if found.chain_id != ledger.chain_id:
        raise BundleMismatch(
            f"the bundle's registration is on chain {found.chain_id}, but the node serves "
            f"chain {ledger.chain_id}: give a node of chain {found.chain_id} (--rpc URL)"
        )
    owner = found.registrant
    if registrant is not None and parse_address(registrant, "registrant") != owner:
        raise BundleMismatch(
            f"the bundle is from registrant {owner}, not from the trusted registrant "
            f"{parse_address(registrant, 'registrant')}"
        )
    if registry is not None and parse_address(registry, "registry") != found.registry:
        raise BundleMismatch(
            f"the bundle names the registry {found.registry}, not the trusted registry "
            f"{parse_address(registry, 'registry')}"
        )
    if expected is not None and Digest.parse(expected, "expected digest") != found.digest:
        raise BundleMismatch(
            f"the bundle is for {found.digest}, not for the expected digest "
            f"{Digest.parse(expected, 'expected digest')}"
        )
    contract = ProvenanceRegistry(ledger=ledger, address=found.registry, chain_id=found.chain_id)
    record = contract.registration(owner, found.digest.raw)
    if record is None:
        others = contract.registrants(found.digest.raw)
        if others:
            raise RegisteredByOther(found.digest.raw, owner, others)
        raise NotRegistered(
            f"{found.digest} is not registered by {owner} in registry {found.registry} on "
            f"chain {found.chain_id}, as the bundle claims"
        )
    registration = Registration.from_chain(record)
    if registration.statement_digest != found.statement_digest.raw:
        raise BundleMismatch(
            f"the bundle's statement {found.statement_digest} is not the one registered "
            f"({Digest(registration.statement_digest)}): the bundle was altered or replaced"
        )
    envelope = parse_envelope(found.envelope, "bundle's signed statement")
    manifest, envelope = trusted_manifest(envelope, registration, trusted_keys)
    if recheck is None:
        try:
            verify_manifest(artifact, manifest)
        except ManifestMismatch as exc:
            if exc.path != ".":
                raise
            where = os.fspath(artifact)  # a single file: name it, not "."
            raise ManifestMismatch(where, where, exc.kind) from exc
    else:
        recheck(manifest)
    return Verification(registration=registration, manifest=manifest, envelope=envelope)
