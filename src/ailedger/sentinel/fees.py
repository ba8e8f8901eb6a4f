"""EIP-1559 fees: the base-fee rule, a base-fee forecaster, and a send scheduler.

1. :func:`next_base_fee` is the base-fee rule exactly as EIP-1559 ("Fee market change for ETH
   1.0 chain", Buterin et al., 2019) specifies it: integer arithmetic, elasticity multiplier 2,
   base fee max change denominator 8, an increase of at least 1 wei, and ``INITIAL_BASE_FEE`` on
   the fork block. Tests check it against anvil's own ``baseFeePerGas``.
2. :class:`BaseFeeForecaster` forecasts the base fee ``k`` blocks ahead as quantiles. It models
   the gas-used ratio ``u`` (gas used / gas limit) as a seasonal profile (mean ratio per bin
   of the time of day) plus a residual ``y`` that keeps part of the recent trend (an
   autoregression of order ``p``, coefficients ``a``) and falls when the base fee is above its
   usual level for that time of day (demand answers the price, ``kappa``):
   ``y[t] = sum_k a[k] * y[t-1-k] - kappa * (log b[t] - level(t)) + e``, fitted by least
   squares, the order ``p`` (1 to 12) chosen by the Bayesian information criterion (Schwarz,
   1978), with innovations ``e`` bootstrapped from the fit. Demand is persistent on two time
   scales (a burst or a cycle lasts tens of blocks, noise a block), which one lag cannot hold
   (the autocorrelation of ``u`` falls fast over one block, slowly after). It simulates
   paths of ``u``, pushes each through the rule, and clips the quantiles across paths to the
   rule's hard bounds (the base fee moves by at most 1/8 per block). The simulation uses the
   rule in real numbers (``b * (1 + (2u - 1) / 8)``), which differs from the integer rule by
   at most 1 wei a block. With ``period=None`` the cycle's length is found in the history
   itself: the candidate period (at least 1.5 cycles observed) with the largest periodogram
   power of the gas-used ratio (Schuster's periodogram, evaluated on a grid of periods as in
   Lomb-Scargle, Scargle, ApJ 263, 1982), kept only if that power is well above the mean
   power (else no seasonal profile is used).
   Congestion comes in episodes: once blocks are full (``u >= full_ratio``, 0.85 by default)
   they tend to stay full until a backlog clears, and a linear autoregression fitted mostly on
   ordinary blocks forgets that within a block or two. So while a path is in a run of full
   blocks it stays full with the probability the history's own runs give at that length: a
   life-table (Kaplan-Meier) estimate of the hazard that a run of length ``j`` ends, the run in
   progress at the end of the history counted as censored, shrunk toward the overall chance
   that a full block follows a full one (weight ``run_prior`` runs) where few runs were that
   long; a full block's ratio is drawn from the history's full blocks. On 26 tuning runs of
   the fee benchmark's generator this raised the mean saving by about half a point at bounds
   of 10, 20 and 30 blocks and the smallest by 1 to 2 points (``full_ratio=None`` turns it off).
3. :class:`FeeScheduler` decides, block by block, whether one of ailedger's own transactions
   (an anchor, a registration, an attestation) should be sent now or wait, under a latency
   bound in blocks, and which ``maxFeePerGas`` and ``maxPriorityFeePerGas`` to set. It is an
   optimal-stopping rule on the forecast, a look-ahead rule in the sense of Chow, Robbins and
   Siegmund ("Great Expectations: The Theory of Optimal Stopping", 1971, ch. 3) over the
   whole window: send once the next block's base fee is at or below the ``patience`` quantile
   of every block still in the window (waiting is unlikely to pay), or once only ``headroom``
   blocks are left. The defaults (``patience`` 0.5, ``headroom`` 1) were chosen on six anvil
   traces of ``benchmarks/fees.py``'s generator (seeds 1-6), not on the traces it reports: over
   bounds of 10, 20 and 60 blocks, ``headroom`` 1 saved 1 to 3 points more than 3 (the old
   default); ``patience`` 0.4, 0.5 and 0.6 were within half a point of each other when the
   forecaster knew the day, and without a seasonal profile 0.6 lost 20 points at 60 blocks; a
   Longstaff-Schwartz dynamic programme on the simulated paths (Rev. Financ. Stud. 14(1), 2001:
   regression of the cost to go on each path's fee and last change) did no better.
   The tip is the cheapest tip recent blocks included (their lowest reward percentile), raised
   as the deadline nears; the fee cap covers ``headroom`` blocks of maximal base-fee rise
   (``(9/8)**headroom``), so a transaction sent on time is still includable when the base fee
   climbs. Given the forecaster's simulated paths (``forecast(..., keep_paths=True)``) it sends
   instead once the next base fee is at or below :func:`best_threshold`, the threshold rule
   with the lowest mean cost over those paths.
4. :mod:`ailedger.sentinel.fee_advice` wires the scheduler into ailedger's own transactions
   and anchors (``[chain] fee_policy = "scheduled"``): asked with the blocks a transaction has
   waited, it reads the chain's recent fee history, forecasts, and answers with a
   :class:`SendDecision`.

The baseline the scheduler is measured against is web3.py 8's default fee policy for a
transaction sent at once: ``maxPriorityFeePerGas`` from the node (``eth_maxPriorityFeePerGas``)
and ``maxFeePerGas = 2 * latest base fee + maxPriorityFeePerGas``
(``web3._utils.transactions.TRANSACTION_DEFAULTS``), which is what ``Ledger.send`` does too.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ailedger._input import parse_json
from ailedger.errors import InputError, NotFittedError
from ailedger.ledger.chaindata import BlockRecord, FeeHistory
from ailedger.ledger.eip1559 import (
    BASE_FEE_MAX_CHANGE_DENOMINATOR,
    ELASTICITY_MULTIPLIER,
    INITIAL_BASE_FEE,
    next_base_fee,
)

if TYPE_CHECKING:
    pass

__all__ = [
    "BASE_FEE_MAX_CHANGE_DENOMINATOR",
    "ELASTICITY_MULTIPLIER",
    "INITIAL_BASE_FEE",
    "BaseFeeForecaster",
    "FeeForecast",
    "FeeScheduler",
    "SendDecision",
    "base_fee_bounds",
    "best_threshold",
    "evolve_base_fees",
    "fee_history_from_blocks",
    "fee_history_from_json",
    "fee_history_to_json",
    "next_base_fee",
]

_MAX_WEI = 2**256 - 1
_MAX_HISTORY = 1_000_000
"""Blocks; the most a forecaster or a fee-history file takes."""


# -- 1. the rule -----------------------------------------------------------------------------


def evolve_base_fees(initial: int, gas_used: Sequence[int], gas_limit: int) -> list[int]:
    """Base fees of ``len(gas_used) + 1`` blocks: ``initial``, then each block's child.

    ``gas_used[i]`` is the gas used by the block whose base fee is entry ``i``; every block has
    ``gas_limit``. This is how a demand trace becomes a base-fee trace with the exact rule.
    """
    fees = [initial]
    for used in gas_used:
        fees.append(next_base_fee(fees[-1], used, gas_limit))
    return fees


def base_fee_bounds(base_fee: int, blocks: int) -> tuple[int, int]:
    """The lowest and highest base fee ``blocks`` blocks after one of ``base_fee`` (wei).

    The lowest follows empty blocks, the highest full ones; the rule with a gas limit of 8
    (gas target 4) gives exactly the -1/8 and +1/8 extremes, floors and the 1-wei minimum.
    The highest is capped at 2**256 - 1 (a base fee is a 256-bit word).
    """
    if isinstance(blocks, bool) or not isinstance(blocks, int) or not 0 <= blocks <= 100_000:
        raise InputError(f"blocks must be an integer in [0, 100000], got {blocks!r}")
    low = high = base_fee
    for _ in range(blocks):
        low = next_base_fee(low, 0, 8)
        high = min(next_base_fee(high, 8, 8), _MAX_WEI)
    return low, high


# -- fee history -----------------------------------------------------------------------------


def fee_history_from_blocks(
    blocks: Sequence[BlockRecord], percentiles: Sequence[float] = ()
) -> FeeHistory:
    """What ``eth_feeHistory`` answers for these consecutive blocks, computed from the records.

    Rewards are the tips (effective gas price minus base fee) at each percentile, weighted by
    gas used as geth weighs them. Raises :class:`InputError` for an empty, gapped or pre-London
    range.
    """
    if not blocks:
        raise InputError("no blocks given")
    pct = _check_percentiles(percentiles)
    for prev, block in itertools.pairwise(blocks):
        if block.number != prev.number + 1:
            raise InputError(f"blocks are not consecutive: {prev.number} then {block.number}")
    base: list[int] = []
    ratios: list[float] = []
    rewards: list[tuple[int, ...]] = []
    for block in blocks:
        if block.base_fee_per_gas is None:
            raise InputError(f"block {block.number} has no base fee (before London)")
        if block.gas_limit <= 0:
            raise InputError(f"block {block.number} has a gas limit of {block.gas_limit}")
        base.append(block.base_fee_per_gas)
        ratios.append(block.gas_used / block.gas_limit)
        tips = sorted(
            (max(tx.effective_gas_price - block.base_fee_per_gas, 0), tx.gas_used)
            for tx in block.transactions
        )
        rewards.append(tuple(_weighted_percentile(tips, p, block.gas_used) for p in pct))
    last = blocks[-1]
    assert last.base_fee_per_gas is not None
    base.append(next_base_fee(last.base_fee_per_gas, last.gas_used, last.gas_limit))
    return FeeHistory(
        oldest=blocks[0].number,
        base_fee_per_gas=tuple(base),
        gas_used_ratio=tuple(ratios),
        percentiles=pct,
        reward=tuple(rewards),
    )


def _weighted_percentile(tips: list[tuple[int, int]], percentile: float, gas_used: int) -> int:
    if not tips:
        return 0
    threshold = gas_used * percentile / 100
    total = 0
    for tip, used in tips:
        total += used
        if total >= threshold:
            return tip
    return tips[-1][0]


def _check_percentiles(percentiles: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(p) for p in percentiles)
    if len(out) > 100:
        raise InputError(f"at most 100 percentiles, got {len(out)}")
    for p in out:
        if not 0.0 <= p <= 100.0:
            raise InputError(f"percentiles must lie in [0, 100], got {p}")
    if list(out) != sorted(out):
        raise InputError("percentiles must be in ascending order")
    return out


def fee_history_to_json(history: FeeHistory) -> dict[str, Any]:
    """``history`` as ``eth_feeHistory`` returns it (hex quantities), plus ``rewardPercentiles``."""
    return {
        "oldestBlock": hex(history.oldest),
        "baseFeePerGas": [hex(b) for b in history.base_fee_per_gas],
        "gasUsedRatio": list(history.gas_used_ratio),
        "reward": [[hex(r) for r in row] for row in history.reward],
        "rewardPercentiles": list(history.percentiles),
    }


def fee_history_from_json(
    data: bytes | str | Mapping[str, Any], *, what: str = "fee history"
) -> FeeHistory:
    """Parse a saved ``eth_feeHistory`` result (a JSON document or its parsed mapping).

    The document is what a node returns (``oldestBlock``, ``baseFeePerGas``, ``gasUsedRatio``,
    optional ``reward``), optionally with the ``rewardPercentiles`` that were asked for, or
    wrapped in a JSON-RPC reply (``{"result": {...}}``). Raises :class:`InputError` naming what
    is wrong.
    """
    doc = (
        parse_json(data, what=what, max_bytes=256 * 2**20)
        if isinstance(data, bytes | str)
        else data
    )
    if isinstance(doc, Mapping) and "result" in doc and isinstance(doc["result"], Mapping):
        doc = doc["result"]
    if not isinstance(doc, Mapping):
        raise InputError(f"{what}: not a JSON object")
    oldest = _quantity(doc.get("oldestBlock"), f"{what}: oldestBlock")
    raw_base = doc.get("baseFeePerGas")
    raw_ratio = doc.get("gasUsedRatio")
    if not isinstance(raw_base, list) or not isinstance(raw_ratio, list):
        raise InputError(f"{what}: baseFeePerGas and gasUsedRatio must be lists")
    if not 1 <= len(raw_ratio) <= _MAX_HISTORY:
        raise InputError(f"{what}: gasUsedRatio must hold 1 to {_MAX_HISTORY} blocks")
    if len(raw_base) != len(raw_ratio) + 1:
        raise InputError(
            f"{what}: baseFeePerGas must hold one more entry than gasUsedRatio "
            f"({len(raw_base)} vs {len(raw_ratio)})"
        )
    base = tuple(_quantity(b, f"{what}: baseFeePerGas[{i}]") for i, b in enumerate(raw_base))
    ratios: list[float] = []
    for i, r in enumerate(raw_ratio):
        if isinstance(r, bool) or not isinstance(r, int | float) or not 0.0 <= float(r) <= 1.0:
            raise InputError(f"{what}: gasUsedRatio[{i}] must be a number in [0, 1], got {r!r}")
        ratios.append(float(r))
    pct = _check_percentiles(
        _float_list(doc.get("rewardPercentiles", []), f"{what}: rewardPercentiles")
    )
    raw_reward = doc.get("reward", [])
    if raw_reward is None:
        raw_reward = []
    if not isinstance(raw_reward, list):
        raise InputError(f"{what}: reward must be a list")
    reward: list[tuple[int, ...]] = []
    if raw_reward:
        if len(raw_reward) != len(ratios):
            raise InputError(f"{what}: reward must hold one row per block")
        width = len(raw_reward[0]) if isinstance(raw_reward[0], list) else -1
        if pct and width != len(pct):
            raise InputError(f"{what}: reward rows must hold one entry per percentile")
        for i, row in enumerate(raw_reward):
            if not isinstance(row, list) or len(row) != width:
                raise InputError(f"{what}: reward[{i}] must be a list of {width} quantities")
            reward.append(tuple(_quantity(v, f"{what}: reward[{i}]") for v in row))
        if not pct:
            pct = tuple(float(i) for i in range(width))
    return FeeHistory(
        oldest=oldest,
        base_fee_per_gas=base,
        gas_used_ratio=tuple(ratios),
        percentiles=pct if reward else (),
        reward=tuple(reward),
    )


def _quantity(value: Any, what: str) -> int:
    if isinstance(value, str) and value.startswith(("0x", "0X")) and 2 < len(value) <= 66:
        try:
            return int(value, 16)
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_WEI:
        return value
    raise InputError(f"{what} must be a hex quantity, got {str(value)[:40]!r}")


def _float_list(value: Any, what: str) -> list[float]:
    if not isinstance(value, list):
        raise InputError(f"{what} must be a list of numbers")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise InputError(f"{what} must be a list of numbers")
        out.append(float(v))
    return out


# -- 2. the forecaster -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeeForecast:
    """Base-fee quantiles for the blocks after the last one observed.

    ``quantiles[h, j]`` is the ``levels[j]`` quantile (wei) of the base fee of block
    ``first + h``; ``lower[h]`` and ``upper[h]`` are the rule's hard bounds for that block.
    ``paths[h, i]`` (when kept) is simulated path ``i``'s base fee of block ``first + h``.
    """

    first: int
    levels: tuple[float, ...]
    quantiles: npt.NDArray[np.float64]
    lower: tuple[int, ...]
    upper: tuple[int, ...]
    paths: npt.NDArray[np.float64] | None = None

    def quantile(self, level: float) -> npt.NDArray[np.float64]:
        """The ``level`` quantile for each block ahead (one of ``levels``), shape ``(ahead,)``."""
        if level not in self.levels:
            raise InputError(f"level {level} was not forecast (levels: {self.levels})")
        return self.quantiles[:, self.levels.index(level)]

    def to_json(self) -> list[dict[str, Any]]:
        """One object per block ahead: block number, bounds and quantiles (wei, as strings)."""
        return [
            {
                "block": self.first + h,
                "lower": str(self.lower[h]),
                "upper": str(self.upper[h]),
                "quantiles": {
                    f"{lv:g}": str(round(float(q))) for lv, q in zip(self.levels, row, strict=True)
                },
            }
            for h, row in enumerate(self.quantiles)
        ]


class BaseFeeForecaster:
    """Forecast the EIP-1559 base fee ``k`` blocks ahead (see the module docstring).

    ``period`` is the seasonal period in seconds (a day; None: found in the history, see the
    module docstring, learned as ``period_``) and ``bins`` how many parts it is cut into;
    ``block_time`` (seconds) places blocks in the day when only block numbers are known (fee
    history). The profile is used only once the history covers a whole period; before
    that the mean ratio stands in. ``order`` is the residual's autoregressive order (None:
    chosen by the Bayesian information criterion, up to 12 lags). ``full_ratio`` is the gas-used
    ratio from which a block counts as full, for the congestion runs (None: no run model), and
    ``run_prior`` how many runs' weight the overall full-after-full chance gets in each length's
    hazard. Learned attributes end in ``_``.
    """

    def __init__(
        self,
        *,
        period: float | None = 86_400.0,
        bins: int = 24,
        block_time: float = 12.0,
        paths: int = 400,
        seed: int = 0,
        order: int | None = None,
        full_ratio: float | None = 0.85,
        run_prior: float = 2.0,
    ) -> None:
        if period is not None and (not period > 0 or not math.isfinite(period)):
            raise InputError("period must be positive seconds or None")
        if not block_time > 0 or not math.isfinite(block_time):
            raise InputError("block_time must be positive seconds")
        if not 1 <= bins <= 10_000 or not 10 <= paths <= 100_000:
            raise InputError("bins must lie in [1, 10000] and paths in [10, 100000]")
        self.period = period
        self.bins = bins
        self.block_time = block_time
        self.paths = paths
        if order is not None and (
            isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= _MAX_ORDER
        ):
            raise InputError(
                f"order must be None or an integer in [1, {_MAX_ORDER}], got {order!r}"
            )
        if full_ratio is not None and not 0.5 < full_ratio <= 1.0:
            raise InputError(f"full_ratio must be None or lie in (0.5, 1], got {full_ratio!r}")
        if not 0.0 < run_prior <= 1e6 or not math.isfinite(run_prior):
            raise InputError(f"run_prior must be positive, got {run_prior!r}")
        self.seed = seed
        self.order = order
        self.full_ratio = full_ratio
        self.run_prior = run_prior

    def fit(
        self,
        history: FeeHistory | Sequence[BlockRecord],
        *,
        timestamps: Sequence[float] | None = None,
    ) -> BaseFeeForecaster:
        """Learn the gas-used profile and trend from a fee history or consecutive blocks.

        ``timestamps`` (seconds, one per block) place the blocks of a fee history in the day;
        block records carry their own. Returns ``self``.
        """
        if isinstance(history, FeeHistory):
            fh = history
            if timestamps is None:
                times = np.arange(fh.oldest, fh.newest + 1, dtype=np.float64) * self.block_time
            else:
                times = np.asarray(timestamps, dtype=np.float64)
        else:
            if not history:
                raise InputError("no blocks to learn from")
            fh = fee_history_from_blocks(history)
            times = np.asarray([b.timestamp for b in history], dtype=np.float64)
        ratios = np.asarray(fh.gas_used_ratio, dtype=np.float64)
        fees = np.asarray([float(max(b, 1)) for b in fh.base_fee_per_gas], dtype=np.float64)
        if len(ratios) < 3:
            raise InputError("at least 3 blocks are needed to learn from")
        if len(times) != len(ratios) or not np.all(np.isfinite(times)):
            raise InputError("timestamps must be finite, one per block")
        self.t_last_ = float(times[-1])
        step = float(np.median(np.diff(times)))
        self.step_ = step if step > 0 else self.block_time
        found = self.period if self.period is not None else _find_period(ratios, self.step_)
        self.period_ = found if found is not None else math.inf
        which = self._bin(times)
        covered = float(times[-1] - times[0]) >= self.period_
        log_fees = np.log(fees[:-1])
        self.profile_ = np.full(self.bins, float(ratios.mean()))
        self.level_ = np.full(self.bins, float(log_fees.mean()))
        if covered:
            for b in range(self.bins):
                sel = which == b
                if np.any(sel):
                    self.profile_[b] = float(ratios[sel].mean())
                    self.level_[b] = float(log_fees[sel].mean())
        y = ratios - self.profile_[which]
        dev = log_fees - self.level_[which]
        self.ar_, self.kappa_, innov = _fit_autoregression(y, dev, self.order)
        self.phi_ = float(self.ar_.sum())
        self.innovations_ = innov - innov.mean()
        # the latest residuals, newest first (the state the simulation starts from)
        self.lags_ = y[::-1][: len(self.ar_)].copy()
        self.last_residual_ = float(y[-1])
        self.next_block_ = fh.newest + 1
        self.next_base_fee_ = int(fh.base_fee_per_gas[-1])
        self._fit_runs(ratios)
        return self

    def _fit_runs(self, ratios: npt.NDArray[np.float64]) -> None:
        """The hazard of a run of full blocks ending at each length (see the module docstring):
        ``run_hazard_[j]`` for a run that has lasted ``j`` blocks (the last entry stands for all
        longer ones), ``run_now_`` the length of the run the history ends in (0: none)."""
        if self.full_ratio is None:
            self.run_hazard_ = np.ones(1)
            self.run_now_ = 0
            self.full_ratios_ = np.ones(1)
            return
        full = ratios >= self.full_ratio
        lengths = [len(list(g)) for is_full, g in itertools.groupby(full) if is_full]
        now = lengths[-1] if full[-1] else 0
        top = _MAX_RUN
        at_risk = np.zeros(top + 1)
        ended = np.zeros(top + 1)
        for i, length in enumerate(lengths):
            # a run of length L was at risk of ending at 1..L; the last one may go on (censored)
            at_risk[1 : min(length, top) + 1] += 1
            if not (i == len(lengths) - 1 and now):
                ended[min(length, top)] += 1
        follows = float(np.sum(full[1:] & full[:-1]))
        # the overall chance that a full block is followed by one that is not
        overall = 1.0 - follows / max(float(np.sum(full[:-1])), 1.0) if np.any(full) else 1.0
        self.run_hazard_ = (ended + self.run_prior * overall) / (at_risk + self.run_prior)
        self.run_hazard_[0] = 1.0
        self.run_now_ = now
        # a node's ratio above 1 (gas used over the limit) is not real: a full block is full
        self.full_ratios_ = np.minimum(ratios[full], 1.0) if np.any(full) else np.ones(1)

    def _bin(self, times: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        if not math.isfinite(self.period_):
            return np.zeros(len(times), dtype=np.int64)
        phase = np.mod(times, self.period_) / self.period_
        return np.minimum((phase * self.bins).astype(np.int64), self.bins - 1)

    def forecast(
        self,
        ahead: int,
        *,
        levels: Sequence[float] = (0.05, 0.5, 0.95),
        keep_paths: bool = False,
    ) -> FeeForecast:
        """Quantiles of the base fee of the next ``ahead`` blocks (the first is already known
        exactly from the last block, so its quantiles all equal it); ``keep_paths`` keeps the
        simulated paths (shape ``(ahead, paths)``, for :meth:`FeeScheduler.decide`)."""
        if not hasattr(self, "profile_"):
            raise NotFittedError("BaseFeeForecaster is not fitted: call fit() first")
        if isinstance(ahead, bool) or not isinstance(ahead, int) or not 1 <= ahead <= 10_000:
            raise InputError(f"ahead must be an integer in [1, 10000], got {ahead!r}")
        lv = tuple(float(v) for v in levels)
        if not lv or any(not 0.0 <= v <= 1.0 for v in lv):
            raise InputError("levels must be probabilities in [0, 1]")
        if ahead * self.paths > 20_000_000:
            raise InputError(
                f"ahead x paths must stay under 2e7 (memory), got {ahead * self.paths}"
            )
        rng = np.random.default_rng(self.seed)
        fees = np.full(self.paths, float(self.next_base_fee_))
        paths = np.empty((ahead, self.paths))
        paths[0] = fees
        order = len(self.ar_)
        lags = np.tile(self.lags_[:, None], (1, self.paths))  # (order, paths), newest first
        # block (next + h - 1)'s ratio sets the base fee of block (next + h)
        bins = self._bin(self.t_last_ + np.arange(1, ahead, dtype=np.float64) * self.step_)
        shocks = self.innovations_[rng.integers(len(self.innovations_), size=(ahead, self.paths))]
        run = np.full(self.paths, self.run_now_, dtype=np.int64)
        hazard = self.run_hazard_
        for h in range(1, ahead):
            b = bins[h - 1]
            dev = np.log(np.maximum(fees, 1.0)) - self.level_[b]
            resid = self.ar_ @ lags - self.kappa_ * dev + shocks[h]
            u = np.clip(self.profile_[b] + resid, 0.0, 1.0)
            if self.full_ratio is not None:
                # a path in a run of full blocks: the run goes on or ends as the history's did
                going = run > 0
                ends = rng.random(self.paths) < hazard[np.minimum(run, len(hazard) - 1)]
                full = self.full_ratios_[rng.integers(len(self.full_ratios_), size=self.paths)]
                u = np.where(going & ~ends, full, u)
                u = np.where(going & ends, np.minimum(u, np.nextafter(self.full_ratio, 0)), u)
                run = np.where(u >= self.full_ratio, run + 1, 0)
                resid = u - self.profile_[b]
            if order > 1:
                lags[1:] = lags[:-1].copy()
            lags[0] = resid
            fees = fees * (1.0 + (2.0 * u - 1.0) / BASE_FEE_MAX_CHANGE_DENOMINATOR)
            paths[h] = fees
        out = np.quantile(paths, lv, axis=1).T
        lower, upper = [], []
        low = high = self.next_base_fee_
        for h in range(ahead):
            if h:
                low = next_base_fee(low, 0, 8)
                high = min(next_base_fee(high, 8, 8), _MAX_WEI)
            lower.append(low)
            upper.append(high)
        out = np.clip(
            out,
            np.asarray(lower, dtype=np.float64)[:, None],
            np.asarray(upper, dtype=np.float64)[:, None],
        )
        return FeeForecast(
            first=self.next_block_,
            levels=lv,
            quantiles=out,
            lower=tuple(lower),
            upper=tuple(upper),
            paths=paths if keep_paths else None,
        )


_MAX_ORDER = 12
"""Blocks; the longest memory the residual's autoregression may have."""
_MAX_RUN = 64
"""Blocks; runs of full blocks longer than this share one hazard."""


def _fit_autoregression(
    y: npt.NDArray[np.float64], dev: npt.NDArray[np.float64], order: int | None = None
) -> tuple[npt.NDArray[np.float64], float, npt.NDArray[np.float64]]:
    """Fit ``y[t] = sum_k a[k] * y[t-1-k] - kappa * dev[t] + e[t]`` by least squares.

    The order is ``order`` if given, else the one (1 to 12) with the lowest Bayesian
    information criterion (Schwarz, Ann. Stat. 6(2), 1978) over the same rows; either way at
    most a tenth of the history. ``a`` is
    scaled so that ``sum |a| <= 0.99`` (a sufficient condition for a stationary process) and
    ``kappa`` clipped to ``[0, 1]``. Returns ``a`` (newest lag first), ``kappa`` and the
    residuals ``e``.
    """
    n = len(y)
    top = max(1, min(_MAX_ORDER if order is None else order, (n - 1) // 10))
    rows = n - top
    best: tuple[float, npt.NDArray[np.float64]] | None = None
    for p in range(1 if order is None else top, top + 1):
        design = np.column_stack([y[top - 1 - k : n - 1 - k] for k in range(p)] + [-dev[top:]])
        coef, *_ = np.linalg.lstsq(design, y[top:], rcond=None)
        rss = float(np.sum((y[top:] - design @ coef) ** 2))
        bic = rows * math.log(max(rss, 1e-300) / rows) + (p + 1) * math.log(rows)
        if best is None or bic < best[0]:
            best = (bic, np.asarray(coef, dtype=np.float64))
    assert best is not None
    coef = best[1]
    chosen = len(coef) - 1
    ar = np.asarray(coef[:chosen], dtype=np.float64)
    total = float(np.abs(ar).sum())
    if total > 0.99:
        ar = ar * (0.99 / total)
    kappa = float(min(max(coef[chosen], 0.0), 1.0))
    design = np.column_stack([y[chosen - 1 - k : n - 1 - k] for k in range(chosen)])
    innov = y[chosen:] - design @ ar + kappa * dev[chosen:]
    return ar, kappa, innov


def _find_period(ratios: npt.NDArray[np.float64], step: float) -> float | None:
    """The dominant cycle of ``ratios`` in seconds (``step`` seconds a block), or None.

    Periods of 8 blocks up to two thirds of the history are tried (log-spaced); a period is
    kept when its power stands out of white noise's (see the comment below).
    """
    n = len(ratios)
    if n < 24:
        return None
    x = ratios - ratios.mean()
    if not np.any(x):
        return None
    grid = np.unique(np.geomspace(8.0, n / 1.5, num=min(400, n)).round(1))
    t = np.arange(n, dtype=np.float64)
    angles = 2.0 * np.pi * t[None, :] / grid[:, None]
    power = (x @ np.cos(angles).T) ** 2 + (x @ np.sin(angles).T) ** 2
    best = int(np.argmax(power))
    # white noise: each power is about exponential with the mean power, so the largest of
    # about n/2 independent ones stays below mean * (log n + 5) with probability ~1 - e^-5 / 2
    if power[best] < (math.log(n) + 5.0) * float(np.mean(power)):
        return None
    return float(grid[best]) * step


# -- 3. the scheduler ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendDecision:
    """Whether to send now and with which fees (wei per gas); ``reason`` says why."""

    send: bool
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    reason: str


class FeeScheduler:
    """When to send a transaction that may wait up to ``within`` blocks, and at which fees.

    ``patience`` is the forecast quantile the next base fee must not exceed at any block left
    in the window for the scheduler to send before the deadline (lower waits more
    selectively); ``headroom`` blocks before the deadline it sends regardless, with a fee cap
    that survives ``headroom`` blocks of maximal base-fee rise (the next block's base fee is
    known exactly, so one block of headroom covers a transaction that misses one block).
    ``tip_floor`` (wei) is the smallest tip it offers.
    """

    def __init__(
        self, *, within: int, patience: float = 0.5, headroom: int = 1, tip_floor: int = 1
    ) -> None:
        if isinstance(within, bool) or not isinstance(within, int) or not 1 <= within <= 100_000:
            raise InputError(
                f"within must be an integer number of blocks in [1, 100000], got {within!r}"
            )
        if not 0.0 < patience <= 1.0:
            raise InputError(f"patience must lie in (0, 1], got {patience}")
        if not 0 <= headroom <= 64 or not 0 <= tip_floor <= _MAX_WEI:
            raise InputError("headroom must lie in [0, 64] blocks and tip_floor be non-negative")
        self.within = within
        self.patience = patience
        self.headroom = min(headroom, within - 1)
        self.tip_floor = tip_floor

    @property
    def levels(self) -> tuple[float, ...]:
        """The forecast levels :meth:`decide` reads (pass them to ``forecast``)."""
        return (self.patience,)

    def tip(
        self, history: FeeHistory, *, waited: int = 0, recent: int = 20, quantile: float = 0.0
    ) -> int:
        """The tip to offer (wei): the ``quantile`` (default 0: the smallest, a tip one of
        them included) over the last ``recent`` blocks of the lowest reward percentile in
        ``history``, stepped up by 1/8 for each block of the last
        ``headroom`` (a replacement needs a higher tip anyway)."""
        rows = [row[0] for row in history.reward[-recent:] if row]
        if not 0.0 <= quantile <= 1.0:
            raise InputError(f"quantile must lie in [0, 1], got {quantile}")
        base = int(np.quantile(rows, quantile)) if rows else self.tip_floor
        urgent = max(0, waited - (self.within - 1 - self.headroom))
        tip = max(base, self.tip_floor)
        for _ in range(urgent):
            tip += max(tip // 8, 1)
        return tip

    def decide(
        self, *, next_base_fee: int, waited: int, forecast: FeeForecast | None, tip: int
    ) -> SendDecision:
        """Decide for a transaction that has waited ``waited`` blocks (0 on arrival).

        ``next_base_fee`` is the base fee of the next block (known exactly from the latest
        block), ``forecast`` the forecaster's quantiles from that block on (None sends now),
        ``tip`` what :meth:`tip` offers.
        """
        if waited < 0 or next_base_fee < 0 or tip < 0:
            raise InputError("waited, next_base_fee and tip must be non-negative")
        left = self.within - 1 - waited
        cap = base_fee_bounds(next_base_fee, self.headroom)[1] + tip
        if left <= self.headroom or forecast is None:
            return SendDecision(
                True, cap, tip, "deadline" if forecast is not None else "no forecast"
            )
        if forecast.paths is not None:
            paths = forecast.paths[: left - self.headroom + 1]
            if len(paths) < 2:
                return SendDecision(True, cap, tip, "cheapest expected")
            threshold = best_threshold(paths)
            if next_base_fee <= threshold:
                return SendDecision(True, cap, tip, "at or below the best threshold")
            return SendDecision(False, cap, tip, f"waiting: threshold {threshold:.0f} wei")
        window = forecast.quantile(self.patience)[1 : left - self.headroom + 1]
        if len(window) == 0 or next_base_fee <= float(window.min()):
            return SendDecision(True, cap, tip, "cheapest expected")
        return SendDecision(False, cap, tip, f"waiting: {float(window.min()):.0f} wei expected")


def best_threshold(paths: npt.NDArray[np.float64], candidates: int = 32) -> float:
    """The base fee (wei) at or below which to send, best on average over simulated paths.

    ``paths[h, i]`` is path ``i``'s base fee ``h`` blocks from now (row 0 is now, the last row
    the deadline). A threshold policy sends at the first block whose base fee is at or below
    the threshold, else at the deadline; among ``candidates`` thresholds (quantiles of all
    simulated fees) this returns the one with the lowest mean base fee paid over the paths, a
    sample-average (Monte Carlo) solution of the optimal-stopping problem restricted to
    threshold rules (Longstaff and Schwartz, Rev. Financ. Stud. 14(1), 2001, solve the general
    one by regression on simulated paths).
    """
    if paths.ndim != 2 or paths.shape[0] < 1 or paths.shape[1] < 1:
        raise InputError(f"paths must be a non-empty (blocks, paths) array, got {paths.shape}")
    levels = np.quantile(paths, np.linspace(0.0, 1.0, candidates))
    hit = paths[None, :, :] <= levels[:, None, None]
    first = np.argmax(hit, axis=1)
    paid = np.where(
        hit.any(axis=1),
        np.take_along_axis(paths[None, :, :], first[:, None, :], 1)[:, 0],
        paths[-1],
    )
    return float(levels[int(np.argmin(paid.mean(axis=1)))])
