"""The tamper-evident audit trail: RFC 6962 Merkle log, C2SP checkpoints, notes and proofs."""

from __future__ import annotations

from ailedger.auditlog.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from ailedger.auditlog.note import (
    NoteVerifier,
    open_note,
    parse_verifier_key,
    sign_note,
    verifier_key,
)
from ailedger.auditlog.proof import Receipt, verify_receipt

__all__ = [
    "Checkpoint",
    "NoteVerifier",
    "Receipt",
    "open_checkpoint",
    "open_note",
    "parse_verifier_key",
    "sign_checkpoint",
    "sign_note",
    "verifier_key",
    "verify_receipt",
]
