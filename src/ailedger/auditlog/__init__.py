"""The tamper-evident audit trail: RFC 6962 Merkle log, C2SP checkpoints, notes and proofs."""

from __future__ import annotations

from ailedger.auditlog.anchoring import Anchorer, AnchorService, chain_anchors
from ailedger.auditlog.audited import audited
from ailedger.auditlog.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from ailedger.auditlog.events import record_event
from ailedger.auditlog.log import AuditLog, LogEntry
from ailedger.auditlog.note import (
    NoteVerifier,
    open_note,
    parse_verifier_key,
    sign_note,
    verifier_key,
)
from ailedger.auditlog.proof import Receipt, verify_receipt
from ailedger.auditlog.records import decision_record
from ailedger.auditlog.verify import (
    AnchorClaim,
    DirectorySource,
    HttpSource,
    VerifyReport,
    verify_export,
    verify_stored,
)
from ailedger.auditlog.witness import (
    Witness,
    WitnessServer,
    WitnessVerifier,
    cosign,
    parse_witness_key,
    verify_cosigned,
)

__all__ = [
    "AnchorClaim",
    "AnchorService",
    "Anchorer",
    "AuditLog",
    "Checkpoint",
    "DirectorySource",
    "HttpSource",
    "LogEntry",
    "NoteVerifier",
    "Receipt",
    "VerifyReport",
    "Witness",
    "WitnessServer",
    "WitnessVerifier",
    "audited",
    "chain_anchors",
    "cosign",
    "decision_record",
    "open_checkpoint",
    "open_note",
    "parse_verifier_key",
    "parse_witness_key",
    "record_event",
    "sign_checkpoint",
    "sign_note",
    "verifier_key",
    "verify_cosigned",
    "verify_export",
    "verify_receipt",
    "verify_stored",
]
