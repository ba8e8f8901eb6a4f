"""The exception tree of ailedger.

Every error the library raises on purpose derives from :class:`AiledgerError`, so a caller (and
the CLI, in one place) can catch them all. Third-party exceptions are translated where they
enter (``raise NodeUnavailable(...) from exc``)::

    AiledgerError
    ├── InputError                 bad input from the caller (CLI exit code 2)
    ├── WorkspaceError             a workspace is missing, malformed or in use
    │   ├── WorkspaceMissing       no workspace where one is expected (exit code 3)
    │   ├── WorkspaceLocked        another process holds the workspace's chain
    │   └── LogStoreUnavailable    the log's database server cannot be reached (exit code 3)
    ├── KeyError_                  a key cannot be read
    │   └── WrongPassphrase        the passphrase does not open the keystore
    ├── LedgerError                anything about the chain
    │   ├── NodeUnavailable        the node did not answer after the retries (exit code 3)
    │   │   └── MalformedChainData a block, transaction or receipt from the node does not fit
    │   ├── BlockNotFound          a block asked for is not on the chain (past the head)
    │   ├── ReorgTooDeep           a reorganisation reaches below the blocks remembered
    │   ├── WrongChain             the node serves another chain than the workspace expects
    │   ├── ContractNotFound       no (or another) contract at the configured address
    │   ├── TransactionReverted    the EVM reverted; ``reason`` holds the revert string
    │   └── TransactionDropped     a sent transaction vanished (e.g. a reorg) and was not re-mined
    ├── VerificationError          a check failed: the data and its promises disagree
    │   ├── ProofError             an inclusion or consistency proof does not verify
    │   ├── RootMismatch           a recomputed root differs (``expected``, ``calculated``)
    │   └── SignatureError         a signature does not verify against the trusted keys
    ├── AccessDenied               no live grant for the data asked for
    ├── AggregationError           updates cannot be aggregated (shape, NaN, too few)
    └── NotFittedError             a detector was used before ``fit``
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "AggregationError",
    "AiledgerError",
    "BlockNotFound",
    "ContractNotFound",
    "InputError",
    "KeyError_",
    "LedgerError",
    "LogStoreUnavailable",
    "MalformedChainData",
    "NodeUnavailable",
    "NotFittedError",
    "ProofError",
    "ReorgTooDeep",
    "RootMismatch",
    "SignatureError",
    "TransactionDropped",
    "TransactionReverted",
    "VerificationError",
    "WorkspaceError",
    "WorkspaceLocked",
    "WorkspaceMissing",
    "WrongChain",
    "WrongPassphrase",
]


class AiledgerError(Exception):
    """Root of every error ailedger raises on purpose."""

    #: exit code the CLI uses for this error (STYLE.md: 1 a check failed, 2 usage, 3 unavailable)
    exit_code: int = 1


class InputError(AiledgerError):
    """The caller passed a malformed value (a bad hex string, a size out of range, ...)."""

    exit_code = 2


class WorkspaceError(AiledgerError):
    """A workspace is missing, malformed or unusable."""

    exit_code = 2


class WorkspaceMissing(WorkspaceError):
    """No workspace at the folder given (or found by default): it is unavailable, like a node."""

    exit_code = 3


class WorkspaceLocked(WorkspaceError):
    """Another process holds the workspace's embedded chain."""

    exit_code = 3


class LogStoreUnavailable(WorkspaceError):
    """The database server holding the audit log (PostgreSQL) cannot be reached or failed."""

    exit_code = 3


class KeyError_(AiledgerError):
    """A key file cannot be read or decrypted."""


class WrongPassphrase(KeyError_):
    """The passphrase does not decrypt the keystore (the keystore is left untouched)."""


class LedgerError(AiledgerError):
    """Something about the chain went wrong."""


class NodeUnavailable(LedgerError):
    """The Ethereum node did not answer after retrying with backoff, or answered with something
    that is not a usable JSON-RPC reply (too large, too deep, not JSON, the wrong types)."""

    exit_code = 3


class MalformedChainData(NodeUnavailable):
    """The node sent a block, transaction, receipt or log that does not fit: a field of the wrong
    type, a receipt that matches no transaction, a block that does not follow its parent."""


class BlockNotFound(LedgerError):
    """A block asked for is not on the chain (yet): a range past the head."""

    exit_code = 2


class ReorgTooDeep(LedgerError):
    """A reorganisation replaced more blocks than the ingestor remembers (its reorg depth)."""


class WrongChain(LedgerError):
    """The node serves a chain other than the one the workspace was set up for."""

    def __init__(self, expected: int, actual: int, where: str = "") -> None:
        self.expected = expected
        self.actual = actual
        at = f" at {where}" if where else ""
        super().__init__(f"the node{at} serves chain id {actual}, the workspace expects {expected}")


class ContractNotFound(LedgerError):
    """No contract (or a different one) lives at the configured address."""


class TransactionReverted(LedgerError):
    """The EVM reverted the transaction or call; ``reason`` is the revert string, if any."""

    def __init__(self, reason: str, *, tx_hash: str | None = None) -> None:
        self.reason = reason
        self.tx_hash = tx_hash
        super().__init__(f"transaction reverted: {reason}" if reason else "transaction reverted")


class TransactionDropped(LedgerError):
    """A sent transaction disappeared from the chain and could not be re-included."""


class VerificationError(AiledgerError):
    """A check failed: the data and what was promised about it disagree."""


class ProofError(VerificationError):
    """An inclusion or consistency proof does not verify."""


class RootMismatch(VerificationError):
    """A recomputed Merkle root differs from the expected one."""

    def __init__(self, expected: bytes, calculated: bytes, what: str = "root") -> None:
        self.expected = expected
        self.calculated = calculated
        super().__init__(
            f"{what} mismatch: expected {expected.hex()}, calculated {calculated.hex()}"
        )


class SignatureError(VerificationError):
    """A signature does not verify against any trusted key."""


class AccessDenied(AiledgerError):
    """The chain holds no live grant for this party and this data."""


class AggregationError(AiledgerError):
    """Model updates cannot be aggregated (wrong shape, non-finite values, too few parties)."""


class NotFittedError(AiledgerError):
    """A detector or model was used before ``fit``."""
