"""Unit tests of ailedger.federated.attacks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ailedger.errors import InputError
from ailedger.federated.aggregate import krum, trimmed_mean
from ailedger.federated.attacks import (
    ATTACKS,
    alie,
    alie_z,
    fang_krum,
    fang_trim,
    free_rider,
    gaussian_noise,
    ipm,
    label_flip,
    reference_aware,
    scaling,
    sign_flip,
    sleeper,
    sleeper_wake,
)


def _honest(seed: int = 0, n: int = 20, d: int = 30, noise: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=d)
    return truth + noise * rng.normal(size=(n, d))


def test_registry_uses_one_calling_convention() -> None:
    honest = _honest()
    own, benign = honest[:4], honest[4:]
    assert set(ATTACKS) == {
        "sign_flip",
        "scaling",
        "gaussian",
        "alie",
        "ipm",
        "fang_krum",
        "fang_trim",
        "free_rider",
        "reference_aware",
        "sleeper",
    }
    for name, attack in ATTACKS.items():
        extra: dict[str, Any] = (
            {"reference": honest.mean(axis=0)} if name == "reference_aware" else {}
        )
        if name == "sleeper":
            extra = {"round_no": 7, "rounds": 15}
        out = attack(own, benign, rng=np.random.default_rng(1), **extra)
        assert out.shape == own.shape, name
        assert np.all(np.isfinite(out)), name


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attacks_are_reproducible_from_the_seed(name: str) -> None:
    honest = _honest()
    extra: dict[str, Any] = {"reference": honest[0]} if name == "reference_aware" else {}
    if name == "sleeper":
        extra = {"round_no": 3, "wake": 2, "then": "fang_trim"}
    a = ATTACKS[name](honest[:4], honest[4:], rng=np.random.default_rng(9), **extra)
    b = ATTACKS[name](honest[:4], honest[4:], rng=np.random.default_rng(9), **extra)
    assert np.array_equal(a, b)


def test_shapes_are_checked() -> None:
    with pytest.raises(InputError, match="2-D"):
        sign_flip(np.ones(3), np.ones((2, 3)))
    with pytest.raises(InputError, match="d="):
        ipm(np.ones((1, 3)), np.ones((2, 4)))


def test_sign_flip_and_scaling() -> None:
    own = np.array([[1.0, -2.0], [0.5, 0.0]])
    assert np.array_equal(sign_flip(own, own), -own)
    assert np.array_equal(sign_flip(own, own, scale=4.0), -4.0 * own)
    assert np.array_equal(scaling(own, own, factor=7.0), 7.0 * own)


def test_gaussian_noise_has_the_requested_spread() -> None:
    own = np.zeros((3, 20_000))
    out = gaussian_noise(own, own, rng=np.random.default_rng(0), sigma=2.0)
    assert abs(float(out.std()) - 2.0) < 0.05
    assert abs(float(out.mean())) < 0.05
    other = gaussian_noise(own, own, rng=np.random.default_rng(1), sigma=2.0)
    assert not np.array_equal(out, other)


def test_alie_z_matches_the_normal_table() -> None:
    # n = 20, m = 4: s = 11 - 4 = 7, z = Phi^-1(13/20); Phi(0.385) = 0.6499 in standard tables
    assert alie_z(20, 4) == pytest.approx(0.3853, abs=1e-3)
    # n = 50, m = 12: s = 14, z = Phi^-1(36/50 = 0.72); Phi(0.58) = 0.7190, Phi(0.59) = 0.7224
    assert 0.58 < alie_z(50, 12) < 0.59
    with pytest.raises(InputError):
        alie_z(10, 0)


def test_alie_hides_inside_the_benign_spread() -> None:
    honest = _honest(n=40)
    own, benign = honest[:8], honest[8:]
    out = alie(own, benign)
    assert np.all(out == out[0])
    mu, sd = benign.mean(axis=0), benign.std(axis=0)
    assert np.all(out[0] < mu)
    assert np.all(out[0] > mu - sd)
    assert np.all((out[0] > benign.min(axis=0)) & (out[0] < benign.max(axis=0)))


def test_ipm_reverses_the_inner_product() -> None:
    honest = _honest()
    out = ipm(honest[:4], honest[4:], epsilon=0.3)
    mean = honest[4:].mean(axis=0)
    assert np.allclose(out @ mean, -0.3 * mean @ mean)


def test_fang_krum_wins_krum_and_points_backwards() -> None:
    honest = _honest(seed=2)
    own, benign = honest[:4], honest[4:]
    out = fang_krum(own, benign)
    res = krum([*out, *benign], f=4)
    assert res.selected[0] < 4
    assert float(out[0] @ honest.mean(axis=0)) < 0


def test_fang_krum_spread_keeps_copies_near_the_first() -> None:
    honest = _honest(seed=2)
    out = fang_krum(honest[:4], honest[4:], rng=np.random.default_rng(0), spread=1e-3)
    assert not np.array_equal(out[1], out[0])
    assert np.all(np.linalg.norm(out - out[0], axis=1) <= 1e-3)


def test_fang_krum_needs_an_honest_majority() -> None:
    honest = _honest(n=6)
    with pytest.raises(InputError):
        fang_krum(honest[:3], honest[3:])


def test_fang_trim_lands_beyond_the_honest_range() -> None:
    honest = _honest(seed=4)
    out = fang_trim(honest[:4], honest[4:], rng=np.random.default_rng(0))
    s = np.sign(honest.mean(axis=0))
    w_max, w_min = honest.max(axis=0), honest.min(axis=0)
    up = s < 0
    assert np.all(out[:, up] >= w_max[up])
    assert np.all(out[:, ~up] <= w_min[~up])
    assert np.all(out[:, up] <= 2 * np.abs(w_max[up]) + 1e-12)


def test_fang_trim_drags_the_trimmed_mean_backwards() -> None:
    honest = _honest(seed=6, noise=2.0)
    own, benign = honest[:4], honest[4:]
    direction = honest.mean(axis=0)
    clean = trimmed_mean(honest, f=4).aggregate
    bad = fang_trim(own, benign, rng=np.random.default_rng(0))
    attacked = trimmed_mean([*bad, *benign], f=4).aggregate
    assert float(attacked @ direction) < float(clean @ direction)


def test_free_rider_sends_nothing_or_a_copy() -> None:
    honest = _honest()
    assert not free_rider(honest[:3], honest[3:]).any()
    previous = np.arange(30.0)
    out = free_rider(honest[:3], honest[3:], previous=previous)
    assert out.shape == (3, 30)
    assert all(np.array_equal(row, previous) for row in out)
    with pytest.raises(InputError):
        free_rider(honest[:3], honest[3:], previous=np.ones(4))


def test_label_flip() -> None:
    y = np.array([0, 1, 2, 9, 5], dtype=np.int32)
    flipped = label_flip(y, 10)
    assert flipped.tolist() == [9, 8, 7, 0, 4]
    assert np.array_equal(label_flip(flipped, 10), y)
    targeted = label_flip(y, 10, mapping={1: 7})
    assert targeted.tolist() == [0, 7, 2, 9, 5]


@pytest.mark.parametrize(
    ("labels", "kwargs"),
    [
        (np.array([0.5]), {}),
        (np.array([10]), {}),
        (np.array([-1]), {}),
        (np.array([1]), {"mapping": {1: 12}}),
    ],
)
def test_label_flip_rejects_bad_input(labels: np.ndarray, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        label_flip(labels, 10, **kwargs)


def test_reference_aware_keeps_its_cosine_and_pushes_against_the_honest_mean() -> None:
    honest = _honest(seed=4, noise=0.5)
    reference = honest.mean(axis=0) + np.random.default_rng(7).normal(size=30)
    out = reference_aware(honest[:3], honest[3:], reference=reference, cosine=0.05, boost=2.0)
    assert out.shape == (3, 30)
    assert np.array_equal(out[0], out[2])
    x = out[0]
    cos = float(x @ reference) / (np.linalg.norm(x) * np.linalg.norm(reference))
    assert cos == pytest.approx(0.05, abs=1e-12)
    assert float(x @ honest[3:].mean(axis=0)) < 0
    median_norm = float(np.median(np.linalg.norm(honest[3:], axis=1)))
    assert np.linalg.norm(x) == pytest.approx(2.0 * median_norm)
    with pytest.raises(InputError, match="needs the reference"):
        reference_aware(honest[:3], honest[3:])
    with pytest.raises(InputError, match="zero"):
        reference_aware(honest[:3], honest[3:], reference=np.zeros(30))


def test_sleeper_behaves_until_it_wakes_then_sign_flips() -> None:
    honest = _honest()
    own, benign = honest[:3], honest[3:]
    for round_no in range(4):
        out = sleeper(own, benign, round_no=round_no, wake=4)
        assert np.array_equal(out, own)
        assert out is not own  # a copy: the caller may overwrite its rows
    for round_no in (4, 9):
        assert np.array_equal(sleeper(own, benign, round_no=round_no, wake=4), -own)


def test_sleeper_wakes_a_third_of_the_way_in_by_default() -> None:
    assert [sleeper_wake(r) for r in (1, 2, 3, 15, 30)] == [1, 1, 1, 5, 10]
    own, benign = _honest()[:2], _honest()[2:]
    assert np.array_equal(sleeper(own, benign, round_no=4, rounds=15), own)
    assert np.array_equal(sleeper(own, benign, round_no=5, rounds=15), -own)


def test_sleeper_wakes_into_any_other_attack_with_its_parameters() -> None:
    honest = _honest()
    own, benign = honest[:2], honest[2:]
    out = sleeper(own, benign, round_no=1, wake=0, then="ipm", epsilon=2.0)
    assert np.allclose(out, np.tile(-2.0 * benign.mean(axis=0), (2, 1)))
    ref = honest.mean(axis=0)
    aware = sleeper(own, benign, round_no=5, rounds=6, then="reference_aware", reference=ref)
    cos = aware @ ref / (np.linalg.norm(aware, axis=1) * np.linalg.norm(ref))
    assert np.allclose(cos, 0.05)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"wake": 2}, "current round"),
        ({"round_no": -1, "wake": 2}, "current round"),
        ({"round_no": True, "wake": 2}, "current round"),
        ({"round_no": 1}, "wake="),
        ({"round_no": 1, "rounds": 0}, "rounds >= 1"),
        ({"round_no": 1, "wake": -1}, "wake >= 0"),
        ({"round_no": 1, "wake": 1, "then": "sleeper"}, "unknown attack"),
        ({"round_no": 1, "wake": 1, "then": "nope"}, "unknown attack"),
    ],
)
def test_sleeper_rejects_bad_input(kwargs: dict[str, Any], message: str) -> None:
    honest = _honest()
    with pytest.raises(InputError, match=message):
        sleeper(honest[:2], honest[2:], **kwargs)
