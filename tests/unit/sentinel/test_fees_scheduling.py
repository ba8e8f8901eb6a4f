"""The forecaster's autoregression order and the scheduler's send rule, as properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ailedger.errors import InputError
from ailedger.ledger.chaindata import FeeHistory
from ailedger.sentinel.fees import (
    BaseFeeForecaster,
    FeeScheduler,
    evolve_base_fees,
)

LIMIT = 30_000_000


def _history(ratios: np.ndarray, start: int = 10**9) -> FeeHistory:
    """Base fees evolved with the exact rule from ``ratios`` (no rewards)."""
    used = [int(r * LIMIT) for r in np.clip(ratios, 0.0, 1.0)]
    fees = evolve_base_fees(start, used, LIMIT)
    return FeeHistory(0, tuple(fees), tuple(u / LIMIT for u in used), (), ())


def _schedule(history: FeeHistory, arrival: int, within: int, *, paths: int = 50) -> int:
    """Blocks a transaction arriving at ``arrival`` waits before the scheduler sends it."""
    scheduler = FeeScheduler(within=within)
    forecaster = BaseFeeForecaster(period=None, paths=paths)
    for waited in range(within):
        now = arrival + waited
        part = FeeHistory(
            0, history.base_fee_per_gas[: now + 1], history.gas_used_ratio[:now], (), ()
        )
        forecast = forecaster.fit(part).forecast(within - waited, levels=scheduler.levels)
        decision = scheduler.decide(
            next_base_fee=history.base_fee_per_gas[now],
            waited=waited,
            forecast=forecast,
            tip=1,
        )
        if decision.send:
            return waited
    raise AssertionError(f"not sent within {within} blocks")


def test_order_one_data_gets_order_one_and_its_coefficient() -> None:
    # u = 0.5 + y, y[t] = 0.7 y[t-1] + e: the BIC picks one lag and least squares finds 0.7
    rng = np.random.default_rng(11)
    y = np.zeros(3000)
    for t in range(1, len(y)):
        y[t] = 0.7 * y[t - 1] + rng.normal(0, 0.02)
    fitted = BaseFeeForecaster(period=None, paths=20).fit(_history(0.5 + y))
    assert len(fitted.ar_) == 1
    assert abs(fitted.ar_[0] - 0.7) < 0.05


def test_slow_and_fast_demand_get_more_than_one_lag() -> None:
    # a slow AR(1) (0.97) under fast noise is an ARMA(1, 1): one lag cannot hold it
    rng = np.random.default_rng(12)
    slow = np.zeros(3000)
    for t in range(1, len(slow)):
        slow[t] = 0.97 * slow[t - 1] + rng.normal(0, 0.01)
    ratios = 0.5 + slow + rng.normal(0, 0.05, len(slow))
    fitted = BaseFeeForecaster(period=None, paths=20).fit(_history(ratios))
    assert len(fitted.ar_) > 1
    # the persistence (sum of coefficients) is far above what one lag fits
    one_lag = BaseFeeForecaster(period=None, paths=20, order=1).fit(_history(ratios))
    assert fitted.phi_ > one_lag.phi_ + 0.2
    assert float(np.abs(fitted.ar_).sum()) <= 0.99 + 1e-9


def test_order_is_checked() -> None:
    for bad in (0, 13, 2.5, True):
        with pytest.raises(InputError, match="order"):
            BaseFeeForecaster(order=bad)  # type: ignore[arg-type]


@given(
    within=st.integers(2, 12),
    level=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=15, deadline=None)
def test_scheduler_always_sends_before_its_bound(within: int, level: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    history = _history(level + rng.normal(0, 0.2, 80 + within))
    waited = _schedule(history, 60, within, paths=20)
    assert waited <= within - 1 - FeeScheduler(within=within).headroom


@given(level=st.floats(0.0, 0.3), seed=st.integers(0, 2**16))
@settings(max_examples=10, deadline=None)
def test_never_pays_more_than_at_once_on_a_falling_trace(level: float, seed: int) -> None:
    # blocks under half full: every base fee is at most the one before
    rng = np.random.default_rng(seed)
    history = _history(np.clip(level + rng.normal(0, 0.05, 100), 0.0, 0.45))
    waited = _schedule(history, 70, 10, paths=20)
    assert history.base_fee_per_gas[70 + waited] <= history.base_fee_per_gas[70]


@given(level=st.floats(0.8, 1.0), seed=st.integers(0, 2**16))
@settings(max_examples=10, deadline=None)
def test_sends_at_once_when_the_fee_keeps_rising(level: float, seed: int) -> None:
    # blocks well over half full: waiting only costs, so the forecast says send now
    rng = np.random.default_rng(seed)
    history = _history(np.clip(level + rng.normal(0, 0.03, 100), 0.7, 1.0))
    assert _schedule(history, 70, 10, paths=20) == 0
