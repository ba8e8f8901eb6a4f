"""Sharing registered data with the parties granted on chain: grant, revoke, seal, open.

Access to a registered digest (the *resource*) is a set of X25519 public keys that its owner
grants and revokes in the ``ProvenanceRegistry`` contract (events ``Granted``/``Revoked``).

- :func:`seal` encrypts a file (:func:`seal_stream`: a stream) with
  :func:`ailedger.crypto.envelope.seal` (AES-256-GCM in STREAM chunks, a fresh data key
  wrapped with HPKE, RFC 9180, for each recipient) for the keys whose grant is live at that
  moment, and for the owner's own key. Each seal draws a new data key, so a version sealed
  after a revocation is never readable by the revoked key.
- :func:`open` (:func:`open_stream`: a stream) checks the chain before unwrapping: the
  opener's key needs a live grant (or the opener owns the resource). Steps: 1. load the
  workspace's X25519 key; 2. read the grant of its public key; 3. refuse without one
  (:class:`NoGrant`) or after a revocation (:class:`GrantRevoked`); 4. unwrap and decrypt
  (:class:`NotARecipient` when the file was sealed before the grant). The chain check is
  policy enforced by honest clients; what a revoked party can never read is what was sealed
  after its revocation.

Every grant and revocation is also appended to the workspace's audit log (events
``provenance.grant`` and ``provenance.revoke``) when the workspace has one.

The workspace's X25519 key (``keys/x25519.pem``, encrypted with the workspace passphrase, mode
0600, and ``keys/x25519.pub``) is made on first use.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ailedger._fs import write_atomic
from ailedger.auditlog.events import record_event
from ailedger.crypto import envelope
from ailedger.errors import AccessDenied, InputError, KeyError_, WrongPassphrase
from ailedger.ledger import Ledger, Receipt
from ailedger.ledger.provenance import ChainGrant
from ailedger.provenance.registry import provenance_registry
from ailedger.workspace import Workspace

__all__ = [
    "GrantRevoked",
    "NoGrant",
    "NotARecipient",
    "SealedFile",
    "grant",
    "grants",
    "open",
    "open_shared",
    "open_stream",
    "read_public_key",
    "revoke",
    "seal",
    "seal_stream",
    "sharing_key",
    "sharing_public_key",
]

Passphrase = Callable[[], str]
_STREAM_BLOCK = 8 * 1024 * 1024  # bytes per read of a stream


class NoGrant(AccessDenied):
    """The chain holds no grant of this key on the resource."""


class GrantRevoked(AccessDenied):
    """The grant of this key on the resource was revoked."""


class NotARecipient(AccessDenied):
    """The sealed file carries no data key for this key (sealed before the grant, or for others)."""


@dataclass(frozen=True, kw_only=True)
class SealedFile:
    """A file sealed for the parties granted a resource."""

    path: Path
    resource: bytes
    recipients: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "resource": "0x" + self.resource.hex(),
            "recipients": list(self.recipients),
        }


def sharing_key_path(workspace: Workspace) -> Path:
    return workspace.path / "keys" / "x25519.pem"


def sharing_key(workspace: Workspace, passphrase: Passphrase) -> X25519PrivateKey:
    """The workspace's X25519 private key, made (and saved encrypted, 0600) on first use."""
    path = sharing_key_path(workspace)
    secret = passphrase().encode()
    if not path.exists():
        key = envelope.generate_private_key()
        pem = envelope.dump_private_key(key, password=secret)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
        write_atomic(tmp, pem, mode=0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"cannot read {path}: {exc.strerror}") from exc
    try:
        key = envelope.load_private_key(data, password=secret)
    except InputError as exc:
        raise WrongPassphrase(f"cannot decrypt {path}: wrong passphrase?") from exc
    public = envelope.dump_public_key(key.public_key())
    pub_path = path.with_suffix(".pub")
    if not pub_path.exists() or pub_path.read_bytes() != public:
        write_atomic(pub_path, public, mode=0o644)
    return key


def sharing_public_key(workspace: Workspace, passphrase: Passphrase) -> X25519PublicKey:
    """The workspace's X25519 public key; the key pair is made (passphrase needed) if absent."""
    pub_path = sharing_key_path(workspace).with_suffix(".pub")
    if pub_path.exists() and sharing_key_path(workspace).exists():
        return read_public_key(pub_path.read_bytes())
    return sharing_key(workspace, passphrase).public_key()


def read_public_key(data: bytes | str) -> X25519PublicKey:
    """An X25519 public key from PEM, 32 raw bytes, or 64 hex digits (with or without 0x).

    Raises :class:`InputError` for anything else, such as an Ed25519 or RSA key.
    """
    if isinstance(data, str):
        text = data.strip()
        body = text[2:] if text.lower().startswith("0x") else text
        if len(body) == 64:
            try:
                return envelope.load_public_key(bytes.fromhex(body))
            except ValueError:
                pass
        data = text.encode()
    if data.lstrip().startswith(b"-----"):
        data = data.strip()
    return envelope.load_public_key(data)


def grant(workspace: Workspace, ledger: Ledger, resource: bytes, recipient: Any) -> Receipt:
    """Grant the X25519 public key ``recipient`` access to the registered ``resource``.

    Raises :class:`InputError` for a key of another type (nothing is sent), and
    :class:`~ailedger.ledger.provenance.NotOwner` unless this account owns the resource.
    """
    key = _recipient(recipient)
    receipt = provenance_registry(workspace, ledger).grant(resource, _raw(key))
    _audit(workspace, ledger, "provenance.grant", resource, key, receipt)
    return receipt


def revoke(workspace: Workspace, ledger: Ledger, resource: bytes, recipient: Any) -> Receipt:
    """Revoke the live grant of ``recipient`` on ``resource``; seal new versions afterwards."""
    key = _recipient(recipient)
    receipt = provenance_registry(workspace, ledger).revoke(resource, _raw(key))
    _audit(workspace, ledger, "provenance.revoke", resource, key, receipt)
    return receipt


def grants(workspace: Workspace, ledger: Ledger, resource: bytes) -> list[ChainGrant]:
    """Every key ever granted ``resource``, live or revoked, in order of first grant."""
    return provenance_registry(workspace, ledger).grants(resource)


def seal(
    workspace: Workspace,
    ledger: Ledger,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    resource: bytes,
    passphrase: Passphrase,
) -> SealedFile:
    """Seal ``src`` into ``dst`` for the live grantees of ``resource`` and this workspace.

    Raises :class:`InputError` when the resource is not registered.
    """
    keys = _recipients(workspace, ledger, resource, passphrase)
    envelope.seal(src, dst, keys)
    return SealedFile(
        path=Path(dst),
        resource=resource,
        recipients=tuple(envelope.key_id(k) for k in keys),
    )


def seal_stream(
    workspace: Workspace,
    ledger: Ledger,
    src: io.BufferedIOBase,
    dst: io.BufferedIOBase,
    *,
    resource: bytes,
    passphrase: Passphrase,
) -> tuple[str, ...]:
    """:func:`seal` from a readable to a writable (a pipe, a socket); returns the key ids.

    The last chunk is written only once ``src`` ends, so an interrupted seal never leaves an
    output that opens.
    """
    keys = _recipients(workspace, ledger, resource, passphrase)
    buffer = memoryview(bytearray(_STREAM_BLOCK))
    with envelope.SealWriter(dst, keys) as writer:
        while n := src.readinto(buffer):
            writer.write(buffer[:n])
    dst.flush()
    return tuple(envelope.key_id(k) for k in keys)


def open(
    workspace: Workspace,
    ledger: Ledger,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    resource: bytes,
    passphrase: Passphrase,
) -> None:
    """Decrypt ``src`` into ``dst`` if the chain grants this workspace ``resource`` (steps above).

    Raises :class:`NoGrant`, :class:`GrantRevoked` or :class:`NotARecipient` (all
    :class:`AccessDenied`); :class:`~ailedger.errors.VerificationError` for a tampered file.
    """
    key = _opening_key(workspace, ledger, resource, passphrase)
    try:
        envelope.open(src, dst, key)
    except AccessDenied as exc:
        raise NotARecipient(
            f"{os.fspath(src)!r} was not sealed for this workspace's key "
            "(sealed before the grant? ask the owner to seal it again)"
        ) from exc


def open_stream(
    workspace: Workspace,
    ledger: Ledger,
    src: io.BufferedIOBase,
    dst: io.BufferedIOBase,
    *,
    resource: bytes,
    passphrase: Passphrase,
) -> None:
    """:func:`open` from a readable to a writable, with the same checks and errors.

    Plaintext is written as its chunks authenticate; a truncated or altered stream raises
    :class:`~ailedger.errors.VerificationError` after the bytes before the damage were written,
    so a caller must discard ``dst`` then (:func:`open` does that for files).
    """
    key = _opening_key(workspace, ledger, resource, passphrase)
    try:
        reader = envelope.OpenReader(src, key)
    except AccessDenied as exc:
        raise NotARecipient(
            "the sealed stream was not sealed for this workspace's key "
            "(sealed before the grant? ask the owner to seal it again)"
        ) from exc
    buffer = memoryview(bytearray(_STREAM_BLOCK))
    with reader:
        while n := reader.readinto(buffer):
            dst.write(buffer[:n])
    dst.flush()


def _recipients(
    workspace: Workspace, ledger: Ledger, resource: bytes, passphrase: Passphrase
) -> list[X25519PublicKey]:
    """This workspace's key and the keys with a live grant on ``resource``, in that order."""
    registry = provenance_registry(workspace, ledger)
    if registry.registration(resource) is None:
        raise InputError(f"resource 0x{resource.hex()} is not registered")
    own = sharing_public_key(workspace, passphrase)
    keys: list[X25519PublicKey] = [own]
    for g in registry.grants(resource):
        if g.live and g.recipient != _raw(own):
            keys.append(envelope.load_public_key(g.recipient))
    return keys


def _opening_key(
    workspace: Workspace, ledger: Ledger, resource: bytes, passphrase: Passphrase
) -> X25519PrivateKey:
    """This workspace's private key, once the chain says it may open ``resource`` (steps 1-3)."""
    registry = provenance_registry(workspace, ledger)
    key = sharing_key(workspace, passphrase)
    record = registry.registration(resource)
    if record is None:
        raise InputError(f"resource 0x{resource.hex()} is not registered")
    owner = workspace.keystore().address
    if record.owner.lower() != owner.lower():
        state = registry.grant_of(resource, _raw(key.public_key()))
        if state.granted_block == 0:
            raise NoGrant(
                f"no grant of key {envelope.key_id(key.public_key())[:16]}… on "
                f"0x{resource.hex()}: ask its owner {record.owner} to grant it"
            )
        if state.revoked_block != 0:
            raise GrantRevoked(
                f"the grant of key {envelope.key_id(key.public_key())[:16]}… on "
                f"0x{resource.hex()} was revoked in block {state.revoked_block}"
            )
    return key


open_shared = open


def _recipient(value: Any) -> X25519PublicKey:
    if isinstance(value, X25519PublicKey):
        return value
    if isinstance(value, bytes | str):
        return read_public_key(value)
    raise InputError(f"a recipient must be an X25519 public key, got {type(value).__name__}")


def _raw(key: X25519PublicKey) -> bytes:
    return envelope.dump_public_key(key, encoding="raw")


def _audit(
    workspace: Workspace,
    ledger: Ledger,
    kind: str,
    resource: bytes,
    key: X25519PublicKey,
    receipt: Receipt,
) -> None:
    record_event(
        workspace,
        kind,
        {
            "chain_id": ledger.chain_id,
            "resource": "0x" + resource.hex(),
            "recipient": _raw(key).hex(),
            "tx_hash": receipt.tx_hash,
            "block_number": receipt.block_number,
        },
    )
