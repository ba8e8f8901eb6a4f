"""Collecting cosignatures from witnesses for a log's checkpoint (C2SP tlog-witness, client side).

For each witness the log sends its checkpoint with a consistency proof from the size that
witness last cosigned (known from the cosignatures already stored with the log's checkpoints;
0 the first time). A ``409 Conflict`` names the size the witness holds: the log retries once
from there. Every cosignature returned is verified against the witness's configured key before
it is stored with the checkpoint, so an exported checkpoint carries its cosignatures.
"""

from __future__ import annotations

import base64
import http.client
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ailedger.auditlog._cosignature import (
    WitnessVerifier,
    split_note,
    verify_cosignatures,
)
from ailedger.auditlog._witness_state import MAX_BODY, MAX_PROOF_LINES, SIZE_CONTENT_TYPE
from ailedger.auditlog.checkpoint import Checkpoint
from ailedger.errors import (
    AiledgerError,
    InputError,
    NodeUnavailable,
    SignatureError,
    VerificationError,
)

__all__ = ["WitnessConflict", "WitnessEndpoint", "WitnessRefused", "cosign_checkpoint"]

#: A witness must answer a whole request within this many seconds.
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class WitnessEndpoint:
    """A witness the log asks to cosign: its submission prefix URL and its verifier key."""

    url: str
    verifier: WitnessVerifier

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(
                f"a witness URL must be http(s)://host[:port][/prefix], got {self.url!r}"
            )
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise InputError(f"witness URL {self.url!r}: {exc}") from exc


class WitnessRefused(VerificationError):
    """The witness answered, and refused to cosign (``status`` is its HTTP status)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class WitnessConflict(WitnessRefused):
    """``409 Conflict``: the witness last cosigned the log at ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        super().__init__(409, f"the witness last cosigned size {size}")


def request_cosignature(
    endpoint: WitnessEndpoint,
    note: bytes,
    old_size: int,
    proof: Sequence[bytes],
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[str]:
    """POST add-checkpoint; return the witness's signature lines (not yet verified).

    Raises :class:`WitnessConflict` on 409, :class:`WitnessRefused` on other refusals and
    :class:`NodeUnavailable` when the witness cannot be reached in ``timeout`` seconds.
    """
    if len(proof) > MAX_PROOF_LINES:
        raise InputError(f"a consistency proof of {len(proof)} hashes is too long to send")
    body = (
        f"old {old_size}\n".encode()
        + b"".join(base64.b64encode(h) + b"\n" for h in proof)
        + b"\n"
        + note
    )
    status, content_type, reply = _post(endpoint.url.rstrip("/") + "/add-checkpoint", body, timeout)
    text = reply.decode("utf-8", "replace")
    if status == 409:
        size_text = text[:-1] if text.endswith("\n") else ""
        if not content_type.startswith(SIZE_CONTENT_TYPE) or not size_text.isdigit():
            raise WitnessRefused(409, "409 Conflict without a tree size")
        raise WitnessConflict(int(size_text))
    if status != 200:
        detail = _printable(text.splitlines()[0] if text else "")
        raise WitnessRefused(status, f"HTTP {status}" + (f": {detail}" if detail else ""))
    if not text.endswith("\n"):
        raise WitnessRefused(200, "the reply is not signature lines")
    lines = [line + "\n" for line in text[:-1].split("\n")]
    if not all(line.startswith("— ") for line in lines):
        raise WitnessRefused(200, "the reply is not signature lines")
    return lines


def cosign_checkpoint(
    log: Any,
    note: bytes,
    witnesses: Sequence[WitnessEndpoint],
    *,
    report: Callable[[str], None],
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[bytes, list[WitnessEndpoint]]:
    """Collect cosignatures on ``note`` (the log's latest signed checkpoint) from ``witnesses``.

    ``log`` is the :class:`~ailedger.auditlog.log.AuditLog` that signed ``note``. Each witness
    that refuses or cannot be reached gets one line through ``report``. Returns the stored
    cosigned note and the witnesses whose cosignature it carries (old ones included).
    """
    text, _ = split_note(note)
    checkpoint = Checkpoint.parse(text)
    history = log.checkpoints()
    cosigned: list[WitnessEndpoint] = []
    for witness in witnesses:
        name = witness.verifier.name
        if _cosigned_by(note, witness.verifier):
            cosigned.append(witness)
            continue
        old = _last_cosigned_size(history, checkpoint.size, witness.verifier)
        try:
            lines = _ask(log, witness, note, checkpoint.size, old, timeout)
        except NodeUnavailable as exc:
            report(f"witness {name} ({witness.url}) is unreachable: {exc}")
            continue
        except AiledgerError as exc:
            report(f"witness {name} ({witness.url}) refused: {_printable(str(exc))}")
            continue
        candidate = note + "".join(lines).encode()
        try:
            verified = verify_cosignatures(candidate, [witness.verifier])
        except (SignatureError, InputError) as exc:
            report(f"witness {name} ({witness.url}) sent an invalid cosignature: {exc}")
            continue
        if not verified:
            report(f"witness {name} ({witness.url}) answered without its own cosignature")
            continue
        own = [
            line
            for line in lines
            if _cosigned_by(text.encode() + b"\n" + line.encode(), witness.verifier)
        ]
        note = log.add_cosignatures(checkpoint.size, own)
        cosigned.append(witness)
    return note, cosigned


def _ask(
    log: Any, witness: WitnessEndpoint, note: bytes, size: int, old: int, timeout: float
) -> list[str]:
    tried: set[int] = set()
    while True:
        if old > size:
            raise VerificationError(
                f"the witness has cosigned size {old} of this log, more than its {size} "
                "entries: the log was rolled back (restore it, do not rewrite it)"
            )
        tried.add(old)
        proof = log.prove_consistency(old, size) if 0 < old < size else []
        try:
            return request_cosignature(witness, note, old, proof, timeout=timeout)
        except WitnessConflict as conflict:
            if conflict.size in tried or len(tried) >= 3:
                raise
            old = conflict.size
        except WitnessRefused as refused:
            if refused.status == 422 and old > 0:
                raise VerificationError(
                    f"the witness holds another history at size {old} (a fork?): {refused}"
                ) from refused
            raise


def _cosigned_by(note: bytes, verifier: WitnessVerifier) -> bool:
    try:
        return bool(verify_cosignatures(note, [verifier]))
    except (SignatureError, InputError):
        return False


def _last_cosigned_size(
    history: Sequence[tuple[int, bytes]], limit: int, verifier: WitnessVerifier
) -> int:
    for size, stored in reversed(history):
        if size <= limit and _cosigned_by(stored, verifier):
            return int(size)
    return 0


def _post(url: str, body: bytes, timeout: float) -> tuple[int, str, bytes]:
    """POST ``body``; the whole exchange must end within ``timeout`` seconds."""
    parts = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + timeout
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    conn = connection_class(parts.hostname or "", parts.port, timeout=timeout)
    path = parts.path or "/"
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "text/plain; charset=utf-8"})
        response = conn.getresponse()
        chunks: list[bytes] = []
        total = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NodeUnavailable(f"{url}: no complete answer within {timeout:g} s")
            if conn.sock is not None:
                conn.sock.settimeout(remaining)
            chunk = response.read1(16384)
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_BODY:
                raise VerificationError(f"{url}: the reply is larger than {MAX_BODY} bytes")
            chunks.append(chunk)
        return response.status, response.getheader("Content-Type") or "", b"".join(chunks)
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        raise NodeUnavailable(f"{url}: {exc}") from exc
    finally:
        conn.close()


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:200]
