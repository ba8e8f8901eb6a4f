"""Signed notes with Ed25519 keys, after C2SP signed-note (https://c2sp.org/signed-note).

A signed note is a UTF-8 text ending in a newline, a blank line, then one or more signature
lines ``— <key name> <base64(key ID || signature)>``. A key is named by its key name and a 32-bit
key ID; for Ed25519 (signature type ``0x01``) the key ID is the first four bytes, big-endian, of
``SHA-256(key name || 0x0A || 0x01 || 32-byte public key)``. A verifier key is written
``<name>+<key ID as 8 hex digits>+<base64(0x01 || public key)>``, the form Go's
``golang.org/x/mod/sumdb/note`` uses, so keys and notes interoperate with the Go tools.

Opening a note follows the spec's rules: signatures from unknown keys are ignored; every
signature from a known key must verify (else the whole note is rejected); at least one must.
Malformed notes raise :class:`InputError`; bad or missing signatures :class:`SignatureError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ailedger.errors import InputError, SignatureError

__all__ = [
    "ALG_ED25519",
    "MAX_SIGNATURES",
    "NoteVerifier",
    "OpenedNote",
    "check_key_name",
    "key_id",
    "open_note",
    "parse_verifier_key",
    "sign_note",
    "split_note",
    "verifier_key",
]

ALG_ED25519 = 0x01
#: Notes with more signature lines than this are rejected as malformed (the spec asks for at
#: least 16; Go's implementation allows 100).
MAX_SIGNATURES = 100

_SIG_PREFIX = "— "
_KEY_ID_SIZE = 4
_ED25519_KEY_SIZE = 32
_ED25519_SIG_SIZE = 64
_HEX_KEY_ID = re.compile(r"[0-9a-fA-F]{8}", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # C0 controls but newline (spec step 1)


@dataclass(frozen=True)
class NoteVerifier:
    """A trusted Ed25519 note key: its name, key ID and public key."""

    name: str
    key_id: int
    public_key: Ed25519PublicKey

    @classmethod
    def from_public_key(cls, name: str, public_key: Ed25519PublicKey) -> NoteVerifier:
        """Build the verifier for ``public_key`` under key name ``name``."""
        return cls(name=name, key_id=key_id(name, public_key), public_key=public_key)

    def verifier_key(self) -> str:
        """Return the ``<name>+<hex key ID>+<base64 key>`` string of this key."""
        return verifier_key(self.name, self.public_key)

    def _raw(self) -> bytes:
        return self.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


class OpenedNote(NamedTuple):
    """The result of :func:`open_note`: the verified text and who signed it."""

    text: str
    signers: tuple[str, ...]


def check_key_name(name: str) -> None:
    """Raise :class:`InputError` unless ``name`` is a valid key name.

    A key name is non-empty UTF-8 and holds no Unicode space, no ``+`` and no control character.
    """
    if not isinstance(name, str) or not name:
        raise InputError("a note key name must be a non-empty string")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, as from undecodable bytes in argv
        raise InputError(f"note key name {name!r} is not valid UTF-8") from exc
    for ch in name:
        if ch == "+" or ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise InputError(f"note key name {name!r} contains {ch!r}")


def key_id(name: str, public_key: Ed25519PublicKey) -> int:
    """Return the 32-bit key ID of an Ed25519 note key (``SHA-256(name\\n 0x01 key)[:4]``)."""
    check_key_name(name)
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return _key_id(name, raw)


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """Return the verifier key string ``<name>+<8 hex digits>+<base64(0x01 || key)>``."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    kid = key_id(name, public_key)
    encoded = base64.b64encode(bytes([ALG_ED25519]) + raw).decode("ascii")
    return f"{name}+{kid:08x}+{encoded}"


def parse_verifier_key(vkey: str) -> NoteVerifier:
    """Parse a verifier key string; the key ID must match the name and key it names."""
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise InputError("a verifier key has the form <name>+<hex key ID>+<base64 key>")
    name, hex_id, encoded = parts
    check_key_name(name)
    if _HEX_KEY_ID.fullmatch(hex_id) is None:
        raise InputError(f"verifier key ID must be 8 hex digits, got {hex_id!r}")
    key = strict_b64decode(encoded, "verifier key")
    if len(key) != 1 + _ED25519_KEY_SIZE or key[0] != ALG_ED25519:
        raise InputError("verifier key is not an Ed25519 key (type 0x01 and 32 bytes)")
    raw = key[1:]
    if _key_id(name, raw) != int(hex_id, 16):
        raise InputError(f"verifier key ID {hex_id} does not match the key and name {name!r}")
    return NoteVerifier(
        name=name, key_id=int(hex_id, 16), public_key=Ed25519PublicKey.from_public_bytes(raw)
    )


def sign_note(text: str | bytes, name: str, private_key: Ed25519PrivateKey) -> bytes:
    """Sign ``text`` with ``private_key`` under key name ``name``; return the signed note bytes.

    ``text`` must end in a newline and hold no control character other than newline.
    """
    body = _text_bytes(text)
    check_key_name(name)
    if not body.endswith(b"\n"):
        raise InputError("note text must end with a newline")
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    signature = _key_id(name, raw).to_bytes(_KEY_ID_SIZE, "big") + private_key.sign(body)
    line = f"{_SIG_PREFIX}{name} {base64.b64encode(signature).decode('ascii')}\n"
    return body + b"\n" + line.encode("utf-8")


def split_note(note: bytes | str) -> tuple[str, list[tuple[str, int, bytes, str]]]:
    """Split a signed note into its text and its signature lines, checking the format only.

    Returns ``(text, [(name, key ID, signature bytes, line), ...])`` (C2SP signed-note steps
    1 to 3 of :func:`open_note`); raises :class:`InputError`.
    """
    decoded = _utf8_text(note, "a signed note")
    split = decoded.rfind("\n\n")
    if split < 0:
        raise InputError("a signed note needs a blank line before its signatures")
    text, block = decoded[: split + 1], decoded[split + 2 :]
    if not block or not block.endswith("\n"):
        raise InputError("a signed note must end with signature lines, each ending in newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise InputError(f"a signed note may carry at most {MAX_SIGNATURES} signatures")
    parsed = []
    for line in lines:
        name, kid, signature = _parse_signature_line(line)
        parsed.append((name, kid, signature, line + "\n"))
    return text, parsed


def open_note(note: bytes | str, verifiers: Iterable[NoteVerifier]) -> OpenedNote:
    """Verify a signed note against trusted keys; return its text and the names that signed it.

    Steps (C2SP signed-note):

    1. The note is UTF-8 with no control character other than newline.
    2. The text ends at the last blank line; the signature block after it ends with a newline.
    3. Each signature line is ``— <name> <base64>``, a valid name, canonical base64 of at least
       five bytes; there are at most :data:`MAX_SIGNATURES` lines.
    4. A signature whose (name, key ID) is unknown is ignored.
    5. A signature from a known key must verify over the text, else :class:`SignatureError`.
    6. At least one known key must have signed, else :class:`SignatureError`.
    """
    known = _verifier_map(verifiers)
    # 1. to 3.
    text, parsed = split_note(note)
    body = text.encode("utf-8")
    signers: list[str] = []
    for name, kid, signature, _ in parsed:
        verifier = known.get((name, kid))
        # 4.
        if verifier is None:
            continue
        # 5.
        try:
            if len(signature) != _ED25519_SIG_SIZE:
                raise InvalidSignature
            verifier.public_key.verify(signature, body)
        except InvalidSignature as exc:
            raise SignatureError(f"invalid signature for key {name}+{kid:08x}") from exc
        if name not in signers:
            signers.append(name)
    # 6.
    if not signers:
        raise SignatureError("the note carries no signature from a trusted key")
    return OpenedNote(text=text, signers=tuple(signers))


def _key_id(name: str, raw_public_key: bytes) -> int:
    digest = hashlib.sha256(
        name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + raw_public_key
    ).digest()
    return int.from_bytes(digest[:_KEY_ID_SIZE], "big")


def _verifier_map(verifiers: Iterable[NoteVerifier]) -> dict[tuple[str, int], NoteVerifier]:
    known: dict[tuple[str, int], NoteVerifier] = {}
    for v in verifiers:
        slot = (v.name, v.key_id)
        other = known.get(slot)
        if other is not None and other._raw() != v._raw():
            raise InputError(
                f"two different trusted keys share the name and ID {v.name}+{v.key_id:08x}"
            )
        known[slot] = v
    return known


def _parse_signature_line(line: str) -> tuple[str, int, bytes]:
    if not line.startswith(_SIG_PREFIX):
        raise InputError(f"signature line does not start with an em dash and space: {line!r}")
    name, sep, encoded = line[len(_SIG_PREFIX) :].partition(" ")
    if not sep:
        raise InputError(f"signature line has no signature: {line!r}")
    check_key_name(name)
    raw = strict_b64decode(encoded, "signature")
    if len(raw) < _KEY_ID_SIZE + 1:
        raise InputError(f"signature by {name} is too short ({len(raw)} bytes)")
    return name, int.from_bytes(raw[:_KEY_ID_SIZE], "big"), raw[_KEY_ID_SIZE:]


def strict_b64decode(encoded: str, what: str) -> bytes:
    """Decode standard, padded base64, accepting only its one canonical spelling."""
    try:
        raw = base64.b64decode(encoded.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise InputError(f"{what} is not valid base64") from exc
    if not raw or base64.b64encode(raw).decode("ascii") != encoded:
        raise InputError(f"{what} is not canonical base64")
    return raw


def _text_bytes(text: str | bytes) -> bytes:
    return _utf8_text(text, "note text").encode("utf-8")


def _utf8_text(value: str | bytes, what: str) -> str:
    """Return ``value`` as text after checking it is UTF-8 with newline as its only control."""
    try:
        decoded = value if isinstance(value, str) else bytes(value).decode("utf-8")
        decoded.encode("utf-8")
    except UnicodeError as exc:
        raise InputError(f"{what} must be valid UTF-8") from exc
    _check_no_controls(decoded)
    return decoded


def _check_no_controls(text: str) -> None:
    found = _CONTROL.search(text)
    if found is not None:
        raise InputError(f"a note must not contain the control character {found.group()!r}")
