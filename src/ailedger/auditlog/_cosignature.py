"""Witness cosignatures, after C2SP tlog-cosignature (https://c2sp.org/tlog-cosignature), Ed25519.

A cosignature is a signed-note signature line on a checkpoint, ``— <witness name>
base64(key ID || timestamp || signature)``:

- the key ID is ``SHA-256(name || 0x0A || 0x04 || 32-byte Ed25519 public key)[:4]`` (signature
  type ``0x04``, "timestamped Ed25519 checkpoint cosignature", C2SP signed-note);
- the timestamp is a big-endian u64 of POSIX seconds, below 2^63;
- the Ed25519 signature covers ``cosignature/v1\\n``, ``time <timestamp>\\n`` and then the
  whole checkpoint text (its final newline included, its signature lines not).

A cosignature states that, at that time, this was the largest consistent tree head the witness
had seen for the log. A witness verifier key is written like a note key, with type ``0x04``:
``<name>+<hex key ID>+<base64(0x04 || public key)>``.

Verification (:func:`verify_cosignatures`) follows signed-note's rules: lines from unknown
(name, key ID) pairs are ignored; a line from a known witness must verify or the whole note is
refused (:class:`SignatureError`). :func:`verify_cosigned` adds the k-of-n policy.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ailedger.auditlog.checkpoint import Checkpoint
from ailedger.auditlog.note import (
    check_key_name,
    split_note,
    strict_b64decode,
)
from ailedger.errors import InputError, SignatureError, VerificationError

__all__ = [
    "ALG_COSIGNATURE_V1",
    "Cosignature",
    "CosignedCheckpoint",
    "WitnessVerifier",
    "cosign",
    "cosignature_message",
    "parse_witness_key",
    "split_note",
    "verify_cosignatures",
    "verify_cosigned",
    "witness_key_id",
]

ALG_COSIGNATURE_V1 = 0x04
#: Timestamps are u64 on the wire but must stay below 2^63 (tlog-cosignature).
MAX_TIMESTAMP = 2**63 - 1

_KEY_ID_SIZE = 4
_TIMESTAMP_SIZE = 8
_ED25519_KEY_SIZE = 32
_ED25519_SIG_SIZE = 64
_HEX_KEY_ID = re.compile(r"[0-9a-fA-F]{8}", re.ASCII)


@dataclass(frozen=True)
class WitnessVerifier:
    """A trusted witness: its key name, cosignature key ID and Ed25519 public key."""

    name: str
    key_id: int
    public_key: Ed25519PublicKey

    @classmethod
    def from_public_key(cls, name: str, public_key: Ed25519PublicKey) -> WitnessVerifier:
        return cls(name=name, key_id=witness_key_id(name, public_key), public_key=public_key)

    def raw(self) -> bytes:
        """The 32-byte public key."""
        return self.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)

    def verifier_key(self) -> str:
        """``<name>+<hex key ID>+<base64(0x04 || key)>``, the form to hand to verifiers."""
        encoded = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self.raw()).decode("ascii")
        return f"{self.name}+{self.key_id:08x}+{encoded}"


@dataclass(frozen=True)
class Cosignature:
    """One verified cosignature: who cosigned, and when (POSIX seconds)."""

    name: str
    key_id: int
    timestamp: int


@dataclass(frozen=True)
class CosignedCheckpoint:
    """A checkpoint with the cosignatures that satisfied a witness policy."""

    checkpoint: Checkpoint
    cosignatures: tuple[Cosignature, ...]


def witness_key_id(name: str, public_key: Ed25519PublicKey | bytes) -> int:
    """``SHA-256(name || 0x0A || 0x04 || public key)[:4]`` as a big-endian integer."""
    check_key_name(name)
    raw = (
        public_key
        if isinstance(public_key, bytes)
        else public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ALG_COSIGNATURE_V1]) + raw)
    return int.from_bytes(digest.digest()[:_KEY_ID_SIZE], "big")


def parse_witness_key(vkey: str) -> WitnessVerifier:
    """Parse a witness verifier key (type ``0x04``); the key ID must match name and key."""
    if not isinstance(vkey, str):
        raise InputError("a witness key is a string <name>+<hex key ID>+<base64 key>")
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise InputError("a witness key has the form <name>+<hex key ID>+<base64 key>")
    name, hex_id, encoded = parts
    check_key_name(name)
    if _HEX_KEY_ID.fullmatch(hex_id) is None:
        raise InputError(f"witness key ID must be 8 hex digits, got {hex_id!r}")
    key = strict_b64decode(encoded, "witness key")
    if len(key) != 1 + _ED25519_KEY_SIZE or key[0] != ALG_COSIGNATURE_V1:
        raise InputError(
            f"{name}: not a witness key (want an Ed25519 cosignature/v1 key, type 0x04, "
            "as `ailedger witness key` prints)"
        )
    if witness_key_id(name, key[1:]) != int(hex_id, 16):
        raise InputError(f"witness key ID {hex_id} does not match the key and name {name!r}")
    return WitnessVerifier(
        name=name, key_id=int(hex_id, 16), public_key=Ed25519PublicKey.from_public_bytes(key[1:])
    )


def cosignature_message(text: str | bytes, timestamp: int) -> bytes:
    """The bytes an Ed25519 cosignature signs: header, time line, then the checkpoint text."""
    body = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise InputError("a cosignature timestamp is an integer")
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise InputError(f"cosignature timestamp {timestamp} is outside 0..2**63-1")
    return b"cosignature/v1\ntime %d\n" % timestamp + body


def cosign(
    checkpoint: Checkpoint | str,
    name: str,
    private_key: Ed25519PrivateKey,
    *,
    timestamp: int | None = None,
) -> str:
    """Cosign a checkpoint (or its note text) as witness ``name``; return the signature line.

    The line ends in a newline; append it to the signed checkpoint. ``timestamp`` defaults to
    now and must not be zero (tlog-witness forbids omitting it).
    """
    text = checkpoint.to_text() if isinstance(checkpoint, Checkpoint) else checkpoint
    Checkpoint.parse(text)  # only well-formed checkpoints are cosigned
    when = int(time.time()) if timestamp is None else timestamp
    if when == 0:
        raise InputError("a cosignature timestamp must not be zero")
    signature = private_key.sign(cosignature_message(text, when))
    raw = (
        witness_key_id(name, private_key.public_key()).to_bytes(_KEY_ID_SIZE, "big")
        + when.to_bytes(_TIMESTAMP_SIZE, "big")
        + signature
    )
    return f"— {name} {base64.b64encode(raw).decode('ascii')}\n"


def verify_cosignatures(
    note: bytes | str, witnesses: Iterable[WitnessVerifier]
) -> list[Cosignature]:
    """Verify the cosignatures a note carries from ``witnesses``; return those that verified.

    Steps (C2SP signed-note, tlog-cosignature):

    1. The note is well formed (:func:`split_note`); its text is a checkpoint.
    2. A line whose (name, key ID) is no given witness's is ignored.
    3. A line from a given witness must hold a key ID, a timestamp below 2^63 and a 64-byte
       Ed25519 signature over the cosignature/v1 message, else :class:`SignatureError`.

    The result may be empty: the caller decides how many cosignatures it needs.
    """
    known = _witness_map(witnesses)
    # 1.
    text, lines = split_note(note)
    Checkpoint.parse(text)
    found: list[Cosignature] = []
    for name, kid, raw, _ in lines:
        witness = known.get((name, kid))
        # 2.
        if witness is None:
            continue
        # 3.
        if len(raw) != _TIMESTAMP_SIZE + _ED25519_SIG_SIZE:
            raise SignatureError(f"cosignature by {name}+{kid:08x} has {len(raw)} bytes, not 72")
        timestamp = int.from_bytes(raw[:_TIMESTAMP_SIZE], "big")
        if timestamp > MAX_TIMESTAMP:
            raise SignatureError(f"cosignature by {name}+{kid:08x}: timestamp beyond 2**63-1")
        try:
            witness.public_key.verify(raw[_TIMESTAMP_SIZE:], cosignature_message(text, timestamp))
        except InvalidSignature as exc:
            raise SignatureError(f"invalid cosignature by witness {name}+{kid:08x}") from exc
        if all((c.name, c.key_id) != (name, kid) for c in found):
            found.append(Cosignature(name=name, key_id=kid, timestamp=timestamp))
    return found


def verify_cosigned(
    note: bytes | str, witness_keys: Iterable[WitnessVerifier | str], quorum: int | None = None
) -> CosignedCheckpoint:
    """Require cosignatures from at least ``quorum`` of ``witness_keys`` (k of n) on ``note``.

    ``witness_keys`` are :class:`WitnessVerifier` objects or verifier key strings; ``quorum``
    defaults to all of them. Witnesses sharing one public key count once (an Ed25519
    cosignature does not commit to the witness name). Raises :class:`VerificationError` naming
    the witnesses that did not cosign, :class:`SignatureError` for a bad cosignature from a
    given witness, :class:`InputError` for a malformed note or policy. The log's own signature
    is not checked here: open the checkpoint with the log's key as well.
    """
    verifiers = [
        k if isinstance(k, WitnessVerifier) else parse_witness_key(k) for k in witness_keys
    ]
    distinct = {v.raw() for v in verifiers}
    if not verifiers:
        raise InputError("no witness key given")
    wanted = len(distinct) if quorum is None else quorum
    if isinstance(wanted, bool) or not isinstance(wanted, int) or not 1 <= wanted <= len(distinct):
        raise InputError(
            f"a witness quorum must be between 1 and the {len(distinct)} distinct witness "
            f"key(s) given, got {quorum}"
        )
    found = verify_cosignatures(note, verifiers)
    by_slot = {(v.name, v.key_id): v for v in verifiers}
    cosigned = {by_slot[(c.name, c.key_id)].raw() for c in found}
    text, _ = split_note(note)
    checkpoint = Checkpoint.parse(text)
    if len(cosigned) < wanted:
        missing = sorted({v.name for v in verifiers if v.raw() not in cosigned})
        raise VerificationError(
            f"checkpoint of {checkpoint.origin} at size {checkpoint.size} is cosigned by "
            f"{len(cosigned)} of the trusted witnesses, {wanted} required; missing: "
            + ", ".join(missing)
        )
    return CosignedCheckpoint(checkpoint=checkpoint, cosignatures=tuple(found))


def _witness_map(
    witnesses: Iterable[WitnessVerifier],
) -> dict[tuple[str, int], WitnessVerifier]:
    known: dict[tuple[str, int], WitnessVerifier] = {}
    for w in witnesses:
        other = known.get((w.name, w.key_id))
        if other is not None and other.raw() != w.raw():
            raise InputError(f"two different witness keys share the name and ID {w.name}")
        known[(w.name, w.key_id)] = w
    return known
