"""Checkpoint anchors on chain: a typed client of the ``AnchorRegistry`` contract.

Anchors are kept per anchoring account: every read names the ``anchorer`` whose claims it
wants (the log's operator), so an anchor another account made for the same origin is never
seen, and cannot block, pre-empt or contradict the operator's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ailedger.errors import InputError, LedgerError, TransactionReverted
from ailedger.ledger._ledger import Ledger, PendingTransaction, Receipt
from ailedger.ledger.contracts import load_artifact

if TYPE_CHECKING:
    from web3.types import BlockIdentifier

__all__ = ["Anchor", "AnchorRegistry", "parse_address", "parse_bytes32"]

_MAX_SIZE = 2**64 - 1
#: the most anchors of one log a verifier reads (one anchor a minute for about two years)
MAX_ANCHORS = 1_000_000


@dataclass(frozen=True, kw_only=True)
class Anchor:
    """One anchored checkpoint: ``anchorer`` claims log ``origin`` had ``size`` entries under
    ``root``."""

    anchorer: str
    origin: bytes
    index: int
    size: int
    root: bytes
    block_number: int
    timestamp: int

    def to_json(self) -> dict[str, Any]:
        return {
            "anchorer": self.anchorer,
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

    def send_anchor(
        self,
        origin: bytes,
        size: int,
        root: bytes,
        *,
        max_fee_per_gas: int | None = None,
        max_priority_fee_per_gas: int | None = None,
    ) -> PendingTransaction:
        """Broadcast an anchor without waiting (several may be in flight).

        ``max_fee_per_gas`` and ``max_priority_fee_per_gas`` (wei per gas, both or neither)
        set the transaction's EIP-1559 fees; without them the ledger prices it.
        """
        if (max_fee_per_gas is None) != (max_priority_fee_per_gas is None):
            raise InputError("give both max_fee_per_gas and max_priority_fee_per_gas, or neither")
        _check_bytes32("origin", origin)
        _check_bytes32("root", root)
        if not isinstance(size, int) or not 0 < size <= _MAX_SIZE:
            raise InputError(f"size must be an integer from 1 to 2**64-1, got {size!r}")
        call = self._contract.functions.anchor(origin, size, root)
        data = call._encode_transaction_data()
        request: dict[str, Any] = {"to": self.address, "data": data}
        if max_fee_per_gas is not None and max_priority_fee_per_gas is not None:
            for name, fee in (
                ("max_fee_per_gas", max_fee_per_gas),
                ("max_priority_fee_per_gas", max_priority_fee_per_gas),
            ):
                if isinstance(fee, bool) or not isinstance(fee, int) or not 0 <= fee < 2**256:
                    raise InputError(f"{name} must be a non-negative integer (wei), got {fee!r}")
            if max_priority_fee_per_gas > max_fee_per_gas:
                raise InputError("max_priority_fee_per_gas must not exceed max_fee_per_gas")
            request["maxFeePerGas"] = max_fee_per_gas
            request["maxPriorityFeePerGas"] = max_priority_fee_per_gas
        return self.ledger.send(request)

    def anchor(self, origin: bytes, size: int, root: bytes) -> Receipt:
        """Anchor a checkpoint as this ledger's account and wait for its receipt.

        Raises :class:`TransactionReverted` when ``size`` does not exceed the latest size this
        account anchored for ``origin`` (other accounts' anchors play no part).
        """
        return self.ledger.wait(self.send_anchor(origin, size, root))

    def count(self, anchorer: str, origin: bytes, *, block: BlockIdentifier = "latest") -> int:
        """How many anchors ``anchorer`` made of ``origin``."""
        who = _address(anchorer)
        _check_bytes32("origin", origin)
        return int(self.ledger.call(self._contract.functions.anchor_count(who, origin), block))

    def anchor_at(
        self, anchorer: str, origin: bytes, index: int, *, block: BlockIdentifier = "latest"
    ) -> Anchor:
        """The ``index``-th anchor (from 0) of ``origin`` by ``anchorer``."""
        who = _address(anchorer)
        _check_bytes32("origin", origin)
        try:
            raw = self.ledger.call(self._contract.functions.anchor_at(who, origin, index), block)
        except TransactionReverted as exc:
            raise InputError(f"{who} has no anchor #{index} of origin 0x{origin.hex()}") from exc
        return _anchor(who, origin, index, raw)

    def latest(
        self, anchorer: str, origin: bytes, *, block: BlockIdentifier = "latest"
    ) -> Anchor | None:
        """The newest anchor of ``origin`` by ``anchorer``, or None."""
        n = self.count(anchorer, origin, block=block)
        return None if n == 0 else self.anchor_at(anchorer, origin, n - 1, block=block)

    def anchors(
        self, anchorer: str, origin: bytes, *, block: BlockIdentifier = "latest"
    ) -> list[Anchor]:
        """Every anchor of ``origin`` by ``anchorer``, oldest first.

        A count above :data:`MAX_ANCHORS` is refused (:class:`LedgerError`) rather than read
        one call at a time: a hostile or broken node could claim 2**256 of them.
        """
        count = self.count(anchorer, origin, block=block)
        if count > MAX_ANCHORS:
            raise LedgerError(
                f"the node claims {count} anchors of 0x{origin.hex()} by {anchorer}, more than "
                f"the {MAX_ANCHORS} a verifier reads: refusing (a hostile or broken node?)"
            )
        return [self.anchor_at(anchorer, origin, i, block=block) for i in range(count)]


def parse_address(text: str, what: str = "address") -> str:
    """An Ethereum address (0x and 40 hex digits; a mixed-case one must carry a valid EIP-55
    checksum), returned in checksum form; raises :class:`InputError` otherwise."""
    from eth_utils.address import is_address, is_checksum_address, to_checksum_address

    if not isinstance(text, str) or not text.startswith("0x") or not is_address(text):
        raise InputError(f"{what} must be an Ethereum address (0x and 40 hex digits), got {text!r}")
    body = text[2:]
    # eth_utils' is_address accepts any mixed case; EIP-55 says mixed case is a checksum
    if body not in (body.lower(), body.upper()) and not is_checksum_address(text):
        raise InputError(f"{what} has a wrong EIP-55 checksum (mixed case): {text!r}")
    return str(to_checksum_address(text))


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


def _address(value: str) -> str:
    return parse_address(value, "anchorer")


def _anchor(anchorer: str, origin: bytes, index: int, raw: Any) -> Anchor:
    size, root, block_number, timestamp = raw
    return Anchor(
        anchorer=anchorer,
        origin=origin,
        index=index,
        size=int(size),
        root=bytes(root),
        block_number=int(block_number),
        timestamp=int(timestamp),
    )
