"""Registrations, lineage and access grants on chain: a typed client of ``ProvenanceRegistry``.

The contract (``contracts/ProvenanceRegistry.vy``) records, per content digest, its owner (the
registering account), its kind, the SHA-256 of its signed statement and its parents; a
registration is immutable. The owner of a digest grants and revokes access to it for X25519
public keys. Reverts are translated into :class:`AlreadyRegistered`, :class:`UnknownParent`
and :class:`NotOwner`, whose messages carry the contract's reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ailedger.errors import InputError, TransactionReverted, WrongChain
from ailedger.ledger._ledger import Ledger, Receipt
from ailedger.ledger.contracts import load_artifact

if TYPE_CHECKING:
    from web3.types import BlockIdentifier

__all__ = [
    "MAX_PARENTS",
    "AlreadyRegistered",
    "ChainGrant",
    "ChainRegistration",
    "NotOwner",
    "ProvenanceRegistry",
    "UnknownParent",
]

MAX_PARENTS = 16


class AlreadyRegistered(InputError):
    """The digest is registered already; a registration never changes."""

    def __init__(self, digest: bytes, detail: str) -> None:
        self.digest = digest
        super().__init__(f"0x{digest.hex()} is already registered ({detail})")


class UnknownParent(InputError):
    """A parent digest is not registered (parents must be registered before their children)."""


class NotOwner(InputError):
    """Only the owner of a registered digest may grant or revoke access to it."""


@dataclass(frozen=True, kw_only=True)
class ChainRegistration:
    """What the chain holds about one registered digest."""

    digest: bytes
    owner: str
    kind: int
    statement_digest: bytes
    parents: tuple[bytes, ...]
    block_number: int
    timestamp: int


@dataclass(frozen=True, kw_only=True)
class ChainGrant:
    """The grant of ``recipient`` (an X25519 public key) on ``digest``; blocks 0 mean never."""

    digest: bytes
    recipient: bytes
    granted_block: int
    revoked_block: int

    @property
    def live(self) -> bool:
        return self.granted_block != 0 and self.revoked_block == 0


class ProvenanceRegistry:
    """The ``ProvenanceRegistry`` contract at ``address`` on ``ledger``'s chain.

    With ``chain_id``, a ledger on another chain is refused (:class:`WrongChain`) before any
    call; the code at ``address`` must be this contract's (:class:`ContractNotFound`).
    """

    NAME = "ProvenanceRegistry"

    def __init__(self, *, ledger: Ledger, address: str, chain_id: int | None = None) -> None:
        if chain_id is not None and ledger.chain_id != chain_id:
            raise WrongChain(chain_id, ledger.chain_id, ledger.url or "the embedded chain")
        self.ledger = ledger
        self._contract = ledger.contract(load_artifact(self.NAME), address)
        self.address = str(self._contract.address)

    @classmethod
    def deploy(cls, ledger: Ledger) -> ProvenanceRegistry:
        address, _ = ledger.deploy(load_artifact(cls.NAME))
        return cls(ledger=ledger, address=address)

    # -- registrations --------------------------------------------------------------------

    def register(
        self, digest: bytes, kind: int, statement_digest: bytes, parents: tuple[bytes, ...] = ()
    ) -> Receipt:
        """Register ``digest`` as the caller's; raises :class:`AlreadyRegistered` or
        :class:`UnknownParent` (checked before sending, and again by the contract)."""
        _check_bytes32("digest", digest)
        _check_bytes32("statement digest", statement_digest)
        if not isinstance(kind, int) or not 0 < kind < 256:
            raise InputError(f"kind must be an integer from 1 to 255, got {kind!r}")
        if len(parents) > MAX_PARENTS:
            raise InputError(f"at most {MAX_PARENTS} parents, got {len(parents)}")
        for parent in parents:
            _check_bytes32("parent", parent)
        if len(set(parents)) != len(parents):
            raise InputError("a parent is listed twice")
        existing = self.registration(digest)
        if existing is not None:
            raise AlreadyRegistered(digest, f"by {existing.owner} in block {existing.block_number}")
        for parent in parents:
            if not self.is_registered(parent):
                raise UnknownParent(f"parent 0x{parent.hex()} is not registered")
        call = self._contract.functions.register(digest, kind, statement_digest, list(parents))
        try:
            return self.ledger.transact(call)
        except TransactionReverted as exc:
            raise _translate(exc, digest) from exc

    def is_registered(self, digest: bytes, *, block: BlockIdentifier = "latest") -> bool:
        _check_bytes32("digest", digest)
        return bool(self.ledger.call(self._contract.functions.is_registered(digest), block))

    def registration(
        self, digest: bytes, *, block: BlockIdentifier = "latest"
    ) -> ChainRegistration | None:
        """The registration of ``digest``, or None when it is not registered."""
        if not self.is_registered(digest, block=block):
            return None
        owner, kind, statement, block_number, timestamp = self.ledger.call(
            self._contract.functions.registration(digest), block
        )
        parents = self.ledger.call(self._contract.functions.parents(digest), block)
        return ChainRegistration(
            digest=digest,
            owner=str(owner),
            kind=int(kind),
            statement_digest=bytes(statement),
            parents=tuple(bytes(p) for p in parents),
            block_number=int(block_number),
            timestamp=int(timestamp),
        )

    def count(self, *, block: BlockIdentifier = "latest") -> int:
        return int(self.ledger.call(self._contract.functions.registration_count(), block))

    def children(self, digest: bytes) -> list[bytes]:
        """Digests registered with ``digest`` as a parent, oldest first (from the event log)."""
        _check_bytes32("digest", digest)
        logs = self.ledger.logs(self._contract, "Derived", argument_filters={"parent": digest})
        return [bytes(log["args"]["child"]) for log in logs]

    # -- grants ---------------------------------------------------------------------------

    def grant(self, digest: bytes, recipient: bytes) -> Receipt:
        """Give the X25519 public key ``recipient`` (32 raw bytes) access to ``digest``."""
        _check_bytes32("digest", digest)
        _check_bytes32("recipient", recipient)
        return self._transact_owned(self._contract.functions.grant(digest, recipient), digest)

    def revoke(self, digest: bytes, recipient: bytes) -> Receipt:
        """End the live grant of ``recipient`` on ``digest``."""
        _check_bytes32("digest", digest)
        _check_bytes32("recipient", recipient)
        return self._transact_owned(self._contract.functions.revoke(digest, recipient), digest)

    def grant_of(
        self, digest: bytes, recipient: bytes, *, block: BlockIdentifier = "latest"
    ) -> ChainGrant:
        _check_bytes32("digest", digest)
        _check_bytes32("recipient", recipient)
        granted, revoked = self.ledger.call(
            self._contract.functions.grant_of(digest, recipient), block
        )
        return ChainGrant(
            digest=digest,
            recipient=recipient,
            granted_block=int(granted),
            revoked_block=int(revoked),
        )

    def grants(self, digest: bytes, *, block: BlockIdentifier = "latest") -> list[ChainGrant]:
        """Every key ever granted ``digest``, in order of first grant, live or not."""
        _check_bytes32("digest", digest)
        n = int(self.ledger.call(self._contract.functions.grantee_count(digest), block))
        keys = [
            bytes(self.ledger.call(self._contract.functions.grantee_at(digest, i), block))
            for i in range(n)
        ]
        return [self.grant_of(digest, key, block=block) for key in keys]

    def _transact_owned(self, call: Any, digest: bytes) -> Receipt:
        try:
            return self.ledger.transact(call)
        except TransactionReverted as exc:
            raise _translate(exc, digest) from exc


def _translate(exc: TransactionReverted, digest: bytes) -> Exception:
    reason = exc.reason
    if reason == "digest already registered":
        return AlreadyRegistered(digest, "the contract refused it")
    if reason == "parent not registered":
        return UnknownParent("a parent is not registered")
    if reason.startswith("only the owner"):
        return NotOwner(f"0x{digest.hex()}: {reason}")
    if reason == "digest not registered":
        return InputError(f"0x{digest.hex()} is not registered")
    if reason in ("grant already live", "no live grant"):
        return InputError(f"0x{digest.hex()}: {reason}")
    return exc


def _check_bytes32(what: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise InputError(f"{what} must be 32 bytes")
