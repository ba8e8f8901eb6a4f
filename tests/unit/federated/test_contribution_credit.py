"""Contribution scores combined with the rule's verdict (issue 13): credit, ranking, and the
rule-weighted scoring in a simulated cross-silo federation."""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import numpy as np
import pytest

from ailedger.errors import InputError
from ailedger.federated.contribution import credit, rank_contributions
from ailedger.federated.data import load_digits
from ailedger.federated.simulate import SimulationConfig, SimulationResult, simulate

DIGITS = load_digits(seed=0)


def test_untrusted_parties_get_no_positive_credit() -> None:
    values = [0.3, -0.2, 0.1, -0.4, 0.0]
    trusted = [True, True, False, False, False]
    assert credit(values, trusted).tolist() == [0.3, -0.2, 0.0, -0.4, 0.0]
    # everyone trusted: the values themselves
    assert credit(values, [True] * 5).tolist() == values


def test_ranking_puts_untrusted_parties_below_trusted_ones() -> None:
    values = [0.3, -0.2, 0.1, -0.4, 0.0]
    # an honest party with a negative value (1) still ranks above every untrusted party
    assert rank_contributions(values, [True, True, False, False, False]) == (3, 2, 4, 1, 0)
    # ties by index
    assert rank_contributions([0.0, 0.0, 0.0], [True, False, True]) == (1, 0, 2)
    # without a verdict it is the order of the values
    assert rank_contributions(values, [True] * 5) == (3, 1, 4, 2, 0)


@pytest.mark.parametrize(
    ("values", "trusted", "message"),
    [
        ([0.1, 0.2], [True], "one bool per party"),
        ([0.1, 0.2], [1, 0], "one bool per party"),
        ([[0.1, 0.2]], [True], "1-D"),
        ([0.1, float("nan")], [True, True], "finite"),
    ],
)
def test_bad_input_is_rejected(values: object, trusted: list[object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        rank_contributions(values, trusted)  # type: ignore[arg-type]


CROSS_SILO = SimulationConfig(
    clients=8,
    malicious=1,
    free_riders=1,
    attack="sign_flip",
    partition="dirichlet:0.5",
    rounds=6,
    seed=1,
    contribution="gtg",
)


@cache
def _cross_silo() -> SimulationResult:
    return simulate(CROSS_SILO, dataset=DIGITS)


def test_rule_weighted_scores_give_excluded_parties_nothing() -> None:
    result = _cross_silo()
    assert result.rule_used == "reputation"
    for r in result.rounds:
        assert r.contributions is not None
        for client in r.flagged:
            if client not in r.selected:  # excluded by the rule this round
                assert r.contributions[client] == 0.0
    assert result.contributions is not None
    assert result.contributions[1] == 0.0  # the free rider's zero update is worth nothing
    assert result.contribution_ranking is not None
    assert set(result.contribution_ranking[:2]) == {0, 1}
    doc = result.to_json()
    assert doc["contribution_ranking"] == list(result.contribution_ranking)


def test_fedavg_scoring_keeps_the_old_game_and_the_same_model() -> None:
    rule = _cross_silo()
    old = simulate(replace(CROSS_SILO, contribution_scoring="fedavg"), dataset=DIGITS)
    assert old.model_digest == rule.model_digest  # scoring never changes training
    assert old.contributions is not None and rule.contributions is not None
    assert not np.allclose(old.contributions, rule.contributions)
    # FedAvg's own weights are 1/n, so for FedAvg both scorings are the same game
    fa = replace(CROSS_SILO, rule="fedavg", rounds=2)
    a = simulate(fa, dataset=DIGITS).contributions
    b = simulate(replace(fa, contribution_scoring="fedavg"), dataset=DIGITS).contributions
    assert a is not None and b is not None
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_unknown_scoring_is_rejected() -> None:
    with pytest.raises(InputError, match="contribution_scoring"):
        replace(CROSS_SILO, contribution_scoring="shapley")  # type: ignore[arg-type]
