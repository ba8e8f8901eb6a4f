"""Inclusion proof receipts, after C2SP tlog-proof (https://c2sp.org/tlog-proof).

A receipt is a self-contained, offline-verifiable proof that an entry is in the log::

    c2sp.org/tlog-proof@v1
    extra <base64>            (optional, opaque and unauthenticated)
    index <decimal>           (zero-based, no leading zeroes)
    <base64 hash>             (zero or more lines: the RFC 6962 §2.1.1 audit path,
    ...                        from the leaf's sibling up to the root's child)
                              (an empty line)
    <signed checkpoint>       (verbatim, see c2sp.org/tlog-checkpoint)

Lines end in a newline (U+000A). :func:`verify_receipt` checks the checkpoint's signature, then
the inclusion of the entry in the checkpointed tree.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ailedger.auditlog import _merkle
from ailedger.auditlog.checkpoint import Checkpoint, open_checkpoint
from ailedger.auditlog.note import NoteVerifier, strict_b64decode
from ailedger.errors import InputError

__all__ = ["HEADER", "Receipt", "verify_receipt"]

HEADER = "c2sp.org/tlog-proof@v1"

_EXTRA = "extra "
_INDEX = "index "
_DECIMAL = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_MAX_INDEX = 2**64 - 1
_MAX_DIGITS = len(str(_MAX_INDEX))


@dataclass(frozen=True)
class Receipt:
    """A tlog-proof: leaf ``index``, its audit path ``hashes``, the signed ``checkpoint``.

    ``checkpoint`` is the signed note bytes exactly as the log issued them; ``extra`` is optional
    application data that nothing authenticates.
    """

    index: int
    hashes: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int):
            raise InputError(f"receipt index must be an integer, got {self.index!r}")
        if not 0 <= self.index <= _MAX_INDEX:
            raise InputError(f"receipt index {self.index} is outside 0..2**64-1")
        if not isinstance(self.hashes, tuple):
            raise InputError("receipt hashes must be a tuple")
        for position, h in enumerate(self.hashes):
            if not isinstance(h, bytes) or len(h) != _merkle.HASH_SIZE:
                raise InputError(f"receipt hash #{position} must be {_merkle.HASH_SIZE} bytes")
        if not isinstance(self.checkpoint, bytes) or not self.checkpoint:
            raise InputError("receipt checkpoint must be non-empty bytes")
        if self.extra is not None and (not isinstance(self.extra, bytes) or not self.extra):
            raise InputError("receipt extra data must be non-empty bytes, or None")

    def to_bytes(self) -> bytes:
        """Return the receipt in the tlog-proof text format."""
        lines = [HEADER]
        if self.extra is not None:
            lines.append(_EXTRA + base64.b64encode(self.extra).decode("ascii"))
        lines.append(f"{_INDEX}{self.index}")
        lines.extend(base64.b64encode(h).decode("ascii") for h in self.hashes)
        head = "".join(f"{line}\n" for line in lines) + "\n"
        return head.encode("ascii") + self.checkpoint

    @classmethod
    def parse(cls, data: bytes | str) -> Receipt:
        """Parse a tlog-proof; raise :class:`InputError` when it is malformed.

        The checkpoint is kept as bytes and is neither parsed nor verified here.
        """
        try:
            raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        except UnicodeEncodeError as exc:
            raise InputError("a tlog-proof must be valid UTF-8") from exc
        lines, checkpoint = _split_head(raw)
        if not lines or lines[0] != HEADER:
            raise InputError(f"a tlog-proof starts with the line {HEADER!r}")
        pos = 1
        extra = None
        if pos < len(lines) and lines[pos].startswith(_EXTRA):
            extra = _b64(lines[pos][len(_EXTRA) :], "extra data")
            pos += 1
        if pos >= len(lines) or not lines[pos].startswith(_INDEX):
            raise InputError("a tlog-proof needs an 'index <n>' line")
        digits = lines[pos][len(_INDEX) :]
        if _DECIMAL.fullmatch(digits) is None:
            raise InputError(
                f"tlog-proof index {digits[:32]!r} is not a decimal without leading zeros"
            )
        if len(digits) > _MAX_DIGITS:  # before int(), which refuses 4,300 digits or more
            raise InputError(f"tlog-proof index {digits[:32]}... is outside 0..2**64-1")
        pos += 1
        hashes = []
        for position, line in enumerate(lines[pos:]):
            h = _b64(line, f"proof hash #{position}")
            if len(h) != _merkle.HASH_SIZE:
                raise InputError(
                    f"proof hash #{position} is {len(h)} bytes, want {_merkle.HASH_SIZE}"
                )
            hashes.append(h)
        if not checkpoint:
            raise InputError("a tlog-proof ends with a signed checkpoint")
        return cls(index=int(digits), hashes=tuple(hashes), checkpoint=checkpoint, extra=extra)


def verify_receipt(
    receipt: Receipt | bytes | str,
    verifiers: Iterable[NoteVerifier],
    *,
    entry: bytes | None = None,
    leaf_hash: bytes | None = None,
    origin: str | None = None,
) -> Checkpoint:
    """Verify that a receipt proves an entry is in a log whose checkpoint a trusted key signed.

    Give exactly one of ``entry`` (the logged bytes, hashed here as an RFC 6962 leaf) or
    ``leaf_hash``. Returns the verified checkpoint (so the caller can compare its root with an
    anchor); raises on any failure. Steps:

    1. Parse the receipt (:class:`InputError` if malformed).
    2. Open the checkpoint with the trusted keys (:class:`SignatureError`), parse it, and check
       its origin when ``origin`` is given (:class:`VerificationError`).
    3. Check the audit path leads from the leaf hash at the index to the checkpoint's root
       (:class:`ProofError` or :class:`RootMismatch`).
    """
    if entry is not None and leaf_hash is None:
        hashed = _merkle.leaf_hash(entry)
    elif leaf_hash is not None and entry is None:
        hashed = leaf_hash
    else:
        raise InputError("give exactly one of entry or leaf_hash")
    # 1.
    parsed = receipt if isinstance(receipt, Receipt) else Receipt.parse(receipt)
    # 2.
    checkpoint = open_checkpoint(parsed.checkpoint, verifiers, origin=origin)
    # 3.
    _merkle.verify_inclusion(
        parsed.hashes, parsed.index, checkpoint.size, hashed, checkpoint.root_hash
    )
    return checkpoint


def _split_head(raw: bytes) -> tuple[list[str], bytes]:
    """Split at the first empty line: return the lines before it and the bytes after it."""
    end = raw.find(b"\n\n")
    if end < 0:
        raise InputError("a tlog-proof needs an empty line before the checkpoint")
    try:
        head = raw[:end].decode("ascii")
    except UnicodeDecodeError as exc:
        raise InputError("the lines of a tlog-proof before the checkpoint must be ASCII") from exc
    return head.split("\n"), raw[end + 2 :]


def _b64(encoded: str, what: str) -> bytes:
    return strict_b64decode(encoded, f"tlog-proof {what}")
