"""Rule detectors for known attack patterns, each alert with the transactions and amounts behind it.

Fed one block's :class:`~ailedger.sentinel.features.FeatureRow` list at a time, in chain order,
by :meth:`RuleEngine.scan`. The rules:

- **sandwich**, exactly as flashbots' mev-inspect-py defines it (``mev_inspect/sandwiches.py``,
  ``_get_sandwich_starting_with_swap``): order a block's swaps by (transaction position, log
  index); for each swap taken as the front-run, the sandwicher is the front-run's recipient
  (``to``; swaps whose recipient is a known router are skipped); later swaps in the same pool
  and the same direction from anyone else are the victims; the first later swap in the same
  pool, in the opposite direction, whose caller (``sender``) is the sandwicher is the back-run,
  and it makes a sandwich only if at least one victim swap came between. A same-account buy then
  sell with nobody in between is not a sandwich. (Qin, Zhou, Gervais, "Quantifying Blockchain
  Extractable Value", IEEE S&P 2022, use the same three-transaction shape.)
  Every transaction of the incident alerts: the front- and back-run, the victims, and the
  payment into the pool that funds a swap when it is a separate transaction of the same sender
  right before it (a pair is paid, then called); the victims' alerts name only the sandwicher.
- **spam_flood** (DETER, Li et al., ACM CCS 2021; and the block-stuffing floods they cite): in
  one block, at least ``spam_min_txs`` transactions of at most ``dust_wei`` each, either to one
  target or from accounts at most ``spam_new_age`` blocks old sending at least
  ``spam_min_per_sender`` each, that take at least ``spam_min_share`` of the block (or ride in a
  block at least ``spam_min_fill`` full) and come from few accounts (distinct senders per
  transaction at most ``spam_max_sender_ratio``) or mostly young ones.
- **address_poisoning**: a zero-value or dust transfer (plain or ERC-20) between a victim and a
  look-alike of one of the victim's recent counterparties (same first and last hex digits, four
  by default, a different address), as the feature extractor finds them; the victim then paying
  the look-alike (the loss); and a zero-value ``transferFrom`` between two other accounts sent
  by a third party (it moves nothing, only writes a ``Transfer`` into their histories).
- **approval_drain** with fan-out laundering (Forta's attack stages: funding, preparation,
  exploitation, laundering): a ``transferFrom`` sent by an approved spender that moves the
  owner's tokens away, when the approval was unlimited or the spender is young (at most
  ``spam_new_age`` blocks); the approval it used then alerts too (preparation); then the drained
  recipient (or the spender) sending to at least ``fanout_min`` distinct fresh addresses within
  ``window`` blocks; those laundering transactions alert too (the earlier ones as soon as the
  fan-out is established).

  Laundering counts only transfers of the drained token within ``laundering_window`` blocks
  of the drain (the same attacker account funding other schemes later is not laundering).
- **price_manipulation** (the oracle-manipulation shape of flash-loan attacks, Qin et al.,
  "Attacking the DeFi Ecosystem with Flash Loans for Fun and Profit", FC 2021): in one block, an
  account swaps at least ``manipulation_min_share`` of a pool's reserve, later swaps the same
  pool back the other way, with no other account's swap in that pool between (that would be a
  sandwich); the two swaps, the account's swaps in other pools between them (the exploitation)
  and the payments that fund them alert.
- **sybil_laundering** (Forta's stages again: funding, preparation, laundering): an account
  funds fresh addresses: gas money (plain ETH) to an address that has never sent a transaction
  and was first seen at most ``fresh_window`` blocks before, either in that transfer or as the
  recipient of the same source's tokens (tokens may land first, even in the same block); then
  anything else the source sends it. Once at least ``sybil_min`` of one source's fresh
  addresses, within their first ``sybil_max_acts`` transactions, approve, pay (tokens, or ETH
  above ``dust_wei``) or are pulled from (a ``transferFrom`` sent by the recipient) by the
  same collector, every funding, approval and collection of that group alerts (the earlier
  ones once the group is established, later ones at once), and so does the collector's own
  funding by the source. An approved spender pulling a fresh address that someone else funded,
  and whose only act was that approval, is this collection, not an approval drain (there is no
  victim).
- Fresh funded addresses also complete two other patterns: the first ones sending only
  zero-value transactions that do nothing (no token transfer, no approval), at least
  ``junk_min`` in all from one source's addresses, are a **spam_flood** (funding included);
  and one paying an established account a dust token amount (at most ``dust_tokens``) is an
  **address_poisoning** vanity address (look-alikes often copy only a character or two, which
  no look-alike test can tell from chance), its funding included. Every poisoning pair is
  remembered, and the victim later paying the impostor more than dust is the loss.

State across blocks (approvals, drained accounts, fresh addresses, groups) is bounded
(``max_tracked`` entries per table, oldest dropped) and windowed; :meth:`RuleEngine.retract`
forgets what a retracted block added.
"""

from __future__ import annotations

import statistics
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ailedger.errors import InputError
from ailedger.sentinel.detectors import Alert, Reason
from ailedger.sentinel.features import UNLIMITED_APPROVAL, AmmSwap, FeatureRow

__all__ = [
    "KNOWN_ROUTERS",
    "RuleEngine",
    "Sandwich",
    "find_sandwiches",
]

#: routers mev-inspect-py excludes as sandwichers (Uniswap V2 router, V3 routers), lower-case
KNOWN_ROUTERS = frozenset(
    {
        "0x7a250d5630b4cf539739df2c5dacb4c659f2488d",
        "0xe592427a0aece92de3edee1f18e0157c05861564",
        "0x68b3465833fb72a70ecdf485e0e4c7bd8665fc45",
    }
)

DETECTOR = "rules"


@dataclass(frozen=True, slots=True)
class _Swap:
    position: int
    row: FeatureRow
    swap: AmmSwap


@dataclass(frozen=True)
class Sandwich:
    """A front-run, the victim swaps, and the back-run, all in one block and one pool."""

    sandwicher: str
    pool: str
    front: FeatureRow
    front_swap: AmmSwap
    back: FeatureRow
    back_swap: AmmSwap
    victims: tuple[tuple[FeatureRow, AmmSwap], ...]


def _payment_before(
    rows: Sequence[FeatureRow], swap_row: FeatureRow, pool: str
) -> FeatureRow | None:
    """The transaction right before ``swap_row`` from its sender that pays ``pool``, if any."""
    for row in reversed(rows[: swap_row.index]):
        if row.sender != swap_row.sender:
            continue
        if not row.swaps and any(t.recipient == pool for t in row.transfers):
            return row
        return None
    return None


def find_sandwiches(
    rows: Sequence[FeatureRow], *, routers: frozenset[str] = KNOWN_ROUTERS
) -> list[Sandwich]:
    """mev-inspect-py's sandwich search over one block's rows (see the module docstring)."""
    ordered = sorted(
        (_Swap(row.index, row, swap) for row in rows for swap in row.swaps),
        key=lambda s: (s.position, s.swap.log_index),
    )
    found = []
    for k, front in enumerate(ordered):
        sandwicher = front.swap.recipient
        if sandwicher in routers:
            continue
        victims: list[tuple[FeatureRow, AmmSwap]] = []
        for other in ordered[k + 1 :]:
            if other.row.tx_hash == front.row.tx_hash or other.swap.pool != front.swap.pool:
                continue
            same_direction = other.swap.zero_for_one == front.swap.zero_for_one
            if same_direction and other.swap.sender != sandwicher:
                victims.append((other.row, other.swap))
            elif not same_direction and other.swap.sender == sandwicher and victims:
                found.append(
                    Sandwich(
                        sandwicher,
                        front.swap.pool,
                        front.row,
                        front.swap,
                        other.row,
                        other.swap,
                        tuple(victims),
                    )
                )
                break
    return found


@dataclass(slots=True)
class _Fresh:
    """An address first seen receiving ETH from ``source``, and the rows that funded it."""

    source: str
    block: int
    rows: list[FeatureRow] = field(default_factory=list)
    acts: int = 0
    """Transactions the address has sent since it was funded."""


@dataclass(slots=True)
class _Group:
    """Fresh addresses of one source acting together (sybils, spam senders)."""

    block: int
    members: dict[str, list[FeatureRow]] = field(default_factory=dict)
    count: int = 0
    established: bool = False
    alerted: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Drained:
    block: int
    token: str
    victim: str
    spender: str
    drain_tx: str
    recipients: set[str] = field(default_factory=set)
    pending: list[tuple[FeatureRow, str, int]] = field(default_factory=list)
    established: bool = False


class RuleEngine:
    """Known-pattern detectors over feature rows, one block at a time (see module docstring).

    Amounts: ``dust_wei`` for plain transfers, ``dust_tokens`` for token base units.
    """

    def __init__(
        self,
        *,
        spam_min_txs: int = 20,
        spam_min_share: float = 0.3,
        spam_min_fill: float = 0.9,
        spam_max_sender_ratio: float = 0.25,
        spam_new_sender_share: float = 0.8,
        spam_new_age: int = 8,
        spam_min_per_sender: int = 5,
        dust_wei: int = 10**13,
        dust_tokens: int = 10**12,
        fanout_min: int = 2,
        laundering_window: int = 16,
        manipulation_min_share: float = 0.05,
        sybil_min: int = 3,
        sybil_max_acts: int = 4,
        junk_min: int = 3,
        fresh_window: int = 64,
        window: int = 256,
        max_tracked: int = 10_000,
        routers: Iterable[str] = KNOWN_ROUTERS,
    ) -> None:
        if spam_min_txs < 2 or fanout_min < 2 or window < 1 or max_tracked < 1:
            raise InputError("spam_min_txs and fanout_min need >= 2, window and max_tracked >= 1")
        if sybil_min < 2 or junk_min < 1 or fresh_window < 1 or laundering_window < 1:
            raise InputError(
                "sybil_min needs >= 2; junk_min, fresh_window and laundering_window >= 1"
            )
        if not 0.0 < manipulation_min_share <= 1.0:
            raise InputError("manipulation_min_share is a share in (0, 1]")
        self.laundering_window = laundering_window
        self.manipulation_min_share = manipulation_min_share
        self.sybil_min = sybil_min
        self.sybil_max_acts = sybil_max_acts
        self.junk_min = junk_min
        self.fresh_window = fresh_window
        self.spam_min_txs = spam_min_txs
        self.spam_min_share = spam_min_share
        self.spam_min_fill = spam_min_fill
        self.spam_max_sender_ratio = spam_max_sender_ratio
        self.spam_new_sender_share = spam_new_sender_share
        self.spam_new_age = spam_new_age
        self.spam_min_per_sender = spam_min_per_sender
        self.dust_wei = dust_wei
        self.dust_tokens = dust_tokens
        self.fanout_min = fanout_min
        self.window = window
        self.max_tracked = max_tracked
        self.routers = frozenset(r.lower() for r in routers)
        # (token, owner) -> (spender, amount, block, approval tx)
        # ERC-20 allowances are per (token, owner, spender): an owner may have approved
        # several spenders, and a later approval of one does not cancel another's
        self._approvals: OrderedDict[tuple[str, str, str], tuple[str, int, int, str]] = (
            OrderedDict()
        )
        # account holding drained funds -> the incident
        self._drained: OrderedDict[str, _Drained] = OrderedDict()
        self._approvals_alerted: OrderedDict[str, None] = OrderedDict()
        # fresh address -> who funded it; (source, collector) -> sybils; source -> spam senders
        self._fresh: OrderedDict[str, _Fresh] = OrderedDict()
        # first seen receiving tokens, not yet given gas money: a fresh address in the making
        self._preseen: OrderedDict[str, _Fresh] = OrderedDict()
        self._sybils: OrderedDict[tuple[str, str], _Group] = OrderedDict()
        self._junk: OrderedDict[str, _Group] = OrderedDict()
        # (victim, impostor) -> block of the poisoning: the victim paying the impostor is a loss
        self._poisoned: OrderedDict[tuple[str, str], int] = OrderedDict()

    # ------------------------------------------------------------------ state
    @property
    def state_size(self) -> int:
        return (
            len(self._approvals)
            + len(self._drained)
            + len(self._fresh)
            + len(self._preseen)
            + len(self._sybils)
            + len(self._junk)
            + len(self._poisoned)
        )

    def retract(self, number: int) -> None:
        """Forget approvals and incidents first recorded in block ``number`` or later."""
        for key in [k for k, v in self._approvals.items() if v[2] >= number]:
            del self._approvals[key]
        for holder in [k for k, v in self._drained.items() if v.block >= number]:
            del self._drained[holder]
        for table in (self._fresh, self._preseen):
            for address in [k for k, v in table.items() if v.block >= number]:
                del table[address]
            for fresh in table.values():
                fresh.rows = [r for r in fresh.rows if r.block_number < number]
        for groups in (self._sybils, self._junk):
            for gk in [k for k, v in groups.items() if v.block >= number]:
                del groups[gk]  # type: ignore[arg-type]
        for pair in [k for k, v in self._poisoned.items() if v >= number]:
            del self._poisoned[pair]

    def _bound(self, current: int) -> None:
        oldest = current - self.window
        while self._approvals and next(iter(self._approvals.values()))[2] <= oldest:
            self._approvals.popitem(last=False)
        while len(self._approvals) > self.max_tracked:
            self._approvals.popitem(last=False)
        while self._drained and next(iter(self._drained.values())).block <= oldest:
            self._drained.popitem(last=False)
        while len(self._drained) > self.max_tracked:
            self._drained.popitem(last=False)
        fresh_oldest = current - self.fresh_window
        for fresh_table in (self._fresh, self._preseen):
            while fresh_table and next(iter(fresh_table.values())).block <= fresh_oldest:
                fresh_table.popitem(last=False)
        for groups in (self._sybils, self._junk):
            while groups and next(iter(groups.values())).block <= fresh_oldest:
                groups.popitem(last=False)
        while self._poisoned and next(iter(self._poisoned.values())) <= oldest:
            self._poisoned.popitem(last=False)
        for table in (self._fresh, self._preseen, self._sybils, self._junk, self._poisoned):
            while len(table) > self.max_tracked:
                table.popitem(last=False)

    # ------------------------------------------------------------------- scan
    def scan(self, rows: Sequence[FeatureRow]) -> list[Alert]:
        """Alerts for one block's rows (all from the same block, in block order).

        May also return laundering alerts for transactions of earlier blocks, once their
        fan-out is established.
        """
        if not rows:
            return []
        blocks = {row.block_number for row in rows}
        if len(blocks) != 1:
            raise InputError(f"scan takes one block's rows at a time, got blocks {sorted(blocks)}")
        alerts: list[Alert] = []
        alerts.extend(self._sandwiches(rows))
        alerts.extend(self._manipulations(rows))
        alerts.extend(self._spam(rows))
        alerts.extend(self._poisoning(rows))
        alerts.extend(self._drains(rows))
        alerts.extend(self._fresh_patterns(rows))
        self._bound(rows[0].block_number)
        return alerts

    def scan_many(self, blocks: Iterable[Sequence[FeatureRow]]) -> list[Alert]:
        alerts: list[Alert] = []
        for rows in blocks:
            alerts.extend(self.scan(rows))
        return alerts

    def _sandwiches(self, rows: Sequence[FeatureRow]) -> list[Alert]:
        alerts = []
        for s in find_sandwiches(rows, routers=self.routers):
            front_in, back_out = s.front_swap.amount_in, s.back_swap.amount_out
            victims = [row.tx for row, _ in s.victims]
            common = (
                Reason(
                    "sandwicher", s.sandwicher, "recipient of the front-run, caller of the back-run"
                ),
                Reason("pool", s.pool, "all swaps in this pool, in this block"),
                Reason(
                    "frontrun_tx", s.front.tx, f"position {s.front.index}, amount in {front_in}"
                ),
                Reason("victim_txs", ",".join(victims), "same pool and direction, between"),
                Reason(
                    "backrun_tx",
                    s.back.tx,
                    f"position {s.back.index}, opposite direction, amount out {back_out}",
                ),
            )
            # the incident: each swap, and the payment into the pool that funds it when it is a
            # separate transaction of the same sender just before (a pair is paid, then called)
            members: list[tuple[FeatureRow, str]] = [(s.front, "front-run")]
            members += [(row, "victim") for row, _ in s.victims]
            members.append((s.back, "back-run"))
            for row, role in list(members):
                payment = _payment_before(rows, row, s.pool)
                if payment is not None:
                    members.append((payment, f"{role} payment"))
            related = tuple(dict.fromkeys(row.tx for row, _ in members))
            for row, role in members:
                alerts.append(
                    Alert(
                        tx=row.tx,
                        block=row.block_number,
                        score=1.0 if role in ("front-run", "back-run") else 0.9,
                        flagged=True,
                        attack_class="sandwich",
                        detector=DETECTOR,
                        reasons=(Reason("role", role, "mev-inspect-py sandwich"), *common),
                        accounts=(s.sandwicher,),
                        related=related,
                    )
                )
        return alerts

    def _spam(self, rows: Sequence[FeatureRow]) -> list[Alert]:
        n = len(rows)
        fill = rows[0].feature("block_gas_ratio")
        low = [r for r in rows if r.value <= self.dust_wei]
        groups: list[tuple[str, str, list[FeatureRow]]] = []
        # many cheap transactions to one target ...
        by_target: dict[str, list[FeatureRow]] = {}
        for row in low:
            if row.to is not None:
                by_target.setdefault(row.to, []).append(row)
        groups += [("target", target, group) for target, group in by_target.items()]
        # ... or from a few young accounts, whatever they call
        by_sender: dict[str, list[FeatureRow]] = {}
        for row in low:
            if row.feature("sender_age_blocks") <= self.spam_new_age:
                by_sender.setdefault(row.sender, []).append(row)
        heavy = [g for g in by_sender.values() if len(g) >= self.spam_min_per_sender]
        if heavy:
            groups.append(
                ("senders", f"{len(heavy)} young accounts", [r for g in heavy for r in g])
            )
        flagged: dict[str, Alert] = {}
        for kind, what, group in groups:
            count = len(group)
            share = count / n
            if count < self.spam_min_txs:
                continue
            if share < self.spam_min_share and fill < self.spam_min_fill:
                continue
            senders = {r.sender for r in group}
            young = sum(1 for r in group if r.feature("sender_age_blocks") <= self.spam_new_age)
            new_share = young / count
            sender_ratio = len(senders) / count
            if sender_ratio > self.spam_max_sender_ratio and new_share < self.spam_new_sender_share:
                continue
            median_value = statistics.median(r.value for r in group)
            reasons = (
                Reason(kind, what, f"{count} of the block's {n} transactions"),
                Reason("share_in_block", round(share, 4), "share of the block's transactions"),
                Reason("block_gas_ratio", round(fill, 4), "block fullness"),
                Reason("distinct_senders", len(senders), f"{sender_ratio:.3f} per transaction"),
                Reason(
                    "young_sender_share",
                    round(new_share, 4),
                    f"sent by accounts at most {self.spam_new_age} blocks old",
                ),
                Reason("median_value_wei", int(median_value), f"each at most {self.dust_wei} wei"),
            )
            for row in group:
                if row.tx in flagged:
                    continue
                flagged[row.tx] = Alert(
                    tx=row.tx,
                    block=row.block_number,
                    score=min(1.0, share + 0.5 * (1 - sender_ratio)),
                    flagged=True,
                    attack_class="spam_flood",
                    detector=DETECTOR,
                    reasons=reasons,
                    accounts=(row.sender, *((row.to,) if row.to else ())),
                )
        return list(flagged.values())

    def _poisoning(self, rows: Sequence[FeatureRow]) -> list[Alert]:
        alerts = []
        for row in rows:
            found = self._poisoning_reasons(row) or self._poisoning_loss(row)
            if found is not None:
                score, reasons, accounts = found
                if len(accounts) == 2:  # (impostor, victim)
                    self._remember_poisoning(accounts[1], accounts[0], row.block_number)
                else:  # (caller, from, to) of a third-party transfer: either side may be either
                    self._remember_poisoning(accounts[1], accounts[2], row.block_number)
                    self._remember_poisoning(accounts[2], accounts[1], row.block_number)
                alerts.append(
                    Alert(
                        tx=row.tx,
                        block=row.block_number,
                        score=score,
                        flagged=True,
                        attack_class="address_poisoning",
                        detector=DETECTOR,
                        reasons=reasons,
                        accounts=accounts,
                    )
                )
        return alerts

    def _remember_poisoning(self, victim: str, impostor: str, block: int) -> None:
        """Remember that ``impostor`` poisoned ``victim``'s history in ``block``."""
        if victim != impostor:
            self._poisoned[(victim, impostor)] = block
            self._poisoned.move_to_end((victim, impostor))

    def _poisoning_loss(
        self, row: FeatureRow
    ) -> tuple[float, tuple[Reason, ...], tuple[str, ...]] | None:
        """The sender paying more than dust to an account it was poisoned with."""
        if not self._poisoned:
            return None
        pays: list[tuple[str, int, str]] = []
        if row.to is not None and row.value > self.dust_wei:
            pays.append((row.to, row.value, "wei"))
        pays.extend(
            (t.recipient, t.amount, f"token {t.token}")
            for t in row.transfers
            if t.sender == row.sender and t.amount > self.dust_tokens
        )
        for dst, amount, unit in pays:
            block = self._poisoned.get((row.sender, dst))
            if block is None:
                continue
            reasons = (
                Reason("stage", "loss", "address poisoning"),
                Reason("impostor", dst, f"poisoned the sender's history in block {block}"),
                Reason("victim", row.sender, "paid the address that poisoned it"),
                Reason("amount", amount, f"{unit}: the poisoning worked"),
            )
            return 1.0, reasons, (dst, row.sender)
        return None

    def _poisoning_reasons(
        self, row: FeatureRow
    ) -> tuple[float, tuple[Reason, ...], tuple[str, ...]] | None:
        edges: list[tuple[str, str, int, str]] = []
        if row.to is not None:
            edges.append((row.sender, row.to, row.value, "wei"))
        edges.extend((t.sender, t.recipient, t.amount, f"token {t.token}") for t in row.transfers)
        for look in row.lookalikes:
            for src, dst, amount, unit in edges:
                if {src, dst} != {look.impostor, look.victim}:
                    continue
                dust = self.dust_wei if unit == "wei" else self.dust_tokens
                loss = src == look.victim and row.sender == look.victim and amount > dust
                if amount > dust and not loss:
                    continue  # a look-alike paying real money is odd, not poisoning
                why = (
                    f"{unit}: the victim paid the look-alike (the poisoning worked)"
                    if loss
                    else f"{unit}: zero or dust (<= {dust})"
                )
                reasons = (
                    Reason("stage", "loss" if loss else "poison", "address poisoning"),
                    Reason("impostor", look.impostor, "look-alike address"),
                    Reason(
                        "resembles",
                        look.genuine,
                        "a recent counterparty of the victim, same first and last hex digits",
                    ),
                    Reason("victim", look.victim, "whose history is poisoned"),
                    Reason("amount", amount, why),
                )
                return (1.0 if amount == 0 or loss else 0.9), reasons, (look.impostor, look.victim)
        # the zero-value transferFrom trick: a third party moves nothing between two others,
        # only to write a Transfer into their histories
        for t in row.transfers:
            if t.amount == 0 and row.sender not in (t.sender, t.recipient):
                reasons = (
                    Reason("stage", "poison", "zero-value transfer by a third party"),
                    Reason("caller", row.sender, "moved nothing, neither side of the transfer"),
                    Reason("from", t.sender, f"token {t.token}"),
                    Reason("to", t.recipient, "amount 0"),
                    Reason("amount", 0, "a transfer that only writes history"),
                )
                return 0.8, reasons, (row.sender, t.sender, t.recipient)
        return None

    def _drains(self, rows: Sequence[FeatureRow]) -> list[Alert]:
        alerts: list[Alert] = []
        for row in rows:
            for approval in row.approvals:
                key = (approval.token, approval.owner, approval.spender)
                self._approvals[key] = (approval.spender, approval.amount, row.block_number, row.tx)
                self._approvals.move_to_end(key)
            # exploitation: the approved spender pulls the owner's tokens
            for t in row.transfers:
                grant = self._approvals.get((t.token, t.sender, row.sender))
                if grant is None or row.sender == t.sender:
                    continue
                spender, allowance, _, approval_tx = grant
                owner_funding = self._fresh.get(t.sender)
                if (
                    owner_funding is not None
                    and owner_funding.source != spender
                    and owner_funding.acts <= 1
                ):
                    # a fresh address funded by someone else whose only act was approving the
                    # spender that empties it: collection among the attacker's own addresses
                    # (Sybil), no victim. A new holder who used the address first (paid someone,
                    # then was phished) is still a victim.
                    continue
                young = row.feature("sender_age_blocks") <= self.spam_new_age
                if allowance < UNLIMITED_APPROVAL and not young:
                    continue
                incident = _Drained(row.block_number, t.token, t.sender, spender, row.tx)
                for holder in {t.recipient, spender}:
                    self._drained[holder] = incident
                    self._drained.move_to_end(holder)
                if approval_tx not in self._approvals_alerted:
                    # the phishing approval itself, from an earlier block, now known for what it is
                    self._approvals_alerted[approval_tx] = None
                    while len(self._approvals_alerted) > self.max_tracked:
                        self._approvals_alerted.popitem(last=False)
                    alerts.append(
                        Alert(
                            tx=approval_tx,
                            block=grant[2],
                            score=0.9,
                            flagged=True,
                            attack_class="approval_drain",
                            detector=DETECTOR,
                            reasons=(
                                Reason("stage", "preparation", "the approval a drain then used"),
                                Reason("owner", t.sender, "approved and was drained"),
                                Reason("spender", spender, f"drained in {row.tx}"),
                                Reason("allowance", allowance, "token base units"),
                            ),
                            accounts=(spender, t.sender),
                            related=(row.tx,),
                        )
                    )
                alerts.append(
                    Alert(
                        tx=row.tx,
                        block=row.block_number,
                        score=1.0,
                        flagged=True,
                        attack_class="approval_drain",
                        detector=DETECTOR,
                        reasons=(
                            Reason("stage", "exploitation", "transferFrom by the approved spender"),
                            Reason("victim", t.sender, "token owner"),
                            Reason(
                                "spender",
                                spender,
                                f"approved in {approval_tx}"
                                + (" (unlimited)" if allowance >= UNLIMITED_APPROVAL else ""),
                            ),
                            Reason("recipient", t.recipient, f"received {t.amount} of {t.token}"),
                            Reason("amount", t.amount, "token base units"),
                        ),
                        accounts=(spender, t.sender, t.recipient),
                    )
                )
            # laundering: the drained funds fan out to fresh addresses
            held = self._drained.get(row.sender)
            if held is None or held.drain_tx == row.tx:
                continue
            if row.block_number - held.block > self.laundering_window:
                continue
            incident = held
            outs = [
                (t.recipient, t.amount)
                for t in row.transfers
                if t.sender == row.sender and t.token == incident.token
            ]
            fresh = [(dst, amt) for dst, amt in outs if dst not in incident.recipients]
            if not fresh or row.feature("new_recipients") < 1:
                continue
            for dst, _ in fresh:
                incident.recipients.add(dst)
            incident.pending.append((row, fresh[0][0], fresh[0][1]))
            if len(incident.recipients) < self.fanout_min:
                continue
            incident.established = True
            for pending_row, dst, amount in incident.pending:
                alerts.append(
                    Alert(
                        tx=pending_row.tx,
                        block=pending_row.block_number,
                        score=0.9,
                        flagged=True,
                        attack_class="approval_drain",
                        detector=DETECTOR,
                        reasons=(
                            Reason("stage", "laundering", "fan-out of drained funds"),
                            Reason("drain_tx", incident.drain_tx, f"drained {incident.victim}"),
                            Reason("sender", pending_row.sender, "holds the drained funds"),
                            Reason("recipient", dst, f"fresh address, amount {amount}"),
                            Reason(
                                "fan_out",
                                len(incident.recipients),
                                f"distinct fresh recipients (>= {self.fanout_min})",
                            ),
                        ),
                        accounts=(pending_row.sender, dst, incident.victim),
                        related=(incident.drain_tx,),
                    )
                )
            incident.pending.clear()
        return alerts

    # --------------------------------------------------------- price manipulation
    def _manipulations(self, rows: Sequence[FeatureRow]) -> list[Alert]:
        ordered = sorted(
            (_Swap(row.index, row, swap) for row in rows for swap in row.swaps),
            key=lambda s: (s.position, s.swap.log_index),
        )
        alerts: list[Alert] = []
        done: set[str] = set()
        for k, first in enumerate(ordered):
            share = first.swap.reserve_share
            if share < self.manipulation_min_share or first.row.tx in done:
                continue
            who, pool = first.row.sender, first.swap.pool
            back: _Swap | None = None
            for other in ordered[k + 1 :]:
                if other.swap.pool != pool:
                    continue
                if other.row.sender != who:
                    break  # someone else traded the pool in between: a sandwich, not this
                if other.swap.zero_for_one != first.swap.zero_for_one:
                    back = other
                    break
            if back is None:
                continue
            between = [
                s
                for s in ordered
                if first.position < s.position < back.position and s.row.sender == who
            ]
            members = [(first.row, "manipulate"), *[(s.row, "exploit") for s in between]]
            members.append((back.row, "restore"))
            for row, role in list(members):
                for swap in row.swaps:
                    payment = _payment_before(rows, row, swap.pool)
                    if payment is not None:
                        members.append((payment, f"{role} payment"))
            related = tuple(dict.fromkeys(row.tx for row, _ in members))
            common = (
                Reason("account", who, "moved the pool's price and moved it back"),
                Reason("pool", pool, f"swapped {share:.3f} of its reserve"),
                Reason("price_impact", round(first.swap.price_impact, 4), "of the first swap"),
                Reason("restore_tx", back.row.tx, f"position {back.position}, opposite direction"),
            )
            for row, role in members:
                if row.tx in done:
                    continue
                done.add(row.tx)
                alerts.append(
                    Alert(
                        tx=row.tx,
                        block=row.block_number,
                        score=1.0 if role in ("manipulate", "restore") else 0.9,
                        flagged=True,
                        attack_class="price_manipulation",
                        detector=DETECTOR,
                        reasons=(Reason("role", role, "price manipulation"), *common),
                        accounts=(who,),
                        related=related,
                    )
                )
        return alerts

    # ------------------------------------------------------ fresh funded addresses
    def _fresh_patterns(self, rows: Sequence[FeatureRow]) -> list[Alert]:
        alerts: list[Alert] = []
        for row in rows:
            self._track_funding(row)
            alerts.extend(self._pulls(row))
            mine = self._fresh.get(row.sender)
            if mine is None:
                continue
            mine.acts += 1
            alerts.extend(self._fresh_action(row, mine))
        return alerts

    def _track_funding(self, row: FeatureRow) -> None:
        """Funding: plain ETH (gas money) to an address that has never sent a transaction and
        was first seen at most ``fresh_window`` blocks ago, through this source's own transfers
        (tokens may arrive first); then anything else the same source sends it."""
        if row.new_addresses and row.transfers:
            paid = {t.recipient for t in row.transfers if t.sender == row.sender}
            for address in row.new_addresses:
                if address in paid:
                    self._preseen[address] = _Fresh(row.sender, row.block_number, [row])
                    self._preseen.move_to_end(address)
        to = row.to
        fresh = self._fresh.get(to) if to is not None else None
        if to is not None and row.value > 0 and fresh is None:
            early = self._preseen.pop(to, None)
            if to in row.new_addresses:
                self._fresh[to] = _Fresh(row.sender, row.block_number, [row])
                self._fresh.move_to_end(to)
            elif early is not None and early.source == row.sender:
                self._fresh[to] = _Fresh(row.sender, early.block, [*early.rows, row])
                self._fresh.move_to_end(to)
        elif fresh is not None and fresh.source == row.sender and len(fresh.rows) < 8:
            fresh.rows.append(row)
        for t in row.transfers:
            held = self._fresh.get(t.recipient)
            if held is not None and held.source == row.sender and row not in held.rows:
                held.rows.append(row)
            early = self._preseen.get(t.recipient)
            if (
                early is not None
                and early.source == row.sender
                and len(early.rows) < 8
                and row not in early.rows
            ):
                early.rows.append(row)

    def _pulls(self, row: FeatureRow) -> list[Alert]:
        """A ``transferFrom`` sent by the recipient that pulls a fresh address's tokens: the
        collector collecting (fan-in) rather than the fresh address paying it."""
        if row.feature("selector_transfer_from") < 1:
            return []
        out: list[Alert] = []
        for t in row.transfers:
            if t.sender == row.sender or t.recipient != row.sender:
                continue
            member = self._fresh.get(t.sender)
            if member is None or member.source == row.sender:
                continue
            out.extend(self._collect(row, t.sender, member, row.sender))
        return out

    def _collect(
        self, row: FeatureRow, address: str, member: _Fresh, collector: str
    ) -> list[Alert]:
        """Fresh ``address`` (funded by ``member.source``) approved or paid ``collector``."""
        key = (member.source, collector)
        group = self._sybils.get(key)
        if group is None:
            group = self._sybils[key] = _Group(row.block_number)
        group.members.setdefault(address, list(member.rows)).append(row)
        if len(group.members) < self.sybil_min:
            return []
        group.established = True
        reasons = (
            Reason("stage", "laundering", "fresh addresses of one source collect"),
            Reason("source", member.source, "funded the fresh addresses"),
            Reason("collector", collector, "approved, paid or pulled from all of them"),
            Reason("sybils", len(group.members), f"fresh addresses (>= {self.sybil_min})"),
            Reason(
                "funding_blocks",
                row.block_number - group.block,
                f"from the first collection (fresh for <= {self.fresh_window} blocks)",
            ),
        )
        out: list[Alert] = []
        own = self._fresh.get(collector)
        extra = own.rows if own is not None and own.source == member.source else []
        for member_rows in [*group.members.values(), extra]:
            for r in member_rows:
                if r.tx not in group.alerted:
                    group.alerted.add(r.tx)
                    out.append(
                        self._alert(r, "sybil_laundering", reasons, (member.source, collector), 0.9)
                    )
        return out

    def _fresh_action(self, row: FeatureRow, mine: _Fresh) -> list[Alert]:
        """What a fresh funded address does: collect for a sybil group, spam, or poison."""
        collectors = {a.spender for a in row.approvals if a.owner == row.sender}
        collectors |= {t.recipient for t in row.transfers if t.sender == row.sender}
        if row.to is not None and row.value > self.dust_wei and row.selector == "":
            collectors.add(row.to)  # plain ETH sent on
        collectors.discard(mine.source)
        if mine.acts > self.sybil_max_acts:
            collectors.clear()  # an address in ordinary use by now, not a sybil collecting
        dust = [
            t for t in row.transfers if t.sender == row.sender and 0 < t.amount <= self.dust_tokens
        ]
        if dust and not row.approvals:
            t = dust[0]
            reasons = (
                Reason("stage", "poison", "dust from a freshly funded address"),
                Reason("impostor", row.sender, f"funded by {mine.source}"),
                Reason("victim", t.recipient, f"received {t.amount} of {t.token}"),
                Reason("amount", t.amount, f"token base units (<= {self.dust_tokens})"),
            )
            self._remember_poisoning(t.recipient, row.sender, row.block_number)
            return [
                self._alert(r, "address_poisoning", reasons, (row.sender, t.recipient), 0.9)
                for r in [*mine.rows, row]
            ]
        if collectors:
            out: list[Alert] = []
            for collector in sorted(collectors):
                out.extend(self._collect(row, row.sender, mine, collector))
            return out
        if row.value == 0 and not row.transfers and not row.approvals and not row.swaps:
            group = self._junk.get(mine.source)
            if group is None:
                group = self._junk[mine.source] = _Group(row.block_number)
            group.members.setdefault(row.sender, list(mine.rows)).append(row)
            group.count += 1
            if group.count < self.junk_min:
                return []
            reasons = (
                Reason("stage", "flood", "fresh addresses sending transactions that do nothing"),
                Reason("source", mine.source, "funded the senders"),
                Reason("senders", len(group.members), "fresh addresses"),
                Reason("junk_txs", group.count, f"zero-value, no effect (>= {self.junk_min})"),
            )
            out = []
            for member_rows in group.members.values():
                for r in member_rows:
                    if r.tx not in group.alerted:
                        group.alerted.add(r.tx)
                        out.append(self._alert(r, "spam_flood", reasons, (mine.source,), 0.8))
            return out
        return []

    @staticmethod
    def _alert(
        row: FeatureRow,
        attack_class: str,
        reasons: tuple[Reason, ...],
        accounts: tuple[str, ...],
        score: float,
    ) -> Alert:
        return Alert(
            tx=row.tx,
            block=row.block_number,
            score=score,
            flagged=True,
            attack_class=attack_class,
            detector=DETECTOR,
            reasons=reasons,
            accounts=accounts,
        )
