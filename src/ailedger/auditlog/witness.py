"""Witnesses: outside checks that a log shows everyone one append-only history.

An anchor on a chain the log's operator controls (the embedded chain) binds nobody: the
operator can rewrite the chain with the log. Witnesses can be anyone else (another
organisation, an auditor); each keeps the latest checkpoint it cosigned for every log it
follows and cosigns a new one only when a consistency proof shows it extends that one. A
verifier that requires k of n witnesses' cosignatures on a checkpoint knows at least k parties
outside the operator saw that very history.

Standards: C2SP tlog-cosignature (Ed25519 ``cosignature/v1``, signature type ``0x04``) and C2SP
tlog-witness (the ``add-checkpoint`` HTTP call), on C2SP signed notes and checkpoints.

- :func:`cosign`, :func:`verify_cosignatures`, :func:`verify_cosigned` (k of n),
  :func:`parse_witness_key`: the cosignature format;
- :class:`Witness` and :class:`WitnessServer`: a witness and its HTTP interface;
- :func:`cosign_checkpoint` with :class:`WitnessEndpoint`: a log collecting cosignatures.
"""

from __future__ import annotations

from ailedger.auditlog._cosignature import (
    ALG_COSIGNATURE_V1,
    Cosignature,
    CosignedCheckpoint,
    WitnessVerifier,
    cosign,
    cosignature_message,
    parse_witness_key,
    split_note,
    verify_cosignatures,
    verify_cosigned,
    witness_key_id,
)
from ailedger.auditlog._witness_client import (
    WitnessConflict,
    WitnessEndpoint,
    WitnessRefused,
    cosign_checkpoint,
    request_cosignature,
)
from ailedger.auditlog._witness_http import WitnessServer
from ailedger.auditlog._witness_state import (
    MAX_BODY,
    MAX_PROOF_LINES,
    Witness,
    WitnessReply,
    load_witness_key,
)

__all__ = [
    "ALG_COSIGNATURE_V1",
    "MAX_BODY",
    "MAX_PROOF_LINES",
    "Cosignature",
    "CosignedCheckpoint",
    "Witness",
    "WitnessConflict",
    "WitnessEndpoint",
    "WitnessRefused",
    "WitnessReply",
    "WitnessServer",
    "WitnessVerifier",
    "cosign",
    "cosign_checkpoint",
    "cosignature_message",
    "load_witness_key",
    "parse_witness_key",
    "request_cosignature",
    "split_note",
    "verify_cosignatures",
    "verify_cosigned",
    "witness_key_id",
]
