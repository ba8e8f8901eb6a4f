"""The Ledger: one API over the embedded chain and any Ethereum JSON-RPC node.

Both backends mean the same thing (like titanoboa's ``Env`` and ``NetworkEnv``): transactions
are built, priced (EIP-1559) and signed locally, sent raw, and their receipts awaited. Only the
transport differs: an in-process py-evm chain, or HTTP to a node. Every third-party exception
is translated here into the :mod:`ailedger.errors` tree.

Fee scheduling: by default a transaction is sent at once, priced as web3.py does
(``maxFeePerGas = 2 * base fee + tip``). Given a :class:`FeeHook` (set by whoever builds the
ledger, e.g. a workspace with ``[chain] fee_policy = "scheduled"``), :meth:`Ledger.send` (and so
:meth:`~Ledger.transact`, :meth:`~Ledger.deploy`, :meth:`~Ledger.transfer`) first asks the
hook's advisor, for a request that does not set its own fees, with the blocks waited so far and
the latency bound, whether to send now; while the answer is to wait it polls the head and asks
again at each new block, for at most the bound in blocks (tightened by
:meth:`Ledger.fee_bound`) and at most ``stall_seconds`` without a new block (a chain that mines
only on demand, such as the embedded one, never makes one by itself), then sends with the
advised ``maxFeePerGas`` and ``maxPriorityFeePerGas``. An advisor that fails falls back to the
default pricing, with one warning log line.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import requests
import urllib3.exceptions
from eth_tester.exceptions import TransactionFailed
from eth_typing import ChecksumAddress
from eth_utils.address import is_address, to_checksum_address
from web3 import Web3
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    TimeExhausted,
    TransactionNotFound,
    Web3Exception,
    Web3RPCError,
)

from ailedger.errors import (
    ContractNotFound,
    InputError,
    LedgerError,
    NodeUnavailable,
    TransactionDropped,
    TransactionReverted,
    WrongChain,
)
from ailedger.ledger._embedded import EmbeddedChain
from ailedger.ledger._rpc import BoundedHTTPProvider, NodeReplyError
from ailedger.ledger._settings import FeeAdvice, LedgerSettings, check_rpc_url
from ailedger.ledger.account import Signer
from ailedger.ledger.contracts import Artifact

if TYPE_CHECKING:
    from web3.contract import Contract
    from web3.contract.contract import ContractFunction
    from web3.types import BlockIdentifier

__all__ = [
    "FeeAdvice",
    "FeeAdvisor",
    "FeeHook",
    "Ledger",
    "LedgerSettings",
    "PendingTransaction",
    "Receipt",
]

T = TypeVar("T")
_TRANSIENT = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    ProviderConnectionError,
    ConnectionError,
    TimeoutError,
    urllib3.exceptions.HTTPError,  # a reply cut off while it was read
)
# what web3 raises when formatting a reply that passed the provider's checks but still does not
# fit (a field of the wrong type deep inside a log, say): the node's fault, not ours
_MALFORMED = (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError)
_GWEI = 10**9
_ZERO_ADDRESS = "0x" + "00" * 20
_REBROADCAST_AFTER = 5.0  # seconds without a receipt before the raw transaction is re-sent
_MAX_WEI = 2**256 - 1
_log = logging.getLogger("ailedger.ledger")


class FeeAdvisor(Protocol):
    """Asked with the blocks a transaction has waited (0 when it became due) and its latency
    bound in blocks (at least 1), answers whether to send now and with which fees."""

    def __call__(self, waited: int, within: int, /) -> FeeAdvice: ...


@dataclass(frozen=True, kw_only=True)
class FeeHook:
    """How :meth:`Ledger.send` times and prices transactions (see the module docstring).

    ``advisor`` is asked block by block; ``within`` is the latency bound in blocks (a
    transaction is sent by the time it has waited ``within - 1`` blocks, so it can be mined
    within ``within``); ``stall_seconds`` is the longest wait for a new block on a node (the
    embedded chain never waits) before the transaction is sent with the advised fees.
    """

    advisor: FeeAdvisor
    within: int = 30  # ailedger.sentinel.fee_advice.DEFAULT_WAIT_BLOCKS (tested equal)
    stall_seconds: float = 30.0

    def __post_init__(self) -> None:
        if (
            isinstance(self.within, bool)
            or not isinstance(self.within, int)
            or not 1 <= self.within <= 100_000
        ):
            raise InputError(
                f"within must be an integer in [1, 100000] blocks, got {self.within!r}"
            )
        if not 0.0 <= self.stall_seconds <= 86_400.0:
            raise InputError(
                f"stall_seconds must lie in [0, 86400] seconds, got {self.stall_seconds!r}"
            )


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """A mined transaction's outcome."""

    tx_hash: str
    block_number: int
    block_hash: str
    gas_used: int
    effective_gas_price: int
    raw: Any = field(repr=False, compare=False)


@dataclass(kw_only=True)
class PendingTransaction:
    """A signed transaction that was sent; :meth:`Ledger.wait` turns it into a receipt."""

    tx_hash: str
    raw: bytes = field(repr=False)
    nonce: int
    request: dict[str, Any] = field(repr=False)


class Ledger:
    """A connection to one chain with (optionally) one account that signs.

    Build it with :meth:`embedded` or :meth:`connect`; close it (or use ``with``) to release the
    embedded chain's lock.
    """

    def __init__(
        self,
        *,
        w3: Web3,
        backend: str,
        url: str | None,
        signer: Signer | None,
        settings: LedgerSettings,
        on_close: Callable[[], None] | None = None,
        fee_hook: FeeHook | None = None,
    ) -> None:
        self.w3 = w3
        w3.eth.default_account = _checksum(signer.address if signer else _ZERO_ADDRESS)
        self.backend = backend
        self.url = url
        self.signer = signer
        self.settings = settings
        self._on_close = on_close
        self._chain_id: int | None = None
        self._nonce_lock = threading.Lock()
        #: how :meth:`send` times and prices transactions (None: at once, priced by default)
        self.fee_hook = fee_hook
        # per-thread stack of deadlines (blocks) from fee_bound(), shared with with_signer() copies
        self._bounds = threading.local()

    # -- factories ------------------------------------------------------------------------

    @classmethod
    def embedded(
        cls,
        directory: Path,
        *,
        signer: Signer | None = None,
        genesis_balances: dict[str, int] | None = None,
        lock_timeout: float = 10.0,
        settings: LedgerSettings | None = None,
    ) -> Ledger:
        """Open (or create) the in-process chain kept in ``directory``.

        ``genesis_balances`` (address to wei) funds accounts when the chain is created.
        """
        chain = EmbeddedChain(
            directory, genesis_balances=genesis_balances, lock_timeout=lock_timeout
        )
        base = settings or LedgerSettings()
        local = LedgerSettings(
            confirmations=1,
            retries=1,
            receipt_timeout=base.receipt_timeout,
            poll_interval=0.0,
            priority_fee_wei=base.priority_fee_wei if base.priority_fee_wei is not None else _GWEI,
            gas_margin=base.gas_margin,
        )
        return cls(
            w3=Web3(chain.provider),
            backend="embedded",
            url=None,
            signer=signer,
            settings=local,
            on_close=chain.close,
        )

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        signer: Signer | None = None,
        settings: LedgerSettings | None = None,
        expected_chain_id: int | None = None,
    ) -> Ledger:
        """Use the Ethereum JSON-RPC node at ``url`` (http or https).

        With ``expected_chain_id``, a node serving another chain is refused (:class:`WrongChain`).
        """
        check_rpc_url(url)
        chosen = settings or LedgerSettings()
        provider = BoundedHTTPProvider(url, timeout=chosen.request_timeout)
        ledger = cls(w3=Web3(provider), backend="rpc", url=url, signer=signer, settings=chosen)
        if expected_chain_id is not None and ledger.chain_id != expected_chain_id:
            raise WrongChain(expected_chain_id, ledger.chain_id, url)
        return ledger

    def with_signer(self, signer: Signer | None) -> Ledger:
        """The same chain and connection, signing as ``signer`` (with its own nonces).

        The new ledger shares this one's connection: closing it does nothing, closing this one
        ends both.
        """
        other = Ledger(
            w3=Web3(self.w3.provider),
            backend=self.backend,
            url=self.url,
            signer=signer,
            settings=self.settings,
            fee_hook=self.fee_hook,
        )
        other._bounds = self._bounds
        return other

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.url or "embedded"
        return f"Ledger({where}, account={self.signer.address if self.signer else None})"

    # -- reads ----------------------------------------------------------------------------

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self._rpc(lambda: self.w3.eth.chain_id))
        return self._chain_id

    @property
    def account(self) -> str:
        return self._require_signer().address

    def block_number(self) -> int:
        return int(self._rpc(lambda: self.w3.eth.block_number))

    def balance(self, address: str | None = None) -> int:
        """Balance in wei of ``address`` (default: this ledger's account)."""
        who = _checksum(address if address is not None else self.account)
        return int(self._rpc(lambda: self.w3.eth.get_balance(who)))

    def code(self, address: str) -> bytes:
        target = _checksum(address)
        return bytes(self._rpc(lambda: self.w3.eth.get_code(target)))

    def contract(self, artifact: Artifact, address: str, *, check_code: bool = True) -> Contract:
        """A handle on the deployed ``artifact`` at ``address``.

        With ``check_code`` the code at the address must be the artifact's runtime bytecode, so
        a wrong or stale address is refused with :class:`ContractNotFound`.
        """
        target = _checksum(address)
        if check_code:
            code = self.code(target)
            if not code:
                raise ContractNotFound(
                    f"no contract at {target} on chain {self.chain_id} (expected {artifact.name})"
                )
            if code[: len(artifact.bytecode_runtime)] != artifact.bytecode_runtime:
                raise ContractNotFound(
                    f"the contract at {target} on chain {self.chain_id} is not {artifact.name} "
                    "as this version of ailedger builds it (an older deployment? a workspace "
                    "deploys the current one when `ailedger init` runs again with that address "
                    "removed from config.toml's [contracts])"
                )
        contract: Contract = self.w3.eth.contract(address=target, abi=artifact.abi)
        return contract

    def call(self, function: ContractFunction, block: BlockIdentifier = "latest") -> Any:
        """Run a view function; a revert raises :class:`TransactionReverted`."""
        return self._rpc(lambda: function.call(block_identifier=block))

    def logs(
        self,
        contract: Contract,
        event: str,
        *,
        from_block: int = 0,
        to_block: int | str = "latest",
        argument_filters: dict[str, Any] | None = None,
    ) -> list[Any]:
        """Decoded logs of ``event`` emitted by ``contract`` in a block range."""
        event_type = getattr(contract.events, event)
        return list(
            self._rpc(
                lambda: event_type.get_logs(
                    from_block=from_block, to_block=to_block, argument_filters=argument_filters
                )
            )
        )

    # -- writes ---------------------------------------------------------------------------

    def send(self, request: dict[str, Any]) -> PendingTransaction:
        """Price, sign and broadcast a transaction; returns before it is mined.

        Several transactions can be in flight at once (nonces follow the node's pending count). A
        transaction that would revert is refused before it is sent (:class:`TransactionReverted`).
        With a :attr:`fee_hook`, a request without ``maxFeePerGas`` is first timed and priced by
        the hook's advisor (see the module docstring), so this may wait for a cheaper block.
        """
        signer = self._require_signer()
        tx = dict(request)
        tx.setdefault("from", signer.address)
        tx.setdefault("value", 0)
        tx["chainId"] = self.chain_id
        tx["type"] = 2
        if "gas" not in tx:
            estimate = self._rpc(lambda: self.w3.eth.estimate_gas(tx))  # type: ignore[arg-type]
            tx["gas"] = int(estimate * self.settings.gas_margin)
        hook = self.fee_hook
        if hook is not None and "maxFeePerGas" not in tx:
            tx.update(self._advised_fees(hook))
        if "maxFeePerGas" not in tx:
            tip = self._priority_fee()
            base = int(self._rpc(lambda: self.w3.eth.get_block("latest")).get("baseFeePerGas", 0))
            tx["maxPriorityFeePerGas"] = tip
            tx["maxFeePerGas"] = 2 * base + tip
        with self._nonce_lock:
            # The node's pending count includes our transactions in flight (each was sent before
            # the lock was released), so asking it for every transaction keeps several in flight
            # and also heals a gap left by one that a reorg or an outage dropped.
            tx["nonce"] = int(
                self._rpc(
                    lambda: self.w3.eth.get_transaction_count(_checksum(signer.address), "pending")
                )
            )
            tx.pop("from", None)
            raw = signer.sign_transaction(tx)
            tx_hash = self._broadcast(raw)
        return PendingTransaction(tx_hash=tx_hash, raw=raw, nonce=tx["nonce"], request=tx)

    def wait(self, pending: PendingTransaction, *, confirmations: int | None = None) -> Receipt:
        """Wait until ``pending`` is mined and buried under ``confirmations`` blocks.

        If the transaction vanishes (a reorg dropped its block), it is broadcast again; if it
        cannot be re-included before ``receipt_timeout`` it raises :class:`TransactionDropped`.
        A mined revert raises :class:`TransactionReverted` with the reason.
        """
        needed = 1 if self.backend == "embedded" else (confirmations or self.settings.confirmations)
        deadline = time.monotonic() + self.settings.receipt_timeout
        last_broadcast = time.monotonic()
        seen = False
        while True:
            receipt = self._receipt(pending.tx_hash)
            if receipt is None:
                stale = time.monotonic() - last_broadcast > _REBROADCAST_AFTER
                if seen or stale or not self._known(pending.tx_hash):
                    self._rebroadcast(pending)
                    last_broadcast = time.monotonic()
                    seen = False
            else:
                if int(receipt["status"]) != 1:
                    raise TransactionReverted(
                        self._revert_reason(pending, int(receipt["blockNumber"])),
                        tx_hash=pending.tx_hash,
                    )
                seen = True
                mined_in = int(receipt["blockNumber"])
                # The embedded chain has one writer and no forks: a receipt is final at once.
                if self.backend == "embedded" or (
                    self.block_number() - mined_in + 1 >= needed and self._is_canonical(receipt)
                ):
                    return Receipt(
                        tx_hash=pending.tx_hash,
                        block_number=mined_in,
                        block_hash="0x" + bytes(receipt["blockHash"]).hex(),
                        gas_used=int(receipt["gasUsed"]),
                        effective_gas_price=int(receipt.get("effectiveGasPrice", 0)),
                        raw=receipt,
                    )
            if time.monotonic() > deadline:
                raise TransactionDropped(
                    f"transaction {pending.tx_hash} was not mined with {needed} confirmation(s) "
                    f"within {self.settings.receipt_timeout:.0f} s"
                )
            time.sleep(self.settings.poll_interval)

    def transact(self, function: ContractFunction, *, value: int = 0) -> Receipt:
        """Call a contract function in a transaction and wait for its receipt.

        With a :attr:`fee_hook` the transaction is first timed and priced by its advisor
        (:meth:`send`); without one it is sent at once.
        """
        tx = {"to": function.address, "data": function._encode_transaction_data(), "value": value}
        return self.wait(self.send(tx))

    @contextlib.contextmanager
    def fee_bound(self, blocks: int) -> Iterator[None]:
        """Within the ``with`` block, this thread's sends are scheduled to be mined at most
        ``blocks`` blocks after the head at entry: a deadline, so successive sends share it.
        The tighter of this, any enclosing bound and the hook's ``within`` applies; none left
        (or a head that cannot be read) sends at once. Without a :attr:`fee_hook` it changes
        nothing (and asks the node nothing)."""
        if isinstance(blocks, bool) or not isinstance(blocks, int):
            raise InputError(f"a fee bound is an integer number of blocks, got {blocks!r}")
        deadline = None
        if self.fee_hook is not None:
            try:
                deadline = self.block_number() + blocks
            except LedgerError:
                deadline = 0  # the head is unknown: the sends inside go at once
        with self.fee_deadline(deadline):
            yield

    @contextlib.contextmanager
    def fee_deadline(self, block: int | None) -> Iterator[None]:
        """:meth:`fee_bound` with the deadline given as a block number: this thread's sends
        inside are scheduled to be mined by block ``block`` (a deadline already passed: at
        once). None, or no :attr:`fee_hook`, changes nothing; it never asks the node."""
        if block is not None and (isinstance(block, bool) or not isinstance(block, int)):
            raise InputError(f"a fee deadline is a block number, got {block!r}")
        stack: list[int] | None = getattr(self._bounds, "stack", None)
        if stack is None:
            stack = self._bounds.stack = []
        deadline = block if self.fee_hook is not None else None
        if deadline is not None:
            stack.append(deadline)
        try:
            yield
        finally:
            if deadline is not None:
                stack.pop()

    def current_fee_bound(self, head: int | None = None) -> int | None:
        """The latency bound (blocks, at least 1) a send would have now in this thread (``head``:
        the latest block, asked of the node if not given), or None without a :attr:`fee_hook`."""
        hook = self.fee_hook
        if hook is None:
            return None
        deadlines: list[int] = getattr(self._bounds, "stack", None) or []
        if not deadlines:
            return hook.within
        now = self.block_number() if head is None else head
        return max(1, min([hook.within, *(d - now for d in deadlines)]))

    def deploy(self, artifact: Artifact, *args: Any) -> tuple[str, Receipt]:
        """Deploy ``artifact`` with constructor ``args``; returns (address, receipt)."""
        factory = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        data = factory.constructor(*args).data_in_transaction
        receipt = self.wait(self.send({"data": data}))
        address = receipt.raw.get("contractAddress")
        if not address:
            raise LedgerError(f"deploying {artifact.name} produced no contract address")
        return str(to_checksum_address(address)), receipt

    def transfer(self, to: str, wei: int) -> Receipt:
        """Send ``wei`` to ``to`` (funding another party's account)."""
        return self.wait(self.send({"to": _checksum(to), "value": wei, "gas": 21000}))

    # -- internals ------------------------------------------------------------------------

    def _advised_fees(self, hook: FeeHook) -> dict[str, int]:
        """The fees to send with once ``hook``'s advisor says send (or a bound is reached);
        empty (the default pricing) when the advisor or the polling fails."""
        try:
            advice = self._await_advice(hook)
        except Exception as exc:  # any failure of the advisor or the polling: never lose the tx
            text = str(exc).splitlines()[0] if str(exc) else ""
            _log.warning(
                "the fee advisor failed (%s%s); sending at the default price",
                type(exc).__name__,
                f": {text[:200]}" if text else "",
            )
            return {}
        return {
            "maxFeePerGas": advice.max_fee_per_gas,
            "maxPriorityFeePerGas": advice.max_priority_fee_per_gas,
        }

    def _await_advice(self, hook: FeeHook) -> FeeAdvice:
        """Ask at each new block until the advisor says send, ``within - 1`` blocks have
        passed, or no block came for ``stall_seconds``; the last answer gives the fees."""
        stall = 0.0 if self.backend == "embedded" else hook.stall_seconds
        start = last = self.block_number()
        within = self.current_fee_bound(start) or 1
        since = time.monotonic()
        waited = 0
        advice = _checked_advice(hook.advisor(waited, within))
        while not advice.send and waited < within - 1:
            if stall == 0:  # the embedded chain: no block will come before this one is sent
                return advice
            logging.getLogger("ailedger.progress").info(
                "transaction waits for a cheaper base fee: block %d, %d of %d blocks (%s)",
                last,
                waited,
                within,
                advice.reason,
            )
            while (head := self.block_number()) == last:
                if time.monotonic() - since >= stall:
                    logging.getLogger("ailedger.progress").info(
                        "no new block for %.0f s: sending now with the advised fees", stall
                    )
                    return advice
                time.sleep(max(self.settings.poll_interval, 0.02))
            last, since = head, time.monotonic()
            # every new head counts as a block at least: a head that moves back (a reorg, or a
            # node that lies) never makes the wait endless
            waited = max(head - start, waited + 1)
            advice = _checked_advice(hook.advisor(waited, within))
        return advice

    def _require_signer(self) -> Signer:
        if self.signer is None:
            raise LedgerError("this ledger has no account to sign with")
        return self.signer

    def _rpc(self, request: Callable[[], T]) -> T:
        """Run one node request, retrying outages with exponential backoff.

        A node that answers with something other than a usable JSON-RPC reply is unavailable
        (:class:`NodeUnavailable`), at once unless the failure looks transient.
        """
        delay = self.settings.backoff
        waited = 0.0
        for attempt in range(1, self.settings.retries + 1):
            try:
                return request()
            except (*_TRANSIENT, NodeReplyError) as exc:
                final = isinstance(exc, NodeReplyError) and not exc.transient
                if attempt < self.settings.retries and not final:
                    waited += delay
                    if waited >= 1.0:  # progress once the wait is noticeable (CLI: stderr)
                        logging.getLogger("ailedger.progress").info(
                            "the node at %s did not answer (%s); retrying in %.2f s (%d of %d)",
                            self.url,
                            type(exc).__name__,
                            delay,
                            attempt + 1,
                            self.settings.retries,
                        )
                    time.sleep(delay)
                    delay = min(delay * 2, self.settings.backoff_max)
                    continue
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                if isinstance(exc, NodeReplyError):
                    what = f"{exc}{tries}"
                else:
                    what = f"did not answer{tries} ({type(exc).__name__})"
                raise NodeUnavailable(f"the node at {self.url} {what}") from exc
            except requests.RequestException as exc:
                raise NodeUnavailable(
                    f"the node at {self.url} cannot be reached ({type(exc).__name__})"
                ) from exc
            except ContractLogicError as exc:
                raise TransactionReverted(_reason(str(exc.message or exc))) from exc
            except TransactionFailed as exc:
                raise TransactionReverted(_reason(str(exc))) from exc
            except (TransactionNotFound, TimeExhausted):
                raise
            except Web3RPCError as exc:
                raise LedgerError(f"the node refused the request: {_rpc_message(exc)}") from exc
            except Web3Exception as exc:
                raise LedgerError(f"{type(exc).__name__}: {exc}") from exc
            except _MALFORMED as exc:
                if self.backend != "rpc":
                    raise
                raise NodeUnavailable(
                    f"the node at {self.url} sent a reply that does not fit its request "
                    f"({type(exc).__name__})"
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _broadcast(self, raw: bytes) -> str:
        return "0x" + bytes(self._rpc(lambda: self.w3.eth.send_raw_transaction(raw))).hex()

    def _rebroadcast(self, pending: PendingTransaction) -> None:
        with contextlib.suppress(LedgerError):
            self._broadcast(pending.raw)

    def _receipt(self, tx_hash: str) -> Any:
        try:
            return self._rpc(lambda: self.w3.eth.get_transaction_receipt(tx_hash))  # type: ignore[arg-type]
        except (TransactionNotFound, TimeExhausted):
            return None

    def _known(self, tx_hash: str) -> bool:
        """Whether the node has the transaction (mined or in its pool)."""
        try:
            return self._rpc(lambda: self.w3.eth.get_transaction(tx_hash)) is not None  # type: ignore[arg-type]
        except (TransactionNotFound, TimeExhausted):
            return False

    def _is_canonical(self, receipt: Any) -> bool:
        block = self._rpc(lambda: self.w3.eth.get_block(int(receipt["blockNumber"])))
        return bool(block["hash"] == receipt["blockHash"])

    def _priority_fee(self) -> int:
        if self.settings.priority_fee_wei is not None:
            return self.settings.priority_fee_wei
        try:
            return int(self._rpc(lambda: self.w3.eth.max_priority_fee))
        except LedgerError:
            return _GWEI

    def _revert_reason(self, pending: PendingTransaction, block: int) -> str:
        replay: dict[str, Any] = {
            k: pending.request[k] for k in ("to", "data", "value") if k in pending.request
        }
        replay["from"] = self.account
        try:
            self._rpc(lambda: self.w3.eth.call(replay, block - 1))  # type: ignore[arg-type]
        except TransactionReverted as exc:
            return exc.reason
        except LedgerError:
            pass
        return "reverted without a reason"


def _checked_advice(advice: FeeAdvice) -> FeeAdvice:
    """``advice`` if its fees can price a transaction, else :class:`LedgerError`."""
    fee, tip = advice.max_fee_per_gas, advice.max_priority_fee_per_gas
    for value in (fee, tip):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_WEI:
            raise LedgerError(f"the fee advisor gave a fee that is not a wei amount: {value!r}")
    if tip > fee:
        raise LedgerError(f"the fee advisor's tip {tip} exceeds its fee cap {fee}")
    return advice


def _checksum(address: str) -> ChecksumAddress:
    if not isinstance(address, str) or not is_address(address):
        raise InputError(f"not an Ethereum address: {address!r}")
    return to_checksum_address(address)


def _reason(message: str) -> str:
    for prefix in ("execution reverted: ", "execution reverted:", "execution reverted"):
        if message.startswith(prefix):
            message = message[len(prefix) :]
            break
    return message.strip().strip("'\"")


def _rpc_message(exc: Web3RPCError) -> str:
    response = getattr(exc, "rpc_response", None)
    if isinstance(response, dict) and isinstance(response.get("error"), dict):
        return str(response["error"].get("message", exc))
    return str(exc)
