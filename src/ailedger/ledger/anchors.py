"""Checkpoint anchors on chain: a typed client of the ``AnchorRegistry`` contract."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ailedger.errors import InputError, TransactionReverted
from ailedger.ledger._ledger import Ledger, PendingTransaction, Receipt
from ailedger.ledger.contracts import load_artifact

if TYPE_CHECKING:
    from web3.types import BlockIdentifier

__all__ = ["Anchor", "AnchorRegistry", "parse_bytes32"]

_MAX_SIZE = 2**64 - 1


@dataclass(frozen=True, kw_only=True)
class Anchor:
    """One anchored checkpoint: the log ``origin`` had ``size`` entries under ``root``."""

    origin: bytes
    index: int
    size: int
    root: bytes
    block_number: int
    timestamp: int

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": "0x" + self.origin.hex(),
            "index": self.index,
            "size": self.size,
            "root": "0x" + self.root.hex(),
            "block_number": self.block_number,
            "timestamp": self.timestamp,
        }


class AnchorRegistry:
    """The ``AnchorRegistry`` contract at ``address`` on ``ledger``'s chain."""

    NAME = "AnchorRegistry"

    def __init__(self, *, ledger: Ledger, address: str) -> None:
        self.ledger = ledger
        self._contract = ledger.contract(load_artifact(self.NAME), address)
        self.address = str(self._contract.address)

    @classmethod
    def deploy(cls, ledger: Ledger) -> AnchorRegistry:
        address, _ = ledger.deploy(load_artifact(cls.NAME))
        return cls(ledger=ledger, address=address)

    def send_anchor(self, origin: bytes, size: int, root: bytes) -> PendingTransaction:
        """Broadcast an anchor without waiting (several may be in flight)."""
        _check_bytes32("origin", origin)
        _check_bytes32("root", root)
        if not isinstance(size, int) or not 0 < size <= _MAX_SIZE:
            raise InputError(f"size must be an integer from 1 to 2**64-1, got {size!r}")
        call = self._contract.functions.anchor(origin, size, root)
        data = call._encode_transaction_data()
        return self.ledger.send({"to": self.address, "data": data})

    def anchor(self, origin: bytes, size: int, root: bytes) -> Receipt:
        """Anchor a checkpoint and wait for its receipt.

        Raises :class:`TransactionReverted` when ``size`` does not exceed the latest anchored
        size, or when another account owns ``origin``.
        """
        return self.ledger.wait(self.send_anchor(origin, size, root))

    def owner(self, origin: bytes) -> str | None:
        _check_bytes32("origin", origin)
        owner = str(self.ledger.call(self._contract.functions.owner_of(origin)))
        return None if int(owner, 16) == 0 else owner

    def count(self, origin: bytes, *, block: BlockIdentifier = "latest") -> int:
        _check_bytes32("origin", origin)
        return int(self.ledger.call(self._contract.functions.anchor_count(origin), block))

    def anchor_at(self, origin: bytes, index: int, *, block: BlockIdentifier = "latest") -> Anchor:
        _check_bytes32("origin", origin)
        try:
            raw = self.ledger.call(self._contract.functions.anchor_at(origin, index), block)
        except TransactionReverted as exc:
            raise InputError(f"origin 0x{origin.hex()} has no anchor #{index}") from exc
        return _anchor(origin, index, raw)

    def latest(self, origin: bytes, *, block: BlockIdentifier = "latest") -> Anchor | None:
        n = self.count(origin, block=block)
        return None if n == 0 else self.anchor_at(origin, n - 1, block=block)

    def anchors(self, origin: bytes, *, block: BlockIdentifier = "latest") -> list[Anchor]:
        """Every anchor of ``origin``, oldest first."""
        return [
            self.anchor_at(origin, i, block=block) for i in range(self.count(origin, block=block))
        ]


def parse_bytes32(text: str, what: str) -> bytes:
    """Parse a 0x-prefixed 32-byte hex string (64 hex digits)."""
    if not isinstance(text, str) or not text.startswith("0x") or len(text) != 66:
        raise InputError(f"{what} must be 0x followed by 64 hex digits, got {text!r}")
    try:
        return bytes.fromhex(text[2:])
    except ValueError as exc:
        raise InputError(f"{what} must be 0x followed by 64 hex digits, got {text!r}") from exc


def _check_bytes32(what: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise InputError(f"{what} must be 32 bytes")


def _anchor(origin: bytes, index: int, raw: Any) -> Anchor:
    size, root, block_number, timestamp = raw
    return Anchor(
        origin=origin,
        index=index,
        size=int(size),
        root=bytes(root),
        block_number=int(block_number),
        timestamp=int(timestamp),
    )
