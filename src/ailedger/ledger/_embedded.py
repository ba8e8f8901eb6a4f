"""The embedded chain: py-evm (through eth-tester) with its state kept in SQLite.

py-evm keeps every trie node, header and receipt in a key-value store behind
``eth.db.backends.base.BaseDB``. :class:`SQLiteKV` is such a store in one SQLite file of the
workspace, so a chain written by one process is opened by the next without replaying history:
opening reads the canonical head, whatever the chain's length.

Writes made while serving one JSON-RPC request are buffered and committed in one SQLite
transaction when the request succeeds, or dropped when it fails, so a crash or an error never
leaves half a block on disk. An exclusive lock file keeps a second process out while one has
the chain open.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from eth.chains.base import MiningChain
from eth.db.atomic import AtomicDB
from eth.db.backends.base import BaseDB
from eth.vm.forks.prague import PragueVM
from eth_tester import EthereumTester
from eth_tester.backends.pyevm.main import PyEVMBackend, get_default_genesis_params
from eth_typing import Address, BlockNumber
from web3 import EthereumTesterProvider
from web3.types import RPCEndpoint, RPCResponse

from ailedger._fs import create_private_file, make_private_dir
from ailedger.errors import WorkspaceError, WorkspaceLocked

__all__ = ["EMBEDDED_CHAIN_ID", "EmbeddedChain", "SQLiteKV"]

#: eth-tester's chain id, which web3's tester provider reports for ``eth_chainId``
EMBEDDED_CHAIN_ID = 131277322940537
_GENESIS_MARK = b"ailedger:genesis"
_DELETED = None
_ZERO = b"\x00" * 20
_READER_BALANCE = 10**30


class SQLiteKV(BaseDB):
    """A py-evm key-value store in one SQLite file, with writes buffered until :meth:`commit`."""

    def __init__(self, path: Path) -> None:
        create_private_file(path)  # 0600 before SQLite creates it (its -wal/-shm follow)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID"
        )
        self._pending: dict[bytes, bytes | None] = {}

    def __getitem__(self, key: bytes) -> bytes:
        if key in self._pending:
            value = self._pending[key]
            if value is None:
                raise KeyError(key)
            return value
        row = self._conn.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return bytes(row[0])

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._pending[key] = value

    def __delitem__(self, key: bytes) -> None:
        if not self._exists(key):
            raise KeyError(key)
        self._pending[key] = _DELETED

    def _exists(self, key: bytes) -> bool:
        if key in self._pending:
            return self._pending[key] is not _DELETED
        return self._conn.execute("SELECT 1 FROM kv WHERE k = ?", (key,)).fetchone() is not None

    def commit(self) -> None:
        """Write every buffered change in one durable SQLite transaction."""
        if not self._pending:
            return
        puts = [(k, v) for k, v in self._pending.items() if v is not _DELETED]
        dels = [(k,) for k, v in self._pending.items() if v is _DELETED]
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", puts)
            self._conn.executemany("DELETE FROM kv WHERE k = ?", dels)
        self._pending.clear()

    def rollback(self) -> None:
        """Drop every buffered change."""
        self._pending.clear()

    def close(self) -> None:
        self._pending.clear()
        self._conn.close()


class _Chain(MiningChain):
    chain_id = EMBEDDED_CHAIN_ID
    vm_configuration = ((BlockNumber(0), PragueVM),)

    def create_header_from_parent(self, parent_header: Any, **header_params: Any) -> Any:
        header_params["gas_limit"] = parent_header.gas_limit
        return super().create_header_from_parent(parent_header, **header_params)

    def get_transaction_builder(self) -> Any:
        return super().get_vm().get_transaction_builder()


class _Backend(PyEVMBackend):  # type: ignore[misc]
    """eth-tester's py-evm backend, on a chain opened from (or created in) a SQLiteKV."""

    def __init__(self, kv: SQLiteKV, genesis_balances: dict[bytes, int]) -> None:
        self.account_keys = ()
        self._kv = kv
        self.chain = self._open(genesis_balances)
        kv.commit()

    def _open(self, genesis_balances: dict[bytes, int] | None = None) -> Any:
        db = AtomicDB(self._kv)
        if self._kv._exists(_GENESIS_MARK):
            return _Chain(db)
        if genesis_balances is None:
            raise WorkspaceError("the embedded chain has no genesis")
        # eth-tester prices even read-only calls and checks that the caller can pay; reads with
        # no account come from the zero address, so it is funded at genesis.
        balances = {_ZERO: _READER_BALANCE, **genesis_balances}
        state: dict[Address, Any] = {
            Address(address): {"balance": balance, "nonce": 0, "code": b"", "storage": {}}
            for address, balance in balances.items()
        }
        chain = _Chain.from_genesis(db, get_default_genesis_params(), state)
        self._kv[_GENESIS_MARK] = b"1"
        return chain

    def reload(self) -> None:
        """Forget in-memory state and reopen the chain from what is committed."""
        self._kv.rollback()
        self.chain = self._open()


class _Provider(EthereumTesterProvider):
    """Commits the chain's writes after each successful request, drops them on failure."""

    def __init__(self, backend: _Backend, kv: SQLiteKV) -> None:
        super().__init__(EthereumTester(backend, auto_mine_transactions=True))
        self._backend = backend
        self._kv = kv

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        try:
            response = super().make_request(method, params)
        except BaseException:
            self._backend.reload()
            raise
        if "error" in response:
            self._backend.reload()
        else:
            self._kv.commit()
        return response


class EmbeddedChain:
    """An in-process EVM whose state lives in ``directory`` (a workspace's ``chain/``).

    ``genesis_balances`` funds accounts when the chain is created; an existing chain ignores it.
    Only one process may have a directory's chain open: a second waits up to ``lock_timeout``
    seconds, then raises :class:`WorkspaceLocked`.
    """

    def __init__(
        self,
        directory: Path,
        *,
        genesis_balances: dict[str, int] | None = None,
        lock_timeout: float = 10.0,
    ) -> None:
        make_private_dir(directory)
        self.directory = directory
        self._lock_fd = _acquire_lock(directory / "LOCK", lock_timeout)
        try:
            self._kv = SQLiteKV(directory / "chain.sqlite")
            balances = {
                bytes.fromhex(address.removeprefix("0x")): amount
                for address, amount in (genesis_balances or {}).items()
            }
            self._backend = _Backend(self._kv, balances)
            self.provider = _Provider(self._backend, self._kv)
        except BaseException:
            os.close(self._lock_fd)
            raise

    def close(self) -> None:
        if self._lock_fd < 0:
            return
        self._kv.close()
        os.close(self._lock_fd)
        self._lock_fd = -1


def _acquire_lock(path: Path, timeout: float) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not said and timeout >= 1.0:  # progress for a noticeable wait (CLI: stderr)
                logging.getLogger("ailedger.progress").info(
                    "waiting up to %.0f s for the embedded chain in %s, in use by another "
                    "process%s",
                    timeout,
                    path.parent,
                    _read_holder(fd),
                )
                said = True
            if time.monotonic() >= deadline:
                holder = _read_holder(fd)
                os.close(fd)
                raise WorkspaceLocked(
                    f"the embedded chain in {path.parent} is in use by another process{holder}; "
                    "wait for it to finish, or give this command a node with --rpc"
                ) from None
            time.sleep(0.05)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode() or "0")
        if pid:
            return f" (pid {pid})"
    return ""
