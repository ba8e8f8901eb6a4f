"""How a ledger talks to its chain (kept apart so that reading settings imports no web3)."""

from __future__ import annotations

from dataclasses import dataclass

from ailedger.errors import InputError

__all__ = ["LedgerSettings"]


@dataclass(frozen=True, kw_only=True)
class LedgerSettings:
    """How the ledger talks to its chain.

    ``confirmations``: blocks (the including one counted) before a receipt is returned; the
    embedded chain is final at once and ignores it. ``retries`` and ``backoff`` (seconds,
    doubled each try up to ``backoff_max``) govern outages before :class:`NodeUnavailable`.
    """

    confirmations: int = 1
    retries: int = 5
    backoff: float = 0.25
    backoff_max: float = 8.0
    request_timeout: float = 10.0
    receipt_timeout: float = 120.0
    poll_interval: float = 0.25
    priority_fee_wei: int | None = None
    gas_margin: float = 1.2

    def __post_init__(self) -> None:
        if self.confirmations < 1:
            raise InputError("confirmations must be at least 1")
        if self.retries < 1:
            raise InputError("retries must be at least 1")
