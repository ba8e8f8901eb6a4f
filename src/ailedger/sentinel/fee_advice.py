"""Fee scheduling for every transaction ailedger sends (``[chain] fee_policy = "scheduled"``).

One advisor for all of ailedger's own transactions: anchors (which the anchoring service sends
without blocking, :func:`anchor_fee_advisor`), and provenance registrations, sharing grants,
training commits, reveals, attestations and votes, which all go through
:meth:`ailedger.ledger.Ledger.send`:

1. :func:`transaction_fee_advisor` answers, for a transaction that has waited ``waited``
   blocks under a latency bound of ``within`` blocks, whether to send now and with which
   ``maxFeePerGas`` and ``maxPriorityFeePerGas``. It reads the
   recent fee history (``eth_feeHistory`` with its lowest reward percentile), fits a
   :class:`~ailedger.sentinel.fees.BaseFeeForecaster` and asks a
   :class:`~ailedger.sentinel.fees.FeeScheduler` (an optimal-stopping rule on the forecast of
   the EIP-1559 base fee; see :mod:`ailedger.sentinel.fees`), here with the bound of the
   transaction at hand rather than one fixed bound.
2. :func:`configured_fee_hook` turns a workspace's ``[chain]`` table into the
   :class:`~ailedger.ledger.FeeHook` a ledger uses (None for the default policy, so the ledger
   then sends at once exactly as without scheduling, with no extra requests), and
   :func:`use_configured_fees` sets it on a ledger; :func:`configured_fee_advisor` gives the
   anchoring service the same advisor with the configured bound.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ailedger.errors import InputError
from ailedger.sentinel.fees import BaseFeeForecaster, FeeScheduler, SendDecision

if TYPE_CHECKING:
    from ailedger.ledger import FeeHook, Ledger
    from ailedger.ledger.chaindata import FeeHistory

__all__ = [
    "DEFAULT_STALL_SECONDS",
    "DEFAULT_WAIT_BLOCKS",
    "TransactionFeeAdvisor",
    "anchor_fee_advisor",
    "configured_fee_advisor",
    "configured_fee_hook",
    "transaction_fee_advisor",
    "use_configured_fees",
]

DEFAULT_WAIT_BLOCKS = 30
"""Blocks a transaction may wait when ``[chain] fee_wait_blocks`` is not set: the smallest bound
at which the scheduler saved at least 30 % in every one of 26 tuning runs of the fee benchmark
(``benchmarks/fees.py``: the histories of its (a) runs with seeds 1-6 and 20-39, replayed; the
least was 35 %, at 25 blocks 29.7 %, at 20 blocks 24.6 %). At 12 s a block, six minutes."""
DEFAULT_STALL_SECONDS = 30.0
"""Seconds without a new block after which a waiting transaction is sent (nodes that mine on
demand make no block while nothing is sent); the embedded chain does not wait at all."""


class TransactionFeeAdvisor:
    """The fee advisor of one ledger's chain for transactions with any latency bound.

    Called as ``advisor(waited, within)`` (blocks) it returns a
    :class:`~ailedger.sentinel.fees.SendDecision`. It reads the fee history of the last
    ``history_blocks`` blocks once per head block (answers at the same head reuse it), fits a
    :class:`BaseFeeForecaster` (``paths`` simulated paths; with fewer than 3 blocks of history,
    or a bound of 1 block, there is no forecast and it sends) and asks a
    :class:`FeeScheduler` with ``within`` as its bound.
    """

    def __init__(self, ledger: Ledger, *, history_blocks: int = 256, paths: int = 200) -> None:
        if (
            isinstance(history_blocks, bool)
            or not isinstance(history_blocks, int)
            or not 3 <= history_blocks <= 1024
        ):
            raise InputError(f"history_blocks must lie in [3, 1024], got {history_blocks!r}")
        if isinstance(paths, bool) or not isinstance(paths, int) or not 10 <= paths <= 10_000:
            raise InputError(f"paths must lie in [10, 10000], got {paths!r}")
        self.ledger = ledger
        self.history_blocks = history_blocks
        self.paths = paths
        self._lock = threading.Lock()
        self._cached: tuple[int, FeeHistory] | None = None

    def history(self) -> FeeHistory:
        """The fee history of the recent blocks up to the head (one ``eth_feeHistory``)."""
        from ailedger.ledger.reader import ChainReader

        with self._lock:
            head = self.ledger.block_number()
            if self._cached is not None and self._cached[0] == head:
                return self._cached[1]
            with ChainReader.from_ledger(self.ledger) as reader:
                history = reader.fee_history(
                    min(self.history_blocks, head + 1), head, percentiles=(0.0,)
                )
            self._cached = (head, history)
            return history

    def __call__(self, waited: int, within: int, /) -> SendDecision:
        if isinstance(within, bool) or not isinstance(within, int) or within < 1:
            raise InputError(f"within must be a positive number of blocks, got {within!r}")
        if isinstance(waited, bool) or not isinstance(waited, int) or waited < 0:
            raise InputError(f"waited must be a non-negative number of blocks, got {waited!r}")
        scheduler = FeeScheduler(within=min(within, 100_000))
        history = self.history()
        forecast = None
        if len(history.gas_used_ratio) >= 3 and scheduler.within > 1:
            forecaster = BaseFeeForecaster(period=None, paths=self.paths).fit(history)
            forecast = forecaster.forecast(scheduler.within, levels=scheduler.levels)
        return scheduler.decide(
            next_base_fee=history.base_fee_per_gas[-1],
            waited=waited,
            forecast=forecast,
            tip=scheduler.tip(history, waited=waited),
        )


def transaction_fee_advisor(ledger: Ledger, *, history_blocks: int = 256) -> TransactionFeeAdvisor:
    """The fee advisor for any of ailedger's own transactions on ``ledger``'s chain
    (see :class:`TransactionFeeAdvisor`)."""
    return TransactionFeeAdvisor(ledger, history_blocks=history_blocks)


def configured_fee_hook(chain: Mapping[str, Any], ledger: Ledger) -> FeeHook | None:
    """The fee hook a workspace's ``[chain]`` table asks for: None for ``fee_policy =
    "default"`` (or absent), else a hook with :func:`transaction_fee_advisor`, ``within =
    fee_wait_blocks`` (default :data:`DEFAULT_WAIT_BLOCKS`) and ``stall_seconds =
    fee_stall_seconds`` (default 30). The table is checked when the workspace is read; values
    out of range are refused here too (:class:`InputError`)."""
    from ailedger.ledger import FeeHook

    policy = chain.get("fee_policy", "default")
    if policy == "default":
        return None
    if policy != "scheduled":
        raise InputError(f'chain.fee_policy must be "default" or "scheduled", got {policy!r}')
    within = chain.get("fee_wait_blocks", DEFAULT_WAIT_BLOCKS)
    if isinstance(within, bool) or not isinstance(within, int) or not 1 <= within <= 1000:
        raise InputError(f"chain.fee_wait_blocks must be an integer in [1, 1000], got {within!r}")
    stall_seconds = chain.get("fee_stall_seconds", DEFAULT_STALL_SECONDS)
    if (
        isinstance(stall_seconds, bool)
        or not isinstance(stall_seconds, int | float)
        or not 0 <= stall_seconds <= 86_400
    ):
        raise InputError(
            f"chain.fee_stall_seconds must be a number of seconds in [0, 86400], "
            f"got {stall_seconds!r}"
        )
    return FeeHook(
        advisor=transaction_fee_advisor(ledger),
        within=within,
        stall_seconds=float(stall_seconds),
    )


def anchor_fee_advisor(
    ledger: Ledger, *, within: int, history_blocks: int = 256
) -> Callable[[int], SendDecision]:
    """A fee advisor for :class:`ailedger.auditlog.anchoring.Anchorer` on ``ledger``'s chain:
    :class:`TransactionFeeAdvisor` with the latency bound ``within`` blocks, called with the
    blocks the anchor has waited."""
    if isinstance(within, bool) or not isinstance(within, int) or within < 1:
        raise InputError(f"within must be a positive number of blocks, got {within!r}")
    advisor = TransactionFeeAdvisor(ledger, history_blocks=history_blocks)

    def advise(waited: int) -> SendDecision:
        return advisor(waited, within)

    return advise


def configured_fee_advisor(
    chain: Mapping[str, Any], ledger: Ledger
) -> Callable[[int], SendDecision] | None:
    """The anchor fee advisor a workspace's ``[chain]`` table asks for: None for the default
    policy, else :func:`anchor_fee_advisor` with ``within = fee_wait_blocks`` (checked as
    :func:`configured_fee_hook` checks it)."""
    hook = configured_fee_hook(chain, ledger)
    if hook is None:
        return None
    return anchor_fee_advisor(ledger, within=hook.within)


def use_configured_fees(ledger: Ledger, chain: Mapping[str, Any]) -> Ledger:
    """Set on ``ledger`` the fee hook ``chain`` (a ``[chain]`` table) asks for; returns it."""
    ledger.fee_hook = configured_fee_hook(chain, ledger)
    return ledger
