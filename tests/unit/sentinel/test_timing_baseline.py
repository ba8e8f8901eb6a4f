"""The timing benchmark's fair baseline: the shortest fixed window, and the ideal bound."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from ailedger.sentinel.timing import AdaptiveTiming, PhaseWindows, simulate_rounds

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "timing.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("timing_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _missed(lat: np.ndarray, window: int, quorum: int) -> int:
    policy = PhaseWindows(window, window, window)
    return simulate_rounds(lat.tolist(), quorum=quorum, policy=policy).honest_missed


def test_tuned_window_is_the_shortest_that_misses_no_more(bench: ModuleType) -> None:
    rng = np.random.default_rng(3)
    lat = bench.draw(rng, 30, bench.PARTIES[:5], 0.35, np.full(30, 2.0), silent={4: (0, 30)})
    times = np.full(30, 2.0)
    for allowed in (0, 3):
        window = bench.tuned_window([(lat, times)], 3, allowed)
        assert window is not None
        assert _missed(lat, window, 3) <= allowed
        assert all(_missed(lat, w, 3) > allowed for w in range(1, window))


def test_ideal_is_a_bound_for_windows_that_miss_no_one(bench: ModuleType) -> None:
    rng = np.random.default_rng(4)
    lat = bench.draw(rng, 40, bench.PARTIES[:5], 0.35, np.full(40, 4.0), silent={1: (10, 40)})
    ideal, failed = bench.ideal_blocks(lat, 3)
    assert failed == 0
    names = [f"p{i}" for i in range(5)]
    for policy in (PhaseWindows(200, 200, 200), AdaptiveTiming(names, quorum=3)):
        out = simulate_rounds(lat.tolist(), quorum=3, policy=policy)
        assert out.honest_missed == 0
        assert out.blocks >= ideal
    # all honest and a window longer than any latency: the fixed policy is the ideal
    honest = lat.copy()
    honest[~np.isfinite(honest)] = 1.0
    long = simulate_rounds(honest.tolist(), quorum=3, policy=PhaseWindows(500, 500, 500))
    assert long.blocks == bench.ideal_blocks(honest, 3)[0]
