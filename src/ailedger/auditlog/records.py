"""Log entries: canonical bytes, salted commitments of sensitive fields, decision records.

An entry is the RFC 8785 canonical JSON of a record (a JSON object). A field marked sensitive
does not enter the tree: it is replaced by ``{"commitment": "sha256:<hex>"}`` where the hash is
``SHA-256(DOMAIN ‖ salt ‖ canonical JSON of the value)`` with a fresh 32-byte salt. The value
and its salt are kept off the tree, encrypted under a per-record key, so destroying that key and
the salt (crypto-shredding) erases the value while every Merkle proof still verifies, and the
commitment reveals nothing about it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from ailedger._input import DEFAULT_MAX_DEPTH, parse_json
from ailedger.crypto.canonical import canonical_json
from ailedger.errors import InputError, VerificationError

__all__ = [
    "COMMITMENT_DOMAIN",
    "MAX_ENTRY_BYTES",
    "MAX_RECORD_DEPTH",
    "PreparedEntry",
    "commit_value",
    "count_members",
    "decision_record",
    "encode_json_records",
    "encode_record",
    "json_structure",
    "open_commitment",
    "prepare",
]

#: domain separation for commitments, so they never collide with any other SHA-256 use
COMMITMENT_DOMAIN = b"ailedger/commitment/v1\n"
#: entries travel in C2SP entry bundles, whose length prefix is 16 bits
MAX_ENTRY_BYTES = 65535
#: deepest nesting of objects and arrays in a record (what any reader of outside JSON accepts)
MAX_RECORD_DEPTH = DEFAULT_MAX_DEPTH


class PreparedEntry(NamedTuple):
    """An entry's bytes and, for each sensitive field, its salt and canonical plaintext.

    A named tuple rather than a frozen dataclass: one is made per logged record, and a frozen
    dataclass costs about a microsecond more to build.
    """

    data: bytes
    private: tuple[tuple[str, bytes, bytes], ...]  # (field, salt, canonical value)


def encode_record(record: Mapping[str, Any]) -> bytes:
    """RFC 8785 canonical bytes of a record (a JSON object), at most 64 KiB and nested at most
    :data:`MAX_RECORD_DEPTH` levels deep (so that any reader can parse it back)."""
    if type(record) is not dict and not isinstance(record, Mapping):
        raise InputError(f"a log record must be a JSON object, got {type(record).__name__}")
    out = canonical_json(record)
    if len(out) > MAX_ENTRY_BYTES:
        raise InputError(f"a log entry is at most {MAX_ENTRY_BYTES} bytes, this one {len(out)}")
    if out.count(b"[") + out.count(b"{") > MAX_RECORD_DEPTH:  # else it cannot be too deep
        try:
            parse_json(out, what="a log record", max_bytes=MAX_ENTRY_BYTES)
        except InputError as exc:
            raise InputError(
                f"a log record is nested deeper than {MAX_RECORD_DEPTH} levels"
            ) from exc
    return out


# The C encoder's sorted compact output, as canonical_json makes it for plain values (built
# with the same arguments: no circular-reference markers, which a decoded value cannot have).
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_C_ITERENCODE = (
    _c_make_encoder(None, None, json.encoder.encode_basestring, None, ":", ",", True, False, False)
    if _c_make_encoder is not None
    else None
)
# floats that Python's repr prints as ECMAScript does, unless whole (canonical_json's rule)
_FLOAT_MIN, _FLOAT_MAX = 1e-4, 1e16
# an integer that may exceed 2**53 - 1 has 16 digits in a row (so may a string: no matter);
# found with a translation (every digit to "0") and a plain search, ten times a regex's speed
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_SIXTEEN_DIGITS = b"0" * 16
# where a float may be in an entry: a digit before a point or an exponent
_FLOAT_LIKE = re.compile(rb"[0-9][.e]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_NOT_STRUCTURE = bytes(range(256)).translate(None, b'"[]{}:')


def json_structure(data: bytes) -> bytes:
    """The brackets and colons of valid JSON ``data`` that lie outside its strings, in order.

    At C speed: escapes dropped (in valid JSON a backslash only begins an escape, inside a
    string), everything but quotes, brackets and colons dropped, then adjacent quotes (a
    string with none of those in it, or two strings merged into one: nothing kept lay
    between them), then what lies between each remaining pair of quotes.
    """
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = data.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' not in kept:
        return kept
    return b"".join(kept.split(b'"')[::2])


def count_members(data: bytes) -> int:
    """How many object members (``name: value``) valid JSON ``data`` holds, in all objects at
    any depth."""
    return json_structure(data).count(b":")


def encode_json_records(body: bytes) -> list[bytes] | None:
    """The entries of ``body``, a JSON array of records, each byte for byte what
    :func:`encode_record` makes of it; None when that is not shown cheaply (then parse it
    with :func:`ailedger._input.parse_json` and encode each record, which says what is wrong).

    The caller has bounded ``body``'s size and nesting (``parse_json``'s limits). None for
    anything ``parse_json`` refuses (not UTF-8 or not JSON, a duplicate name, ``NaN``, a
    number that overflows, a lone surrogate), for an item that is not an object and for an
    entry over :data:`MAX_ENTRY_BYTES`.

    About half the CPU per record of parse_json and encode_record: the decoder runs
    without a hook per object (duplicate names are found by counting members in the body and
    in what was decoded, :func:`count_members`), and each record takes the C encoder straight
    away; whether its output is already RFC 8785 (ASCII member names, integers within
    2**53 - 1, floats that print as ECMAScript prints them, see
    :mod:`ailedger.crypto.canonical`) is shown on the whole batch at once, and a record for
    which it is not is encoded by :func:`encode_record`.
    """
    encode = _C_ITERENCODE
    if encode is None:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        return None
    odd_floats: list[float] = []

    def number(literal: str) -> float:
        value = float(literal)
        if not _FLOAT_MIN <= abs(value) < _FLOAT_MAX or value.is_integer():
            if math.isinf(value):
                raise ValueError(f"{literal[:40]} is not finite")
            odd_floats.append(value)
        return value

    decoder = json.JSONDecoder(parse_constant=_no_constant, parse_float=number)
    try:
        records = decoder.decode(text)
    except (ValueError, RecursionError):  # JSONDecodeError, a refused number, a huge integer
        return None
    if type(records) is not list:
        return None
    for record in records:
        if type(record) is not dict:
            return None
    # the whole array in one call of the C encoder: "[" + ",".join(entries) + "]", where each
    # entry begins with "{" and ends with "}"; when "},{" occurs only between entries, it
    # splits them (a newline never occurs in the encoder's output: strings escape it)
    whole = "".join(encode(records, 0)).encode()
    datas = whole[1:-1].replace(b"},{", b"}\n{").split(b"\n") if records else []
    if len(datas) != len(records):  # some record holds "},{": encode one by one
        datas = ["".join(encode(record, 0)).encode() for record in records]
    if max(map(len, datas), default=0) > MAX_ENTRY_BYTES:
        return None
    if count_members(whole) != count_members(body):
        return None
    if odd_floats or not whole.isascii() or _SIXTEEN_DIGITS in whole.translate(_DIGITS_AS_ZERO):
        for at, data in enumerate(datas):  # the rare case: the records to encode again
            if (
                not data.isascii()
                or _SIXTEEN_DIGITS in data.translate(_DIGITS_AS_ZERO)
                or (odd_floats and _FLOAT_LIKE.search(data) is not None)
            ):
                try:
                    datas[at] = encode_record(records[at])
                except InputError:
                    return None
    return datas


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def commit_value(value: Any, salt: bytes) -> tuple[str, bytes]:
    """Return (commitment string, canonical value bytes) for ``value`` under ``salt``."""
    canonical = canonical_json(value)
    digest = hashlib.sha256(COMMITMENT_DOMAIN + salt + canonical).hexdigest()
    return f"sha256:{digest}", canonical


def open_commitment(commitment: str, salt: bytes, canonical: bytes) -> Any:
    """Check that ``canonical`` under ``salt`` opens ``commitment``; return the decoded value."""
    digest = hashlib.sha256(COMMITMENT_DOMAIN + salt + canonical).hexdigest()
    if not hmac.compare_digest(f"sha256:{digest}", commitment):
        raise VerificationError("a private value does not open its commitment in the log")
    return json.loads(canonical)


def prepare(record: Mapping[str, Any], sensitive: Collection[str] = ()) -> PreparedEntry:
    """Replace the ``sensitive`` top-level fields by commitments and encode the record.

    A field named twice in ``sensitive`` is committed once.
    """
    if not sensitive:
        return PreparedEntry(encode_record(record), ())
    if not isinstance(record, Mapping):
        raise InputError(f"a log record must be a JSON object, got {type(record).__name__}")
    public = dict(record)
    private = []
    for name in dict.fromkeys(sensitive):
        if name not in public:
            raise InputError(f"sensitive field {name!r} is not in the record")
        salt = os.urandom(32)
        commitment, canonical = commit_value(public[name], salt)
        public[name] = {"commitment": commitment}
        private.append((name, salt, canonical))
    return PreparedEntry(encode_record(public), tuple(private))


def decision_record(
    *,
    model: str,
    input: Any,
    output: Any,
    actor: str,
    timestamp: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A decision record: which model, on what input, said what, for whom, when.

    ``input`` is always committed (pass ``sensitive=("input",)`` when appending; see
    :meth:`ailedger.auditlog.AuditLog.append_decision`). ``timestamp`` defaults to now (UTC,
    RFC 3339).
    """
    if not isinstance(model, str) or not model:
        raise InputError("a decision names its model by digest, e.g. 'sha256:<hex>'")
    return {
        "type": "decision",
        "model": model,
        "input": input,
        "output": output,
        "actor": actor,
        "time": timestamp or datetime.now(UTC).isoformat(timespec="microseconds"),
        "metadata": dict(metadata or {}),
    }
