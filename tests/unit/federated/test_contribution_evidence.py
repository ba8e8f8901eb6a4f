"""The evidence ranking of issue 13: ALIE's shape, the ranking that uses it with the rule's
reputation, its use in a simulated cross-silo federation, and ``--contribution-max-clients``."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace
from functools import cache

import numpy as np
import pytest

from ailedger.errors import InputError
from ailedger.federated.attacks import alie
from ailedger.federated.contribution import ALIE_SHAPE, alie_shape, rank_evidence
from ailedger.federated.data import load_digits
from ailedger.federated.simulate import SimulationConfig, SimulationResult, simulate

DIGITS = load_digits(seed=0)


def test_alie_shape_known_answer() -> None:
    # by hand from the definition: for row 0 the others are (0, 1) and (-1, -1), mean
    # (-0.5, 0), population std (0.5, 1); deviation (1.5, 0); cos = 0.75 / (1.5 * sqrt(1.25))
    u = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    shape = alie_shape(u)
    assert shape[0] == pytest.approx(1 / math.sqrt(5), abs=1e-12)
    # row 2: others (1, 0), (0, 1): mean (0.5, 0.5), std (0.5, 0.5), deviation (-1.5, -1.5)
    assert shape[2] == pytest.approx(1.0, abs=1e-12)
    # an update equal to the others' mean has no deviation: 0
    assert alie_shape([[1.0, 2.0], [0.0, 0.0], [2.0, 4.0]])[0] == 0.0


def test_alie_updates_have_the_shape_and_honest_ones_do_not() -> None:
    rng = np.random.default_rng(7)
    # heterogeneous honest updates: a shared signal plus a party-specific direction
    honest = 0.2 + rng.normal(size=(9, 300)) * rng.uniform(0.5, 2.0, size=300)
    crafted = alie(honest[:2], honest)  # Baruch et al.'s attack, from the attacks module
    shape = alie_shape(np.vstack([crafted, honest]))
    assert np.all(shape[:2] > 0.95)
    assert np.all(shape[2:] < ALIE_SHAPE)


def test_rank_evidence_orders_groups_then_reputation_then_credit() -> None:
    values = [0.5, -0.1, 0.2, 0.0, -0.3, 0.1]
    trusted = [True, True, False, True, True, True]
    shape = [0.99, 0.1, 0.1, 0.2, 0.1, 0.1]
    reputation = [7.0, 3.0, -2.0, 0.0, 3.0, 5.0]
    # flagged: 0 (ALIE shape) and 2 (untrusted), by reputation 2 then 0; then 3 (rep 0),
    # 4 and 1 (rep 3, credit -0.3 below -0.1), 5
    assert rank_evidence(values, trusted, shape, reputation) == (2, 0, 3, 4, 1, 5)
    # without reputations: by credit, a flagged party's positive value credited as 0
    assert rank_evidence(values, trusted, shape) == (0, 2, 4, 1, 3, 5)


@pytest.mark.parametrize(
    ("shape", "reputation", "message"),
    [
        ([0.1, 0.1], None, "shape must hold one finite value per party"),
        ([0.1, 0.1, float("nan")], None, "shape"),
        ([0.1, 0.1, 0.1], [1.0], "reputation"),
    ],
)
def test_rank_evidence_rejects_bad_input(
    shape: list[float], reputation: list[float] | None, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        rank_evidence([0.1, 0.2, 0.3], [True] * 3, shape, reputation)


@pytest.mark.parametrize("updates", [np.zeros((2, 3)), np.zeros(4), [[1.0, math.inf]] * 3])
def test_alie_shape_rejects_bad_input(updates: object) -> None:
    with pytest.raises(InputError, match="updates must be"):
        alie_shape(updates)  # type: ignore[arg-type]


ALIE_FEDERATION = SimulationConfig(
    clients=8,
    malicious=2,
    free_riders=1,
    attack="alie",
    partition="dirichlet:0.5",
    rounds=5,
    seed=0,
    contribution="gtg",
)


@cache
def _alie_run() -> SimulationResult:
    return simulate(ALIE_FEDERATION, dataset=DIGITS)


def test_evidence_ranking_puts_alie_attackers_and_the_free_rider_lowest() -> None:
    result = _alie_run()
    assert result.config.contribution_ranking == "evidence"
    assert result.alie_shapes is not None and result.contribution_ranking is not None
    assert min(result.alie_shapes[:2]) >= ALIE_SHAPE > max(result.alie_shapes[2:])
    assert set(result.contribution_ranking[:3]) == {0, 1, 2}
    doc = result.to_json()
    assert doc["alie_shapes"] == list(result.alie_shapes)
    assert doc["contribution_ranking"] == list(result.contribution_ranking)
    # the ranking before issue 13 stays selectable; the model and values are the same
    standing = simulate(replace(ALIE_FEDERATION, contribution_ranking="standing"), dataset=DIGITS)
    assert standing.model_digest == result.model_digest
    assert standing.contributions == result.contributions
    assert standing.contribution_ranking is not None
    assert standing.contribution_ranking[0] == 2  # the free rider, untrusted by the rule


def test_unknown_ranking_is_rejected() -> None:
    with pytest.raises(InputError, match="contribution_ranking"):
        replace(ALIE_FEDERATION, contribution_ranking="shapley")  # type: ignore[arg-type]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ailedger", "train", "simulate", "--rounds", "1", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_cli_contribution_max_clients_flag() -> None:
    over = _cli("--clients", "11", "--contribution", "gtg")
    assert over.returncode == 2, over.stderr
    assert "limited to 10 clients" in over.stdout + over.stderr
    assert "Traceback" not in over.stderr
    lowered = _cli("--clients", "4", "--contribution", "gtg", "--contribution-max-clients", "3")
    assert lowered.returncode == 2 and "limited to 3 clients" in lowered.stdout + lowered.stderr
    raised = _cli(
        "--clients", "11", "--contribution", "gtg", "--contribution-max-clients", "11", "--json"
    )
    assert raised.returncode == 0, raised.stderr
    assert '"contribution_ranking"' in raised.stdout
