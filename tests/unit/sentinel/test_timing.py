"""Adaptive phase windows for TrainingTask rounds, and the round simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ailedger.errors import InputError
from ailedger.sentinel.timing import (
    AdaptiveTiming,
    PhaseWindows,
    simulate_rounds,
    weighted_quantile,
)

PARTIES = ["a", "b", "c", "d", "e"]


def test_weighted_quantile_by_its_definition() -> None:
    # the smallest value whose cumulative weight reaches q of the total
    assert weighted_quantile([3, 1, 2], [1, 1, 1], 0.5) == 2
    assert weighted_quantile([1, 2, 3], [1, 1, 8], 0.2) == 2
    assert weighted_quantile([1, 2, 3], [1, 1, 8], 0.21) == 3
    assert weighted_quantile([5], [0.3], 1.0) == 5
    with pytest.raises(InputError):
        weighted_quantile([], [], 0.5)


def test_initial_windows_until_enough_is_seen() -> None:
    timing = AdaptiveTiming(PARTIES, quorum=3, initial=PhaseWindows(40, 30, 20), warmup=3)
    assert timing.windows() == PhaseWindows(40, 30, 20)
    for _ in range(2):
        for p in PARTIES:
            timing.observe(p, "commit", 2)
        timing.end_round()
    assert timing.window("commit") == 40  # seen only twice: not below the initial window
    for p in PARTIES:
        timing.observe(p, "commit", 2)
    timing.end_round()
    assert timing.window("commit") < 40


@given(
    st.lists(
        st.lists(st.floats(1.0, 200.0), min_size=len(PARTIES), max_size=len(PARTIES)),
        min_size=1,
        max_size=30,
    )
)
@settings(max_examples=40, deadline=None)
def test_window_covers_every_live_partys_latest_latency(rounds: list[list[float]]) -> None:
    timing = AdaptiveTiming(PARTIES, quorum=3, warmup=1)
    for row in rounds:
        for p, latency in zip(PARTIES, row, strict=True):
            timing.observe(p, "commit", latency)
        timing.end_round()
    assert timing.window("commit") >= max(rounds[-1])


def test_silent_parties_do_not_hold_the_window_open() -> None:
    timing = AdaptiveTiming(PARTIES, quorum=3, warmup=2)
    for _ in range(10):
        for p in PARTIES[:3]:  # d and e never act
            timing.observe(p, "commit", 3)
        timing.timeout("commit", ["d", "e"])  # a silent party's absence grows nothing
        timing.end_round()
    assert timing.live("commit") == ("a", "b", "c")
    assert timing.window("commit") <= 10


def test_attest_needs_only_the_quorum() -> None:
    timing = AdaptiveTiming(PARTIES, quorum=3, warmup=1, slack=0.0, margin=0)
    for p, latency in zip(PARTIES, [1, 2, 3, 50, 60], strict=True):
        timing.observe(p, "attest", latency)
        timing.observe(p, "reveal", latency)
    timing.end_round()
    assert timing.window("attest") == 3
    assert timing.window("reveal") == 60


def test_timeouts_grow_the_window_and_it_shrinks_slowly() -> None:
    timing = AdaptiveTiming(PARTIES, quorum=3, warmup=1, growth=2.0, shrink=0.9)
    for p in PARTIES:
        timing.observe(p, "reveal", 4)
    before = timing.window("reveal")
    timing.timeout("reveal", ["a"])  # a live party missed
    assert timing.window("reveal") >= 2 * before - 1
    grown = timing.window("reveal")
    timing.end_round()
    for p in PARTIES:
        timing.observe(p, "reveal", 4)
    after_one = timing.window("reveal")
    assert before < after_one < grown  # one round without a miss: only 10 % back


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.observe("zz", "commit", 1),
        lambda t: t.observe("a", "vote", 1),
        lambda t: t.observe("a", "commit", -1),
        lambda t: t.observe("a", "commit", math.nan),
        lambda t: t.observe_block_time(0),
        lambda t: t.to_blocks(12.0),
    ],
)
def test_bad_input(call: object) -> None:
    timing = AdaptiveTiming(PARTIES, quorum=3)
    with pytest.raises(InputError):
        call(timing)  # type: ignore[operator]
    with pytest.raises(InputError, match="quorum"):
        AdaptiveTiming(PARTIES, quorum=6)


def test_simulation_applies_the_contracts_phase_rules() -> None:
    inf = math.inf
    # c is silent; a and b act in 1 and 2 blocks; windows 5/5/5, quorum 2:
    # commit waits its whole window for c (5), reveal closes once a and b revealed (2),
    # attest once 2 attested (2), plus one block to advance
    out = simulate_rounds(
        [[[1, 1, 1], [2, 2, 2], [inf, inf, inf]]], quorum=2, policy=PhaseWindows(5, 5, 5)
    )
    assert (out.blocks, out.honest_missed, out.failed_rounds) == (10, 0, 0)
    # b needs 7 blocks to commit: it misses the 5-block window (one honest action missed)
    out = simulate_rounds(
        [[[1, 1, 1], [7, 2, 2], [1, 1, 1]]], quorum=2, policy=PhaseWindows(5, 5, 5)
    )
    assert out.honest_missed == 1
    assert out.round_blocks == (5 + 1 + 1 + 1,)


def test_adaptive_windows_beat_fixed_ones_with_a_silent_party() -> None:
    rng = np.random.default_rng(7)
    rounds = 120
    lat = np.ceil(
        rng.lognormal(np.log([2, 3, 4, 5, 6]), 0.3, size=(rounds, 3, 5)).transpose(0, 2, 1)
    )
    lat[:, 4, :] = math.inf  # party e crashed
    fixed = PhaseWindows(40, 40, 40)
    a = simulate_rounds(lat.tolist(), quorum=3, policy=fixed)
    b = simulate_rounds(
        lat.tolist(), quorum=3, policy=AdaptiveTiming(PARTIES, quorum=3, initial=fixed)
    )
    assert b.blocks < a.blocks
    assert b.honest_missed <= a.honest_missed


def test_a_party_silent_for_some_rounds_is_proposed_for_exclusion() -> None:
    timing = AdaptiveTiming(PARTIES, quorum=3, exclude_after=2)
    assert timing.to_exclude() == ()  # nothing seen yet: too early to judge
    for _ in range(3):
        for p in ("a", "b", "c"):
            timing.observe(p, "commit", 2)
        timing.observe("d", "attest", 5)  # d acts, if only in one phase
        timing.end_round()
    assert timing.to_exclude() == ("e",)
    # never below the quorum: of a, b, e only one can go, and a, b are active
    assert timing.to_exclude(["a", "b", "e"]) == ()
    assert AdaptiveTiming(PARTIES, quorum=3, exclude_after=None).to_exclude() == ()
    with pytest.raises(InputError, match="exclude_after"):
        AdaptiveTiming(PARTIES, quorum=3, exclude_after=0)


def test_simulation_excludes_a_silent_party_and_stops_waiting_for_it() -> None:
    inf = math.inf
    row = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [inf, inf, inf]]
    timing = AdaptiveTiming(["a", "b", "c", "d"], quorum=3, exclude_after=2, warmup=1)
    out = simulate_rounds([row] * 6, quorum=3, policy=timing)
    # rounds 0 and 1 wait the whole commit window for d (40 blocks, then a learned one); d never
    # acted in 2 rounds, so from round 2 on it is excluded and commit closes once a, b, c
    # committed: 2 + 2 + 2 blocks, plus one to advance
    assert out.round_blocks[0] == 40 + 2 + 2 + 1
    assert out.round_blocks[1] > 7
    assert out.round_blocks[2:] == (7, 7, 7, 7)
    assert out.honest_missed == 0
    # an excluded party that acts again counts as missed (the contract refuses it)
    back = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [1, 1, 1]]
    timing = AdaptiveTiming(["a", "b", "c", "d"], quorum=3, exclude_after=2, warmup=1)
    out = simulate_rounds([row] * 4 + [back], quorum=3, policy=timing)
    assert out.honest_missed == 1
