"""Invariants of every aggregation rule (hypothesis)."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ailedger.federated.aggregate import RULES, quantize
from ailedger.federated.reputation import WARMUP_ROUNDS, ReputationState, reputation

# up to 25 coordinates of at most 2e5 keep every norm below the default bound of 2**20
VALUES = st.one_of(
    st.floats(min_value=-1e3, max_value=1e3, allow_nan=False),
    st.floats(min_value=-2e5, max_value=2e5, allow_nan=False),
)
SHAPES = hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=5)
RULE_NAMES = st.sampled_from(sorted(RULES))
SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def rounds(draw: st.DrawFn, min_n: int = 3, max_n: int = 9) -> tuple[list[Any], Any]:
    """``n`` updates of one shape and a root update of that shape."""
    shape = draw(SHAPES)
    n = draw(st.integers(min_n, max_n))
    updates = [draw(hnp.arrays(np.float64, shape, elements=VALUES)) for _ in range(n)]
    root = draw(hnp.arrays(np.float64, shape, elements=VALUES))
    return updates, root


def _run(name: str, updates: list[Any], root: Any) -> Any:
    options = {"root": root} if name == "fltrust" else {}
    if name == "reputation":
        options = {"reference": root}
    return RULES[name](updates, **options)


_NEEDS_ROOT = ("fltrust", "reputation")


@SETTINGS
@given(
    name=RULE_NAMES,
    update=hnp.arrays(np.float64, SHAPES, elements=VALUES),
    n=st.integers(3, 9),
)
def test_identical_updates_aggregate_to_themselves(name: str, update: Any, n: int) -> None:
    q = quantize(update)
    assume(name not in _NEEDS_ROOT or q.any())
    res = _run(name, [update.copy() for _ in range(n)], update)
    assert np.array_equal(res.fixed, q)
    assert np.array_equal(res.aggregate, q / 2.0**24)


@SETTINGS
@given(name=RULE_NAMES, data=rounds(), perm_seed=st.integers(0, 2**32 - 1))
def test_aggregation_ignores_input_order(
    name: str, data: tuple[list[Any], Any], perm_seed: int
) -> None:
    updates, root = data
    assume(name not in _NEEDS_ROOT or quantize(root).any())
    perm = np.random.default_rng(perm_seed).permutation(len(updates))
    a = _run(name, updates, root)
    b = _run(name, [updates[i] for i in perm], root)
    assert a.digest == b.digest
    assert np.array_equal(a.fixed, b.fixed)
    # identical updates are interchangeable, so compare what was flagged, not who
    flagged_a = sorted(quantize(updates[i]).tobytes() for i in a.flagged)
    flagged_b = sorted(quantize(updates[int(perm[k])]).tobytes() for k in b.flagged)
    assert flagged_a == flagged_b


@SETTINGS
@given(name=RULE_NAMES, data=rounds())
def test_result_shape_and_weights(name: str, data: tuple[list[Any], Any]) -> None:
    updates, root = data
    assume(name not in _NEEDS_ROOT or quantize(root).any())
    res = _run(name, updates, root)
    n = len(updates)
    assert res.aggregate.shape == updates[0].shape
    assert res.fixed.shape == updates[0].shape
    assert res.fixed.dtype == np.int64
    assert res.weights.shape == (n,)
    assert np.all(res.weights >= 0)
    assert np.isclose(res.weights.sum(), 1.0) or (name == "fltrust" and not res.weights.any())
    assert all(0 <= i < n for i in (*res.selected, *res.flagged))


@SETTINGS
@given(
    name=st.sampled_from(["median", "trimmed_mean", "fedavg", "bulyan", "multikrum", "default"]),
    data=rounds(),
)
def test_coordinate_rules_stay_within_the_coordinate_range(
    name: str, data: tuple[list[Any], Any]
) -> None:
    updates, root = data
    q = np.stack([quantize(u) for u in updates])
    res = _run(name, updates, root)
    assert np.all(res.fixed >= q.min(axis=0))
    assert np.all(res.fixed <= q.max(axis=0))


@SETTINGS
@given(data=rounds())
def test_krum_returns_one_of_the_updates(data: tuple[list[Any], Any]) -> None:
    updates, _ = data
    res = RULES["krum"](updates)
    (chosen,) = res.selected
    assert np.array_equal(res.fixed, quantize(updates[chosen]))


@SETTINGS
@given(
    data=rounds(min_n=3, max_n=7),
    perm_seed=st.integers(0, 2**32 - 1),
    history=st.lists(st.integers(-(2**22), 2**22), min_size=7, max_size=7),
)
def test_reputation_after_the_warmup_ignores_input_order(
    data: tuple[list[Any], Any], perm_seed: int, history: list[int]
) -> None:
    """Bit-identical aggregate and state digest whatever the order, with a non-fresh state."""
    updates, root = data
    assume(quantize(root).any())
    n = len(updates)
    ids = [f"p{i}" for i in range(n)]
    state = ReputationState(
        parties=tuple(ids),
        rounds=WARMUP_ROUNDS + 1,
        cosine=tuple(history[:n]),
        evidence=(0,) * n,
        seen=(WARMUP_ROUNDS + 1,) * n,
    )
    perm = np.random.default_rng(perm_seed).permutation(n)
    a = reputation(updates, reference=root, state=state, parties=ids)
    b = reputation(
        [updates[i] for i in perm], reference=root, state=state, parties=[ids[i] for i in perm]
    )
    assert a.digest == b.digest
    assert a.state.digest() == b.state.digest()
    assert sorted(ids[i] for i in a.excluded) == sorted(ids[int(perm[k])] for k in b.excluded)
