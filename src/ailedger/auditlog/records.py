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
import os
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
    "decision_record",
    "encode_record",
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
