"""How a ledger talks to its chain (kept apart so that reading settings imports no web3)."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Protocol

from ailedger.errors import InputError

__all__ = ["LedgerSettings", "check_rpc_url"]


def check_rpc_url(url: str) -> str:
    """Return ``url`` if it can name a JSON-RPC node over http(s); else :class:`InputError`.

    Refused: another scheme (WebSocket nodes too: give their http(s) URL), no host, a port
    outside 1-65535, whitespace or control characters, anything :mod:`urllib.parse` rejects.
    """
    if not isinstance(url, str) or not url:
        raise InputError("the node's URL is empty")
    shown = repr(url) if len(url) <= 200 else repr(url[:200]) + "..."
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise InputError(f"not a JSON-RPC URL (whitespace or control characters): {shown}")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InputError(f"not a JSON-RPC URL ({exc}): {shown}") from exc
    scheme = parts.scheme.lower()
    if scheme in ("ws", "wss"):
        raise InputError(f"WebSocket nodes are not supported, give the node's http(s) URL: {shown}")
    if scheme not in ("http", "https"):
        raise InputError(f"not an http(s) JSON-RPC URL: {shown}")
    if not parts.hostname:
        raise InputError(f"the JSON-RPC URL names no host: {shown}")
    if port == 0:
        raise InputError(f"the JSON-RPC URL's port must be 1-65535: {shown}")
    return url


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


class FeeAdvice(Protocol):
    """A fee advisor's answer: send now or wait, and the fees to send with (wei per gas)."""

    @property
    def send(self) -> bool: ...

    @property
    def max_fee_per_gas(self) -> int: ...

    @property
    def max_priority_fee_per_gas(self) -> int: ...

    @property
    def reason(self) -> str: ...
