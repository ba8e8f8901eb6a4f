"""Registrations, lineage and access grants on chain: a typed client of ``ProvenanceRegistry``.

The contract (``contracts/ProvenanceRegistry.vy``) namespaces every registration by its
registrant (the registering account): under ``(owner, digest)`` it records the kind, the
SHA-256 of the signed statement and the parents, each itself an ``(owner, digest)`` pair. The
same digest may be registered by several accounts, each under its own name; a registration is
immutable. A registrant grants and revokes access to its own registrations for X25519 public
keys; nobody acts under another account's name. Reverts are translated into
:class:`AlreadyRegistered`, :class:`UnknownParent` and :class:`NotOwner`, whose messages carry
the contract's reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_utils.address import to_checksum_address

from ailedger.errors import InputError, TransactionReverted, WrongChain
from ailedger.ledger._ledger import Ledger, Receipt
from ailedger.ledger.anchors import parse_address
from ailedger.ledger.contracts import load_artifact

if TYPE_CHECKING:
    from web3.types import BlockIdentifier

__all__ = [
    "MAX_PARENTS",
    "AlreadyRegistered",
    "ChainGrant",
    "ChainRegistration",
    "NotOwner",
    "NotRegisteredHere",
    "ProvenanceRegistry",
    "UnknownParent",
    "parse_address",
]

MAX_PARENTS = 16


class AlreadyRegistered(InputError):
    """This account registered the digest already; a registration never changes."""

    def __init__(self, digest: bytes, detail: str) -> None:
        self.digest = digest
        super().__init__(f"0x{digest.hex()} is already registered ({detail})")


class UnknownParent(InputError):
    """A parent is not registered (parents must be registered before their children).

    Exit code 1, as every "not registered" error (README); still an InputError for callers.
    """

    exit_code = 1


class NotOwner(InputError):
    """Only the registrant of a registration may grant or revoke access to it."""


class NotRegisteredHere(NotOwner):
    """The digest has no registration by this account (exit code 1, as every "not
    registered" error)."""

    exit_code = 1


@dataclass(frozen=True, kw_only=True)
class ChainRegistration:
    """What the chain holds about ``owner``'s registration of ``digest``; ``parents`` are
    ``(owner, digest)`` pairs."""

    digest: bytes
    owner: str
    kind: int
    statement_digest: bytes
    parents: tuple[tuple[str, bytes], ...]
    block_number: int
    timestamp: int


@dataclass(frozen=True, kw_only=True)
class ChainGrant:
    """The grant of ``recipient`` (an X25519 public key) on ``owner``'s registration of
    ``digest``; blocks 0 mean never."""

    owner: str
    digest: bytes
    recipient: bytes
    granted_block: int
    revoked_block: int

    @property
    def live(self) -> bool:
        return self.granted_block != 0 and self.revoked_block == 0


class ProvenanceRegistry:
    """The ``ProvenanceRegistry`` contract at ``address`` on ``ledger``'s chain.

    Writes (``register``, ``grant``, ``revoke``) act under the ledger's account; reads name the
    registrant (``owner``). With ``chain_id``, a ledger on another chain is refused
    (:class:`WrongChain`) before any call; the code at ``address`` must be this contract's
    (:class:`ContractNotFound`).
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
        self,
        digest: bytes,
        kind: int,
        statement_digest: bytes,
        parents: Sequence[tuple[str, bytes]] = (),
    ) -> Receipt:
        """Register ``digest`` under the ledger's account with ``(owner, digest)`` parents.

        Raises :class:`AlreadyRegistered` when this account registered it already and
        :class:`UnknownParent` for a parent that is not registered (checked before sending,
        and again by the contract); another account's registration of the same digest is no
        obstacle.
        """
        _check_bytes32("digest", digest)
        _check_bytes32("statement digest", statement_digest)
        if not isinstance(kind, int) or isinstance(kind, bool) or not 0 < kind < 256:
            raise InputError(f"kind must be an integer from 1 to 255, got {kind!r}")
        refs = check_parents(parents)
        account = self.ledger.account
        existing = self.registration(account, digest)
        if existing is not None:
            raise AlreadyRegistered(
                digest, f"by this account {account} in block {existing.block_number}"
            )
        for owner, parent in refs:
            if not self.is_registered(owner, parent):
                raise UnknownParent(f"parent 0x{parent.hex()} is not registered by {owner}")
        call = self._contract.functions.register(digest, kind, statement_digest, list(refs))
        try:
            return self.ledger.transact(call)
        except TransactionReverted as exc:
            raise _translate(exc, digest) from exc

    def is_registered(
        self, owner: str, digest: bytes, *, block: BlockIdentifier = "latest"
    ) -> bool:
        who = parse_address(owner, "owner")
        _check_bytes32("digest", digest)
        return bool(self.ledger.call(self._contract.functions.is_registered(who, digest), block))

    def registration(
        self, owner: str, digest: bytes, *, block: BlockIdentifier = "latest"
    ) -> ChainRegistration | None:
        """``owner``'s registration of ``digest``, or None when it made none."""
        who = parse_address(owner, "owner")
        if not self.is_registered(who, digest, block=block):
            return None
        kind, statement, block_number, timestamp = self.ledger.call(
            self._contract.functions.registration(who, digest), block
        )
        parents = self.ledger.call(self._contract.functions.parents(who, digest), block)
        return ChainRegistration(
            digest=digest,
            owner=who,
            kind=int(kind),
            statement_digest=bytes(statement),
            parents=tuple((str(to_checksum_address(p[0])), bytes(p[1])) for p in parents),
            block_number=int(block_number),
            timestamp=int(timestamp),
        )

    def registrants(self, digest: bytes) -> list[str]:
        """Every account that registered ``digest``, oldest first (from the event log)."""
        _check_bytes32("digest", digest)
        logs = self.ledger.logs(self._contract, "Registered", argument_filters={"digest": digest})
        out: list[str] = []
        for log in logs:
            owner = str(to_checksum_address(log["args"]["owner"]))
            if owner not in out:
                out.append(owner)
        return out

    def count(self, *, block: BlockIdentifier = "latest") -> int:
        """How many registrations there are, by every account."""
        return int(self.ledger.call(self._contract.functions.registration_count(), block))

    def children(self, owner: str, digest: bytes) -> list[tuple[str, bytes]]:
        """``(owner, digest)`` of the registrations made with ``owner``'s ``digest`` as a
        parent, oldest first (from the event log)."""
        who = parse_address(owner, "owner")
        _check_bytes32("digest", digest)
        logs = self.ledger.logs(
            self._contract,
            "Derived",
            argument_filters={"parent_owner": who, "parent": digest},
        )
        return [
            (str(to_checksum_address(log["args"]["child_owner"])), bytes(log["args"]["child"]))
            for log in logs
        ]

    # -- grants ---------------------------------------------------------------------------

    def grant(self, digest: bytes, recipient: bytes) -> Receipt:
        """Give the X25519 public key ``recipient`` (32 raw bytes) access to the ledger
        account's registration of ``digest``; raises :class:`NotOwner` when it has none."""
        _check_bytes32("digest", digest)
        _check_bytes32("recipient", recipient)
        self._require_own(digest, "grant")
        return self._transact_owned(self._contract.functions.grant(digest, recipient), digest)

    def revoke(self, digest: bytes, recipient: bytes) -> Receipt:
        """End the live grant of ``recipient`` on the ledger account's registration of
        ``digest``; raises :class:`NotOwner` when it has none."""
        _check_bytes32("digest", digest)
        _check_bytes32("recipient", recipient)
        self._require_own(digest, "revoke")
        return self._transact_owned(self._contract.functions.revoke(digest, recipient), digest)

    def grant_of(
        self, owner: str, digest: bytes, recipient: bytes, *, block: BlockIdentifier = "latest"
    ) -> ChainGrant:
        """The grant of ``recipient`` on ``owner``'s registration of ``digest``."""
        who = parse_address(owner, "owner")
        _check_bytes32("digest", digest)
        _check_bytes32("recipient", recipient)
        granted, revoked = self.ledger.call(
            self._contract.functions.grant_of(who, digest, recipient), block
        )
        return ChainGrant(
            owner=who,
            digest=digest,
            recipient=recipient,
            granted_block=int(granted),
            revoked_block=int(revoked),
        )

    def is_granted(
        self, owner: str, digest: bytes, recipient: bytes, *, block: BlockIdentifier = "latest"
    ) -> bool:
        """Whether ``owner`` has a live grant of ``recipient`` on its registration of ``digest``."""
        who = parse_address(owner, "owner")
        _check_bytes32("digest", digest)
        _check_bytes32("recipient", recipient)
        return bool(
            self.ledger.call(self._contract.functions.is_granted(who, digest, recipient), block)
        )

    def grants(
        self, owner: str, digest: bytes, *, block: BlockIdentifier = "latest"
    ) -> list[ChainGrant]:
        """Every key ``owner`` ever granted its registration of ``digest``, in order of first
        grant, live or not."""
        who = parse_address(owner, "owner")
        _check_bytes32("digest", digest)
        fns = self._contract.functions
        n = int(self.ledger.call(fns.grantee_count(who, digest), block))
        keys = [bytes(self.ledger.call(fns.grantee_at(who, digest, i), block)) for i in range(n)]
        return [self.grant_of(who, digest, key, block=block) for key in keys]

    def _require_own(self, digest: bytes, verb: str) -> None:
        account = self.ledger.account
        if self.is_registered(account, digest):
            return
        others = self.registrants(digest)
        if others:
            raise NotOwner(
                f"0x{digest.hex()} is registered by {', '.join(others)}, not by this account "
                f"{account}: only the owner may {verb} access to a registration"
            )
        raise NotRegisteredHere(f"0x{digest.hex()} is not registered by this account {account}")

    def _transact_owned(self, call: Any, digest: bytes) -> Receipt:
        try:
            return self.ledger.transact(call)
        except TransactionReverted as exc:
            raise _translate(exc, digest) from exc


def check_parents(parents: Sequence[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    """Check ``(owner, digest)`` parents (count, forms, no repeats); addresses come back in
    checksum form. Raises :class:`InputError`."""
    if isinstance(parents, str | bytes):
        raise InputError("parents must be a sequence of (owner, digest) pairs")
    refs: list[tuple[str, bytes]] = []
    for item in parents:
        if not isinstance(item, tuple) or len(item) != 2:
            raise InputError(f"a parent must be an (owner, digest) pair, got {item!r}")
        owner, digest = item
        _check_bytes32("parent", digest)
        refs.append((parse_address(owner, "parent owner"), digest))
    if len(refs) > MAX_PARENTS:
        raise InputError(f"at most {MAX_PARENTS} parents, got {len(refs)}")
    if len(set(refs)) != len(refs):
        raise InputError("a parent is listed twice")
    return tuple(refs)


def _translate(exc: TransactionReverted, digest: bytes) -> Exception:
    reason = exc.reason
    if reason == "digest already registered":
        return AlreadyRegistered(digest, "the contract refused it")
    if reason == "parent not registered":
        return UnknownParent("a parent is not registered")
    if reason == "digest not registered":
        return NotRegisteredHere(f"0x{digest.hex()} is not registered by this account")
    if reason in ("grant already live", "no live grant"):
        return InputError(f"0x{digest.hex()}: {reason}")
    return exc


def _check_bytes32(what: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise InputError(f"{what} must be 32 bytes")
