"""Canonical JSON bytes (RFC 8785, the JSON Canonicalization Scheme).

Every record that is hashed or signed goes through :func:`canonical_json`, so two parties that
hold the same value derive the same bytes. RFC 8785 asks for:

- object members sorted by their names' UTF-16 code units (§3.2.3), no insignificant space;
- strings escaped as ECMAScript's ``JSON.stringify`` does: ``\\" \\\\ \\b \\f \\n \\r \\t``, other
  controls as lowercase ``\\u00xx``, everything else literal (§3.2.2.2);
- numbers as IEEE 754 doubles printed by ECMAScript's ``Number.prototype.toString`` (§3.2.2.3):
  the shortest round-trip digits, in plain notation for exponents from -6 to 20 and
  ``d.ddde±x`` outside; integers therefore only within ±(2**53 - 1).

Values made of strings, safe integers, booleans, nulls, lists, objects with ASCII member names
and floats that Python prints as ECMAScript does (most log records) take CPython's C encoder,
whose sorted compact output is then exactly RFC 8785; anything else (other floats, other
member names) takes the encoder below, written from the RFC. Python's ``repr`` of a float has
the same shortest round-trip digits as ECMAScript; for 1e-4 <= |x| < 1e16 with a fraction it
also has the same layout (plain notation, no exponent, no trailing zeros), while outside that
range, and for whole numbers (``1.0`` against ``1``), the layouts differ. Tests compare both
encoders with the ``rfc8785`` reference package on random values.
"""

from __future__ import annotations

import json
import math
from json.encoder import encode_basestring
from typing import Any

from ailedger.errors import InputError

__all__ = ["canonical_json", "format_number"]

_SAFE_INT = 2**53 - 1
# floats whose repr is already their ECMAScript form, when they are not whole numbers
_FLOAT_MIN, _FLOAT_MAX = 1e-4, 1e16
# Built once: JSONEncoder.encode builds a new C encoder on every call (a microsecond, a third
# of the encoding). No circular-reference markers: _plain has walked the value already.
_C_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_C_ITERENCODE = (
    _c_make_encoder(None, None, encode_basestring, None, ":", ",", True, False, False)
    if _c_make_encoder is not None
    else None
)


def canonical_json(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of a JSON-compatible value.

    Raises :class:`InputError` for values JSON cannot hold (NaN, infinities, integers outside
    the IEEE 754 safe range, non-string member names, lone surrogates, other types).
    """
    try:
        if _plain(value):
            if _C_ITERENCODE is not None:
                return "".join(_C_ITERENCODE(value, 0)).encode()
            return _C_ENCODER.encode(value).encode()
        parts: list[str] = []
        _encode(value, parts)
        return "".join(parts).encode()
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise InputError(f"value cannot be canonicalised as JSON (RFC 8785): {exc}") from exc
    except RecursionError as exc:
        raise InputError("value cannot be canonicalised as JSON: circular or too deep") from exc


def format_number(x: float) -> str:
    """ECMAScript's ``Number.prototype.toString`` of a finite double (RFC 8785 §3.2.2.3)."""
    if math.isnan(x) or math.isinf(x):
        raise ValueError("NaN and infinities are not JSON numbers")
    if x == 0:
        return "0"
    text = repr(x)
    sign = ""
    if text[0] == "-":
        sign, text = "-", text[1:]
    mantissa, _, exponent = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    all_digits = whole + fraction
    digits = all_digits.lstrip("0")
    # value = 0.<digits> x 10**point
    point = len(whole) + int(exponent or 0) - (len(all_digits) - len(digits))
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        out = digits + "0" * (point - k)
    elif 0 < point <= 21:
        out = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        out = "0." + "0" * -point + digits
    else:
        e = point - 1
        out = (
            digits[0]
            + ("." + digits[1:] if k > 1 else "")
            + ("e+" if e > 0 else "e-")
            + str(abs(e))
        )
    return sign + out


def _utf16(name: str) -> bytes:
    return name.encode("utf-16-be", "surrogatepass")


def _encode(value: Any, out: list[str]) -> None:
    kind = type(value)
    if kind is str:
        out.append(encode_basestring(value))
    elif kind is dict:
        names = list(value)
        for name in names:
            if type(name) is not str:
                raise TypeError(f"object member names must be strings, got {type(name).__name__}")
        names.sort(key=None if all(name.isascii() for name in names) else _utf16)
        out.append("{")
        for position, name in enumerate(names):
            if position:
                out.append(",")
            out.append(encode_basestring(name))
            out.append(":")
            _encode(value[name], out)
        out.append("}")
    elif kind is list or kind is tuple:
        out.append("[")
        for position, item in enumerate(value):
            if position:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    elif kind is int:
        if not -_SAFE_INT <= value <= _SAFE_INT:
            raise ValueError(f"integer {value} is outside the IEEE 754 safe range")
        out.append(str(value))
    elif kind is float:
        out.append(format_number(value))
    else:
        raise TypeError(f"{kind.__name__} is not a JSON value")


def _plain(value: Any) -> bool:
    """Whether the C encoder's sorted compact output is already RFC 8785 for ``value``.

    Written as one loop with the scalar cases inline: it runs once per logged record.
    """
    kind = type(value)
    if kind is dict:
        for key in value:
            if type(key) is not str or not key.isascii():
                return False
        items = value.values()
    elif kind is list:
        items = value
    elif kind is str or kind is bool or value is None:
        return True
    elif kind is int:
        return bool(-_SAFE_INT <= value <= _SAFE_INT)
    elif kind is float:
        return bool(_FLOAT_MIN <= abs(value) < _FLOAT_MAX and not value.is_integer())
    else:
        return False
    for item in items:
        item_kind = type(item)
        if item_kind is str or item_kind is bool or item is None:
            continue
        if item_kind is int:
            if not -_SAFE_INT <= item <= _SAFE_INT:
                return False
        elif item_kind is float:
            if not _FLOAT_MIN <= abs(item) < _FLOAT_MAX or item.is_integer():
                return False
        elif not _plain(item):
            return False
    return True
