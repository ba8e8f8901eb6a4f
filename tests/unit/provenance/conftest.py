"""Workspaces of several parties on one chain of the chosen backend (embedded or anvil)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.crypto.keys import generate_signing_key
from ailedger.ledger import Keystore, Ledger
from ailedger.ledger.provenance import ProvenanceRegistry
from ailedger.workspace import Workspace
from tests.conftest import Chain

PASSPHRASE = "provenance tests"


def passphrase() -> str:
    return PASSPHRASE


@dataclass
class Party:
    """One organisation: its workspace, a ledger signing as its account, its signing key."""

    ws: Workspace
    ledger: Ledger
    key: Ed25519PrivateKey

    @property
    def registry(self) -> ProvenanceRegistry:
        address = self.ws.contract_address(self.ledger.chain_id, ProvenanceRegistry.NAME)
        return ProvenanceRegistry(ledger=self.ledger, address=address)


@pytest.fixture
def make_party(chain: Chain, tmp_path: Path) -> Callable[[str], Party]:
    """Make parties sharing one ProvenanceRegistry, deployed by the first one."""
    deployed: dict[str, str] = {}

    def make(name: str) -> Party:
        path = tmp_path / name
        Keystore.create(path / "keys" / "ethereum.json", PASSPHRASE, unsafe_fast_kdf=True)
        generate_signing_key(path / "keys" / "ed25519.pem", PASSPHRASE)
        ws = Workspace(path=path, config={"chain": {"backend": "embedded"}})
        ws.blobs_dir.mkdir()
        ledger = chain.ledger(ws.signer(passphrase))
        if not deployed:
            deployed["address"] = ProvenanceRegistry.deploy(ledger).address
        ws.config["contracts"] = {
            str(ledger.chain_id): {ProvenanceRegistry.NAME: deployed["address"]}
        }
        ws.save()
        return Party(ws=ws, ledger=ledger, key=ws.signing_key(passphrase))

    return make


@pytest.fixture
def alice(make_party: Callable[[str], Party]) -> Party:
    return make_party("alice")
