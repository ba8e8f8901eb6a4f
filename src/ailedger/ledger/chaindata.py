"""Plain, typed records of what a chain holds: blocks, transactions, receipts and logs.

The chain reader (:mod:`ailedger.ledger.reader`) fills them from any JSON-RPC node; the
sentinel's features, detectors and scenarios read them and never see web3's types. Every field
is checked and converted once, where the data enters, so the rest of ailedger never handles a
hex string or a missing key.

Addresses are EIP-55 checksummed strings; hashes are 32 bytes; amounts are integers in wei.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One event emitted by a transaction (from its receipt)."""

    address: str
    """The contract that emitted it (checksummed)."""
    topics: tuple[bytes, ...]
    """Up to four 32-byte topics; ``topics[0]`` is the event signature hash when present."""
    data: bytes
    log_index: int
    """Position among all logs of the block."""


@dataclass(frozen=True, slots=True)
class TxRecord:
    """One transaction with the outcome its receipt reports."""

    hash: bytes
    block_number: int
    index: int
    """Position in the block (0-based)."""
    sender: str
    to: str | None
    """None for a contract creation."""
    value: int
    nonce: int
    type: int
    """EIP-2718 type: 0 legacy, 1 access list, 2 EIP-1559, 3 blob, 4 set-code."""
    gas_limit: int
    gas_used: int
    effective_gas_price: int
    """What each unit of gas cost (base fee plus the tip actually paid), in wei."""
    max_fee_per_gas: int | None
    """EIP-1559 cap; None for legacy and access-list transactions."""
    max_priority_fee_per_gas: int | None
    input: bytes
    status: int
    """1 success, 0 reverted."""
    contract_address: str | None
    """The created contract, for a creation."""
    logs: tuple[LogRecord, ...]

    @property
    def selector(self) -> bytes:
        """The first four bytes of the calldata (empty for a plain transfer)."""
        return self.input[:4]

    @property
    def is_creation(self) -> bool:
        return self.to is None


@dataclass(frozen=True, slots=True)
class BlockRecord:
    """One block with its transactions in block order."""

    number: int
    hash: bytes
    parent_hash: bytes
    timestamp: int
    """Seconds since the Unix epoch."""
    miner: str
    gas_used: int
    gas_limit: int
    base_fee_per_gas: int | None
    """None before London (EIP-1559)."""
    transactions: tuple[TxRecord, ...]


@dataclass(frozen=True, slots=True)
class FeeHistory:
    """``eth_feeHistory`` for ``len(gas_used_ratio)`` blocks ending at ``newest``.

    ``base_fee_per_gas`` has one more entry than there are blocks: the last is the base fee of
    the block after ``newest``. ``reward[i][j]`` is the tip at ``percentiles[j]`` in block
    ``oldest + i``.
    """

    oldest: int
    base_fee_per_gas: tuple[int, ...]
    gas_used_ratio: tuple[float, ...]
    percentiles: tuple[float, ...]
    reward: tuple[tuple[int, ...], ...]

    @property
    def newest(self) -> int:
        return self.oldest + len(self.gas_used_ratio) - 1
