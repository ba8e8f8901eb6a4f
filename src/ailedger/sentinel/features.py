"""Per-transaction features, computed in one pass over blocks in chain order.

:class:`FeatureExtractor` is fed :class:`~ailedger.ledger.chaindata.BlockRecord` objects in
order and returns one :class:`FeatureRow` per transaction: a fixed vector of numbers (named by
:data:`FEATURE_NAMES`) plus the decoded events the rule detectors need.

What it computes (units in the names: ``_gwei``, ``_log10`` of wei or token base units,
``_blocks``):

- the transaction itself: value, gas limit and used, fee premium over the base fee (the tip
  actually paid, ``effective_gas_price - base_fee``) and the headroom of the fee cap
  (``max_fee_per_gas - base_fee``), calldata selector, contract creation, revert;
- the accounts: age (blocks since first seen, saturating at ``window``), activity
  (transactions sent in the window), fan-in and fan-out (distinct counterparties, over plain
  and token transfers, in a sliding window of ``window`` blocks), approvals received,
  look-alike counterparties (same first four and last four hex digits as a recent
  counterparty of the other side, the address-poisoning pattern);
- the logs: ERC-20 ``Transfer`` and ``Approval`` (EIP-20), decoded only in their standard form
  (three topics and a 32-byte amount; ERC-721's ``Transfer`` has the same topic but four topics
  and is counted apart, never read as an amount), and Uniswap V2 ``Swap`` and ``Sync`` (Adams,
  Zinsmeister, Robinson, "Uniswap v2 Core", 2020: direction, amounts, pool, price impact from
  the reserves ``Sync`` reports);
- the block: position, share of the block going to the same target or coming from the same
  sender, and the position relative to swaps in the same pool (same sender before/after in the
  opposite direction, another sender on both sides), the shape of a sandwich (Qin, Zhou,
  Gervais, "Quantifying Blockchain Extractable Value", IEEE S&P 2022).

Memory is flat in chain length: at most ``max_accounts`` accounts are tracked (least recently
active dropped first) and each keeps at most ``max_events`` recent events per kind.

Retraction (reorgs): :meth:`FeatureExtractor.retract` undoes the newest processed block (call it
repeatedly, newest first, for a deeper reorg; up to ``reorg_depth`` blocks are journalled). The
journal records which events and which new accounts each block added, and retraction removes
exactly those. Two effects are not undone, by design: an event pushed out of a full per-account
buffer (``max_events``) by the retracted block, and an account dropped by the LRU cap. Both only
shorten history already at the caps, which the features tolerate by construction.

Addresses in rows are lower-case hex (``0x`` + 40 digits), so they compare without checksums.
"""

from __future__ import annotations

import csv
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ailedger.errors import InputError
from ailedger.ledger.chaindata import BlockRecord, LogRecord, TxRecord

__all__ = [
    "APPROVAL_TOPIC",
    "FEATURE_NAMES",
    "SWAP_TOPIC",
    "SYNC_TOPIC",
    "TRANSFER_TOPIC",
    "AmmSwap",
    "FeatureExtractor",
    "FeatureRow",
    "Lookalike",
    "TokenApproval",
    "TokenTransfer",
    "decode_approval",
    "decode_swap",
    "decode_sync",
    "decode_transfer",
    "is_lookalike",
    "rows_to_matrix",
    "write_csv",
    "write_parquet",
]

# keccak256("Transfer(address,address,uint256)"): EIP-20 and EIP-721 share it
TRANSFER_TOPIC = bytes.fromhex("ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef")
# keccak256("Approval(address,address,uint256)")
APPROVAL_TOPIC = bytes.fromhex("8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925")
# keccak256("Swap(address,uint256,uint256,uint256,uint256,address)"): Uniswap V2 pair
SWAP_TOPIC = bytes.fromhex("d78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822")
# keccak256("Sync(uint112,uint112)"): Uniswap V2 pair, reserves after every change
SYNC_TOPIC = bytes.fromhex("1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbbad1")

# transfer(address,uint256), approve(address,uint256), transferFrom(address,address,uint256)
_SEL_TRANSFER = bytes.fromhex("a9059cbb")
_SEL_APPROVE = bytes.fromhex("095ea7b3")
_SEL_TRANSFER_FROM = bytes.fromhex("23b872dd")

#: an approval at least this large is "unlimited" (wallets approve 2**256 - 1)
UNLIMITED_APPROVAL = 2**255

FEATURE_NAMES: tuple[str, ...] = (
    "value_log10",
    "zero_value",
    "gas_limit",
    "gas_used",
    "gas_used_ratio",
    "fee_premium_gwei",
    "max_fee_headroom_gwei",
    "calldata_len",
    "has_selector",
    "selector_transfer",
    "selector_approve",
    "selector_transfer_from",
    "contract_creation",
    "reverted",
    "sender_age_blocks",
    "sender_new",
    "recipient_age_blocks",
    "recipient_new",
    "sender_txs_window",
    "sender_fan_out",
    "sender_fan_in",
    "recipient_fan_in",
    "recipient_fan_out",
    "sender_approvals_received",
    "logs",
    "erc20_transfers",
    "erc20_zero_transfers",
    "erc20_amount_log10",
    "erc20_from_third_party",
    "erc721_transfers",
    "approvals",
    "approval_unlimited",
    "approval_amount_log10",
    "swaps",
    "swap_amount_in_log10",
    "swap_reserve_share",
    "swap_price_impact",
    "lookalike_edges",
    "new_recipients",
    "block_position",
    "block_txs",
    "block_gas_ratio",
    "target_share_in_block",
    "sender_share_in_block",
    "pool_txs_before",
    "pool_txs_after",
    "own_reverse_swap_after",
    "own_reverse_swap_before",
    "between_other_sender",
)
_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _log10(amount: int) -> float:
    return math.log10(1 + amount) if amount > 0 else 0.0


def _word_address(word: bytes) -> str:
    return "0x" + word[-20:].hex()


def _norm(address: str) -> str:
    return address.lower()


def _key(address: str, digits: int = 4) -> str:
    """What a look-alike copies: the first and last ``digits`` hex digits."""
    return address[2 : 2 + digits] + address[-digits:]


@dataclass(frozen=True, slots=True)
class TokenTransfer:
    """An ERC-20 ``Transfer`` (amount in the token's base units; decimals are not needed)."""

    token: str
    sender: str
    recipient: str
    amount: int
    log_index: int


@dataclass(frozen=True, slots=True)
class TokenApproval:
    """An ERC-20 ``Approval``: ``owner`` lets ``spender`` move up to ``amount``."""

    token: str
    owner: str
    spender: str
    amount: int
    log_index: int


@dataclass(frozen=True, slots=True)
class AmmSwap:
    """A Uniswap V2 ``Swap``; ``sender`` called the pool, ``recipient`` got the output.

    ``zero_for_one`` is True when token0 went in and token1 came out. The reserves are those
    before the swap (from the pool's ``Sync`` just before it in the same transaction), or None.
    """

    pool: str
    sender: str
    recipient: str
    amount0_in: int
    amount1_in: int
    amount0_out: int
    amount1_out: int
    log_index: int
    reserves_before: tuple[int, int] | None = None

    @property
    def zero_for_one(self) -> bool:
        if self.amount1_out > 0 and self.amount0_out == 0:
            return True
        if self.amount0_out > 0 and self.amount1_out == 0:
            return False
        return self.amount0_in >= self.amount1_in

    @property
    def amount_in(self) -> int:
        return self.amount0_in if self.zero_for_one else self.amount1_in

    @property
    def amount_out(self) -> int:
        return self.amount1_out if self.zero_for_one else self.amount0_out

    @property
    def price_impact(self) -> float:
        """``|p_after / p_before - 1|`` with ``p = reserve1 / reserve0``; 0 without reserves."""
        if self.reserves_before is None:
            return 0.0
        r0, r1 = self.reserves_before
        a0 = r0 + self.amount0_in - self.amount0_out
        a1 = r1 + self.amount1_in - self.amount1_out
        if r0 <= 0 or r1 <= 0 or a0 <= 0 or a1 <= 0:
            return 0.0
        return abs((a1 * r0) / (a0 * r1) - 1.0)

    @property
    def reserve_share(self) -> float:
        """The amount in as a fraction of the pool's reserve of that token before the swap."""
        if self.reserves_before is None:
            return 0.0
        reserve = self.reserves_before[0 if self.zero_for_one else 1]
        return self.amount_in / reserve if reserve > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Lookalike:
    """``impostor`` resembles ``genuine``, a recent counterparty of ``victim``."""

    impostor: str
    genuine: str
    victim: str


def decode_transfer(log: LogRecord) -> TokenTransfer | None:
    """The ERC-20 transfer in ``log``, or None (another event, ERC-721's 4-topic form, junk)."""
    if len(log.topics) != 3 or log.topics[0] != TRANSFER_TOPIC or len(log.data) != 32:
        return None
    return TokenTransfer(
        token=_norm(log.address),
        sender=_word_address(log.topics[1]),
        recipient=_word_address(log.topics[2]),
        amount=int.from_bytes(log.data, "big"),
        log_index=log.log_index,
    )


def decode_approval(log: LogRecord) -> TokenApproval | None:
    """The ERC-20 approval in ``log``, or None (ERC-721's ``Approval`` has four topics)."""
    if len(log.topics) != 3 or log.topics[0] != APPROVAL_TOPIC or len(log.data) != 32:
        return None
    return TokenApproval(
        token=_norm(log.address),
        owner=_word_address(log.topics[1]),
        spender=_word_address(log.topics[2]),
        amount=int.from_bytes(log.data, "big"),
        log_index=log.log_index,
    )


def decode_sync(log: LogRecord) -> tuple[int, int] | None:
    """The reserves ``(reserve0, reserve1)`` a Uniswap V2 ``Sync`` reports, or None."""
    if len(log.topics) != 1 or log.topics[0] != SYNC_TOPIC or len(log.data) != 64:
        return None
    return int.from_bytes(log.data[:32], "big"), int.from_bytes(log.data[32:], "big")


def decode_swap(log: LogRecord, reserves_after: tuple[int, int] | None = None) -> AmmSwap | None:
    """The Uniswap V2 swap in ``log``, or None.

    ``reserves_after`` is what the pool's ``Sync`` reported right before this event (the pair
    emits ``Sync`` with the new reserves, then ``Swap``); the swap keeps the reserves before it.
    """
    if len(log.topics) != 3 or log.topics[0] != SWAP_TOPIC or len(log.data) != 128:
        return None
    a0i, a1i, a0o, a1o = (int.from_bytes(log.data[i : i + 32], "big") for i in range(0, 128, 32))
    before = None
    if reserves_after is not None:
        before = (reserves_after[0] - a0i + a0o, reserves_after[1] - a1i + a1o)
    return AmmSwap(
        pool=_norm(log.address),
        sender=_word_address(log.topics[1]),
        recipient=_word_address(log.topics[2]),
        amount0_in=a0i,
        amount1_in=a1i,
        amount0_out=a0o,
        amount1_out=a1o,
        log_index=log.log_index,
        reserves_before=before,
    )


def is_lookalike(a: str, b: str, digits: int = 4) -> bool:
    """Same first and last ``digits`` hex digits (case-insensitive) but different addresses."""
    a, b = a.lower(), b.lower()
    return a != b and _key(a, digits) == _key(b, digits)


@dataclass(frozen=True, slots=True)
class FeatureRow:
    """The features of one transaction and the decoded facts behind them.

    ``values`` is aligned with :data:`FEATURE_NAMES`. ``pools`` lists the pools the transaction
    swapped in. Addresses are lower-case.
    """

    tx_hash: bytes
    block_number: int
    index: int
    timestamp: int
    sender: str
    to: str | None
    value: int
    selector: str
    values: tuple[float, ...]
    transfers: tuple[TokenTransfer, ...] = ()
    approvals: tuple[TokenApproval, ...] = ()
    swaps: tuple[AmmSwap, ...] = ()
    lookalikes: tuple[Lookalike, ...] = ()
    new_addresses: tuple[str, ...] = ()
    """Recipients (plain or token) that no earlier transaction touched: first seen here."""

    @property
    def tx(self) -> str:
        """The transaction hash as ``0x`` hex."""
        return "0x" + self.tx_hash.hex()

    def feature(self, name: str) -> float:
        return self.values[_INDEX[name]]

    def as_dict(self) -> dict[str, Any]:
        """Identifying columns then one column per feature (for CSV and Parquet)."""
        out: dict[str, Any] = {
            "tx": self.tx,
            "block": self.block_number,
            "index": self.index,
            "timestamp": self.timestamp,
            "sender": self.sender,
            "to": self.to or "",
            "selector": self.selector,
        }
        out.update(zip(FEATURE_NAMES, self.values, strict=True))
        return out


@dataclass(slots=True)
class _Account:
    first_seen: int
    sent: deque[tuple[int, str]]
    received: deque[tuple[int, str]]
    txs: deque[tuple[int, str]]
    approvals: deque[tuple[int, str]]


_KINDS = ("sent", "received", "txs", "approvals")


@dataclass(slots=True)
class _Journal:
    number: int
    hashes: list[bytes] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    appended: list[tuple[str, str]] = field(default_factory=list)


class FeatureExtractor:
    """Streaming per-transaction features with bounded per-account state.

    ``window`` (blocks) bounds activity, fan-in and fan-out, and saturates ages; keep it short
    against the range a detector is fitted on (windowed counts grow for ``window`` blocks after
    the start, so the first ``window`` blocks look quieter than the rest); ``max_accounts``
    caps the accounts tracked (LRU); ``max_events`` caps each account's remembered events per kind;
    ``reorg_depth`` is how many of the newest blocks can be retracted; ``lookalike_digits`` how
    many hex digits at each end a look-alike shares with the address it imitates (wallets show
    about four at each end; fewer than three would match strangers by chance).
    """

    def __init__(
        self,
        *,
        window: int = 32,
        max_accounts: int = 100_000,
        max_events: int = 64,
        reorg_depth: int = 64,
        lookalike_digits: int = 4,
    ) -> None:
        for name, value in (
            ("window", window),
            ("max_accounts", max_accounts),
            ("max_events", max_events),
            ("reorg_depth", reorg_depth),
        ):
            if value < 1:
                raise InputError(f"{name} must be at least 1, got {value}")
        if not 3 <= lookalike_digits <= 20:
            raise InputError(f"lookalike_digits must be from 3 to 20, got {lookalike_digits}")
        self.window = window
        self.max_accounts = max_accounts
        self.max_events = max_events
        self.reorg_depth = reorg_depth
        self.lookalike_digits = lookalike_digits
        self._accounts: OrderedDict[str, _Account] = OrderedDict()
        # first four + last four hex digits -> tracked accounts with them (look-alike search)
        self._by_key: dict[str, set[str]] = {}
        self._journal: deque[_Journal] = deque(maxlen=reorg_depth)
        self._last: int | None = None
        self._now = 0

    # ------------------------------------------------------------------ state
    @property
    def last_block(self) -> int | None:
        """The newest block processed (and not retracted)."""
        return self._last

    @property
    def state_size(self) -> int:
        """Accounts tracked plus events remembered: bounded by the caps, not chain length."""
        events = sum(
            len(a.sent) + len(a.received) + len(a.txs) + len(a.approvals)
            for a in self._accounts.values()
        )
        return len(self._accounts) + events

    @property
    def accounts_tracked(self) -> int:
        return len(self._accounts)

    def first_seen(self, address: str) -> int | None:
        account = self._accounts.get(address.lower())
        return None if account is None else account.first_seen

    def counterparties(self, address: str) -> set[str]:
        """Distinct addresses ``address`` sent to or received from in the window."""
        account = self._accounts.get(address.lower())
        if account is None:
            return set()
        return self._recent(account.sent) | self._recent(account.received)

    def _recent(self, events: deque[tuple[int, str]]) -> set[str]:
        oldest = self._now - self.window
        if not events or events[0][0] > oldest:  # all inside the window: the common case
            return {who for _, who in events}
        found: set[str] = set()
        for block, who in reversed(events):
            if block <= oldest:
                break
            found.add(who)
        return found

    def _count_recent(self, events: deque[tuple[int, str]]) -> int:
        oldest = self._now - self.window
        count = 0
        for block, _ in reversed(events):
            if block <= oldest:
                break
            count += 1
        return count

    def _account(self, address: str, journal: _Journal) -> _Account:
        account = self._accounts.get(address)
        if account is None:
            cap = self.max_events
            account = _Account(
                self._now,
                deque(maxlen=cap),
                deque(maxlen=cap),
                deque(maxlen=cap),
                deque(maxlen=cap),
            )
            self._accounts[address] = account
            self._by_key.setdefault(_key(address, self.lookalike_digits), set()).add(address)
            journal.created.append(address)
            if len(self._accounts) > self.max_accounts:
                self._forget(self._accounts.popitem(last=False)[0])
        else:
            self._accounts.move_to_end(address)
        return account

    def _forget(self, address: str) -> None:
        key = _key(address, self.lookalike_digits)
        same = self._by_key.get(key)
        if same is not None:
            same.discard(address)
            if not same:
                del self._by_key[key]

    def _push(self, address: str, kind: str, other: str, journal: _Journal) -> None:
        events: deque[tuple[int, str]] = getattr(self._account(address, journal), kind)
        events.append((self._now, other))
        journal.appended.append((address, kind))

    # -------------------------------------------------------------- retraction
    def retract(self, number: int) -> list[bytes]:
        """Undo block ``number``, which must be the newest processed; returns its tx hashes."""
        if not self._journal or self._journal[-1].number != number:
            newest = self._journal[-1].number if self._journal else None
            raise InputError(
                f"can only retract the newest journalled block ({newest}), not block {number}"
            )
        journal = self._journal.pop()
        for address, kind in reversed(journal.appended):
            account = self._accounts.get(address)
            if account is None:
                continue
            events: deque[tuple[int, str]] = getattr(account, kind)
            if events and events[-1][0] == number:
                events.pop()
        for address in journal.created:
            account = self._accounts.get(address)
            if account is not None and account.first_seen == number:
                del self._accounts[address]
                self._forget(address)
        self._last = self._journal[-1].number if self._journal else number - 1
        self._now = self._last
        return journal.hashes

    # -------------------------------------------------------------- processing
    def process_many(self, blocks: Iterable[BlockRecord]) -> list[FeatureRow]:
        rows: list[FeatureRow] = []
        for block in blocks:
            rows.extend(self.process(block))
        return rows

    def process(self, block: BlockRecord) -> list[FeatureRow]:
        """Features of every transaction of ``block`` (blocks must come in increasing order)."""
        if self._last is not None and block.number <= self._last:
            raise InputError(
                f"block {block.number} is not after block {self._last}; retract first on a reorg"
            )
        self._last = block.number
        self._now = block.number
        journal = _Journal(block.number)
        self._journal.append(journal)
        txs = block.transactions
        n = len(txs)
        base_fee = block.base_fee_per_gas or 0
        to_counts: dict[str, int] = {}
        sender_counts: dict[str, int] = {}
        decoded: list[tuple[list[TokenTransfer], list[TokenApproval], list[AmmSwap], int]] = []
        for tx in txs:
            if tx.to is not None:
                key = _norm(tx.to)
                to_counts[key] = to_counts.get(key, 0) + 1
            sender = _norm(tx.sender)
            sender_counts[sender] = sender_counts.get(sender, 0) + 1
            decoded.append(_decode_logs(tx.logs))
        position = _pool_positions(txs, [d[2] for d in decoded])
        rows = []
        for i, tx in enumerate(txs):
            transfers, approvals, swaps, nft = decoded[i]
            journal.hashes.append(tx.hash)
            rows.append(
                self._row(
                    block,
                    tx,
                    base_fee,
                    n,
                    to_counts,
                    sender_counts,
                    transfers,
                    approvals,
                    swaps,
                    nft,
                    position[i],
                    journal,
                )
            )
        return rows

    def _row(
        self,
        block: BlockRecord,
        tx: TxRecord,
        base_fee: int,
        n: int,
        to_counts: dict[str, int],
        sender_counts: dict[str, int],
        transfers: list[TokenTransfer],
        approvals: list[TokenApproval],
        swaps: list[AmmSwap],
        nft: int,
        position: tuple[int, int, int, int, int],
        journal: _Journal,
    ) -> FeatureRow:
        sender = _norm(tx.sender)
        to = _norm(tx.to) if tx.to is not None else None
        target = to if to is not None else (_norm(tx.contract_address or "") or None)
        known_sender = sender in self._accounts
        known_target = target is not None and target in self._accounts
        # ages saturate at the window, so the feature means the same early and late in a chain
        sender_age = (
            min(self.window, self._now - self._accounts[sender].first_seen) if known_sender else 0
        )
        target_age = (
            min(self.window, self._now - self._accounts[target].first_seen)
            if target is not None and known_target
            else 0
        )

        # edges: the plain transfer and every token transfer; look-alikes checked before adding
        edges: list[tuple[str, str, int]] = []
        if target is not None:
            edges.append((sender, target, tx.value))
        edges.extend((t.sender, t.recipient, t.amount) for t in transfers)
        pools = {s.pool for s in swaps}
        lookalikes: list[Lookalike] = []
        new_recipients = 0
        fresh: list[str] = []
        for src, dst, _amount in edges:
            lookalikes.extend(self._lookalikes(src, dst))
            if dst not in self._accounts:
                new_recipients += 1
                if dst not in fresh:
                    fresh.append(dst)
        self._push(sender, "txs", target or "", journal)
        for src, dst, _amount in edges:
            self._push(src, "sent", dst, journal)
            self._push(dst, "received", src, journal)
        for approval in approvals:
            self._push(approval.spender, "approvals", approval.owner, journal)

        acct = self._accounts.get(sender)
        target_acct = self._accounts.get(target) if target is not None else None
        if acct is not None:
            sender_txs = self._count_recent(acct.txs)
            fan_out = len(self._recent(acct.sent))
            fan_in = len(self._recent(acct.received))
            approvals_received = len(self._recent(acct.approvals))
        else:  # evicted at once (max_accounts tiny): no history
            sender_txs, fan_out, fan_in, approvals_received = 1, 0, 0, 0
        if target_acct is not None:
            recipient_fan_in = len(self._recent(target_acct.received))
            recipient_fan_out = len(self._recent(target_acct.sent))
        else:
            recipient_fan_in = recipient_fan_out = 0

        if tx.max_fee_per_gas is not None:
            headroom = tx.max_fee_per_gas - base_fee
        else:
            headroom = tx.effective_gas_price - base_fee
        third_party = sum(
            1 for t in transfers if t.sender not in (sender, to) and t.sender not in pools
        )
        values = (
            _log10(tx.value),
            float(tx.value == 0),
            float(tx.gas_limit),
            float(tx.gas_used),
            tx.gas_used / tx.gas_limit if tx.gas_limit > 0 else 0.0,
            (tx.effective_gas_price - base_fee) / 1e9,
            headroom / 1e9,
            float(len(tx.input)),
            float(len(tx.input) >= 4),
            float(tx.selector == _SEL_TRANSFER),
            float(tx.selector == _SEL_APPROVE),
            float(tx.selector == _SEL_TRANSFER_FROM),
            float(tx.is_creation),
            float(tx.status == 0),
            float(sender_age),
            float(not known_sender),
            float(target_age),
            float(target is not None and not known_target),
            float(sender_txs),
            float(fan_out),
            float(fan_in),
            float(recipient_fan_in),
            float(recipient_fan_out),
            float(approvals_received),
            float(len(tx.logs)),
            float(len(transfers)),
            float(sum(1 for t in transfers if t.amount == 0)),
            max((_log10(t.amount) for t in transfers), default=0.0),
            float(third_party),
            float(nft),
            float(len(approvals)),
            float(any(a.amount >= UNLIMITED_APPROVAL for a in approvals)),
            max((_log10(a.amount) for a in approvals), default=0.0),
            float(len(swaps)),
            max((_log10(s.amount_in) for s in swaps), default=0.0),
            max((s.reserve_share for s in swaps), default=0.0),
            max((s.price_impact for s in swaps), default=0.0),
            float(len(lookalikes)),
            float(new_recipients),
            tx.index / (n - 1) if n > 1 else 0.0,
            float(n),
            block.gas_used / block.gas_limit if block.gas_limit > 0 else 0.0,
            to_counts.get(to, 0) / n if to is not None else 0.0,
            sender_counts[sender] / n,
            float(position[0]),
            float(position[1]),
            float(position[2]),
            float(position[3]),
            float(position[4]),
        )
        return FeatureRow(
            tx_hash=tx.hash,
            block_number=block.number,
            index=tx.index,
            timestamp=block.timestamp,
            sender=sender,
            to=to,
            value=tx.value,
            selector=tx.selector.hex(),
            values=values,
            transfers=tuple(transfers),
            approvals=tuple(approvals),
            swaps=tuple(swaps),
            lookalikes=tuple(lookalikes),
            new_addresses=tuple(fresh),
        )

    def _lookalikes(self, src: str, dst: str) -> list[Lookalike]:
        """``src`` posing as a counterparty of ``dst``, or ``dst`` as one of ``src``."""
        found = []
        for impostor, victim in ((src, dst), (dst, src)):
            similar = self._by_key.get(_key(impostor, self.lookalike_digits))
            if not similar or (len(similar) == 1 and impostor in similar):
                continue  # no tracked account resembles it: the common case, no scan needed
            peers = self.counterparties(victim)
            known = self._accounts.get(impostor)
            for genuine in sorted(similar):
                # the genuine address is the older one: once a victim has paid an impostor, a
                # payment to the real counterparty must not read as the impostor's look-alike
                older = known is None or self._accounts[genuine].first_seen < known.first_seen
                if genuine != impostor and genuine in peers and older:
                    found.append(Lookalike(impostor, genuine, victim))
                    break
        return found


def _decode_logs(
    logs: Sequence[LogRecord],
) -> tuple[list[TokenTransfer], list[TokenApproval], list[AmmSwap], int]:
    transfers: list[TokenTransfer] = []
    approvals: list[TokenApproval] = []
    swaps: list[AmmSwap] = []
    nft = 0
    reserves: dict[str, tuple[int, int]] = {}
    for log in logs:
        if not log.topics:
            continue
        topic = log.topics[0]
        if topic == TRANSFER_TOPIC:
            transfer = decode_transfer(log)
            if transfer is not None:
                transfers.append(transfer)
            elif len(log.topics) == 4:
                nft += 1
        elif topic == APPROVAL_TOPIC:
            approval = decode_approval(log)
            if approval is not None:
                approvals.append(approval)
        elif topic == SYNC_TOPIC:
            sync = decode_sync(log)
            if sync is not None:
                reserves[_norm(log.address)] = sync
        elif topic == SWAP_TOPIC:
            swap = decode_swap(log, reserves.pop(_norm(log.address), None))
            if swap is not None:
                swaps.append(swap)
    return transfers, approvals, swaps, nft


def _pool_positions(
    txs: Sequence[TxRecord], swaps: Sequence[Sequence[AmmSwap]]
) -> list[tuple[int, int, int, int, int]]:
    """Per transaction: swaps in its pools before and after it in the block, whether its sender
    swaps the same pool in the opposite direction after / before it, and whether another
    sender swaps the same pool both before and after it."""
    by_pool: dict[str, list[tuple[int, str, bool]]] = {}
    for i, (tx, tx_swaps) in enumerate(zip(txs, swaps, strict=True)):
        for swap in tx_swaps:
            by_pool.setdefault(swap.pool, []).append((i, _norm(tx.sender), swap.zero_for_one))
    out = []
    for i, (tx, tx_swaps) in enumerate(zip(txs, swaps, strict=True)):
        before = after = reverse_after = reverse_before = between = 0
        sender = _norm(tx.sender)
        for swap in tx_swaps:
            entries = by_pool[swap.pool]
            before += sum(1 for j, _, _ in entries if j < i)
            after += sum(1 for j, _, _ in entries if j > i)
            if any(j > i and s == sender and d != swap.zero_for_one for j, s, d in entries):
                reverse_after = 1
            if any(j < i and s == sender and d != swap.zero_for_one for j, s, d in entries):
                reverse_before = 1
            earlier = {s for j, s, _ in entries if j < i and s != sender}
            if any(j > i and s in earlier for j, s, _ in entries):
                between = 1
        out.append((before, after, reverse_after, reverse_before, between))
    return out


# ------------------------------------------------------------------------------ matrices, export


def rows_to_matrix(rows: Sequence[FeatureRow]) -> npt.NDArray[np.float64]:
    """The features of ``rows`` as an ``(n_rows, len(FEATURE_NAMES))`` float64 matrix."""
    if not rows:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float64)
    return np.asarray([row.values for row in rows], dtype=np.float64)


def write_csv(rows: Iterable[FeatureRow], path: str | Path) -> int:
    """Write rows as CSV with a header; returns the number of rows written."""
    columns = ["tx", "block", "index", "timestamp", "sender", "to", "selector", *FEATURE_NAMES]
    count = 0
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_dict())
            count += 1
    return count


def write_parquet(rows: Sequence[FeatureRow], path: str | Path) -> int:
    """Write rows as Parquet (needs ``pyarrow``: ``pip install 'ailedger[sentinel]'``)."""
    try:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError as exc:
        raise InputError(
            "Parquet export needs pyarrow: pip install 'ailedger[sentinel]' (or export CSV)"
        ) from exc
    matrix = rows_to_matrix(rows)
    columns: dict[str, Any] = {
        "tx": pa.array([r.tx for r in rows], pa.string()),
        "block": pa.array([r.block_number for r in rows], pa.int64()),
        "index": pa.array([r.index for r in rows], pa.int32()),
        "timestamp": pa.array([r.timestamp for r in rows], pa.int64()),
        "sender": pa.array([r.sender for r in rows], pa.string()),
        "to": pa.array([r.to for r in rows], pa.string()),
        "selector": pa.array([r.selector for r in rows], pa.string()),
    }
    for j, name in enumerate(FEATURE_NAMES):
        columns[name] = pa.array(matrix[:, j], pa.float64())
    pq.write_table(pa.table(columns), str(path))
    return len(rows)
