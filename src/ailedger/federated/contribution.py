"""Contribution of each party to a federated round: exact Shapley values and GTG-Shapley.

The game is given by a utility ``utility(subset) -> float`` over coalitions (frozensets of
party indices ``0 .. n-1``), e.g. the validation accuracy of the model aggregated from that
subset's updates. ``utility(frozenset())`` is the utility of the global model before the
round. Nothing here knows about models, so any rule and any metric can be scored.

- :func:`exact_shapley` enumerates all ``2**n`` coalitions (Shapley 1953,
  ``phi_i = sum_{S not containing i} |S|! (n-|S|-1)! / n! * (v(S + i) - v(S))``);
  feasible up to about 16 parties.
- :func:`gtg_shapley` is GTG-Shapley (Liu, Chen, Yu et al., "GTG-Shapley: efficient and
  accurate participant contribution evaluation in federated learning", ACM TIST 2022):
  Monte Carlo over permutations with

  1. between-round truncation: if ``|v(N) - v({})| <= eps_between`` the round changed
     little and every value is 0, with no further evaluation;
  2. within-round truncation: along a permutation, once ``|v(N) - v(prefix)| < eps_within``
     the remaining parties' marginals are taken as 0 without evaluating the utility;
  3. guided sampling: permutations come in cycles of ``n``, and in each cycle every party
     leads once (the leading positions carry the largest marginals), the rest shuffled;
  4. convergence: after at least ``min_permutations``, stop at the end of a cycle when for
     each of the last ``window`` running estimates the mean relative difference to the
     current one is below ``tol`` (defaults follow the authors' implementation:
     30 permutations, window 10, 5 %), or at ``max_permutations``.

  Utilities are cached per coalition within a round. The estimate is deterministic given
  the seed.
- :func:`round_contributions` scores several rounds and adds them up (cumulative value of a
  party = the sum of its per-round values, as in the paper's multi-round setting).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from ailedger.errors import InputError

__all__ = [
    "MAX_EXACT_PARTIES",
    "RoundContributions",
    "ShapleyEstimate",
    "Utility",
    "exact_shapley",
    "gtg_shapley",
    "round_contributions",
]

FloatArray = npt.NDArray[np.float64]
Utility = Callable[[frozenset[int]], float]

#: largest number of parties :func:`exact_shapley` accepts (2**16 utility evaluations)
MAX_EXACT_PARTIES = 16


@dataclass(frozen=True, eq=False)
class ShapleyEstimate:
    """Shapley values of one round.

    ``values`` (float64, shape ``(n,)``) in utility units; ``permutations`` sampled (0 for the
    exact method or a truncated round); ``evaluations`` distinct coalitions whose utility was
    computed; ``truncated`` whether between-round truncation zeroed the round; ``converged``
    whether the convergence criterion (not the permutation cap) stopped the sampling.
    """

    values: FloatArray
    permutations: int
    evaluations: int
    truncated: bool
    converged: bool


@dataclass(frozen=True, eq=False)
class RoundContributions:
    """Per-round estimates and their sum, ``cumulative`` (float64, shape ``(n,)``)."""

    rounds: tuple[ShapleyEstimate, ...]
    cumulative: FloatArray


class _CachedUtility:
    def __init__(self, utility: Utility) -> None:
        self._utility = utility
        self.cache: dict[frozenset[int], float] = {}

    def __call__(self, subset: frozenset[int]) -> float:
        if subset not in self.cache:
            value = float(self._utility(subset))
            if not math.isfinite(value):
                raise InputError(f"utility returned {value} for coalition {sorted(subset)}")
            self.cache[subset] = value
        return self.cache[subset]


def _check_n(n_parties: int, limit: int | None = None) -> None:
    if isinstance(n_parties, bool) or not isinstance(n_parties, int) or n_parties < 1:
        raise InputError(f"n_parties must be a positive int, got {n_parties!r}")
    if limit is not None and n_parties > limit:
        raise InputError(f"exact Shapley values need n_parties <= {limit}, got {n_parties}")


def exact_shapley(n_parties: int, utility: Utility) -> ShapleyEstimate:
    """Exact Shapley values by enumerating every coalition (``2**n`` utility calls)."""
    _check_n(n_parties, MAX_EXACT_PARTIES)
    n = n_parties
    cached = _CachedUtility(utility)
    value = [0.0] * (1 << n)
    for mask in range(1 << n):
        value[mask] = cached(frozenset(i for i in range(n) if mask >> i & 1))
    weight = [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
    phi = np.zeros(n, dtype=np.float64)
    for i in range(n):
        bit = 1 << i
        terms = (
            weight[mask.bit_count()] * (value[mask | bit] - value[mask])
            for mask in range(1 << n)
            if not mask & bit
        )
        phi[i] = math.fsum(terms)
    return ShapleyEstimate(
        values=phi, permutations=0, evaluations=len(cached.cache), truncated=False, converged=True
    )


def _converged(history: list[FloatArray], window: int, tol: float) -> bool:
    current = history[-1]
    scale = np.abs(current) + 1e-12
    for past in history[-window - 1 : -1]:
        if float(np.mean(np.abs(past - current) / scale)) > tol:
            return False
    return True


def gtg_shapley(
    n_parties: int,
    utility: Utility,
    *,
    seed: int = 0,
    eps_within: float = 1e-3,
    eps_between: float = 1e-3,
    tol: float = 0.05,
    window: int = 10,
    min_permutations: int | None = None,
    max_permutations: int = 500,
) -> ShapleyEstimate:
    """GTG-Shapley estimate of one round's Shapley values (module docstring for the steps).

    ``eps_within`` and ``eps_between`` are in utility units; ``min_permutations`` defaults to
    ``max(30, n)``. Deterministic given ``seed``.
    """
    _check_n(n_parties)
    n = n_parties
    if eps_within < 0 or eps_between < 0 or tol <= 0 or window < 1 or max_permutations < 1:
        raise InputError("gtg_shapley: thresholds must be >= 0, tol > 0, window and cap >= 1")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative int, got {seed!r}")
    min_perm = max(30, n) if min_permutations is None else min_permutations
    cached = _CachedUtility(utility)
    everyone = frozenset(range(n))
    v_empty, v_full = cached(frozenset()), cached(everyone)
    if abs(v_full - v_empty) <= eps_between:
        return ShapleyEstimate(
            values=np.zeros(n, dtype=np.float64),
            permutations=0,
            evaluations=len(cached.cache),
            truncated=True,
            converged=True,
        )
    rng = np.random.default_rng(seed)
    phi = np.zeros(n, dtype=np.float64)
    history: list[FloatArray] = []
    k = 0
    converged = False
    while k < max_permutations and not converged:
        for leader in range(n):
            if k >= max_permutations:
                break
            k += 1
            rest = [i for i in range(n) if i != leader]
            order = [leader, *(rest[j] for j in rng.permutation(n - 1))]
            v_prev = v_empty
            prefix: set[int] = set()
            for party in order:
                prefix.add(party)
                # within-round truncation: the prefix already achieves the round's utility
                truncate = abs(v_full - v_prev) < eps_within
                v_next = v_prev if truncate else cached(frozenset(prefix))
                phi[party] += (v_next - v_prev - phi[party]) / k
                v_prev = v_next
            history.append(phi.copy())
        converged = k >= min_perm and len(history) > window and _converged(history, window, tol)
    return ShapleyEstimate(
        values=phi,
        permutations=k,
        evaluations=len(cached.cache),
        truncated=False,
        converged=converged,
    )


def round_contributions(
    n_parties: int,
    utilities: Sequence[Utility],
    *,
    method: Literal["gtg", "exact"] = "gtg",
    seed: int = 0,
    eps_within: float = 1e-3,
    eps_between: float = 1e-3,
    tol: float = 0.05,
    max_permutations: int = 500,
) -> RoundContributions:
    """Score each round (one utility per round) and sum the values per party.

    Round ``r`` of the GTG method uses the seed ``(seed, r)``, so a round's estimate does not
    depend on how many rounds precede it.
    """
    _check_n(n_parties)
    rounds: list[ShapleyEstimate] = []
    for r, utility in enumerate(utilities):
        if method == "exact":
            rounds.append(exact_shapley(n_parties, utility))
        elif method == "gtg":
            round_seed = int(np.random.SeedSequence([seed, r]).generate_state(1)[0])
            rounds.append(
                gtg_shapley(
                    n_parties,
                    utility,
                    seed=round_seed,
                    eps_within=eps_within,
                    eps_between=eps_between,
                    tol=tol,
                    max_permutations=max_permutations,
                )
            )
        else:
            raise InputError(f"unknown method {method!r}; use 'gtg' or 'exact'")
    cumulative = np.zeros(n_parties, dtype=np.float64)
    for estimate in rounds:
        cumulative = cumulative + estimate.values
    return RoundContributions(rounds=tuple(rounds), cumulative=cumulative)
