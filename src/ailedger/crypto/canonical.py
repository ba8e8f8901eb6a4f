"""Canonical JSON bytes (RFC 8785, the JSON Canonicalization Scheme).

Every record that is hashed or signed goes through :func:`canonical_json`, so two parties that
hold the same value derive the same bytes.
"""

from __future__ import annotations

from typing import Any

import rfc8785

from ailedger.errors import InputError

__all__ = ["canonical_json"]


def canonical_json(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of a JSON-compatible value.

    Raises :class:`InputError` for values JSON cannot hold (NaN, infinities, integers outside
    the IEEE 754 safe range, non-string keys, other types).
    """
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InputError(f"value cannot be canonicalised as JSON (RFC 8785): {exc}") from exc
