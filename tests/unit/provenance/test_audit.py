"""Registrations, grants and revocations are appended to the workspace's audit log."""

from __future__ import annotations

import json
from pathlib import Path

from ailedger.auditlog.log import AuditLog
from ailedger.crypto import envelope
from ailedger.provenance.registry import register_artifact
from ailedger.provenance.sharing import grant, revoke
from tests.unit.provenance.conftest import Party


def events(party: Party) -> list[dict[str, object]]:
    with AuditLog.for_workspace(party.ws, writable=False) as log:
        return [json.loads(data) for _, data in log.entries()]


def test_register_grant_revoke_are_logged(alice: Party, tmp_path: Path) -> None:
    AuditLog.for_workspace(alice.ws).close()
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n")
    reg = register_artifact(alice.ws, alice.ledger, path, kind="dataset", signing_key=alice.key)
    key = envelope.generate_private_key().public_key()
    granted = grant(alice.ws, alice.ledger, reg.digest, key)
    revoked = revoke(alice.ws, alice.ledger, reg.digest, key)

    logged = events(alice)
    assert [e["kind"] for e in logged] == [
        "provenance.register",
        "provenance.grant",
        "provenance.revoke",
    ]
    fields = [e["fields"] for e in logged]
    assert isinstance(fields[0], dict)
    assert fields[0]["digest"] == "0x" + reg.digest.hex()
    assert fields[0]["name"] == "data.csv"
    assert fields[0]["chain_id"] == alice.ledger.chain_id
    raw = envelope.dump_public_key(key, encoding="raw").hex()
    assert fields[1] == {
        "chain_id": alice.ledger.chain_id,
        "resource": "0x" + reg.digest.hex(),
        "recipient": raw,
        "tx_hash": granted.tx_hash,
        "block_number": granted.block_number,
    }
    assert isinstance(fields[2], dict)
    assert fields[2]["tx_hash"] == revoked.tx_hash


def test_a_workspace_without_a_log_gets_none(alice: Party, tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n")
    register_artifact(alice.ws, alice.ledger, path, kind="dataset", signing_key=alice.key)
    assert not alice.ws.log_path.exists()
