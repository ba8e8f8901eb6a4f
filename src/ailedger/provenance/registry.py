"""Registering datasets and models on chain, and verifying an artifact against its registration.

Registering an artifact (:func:`register_artifact`):

1. hash it into a sigstore model-signing manifest
   (:func:`~ailedger.provenance.digest.digest_artifact`); its root digest is its identity;
2. sign the manifest's in-toto statement into a DSSE envelope with the workspace's Ed25519 key
   and store the envelope's RFC 8785 bytes in the workspace's blobs, named by their SHA-256;
3. register ``(digest, kind, SHA-256 of the envelope, parents)`` in the ``ProvenanceRegistry``
   contract, owned by the workspace's account;
4. append a ``provenance.register`` event to the workspace's audit log, if it has one.

Verifying an artifact (:func:`verify_artifact`, numbered as in the code):

1. hash the files on disk into a manifest;
2. look its root digest up on chain; if it is not registered, take the registration the caller
   expects (or the latest one this workspace made under the same artifact name), so that the
   error can name the file that differs;
3. read the registered statement from the blobs and check its SHA-256 against the chain;
4. verify the DSSE signature under the trusted keys (DSSE protocol.md) and parse the statement
   as a model-signing manifest whose subject is the registered digest;
5. compare the manifest with the files (:func:`~ailedger.provenance.digest.verify_manifest`).

Lineage is the graph of parents: a parent must be registered before its child, so the graph
is acyclic (:mod:`ailedger.provenance.lineage` walks and draws it).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger._fs import write_atomic
from ailedger.auditlog.events import record_event
from ailedger.crypto.canonical import canonical_json
from ailedger.errors import InputError, VerificationError, WorkspaceError
from ailedger.ledger import Ledger, Receipt
from ailedger.ledger.provenance import (
    MAX_PARENTS,
    AlreadyRegistered,
    ChainRegistration,
    ProvenanceRegistry,
    UnknownParent,
)
from ailedger.provenance.digest import Manifest, digest_artifact, verify_manifest
from ailedger.provenance.dsse import TrustedKey, sign_statement, verify_envelope
from ailedger.workspace import Workspace

__all__ = [
    "KINDS",
    "AlreadyRegistered",
    "NotRegistered",
    "Registration",
    "StatementNotFound",
    "UnknownParent",
    "Verification",
    "load_statement",
    "lookup",
    "parse_digest",
    "provenance_registry",
    "register_artifact",
    "verify_artifact",
]

#: artifact kinds and their codes on chain
KINDS: dict[str, int] = {"dataset": 1, "model": 2}
_KIND_NAMES = {code: name for name, code in KINDS.items()}
_INDEX_FILE = "provenance.json"


class NotRegistered(VerificationError):
    """No registration matches the artifact (it is unknown, or it changed)."""


class StatementNotFound(VerificationError):
    """The signed statement of a registration is not in the workspace's blobs."""


@dataclass(frozen=True, kw_only=True)
class Registration:
    """A registered artifact: its digest (the manifest's root), kind, owner and parents."""

    digest: bytes
    kind: str
    owner: str
    statement_digest: bytes
    parents: tuple[bytes, ...]
    block_number: int
    timestamp: int
    receipt: Receipt | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_chain(cls, record: ChainRegistration, receipt: Receipt | None = None) -> Registration:
        return cls(
            digest=record.digest,
            kind=_KIND_NAMES.get(record.kind, f"kind-{record.kind}"),
            owner=record.owner,
            statement_digest=record.statement_digest,
            parents=record.parents,
            block_number=record.block_number,
            timestamp=record.timestamp,
            receipt=receipt,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "digest": "0x" + self.digest.hex(),
            "kind": self.kind,
            "owner": self.owner,
            "statement_digest": "0x" + self.statement_digest.hex(),
            "parents": ["0x" + p.hex() for p in self.parents],
            "block_number": self.block_number,
            "timestamp": self.timestamp,
        }
        if self.receipt is not None:
            out["tx_hash"] = self.receipt.tx_hash
            out["gas_used"] = self.receipt.gas_used
        return out


@dataclass(frozen=True, kw_only=True)
class Verification:
    """A verified artifact: its registration, its signed manifest and the DSSE envelope."""

    registration: Registration
    manifest: Manifest
    envelope: dict[str, Any] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.registration.to_json(),
            "name": self.manifest.model_name,
            "files": len({r.name.rsplit(":", 2)[0] for r in self.manifest.resources}),
            "signed_by": [s.get("keyid") for s in self.envelope.get("signatures", [])],
        }


def parse_digest(text: str, what: str = "digest") -> bytes:
    """Parse a SHA-256 digest written as 64 hex digits, with or without a ``0x`` prefix."""
    if not isinstance(text, str):
        raise InputError(f"{what} must be 64 hex digits")
    body = text[2:] if text.lower().startswith("0x") else text
    if len(body) != 64:
        raise InputError(f"{what} must be 64 hex digits (optionally after 0x), got {text!r}")
    try:
        return bytes.fromhex(body)
    except ValueError as exc:
        raise InputError(
            f"{what} must be 64 hex digits (optionally after 0x), got {text!r}"
        ) from exc


def provenance_registry(workspace: Workspace, ledger: Ledger) -> ProvenanceRegistry:
    """The workspace's ``ProvenanceRegistry`` on ``ledger``'s chain.

    Raises :class:`WorkspaceError` when the workspace has none on that chain (it was set up on
    another one) and :class:`ContractNotFound` when the recorded address holds other code.
    """
    address = workspace.contract_address(ledger.chain_id, ProvenanceRegistry.NAME)
    return ProvenanceRegistry(ledger=ledger, address=address, chain_id=ledger.chain_id)


def register_artifact(
    workspace: Workspace,
    ledger: Ledger,
    path: str | os.PathLike[str],
    *,
    kind: str,
    signing_key: Ed25519PrivateKey,
    parents: Iterable[bytes] = (),
    ignore: Iterable[str] = (),
    allow_symlinks: bool = False,
) -> Registration:
    """Hash, sign and register the file or folder at ``path`` (see the module docstring).

    Raises :class:`AlreadyRegistered` when the digest is registered already (by anyone),
    :class:`UnknownParent` for a parent that is not registered, :class:`InputError` for a bad
    kind or path and :class:`~ailedger.provenance.digest.FileChanged` when a file changes while
    it is hashed. On any failure the chain is untouched and no new blob is left behind.
    """
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    parent_list = tuple(parents)
    if len(parent_list) > MAX_PARENTS:
        raise InputError(f"at most {MAX_PARENTS} parents, got {len(parent_list)}")
    if len(set(parent_list)) != len(parent_list):
        raise InputError("a parent is listed twice")
    registry = provenance_registry(workspace, ledger)
    manifest = digest_artifact(path, ignore=ignore, allow_symlinks=allow_symlinks)
    digest = bytes.fromhex(manifest.root_digest)
    existing = registry.registration(digest)
    if existing is not None:
        raise AlreadyRegistered(
            digest,
            f"as {_KIND_NAMES.get(existing.kind, existing.kind)} by {existing.owner} "
            f"in block {existing.block_number}",
        )
    for parent in parent_list:
        if parent == digest:
            raise InputError("an artifact cannot be its own parent")
        if not registry.is_registered(parent):
            raise UnknownParent(f"parent 0x{parent.hex()} is not registered on chain")
    envelope = sign_statement(manifest.to_statement(), signing_key)
    blob = canonical_json(envelope)
    statement_digest = hashlib.sha256(blob).digest()
    blob_path = _blob_path(workspace, statement_digest)
    created = not blob_path.exists()
    if created:
        write_atomic(blob_path, blob, mode=0o644)
    try:
        receipt = registry.register(digest, KINDS[kind], statement_digest, parent_list)
    except BaseException:
        if created:
            blob_path.unlink(missing_ok=True)
        raise
    _remember_name(workspace, manifest.model_name, digest)
    record = registry.registration(digest)
    assert record is not None
    registration = Registration.from_chain(record, receipt)
    record_event(
        workspace,
        "provenance.register",
        {"chain_id": ledger.chain_id, "name": manifest.model_name, **registration.to_json()},
    )
    return registration


def lookup(workspace: Workspace, ledger: Ledger, digest: bytes) -> Registration | None:
    """The registration of ``digest`` on ``ledger``'s chain, or None."""
    record = provenance_registry(workspace, ledger).registration(digest)
    return None if record is None else Registration.from_chain(record)


def load_statement(workspace: Workspace, registration: Registration) -> dict[str, Any]:
    """The DSSE envelope a registration names, read from the blobs (signature not checked).

    Raises :class:`StatementNotFound` when the blob is absent and :class:`VerificationError`
    when its SHA-256 differs from the one on chain.
    """
    path = _blob_path(workspace, registration.statement_digest)
    try:
        blob = path.read_bytes()
    except FileNotFoundError as exc:
        raise StatementNotFound(
            f"the signed statement 0x{registration.statement_digest.hex()} of "
            f"0x{registration.digest.hex()} is not in this workspace's blobs"
        ) from exc
    except OSError as exc:
        raise WorkspaceError(f"cannot read {path}: {exc.strerror}") from exc
    if hashlib.sha256(blob).digest() != registration.statement_digest:
        raise VerificationError(
            f"the stored statement {path.name} does not hash to its name: it was altered"
        )
    try:
        envelope = json.loads(blob)
    except ValueError as exc:
        raise VerificationError(f"the stored statement {path.name} is not JSON") from exc
    if not isinstance(envelope, dict):
        raise VerificationError(f"the stored statement {path.name} is not a DSSE envelope")
    return envelope


def verify_artifact(
    workspace: Workspace,
    ledger: Ledger,
    path: str | os.PathLike[str],
    *,
    trusted_keys: Sequence[TrustedKey],
    expected: bytes | None = None,
) -> Verification:
    """Check the files at ``path`` against their registration (steps in the module docstring).

    ``expected`` names the digest the artifact should have; without it, a changed artifact is
    compared with the latest registration this workspace made under the same name. Raises
    :class:`~ailedger.provenance.digest.ManifestMismatch` naming the first differing file,
    :class:`NotRegistered` when nothing to compare with is registered,
    :class:`SignatureError` when no trusted key signed the statement.
    """
    registry = provenance_registry(workspace, ledger)
    computed = digest_artifact(path)
    return resolve(
        workspace,
        registry,
        computed,
        trusted_keys=trusted_keys,
        expected=expected,
        recheck=lambda manifest: verify_manifest(path, manifest),
    )


def resolve(
    workspace: Workspace,
    registry: ProvenanceRegistry,
    computed: Manifest,
    *,
    trusted_keys: Sequence[TrustedKey],
    expected: bytes | None,
    recheck: Callable[[Manifest], None],
) -> Verification:
    """Steps 2-5 of verification for an artifact already hashed into ``computed``.

    ``recheck`` compares the artifact with a registered manifest whose digest differs from
    ``computed`` and raises the mismatch it finds; if it returns, the artifact matches that
    manifest (hashed with other settings) and its registration is the one verified.
    """
    if not trusted_keys:
        raise InputError("give at least one trusted public key")
    digest = bytes.fromhex(computed.root_digest)
    record = registry.registration(digest)
    if record is not None:
        registration = Registration.from_chain(record)
        manifest, envelope = _trusted_manifest(workspace, registration, trusted_keys)
        if manifest.resources != computed.resources:
            recheck(manifest)
        return Verification(registration=registration, manifest=manifest, envelope=envelope)
    if expected is not None:
        candidates = [expected]
    else:
        candidates = list(reversed(_names(workspace).get(computed.model_name, [])))
    for candidate in candidates:
        record = registry.registration(candidate)
        if record is None:
            if expected is not None:
                raise NotRegistered(f"the expected digest 0x{candidate.hex()} is not registered")
            continue
        registration = Registration.from_chain(record)
        manifest, envelope = _trusted_manifest(workspace, registration, trusted_keys)
        recheck(manifest)
        return Verification(registration=registration, manifest=manifest, envelope=envelope)
    raise NotRegistered(
        f"{computed.model_name!r} (digest 0x{digest.hex()}) is not registered on chain "
        f"{registry.ledger.chain_id}"
    )


def _trusted_manifest(
    workspace: Workspace, registration: Registration, trusted_keys: Sequence[TrustedKey]
) -> tuple[Manifest, dict[str, Any]]:
    envelope = load_statement(workspace, registration)
    statement = verify_envelope(envelope, trusted_keys)
    try:
        manifest = Manifest.from_statement(statement)
    except InputError as exc:
        raise VerificationError(f"the registered statement is not a manifest: {exc}") from exc
    if manifest.root_digest != registration.digest.hex():
        raise VerificationError(
            f"the registered statement describes 0x{manifest.root_digest}, "
            f"not 0x{registration.digest.hex()}"
        )
    return manifest, envelope


def _blob_path(workspace: Workspace, digest: bytes) -> Path:
    return workspace.blobs_dir / digest.hex()


def _names(workspace: Workspace) -> dict[str, list[bytes]]:
    """Artifact name -> digests this workspace registered under it, oldest first."""
    path = workspace.path / _INDEX_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise WorkspaceError(f"cannot read {path}: {exc}") from exc
    names = doc.get("names", {}) if isinstance(doc, dict) else {}
    return {
        str(name): [bytes.fromhex(d) for d in digests if isinstance(d, str) and len(d) == 64]
        for name, digests in names.items()
        if isinstance(digests, list)
    }


def _remember_name(workspace: Workspace, name: str, digest: bytes) -> None:
    names = {k: [d.hex() for d in v] for k, v in _names(workspace).items()}
    names.setdefault(name, []).append(digest.hex())
    data = json.dumps({"names": names}, indent=1, sort_keys=True).encode() + b"\n"
    write_atomic(workspace.path / _INDEX_FILE, data, mode=0o600)
