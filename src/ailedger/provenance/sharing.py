"""Sharing registered data with the parties granted on chain: grant, revoke, seal, open.

Access to a registered digest (the *resource*: an owner's registration of a digest) is a set
of X25519 public keys that its owner grants and revokes in the ``ProvenanceRegistry`` contract
(events ``Granted``/``Revoked``).

- :func:`seal` encrypts a file (:func:`seal_stream`: a stream) with
  :func:`ailedger.crypto.envelope.seal` (AES-256-GCM in STREAM chunks, a fresh data key
  wrapped with HPKE, RFC 9180, for each recipient) for the keys whose grant is live at that
  moment, and for the owner's own key. Each seal draws a new data key, so a version sealed
  after a revocation is never readable by the revoked key. Only the owner seals its
  resource: the file names the resource and a version (its *binding*, below), names the
  owner's account as its sender and ends with that account's signature over all of it.
- :func:`open` (:func:`open_stream`: a stream) checks the chain and the file before
  decrypting. Steps: 1. load the workspace's X25519 key; 2. the resource must be registered
  by its owner (default: this workspace's account); 3. unless the opener is the owner, read
  the grant of its public key and refuse without one (:class:`NoGrant`) or after a revocation
  (:class:`GrantRevoked`); 4. the file's binding must name this chain, this registry, the
  owner and the digest (:class:`WrongResource`); 5. its sender must be the owner
  (:class:`NotEntitled`), the only account entitled to write the resource; 6. its version must
  not be older than the highest this workspace opened of the resource (:class:`OlderVersion`,
  unless ``unsafe_allow_older``); 7. unwrap and decrypt (:class:`NotARecipient` when the file
  was sealed before the grant); 8. the signature after the last chunk must be the sender's
  (:class:`~ailedger.errors.SignatureError`); 9. remember the version as opened. The grant
  check is policy enforced by honest clients; what a revoked party can never read is what was
  sealed after its revocation. Steps 4-8 are what stop a forgery: every recipient knows the
  data key of what it receives and anyone can wrap a key for a grantee's public X25519 key,
  but only the owner can sign.

The binding (the envelope's context, 112 bytes, integers big-endian)::

    label     16  b"ailedger share 1"
    chain_id   8  the chain the registry is on
    registry  20  the ProvenanceRegistry contract's address
    owner     20  the registrant of the resource
    digest    32  the registered digest
    block      8  the chain's latest block number when sealed   } the version, ordered
    counter    8  seals of this resource by this workspace in that block  } as a pair

The highest version sealed and opened per resource is kept in the workspace's
``sharing/versions.json`` (0600, under a lock), so a replayed older version is refused.

Every grant and revocation is also appended to the workspace's audit log (events
``provenance.grant`` and ``provenance.revoke``) when the workspace has one.

The workspace's X25519 key (``keys/x25519.pem``, encrypted with the workspace passphrase, mode
0600, and ``keys/x25519.pub``) is made on first use.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ailedger._fs import make_private_dir, write_atomic
from ailedger._input import parse_json
from ailedger.auditlog.events import record_event
from ailedger.crypto import envelope
from ailedger.errors import (
    AccessDenied,
    InputError,
    KeyError_,
    VerificationError,
    WorkspaceError,
    WrongPassphrase,
)
from ailedger.ledger import Ledger, Receipt
from ailedger.ledger.account import recover_digest_signer
from ailedger.ledger.provenance import ChainGrant, ProvenanceRegistry, parse_address
from ailedger.provenance.registry import NotRegistered, provenance_registry
from ailedger.workspace import Workspace

__all__ = [
    "GrantRevoked",
    "NoGrant",
    "NotARecipient",
    "NotEntitled",
    "OlderVersion",
    "OpenedFile",
    "ResourceNotRegistered",
    "SealedFile",
    "Version",
    "WrongResource",
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


class ResourceNotRegistered(NotRegistered, InputError):
    """The resource named has no registration by its owner (exit code 1, as every "not
    registered" error; still an InputError for callers that catch that)."""

    exit_code = 1


class WrongResource(VerificationError):
    """The sealed file is bound to another resource (owner, digest, registry or chain)."""


class NotEntitled(VerificationError):
    """The sealed file's sender is not entitled to write the resource (only its owner is)."""


class OlderVersion(VerificationError):
    """The sealed file is older than a version of the resource this workspace already opened."""


@dataclass(frozen=True, order=True)
class Version:
    """A sealed file's version: the chain's latest block when sealed, then a counter."""

    block: int
    counter: int

    def __str__(self) -> str:
        return f"{self.block}.{self.counter}"

    def to_json(self) -> dict[str, int]:
        return {"block": self.block, "counter": self.counter}


@dataclass(frozen=True, kw_only=True)
class SealedFile:
    """A file sealed for the parties granted a resource."""

    path: Path
    owner: str
    resource: bytes
    version: Version
    recipients: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "owner": self.owner,
            "resource": "0x" + self.resource.hex(),
            "version": self.version.to_json(),
            "recipients": list(self.recipients),
        }


@dataclass(frozen=True, kw_only=True)
class OpenedFile:
    """A sealed file that opened: whose resource, which version, who sealed it."""

    path: Path | None
    owner: str
    resource: bytes
    version: Version
    sender: str
    older: bool = False
    """True when opened with ``unsafe_allow_older`` although a newer version was opened here."""
    first: bool = False
    """True when this workspace had opened no version of the resource before: nothing here
    can tell whether a newer version exists, so a replay of an old one is not ruled out."""

    def to_json(self) -> dict[str, Any]:
        return {
            "path": None if self.path is None else str(self.path),
            "owner": self.owner,
            "resource": "0x" + self.resource.hex(),
            "version": self.version.to_json(),
            "sender": self.sender,
            "older": self.older,
            "first_opened_here": self.first,
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
    """Grant the X25519 public key ``recipient`` access to the workspace account's
    registration of ``resource`` (``ledger`` signs as that account).

    Raises :class:`InputError` for a key of another type (nothing is sent), and
    :class:`~ailedger.ledger.provenance.NotOwner` when this account did not register the
    resource (another account's registration of the same digest is never this one's to grant).
    """
    key = _recipient(recipient)
    receipt = provenance_registry(workspace, ledger).grant(resource, _raw(key))
    _audit(workspace, ledger, "provenance.grant", resource, key, receipt)
    return receipt


def revoke(workspace: Workspace, ledger: Ledger, resource: bytes, recipient: Any) -> Receipt:
    """Revoke the live grant of ``recipient`` on the workspace account's registration of
    ``resource``; seal new versions afterwards."""
    key = _recipient(recipient)
    receipt = provenance_registry(workspace, ledger).revoke(resource, _raw(key))
    _audit(workspace, ledger, "provenance.revoke", resource, key, receipt)
    return receipt


def grants(
    workspace: Workspace, ledger: Ledger, resource: bytes, *, owner: str | None = None
) -> list[ChainGrant]:
    """Every key ``owner`` (default: the workspace's own account) ever granted its registration
    of ``resource``, live or revoked, in order of first grant."""
    registrant = owner if owner is not None else workspace.keystore().address
    return provenance_registry(workspace, ledger).grants(registrant, resource)


def seal(
    workspace: Workspace,
    ledger: Ledger,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    resource: bytes,
    passphrase: Passphrase,
) -> SealedFile:
    """Seal ``src`` into ``dst`` for the live grantees of this workspace's registration of
    ``resource`` and for this workspace, signed by its account, as a new version.

    Raises :class:`InputError` when this account did not register the resource.
    """
    plan = _plan_seal(workspace, ledger, resource, passphrase)
    envelope.seal(src, dst, plan.keys, signer=plan.signer, context=plan.binding.encode())
    return plan.result(Path(dst))


def seal_stream(
    workspace: Workspace,
    ledger: Ledger,
    src: io.BufferedIOBase,
    dst: io.BufferedIOBase,
    *,
    resource: bytes,
    passphrase: Passphrase,
) -> SealedFile:
    """:func:`seal` from a readable to a writable (a pipe, a socket).

    The last chunk and the signature are written only once ``src`` ends, so an interrupted
    seal never leaves an output that opens. The result's ``path`` is ``Path("-")``.
    """
    plan = _plan_seal(workspace, ledger, resource, passphrase)
    buffer = memoryview(bytearray(_STREAM_BLOCK))
    with envelope.SealWriter(
        dst, plan.keys, signer=plan.signer, context=plan.binding.encode()
    ) as writer:
        while n := src.readinto(buffer):
            writer.write(buffer[:n])
    dst.flush()
    return plan.result(Path("-"))


def open(
    workspace: Workspace,
    ledger: Ledger,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    resource: bytes,
    passphrase: Passphrase,
    owner: str | None = None,
    unsafe_allow_older: bool = False,
) -> OpenedFile:
    """Decrypt ``src`` into ``dst`` if it is a version of ``owner``'s ``resource`` sealed by
    ``owner`` and the chain grants this workspace access (steps above).

    ``owner`` defaults to this workspace's account. ``unsafe_allow_older`` opens a version older
    than one already opened here (a replay, or a deliberate rollback). Raises :class:`NoGrant`,
    :class:`GrantRevoked` or :class:`NotARecipient` (all :class:`AccessDenied`);
    :class:`WrongResource`, :class:`NotEntitled`, :class:`OlderVersion`, and
    :class:`~ailedger.errors.VerificationError` for a tampered file (all verification errors).
    ``dst`` is written only when everything checked out.
    """
    check = _OpenCheck(workspace, ledger, resource, owner, passphrase, unsafe_allow_older)
    try:
        header = envelope.open(
            src, dst, check.key, recover=recover_digest_signer, accept=check.accept
        )
    except AccessDenied as exc:
        raise NotARecipient(
            f"{os.fspath(src)!r} was not sealed for this workspace's key "
            "(sealed before the grant? ask the owner to seal it again)"
        ) from exc
    return check.done(header, Path(dst))


def open_stream(
    workspace: Workspace,
    ledger: Ledger,
    src: io.BufferedIOBase,
    dst: io.BufferedIOBase,
    *,
    resource: bytes,
    passphrase: Passphrase,
    owner: str | None = None,
    unsafe_allow_older: bool = False,
) -> OpenedFile:
    """:func:`open` from a readable to a writable, with the same checks and errors.

    The binding, sender and version are checked before any byte is written; plaintext is then
    written as its chunks authenticate, and a truncated or altered stream, or a signature that
    is not the sender's, raises :class:`~ailedger.errors.VerificationError` at the end, after
    the bytes before were written: a caller must discard ``dst`` then (:func:`open` does that
    for files). The version is remembered only after the signature checked out.
    """
    check = _OpenCheck(workspace, ledger, resource, owner, passphrase, unsafe_allow_older)
    try:
        reader = envelope.OpenReader(
            src, check.key, recover=recover_digest_signer, accept=check.accept
        )
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
    return check.done(reader.header, None)


_LABEL = b"ailedger share 1"
_BINDING = struct.Struct(">16sQ20s20s32sQQ")


@dataclass(frozen=True, kw_only=True)
class _Binding:
    """What a shared sealed file is bound to (the envelope's context; format above)."""

    chain_id: int
    registry: str
    owner: str
    digest: bytes
    version: Version

    def encode(self) -> bytes:
        return _BINDING.pack(
            _LABEL,
            self.chain_id,
            bytes.fromhex(self.registry[2:]),
            bytes.fromhex(self.owner[2:]),
            self.digest,
            self.version.block,
            self.version.counter,
        )

    @classmethod
    def decode(cls, data: bytes) -> _Binding:
        if len(data) != _BINDING.size or not data.startswith(_LABEL):
            raise WrongResource("the sealed file is not bound to a shared resource")
        _, chain_id, registry, owner, digest, block, counter = _BINDING.unpack(data)
        return cls(
            chain_id=chain_id,
            registry=parse_address("0x" + registry.hex()),
            owner=parse_address("0x" + owner.hex()),
            digest=digest,
            version=Version(block, counter),
        )

    @property
    def key(self) -> str:
        """This resource's key in the version book."""
        return f"{self.chain_id}:{self.registry.lower()}:{self.owner.lower()}:{self.digest.hex()}"


@dataclass(frozen=True, kw_only=True)
class _SealPlan:
    keys: list[X25519PublicKey]
    signer: envelope.SealSigner
    binding: _Binding

    def result(self, path: Path) -> SealedFile:
        return SealedFile(
            path=path,
            owner=self.binding.owner,
            resource=self.binding.digest,
            version=self.binding.version,
            recipients=tuple(envelope.key_id(k) for k in self.keys),
        )


def _plan_seal(
    workspace: Workspace, ledger: Ledger, resource: bytes, passphrase: Passphrase
) -> _SealPlan:
    """Recipients, signer and binding of a new version of this workspace's ``resource``."""
    registry, owner, keys = _recipients(workspace, ledger, resource, passphrase)
    signer = workspace.signer(passphrase)
    signer.unlock()  # a wrong passphrase fails now, not after reading all the input
    if signer.address != owner:
        raise KeyError_(f"the keystore's account {signer.address} is not {owner}")
    binding = _Binding(
        chain_id=ledger.chain_id,
        registry=parse_address(registry.address),
        owner=owner,
        digest=resource,
        version=Version(0, 0),
    )
    version = _VersionBook(workspace).next_sealed(binding.key, ledger.block_number())
    return _SealPlan(
        keys=keys,
        signer=signer,
        binding=_Binding(
            chain_id=binding.chain_id,
            registry=binding.registry,
            owner=owner,
            digest=resource,
            version=version,
        ),
    )


def _recipients(
    workspace: Workspace, ledger: Ledger, resource: bytes, passphrase: Passphrase
) -> tuple[ProvenanceRegistry, str, list[X25519PublicKey]]:
    """The registry, this workspace's account (the owner) and the keys to seal for: this
    workspace's key and the keys with a live grant on its registration of ``resource``."""
    registry = provenance_registry(workspace, ledger)
    owner = parse_address(workspace.keystore().address)
    if registry.registration(owner, resource) is None:
        raise ResourceNotRegistered(
            f"resource 0x{resource.hex()} is not registered by this workspace's account {owner}"
            ": only a resource's owner seals it"
        )
    own = sharing_public_key(workspace, passphrase)
    keys: list[X25519PublicKey] = [own]
    for g in registry.grants(owner, resource):
        if g.live and g.recipient != _raw(own):
            keys.append(envelope.load_public_key(g.recipient))
    return registry, owner, keys


class _OpenCheck:
    """The checks of :func:`open` and :func:`open_stream`: steps 1-3 on construction, 4-6 in
    :meth:`accept` (the envelope calls it with the header), 9 in :meth:`done`."""

    def __init__(
        self,
        workspace: Workspace,
        ledger: Ledger,
        resource: bytes,
        owner: str | None,
        passphrase: Passphrase,
        unsafe_allow_older: bool,
    ) -> None:
        self._workspace = workspace
        self._unsafe = unsafe_allow_older
        self._registry = provenance_registry(workspace, ledger)
        self._chain_id = ledger.chain_id
        self.owner = parse_address(owner or workspace.keystore().address, "the owner")
        self.resource = resource
        self.key = _opening_key(workspace, self._registry, resource, self.owner, passphrase)
        self._binding: _Binding | None = None
        self._older = False
        self._first = False

    def accept(self, header: envelope.SealedHeader) -> None:
        binding = _Binding.decode(header.context)
        wanted = f"{self.owner}'s 0x{self.resource.hex()}"
        if (binding.owner, binding.digest) != (self.owner, self.resource):
            raise WrongResource(
                f"the sealed file is a version of {binding.owner}'s 0x{binding.digest.hex()}, "
                f"not of {wanted}"
            )
        if binding.chain_id != self._chain_id or binding.registry != parse_address(
            self._registry.address
        ):
            raise WrongResource(
                f"the sealed file is bound to the registry {binding.registry} on chain "
                f"{binding.chain_id}, not {self._registry.address} on chain {self._chain_id}"
            )
        sender = parse_address(header.sender_address)
        if sender != self.owner:
            raise NotEntitled(
                f"the sealed file was sealed by {sender}, who may not write {wanted}: only its "
                "owner may (a forgery?)"
            )
        highest = _VersionBook(self._workspace).highest_opened(binding.key)
        self._first = highest is None
        if highest is not None and binding.version < highest:
            if not self._unsafe:
                raise OlderVersion(
                    f"the sealed file is version {binding.version} of {wanted}, older than "
                    f"version {highest} already opened here (a replay?); "
                    "--unsafe-allow-older opens it anyway"
                )
            self._older = True
        self._binding = binding

    def done(self, header: envelope.SealedHeader, path: Path | None) -> OpenedFile:
        binding = self._binding
        if binding is None:  # accept() runs before any byte is decrypted
            raise AssertionError("the header was not checked")
        _VersionBook(self._workspace).record_opened(binding.key, binding.version)
        return OpenedFile(
            path=path,
            owner=self.owner,
            resource=self.resource,
            version=binding.version,
            sender=parse_address(header.sender_address),
            older=self._older,
            first=self._first,
        )


def _opening_key(
    workspace: Workspace,
    registry: ProvenanceRegistry,
    resource: bytes,
    owner: str,
    passphrase: Passphrase,
) -> X25519PrivateKey:
    """This workspace's private key, once the chain says it may open ``owner``'s ``resource``
    (steps 1-3)."""
    key = sharing_key(workspace, passphrase)
    if registry.registration(owner, resource) is None:
        raise ResourceNotRegistered(f"resource 0x{resource.hex()} is not registered by {owner}")
    if owner != parse_address(workspace.keystore().address):
        state = registry.grant_of(owner, resource, _raw(key.public_key()))
        if state.granted_block == 0:
            raise NoGrant(
                f"no grant of key {envelope.key_id(key.public_key())[:16]}… on "
                f"{owner}'s 0x{resource.hex()}: ask its owner to grant it"
            )
        if state.revoked_block != 0:
            raise GrantRevoked(
                f"the grant of key {envelope.key_id(key.public_key())[:16]}… on "
                f"{owner}'s 0x{resource.hex()} was revoked in block {state.revoked_block}"
            )
    return key


class _VersionBook:
    """The highest version of each resource this workspace sealed and opened.

    ``sharing/versions.json``: ``{"sealed": {KEY: [block, counter]}, "opened": {...}}``, read
    and rewritten (atomically, 0600) under an exclusive lock on ``sharing/versions.lock``.
    """

    def __init__(self, workspace: Workspace) -> None:
        self._dir = workspace.path / "sharing"
        self._path = self._dir / "versions.json"

    def next_sealed(self, key: str, block: int) -> Version:
        """A version above every one sealed here of ``key``, at ``block`` if it can be."""
        with self._locked() as book:
            last = _version(book["sealed"].get(key))
            if last is None or block > last.block:
                version = Version(block, 0)
            else:
                version = Version(last.block, last.counter + 1)
            book["sealed"][key] = [version.block, version.counter]
            self._save(book)
        return version

    def highest_opened(self, key: str) -> Version | None:
        with self._locked() as book:
            return _version(book["opened"].get(key))

    def record_opened(self, key: str, version: Version) -> None:
        with self._locked() as book:
            last = _version(book["opened"].get(key))
            if last is None or version > last:
                book["opened"][key] = [version.block, version.counter]
                self._save(book)

    @contextmanager
    def _locked(self) -> Iterator[dict[str, dict[str, Any]]]:
        make_private_dir(self._dir)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self._dir / "versions.lock", flags, 0o600)
        except OSError as exc:
            raise WorkspaceError(f"cannot lock {self._dir}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self._load()
        finally:
            os.close(fd)

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            return {"sealed": {}, "opened": {}}
        except OSError as exc:
            raise WorkspaceError(f"cannot read {self._path}: {exc.strerror}") from exc
        try:
            book = parse_json(data, what=str(self._path))
        except InputError as exc:
            raise WorkspaceError(str(exc)) from exc
        if (
            not isinstance(book, dict)
            or set(book) != {"sealed", "opened"}
            or not all(isinstance(v, dict) for v in book.values())
        ):
            raise WorkspaceError(f"{self._path} is not a version book")
        for part in book.values():
            for value in part.values():
                if _version(value) is None:
                    raise WorkspaceError(f"{self._path} holds a malformed version")
        return book

    def _save(self, book: dict[str, dict[str, Any]]) -> None:
        text = json.dumps(book, sort_keys=True, indent=1) + "\n"
        write_atomic(self._path, text.encode(), mode=0o600)


def _version(value: Any) -> Version | None:
    """A stored ``[block, counter]`` as a :class:`Version`; None if absent or malformed."""
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**64 for v in value)
    ):
        return Version(value[0], value[1])
    return None


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
