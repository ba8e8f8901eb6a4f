"""The one door to Ethereum: the only package that imports web3 or eth_*.

:class:`Ledger` talks to the embedded chain (:meth:`Ledger.embedded`, py-evm persisted in the
workspace) or to any node (:meth:`Ledger.connect`) with the same meaning;
:class:`AnchorRegistry` is the typed client of the contract that anchors log checkpoints.
"""

from __future__ import annotations

from ailedger.ledger._embedded import EMBEDDED_CHAIN_ID
from ailedger.ledger._ledger import Ledger, LedgerSettings, PendingTransaction, Receipt
from ailedger.ledger.account import Keystore, Signer
from ailedger.ledger.anchors import Anchor, AnchorRegistry, parse_bytes32
from ailedger.ledger.contracts import Artifact, load_artifact

__all__ = [
    "EMBEDDED_CHAIN_ID",
    "Anchor",
    "AnchorRegistry",
    "Artifact",
    "Keystore",
    "Ledger",
    "LedgerSettings",
    "PendingTransaction",
    "Receipt",
    "Signer",
    "load_artifact",
    "parse_bytes32",
]
