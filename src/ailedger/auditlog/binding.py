"""Who anchors a log: a statement signed with the log's own key (a C2SP signed note).

An anchor in an ``AnchorRegistry`` is a claim by the account that sent it, and anyone can send
one for any origin. A verifier therefore reads only the anchors of the log's operator, and
must learn that account from someone it trusts. The binding is that statement, signed by the
log's Ed25519 key (the key the verifier already holds to check checkpoints)::

    ailedger/anchor-binding/v1
    origin <the log's origin>
    anchors <chain id> <registry address> <operator address>
    ...

one ``anchors`` line per chain the log is anchored on. ``log export`` writes it to
``ailedger/binding`` beside the checkpoints; ``verify`` opens it with the verifier key and reads
the anchors of that operator in that registry, on whichever chain it can reach. Its first line
differs from any checkpoint's second line (a decimal size), so a binding is never taken for a
checkpoint and the other way round.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog.note import NoteVerifier, open_note, sign_note
from ailedger.errors import InputError, SignatureError, VerificationError

__all__ = [
    "BINDING_HEADER",
    "BINDING_PATH",
    "AnchorBinding",
    "ChainAnchoring",
    "open_binding",
    "sign_binding",
]

BINDING_HEADER = "ailedger/anchor-binding/v1"
#: where an export holds the binding, beside ``checkpoint``
BINDING_PATH = "ailedger/binding"
_MAX_CHAINS = 32
_MAX_NOTE = 16 * 1024
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}", re.ASCII)
_DECIMAL = re.compile(r"[1-9][0-9]{0,19}", re.ASCII)


@dataclass(frozen=True, kw_only=True)
class ChainAnchoring:
    """On chain ``chain_id``, the log is anchored in ``registry`` by account ``operator``."""

    chain_id: int
    registry: str
    operator: str

    def to_json(self) -> dict[str, object]:
        return {"chain_id": self.chain_id, "registry": self.registry, "operator": self.operator}


@dataclass(frozen=True, kw_only=True)
class AnchorBinding:
    """The log ``origin`` and where (and by whom) it is anchored."""

    origin: str
    chains: tuple[ChainAnchoring, ...]

    def to_text(self) -> str:
        lines = [BINDING_HEADER, f"origin {self.origin}"]
        lines += [f"anchors {c.chain_id} {c.registry} {c.operator}" for c in self.chains]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> AnchorBinding:
        """Parse the binding's note text; raises :class:`InputError` when malformed."""
        if not text.endswith("\n"):
            raise InputError("an anchor binding must end with a newline")
        lines = text[:-1].split("\n")
        if lines[0] != BINDING_HEADER:
            raise InputError(f"not an anchor binding (first line {lines[0][:60]!r})")
        if len(lines) < 2 or not lines[1].startswith("origin ") or len(lines[1]) == 7:
            raise InputError("an anchor binding names its origin on its second line")
        if len(lines) - 2 > _MAX_CHAINS:
            raise InputError(f"an anchor binding names at most {_MAX_CHAINS} chains")
        chains: list[ChainAnchoring] = []
        for number, line in enumerate(lines[2:], 3):
            parts = line.split(" ")
            if (
                len(parts) != 4
                or parts[0] != "anchors"
                or _DECIMAL.fullmatch(parts[1]) is None
                or _ADDRESS.fullmatch(parts[2]) is None
                or _ADDRESS.fullmatch(parts[3]) is None
            ):
                raise InputError(
                    f"anchor binding line {number}: expected "
                    "'anchors <chain id> <registry address> <operator address>'"
                )
            chain_id = int(parts[1])
            if any(c.chain_id == chain_id for c in chains):
                raise InputError(f"anchor binding names chain {chain_id} twice")
            chains.append(ChainAnchoring(chain_id=chain_id, registry=parts[2], operator=parts[3]))
        return cls(origin=lines[1][len("origin ") :], chains=tuple(chains))

    def for_chain(self, chain_id: int) -> ChainAnchoring | None:
        return next((c for c in self.chains if c.chain_id == chain_id), None)


def sign_binding(binding: AnchorBinding, key: Ed25519PrivateKey) -> bytes:
    """The binding as a signed note, signed under the log's key name (its origin)."""
    return sign_note(binding.to_text(), binding.origin, key)


def open_binding(note: bytes, verifier: NoteVerifier) -> AnchorBinding:
    """Open a binding signed by the log's key ``verifier``, for the log it names.

    Raises :class:`VerificationError` (or :class:`SignatureError`) when it is malformed, not
    signed by that key, or about another log.
    """
    if len(note) > _MAX_NOTE:
        raise VerificationError(f"the anchor binding is larger than {_MAX_NOTE} bytes")
    try:
        opened = open_note(note, [verifier])
        binding = AnchorBinding.parse(opened.text)
    except SignatureError as exc:
        raise SignatureError(f"the anchor binding: {exc}") from exc
    except InputError as exc:
        raise VerificationError(f"the anchor binding is malformed: {exc}") from exc
    if binding.origin != verifier.name:
        raise VerificationError(
            f"the anchor binding is for log {binding.origin!r}, not {verifier.name!r}"
        )
    return binding
