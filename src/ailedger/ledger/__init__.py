"""The one door to Ethereum: the only package that imports web3 or eth_*.

:class:`Ledger` talks to the embedded chain (:meth:`Ledger.embedded`, py-evm persisted in the
workspace) or to any node (:meth:`Ledger.connect`) with the same meaning;
:class:`AnchorRegistry` is the typed client of the contract that anchors log checkpoints.

Names load on first use, so code that only reads settings does not pay for importing web3.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ailedger.ledger._settings import LedgerSettings

if TYPE_CHECKING:
    from ailedger.ledger._embedded import EMBEDDED_CHAIN_ID
    from ailedger.ledger._ledger import (
        FeeAdvice,
        FeeAdvisor,
        FeeHook,
        Ledger,
        PendingTransaction,
        Receipt,
    )
    from ailedger.ledger.account import Keystore, Signer
    from ailedger.ledger.anchors import Anchor, AnchorRegistry, parse_address, parse_bytes32
    from ailedger.ledger.chaindata import BlockRecord, FeeHistory, LogRecord, TxRecord
    from ailedger.ledger.contracts import Artifact, load_artifact
    from ailedger.ledger.reader import ChainReader
    from ailedger.ledger.traffic import TrafficNode, TxRequest, Wallet

__all__ = [
    "EMBEDDED_CHAIN_ID",
    "Anchor",
    "AnchorRegistry",
    "Artifact",
    "BlockRecord",
    "ChainReader",
    "FeeAdvice",
    "FeeAdvisor",
    "FeeHistory",
    "FeeHook",
    "Keystore",
    "Ledger",
    "LedgerSettings",
    "LogRecord",
    "PendingTransaction",
    "Receipt",
    "Signer",
    "TrafficNode",
    "TxRecord",
    "TxRequest",
    "Wallet",
    "load_artifact",
    "parse_address",
    "parse_bytes32",
]

_WHERE = {
    "EMBEDDED_CHAIN_ID": "ailedger.ledger._embedded",
    "Ledger": "ailedger.ledger._ledger",
    "FeeAdvice": "ailedger.ledger._ledger",
    "FeeAdvisor": "ailedger.ledger._ledger",
    "FeeHook": "ailedger.ledger._ledger",
    "PendingTransaction": "ailedger.ledger._ledger",
    "Receipt": "ailedger.ledger._ledger",
    "Keystore": "ailedger.ledger.account",
    "Signer": "ailedger.ledger.account",
    "Anchor": "ailedger.ledger.anchors",
    "AnchorRegistry": "ailedger.ledger.anchors",
    "parse_address": "ailedger.ledger.anchors",
    "parse_bytes32": "ailedger.ledger.anchors",
    "Artifact": "ailedger.ledger.contracts",
    "load_artifact": "ailedger.ledger.contracts",
    "BlockRecord": "ailedger.ledger.chaindata",
    "FeeHistory": "ailedger.ledger.chaindata",
    "LogRecord": "ailedger.ledger.chaindata",
    "TxRecord": "ailedger.ledger.chaindata",
    "ChainReader": "ailedger.ledger.reader",
    "TrafficNode": "ailedger.ledger.traffic",
    "TxRequest": "ailedger.ledger.traffic",
    "Wallet": "ailedger.ledger.traffic",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'ailedger.ledger' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
