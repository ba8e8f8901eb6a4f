"""Keys, canonical JSON and envelope encryption."""

from __future__ import annotations

from ailedger.crypto.canonical import canonical_json
from ailedger.crypto.envelope import OpenReader, SealWriter, open_sealed, seal

__all__ = ["OpenReader", "SealWriter", "canonical_json", "open_sealed", "seal"]
