"""Unit tests of the reputation rule's recent window (the defence against sleepers)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from ailedger.errors import AggregationError, InputError
from ailedger.federated.attacks import sleeper
from ailedger.federated.reputation import (
    COSINE_BITS,
    WINDOW,
    ReputationResult,
    ReputationState,
    reputation,
)

D = 40
N, BAD, WAKE, ROUNDS = 8, 2, 4, 12


def _sleeper_run(window: int | None, seed: int = 3) -> list[ReputationResult]:
    """Rounds of ``N`` updates around one direction; the first ``BAD`` parties are sleepers
    that behave until round ``WAKE`` and then sign-flip."""
    rng = np.random.default_rng(seed)
    truth = np.linspace(-1.0, 1.0, D) + 0.5
    state = None
    out = []
    for r in range(ROUNDS):
        updates = truth + 0.6 * rng.normal(size=(N, D))
        updates[:BAD] = sleeper(updates[:BAD], updates[BAD:], round_no=r, wake=WAKE)
        reference = truth + 0.3 * rng.normal(size=D)
        res = reputation(updates, reference=reference, state=state, window=window)
        state = res.state
        out.append(res)
    return out


def test_default_window_is_three_rounds() -> None:
    assert WINDOW == 3


def test_sleeper_is_excluded_in_its_second_round_awake_with_the_window() -> None:
    # behaving cosines are about +0.8 and awake ones -0.75 here, so the last three rounds
    # sum to <= 0 from the second round awake on, while the whole sum stays positive
    results = _sleeper_run(WINDOW)
    for r, res in enumerate(results):
        assert res.excluded == (() if r <= WAKE else (0, 1)), r
    assert results[WAKE + 1].reputations[0] > 0 and results[WAKE + 1].reputations[1] > 0


def test_on_the_sum_alone_a_sleeper_stays_in_for_rounds() -> None:
    results = _sleeper_run(None)
    awake_and_kept = [r for r in range(WAKE, ROUNDS) if 0 not in results[r].excluded]
    assert awake_and_kept == list(range(WAKE, WAKE + 4))  # as long as it behaved
    assert results[-1].excluded == (0, 1)


def test_recent_holds_the_last_window_values_and_round_trips_json() -> None:
    results = _sleeper_run(WINDOW)
    state = results[-1].state
    cos = [res.state.cosine[0] - prev.state.cosine[0] for prev, res in itertools.pairwise(results)]
    assert list(state.recent[0]) == cos[-WINDOW:]
    assert all(len(r) == WINDOW for r in state.recent)
    back = ReputationState.from_json(json.loads(json.dumps(state.to_json())))
    assert back == state and back.digest() == state.digest()
    doc = state.to_json()
    doc["recent"][0][0] += 1
    assert ReputationState.from_json(doc).digest() != state.digest()
    # without a window the state keeps one value per party
    assert all(len(r) == 1 for r in _sleeper_run(None)[-1].state.recent)


def test_window_exclusion_does_not_depend_on_the_arrival_order() -> None:
    rng = np.random.default_rng(8)
    truth = np.linspace(-1.0, 1.0, D) + 0.5
    ids = [f"p{i}" for i in range(N)]
    a = b = ReputationState.initial(ids)
    for r in range(WAKE + 2):
        updates = truth + 0.6 * rng.normal(size=(N, D))
        updates[:BAD] = sleeper(updates[:BAD], updates[BAD:], round_no=r, wake=WAKE)
        reference = truth + 0.3 * rng.normal(size=D)
        perm = rng.permutation(N)
        ra = reputation(updates, reference=reference, state=a, parties=ids)
        rb = reputation(updates[perm], reference=reference, state=b, parties=[ids[i] for i in perm])
        assert ra.digest == rb.digest
        assert ra.state.digest() == rb.state.digest()
        assert sorted(ids[i] for i in ra.excluded) == sorted(ids[perm[i]] for i in rb.excluded)
        a, b = ra.state, rb.state
    assert sorted(ids[i] for i in ra.excluded) == ["p0", "p1"]


@pytest.mark.parametrize("window", [0, -1, True, 1.5])
def test_bad_window_is_rejected(window: object) -> None:
    with pytest.raises(AggregationError, match="window must be"):
        reputation(np.ones((3, 4)), reference=np.ones(4), window=window)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("recent", "message"),
    [
        ([[1, 2], []], "at most as many"),  # more values than rounds seen
        ([[0.5], []], "at most as many"),
        ([[1]], "at most as many"),  # one list for two parties
        ([1, []], "list of lists"),
    ],
)
def test_bad_recent_documents(recent: object, message: str) -> None:
    doc = ReputationState.initial(["a", "b"]).to_json()
    doc.update(rounds=1, seen=[1, 0], cosine=[1 << COSINE_BITS, 0], recent=recent)
    with pytest.raises(InputError, match=message):
        ReputationState.from_json(doc)
