"""Unit tests of ailedger.federated.contribution: exact Shapley values and GTG-Shapley."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ailedger.errors import InputError
from ailedger.federated.aggregate import fedavg
from ailedger.federated.contribution import (
    MAX_EXACT_PARTIES,
    exact_shapley,
    gtg_shapley,
    round_contributions,
)

KAT = Path(__file__).resolve().parents[2] / "kat" / "shapley_games.json"


def _game(spec: dict[str, Any]) -> Callable[[frozenset[int]], float]:
    kind = spec["kind"]
    if kind == "table":
        table = {frozenset(w["coalition"]): float(w["value"]) for w in spec["worth"]}
        return lambda s: table.get(s, 0.0)
    if kind == "weighted_voting":
        weights, quota = spec["weights"], spec["quota"]
        return lambda s: 1.0 if sum(weights[i] for i in s) >= quota else 0.0
    if kind == "owner_workers":
        owner, p = spec["owner"], spec["p"]
        return lambda s: float(p * (len(s) - 1)) if owner in s else 0.0
    raise AssertionError(kind)


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):  # average ranks of ties
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def _permutation_shapley(n: int, v: Callable[[frozenset[int]], float]) -> list[Fraction]:
    """Shapley's definition over all n! orders, in exact rationals (reference)."""
    totals = [Fraction(0)] * n
    orders = list(itertools.permutations(range(n)))
    for order in orders:
        before: set[int] = set()
        for i in order:
            gain = Fraction(v(frozenset(before | {i}))) - Fraction(v(frozenset(before)))
            totals[i] += gain
            before.add(i)
    return [t / len(orders) for t in totals]


# --------------------------------------------------------------------------- exact


def test_known_answer_games() -> None:
    data = json.loads(KAT.read_text())
    assert len(data["games"]) >= 3
    for spec in data["games"]:
        assert spec["source"]
        est = exact_shapley(spec["players"], _game(spec))
        expected = [float(Fraction(x)) for x in spec["shapley"]]
        assert est.values == pytest.approx(expected, abs=1e-12), spec["name"]
        assert est.evaluations == 2 ** spec["players"]


def test_exact_matches_the_permutation_definition_and_axioms() -> None:
    rng = np.random.default_rng(0)
    n = 5
    table = {
        frozenset(s): float(rng.integers(0, 100))
        for k in range(n + 1)
        for s in itertools.combinations(range(n), k)
    }
    # player 4 is a null player; players 0 and 1 are symmetric
    for s in list(table):
        if 4 in s:
            table[s] = table[s - {4}]
    for s in list(table):
        if 0 in s and 1 not in s:
            table[s] = table[(s - {0}) | {1}]
    values = exact_shapley(n, table.__getitem__).values
    reference = _permutation_shapley(n, table.__getitem__)
    assert values == pytest.approx([float(r) for r in reference], rel=1e-12)
    assert math.isclose(values.sum(), table[frozenset(range(n))] - table[frozenset()])
    assert values[4] == pytest.approx(0.0, abs=1e-12)
    assert values[0] == pytest.approx(values[1], rel=1e-12)


def test_exact_rejects_bad_input() -> None:
    with pytest.raises(InputError):
        exact_shapley(0, lambda s: 0.0)
    with pytest.raises(InputError):
        exact_shapley(MAX_EXACT_PARTIES + 1, lambda s: 0.0)
    with pytest.raises(InputError, match="utility"):
        exact_shapley(2, lambda s: float("nan") if len(s) == 2 else 0.0)


# --------------------------------------------------------------------------- GTG-Shapley


def _fl_round(seed: int, n: int = 8) -> tuple[Callable[[frozenset[int]], float], np.ndarray]:
    """Parties of decreasing quality, a free rider (zeros) and a sign flipper.

    The utility is an accuracy-like score of the FedAvg model of a coalition; the empty
    coalition keeps the previous global model (the zero update).
    """
    rng = np.random.default_rng(seed)
    d = 20
    truth = rng.normal(size=d)
    noise = np.linspace(0.1, 0.6, n - 2)
    updates = [truth + s * rng.normal(size=d) for s in noise]
    updates += [np.zeros(d), -truth]
    scale = float(truth @ truth)

    def utility(subset: frozenset[int]) -> float:
        model = fedavg([updates[i] for i in sorted(subset)]).aggregate if subset else 0 * truth
        return math.exp(-float((model - truth) @ (model - truth)) / scale)

    return utility, np.array(updates)


@pytest.mark.parametrize("seed", range(5))
def test_gtg_agrees_with_exact_on_a_synthetic_game(seed: int) -> None:
    # concave in the total weight, plus a synergy between parties 2 and 5 and a free rider (6)
    weights = np.random.default_rng(seed).permutation([0.5, 0.4, 0.3, 0.25, 0.2, 0.1, 0.0, -0.2])

    def utility(subset: frozenset[int]) -> float:
        synergy = 0.15 if {2, 5} <= subset else 0.0
        return math.tanh(sum(float(weights[i]) for i in subset)) + synergy

    exact = exact_shapley(8, utility).values
    est = gtg_shapley(8, utility, seed=seed)
    assert est.converged
    assert est.permutations >= 30
    assert _spearman(est.values, exact) >= 0.9
    assert int(np.argmin(est.values)) == int(np.argmin(weights))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gtg_agrees_with_exact_and_ranks_bad_parties_last(seed: int) -> None:
    utility, _ = _fl_round(seed)
    exact = exact_shapley(8, utility).values
    # the benign parties' values lie close together, so ask for a tighter estimate
    est = gtg_shapley(8, utility, seed=seed, tol=0.01)
    assert _spearman(est.values, exact) >= 0.9
    order = np.argsort(est.values)
    assert order[0] == 7  # the sign flipper
    assert set(order[:2]) == {6, 7}  # and the free rider
    assert np.abs(est.values - exact).max() < 0.25 * np.abs(exact).max()


def test_gtg_is_deterministic_given_the_seed() -> None:
    utility, _ = _fl_round(3)
    a = gtg_shapley(8, utility, seed=5)
    b = gtg_shapley(8, utility, seed=5)
    assert np.array_equal(a.values, b.values)
    assert a.permutations == b.permutations


def test_between_round_truncation_skips_a_flat_round() -> None:
    calls: list[frozenset[int]] = []

    def flat(subset: frozenset[int]) -> float:
        calls.append(subset)
        return 0.5 + 1e-4 * len(subset)

    est = gtg_shapley(6, flat, eps_between=1e-3)
    assert est.truncated
    assert not est.values.any()
    assert set(calls) == {frozenset(), frozenset(range(6))}


def test_within_round_truncation_and_guided_sampling() -> None:
    # any one party reaches the round's utility: after the first position nothing is evaluated,
    # and since every party leads equally often each gets exactly 1 / n, the Shapley value
    n = 6
    evaluated: set[frozenset[int]] = set()

    def saturating(subset: frozenset[int]) -> float:
        evaluated.add(subset)
        return 1.0 if subset else 0.0

    est = gtg_shapley(n, saturating, seed=1)
    assert est.converged
    assert est.permutations % n == 0
    assert est.values == pytest.approx([1.0 / n] * n, abs=1e-12)
    assert evaluated <= {frozenset(), frozenset(range(n))} | {frozenset({i}) for i in range(n)}
    assert exact_shapley(n, saturating).values == pytest.approx(est.values, abs=1e-12)


def test_max_permutations_caps_the_sampling() -> None:
    utility, _ = _fl_round(0)
    est = gtg_shapley(8, utility, seed=0, tol=1e-12, max_permutations=40)
    assert est.permutations == 40
    assert not est.converged


@pytest.mark.parametrize(
    "kwargs", [{"seed": -1}, {"tol": 0.0}, {"eps_within": -1.0}, {"max_permutations": 0}]
)
def test_gtg_rejects_bad_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        gtg_shapley(3, lambda s: float(len(s)), **kwargs)


# --------------------------------------------------------------------------- rounds


def test_round_contributions_sum_per_party() -> None:
    utilities = [_fl_round(seed, n=5)[0] for seed in range(3)]
    exact = round_contributions(5, utilities, method="exact")
    per_round = [exact_shapley(5, u).values for u in utilities]
    assert np.allclose(exact.cumulative, np.sum(per_round, axis=0))
    assert len(exact.rounds) == 3

    gtg = round_contributions(5, utilities, seed=4)
    assert np.allclose(gtg.cumulative, np.sum([r.values for r in gtg.rounds], axis=0))
    assert int(np.argmin(gtg.cumulative)) == 4  # the sign flipper, over all rounds
    # a round's estimate does not depend on the rounds before it
    shorter = round_contributions(5, utilities[:2], seed=4)
    assert np.array_equal(shorter.rounds[1].values, gtg.rounds[1].values)


def test_round_contributions_rejects_unknown_method() -> None:
    with pytest.raises(InputError, match="method"):
        round_contributions(3, [lambda s: 0.0], method="banzhaf")  # type: ignore[arg-type]
