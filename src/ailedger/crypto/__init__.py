"""Keys, canonical JSON and envelope encryption."""

from __future__ import annotations

from ailedger.crypto.canonical import canonical_json

__all__ = ["canonical_json"]
