"""Reading data that comes from outside: bounded in size and depth, refused with one clear line.

Anything ailedger did not write itself (files handed to the CLI, exports, task specs, JSON-RPC
replies, HTTP bodies) goes through these functions, which raise :class:`InputError` instead of
letting a third-party exception or a crash through:

- :func:`parse_json` refuses input over ``max_bytes``, nesting deeper than ``max_depth`` (checked
  before the C decoder runs, so it holds whatever ``sys.getrecursionlimit()`` is: web3 raises it
  to 100,000, and the decoder would then overflow the C stack), duplicate object keys (a record
  must mean one thing), ``NaN``/``Infinity`` and numbers that overflow to them (``1e999``),
  integers longer than Python converts (``sys.get_int_max_str_digits()``), lone UTF-16
  surrogates (``"\\ud800"``: not text, RFC 7493 §2.1) and invalid UTF-8. What it returns
  re-encodes as UTF-8 JSON.
- :func:`read_bounded` reads a stream up to a limit and refuses anything longer.
- :func:`iter_json_lines` streams JSON lines (RFC 7464's newline-delimited form) from a binary
  stream in bounded memory, splitting on ``\\n`` only (never on U+2028 or U+0085, which are
  legal inside JSON strings) and numbering lines from 1.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from typing import IO, Any

from ailedger.errors import InputError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "decode_utf8",
    "iter_json_lines",
    "parse_json",
    "read_bounded",
]

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_DEPTH = 64

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
# an escaped UTF-16 surrogate, which json decodes to a lone surrogate unless it is paired
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def decode_utf8(data: bytes, *, what: str) -> str:
    """``data`` as text, or :class:`InputError` naming the first invalid byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what}: not UTF-8 (invalid byte at offset {exc.start})") from exc


def _check_depth(text: str, max_depth: int, what: str) -> None:
    opened = text.count("[") + text.count("{")
    if opened <= max_depth:
        return
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depth = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            if depth > max_depth:
                raise InputError(f"{what}: JSON nested deeper than {max_depth} levels")
        else:
            depth -= 1


class _Refused(Exception):
    """Raised by the decoder's hooks; :func:`parse_json` adds the input's name."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"duplicate key {key!r} in a JSON object")
            seen.add(key)
    return result


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if value in _INFINITIES:
        raise _Refused(f"the number {literal[:40]} is not finite as a float")
    return value


_INFINITIES = (math.inf, -math.inf)
# one decoder for every call: building one (and its C scanner) costs more than a small parse
_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant, parse_float=_finite_float
)


def _check_text(value: Any, what: str) -> None:
    """Refuse a decoded value holding a lone surrogate (it cannot be written as UTF-8)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{what}: a string holds a lone UTF-16 surrogate") from exc


def parse_json(
    data: bytes | str,
    *,
    what: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """Parse one JSON document from outside, or raise :class:`InputError` saying why not.

    ``what`` names the input in the message (``"checkpoints.json"``, ``"line 12"``).
    """
    if len(data) > max_bytes:
        raise InputError(f"{what}: larger than {max_bytes} bytes")
    if isinstance(data, str):
        try:
            size = len(data.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise InputError(f"{what}: not UTF-8 (a lone surrogate at {exc.start})") from exc
        if size > max_bytes:
            raise InputError(f"{what}: larger than {max_bytes} bytes")
        text = data
    else:
        text = decode_utf8(data, what=what)
    _check_depth(text, max_depth, what)
    try:
        value = _DECODER.decode(text)
    except _Refused as exc:
        raise InputError(f"{what}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{what}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from exc
    except RecursionError as exc:  # only if max_depth exceeds the interpreter's limit
        raise InputError(f"{what}: JSON nested too deeply") from exc
    except ValueError as exc:  # int(): more digits than sys.get_int_max_str_digits()
        limit = sys.get_int_max_str_digits()
        raise InputError(f"{what}: a number has more than {limit} digits") from exc
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        _check_text(value, what)
    return value


def read_bounded(stream: IO[bytes], *, limit: int, what: str) -> bytes:
    """Read ``stream`` to its end, refusing (``InputError``) more than ``limit`` bytes."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"{what}: larger than {limit} bytes")
    return bytes(data)


def iter_json_lines(
    stream: IO[bytes],
    *,
    what: str,
    max_line: int = 1024 * 1024,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for each non-blank line of ``stream``, from 1.

    Memory is bounded by ``max_line``: a longer line is refused with its number, without
    reading the rest of it into memory.
    """
    number = 0
    while True:
        line = stream.readline(max_line + 2)
        if not line:
            return
        number += 1
        if len(line) > max_line + 1 or (len(line) == max_line + 1 and not line.endswith(b"\n")):
            raise InputError(f"{what} line {number}: longer than {max_line} bytes")
        if line.strip():
            yield number, parse_json(line, what=f"{what} line {number}", max_depth=max_depth)
