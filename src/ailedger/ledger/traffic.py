"""Generating transaction traffic fast on a real EVM: anvil over JSON-RPC, or the embedded chain.

The sentinel's scenarios (:mod:`ailedger.sentinel.scenarios`) need tens of thousands of real
transactions with realistic block times and several transactions per block. Going through
:class:`~ailedger.ledger.Ledger` (gas estimation, a receipt per transaction) gives about 100 tx/s;
this module instead:

1. keeps many local accounts (:class:`Wallet`, keys derived from a seed) whose nonces it tracks
   itself, and gives every transaction an explicit gas limit;
2. signs EIP-1559 transactions locally (EIP-1559 §Specification: the payload is
   ``0x02 || rlp([chain_id, nonce, max_priority_fee_per_gas, max_fee_per_gas, gas_limit, to,
   value, data, access_list, y_parity, r, s])`` and the signed hash is the keccak of the same
   without the signature, EIP-2718), with the RLP of the Yellow Paper, Appendix B;
3. sends them in JSON-RPC 2.0 batches (§6: many ``eth_sendRawTransaction`` per HTTP request);
4. controls mining on anvil: automine off, then one ``evm_mine`` with a chosen timestamp per
   block, so blocks carry simulated times and hold several transactions.

Ordering inside a block follows what a block builder does: the highest priority fee first,
nonces in order per sender. anvil ranks pending transactions by their ``maxFeePerGas``; every
transaction of a block gets ``maxFeePerGas = 2 * base_fee + tip`` (the common wallet rule, with
one base fee per block), so ranking by the cap is ranking by the tip. A caller that lists a
block's transactions with strictly decreasing tips therefore gets exactly that order, and
:meth:`TrafficNode.mine_block` checks it.

Calls are encoded with the Solidity ABI specification (selector = first 4 bytes of the keccak
of the canonical signature, then the head/tail encoding, done by ``eth_abi``). Contracts come
from artifacts (JSON with ``abi`` and ``bytecode``), e.g. Uniswap V2's compiled build in the npm
package ``@uniswap/v2-core``; nothing is downloaded.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_hash.auto import keccak
from eth_keys.datatypes import PrivateKey
from eth_utils.address import to_checksum_address

from ailedger._input import parse_json

try:
    import coincurve as _coincurve
except ImportError:  # pragma: no cover - eth_keys' own backend signs, more slowly
    _coincurve = None  # type: ignore[assignment]
from ailedger.errors import InputError, LedgerError, NodeUnavailable
from ailedger.ledger._settings import check_rpc_url
from ailedger.ledger.eip1559 import next_base_fee

if TYPE_CHECKING:
    from ailedger.ledger._ledger import Ledger

__all__ = [
    "UNISWAP_V2_BUILD",
    "BuildArtifact",
    "ContractABI",
    "Included",
    "TrafficNode",
    "TxRequest",
    "Wallet",
    "checksum_address",
    "contract_address",
    "encode_eip1559",
    "load_build_artifact",
    "next_base_fee",
    "rlp_encode",
]

#: where ``npm install @uniswap/v2-core`` puts the compiled contracts, relative to a project root
UNISWAP_V2_BUILD = Path("node_modules") / "@uniswap" / "v2-core" / "build"
_REPO_ROOT = Path(__file__).resolve().parents[3]
_MAX_REPLY = 64 * 1024 * 1024
# EIP-1559 constants


# -- artifacts and ABI -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BuildArtifact:
    """A compiled contract read from a build folder: its ABI and creation bytecode."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes

    @property
    def interface(self) -> ContractABI:
        return ContractABI(self.abi)


def default_build_dir() -> Path:
    """``node_modules/@uniswap/v2-core/build`` under the working directory, else the repo's."""
    here = Path.cwd() / UNISWAP_V2_BUILD
    return here if here.is_dir() else _REPO_ROOT / UNISWAP_V2_BUILD


def load_build_artifact(name: str, folder: Path | None = None) -> BuildArtifact:
    """Load ``<folder>/<name>.json`` (an object with ``abi`` and ``bytecode``).

    ``folder`` defaults to :func:`default_build_dir`; a ``node_modules`` folder is also accepted
    (the Uniswap V2 build inside it is used). A missing folder or file, or one without ABI and
    bytecode, raises :class:`InputError` saying how to get it.
    """
    base = folder if folder is not None else default_build_dir()
    if (base / UNISWAP_V2_BUILD.relative_to("node_modules")).is_dir():
        base = base / UNISWAP_V2_BUILD.relative_to("node_modules")
    if not base.is_dir():
        raise InputError(
            f"no contract artifacts folder at {base}: run `npm install @uniswap/v2-core` "
            "or pass the folder holding its build/*.json"
        )
    path = base / f"{name}.json"
    try:
        text = path.read_bytes()
    except FileNotFoundError as exc:
        raise InputError(f"no artifact {name}.json in {base}") from exc
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    doc = parse_json(text, what=str(path), max_bytes=_MAX_REPLY)
    abi = doc.get("abi") if isinstance(doc, dict) else None
    code = doc.get("bytecode") if isinstance(doc, dict) else None
    if isinstance(code, dict):  # solc's standard JSON puts it under bytecode.object
        code = code.get("object")
    if not isinstance(abi, list) or not isinstance(code, str):
        raise InputError(f"{path} is not a contract artifact (needs abi and bytecode)")
    try:
        bytecode = bytes.fromhex(code.removeprefix("0x"))
    except ValueError as exc:
        raise InputError(f"{path}: bytecode is not hex") from exc
    if not bytecode:
        raise InputError(f"{path}: empty bytecode (an interface, not a contract)")
    return BuildArtifact(name=name, abi=abi, bytecode=bytecode)


class ContractABI:
    """Encodes calls and decodes results of one contract by function name (Solidity ABI spec)."""

    def __init__(self, abi: Sequence[dict[str, Any]]) -> None:
        self._functions: dict[str, tuple[bytes, list[str], list[str]]] = {}
        self._constructor: list[str] = []
        for entry in abi:
            inputs = [str(item["type"]) for item in entry.get("inputs", [])]
            if entry.get("type") == "constructor":
                self._constructor = inputs
            elif entry.get("type") == "function":
                name = str(entry["name"])
                selector = keccak(f"{name}({','.join(inputs)})".encode())[:4]
                outputs = [str(item["type"]) for item in entry.get("outputs", [])]
                self._functions[name] = (selector, inputs, outputs)

    def encode(self, function: str, *args: Any) -> bytes:
        """Calldata for ``function(*args)``: selector then ABI-encoded arguments."""
        selector, inputs, _ = self._lookup(function)
        if len(args) != len(inputs):
            raise InputError(f"{function} takes {len(inputs)} arguments, got {len(args)}")
        return selector + abi_encode(inputs, list(args))

    def encode_constructor(self, *args: Any) -> bytes:
        if len(args) != len(self._constructor):
            raise InputError(
                f"the constructor takes {len(self._constructor)} arguments, got {len(args)}"
            )
        return abi_encode(self._constructor, list(args)) if args else b""

    def decode(self, function: str, data: bytes) -> tuple[Any, ...]:
        """The return values of ``function`` from the bytes an ``eth_call`` returned."""
        _, _, outputs = self._lookup(function)
        try:
            return tuple(abi_decode(outputs, data))
        except Exception as exc:  # eth_abi raises several unrelated types for short data
            raise LedgerError(f"the result of {function} does not decode: {exc}") from exc

    def selector(self, function: str) -> bytes:
        return self._lookup(function)[0]

    def _lookup(self, function: str) -> tuple[bytes, list[str], list[str]]:
        try:
            return self._functions[function]
        except KeyError as exc:
            raise InputError(f"the ABI has no function {function!r}") from exc


# -- RLP and transactions ------------------------------------------------------------------------


def rlp_encode(item: bytes | int | Sequence[Any]) -> bytes:
    """Recursive Length Prefix encoding (Yellow Paper, Appendix B) of bytes, ints and lists.

    Integers are big-endian without leading zeros (0 is the empty string).
    """
    if isinstance(item, int):
        if item < 0:
            raise InputError("RLP encodes only non-negative integers")
        item = item.to_bytes((item.bit_length() + 7) // 8, "big")
    if isinstance(item, bytes | bytearray):
        if len(item) == 1 and item[0] < 0x80:
            return bytes(item)
        return _rlp_length(len(item), 0x80) + bytes(item)
    payload = b"".join(rlp_encode(part) for part in item)
    return _rlp_length(len(payload), 0xC0) + payload


def _rlp_length(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes([offset + length])
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(size)]) + size


def encode_eip1559(
    wallet: Wallet,
    *,
    chain_id: int,
    nonce: int,
    tip: int,
    max_fee: int,
    gas: int,
    to: bytes | None,
    value: int,
    data: bytes,
) -> bytes:
    """The signed raw bytes of an EIP-1559 (type 2) transaction with an empty access list."""
    fields: list[Any] = [chain_id, nonce, tip, max_fee, gas, to or b"", value, data, []]
    v, r, s = wallet.sign_hash(keccak(b"\x02" + rlp_encode(fields)))
    return b"\x02" + rlp_encode([*fields, v, r, s])


def contract_address(sender: str, nonce: int) -> str:
    """The address a CREATE from ``sender`` at ``nonce`` deploys to (Yellow Paper eq. 85)."""
    raw = bytes.fromhex(sender.removeprefix("0x"))
    return str(to_checksum_address(keccak(rlp_encode([raw, nonce]))[12:]))


class Wallet:
    """A local account: a private key, its address and the next nonce it will use.

    The nonce is kept here, not asked of the node, so a batch of transactions can be signed at
    once; :meth:`TrafficNode.sync_nonces` reads it back from the chain when needed.
    """

    __slots__ = ("_fast", "_key", "address", "address_bytes", "nonce")

    def __init__(self, private_key: bytes, *, nonce: int = 0) -> None:
        if not isinstance(private_key, bytes) or len(private_key) != 32:
            raise InputError("a secp256k1 private key is 32 bytes")
        if not _valid_key(private_key):
            raise InputError("not a valid secp256k1 private key")
        self._key = private_key
        self._fast: Any = None
        if _coincurve is not None:
            # libsecp256k1 signs several times faster than eth_keys' wrapper around it
            self._fast = _coincurve.PrivateKey(private_key)
            public = self._fast.public_key.format(compressed=False)[1:]
            self.address_bytes = keccak(public)[12:]
        else:
            self.address_bytes = PrivateKey(private_key).public_key.to_canonical_address()
        self.address = str(to_checksum_address(self.address_bytes))
        self.nonce = nonce

    @classmethod
    def derive(cls, seed: bytes, label: str) -> Wallet:
        """A deterministic account: key = keccak(seed || label) (re-hashed while out of range)."""
        key = keccak(seed + label.encode())
        while not _valid_key(key):
            key = keccak(key)
        return cls(key)

    @property
    def private_key(self) -> bytes:
        return self._key

    def sign_hash(self, digest: bytes) -> tuple[int, int, int]:
        """ECDSA over secp256k1 of a 32-byte ``digest``: (y parity, r, s), s low (EIP-2)."""
        if self._fast is not None:
            raw = self._fast.sign_recoverable(digest, hasher=None)
            return raw[64], int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big")
        signature = PrivateKey(self._key).sign_msg_hash(digest)
        return signature.v, signature.r, signature.s

    def __repr__(self) -> str:
        return f"Wallet({self.address}, nonce={self.nonce})"


_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _valid_key(key: bytes) -> bool:
    return 0 < int.from_bytes(key, "big") < _SECP256K1_N


@dataclass(frozen=True, slots=True)
class TxRequest:
    """One transaction to include: who sends it, to what, and what it pays.

    ``gas`` is the explicit gas limit; ``tip`` the priority fee per gas in wei (it decides the
    position in the block); ``to`` None creates a contract.
    """

    sender: Wallet
    to: str | None
    data: bytes = b""
    value: int = 0
    gas: int = 21_000
    tip: int = 10**9


@dataclass(frozen=True, slots=True)
class Included:
    """A transaction that was mined: its hash (0x hex), block number, index and block time."""

    hash: str
    block: int
    index: int
    timestamp: int


@dataclass
class _Head:
    number: int
    timestamp: int
    base_fee: int
    gas_used: int
    gas_limit: int
    transactions: list[str] = field(default_factory=list)


# -- the node ------------------------------------------------------------------------------------


class TrafficNode:
    """A chain to generate traffic on: anvil over HTTP (batched, mining under control) or the
    embedded chain (one transaction per block, at the wall clock's time).

    Build it with :meth:`connect` or :meth:`from_ledger`; close it (or use ``with``).
    """

    def __init__(
        self,
        *,
        url: str | None,
        ledger: Ledger | None,
        timeout: float,
        batch_size: int,
    ) -> None:
        if batch_size < 1:
            raise InputError("batch_size must be at least 1")
        self.url = url
        self._ledger = ledger
        self._timeout = timeout
        self.batch_size = batch_size
        self._session = requests.Session() if url is not None else None
        self._chain_id: int | None = None
        self._head: _Head | None = None
        # the block mined last and not yet checked (number, expected hashes), and the number
        # and time of the newest block mined here
        self._unchecked: tuple[int, list[str]] | None = None
        self._last: tuple[int, int] | None = None
        #: transactions sent through this node (for throughput figures)
        self.sent = 0

    @classmethod
    def connect(cls, url: str, *, timeout: float = 30.0, batch_size: int = 500) -> TrafficNode:
        """A node at ``url`` that speaks anvil's methods (``evm_mine``, ``anvil_setBalance``)."""
        check_rpc_url(url)
        return cls(url=url, ledger=None, timeout=timeout, batch_size=batch_size)

    @classmethod
    def from_ledger(cls, ledger: Ledger) -> TrafficNode:
        """The chain behind ``ledger`` (its embedded chain, or its node), unbatched."""
        if ledger.url is not None:
            return cls.connect(ledger.url)
        return cls(url=None, ledger=ledger, timeout=30.0, batch_size=1)

    @property
    def mining_control(self) -> bool:
        """Whether blocks are mined on request with a chosen timestamp (anvil)."""
        return self.url is not None

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    def __enter__(self) -> TrafficNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw JSON-RPC ------------------------------------------------------------------------

    def rpc(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call; an error reply raises :class:`LedgerError`."""
        return self.batch([(method, list(params))])[0]

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """Results of ``calls`` in order, sent ``batch_size`` per HTTP request.

        anvil runs the calls of one batch concurrently: never put calls that depend on each
        other (a send and the ``evm_mine`` after it) in one batch.
        """
        results: list[Any] = []
        for start in range(0, len(calls), self.batch_size):
            results.extend(self._batch_once(calls[start : start + self.batch_size]))
        return results

    def _batch_once(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        if self._session is None:
            return [self._local(method, params) for method, params in calls]
        body = [
            {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
            for i, (method, params) in enumerate(calls)
        ]
        try:
            response = self._session.post(
                self.url or "",
                data=json.dumps(body),
                headers={"Content-Type": "application/json"},
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise NodeUnavailable(
                f"the node at {self.url} cannot be reached ({type(exc).__name__})"
            ) from exc
        if response.status_code != 200:
            raise NodeUnavailable(f"the node at {self.url} answered HTTP {response.status_code}")
        reply = parse_json(response.content, what=f"reply of {self.url}", max_bytes=_MAX_REPLY)
        if isinstance(reply, dict) and len(calls) == 1:
            reply = [reply]
        if not isinstance(reply, list) or len(reply) != len(calls):
            raise NodeUnavailable(f"the node at {self.url} sent a malformed batch reply")
        by_id: dict[int, Any] = {}
        for item in reply:
            if not isinstance(item, dict) or not isinstance(item.get("id"), int):
                raise NodeUnavailable(f"the node at {self.url} sent a malformed batch reply")
            by_id[item["id"]] = item
        out: list[Any] = []
        for i, (method, _) in enumerate(calls):
            item = by_id.get(i)
            if item is None:
                raise NodeUnavailable(f"the node at {self.url} left call {i} unanswered")
            if "error" in item:
                error = item["error"]
                message = error.get("message", error) if isinstance(error, dict) else error
                raise LedgerError(f"the node refused {method}: {str(message)[:300]}")
            out.append(item.get("result"))
        return out

    def _local(self, method: str, params: list[Any]) -> Any:
        assert self._ledger is not None
        ledger = self._ledger
        try:
            reply = ledger.w3.provider.make_request(method, params)  # type: ignore[arg-type]
        except Exception as exc:  # eth-tester raises its own types for a refused transaction
            raise LedgerError(f"the embedded chain refused {method}: {exc}") from exc
        if "error" in reply:
            error = reply["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise LedgerError(f"the embedded chain refused {method}: {str(message)[:300]}")
        return reply.get("result")

    # -- reads -------------------------------------------------------------------------------

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = _int(self.rpc("eth_chainId"))
        return self._chain_id

    def head(self, *, refresh: bool = False) -> _Head:
        """The latest block's number, time, base fee and gas (cached until a block is mined)."""
        if refresh:
            self.settle()
            self._last = None
        if self._head is None or refresh:
            block = self.rpc("eth_getBlockByNumber", "latest", False)
            self._head = _parse_head(block)
        return self._head

    def call(self, to: str, data: bytes, block: str = "latest") -> bytes:
        """``eth_call`` of ``data`` on ``to``; the returned bytes."""
        self.settle()
        result = self.rpc("eth_call", {"to": to, "data": "0x" + data.hex()}, block)
        return bytes.fromhex(str(result).removeprefix("0x"))

    def calls(self, requests_: Sequence[tuple[str, bytes]]) -> list[bytes]:
        """Several ``eth_call`` at the latest block, batched."""
        self.settle()
        replies = self.batch(
            [
                ("eth_call", [{"to": to, "data": "0x" + data.hex()}, "latest"])
                for to, data in requests_
            ]
        )
        return [bytes.fromhex(str(r).removeprefix("0x")) for r in replies]

    def receipts(self, hashes: Sequence[str]) -> list[dict[str, Any]]:
        """The receipts of ``hashes`` (JSON-RPC objects), batched; a missing one raises."""
        self.settle()
        replies = self.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
        for tx_hash, reply in zip(hashes, replies, strict=True):
            if not isinstance(reply, dict):
                raise LedgerError(f"no receipt for {tx_hash}")
        return [dict(r) for r in replies]

    def sync_nonces(self, wallets: Iterable[Wallet]) -> None:
        """Set each wallet's nonce to the chain's count of its transactions."""
        chosen = list(wallets)
        counts = self.batch([("eth_getTransactionCount", [w.address, "latest"]) for w in chosen])
        for wallet, count in zip(chosen, counts, strict=True):
            wallet.nonce = _int(count)

    # -- writes ------------------------------------------------------------------------------

    def set_balances(self, addresses: Iterable[str], wei: int) -> None:
        """Give each address ``wei`` (anvil's ``anvil_setBalance``; anvil only)."""
        if not self.mining_control:
            raise LedgerError("setting balances needs anvil; fund accounts by transfers instead")
        self.batch([("anvil_setBalance", [a, hex(wei)]) for a in addresses])

    def set_automine(self, enabled: bool) -> None:
        """Turn anvil's automine on or off (off: blocks come only from :meth:`mine_block`)."""
        self.settle()
        if self.mining_control:
            self.rpc("evm_setAutomine", enabled)

    def estimate_gas(self, sender: str, to: str | None, data: bytes, value: int = 0) -> int:
        request: dict[str, Any] = {"from": sender, "data": "0x" + data.hex(), "value": hex(value)}
        if to is not None:
            request["to"] = to
        return _int(self.rpc("eth_estimateGas", request))

    def sign(self, tx: TxRequest, *, max_fee_base: int) -> bytes:
        """Sign ``tx`` with its sender's next nonce (which advances).

        ``maxFeePerGas`` is ``max_fee_base + tip``: give every transaction of a block the same
        ``max_fee_base`` so that tips decide their order.
        """
        raw = encode_eip1559(
            tx.sender,
            chain_id=self.chain_id,
            nonce=tx.sender.nonce,
            tip=tx.tip,
            max_fee=max_fee_base + tx.tip,
            gas=tx.gas,
            to=bytes.fromhex(tx.to[2:]) if tx.to is not None else None,
            value=tx.value,
            data=tx.data,
        )
        tx.sender.nonce += 1
        return raw

    def mine_block(self, txs: Sequence[TxRequest], timestamp: int | None = None) -> list[Included]:
        """Sign, send and mine ``txs`` in one block at ``timestamp`` (seconds), in list order.

        The list must have strictly decreasing tips (a builder's order; :class:`InputError`
        otherwise) and fit the block's gas limit. On anvil the block's transactions are checked
        against the list with the next block's request (or by :meth:`settle`, which every read
        calls first), and a difference raises :class:`LedgerError`. On the embedded chain each
        transaction is its own block and ``timestamp`` is ignored.
        """
        for before, after in itertools.pairwise(txs):
            if after.tip >= before.tip:
                raise InputError("a block's transactions must be listed with decreasing tips")
        head = self.head()
        base = next_base_fee(head.base_fee, head.gas_used, head.gas_limit)
        if not self.mining_control:
            return self._send_one_by_one(txs)
        if sum(tx.gas for tx in txs) > head.gas_limit:
            raise InputError(f"the transactions' gas limits exceed the block's ({head.gas_limit})")
        last_number, last_time = self._tip_of_chain()
        when = timestamp if timestamp is not None else last_time + 12
        if when <= last_time:
            raise InputError(f"block time {when} is not after the head's ({last_time})")
        # priced off the last block checked, which may be one behind the head, as a wallet
        # that has not yet seen the newest block does (2x the base fee covers several blocks)
        raws = [self.sign(tx, max_fee_base=2 * base) for tx in txs]
        hashes = ["0x" + keccak(raw).hex() for raw in raws]
        # the previous block is checked in the same request as this block's sends: one round
        # trip saved per block (it is already mined, so running concurrently is safe)
        check = self._unchecked
        calls: list[tuple[str, list[Any]]] = []
        if check is not None:
            calls.append(("eth_getBlockByNumber", [hex(check[0]), False]))
        calls += [("eth_sendRawTransaction", ["0x" + raw.hex()]) for raw in raws]
        replies = self.batch(calls) if calls else []
        if check is not None:
            self._check(check, replies[0])
        self.rpc("evm_mine", when)
        self.sent += len(raws)
        self._unchecked = (last_number + 1, hashes)
        self._last = (last_number + 1, when)
        return [
            Included(hash=h, block=last_number + 1, index=i, timestamp=when)
            for i, h in enumerate(hashes)
        ]

    @property
    def last_block(self) -> int:
        """The number of the newest block (mined here or found at the head)."""
        return self._tip_of_chain()[0]

    def settle(self) -> None:
        """Check the last mined block (its transactions, in order) and refresh the head."""
        check = self._unchecked
        if check is not None:
            self._check(check, self.rpc("eth_getBlockByNumber", hex(check[0]), False))

    def _check(self, check: tuple[int, list[str]], block: Any) -> None:
        number, hashes = check
        mined = _parse_head(block)
        self._unchecked = None
        self._head = mined
        if mined.number != number or mined.transactions != hashes:
            raise LedgerError(
                f"block {number} does not hold the {len(hashes)} transactions sent in order "
                f"(it holds {len(mined.transactions)}); is automine off and the pool empty?"
            )

    def _tip_of_chain(self) -> tuple[int, int]:
        if self._last is None:
            head = self.head()
            self._last = (head.number, head.timestamp)
        return self._last

    def _send_one_by_one(self, txs: Sequence[TxRequest]) -> list[Included]:
        out: list[Included] = []
        for tx in txs:
            # the embedded chain mines each transaction at once: price it off the current head
            head = self.head()
            fee = 2 * next_base_fee(head.base_fee, head.gas_used, head.gas_limit)
            raw = self.sign(tx, max_fee_base=fee)
            tx_hash = "0x" + keccak(raw).hex()
            self.rpc("eth_sendRawTransaction", "0x" + raw.hex())
            mined = self.head(refresh=True)
            if tx_hash not in mined.transactions:
                raise LedgerError(f"transaction {tx_hash} was not mined in block {mined.number}")
            out.append(
                Included(
                    hash=tx_hash,
                    block=mined.number,
                    index=mined.transactions.index(tx_hash),
                    timestamp=mined.timestamp,
                )
            )
            self.sent += 1
        return out

    def deploy(
        self,
        sender: Wallet,
        artifact: BuildArtifact,
        *args: Any,
        gas: int | None = None,
        timestamp: int | None = None,
    ) -> str:
        """Deploy ``artifact`` with constructor ``args`` in its own block; its address."""
        data = artifact.bytecode + artifact.interface.encode_constructor(*args)
        limit = gas if gas is not None else self.estimate_gas(sender.address, None, data) * 5 // 4
        address = contract_address(sender.address, sender.nonce)
        (included,) = self.mine_block([TxRequest(sender, None, data, 0, limit, 10**9)], timestamp)
        (receipt,) = self.receipts([included.hash])
        if _int(receipt.get("status")) != 1:
            raise LedgerError(f"deploying {artifact.name} reverted")
        return address


def _int(value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise NodeUnavailable(f"the node sent {str(value)[:40]!r} where a number was expected")


def _parse_head(block: Any) -> _Head:
    if not isinstance(block, dict):
        raise NodeUnavailable("the node sent no latest block")

    # a node sends JSON-RPC's camelCase hex; the embedded chain (eth-tester) snake_case values
    def field(camel: str, snake: str) -> Any:
        return block.get(camel, block.get(snake))

    hashes = []
    for tx in block.get("transactions", []):
        value = tx.get("hash") if isinstance(tx, dict) else tx
        text = "0x" + bytes(value).hex() if isinstance(value, bytes | bytearray) else str(value)
        hashes.append(text.lower() if text.startswith("0x") else "0x" + text.lower())
    return _Head(
        number=_int(field("number", "number")),
        timestamp=_int(field("timestamp", "timestamp")),
        base_fee=_int(field("baseFeePerGas", "base_fee_per_gas") or 0),
        gas_used=_int(field("gasUsed", "gas_used")),
        gas_limit=_int(field("gasLimit", "gas_limit")),
        transactions=hashes,
    )


def checksum_address(address: str) -> str:
    """``address`` in EIP-55 mixed case; :class:`InputError` if it is not 20 bytes of hex."""
    try:
        return str(to_checksum_address(address))
    except (ValueError, TypeError) as exc:
        raise InputError(f"not an Ethereum address: {address!r}") from exc
