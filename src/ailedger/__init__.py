"""ailedger: accountable AI on a public ledger.

Four capabilities share one workspace and one chain: provenance and secure sharing of data and
models (:mod:`ailedger.provenance`), a tamper-evident audit trail of AI decisions
(:mod:`ailedger.auditlog`), federated training coordinated by a contract
(:mod:`ailedger.federated`) and machine learning that watches the chain
(:mod:`ailedger.sentinel`). :mod:`ailedger.ledger` is the one door to Ethereum.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ailedger.errors import AiledgerError

try:
    __version__ = version("ailedger")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["AiledgerError", "__version__"]
