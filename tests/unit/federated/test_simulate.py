"""Unit tests of ailedger.federated.simulate on scikit-learn's digits (and MNIST if present)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import spearmanr

from ailedger.errors import InputError
from ailedger.federated.data import load_digits
from ailedger.federated.simulate import RoundResult, SimulationConfig, simulate

MNIST_DIR = Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets" / "mnist"
DIGITS = load_digits(seed=0)
BASE = SimulationConfig(clients=10, rounds=8, lr=0.5, seed=0)


def _run(**changes: Any) -> float:
    return simulate(replace(BASE, **changes), dataset=DIGITS).final_accuracy


def test_default_rule_resists_attacks_that_break_fedavg() -> None:
    clean = _run(rule="fedavg")
    assert clean > 0.85
    strong_flip = {"malicious": 2, "attack": "sign_flip", "attack_params": {"scale": 4.0}}
    assert _run(rule="fedavg", **strong_flip) < clean - 0.1
    assert _run(rule="default", **strong_flip) > clean - 0.03
    assert _run(rule="fedavg", malicious=2, attack="scaling") < clean - 0.3
    assert _run(rule="default", malicious=2, attack="scaling") > clean - 0.03
    assert _run(rule="default") > clean - 0.03


def test_fltrust_uses_the_root_set_and_flags_attackers() -> None:
    result = simulate(
        replace(BASE, rule="fltrust", malicious=2, attack="sign_flip", rounds=3), dataset=DIGITS
    )
    assert all(set(r.flagged) == {0, 1} for r in result.rounds)
    assert result.final_accuracy > 0.7


def test_label_flip_poisons_the_attackers_data() -> None:
    flipped = simulate(
        replace(BASE, rule="fedavg", malicious=4, attack="label_flip", rounds=4), dataset=DIGITS
    )
    clean = simulate(replace(BASE, rule="fedavg", rounds=4), dataset=DIGITS)
    assert flipped.final_accuracy < clean.final_accuracy - 0.05
    assert flipped.malicious == (0, 1, 2, 3)


def test_same_seed_same_digests_and_other_seed_differs() -> None:
    config = replace(BASE, rounds=3, malicious=2, attack="gaussian", model="mlp", hidden=16)
    first, second = (simulate(config, dataset=DIGITS) for _ in range(2))
    assert first.model_digest == second.model_digest
    assert [r.digest for r in first.rounds] == [r.digest for r in second.rounds]
    np.testing.assert_array_equal(first.params, second.params)
    other = simulate(replace(config, seed=1), dataset=DIGITS)
    assert other.model_digest != first.model_digest


def test_on_round_sees_every_round_and_flagged_parties_are_excluded() -> None:
    seen: list[RoundResult] = []
    result = simulate(
        replace(BASE, malicious=2, attack="sign_flip", exclude_after=4),
        dataset=DIGITS,
        on_round=seen.append,
    )
    assert [r.round for r in seen] == list(range(BASE.rounds))
    assert seen[-1] is result.rounds[-1]
    assert result.excluded == (0, 1)
    assert seen[0].participants == tuple(range(10))
    assert seen[-1].participants == tuple(range(2, 10))
    assert result.to_json()["final_accuracy"] == result.final_accuracy


def test_honest_parties_are_not_excluded_without_attack() -> None:
    # the robust (old default) rule flags some honest parties; the fraction guard keeps them
    result = simulate(replace(BASE, rule="default", rounds=10, exclude_after=4), dataset=DIGITS)
    assert result.excluded == ()
    assert any(r.flagged for r in result.rounds)
    # rule "auto" is the reputation rule for 10 clients: nobody honest is excluded either
    auto = simulate(replace(BASE, rounds=10, exclude_after=4), dataset=DIGITS)
    assert auto.rule_used == "reputation"
    assert auto.excluded == ()


def test_attackers_and_free_riders_rank_lowest() -> None:
    config = replace(
        BASE,
        clients=8,
        rounds=4,
        rule="fedavg",
        malicious=1,
        free_riders=1,
        attack="sign_flip",
        contribution="exact",
    )
    exact = simulate(config, dataset=DIGITS)
    gtg = simulate(replace(config, contribution="gtg"), dataset=DIGITS)
    assert exact.model_digest == gtg.model_digest
    assert exact.contributions is not None
    assert gtg.contributions is not None
    for values in (exact.contributions, gtg.contributions):
        assert set(np.argsort(values)[:2].tolist()) == {0, 1}
        assert values[0] < 0
        assert values[1] == 0.0
    assert spearmanr(exact.contributions, gtg.contributions).statistic >= 0.9
    rounds = exact.rounds
    assert rounds[0].contributions is not None
    np.testing.assert_allclose(
        sum(np.asarray(r.contributions) for r in rounds), exact.contributions
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"attack": "poison"}, "unknown attack"),
        ({"rule": "mean"}, "unknown rule"),
        ({"malicious": 10}, "must be fewer than the clients"),
        ({"malicious": 5, "free_riders": 5}, "must be fewer than the clients"),
        ({"partition": "dirichlet:-2"}, "positive number"),
        ({"clients": 0}, "clients must be an int"),
        ({"rounds": 0}, "rounds must be an int"),
        ({"lr": 0.0}, "lr must be a positive number"),
        ({"model": "cnn"}, "unknown model"),
        ({"data": "cifar"}, "unknown data set"),
        ({"contribution": "gtg", "clients": 11}, "limited to 10 clients"),
        ({"exclude_after": 0}, "exclude_after"),
    ],
)
def test_bad_config(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        replace(BASE, **changes)


def test_too_many_clients_for_the_data() -> None:
    with pytest.raises(InputError, match="too few for 600 clients"):
        simulate(replace(BASE, clients=600), dataset=DIGITS)


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="no MNIST copy beside the repository")
def test_mnist_round_with_an_mlp() -> None:
    config = SimulationConfig(
        data="mnist", data_dir=MNIST_DIR, clients=5, rounds=1, model="mlp", partition="iid"
    )
    result = simulate(config)
    assert result.model_spec["num_params"] == 50890
    assert result.final_accuracy > 0.8
