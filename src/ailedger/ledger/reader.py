"""A read-only view of a chain: blocks with their transactions, receipts and logs, as records.

:class:`ChainReader` reads the embedded chain (:meth:`ChainReader.from_ledger`) or any Ethereum
JSON-RPC node (:meth:`ChainReader.connect`) with the same meaning, and hands out the plain
records of :mod:`ailedger.ledger.chaindata`. Over HTTP it:

1. sends JSON-RPC 2.0 batch requests (JSON-RPC 2.0 specification §6: one HTTP request carries
   up to ``batch_size`` calls, and the replies are matched to the calls by ``id``, in any order);
2. reads a block with ``eth_getBlockByNumber(n, true)`` (the transactions in full) and its
   receipts with ``eth_getBlockReceipts`` (Ethereum execution-apis, ``eth_getBlockReceipts``)
   where the node has it; the first refusal switches, once and for all, to batched
   ``eth_getTransactionReceipt`` calls;
3. reads each reply through the bounded transport of :mod:`ailedger.ledger._rpc` (one deadline
   per exchange, a cap on the reply's size, JSON parsed with limits);
4. checks and converts every field it keeps once, here: hex quantities, 32-byte hashes,
   EIP-55 checksummed addresses (``to`` is absent for a creation; ``type`` and the EIP-1559
   fee caps are absent for legacy transactions), and the links between them: a block has the
   number asked for, consecutive blocks chain by ``parentHash``, each transaction names its
   block and position, each receipt matches a transaction by hash and names the same block.

A reply that does not fit raises :class:`~ailedger.errors.MalformedChainData`; a node that does
not answer raises :class:`~ailedger.errors.NodeUnavailable` after the retries and backoff of
:class:`~ailedger.ledger.LedgerSettings`. A reorganisation between the calls that read one
batch (a receipt or a parent naming another block) is retried a few times before it is
reported as malformed.

``fee_history`` uses ``eth_feeHistory``; where the node lacks it (the embedded chain) the same
figures are computed from the blocks as go-ethereum's ``eth/gasprice/feehistory.go`` does:
rewards are the effective tips of the block's transactions, sorted, at the given percentiles of
the block's gas used; the base fee after the newest block follows EIP-1559's update rule.

Over HTTP the next batch is fetched in a helper thread while the current one is checked and
handed out (the node's work and ours overlap), so memory is bounded by two batches of
``batch_size`` blocks with their receipts, whatever the length of the range. The depth of a
reply without escapes is checked by one scan of the text between string quotes before the
JSON decoder runs (:func:`_shallow`); other replies get :func:`ailedger._input.parse_json`'s
general check.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import requests
from eth_hash.auto import keccak
from web3 import Web3
from web3.exceptions import BlockNotFound as Web3BlockNotFound
from web3.exceptions import TransactionNotFound, Web3Exception

from ailedger._input import DEFAULT_MAX_DEPTH, parse_json
from ailedger.errors import (
    BlockNotFound,
    InputError,
    LedgerError,
    MalformedChainData,
    NodeUnavailable,
)
from ailedger.ledger._ledger import _TRANSIENT, Ledger
from ailedger.ledger._rpc import (
    RESULT_CHECKS,
    BoundedHTTPProvider,
    NodeReplyError,
    _envelope_problem,
)
from ailedger.ledger._settings import LedgerSettings, check_rpc_url
from ailedger.ledger.chaindata import BlockRecord, FeeHistory, LogRecord, TxRecord

__all__ = ["ChainReader"]

T = TypeVar("T")

_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")  # leading zeros accepted: some nodes pad
_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*")

#: JSON-RPC error codes by which a node says it does not have a method
_NO_METHOD = (-32601, -32600, -32000, -32004)
_RAW_TRIES = 3  # reads of one batch before a moving chain is reported as malformed
_MAX_FEE_HISTORY_BLOCKS = 1024
_CHECKSUM_CACHE = 65536
_ELASTICITY = 2  # EIP-1559 ELASTICITY_MULTIPLIER
_DENOMINATOR = 8  # EIP-1559 BASE_FEE_MAX_CHANGE_DENOMINATOR


#: a batch as the node sent it: the blocks' JSON objects and, for each, its receipts' objects
_RawBatch = tuple[list[Any], list[list[Any]]]


class _RPCFailure(Exception):
    """A JSON-RPC error object in reply to one call (``code``, ``message``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Bad(Exception):
    """A field or link that does not fit; the reader adds which node sent it."""


class _Moved(Exception):
    """The chain changed between two calls that read one batch (a reorg): read it again."""


class _Transport(Protocol):
    def call(self, method: str, params: list[Any]) -> Any: ...

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """Results in call order; a call the node refused is a :class:`_RPCFailure` in place."""
        ...

    def close(self) -> None: ...


class _HTTPTransport:
    """JSON-RPC over http(s) with batches, read through :class:`BoundedHTTPProvider`."""

    def __init__(self, provider: BoundedHTTPProvider, *, owned: bool) -> None:
        self.provider = provider
        self._owned = owned
        self._ids = itertools.count(1)
        self._batches = True
        self._lock = threading.Lock()  # one exchange at a time on the shared session

    def call(self, method: str, params: list[Any]) -> Any:
        result = self.batch([(method, params)])[0]
        if isinstance(result, _RPCFailure):
            raise result
        return result

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        if not calls:
            return []
        if not self._batches:
            return [self._one(method, params) for method, params in calls]
        ids = [next(self._ids) for _ in calls]
        requests_ = [
            {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
            for i, (method, params) in zip(ids, calls, strict=True)
        ]
        single = len(calls) == 1
        body = json.dumps(requests_[0] if single else requests_).encode()
        reply = self._decode(self._post(body), calls[0][0])
        if single:
            reply = [reply]
        elif isinstance(reply, dict) and "error" in reply:
            # a node without batches answers the whole batch with one error: go one by one
            self._batches = False
            return [self._one(method, params) for method, params in calls]
        if not isinstance(reply, list):
            raise NodeReplyError("sent a malformed reply to a batch: expected a list")
        by_id: dict[int, Any] = {}
        for item in reply:
            item_id = item.get("id") if isinstance(item, dict) else None
            if type(item_id) is not int or item_id in by_id:
                raise NodeReplyError("sent a malformed reply to a batch: a missing or repeated id")
            by_id[item_id] = item
        if set(by_id) != set(ids):
            raise NodeReplyError(
                f"sent a malformed reply to a batch: {len(by_id)} replies to {len(ids)} calls"
            )
        return [
            self._result(method, i, by_id[i]) for i, (method, _) in zip(ids, calls, strict=True)
        ]

    def _one(self, method: str, params: list[Any]) -> Any:
        request_id = next(self._ids)
        body = json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        ).encode()
        return self._result(method, request_id, self._decode(self._post(body), method))

    def _post(self, body: bytes) -> bytes:
        with self._lock:
            return self.provider._post(body)

    def _decode(self, raw: bytes, method: str) -> Any:
        try:
            limit = self.provider.max_reply_bytes
            if len(raw) > limit or not _shallow(raw):
                return parse_json(raw, what="the reply", max_bytes=limit)
            # depth checked already: parse_json keeps its other checks, skips its slower scan
            return parse_json(raw, what="the reply", max_bytes=limit, max_depth=len(raw))
        except InputError as exc:
            raise NodeReplyError(f"sent a malformed reply to {method}: {exc}") from exc

    @staticmethod
    def _result(method: str, request_id: int, reply: Any) -> Any:
        problem = _envelope_problem(reply, request_id)
        if problem is None and "result" in reply:
            problem = RESULT_CHECKS.get(method, _no_check)(reply["result"])
            if problem is not None:
                problem = f"result: {problem}"
        if problem is not None:
            raise NodeReplyError(f"sent a malformed reply to {method}: {problem}")
        if "error" in reply:
            error = reply["error"]
            return _RPCFailure(error["code"], " ".join(str(error["message"]).split())[:300])
        return reply["result"]

    def close(self) -> None:
        if self._owned:
            self.provider._session.close()


def _no_check(value: Any) -> str | None:
    return None


_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")


def _shallow(raw: bytes) -> bool:
    """Whether ``raw`` (JSON without backslashes) nests at most ``DEFAULT_MAX_DEPTH`` deep.

    Without escapes, every other ``"`` opens a string, so the text outside strings is every
    second piece between quotes; a reply with escapes, or one that is not valid JSON, is left
    to :func:`parse_json`'s general scan (False).
    """
    if b"\\" in raw:
        return False
    outside = b"".join(raw.split(b'"')[::2])
    depth = 0
    for char in _NOT_BRACKET.sub(b"", outside):
        if char in b"[{":
            depth += 1
            if depth > DEFAULT_MAX_DEPTH:
                return False
        else:
            depth -= 1
    return True


class _EmbeddedTransport:
    """The embedded chain through web3, its replies turned back into JSON-RPC's own form.

    eth-tester has neither batches nor ``eth_getBlockReceipts`` nor ``eth_feeHistory``; calls
    run one after another, and the two missing methods are refused as a node would refuse them.
    """

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3

    def call(self, method: str, params: list[Any]) -> Any:
        eth = self.w3.eth
        if method == "eth_chainId":
            return hex(eth.chain_id)
        if method == "eth_blockNumber":
            return hex(eth.block_number)
        if method == "eth_getBlockByNumber":
            try:
                block = eth.get_block(int(params[0], 16), bool(params[1]))
            except Web3BlockNotFound:
                return None
            return _as_rpc(block)
        if method == "eth_getTransactionReceipt":
            try:
                return _as_rpc(eth.get_transaction_receipt(params[0]))
            except TransactionNotFound:
                return None
        raise _RPCFailure(-32601, f"the embedded chain has no method {method}")

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        results: list[Any] = []
        for method, params in calls:
            try:
                results.append(self.call(method, params))
            except _RPCFailure as exc:
                results.append(exc)
        return results

    def close(self) -> None:
        pass


_SNAKE = re.compile(r"_([a-z])")


def _as_rpc(value: Any) -> Any:
    """web3's formatted value in JSON-RPC's form: hex quantities and data, camelCase keys.

    (eth-tester leaves the transactions inside a block in snake case, with ``data`` for
    ``input`` and an empty ``to`` for a creation.)
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [_as_rpc(item) for item in value]
    if hasattr(value, "items"):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = _SNAKE.sub(lambda m: m.group(1).upper(), str(key))
            out[name] = _as_rpc(item)
        if "data" in out and "input" not in out and "hash" in out:
            out["input"] = out.pop("data")
        if out.get("to") == "":
            out["to"] = None
        return out
    return value


class ChainReader:
    """Reads blocks, transactions, receipts and logs of one chain as typed records.

    Build it with :meth:`connect` (a node by URL) or :meth:`from_ledger` (the chain a
    :class:`~ailedger.ledger.Ledger` uses, embedded or not); close it, or use ``with``.
    """

    def __init__(
        self,
        *,
        transport: _Transport,
        where: str,
        settings: LedgerSettings,
        batch_size: int,
        remote: bool,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"the batch size must be a positive integer, not {batch_size!r}")
        self._transport = transport
        self._where = where
        self._settings = settings
        self.batch_size = batch_size
        self._remote = remote
        self._block_receipts: bool | None = None
        self._fee_history: bool | None = None
        self._chain_id: int | None = None
        self._checksums: dict[str, str] = {}

    # -- factories ------------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        timeout: float = 10.0,
        batch_size: int = 100,
        settings: LedgerSettings | None = None,
    ) -> ChainReader:
        """Read the node at ``url`` (http or https; WebSocket URLs are refused).

        ``timeout`` (seconds) bounds each HTTP exchange; ``batch_size`` is the number of calls
        in one batch request (and of blocks read at once); ``settings`` gives the retries and
        backoff (its ``request_timeout`` is replaced by ``timeout``).
        """
        check_rpc_url(url)
        if not timeout > 0:
            raise InputError(f"the timeout must be positive, not {timeout!r}")
        settings = dataclasses.replace(settings or LedgerSettings(), request_timeout=timeout)
        provider = BoundedHTTPProvider(url, timeout=timeout)
        return cls(
            transport=_HTTPTransport(provider, owned=True),
            where=f"the node at {url}",
            settings=settings,
            batch_size=batch_size,
            remote=True,
        )

    @classmethod
    def from_ledger(cls, ledger: Ledger, *, batch_size: int = 100) -> ChainReader:
        """Read the chain ``ledger`` uses, through its connection (closing the reader leaves
        the ledger open)."""
        provider = ledger.w3.provider
        if isinstance(provider, BoundedHTTPProvider):
            return cls(
                transport=_HTTPTransport(provider, owned=False),
                where=f"the node at {ledger.url}",
                settings=ledger.settings,
                batch_size=batch_size,
                remote=True,
            )
        return cls(
            transport=_EmbeddedTransport(ledger.w3),
            where="the embedded chain",
            settings=ledger.settings,
            batch_size=batch_size,
            remote=False,
        )

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> ChainReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ChainReader({self._where})"

    # -- reads ----------------------------------------------------------------------------

    def chain_id(self) -> int:
        if self._chain_id is None:
            reply = self._call("eth_chainId", [])
            with self._checking():
                self._chain_id = _quantity(reply, "result", "eth_chainId")
        return self._chain_id

    def head(self) -> int:
        """The number of the latest block."""
        reply = self._call("eth_blockNumber", [])
        with self._checking():
            return _quantity(reply, "result", "eth_blockNumber")

    def block(self, number: int) -> BlockRecord:
        """Block ``number`` with its transactions, receipts and logs."""
        _check_number(number, "block number")
        return next(self.blocks(number, number + 1))

    def block_hash(self, number: int) -> bytes:
        """The hash of block ``number`` (its header only: cheap, for reorg checks)."""
        _check_number(number, "block number")
        raw = self._call("eth_getBlockByNumber", [hex(number), False])
        if raw is None:
            raise BlockNotFound(f"block {number} is not on the chain of {self._where}")
        if not isinstance(raw, dict):
            raise self._malformed(f"block {number} is not an object")
        with self._checking():
            if _quantity(raw.get("number"), "number", f"block {number}") != number:
                raise _Bad(f"asked for block {number}, got another")
            return _hash(raw.get("hash"), "hash", f"block {number}")

    def blocks(self, start: int, stop: int) -> Iterator[BlockRecord]:
        """Blocks ``start`` to ``stop - 1`` in order, read ``batch_size`` at a time.

        An empty or inverted range, or one past the head, is refused (:class:`InputError`,
        :class:`BlockNotFound`) before anything is read.
        """
        _check_number(start, "start block")
        _check_number(stop, "stop block")
        if stop <= start:
            raise InputError(f"empty or inverted block range [{start}, {stop})")
        return self._flat(start, stop)

    def _flat(self, start: int, stop: int) -> Iterator[BlockRecord]:
        batches = self._batches(start, stop)
        try:
            for batch in batches:
                yield from batch
        finally:
            batches.close()  # closing this generator stops the read-ahead at once

    def block_batches(self, start: int, stop: int) -> Iterator[list[BlockRecord]]:
        """The blocks of :meth:`blocks`, as the lists read together (at most ``batch_size``).

        Every block of a list is in memory when the list is handed out, so a consumer that
        processes a list at once (scoring its transactions in one model call) adds no waiting
        for the node; the next list may have to wait for it.
        """
        _check_number(start, "start block")
        _check_number(stop, "stop block")
        if stop <= start:
            raise InputError(f"empty or inverted block range [{start}, {stop})")
        return self._batches(start, stop)

    def _batches(self, start: int, stop: int) -> Generator[list[BlockRecord], None, None]:
        ranges = [(a, min(a + self.batch_size, stop)) for a in range(start, stop, self.batch_size)]
        if not self._remote or len(ranges) == 1:
            for first, last in ranges:
                yield self._read_batch(first, last, None)
            return
        # Over HTTP the next batch is fetched while this one is checked and handed out, so the
        # node's work and ours overlap; at most two batches are held at once.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ailedger-reader") as pool:
            ahead: Future[_RawBatch] = pool.submit(self._fetch, *ranges[0])
            for i, (first, last) in enumerate(ranges):
                current = ahead
                if i + 1 < len(ranges):
                    current.exception()  # wait: the first fetch settles which receipts to use
                    ahead = pool.submit(self._fetch, *ranges[i + 1])
                yield self._read_batch(first, last, current)

    def fee_history(
        self, block_count: int, newest: int | None = None, percentiles: Sequence[float] = ()
    ) -> FeeHistory:
        """Base fees, gas used ratios and tips at ``percentiles`` (0-100, increasing) for
        ``block_count`` blocks ending at ``newest`` (default: the head)."""
        if not isinstance(block_count, int) or not 1 <= block_count <= _MAX_FEE_HISTORY_BLOCKS:
            raise InputError(
                f"block_count must be 1-{_MAX_FEE_HISTORY_BLOCKS}, not {block_count!r}"
            )
        if newest is not None:
            _check_number(newest, "newest block")
        wanted = tuple(float(p) for p in percentiles)
        if any(not 0 <= p <= 100 for p in wanted) or any(
            b < a for a, b in itertools.pairwise(wanted)
        ):
            raise InputError("percentiles must be increasing numbers from 0 to 100")
        if self._fee_history is not False:
            try:
                reply = self._call(
                    "eth_feeHistory",
                    [hex(block_count), "latest" if newest is None else hex(newest), list(wanted)],
                    refusal_ok=True,
                )
            except _RPCFailure as exc:
                if exc.code not in _NO_METHOD and self._fee_history:
                    raise LedgerError(f"{self._where} refused eth_feeHistory: {exc}") from None
                self._fee_history = False
            else:
                self._fee_history = True
                with self._checking():
                    return self._parse_fee_history(reply, wanted)
        return self._computed_fee_history(block_count, newest, wanted)

    # -- internals: reading ---------------------------------------------------------------

    def _read_batch(
        self, first: int, last: int, fetched: Future[_RawBatch] | None
    ) -> list[BlockRecord]:
        for attempt in range(1, _RAW_TRIES + 1):
            try:
                if fetched is not None and attempt == 1:
                    raw = fetched.result()
                else:
                    raw = self._fetch(first, last)
                with self._checking():
                    return self._parse_batch(first, raw)
            except _Moved as exc:
                if attempt == _RAW_TRIES:
                    raise self._malformed(f"blocks {first}-{last - 1}: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _fetch(self, first: int, last: int) -> _RawBatch:
        """The JSON of blocks ``first`` to ``last - 1`` and of their receipts, in order."""
        numbers = range(first, last)
        calls = [("eth_getBlockByNumber", [hex(n), True]) for n in numbers]
        use_block_receipts = self._block_receipts is not False and self._remote
        if use_block_receipts:
            calls += [("eth_getBlockReceipts", [hex(n)]) for n in numbers]
        replies = self._batch(calls)
        raw_blocks = replies[: len(numbers)]
        for n, raw in zip(numbers, raw_blocks, strict=True):
            if isinstance(raw, _RPCFailure):
                raise LedgerError(f"{self._where} refused block {n}: {raw}")
            if raw is None:
                raise BlockNotFound(f"block {n} is not on the chain of {self._where} (yet)")
            if not isinstance(raw, dict) or not isinstance(raw.get("transactions"), list):
                raise self._malformed(f"block {n} is not an object with a list of transactions")
        receipts: list[list[Any]] = []
        if use_block_receipts:
            receipts = self._block_receipt_lists(numbers, replies[len(numbers) :])
        if not use_block_receipts or self._block_receipts is False:
            receipts = self._receipts_one_by_one(raw_blocks)
        return raw_blocks, receipts

    def _parse_batch(self, first: int, batch: _RawBatch) -> list[BlockRecord]:
        raw_blocks, receipts = batch
        records = []
        previous: BlockRecord | None = None
        for n, raw, raw_receipts in zip(itertools.count(first), raw_blocks, receipts):
            record = self._block_record(n, raw, raw_receipts)
            if previous is not None and record.parent_hash != previous.hash:
                raise _Moved(f"block {n} does not follow block {n - 1}")
            previous = record
            records.append(record)
        return records

    def _block_receipt_lists(self, numbers: range, replies: list[Any]) -> list[list[Any]]:
        lists: list[list[Any]] = []
        for n, reply in zip(numbers, replies, strict=True):
            if isinstance(reply, _RPCFailure):
                if self._block_receipts:  # it worked before: this refusal is about the block
                    raise LedgerError(f"{self._where} refused the receipts of block {n}: {reply}")
                self._block_receipts = False
                return []
            if reply is None:
                raise _Moved(f"the receipts of block {n} are gone")
            if not isinstance(reply, list):
                raise self._malformed(f"the receipts of block {n} are not a list")
            lists.append(reply)
        self._block_receipts = True
        return lists

    def _receipts_one_by_one(self, raw_blocks: list[Any]) -> list[list[Any]]:
        hashes: list[Any] = [
            tx.get("hash") if isinstance(tx, dict) else None
            for raw in raw_blocks
            for tx in raw["transactions"]
        ]
        for h in hashes:
            if not isinstance(h, str) or not _HASH.fullmatch(h):
                raise self._malformed("a transaction in a block has no valid hash")
        flat: list[Any] = []
        for first in range(0, len(hashes), self.batch_size):
            chunk = hashes[first : first + self.batch_size]
            replies = self._batch([("eth_getTransactionReceipt", [h]) for h in chunk])
            for h, reply in zip(chunk, replies, strict=True):
                if isinstance(reply, _RPCFailure):
                    raise LedgerError(f"{self._where} refused the receipt of {h}: {reply}")
                if reply is None:
                    raise _Moved(f"the receipt of {h} is gone")
                flat.append(reply)
        out: list[list[Any]] = []
        position = 0
        for raw in raw_blocks:
            count = len(raw["transactions"])
            out.append(flat[position : position + count])
            position += count
        return out

    # -- internals: checking and converting ---------------------------------------------

    def _block_record(self, number: int, raw: dict[str, Any], receipts: list[Any]) -> BlockRecord:
        where = f"block {number}"
        raw_number, raw_hash = raw.get("number"), raw.get("hash")
        if _quantity(raw_number, "number", where) != number:
            raise self._malformed(f"asked for block {number}, the node sent another")
        block_hash = _hash(raw_hash, "hash", where)
        # the block's own number and hash, checked above: a transaction, receipt or log that
        # repeats the same text needs no second check (the fast path of the link checks)
        same = (raw_number, raw_hash)
        base_fee = raw.get("baseFeePerGas")
        txs_raw: list[Any] = raw["transactions"]
        if len(receipts) != len(txs_raw):
            raise _Moved(f"{where} has {len(txs_raw)} transactions but {len(receipts)} receipts")
        by_hash: dict[bytes, Any] = {}
        for receipt in receipts:
            if not isinstance(receipt, dict):
                raise self._malformed(f"a receipt of {where} is not an object")
            tx_hash = _hash(receipt.get("transactionHash"), "transactionHash", f"{where} receipt")
            by_hash[tx_hash] = receipt
        base = None if base_fee is None else _quantity(base_fee, "baseFeePerGas", where)
        txs = tuple(
            self._tx_record(number, block_hash, index, tx, by_hash, base, same)
            for index, tx in enumerate(txs_raw)
        )
        return BlockRecord(
            number=number,
            hash=block_hash,
            parent_hash=_hash(raw.get("parentHash"), "parentHash", where),
            timestamp=_quantity(raw.get("timestamp"), "timestamp", where),
            miner=self._address(raw.get("miner"), "miner", where),
            gas_used=_quantity(raw.get("gasUsed"), "gasUsed", where),
            gas_limit=_quantity(raw.get("gasLimit"), "gasLimit", where),
            base_fee_per_gas=base,
            transactions=txs,
        )

    def _tx_record(
        self,
        number: int,
        block_hash: bytes,
        index: int,
        tx: Any,
        receipts: dict[bytes, Any],
        base_fee: int | None,
        same: tuple[Any, Any],
    ) -> TxRecord:
        where = f"transaction {index} of block {number}"
        if not isinstance(tx, dict):
            raise self._malformed(f"{where} is not an object")
        raw_tx_hash = tx.get("hash")
        tx_hash = _hash(raw_tx_hash, "hash", where)
        where = f"transaction {'0x' + tx_hash.hex()}"
        raw_number, raw_hash = same
        raw_index = hex(index)
        value = tx.get("blockNumber")
        if value != raw_number and _quantity(value, "blockNumber", where) != number:
            raise self._malformed(f"{where} names another block than {number}")
        value = tx.get("blockHash")
        if value != raw_hash and _hash(value, "blockHash", where) != block_hash:
            raise _Moved(f"{where} names another block hash")
        value = tx.get("transactionIndex")
        if value != raw_index and _quantity(value, "transactionIndex", where) != index:
            raise self._malformed(f"{where} is not at the position it names in block {number}")
        receipt = receipts.get(tx_hash)
        if receipt is None:
            raise _Moved(f"no receipt matches {where}")
        rwhere = f"the receipt of {where}"
        value = receipt.get("blockHash")
        if value != raw_hash and _hash(value, "blockHash", rwhere) != block_hash:
            raise _Moved(f"{rwhere} names another block")
        value = receipt.get("blockNumber")
        if value != raw_number and _quantity(value, "blockNumber", rwhere) != number:
            raise self._malformed(f"{rwhere} names another block number")
        value = receipt.get("transactionIndex")
        if value != raw_index and _quantity(value, "transactionIndex", rwhere) != index:
            raise self._malformed(f"{rwhere} names another position")
        tx_type = 0 if tx.get("type") is None else _quantity(tx["type"], "type", where)
        to_raw = tx.get("to")
        max_fee = _optional_quantity(tx.get("maxFeePerGas"), "maxFeePerGas", where)
        max_tip = _optional_quantity(tx.get("maxPriorityFeePerGas"), "maxPriorityFeePerGas", where)
        price_raw = receipt.get("effectiveGasPrice")
        if price_raw is not None:
            price = _quantity(price_raw, "effectiveGasPrice", rwhere)
        elif max_fee is not None and max_tip is not None and base_fee is not None:
            price = min(max_fee, base_fee + max_tip)  # EIP-1559: what the sender paid per gas
        else:
            price = _quantity(tx.get("gasPrice"), "gasPrice", where)
        contract_raw = receipt.get("contractAddress")
        logs_raw = receipt.get("logs")
        if not isinstance(logs_raw, list):
            raise self._malformed(f"{rwhere}: field 'logs' is not a list")
        return TxRecord(
            hash=tx_hash,
            block_number=number,
            index=index,
            sender=self._address(tx.get("from"), "from", where),
            to=None if to_raw is None else self._address(to_raw, "to", where),
            value=_quantity(tx.get("value"), "value", where),
            nonce=_quantity(tx.get("nonce"), "nonce", where),
            type=tx_type,
            gas_limit=_quantity(tx.get("gas"), "gas", where),
            gas_used=_quantity(receipt.get("gasUsed"), "gasUsed", rwhere),
            effective_gas_price=price,
            max_fee_per_gas=max_fee,
            max_priority_fee_per_gas=max_tip,
            input=_data(tx.get("input"), "input", where),
            status=_status(receipt.get("status"), rwhere),
            contract_address=(
                None
                if contract_raw is None
                else self._address(contract_raw, "contractAddress", rwhere)
            ),
            logs=tuple(self._log_record(log, tx_hash, raw_tx_hash, rwhere) for log in logs_raw),
        )

    def _log_record(self, log: Any, tx_hash: bytes, raw_tx_hash: object, where: str) -> LogRecord:
        if not isinstance(log, dict):
            raise self._malformed(f"a log in {where} is not an object")
        if log.get("removed") is True:
            raise _Moved(f"a log in {where} was removed")
        named = log.get("transactionHash")
        if (
            named is not None
            and named != raw_tx_hash
            and _hash(named, "transactionHash", f"a log in {where}") != tx_hash
        ):
            raise self._malformed(f"a log in {where} names another transaction")
        topics = log.get("topics")
        if not isinstance(topics, list) or len(topics) > 4:
            raise self._malformed(f"a log in {where}: topics must be a list of at most four")
        return LogRecord(
            address=self._address(log.get("address"), "address", f"a log in {where}"),
            topics=tuple(_hash(t, "topics", f"a log in {where}") for t in topics),
            data=_data(log.get("data"), "data", f"a log in {where}"),
            log_index=_quantity(log.get("logIndex"), "logIndex", f"a log in {where}"),
        )

    def _address(self, value: Any, name: str, where: str) -> str:
        if type(value) is not str:
            raise _Bad(f"{where}: field {name!r} is not an address")
        cached = self._checksums.get(value)
        if cached is not None:
            return cached
        if not _ADDRESS.fullmatch(value):
            raise _Bad(f"{where}: field {name!r} is not an address")
        checked = _checksum(value)
        if len(self._checksums) >= _CHECKSUM_CACHE:
            self._checksums.clear()
        self._checksums[value] = checked
        return checked

    # -- internals: fee history -----------------------------------------------------------

    def _parse_fee_history(self, reply: Any, percentiles: tuple[float, ...]) -> FeeHistory:
        where = "eth_feeHistory"
        if not isinstance(reply, dict):
            raise self._malformed(f"{where} is not an object")
        oldest = _quantity(reply.get("oldestBlock"), "oldestBlock", where)
        ratios = reply.get("gasUsedRatio")
        bases = reply.get("baseFeePerGas")
        if not isinstance(ratios, list) or not isinstance(bases, list):
            raise self._malformed(f"{where}: gasUsedRatio and baseFeePerGas must be lists")
        if len(bases) != len(ratios) + 1 or not ratios:
            raise self._malformed(f"{where}: {len(bases)} base fees for {len(ratios)} blocks")
        for ratio in ratios:
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio < 0:
                raise self._malformed(f"{where}: a gas used ratio is not a number >= 0")
        reward: tuple[tuple[int, ...], ...] = ()
        if percentiles:
            rewards = reply.get("reward")
            if not isinstance(rewards, list) or len(rewards) != len(ratios):
                raise self._malformed(f"{where}: expected one reward list per block")
            rows = []
            for row in rewards:
                if not isinstance(row, list) or len(row) != len(percentiles):
                    raise self._malformed(f"{where}: expected one reward per percentile")
                rows.append(tuple(_quantity(r, "reward", where) for r in row))
            reward = tuple(rows)
        return FeeHistory(
            oldest=oldest,
            base_fee_per_gas=tuple(_quantity(b, "baseFeePerGas", where) for b in bases),
            gas_used_ratio=tuple(float(r) for r in ratios),
            percentiles=percentiles,
            reward=reward,
        )

    def _computed_fee_history(
        self, block_count: int, newest: int | None, percentiles: tuple[float, ...]
    ) -> FeeHistory:
        head = self.head()
        last = head if newest is None else newest
        if last > head:
            raise BlockNotFound(f"block {last} is past the head ({head}) of {self._where}")
        oldest = max(0, last - block_count + 1)
        bases: list[int] = []
        ratios: list[float] = []
        rewards: list[tuple[int, ...]] = []
        final: BlockRecord | None = None
        for block in self.blocks(oldest, last + 1):
            base = block.base_fee_per_gas or 0
            bases.append(base)
            ratios.append(block.gas_used / block.gas_limit if block.gas_limit else 0.0)
            if percentiles:
                rewards.append(_rewards(block, base, percentiles))
            final = block
        assert final is not None
        bases.append(_next_base_fee(final))
        return FeeHistory(
            oldest=oldest,
            base_fee_per_gas=tuple(bases),
            gas_used_ratio=tuple(ratios),
            percentiles=percentiles,
            reward=tuple(rewards),
        )

    # -- internals: transport -----------------------------------------------------------

    def _call(self, method: str, params: list[Any], *, refusal_ok: bool = False) -> Any:
        """One call; a JSON-RPC error reply raises :class:`LedgerError` (or, with
        ``refusal_ok``, the :class:`_RPCFailure` for the caller to handle)."""
        try:
            return self._retrying(lambda: self._transport.call(method, params))
        except _RPCFailure as exc:
            if refusal_ok:
                raise
            raise LedgerError(f"{self._where} refused {method}: {exc.message}") from None

    def _batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        return self._retrying(lambda: self._transport.batch(calls))

    def _retrying(self, request: Callable[[], T]) -> T:
        """Run one exchange, retrying outages with exponential backoff (as :class:`Ledger`)."""
        delay = self._settings.backoff
        retries = self._settings.retries
        waited = 0.0
        for attempt in range(1, retries + 1):
            try:
                return request()
            except (*_TRANSIENT, NodeReplyError) as exc:
                final = isinstance(exc, NodeReplyError) and not exc.transient
                if attempt < retries and not final:
                    waited += delay
                    if waited >= 1.0:  # progress once the wait is noticeable (CLI: stderr)
                        logging.getLogger("ailedger.progress").info(
                            "%s did not answer (%s); retrying in %.2f s (%d of %d)",
                            self._where,
                            type(exc).__name__,
                            delay,
                            attempt + 1,
                            retries,
                        )
                    time.sleep(delay)
                    delay = min(delay * 2, self._settings.backoff_max)
                    continue
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                if isinstance(exc, NodeReplyError):
                    what = f"{exc}{tries}"
                else:
                    what = f"did not answer{tries} ({type(exc).__name__})"
                raise NodeUnavailable(f"{self._where} {what}") from exc
            except requests.RequestException as exc:
                raise NodeUnavailable(
                    f"{self._where} cannot be reached ({type(exc).__name__})"
                ) from exc
            except Web3Exception as exc:  # the embedded chain's own refusals
                raise LedgerError(f"{self._where}: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def _checking(self) -> Iterator[None]:
        """Turn a field that does not fit into :class:`MalformedChainData` naming the node."""
        try:
            yield
        except _Bad as exc:
            raise self._malformed(str(exc)) from None

    def _malformed(self, message: str) -> MalformedChainData:
        return MalformedChainData(f"{self._where} sent malformed chain data: {message}")


# -- pure helpers ---------------------------------------------------------------------------


def _check_number(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"the {what} must be a non-negative integer, not {value!r}")


def _quantity(value: Any, name: str, where: str) -> int:
    if type(value) is not str or not _QUANTITY.fullmatch(value):
        raise _Bad(f"{where}: field {name!r} is not a hex quantity")
    return int(value, 16)


def _optional_quantity(value: Any, name: str, where: str) -> int | None:
    return None if value is None else _quantity(value, name, where)


def _hash(value: Any, name: str, where: str) -> bytes:
    if type(value) is not str or not _HASH.fullmatch(value):
        raise _Bad(f"{where}: field {name!r} is not a 32-byte hash")
    return bytes.fromhex(value[2:])


def _data(value: Any, name: str, where: str) -> bytes:
    if type(value) is not str or not _DATA.fullmatch(value):
        raise _Bad(f"{where}: field {name!r} is not hex data")
    return bytes.fromhex(value[2:])


def _status(value: Any, where: str) -> int:
    status = _quantity(value, "status", where)
    if status not in (0, 1):
        raise _Bad(f"{where}: status {status} is neither 0 nor 1")
    return status


def _checksum(address: str) -> str:
    """EIP-55: a hex digit is upper case where the Keccak-256 of the lower-case address has a
    nibble of 8 or more (eth_utils does the same with more checks, at five times the cost)."""
    lower = address[2:].lower()
    digest = keccak(lower.encode("ascii")).hex()
    return "0x" + "".join(c.upper() if h > "7" else c for c, h in zip(lower, digest, strict=False))


def _rewards(block: BlockRecord, base_fee: int, percentiles: tuple[float, ...]) -> tuple[int, ...]:
    """Tips at ``percentiles`` of the block's gas used (go-ethereum's feehistory.go)."""
    if not block.transactions or block.gas_used == 0:
        return tuple(0 for _ in percentiles)
    tips = sorted(
        (max(tx.effective_gas_price - base_fee, 0), tx.gas_used) for tx in block.transactions
    )
    out = []
    index = 0
    cumulative = tips[0][1]
    for p in percentiles:
        threshold = block.gas_used * p / 100
        while cumulative < threshold and index < len(tips) - 1:
            index += 1
            cumulative += tips[index][1]
        out.append(tips[index][0])
    return tuple(out)


def _next_base_fee(block: BlockRecord) -> int:
    """EIP-1559's base fee of the block after ``block`` (0 before London)."""
    base = block.base_fee_per_gas
    if base is None:
        return 0
    target = block.gas_limit // _ELASTICITY
    if target == 0 or block.gas_used == target:
        return base
    if block.gas_used > target:
        delta = max(base * (block.gas_used - target) // target // _DENOMINATOR, 1)
        return base + delta
    delta = base * (target - block.gas_used) // target // _DENOMINATOR
    return base - delta
