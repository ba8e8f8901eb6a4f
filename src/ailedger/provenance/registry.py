"""Registering datasets and models on chain, and verifying an artifact against its registration.

Every registration is bound to its registrant: the ``ProvenanceRegistry`` contract namespaces
it by the registering account, so the same digest may be registered by several accounts and
nobody registers, grants or revokes under another's name; a verifier checks the registration
made by the registrant it trusts, never whoever registered a digest first.

Registering an artifact (:func:`register_artifact`):

1. hash it into a sigstore model-signing manifest
   (:func:`~ailedger.provenance.digest.digest_artifact`); its root digest is its identity;
2. name the registrant (the ledger's account) in the subject's annotations
   (``{"ailedger/registrant": ADDRESS}``), sign the in-toto statement into a DSSE envelope with
   the workspace's Ed25519 key and store the envelope's RFC 8785 bytes in the workspace's
   blobs, named by their SHA-256;
3. register ``(digest, kind, SHA-256 of the envelope, parents)`` in the ``ProvenanceRegistry``
   contract under the workspace's account; a parent is a ``(registrant, digest)`` pair;
4. append a ``provenance.register`` event to the workspace's audit log, if it has one.

Verifying an artifact (:func:`verify_artifact`, numbered as in the code) for a trusted
registrant R (by default the workspace's own account):

1. hash the files on disk into a manifest;
2. look up R's registration of its root digest; if R has none, take the registration of R the
   caller expects (or the latest one this workspace made under the same artifact name), so
   that the error can name the file that differs; a digest that only other accounts
   registered is refused naming them and R (:class:`RegisteredByOther`);
3. read the registered statement from the blobs and check its SHA-256 against the chain;
4. verify the DSSE signature under the trusted keys (DSSE protocol.md), check that the signed
   statement names R as its registrant, and parse it as a model-signing manifest whose
   subject is the registered digest;
5. compare the manifest with the files (:func:`~ailedger.provenance.digest.verify_manifest`).

Lineage is the graph of parents: a parent must be registered before its child, so the graph
is acyclic (:mod:`ailedger.provenance.lineage` walks and draws it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger._fs import write_atomic
from ailedger._input import parse_json
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
    check_parents,
    parse_address,
)
from ailedger.provenance.digest import Digest, Manifest, digest_artifact, verify_manifest
from ailedger.provenance.dsse import TrustedKey, sign_statement, verify_envelope
from ailedger.workspace import Workspace

__all__ = [
    "KINDS",
    "REGISTRANT_ANNOTATION",
    "AlreadyRegistered",
    "NotRegistered",
    "RegisteredByOther",
    "Registration",
    "StatementNotFound",
    "UnknownParent",
    "Verification",
    "import_statement",
    "load_statement",
    "load_statement_bytes",
    "lookup",
    "parse_address",
    "parse_digest",
    "parse_envelope",
    "parse_parent",
    "provenance_registry",
    "register_artifact",
    "statement_registrant",
    "trusted_manifest",
    "verify_artifact",
]

#: artifact kinds and their codes on chain
KINDS: dict[str, int] = {"dataset": 1, "model": 2}
#: the subject annotation of a signed statement that names its registrant's address
REGISTRANT_ANNOTATION = "ailedger/registrant"
_KIND_NAMES = {code: name for name, code in KINDS.items()}
_INDEX_FILE = "provenance.json"
#: the largest signed statement read from the blobs or imported (a manifest of many files)
_MAX_STATEMENT_BYTES = 64 * 1024 * 1024


class NotRegistered(VerificationError):
    """No registration matches the artifact (it is unknown, or it changed)."""


class RegisteredByOther(NotRegistered):
    """The digest is registered, but only by accounts other than the trusted registrant."""

    def __init__(self, digest: bytes, registrant: str, others: Sequence[str]) -> None:
        self.digest, self.registrant, self.others = digest, registrant, tuple(others)
        super().__init__(
            f"{Digest(digest)} is registered by {', '.join(others)}, not by the trusted "
            f"registrant {registrant}: its registration is not accepted"
        )


class StatementNotFound(VerificationError):
    """The signed statement of a registration is not in the workspace's blobs."""


@dataclass(frozen=True, kw_only=True)
class Registration:
    """A registered artifact: its digest (the manifest's root), kind, registrant (``owner``)
    and parents, each a ``(registrant, digest)`` pair."""

    digest: bytes
    kind: str
    owner: str
    statement_digest: bytes
    parents: tuple[tuple[str, bytes], ...]
    block_number: int
    timestamp: int
    receipt: Receipt | None = field(default=None, compare=False, repr=False)
    #: the bundle file written beside the artifact at registration, if one was
    bundle: Path | None = field(default=None, compare=False, repr=False)

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

    @property
    def ref(self) -> tuple[str, bytes]:
        """``(owner, digest)``: how a child names this registration as its parent."""
        return (self.owner, self.digest)

    def to_json(self, *, hex0x: bool = False) -> dict[str, Any]:
        """The registration as JSON, digests as ``sha256:<hex>`` (``0x<hex>`` with ``hex0x``,
        the form the audit log's ``provenance.*`` events have always used)."""

        def text(d: bytes) -> str:
            return Digest(d).hex0x if hex0x else str(Digest(d))

        out: dict[str, Any] = {
            "digest": text(self.digest),
            "kind": self.kind,
            "owner": self.owner,
            "statement_digest": text(self.statement_digest),
            "parents": [{"owner": o, "digest": text(d)} for o, d in self.parents],
            "block_number": self.block_number,
            "timestamp": self.timestamp,
        }
        if self.receipt is not None:
            out["tx_hash"] = self.receipt.tx_hash
            out["gas_used"] = self.receipt.gas_used
        if self.bundle is not None:
            out["bundle"] = str(self.bundle)
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
    """Parse a SHA-256 digest written ``sha256:<hex>``, ``0x<hex>`` or as 64 bare hex digits
    (:meth:`Digest.parse`) into its 32 bytes."""
    return Digest.parse(text, what).raw


def parse_parent(text: str, default_owner: str, what: str = "parent") -> tuple[str, bytes]:
    """Parse ``DIGEST`` (registered by ``default_owner``) or ``ADDRESS:DIGEST`` (registered by
    the account ADDRESS) into an ``(owner, digest)`` pair."""
    if not isinstance(text, str):
        raise InputError(f"{what} must be DIGEST or ADDRESS:DIGEST")
    body = text.strip()
    if ":" not in body or body.lower().startswith("sha256:"):
        return parse_address(default_owner, what), parse_digest(body, what)
    owner, _, digest = body.partition(":")
    return parse_address(owner.strip(), f"{what} registrant"), parse_digest(digest.strip(), what)


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
    parents: Iterable[bytes | tuple[str, bytes]] = (),
    ignore: Iterable[str] = (),
    allow_symlinks: bool = False,
    write_bundle: bool = False,
) -> Registration:
    """Hash, sign and register the file or folder at ``path`` under the ledger's account (see
    the module docstring).

    With ``write_bundle``, the signed statement and what a verifier needs to find its
    registration are also written beside the artifact
    (:func:`ailedger.provenance.bundle.write_bundle`); ``Registration.bundle`` names the file.

    A parent is ``(registrant, digest)``, or a bare digest for one the ledger's account
    registered. Raises :class:`AlreadyRegistered` when this account registered the digest
    already (another account's registration of it is no obstacle), :class:`UnknownParent`
    for a parent that is not registered, :class:`InputError` for a bad kind or path and
    :class:`~ailedger.provenance.digest.FileChanged` when a file changes while it is hashed.
    On any failure the chain is untouched and no new blob is left behind.
    """
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    account = parse_address(ledger.account, "the ledger's account")
    given = list(parents)
    if len(given) > MAX_PARENTS:
        raise InputError(f"at most {MAX_PARENTS} parents, got {len(given)}")
    parent_list = check_parents([(account, p) if isinstance(p, bytes) else p for p in given])
    registry = provenance_registry(workspace, ledger)
    manifest = digest_artifact(path, ignore=ignore, allow_symlinks=allow_symlinks)
    digest = bytes.fromhex(manifest.root_digest)
    existing = registry.registration(account, digest)
    if existing is not None:
        raise AlreadyRegistered(
            digest,
            f"as {_KIND_NAMES.get(existing.kind, existing.kind)} by this account {account} "
            f"in block {existing.block_number}",
        )
    for owner, parent in parent_list:
        if (owner, parent) == (account, digest):
            raise InputError("an artifact cannot be its own parent")
        if not registry.is_registered(owner, parent):
            raise UnknownParent(f"parent {Digest(parent)} is not registered by {owner}")
    statement = manifest.to_statement()
    statement["subject"][0]["annotations"] = {REGISTRANT_ANNOTATION: account}
    envelope = sign_statement(statement, signing_key)
    blob = canonical_json(envelope)
    statement_digest = hashlib.sha256(blob).digest()
    blob_path = _blob_path(workspace, statement_digest)
    created = not blob_path.exists()
    if created:
        write_atomic(blob_path, blob, mode=0o600)
    try:
        receipt = registry.register(digest, KINDS[kind], statement_digest, parent_list)
    except BaseException:
        if created:
            blob_path.unlink(missing_ok=True)
        raise
    _remember_name(workspace, manifest.model_name, digest)
    record = registry.registration(account, digest)
    assert record is not None
    registration = Registration.from_chain(record, receipt)
    if write_bundle:
        from ailedger.provenance.bundle import write_bundle as write

        written = write(
            path, blob, registration, chain_id=ledger.chain_id, registry=registry.address
        )
        registration = dataclasses.replace(registration, bundle=written)
    record_event(
        workspace,
        "provenance.register",
        {
            "chain_id": ledger.chain_id,
            "name": manifest.model_name,
            **registration.to_json(hex0x=True),
        },
    )
    return registration


def lookup(
    workspace: Workspace, ledger: Ledger, digest: bytes, *, owner: str | None = None
) -> Registration | None:
    """``owner``'s registration of ``digest`` (default owner: the workspace's own account),
    or None."""
    registrant = _registrant(workspace, owner)
    record = provenance_registry(workspace, ledger).registration(registrant, digest)
    return None if record is None else Registration.from_chain(record)


def load_statement(workspace: Workspace, registration: Registration) -> dict[str, Any]:
    """The DSSE envelope a registration names, read from the blobs (signature not checked).

    Raises :class:`StatementNotFound` when the blob is absent and :class:`VerificationError`
    when its SHA-256 differs from the one on chain or it is not a JSON object.
    """
    blob = load_statement_bytes(workspace, registration)
    return parse_envelope(blob, f"statement {Digest(registration.statement_digest).hex}")


def parse_envelope(blob: bytes, where: str) -> dict[str, Any]:
    """Parse registered statement bytes into a DSSE envelope object (signature not checked);
    raises :class:`VerificationError` when they are not one JSON object."""
    try:
        envelope = parse_json(blob, what=where, max_bytes=_MAX_STATEMENT_BYTES)
    except InputError as exc:
        raise VerificationError(str(exc)) from exc
    if not isinstance(envelope, dict):
        raise VerificationError(f"the {where} is not a DSSE envelope")
    return envelope


def load_statement_bytes(workspace: Workspace, registration: Registration) -> bytes:
    """The exact bytes of the signed statement a registration names (they hash to its
    ``statement_digest``), read from the workspace's blobs; errors as :func:`load_statement`.
    """
    path = _blob_path(workspace, registration.statement_digest)
    try:
        with path.open("rb") as fh:
            blob = fh.read(_MAX_STATEMENT_BYTES + 1)
    except FileNotFoundError as exc:
        raise StatementNotFound(
            f"the signed statement {Digest(registration.statement_digest)} of "
            f"{Digest(registration.digest)} is not in this workspace's blobs (import it with "
            "`provenance verify --statement FILE`)"
        ) from exc
    except OSError as exc:
        raise WorkspaceError(f"cannot read {path}: {exc.strerror}") from exc
    if hashlib.sha256(blob).digest() != registration.statement_digest:
        raise VerificationError(
            f"the stored statement {path.name} does not hash to its name: it was altered"
        )
    return blob


def import_statement(workspace: Workspace, data: bytes) -> bytes:
    """Store a signed statement (a DSSE envelope, as ``provenance statement`` prints it) in the
    workspace's blobs as its RFC 8785 bytes, named by their SHA-256, which it returns.

    Nothing is trusted on import: verification checks the hash against a registration and the
    signature against the trusted keys. Raises :class:`InputError` for bytes that are not one
    JSON object with a ``payload``.
    """
    envelope = parse_json(data, what="the signed statement", max_bytes=_MAX_STATEMENT_BYTES)
    if not isinstance(envelope, dict) or "payload" not in envelope:
        raise InputError("the signed statement is not a DSSE envelope")
    blob = canonical_json(envelope)
    digest = hashlib.sha256(blob).digest()
    path = _blob_path(workspace, digest)
    if not path.exists():
        write_atomic(path, blob, mode=0o644)
    return digest


def statement_registrant(statement: Mapping[str, Any]) -> str | None:
    """The registrant's address a signed statement names (checksum form), or None."""
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        return None
    annotations = subjects[0].get("annotations")
    if not isinstance(annotations, dict):
        return None
    value = annotations.get(REGISTRANT_ANNOTATION)
    if not isinstance(value, str):
        return None
    try:
        return parse_address(value)
    except InputError:
        return None


def verify_artifact(
    workspace: Workspace,
    ledger: Ledger,
    path: str | os.PathLike[str],
    *,
    trusted_keys: Sequence[TrustedKey],
    expected: bytes | None = None,
    registrant: str | None = None,
) -> Verification:
    """Check the files at ``path`` against ``registrant``'s registration (steps in the module
    docstring); ``registrant`` defaults to the workspace's own account.

    ``expected`` names the digest the artifact should have; without it, a changed artifact is
    compared with the latest registration this workspace made under the same name. Raises
    :class:`~ailedger.provenance.digest.ManifestMismatch` naming the first differing file,
    :class:`NotRegistered` when nothing to compare with is registered by ``registrant``
    (:class:`RegisteredByOther` when other accounts registered the digest),
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
        registrant=registrant,
    )


def resolve(
    workspace: Workspace,
    registry: ProvenanceRegistry,
    computed: Manifest,
    *,
    trusted_keys: Sequence[TrustedKey],
    expected: bytes | None,
    recheck: Callable[[Manifest], None],
    registrant: str | None = None,
) -> Verification:
    """Steps 2-5 of verification for an artifact already hashed into ``computed``.

    ``recheck`` compares the artifact with a registered manifest whose digest differs from
    ``computed`` and raises the mismatch it finds; if it returns, the artifact matches that
    manifest (hashed with other settings) and its registration is the one verified.
    """
    if not trusted_keys:
        raise InputError("give at least one trusted public key")
    owner = _registrant(workspace, registrant)
    digest = bytes.fromhex(computed.root_digest)
    # a pinned ``expected`` digest wins: the file's own registration (another version, say)
    # must not stand in for the one the caller asked for
    record = registry.registration(owner, digest) if expected in (None, digest) else None
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
        record = registry.registration(owner, candidate)
        if record is None:
            if expected is not None:
                others = registry.registrants(candidate)
                if others:
                    raise RegisteredByOther(candidate, owner, others)
                raise NotRegistered(
                    f"the expected digest {Digest(candidate)} is not registered by {owner}"
                )
            continue
        registration = Registration.from_chain(record)
        manifest, envelope = _trusted_manifest(workspace, registration, trusted_keys)
        recheck(manifest)
        return Verification(registration=registration, manifest=manifest, envelope=envelope)
    others = registry.registrants(digest)
    if others:
        raise RegisteredByOther(digest, owner, others)
    raise NotRegistered(
        f"{computed.model_name!r} (digest {Digest(digest)}) is not registered by {owner} on "
        f"chain {registry.ledger.chain_id}"
    )


def _registrant(workspace: Workspace, registrant: str | None) -> str:
    if registrant is None:
        return parse_address(workspace.keystore().address, "the workspace's account")
    return parse_address(registrant, "registrant")


def _trusted_manifest(
    workspace: Workspace, registration: Registration, trusted_keys: Sequence[TrustedKey]
) -> tuple[Manifest, dict[str, Any]]:
    return trusted_manifest(load_statement(workspace, registration), registration, trusted_keys)


def trusted_manifest(
    envelope: dict[str, Any], registration: Registration, trusted_keys: Sequence[TrustedKey]
) -> tuple[Manifest, dict[str, Any]]:
    """Check a registered DSSE envelope (whose hash the caller matched with the chain): a
    trusted key signed it, it names ``registration.owner`` as registrant, and it is a
    model-signing manifest of the registered digest. Returns the manifest and the envelope.
    """
    statement = verify_envelope(envelope, trusted_keys)
    named = statement_registrant(statement)
    if named is None:
        raise VerificationError(
            f"the signed statement of {Digest(registration.digest)} names no registrant: it "
            f"cannot be bound to {registration.owner}"
        )
    if named != registration.owner:
        raise VerificationError(
            f"the signed statement of {Digest(registration.digest)} names registrant {named}, "
            f"but it is registered by {registration.owner}"
        )
    try:
        manifest = Manifest.from_statement(statement)
    except InputError as exc:
        raise VerificationError(f"the registered statement is not a manifest: {exc}") from exc
    if manifest.root_digest != registration.digest.hex():
        raise VerificationError(
            f"the registered statement describes sha256:{manifest.root_digest}, "
            f"not {Digest(registration.digest)}"
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
