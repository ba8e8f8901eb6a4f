"""Unit tests of ailedger.federated.reputation (pure numpy, no training)."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from ailedger.errors import AggregationError, InputError
from ailedger.federated.aggregate import RULES, quantize
from ailedger.federated.reputation import (
    COSINE_BITS,
    WARMUP_ROUNDS,
    ReputationState,
    breakdown_warning,
    fallback_reference,
    loss_evidence,
    reputation,
    spread_to_signal,
    standings,
)

D = 40


def _round(
    rng: np.random.Generator, n: int = 8, flippers: int = 2, riders: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` updates around a common direction (first ``flippers`` negated, next ``riders``
    zero) and a reference near that direction."""
    truth = np.linspace(-1.0, 1.0, D) + 0.5
    updates = truth + 0.6 * rng.normal(size=(n, D))
    updates[:flippers] *= -1.0
    updates[flippers : flippers + riders] = 0.0
    reference = truth + 0.3 * rng.normal(size=D)
    return updates, reference


def _run_rounds(rounds: int, **kw: int) -> list[object]:
    rng = np.random.default_rng(5)
    state = None
    out = []
    for _ in range(rounds):
        updates, reference = _round(rng, **kw)
        res = reputation(updates, reference=reference, state=state)
        state = res.state
        out.append(res)
    return out


def test_registered_as_a_rule() -> None:
    rng = np.random.default_rng(0)
    updates, reference = _round(rng)
    a = RULES["reputation"](updates, reference=reference)
    b = reputation(updates, reference=reference)
    assert a.digest == b.digest


def test_cosine_is_exact_in_fixed_point() -> None:
    # cos((3, 4), (4, 3)) = 24 / 25; the rule holds floor(2**20 * 24 / 25)
    updates = [np.array([3.0, 4.0])] * 3
    res = reputation(updates, reference=np.array([4.0, 3.0]))
    expected = math.floor(Fraction(24, 25) * 2**COSINE_BITS)
    assert res.state.cosine == (expected,) * 3
    assert res.cosines[0] == expected / 2**COSINE_BITS
    # opposite direction: the negative of the same magnitude
    flipped = reputation([np.array([-3.0, -4.0])] * 3, reference=np.array([4.0, 3.0]))
    assert flipped.state.cosine == (-expected,) * 3


def test_persistent_sign_flipper_is_excluded_after_the_warmup() -> None:
    results = _run_rounds(5)
    for k, res in enumerate(results):
        assert res.warmup == (k < WARMUP_ROUNDS)  # type: ignore[attr-defined]
        if k >= WARMUP_ROUNDS:
            assert res.excluded == (0, 1)  # type: ignore[attr-defined]
            assert res.selected == tuple(range(2, 8))  # type: ignore[attr-defined]
            assert res.weights[0] == res.weights[1] == 0.0  # type: ignore[attr-defined]
    final = results[-1].state  # type: ignore[attr-defined]
    assert final.rounds == 5
    assert final.reputation("0") < 0 and final.reputation("1") < 0
    assert all(final.reputation(str(i)) > 0 for i in range(2, 8))


def test_identical_updates_aggregate_to_themselves_after_the_warmup() -> None:
    rng = np.random.default_rng(1)
    update = rng.normal(size=D)
    state = ReputationState.initial([str(i) for i in range(5)])
    for _ in range(WARMUP_ROUNDS + 2):
        # a reference pointing away, so every reputation turns negative and f are excluded
        res = reputation([update] * 5, reference=-update, state=state)
        assert np.array_equal(res.fixed, quantize(update))
        state = res.state
    assert len(res.excluded) == 1


def test_order_of_arrival_does_not_change_the_result() -> None:
    rng = np.random.default_rng(2)
    ids = [f"party-{i}" for i in range(7)]
    state_a = state_b = ReputationState.initial(ids)
    for _ in range(4):
        updates, reference = _round(rng, n=7)
        perm = rng.permutation(7)
        a = reputation(updates, reference=reference, state=state_a, parties=ids)
        b = reputation(
            updates[perm], reference=reference, state=state_b, parties=[ids[i] for i in perm]
        )
        assert a.digest == b.digest
        assert a.state.digest() == b.state.digest()
        assert sorted(ids[i] for i in a.excluded) == sorted(ids[perm[k]] for k in b.excluded)
        state_a, state_b = a.state, b.state


def test_state_round_trips_json_and_its_digest() -> None:
    state = _run_rounds(3)[-1].state  # type: ignore[attr-defined]
    text = json.dumps(state.to_json())
    back = ReputationState.from_json(json.loads(text))
    assert back == state
    assert back.digest() == state.digest()
    assert state.canonical().startswith(b'{"cosine":[')
    doc = state.to_json()
    doc["cosine"] = [doc["cosine"][0] + 1, *doc["cosine"][1:]]
    assert ReputationState.from_json(doc).digest() != state.digest()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": "v0"}, "unknown version"),
        ({"parties": ["b", "a"]}, "sorted and unique"),
        ({"rounds": -1}, "rounds must be an int"),
        ({"seen": [9, 9]}, "more rounds than were run"),
        ({"cosine": [1]}, "cosine has 1 values"),
        ({"evidence": [0.5, 0]}, "evidence must hold safe integers"),
        ({"extra": 1}, "expected the keys"),
    ],
)
def test_bad_state_documents(change: dict[str, object], message: str) -> None:
    doc = ReputationState.initial(["a", "b"]).to_json() | change
    with pytest.raises(InputError, match=message):
        ReputationState.from_json(doc)


def test_bad_input_raises_clear_errors() -> None:
    rng = np.random.default_rng(3)
    updates, reference = _round(rng, n=4)
    other = ReputationState.initial(["x", "y", "z", "w"])
    with pytest.raises(AggregationError, match="not in the reputation state's party set"):
        reputation(updates, reference=reference, state=other)
    bad = updates.copy()
    bad[2, 3] = np.nan
    with pytest.raises(AggregationError, match="party 2: non-finite"):
        reputation(bad, reference=reference)
    with pytest.raises(AggregationError, match="needs a reference update"):
        reputation(updates)
    with pytest.raises(AggregationError, match="reference update is zero"):
        reputation(updates, reference=np.zeros(D))
    with pytest.raises(AggregationError, match="reference has shape"):
        reputation(updates, reference=np.ones(D + 1))
    with pytest.raises(AggregationError, match="evidence values"):
        reputation(updates, reference=reference, evidence=[0.0, 2.0, 0.0, 0.0])
    with pytest.raises(AggregationError, match="duplicate party"):
        reputation(updates, reference=reference, parties=["a", "a", "b", "c"])
    with pytest.raises(AggregationError, match="with f=2 needs at least 5"):
        reputation(updates, reference=reference, f=2)


def test_fallback_reference_without_a_public_set() -> None:
    rng = np.random.default_rng(4)
    updates, _ = _round(rng, n=9, flippers=2)
    ref = fallback_reference(updates, f=2)
    honest_mean = updates[2:].mean(axis=0)
    cos = float(ref @ quantize(honest_mean)) / (
        float(np.linalg.norm(ref)) * float(np.linalg.norm(quantize(honest_mean)))
    )
    assert cos > 0.95
    same = np.ones(D)
    assert np.array_equal(fallback_reference([same] * 5), quantize(same))
    res = reputation(updates, fallback=True)
    assert res.reference_source == "fallback"
    assert res.cosines[0] < 0 < res.cosines[5]


def test_spread_to_signal_known_answer() -> None:
    # n = 3, t = 0: median (1, 0); squared distances 1, 1, 0 -> spread 2/3; mean (1, 0)
    rows = [np.array([2.0, 0.0]), np.array([0.0, 0.0]), np.array([1.0, 0.0])]
    assert spread_to_signal(rows) == 2 / 3
    assert spread_to_signal(rows[::-1]) == 2 / 3
    assert spread_to_signal([np.array([1.0, -1.0]), np.array([-1.0, 1.0])]) is None
    # n = 4, t = 1: the farthest update (a boosted one) is left out of the spread
    rows4 = [np.array([1.0]), np.array([1.0]), np.array([3.0]), np.array([100.0])]
    # median 2; distances 1, 1, 1, 98**2 -> spread (1 + 1 + 1) / 3; trimmed mean (1 + 3) / 2
    assert spread_to_signal(rows4) == 1 / 4


def test_breakdown_warning_threshold() -> None:
    assert breakdown_warning(1.0, 0.25) is None  # 1 / 3 > 0.25
    message = breakdown_warning(2.0, 0.25)  # 1 / 4 reached
    assert message is not None and "1/(2+B^2) = 0.250" in message
    assert breakdown_warning(None, 0.1) is not None
    assert breakdown_warning(50.0, 0.0) is None
    with pytest.raises(InputError, match="fraction"):
        breakdown_warning(1.0, 1.5)


def test_standings_rank_attackers_lowest_and_mark_free_riders() -> None:
    state = _run_rounds(4, n=8, flippers=2, riders=1)[-1].state  # type: ignore[attr-defined]
    ranked = standings(state)
    assert {s.party for s in ranked[:2]} == {"0", "1"}
    assert all(s.verdict == "suspect" for s in ranked[:2])
    assert ranked[2].party == "2" and ranked[2].verdict == "free_rider"
    assert ranked[2].reputation == 0.0
    assert all(s.verdict == "trusted" for s in ranked[3:])


def test_loss_evidence_is_relative_to_the_reference() -> None:
    values = loss_evidence(2.0, [1.0, 2.5, 2.0, -5.0], 1.5)
    np.testing.assert_array_equal(values, [1.0, -1.0, 0.0, 1.0])
    np.testing.assert_array_equal(loss_evidence(2.0, [1.0], 2.5), [0.0])
    with pytest.raises(InputError, match="finite"):
        loss_evidence(float("nan"), [1.0], 0.5)


def test_evidence_enters_the_reputation() -> None:
    rng = np.random.default_rng(6)
    updates, reference = _round(rng, n=4, flippers=0)
    plain = reputation(updates, reference=reference)
    with_ev = reputation(updates, reference=reference, evidence=[-1.0, 0.5, 0.0, 0.0])
    assert with_ev.state.evidence == (-(2**COSINE_BITS), 2**19, 0, 0)
    assert with_ev.reputations[0] == pytest.approx(plain.reputations[0] - 1.0)
