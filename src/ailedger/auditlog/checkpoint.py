"""Log checkpoints, after C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint).

A checkpoint is the text of a signed note (see :mod:`ailedger.auditlog.note`) naming a tree head:

1. the origin, a non-empty line identifying the log (e.g. ``example.com/log42``);
2. the tree size, ASCII decimal with no leading zeroes (``0`` for the empty tree);
3. the RFC 6962 root hash at that size, in standard base64;
4. optional extension lines, each non-empty and opaque.

Every line ends in a newline. Parsing is strict: anything else is an :class:`InputError`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog.note import NoteVerifier, open_note, sign_note
from ailedger.errors import InputError, VerificationError

__all__ = ["MAX_TREE_SIZE", "Checkpoint", "open_checkpoint", "sign_checkpoint"]

#: Tree sizes are unsigned 64-bit integers in every implementation we interoperate with.
MAX_TREE_SIZE = 2**64 - 1

_HASH_SIZE = 32
_DECIMAL = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_MAX_DIGITS = len(str(MAX_TREE_SIZE))


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's origin, its size in leaves, its root hash, extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "checkpoint origin")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise InputError(f"checkpoint size must be an integer, got {self.size!r}")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise InputError(f"checkpoint size {self.size} is outside 0..2**64-1")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != _HASH_SIZE:
            raise InputError(f"checkpoint root hash must be {_HASH_SIZE} bytes")
        if not isinstance(self.extensions, tuple):
            raise InputError("checkpoint extensions must be a tuple of lines")
        for line in self.extensions:
            _check_line(line, "checkpoint extension line")

    def to_text(self) -> str:
        """Return the checkpoint's note text, ending in a newline."""
        root = base64.b64encode(self.root_hash).decode("ascii")
        lines = [self.origin, str(self.size), root, *self.extensions]
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def parse(cls, text: str | bytes) -> Checkpoint:
        """Parse a checkpoint's note text (not the signed note: see :func:`open_checkpoint`)."""
        try:
            text = text.decode("utf-8") if isinstance(text, bytes) else text
            text.encode("utf-8")
        except UnicodeError as exc:
            raise InputError("checkpoint text must be valid UTF-8") from exc
        if not text.endswith("\n"):
            raise InputError("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise InputError(f"a checkpoint has at least 3 lines, got {len(lines)}")
        origin, size_line, root_line, *extensions = lines
        if _DECIMAL.fullmatch(size_line) is None:
            raise InputError(
                f"checkpoint size {size_line[:32]!r} is not a decimal without leading zeros"
            )
        if len(size_line) > _MAX_DIGITS:  # before int(), which refuses 4,300 digits or more
            raise InputError(f"checkpoint size {size_line[:32]}... is outside 0..2**64-1")
        try:
            root = base64.b64decode(root_line.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise InputError("checkpoint root hash is not valid base64") from exc
        if len(root) != _HASH_SIZE or base64.b64encode(root).decode("ascii") != root_line:
            raise InputError(f"checkpoint root hash is not the base64 of {_HASH_SIZE} bytes")
        return cls(origin=origin, size=int(size_line), root_hash=root, extensions=tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, name: str, private_key: Ed25519PrivateKey) -> bytes:
    """Return ``checkpoint`` as a signed note, signed with ``private_key`` under ``name``.

    The spec recommends that the key name be the checkpoint's origin.
    """
    return sign_note(checkpoint.to_text(), name, private_key)


def open_checkpoint(
    note: bytes | str, verifiers: Iterable[NoteVerifier], *, origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint and parse it.

    Raises :class:`SignatureError` unless a trusted key signed it, :class:`InputError` when it
    is malformed, and :class:`VerificationError` when ``origin`` is given and differs.
    """
    opened = open_note(note, verifiers)
    checkpoint = Checkpoint.parse(opened.text)
    if origin is not None and checkpoint.origin != origin:
        raise VerificationError(f"checkpoint is for log {checkpoint.origin!r}, expected {origin!r}")
    return checkpoint


def _check_line(value: str, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise InputError(f"{what} must be a non-empty string")
    if "\n" in value:
        raise InputError(f"{what} must be a single line")
