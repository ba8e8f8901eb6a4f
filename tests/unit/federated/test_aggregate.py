"""Unit tests of ailedger.federated.aggregate: fixed point, digests, each rule, robustness."""

from __future__ import annotations

import hashlib
import math
import struct
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from ailedger.errors import AggregationError
from ailedger.federated import aggregate as agg
from ailedger.federated.aggregate import (
    FRAC_BITS,
    MAX_ABS,
    RULES,
    SCALE,
    aggregate_digest,
    bulyan,
    clip,
    dequantize,
    fedavg,
    fltrust,
    krum,
    median,
    multikrum,
    quantize,
    robust,
    trimmed_mean,
)
from ailedger.federated.attacks import ATTACKS

ULP = 1.0 / SCALE


def _options(name: str, root: Any) -> dict[str, Any]:
    if name == "reputation":
        return {"reference": root}
    return {"root": root} if name == "fltrust" else {}


# --------------------------------------------------------------------------- fixed point


def test_quantize_rounds_to_nearest_grid_point() -> None:
    values = [0.5, 1 / 3, -1 / 3, 2.5 / SCALE, 3.5 / SCALE, -2.5 / SCALE]
    q = quantize(np.array(values))
    # Python's round on exact rationals is round-half-to-even, an independent reference
    expected = [round(Fraction(v) * SCALE) for v in values]
    assert q.tolist() == expected
    assert q.dtype == np.int64


def test_dequantize_inverts_quantize_on_the_grid() -> None:
    q = np.array([-(1 << 44), -1, 0, 1, 12345, 1 << 44], dtype=np.int64)
    assert np.array_equal(quantize(dequantize(q)), q)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, MAX_ABS * 2])
def test_quantize_rejects_nonfinite_and_huge(bad: float) -> None:
    with pytest.raises(AggregationError, match="where-label"):
        quantize(np.array([0.0, bad]), where="where-label")


def test_digest_follows_the_documented_encoding() -> None:
    fixed = np.array([[1, -2, 3], [1 << 40, -(1 << 40), 0]], dtype=np.int64)
    encoding = b"ailedger/fixed-point/v1\x00" + bytes([FRAC_BITS, 2]) + struct.pack("<QQ", 2, 3)
    encoding += b"".join(int(v).to_bytes(8, "little", signed=True) for v in fixed.ravel())
    assert aggregate_digest(fixed) == hashlib.sha256(encoding).digest()


def test_digest_ignores_byte_order_and_layout_but_not_shape() -> None:
    fixed = np.arange(6, dtype=np.int64).reshape(2, 3) - 3
    big_endian = fixed.astype(">i8")
    fortran = np.asfortranarray(fixed)
    assert aggregate_digest(big_endian) == aggregate_digest(fixed)
    assert aggregate_digest(fortran) == aggregate_digest(fixed)
    assert aggregate_digest(fixed.reshape(3, 2)) != aggregate_digest(fixed)
    assert aggregate_digest(fixed.ravel()) != aggregate_digest(fixed)


def test_exact_dot_matches_python_integers() -> None:
    rng = np.random.default_rng(7)
    bound = 1 << 45
    a = rng.integers(-bound, bound, size=70_001, dtype=np.int64)
    b = rng.integers(-bound, bound, size=70_001, dtype=np.int64)
    a[:3] = [bound - 1, -bound, -bound]
    b[:3] = [bound - 1, -bound, bound - 1]
    expected = sum(int(x) * int(y) for x, y in zip(a.tolist(), b.tolist(), strict=True))
    assert agg._dot_exact(a, b) == expected


def test_weighted_mean_is_exactly_rounded() -> None:
    rng = np.random.default_rng(3)
    rows = rng.integers(-(1 << 44), 1 << 44, size=(6, 40), dtype=np.int64)
    weights = [int(w) for w in rng.integers(0, 1 << 20, size=6)]
    weights[2] = 0
    got = agg._weighted_mean(rows, weights)
    total = sum(weights)
    for j in range(rows.shape[1]):
        exact = Fraction(sum(w * int(r) for w, r in zip(weights, rows[:, j], strict=True)), total)
        assert got[j] == math.floor(exact + Fraction(1, 2))


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("name", sorted(RULES))
def test_nan_is_rejected_naming_the_party(name: str) -> None:
    ups = [np.ones(4) * (i + 1) for i in range(7)]
    ups[2] = np.array([1.0, np.nan, 0.0, 0.0])
    with pytest.raises(AggregationError, match="party 2"):
        RULES[name](ups, **_options(name, np.ones(4)))


@pytest.mark.parametrize("name", sorted(RULES))
def test_inf_and_huge_values_are_rejected(name: str) -> None:
    ups = [np.ones(4) for _ in range(7)]
    ups[5] = np.array([1.0, -np.inf, 0.0, 0.0])
    with pytest.raises(AggregationError, match="party 5"):
        RULES[name](ups, **_options(name, np.ones(4)))
    ups[5] = np.array([1.0, 1e9, 0.0, 0.0])
    with pytest.raises(AggregationError, match="party 5"):
        RULES[name](ups, **_options(name, np.ones(4)))


@pytest.mark.parametrize("name", sorted(RULES))
def test_wrong_shape_is_rejected_naming_the_party(name: str) -> None:
    ups = [np.ones(4) for _ in range(7)]
    ups[3] = np.ones(5)
    with pytest.raises(AggregationError, match="party 3"):
        RULES[name](ups, **_options(name, np.ones(4)))


@pytest.mark.parametrize("name", sorted(RULES))
def test_huge_norm_is_rejected(name: str) -> None:
    ups = [np.ones(100) for _ in range(7)]
    ups[6] = np.full(100, 50.0)
    with pytest.raises(AggregationError, match=r"party 6.*norm"):
        RULES[name](ups, max_norm=100.0, **_options(name, np.ones(100)))


@pytest.mark.parametrize(
    "updates",
    [[], [np.float64(1.0)], [np.array([])], [np.array([1 + 2j])], [np.array([True])], 3.0],
)
def test_malformed_inputs_are_rejected(updates: Any) -> None:
    with pytest.raises(AggregationError):
        fedavg(updates)


def test_max_norm_must_be_in_range() -> None:
    with pytest.raises(AggregationError, match="max_norm"):
        fedavg([np.ones(2)], max_norm=0.0)
    with pytest.raises(AggregationError, match="max_norm"):
        fedavg([np.ones(2)], max_norm=MAX_ABS * 4)


@pytest.mark.parametrize(
    ("rule", "n", "f"), [(krum, 6, 2), (multikrum, 4, 1), (bulyan, 10, 2), (trimmed_mean, 4, 2)]
)
def test_too_few_parties_for_f(rule: Any, n: int, f: int) -> None:
    with pytest.raises(AggregationError, match="needs at least"):
        rule([np.ones(3) * i for i in range(n)], f=f)


def test_negative_f_is_rejected() -> None:
    with pytest.raises(AggregationError, match="non-negative"):
        krum([np.ones(3) * i for i in range(9)], f=-1)


# --------------------------------------------------------------------------- the rules


def test_rules_registry_names() -> None:
    assert set(RULES) == {
        "fedavg",
        "median",
        "trimmed_mean",
        "krum",
        "multikrum",
        "bulyan",
        "clip",
        "fltrust",
        "default",
        "reputation",
    }


def test_fedavg_is_the_unweighted_mean() -> None:
    rng = np.random.default_rng(1)
    ups = rng.normal(size=(5, 3, 4))
    res = fedavg(ups)
    assert res.aggregate.shape == (3, 4)
    assert np.allclose(res.aggregate, ups.mean(axis=0), atol=ULP)
    assert np.array_equal(res.aggregate, res.fixed / SCALE)
    assert res.digest == aggregate_digest(res.fixed)
    assert np.allclose(res.weights, 0.2)
    assert res.selected == (0, 1, 2, 3, 4)
    assert res.flagged == ()


def test_result_is_read_only() -> None:
    res = fedavg([np.ones(3), np.zeros(3)])
    with pytest.raises(ValueError, match="read-only"):
        res.fixed[0] = 1
    with pytest.raises(ValueError, match="read-only"):
        res.weights[0] = 1.0


def test_median_odd_and_even() -> None:
    odd = median([[1.0, -4.0], [5.0, 0.0], [3.0, 7.0]])
    assert odd.aggregate.tolist() == [3.0, 0.0]
    even = median([[1.0], [2.0], [3.0], [10.0]])
    assert even.aggregate.tolist() == [2.5]


def test_trimmed_mean_drops_extremes() -> None:
    res = trimmed_mean([[1.0], [2.0], [3.0], [4.0], [100.0]], f=1)
    assert res.aggregate.tolist() == [3.0]
    assert res.flagged == (0, 4)
    assert res.weights[4] == 0.0
    assert math.isclose(float(res.weights.sum()), 1.0)


def test_krum_and_multikrum_pick_the_center() -> None:
    ups = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [50.0, 50.0]]
    res = krum(ups, f=1)
    assert res.selected == (0,)
    assert res.aggregate.tolist() == [0.0, 0.0]
    assert res.flagged == (1, 2, 3, 4, 5)
    multi = multikrum(ups, f=1)
    assert multi.selected == (0, 1, 2, 3, 4)
    assert multi.flagged == (5,)
    assert multi.aggregate.tolist() == [0.0, 0.0]


def test_bulyan_ignores_an_outlier() -> None:
    rng = np.random.default_rng(5)
    truth = np.array([1.0, -2.0, 0.5])
    ups = [truth + 0.01 * rng.normal(size=3) for _ in range(6)] + [np.array([90.0, 90.0, 90.0])]
    res = bulyan(ups, f=1)
    assert 6 in res.flagged
    assert 6 not in res.selected
    assert np.allclose(res.aggregate, truth, atol=0.05)
    assert res.weights[6] == 0.0


def test_clip_scales_to_the_median_norm() -> None:
    ups = [
        np.array([1.0, 0, 0]),
        np.array([0, 2.0, 0]),
        np.array([0, 0, 3.0]),
        np.array([-10.0, 0, 0]),
    ]
    res = clip(ups)
    # lower median of the norms (1, 2, 3, 10) is 2
    clipped = [ups[0], ups[1], ups[2] * 2 / 3, ups[3] * 2 / 10]
    assert np.allclose(res.aggregate, np.mean(clipped, axis=0), atol=2 * ULP)
    assert res.flagged == (2, 3)
    explicit = clip(ups, tau=1.0)
    assert np.allclose(explicit.aggregate, np.array([-1.0 + 1.0, 1.0, 1.0]) / 4, atol=2 * ULP)


def test_fltrust_weights_by_clipped_cosine_and_normalises() -> None:
    root = np.array([1.0, 0.0])
    ups = [np.array([2.0, 0.0]), np.array([1.0, 1.0]), np.array([0.0, 5.0]), np.array([-3.0, 0.5])]
    res = fltrust(ups, root=root)
    ts = [1.0, 1 / math.sqrt(2), 0.0, 0.0]
    normed = [u / np.linalg.norm(u) for u in ups]
    expected = sum(t * g for t, g in zip(ts, normed, strict=True)) / sum(ts)
    assert np.allclose(res.aggregate, expected, atol=1e-6)
    assert res.flagged == (2, 3)
    assert res.selected == (0, 1)
    assert np.allclose(res.weights, np.array(ts) / sum(ts), atol=1e-6)


def test_fltrust_boosted_update_gets_root_norm() -> None:
    root = np.array([0.0, 0.5])
    res = fltrust([np.array([0.0, 400.0])], root=root)
    assert np.allclose(res.aggregate, root, atol=ULP)


def test_fltrust_all_untrusted_gives_zero_update() -> None:
    res = fltrust([np.array([-1.0, 0.0]), np.array([0.0, 1.0])], root=np.array([1.0, 0.0]))
    assert not res.fixed.any()
    assert res.flagged == (0, 1)
    assert res.selected == ()


@pytest.mark.parametrize(
    ("root", "match"),
    [
        (None, "root update"),
        (np.zeros(2), "zero"),
        (np.ones(3), "shape"),
        (np.full(2, 1e6), "norm"),
    ],
)
def test_fltrust_bad_root(root: Any, match: str) -> None:
    with pytest.raises(AggregationError, match=match):
        fltrust([np.ones(2)], root=root)


@pytest.mark.parametrize("name", ["fedavg", "median", "clip", "default"])
def test_single_party_aggregates_to_itself(name: str) -> None:
    update = np.array([[0.25, -1.5], [3.0, 1e-3]])
    res = RULES[name]([update])
    assert np.array_equal(res.fixed, quantize(update))
    assert res.selected == (0,)


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_ignores_input_order(name: str) -> None:
    rng = np.random.default_rng(11)
    ups = list(rng.normal(size=(11, 6)))
    ups[4] = ups[1].copy()  # a duplicate must not break the canonical order
    ups[7] = 40 * ups[7]
    root = rng.normal(size=6)
    base = RULES[name](ups, **_options(name, root))
    for seed in range(4):
        perm = np.random.default_rng(seed).permutation(len(ups))
        res = RULES[name]([ups[i] for i in perm], **_options(name, root))
        assert res.digest == base.digest
        assert np.array_equal(res.fixed, base.fixed)
        # weights move with the parties; duplicates 1 and 4 may swap credit
        moved = {int(perm[k]): float(res.weights[k]) for k in range(len(ups))}
        for i in set(range(len(ups))) - {1, 4}:
            assert moved[i] == base.weights[i]


# --------------------------------------------------------------------------- robustness

N, N_BAD, D = 20, 4, 60
SCENARIOS: list[tuple[str, dict[str, Any]]] = [
    ("sign_flip", {"scale": 4.0}),
    ("scaling", {"factor": 10.0}),
    ("gaussian", {"sigma": 5.0}),
    ("alie", {}),
    ("ipm", {"epsilon": 0.5}),
    ("fang_krum", {}),
    ("fang_trim", {}),
    ("free_rider", {}),
]


def _round(seed: int, attack: str, params: dict[str, Any]) -> tuple[np.ndarray, list[Any]]:
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=D)
    honest = truth + 0.5 * rng.normal(size=(N, D))
    own, benign = honest[:N_BAD], honest[N_BAD:]
    bad = ATTACKS[attack](own, benign, rng=rng, **params)
    return truth, [*bad, *benign]


@pytest.mark.parametrize(("attack", "params"), SCENARIOS)
def test_default_rule_stays_close_to_the_truth(attack: str, params: dict[str, Any]) -> None:
    for seed in range(3):
        truth, ups = _round(seed, attack, params)
        res = robust(ups)
        error = np.linalg.norm(res.aggregate - truth) / np.linalg.norm(truth)
        assert error < 0.35, (attack, seed, error)


@pytest.mark.parametrize(("attack", "params"), SCENARIOS[:3])
def test_fedavg_breaks_and_default_flags_the_attackers(attack: str, params: dict[str, Any]) -> None:
    truth, ups = _round(0, attack, params)
    avg = fedavg(ups)
    assert np.linalg.norm(avg.aggregate - truth) / np.linalg.norm(truth) > 0.5
    res = robust(ups)
    assert set(range(N_BAD)) <= set(res.flagged)
    if attack != "scaling":  # a clipped boosted honest update is harmless and may be kept
        assert all(res.weights[i] == 0.0 for i in range(N_BAD))


@pytest.mark.parametrize("seed", range(3))
def test_default_rule_resists_the_attack_that_breaks_krum(seed: int) -> None:
    # noisy honest updates, where Fang et al.'s attack wins Krum
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=D)
    honest = truth + rng.normal(size=(N, D))
    bad = ATTACKS["fang_krum"](honest[:N_BAD], honest[N_BAD:], rng=rng)
    ups = [*bad, *honest[N_BAD:]]
    k = krum(ups, f=N_BAD)
    assert k.selected[0] < N_BAD  # the attack does what it was built for
    res = robust(ups)
    oracle = np.linalg.norm(honest[N_BAD:].mean(axis=0) - truth)
    error = np.linalg.norm(res.aggregate - truth)
    assert error < 0.5 * np.linalg.norm(k.aggregate - truth)
    assert error < 2 * oracle


def test_default_rule_known_answer() -> None:
    # centre (1, 1), median distance 1: (3, 3) is clipped to (1, 1) + (2, 2) / sqrt(8) and,
    # being 2.83 > 1.5 median distances out, flagged but kept
    ups = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 3.0], [1.0, 1.0]]
    res = robust(ups)
    expected = (4 + math.sqrt(0.5)) / 5
    assert np.allclose(res.aggregate, [expected, expected], atol=4 * ULP)
    assert res.selected == (0, 1, 2, 3, 4)
    assert res.flagged == (3,)
    assert np.allclose(res.weights, 0.2)
    # centre (2, 2), median distance 2: (10, 10) is beyond 3 median distances and dropped;
    # the zero update has inner product 0 with the robust mean and is dropped too
    ups = [[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0], [10.0, 10.0]]
    res = robust(ups)
    assert np.allclose(res.aggregate, [4 / 3, 4 / 3], atol=ULP)
    assert res.selected == (1, 2, 3)
    assert res.flagged == (0, 4)
    assert res.weights.tolist() == [0.0, 1 / 3, 1 / 3, 1 / 3, 0.0]


@pytest.mark.parametrize("attack", ["ipm", "fang_krum"])
def test_default_rule_drops_anti_aligned_updates_that_win_krum(attack: str) -> None:
    # noisy honest updates: the attackers' identical vectors sit nearer the centre than any
    # honest update, so Multi-Krum keeps all of them; their inner product with the robust
    # mean is negative, so the default rule drops them
    rng = np.random.default_rng(4)
    truth = rng.normal(size=D)
    honest = truth + 2.0 * rng.normal(size=(N, D))
    bad = ATTACKS[attack](honest[:N_BAD], honest[N_BAD:], rng=rng)
    ups = [*bad, *honest[N_BAD:]]
    assert set(range(N_BAD)) <= set(multikrum(ups, f=N_BAD).selected)
    res = robust(ups)
    assert set(res.flagged) >= set(range(N_BAD))
    assert all(res.weights[i] == 0.0 for i in range(N_BAD))
    assert set(res.selected) == set(range(N_BAD, N))
    honest_mean = honest[N_BAD:].mean(axis=0)
    error = np.linalg.norm(res.aggregate - honest_mean)
    assert error < 0.5 * np.linalg.norm(fedavg(ups).aggregate - honest_mean)
    assert error < 0.2 * np.linalg.norm(honest_mean)


def test_default_rule_needs_an_honest_majority_for_f() -> None:
    ups = [np.ones(3) * i for i in range(4)]
    assert robust(ups, f=1).selected
    with pytest.raises(AggregationError, match="needs at least"):
        robust(ups, f=2)


def test_ragged_update_is_rejected_naming_the_party() -> None:
    with pytest.raises(AggregationError, match="party 1"):
        fedavg([[1.0, 2.0], [[1.0], [2.0, 3.0]]])


def test_digest_rejects_non_int64_arrays() -> None:
    with pytest.raises(AggregationError):
        aggregate_digest(np.array([1.5]))
    with pytest.raises(AggregationError):
        aggregate_digest(np.array([2**64 - 1], dtype=np.uint64))
