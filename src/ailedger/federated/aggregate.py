"""Deterministic robust aggregation of model updates (pure functions, numpy only).

Every party of a federated round recomputes the aggregate on its own machine and the parties
vote on its digest, so a rule here must give the same bits on every machine and for every
order in which the updates arrive. The rules:

=================  =========================================================================
``fedavg``         plain mean with equal weights (McMahan et al. 2017, FedAvg); a party's
                   self-reported sample count is never used, since it cannot be verified
``median``         coordinate-wise median (Yin et al. 2018, "Byzantine-robust distributed
                   learning: towards optimal statistical rates")
``trimmed_mean``   coordinate-wise mean after dropping the ``f`` largest and ``f`` smallest
                   values (Yin et al. 2018)
``krum``           the update with the smallest sum of squared distances to its ``n - f - 2``
                   nearest neighbours (Blanchard et al. 2017, "Machine learning with
                   adversaries: Byzantine tolerant gradient descent", NeurIPS)
``multikrum``      mean of the ``m`` updates with the best Krum scores (Blanchard et al. 2017)
``bulyan``         ``n - 2f`` updates chosen by Krum one at a time, then per coordinate the
                   mean of the ``n - 4f`` values closest to the median (El Mhamdi et al. 2018,
                   "The hidden vulnerability of distributed learning in Byzantium", ICML)
``clip``           each update scaled down to L2 norm at most ``tau`` (default the median
                   norm), then averaged (norm bounding, Sun et al. 2019, "Can you really
                   backdoor federated learning?")
``fltrust``        trust score ``ReLU(cos(g_i, g_0))`` against the server's root update
                   ``g_0``, each update rescaled to ``||g_0||``, weighted mean (Cao et al.,
                   "FLTrust: Byzantine-robust federated learning via trust bootstrapping",
                   NDSS 2021)
``default``        :func:`robust`: drop outliers and updates with a non-positive inner
                   product with the robust mean, centered clipping around the coordinate-wise
                   median (Karimireddy et al. 2021), mean
``reputation``     stateful: per-party reputation (sum over rounds of the cosine with a
                   reference update from a public set), exclusion of up to ``f`` parties
                   with non-positive reputation, clipping, mean (:mod:`.reputation`); pass
                   ``reference=`` and the previous round's ``state=``
=================  =========================================================================

Determinism scheme
------------------
1. Quantise. Each value ``x`` becomes the int64 ``q = rint(x * 2**24)`` (:data:`FRAC_BITS`);
   multiplying by a power of two is exact in IEEE 754 binary64 and ``rint`` rounds half to
   even, so ``q`` is the same everywhere. Values with ``|x| > 2**20`` (:data:`MAX_ABS`) are
   rejected, so ``|q| <= 2**44`` and a sum of up to :data:`MAX_PARTIES` of them fits in int64.
2. Canonical order. Each party's fixed-point update is hashed with :func:`aggregate_digest`;
   the rules work on the updates sorted by ``(digest, original index)``, so ties (Krum
   scores, equal values) are broken the same way whatever the arrival order (the index only
   orders byte-identical updates, which are interchangeable). Results map back to the
   caller's indices.
3. Integer maths. Sorting, selection, sums and means are exact integer operations; a mean is
   rounded half up, ``floor((2 S + n) / 2 n)``. Squared distances, norms and inner products
   would overflow int64 (``(2**45)**2 = 2**90``), so they are computed exactly by splitting
   each operand into a signed high and a 23-bit low limb, summing the limb products in int64
   over chunks that cannot overflow, and combining the chunk sums as Python ints
   (:func:`_dot_exact`). Krum scores and norm comparisons are therefore exact integers; no
   floating-point reduction (whose order, and so result, numpy may change with the SIMD
   width or version) is ever used. Cost: ``O(n**2 d)`` integer operations for the Krum
   family (about 1 s for 20 parties of 200 000 values on one core).
4. Scaling. Where a rule multiplies an update by a real factor (clipping, FLTrust) the factor
   is a Python float computed from exact integers by correctly rounded operations only
   (int/int true division, ``math.sqrt``), and it is applied elementwise as
   ``rint(float64(q) * c)``: a single correctly rounded IEEE multiplication per coordinate,
   hence identical on every conforming machine. FLTrust's trust scores are integers
   (``floor(2**20 * cos)`` from ``isqrt``), so its weighted mean is again integer-exact.
5. Output. The fixed-point aggregate is returned with its float64 value ``q / 2**24`` (exact)
   and its digest, which is what the parties compare.

Assumes IEEE 754 binary64 with round-to-nearest-even, as on every platform numpy supports.

Validation
----------
Every rule checks every update before aggregating and raises :class:`AggregationError`
naming the party's index: same shape as party 0's, a real (not bool or complex) dtype, no NaN
or infinity, every ``|x| <= MAX_ABS``, and L2 norm at most ``max_norm`` (a keyword of every
rule, at most ``MAX_ABS``). Too few parties for the rule's ``f`` is an error too.

The canonical encoding hashed by :func:`aggregate_digest` is, in order::

    b"ailedger/fixed-point/v1\\x00"
    uint8  FRAC_BITS
    uint8  ndim
    uint64 dim[k] for each axis (little-endian)
    int64  values in C order (little-endian)
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ailedger.errors import AggregationError

__all__ = [
    "DEFAULT_MAX_NORM",
    "FRAC_BITS",
    "MAX_ABS",
    "MAX_PARTIES",
    "RULES",
    "SCALE",
    "AggregationResult",
    "aggregate_digest",
    "bulyan",
    "clip",
    "dequantize",
    "fedavg",
    "fltrust",
    "krum",
    "median",
    "multikrum",
    "quantize",
    "robust",
    "trimmed_mean",
]

FloatArray = npt.NDArray[np.float64]
FixedArray = npt.NDArray[np.int64]

#: fractional bits of the fixed-point representation
FRAC_BITS = 24
#: fixed-point scale, ``2**FRAC_BITS``
SCALE = 1 << FRAC_BITS
#: largest accepted absolute value of a coordinate (before quantisation)
MAX_ABS = float(1 << 20)
#: default bound on an update's L2 norm (the ``max_norm`` keyword of every rule)
DEFAULT_MAX_NORM = MAX_ABS
#: largest number of parties a rule accepts (keeps every int64 sum far from overflow)
MAX_PARTIES = 1 << 16

_DOMAIN = b"ailedger/fixed-point/v1\x00"
_LIMB_BITS = 23
_LIMB_MASK = (1 << _LIMB_BITS) - 1
# limb products are < 2**46; 2**15 of them sum to < 2**61
_CHUNK = 1 << 15
_TRUST_BITS = 20
# an update farther than this many times the median distance from the centre is an outlier
_FAR_RATIO = 3
# a kept update whose squared distance from the centre exceeds this many times the median
# squared distance (so farther than about 1.73 median distances) is flagged
_FLAG_SQ_RATIO = 3


@dataclass(frozen=True, eq=False)
class AggregationResult:
    """The outcome of one aggregation.

    ``aggregate`` is the float64 update (``fixed / 2**24``, exact) in the parties' shape;
    ``fixed`` the int64 fixed-point update; ``digest`` the SHA-256 of ``fixed``
    (:func:`aggregate_digest`), which is what the parties compare. ``selected`` lists the
    parties (indices into the caller's sequence, ascending) whose updates contributed;
    ``flagged`` those the rule judged suspicious. ``weights`` (float64, shape ``(n,)``, sums to
    1 unless nothing was kept) is each party's share of the aggregate; for coordinate-wise
    rules it is the fraction of coordinates in which the party's value was kept, divided by
    the number of values kept per coordinate. Parties with identical updates are
    interchangeable and credit between them follows the canonical order.
    """

    aggregate: FloatArray
    fixed: FixedArray
    digest: bytes
    selected: tuple[int, ...]
    flagged: tuple[int, ...]
    weights: FloatArray = field(repr=False)


# --------------------------------------------------------------------------- fixed point


def quantize(values: npt.ArrayLike, *, where: str = "value") -> FixedArray:
    """Return the int64 fixed-point form ``rint(x * 2**24)`` of a real array.

    Raises :class:`AggregationError` naming ``where`` if the array is not real numeric, holds
    NaN or an infinity, or a coordinate exceeds :data:`MAX_ABS` in absolute value.
    """
    arr = np.asarray(values)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise AggregationError(f"{where}: dtype {arr.dtype} is not a real number type")
    as_float = arr.astype(np.float64)
    if not np.all(np.isfinite(as_float)):
        bad = int(np.flatnonzero(~np.isfinite(as_float.ravel()))[0])
        raise AggregationError(f"{where}: non-finite value (NaN or Inf) at flat position {bad}")
    if as_float.size and float(np.max(np.abs(as_float))) > MAX_ABS:
        raise AggregationError(f"{where}: a coordinate exceeds the bound |x| <= {MAX_ABS:g}")
    return np.rint(as_float * float(SCALE)).astype(np.int64)


def dequantize(fixed: npt.NDArray[np.integer[Any]]) -> FloatArray:
    """Return the float64 value ``q / 2**24`` of a fixed-point array (exact)."""
    return np.asarray(fixed, dtype=np.int64).astype(np.float64) / float(SCALE)


def aggregate_digest(fixed: npt.NDArray[np.integer[Any]]) -> bytes:
    """SHA-256 of the canonical encoding of an int64 fixed-point array (module docstring).

    The encoding carries the shape and the fractional bits, so equal bytes of different shapes
    never collide.
    """
    arr = np.asarray(fixed)
    if not np.issubdtype(arr.dtype, np.integer) or not np.can_cast(arr.dtype, np.int64):
        raise AggregationError(f"aggregate_digest needs an int64 array, not {arr.dtype}")
    if arr.ndim > 255:
        raise AggregationError("aggregate_digest: too many axes")
    h = hashlib.sha256(_DOMAIN)
    h.update(struct.pack("<BB", FRAC_BITS, arr.ndim))
    h.update(struct.pack(f"<{arr.ndim}Q", *arr.shape))
    h.update(np.ascontiguousarray(arr, dtype="<i8").tobytes(order="C"))
    return h.digest()


# --------------------------------------------------------------------------- exact integer maths


def _split(v: FixedArray) -> tuple[FixedArray, FixedArray]:
    return v >> _LIMB_BITS, v & _LIMB_MASK


def _dot_exact(a: FixedArray, b: FixedArray) -> int:
    """Exact inner product of two 1-D int64 arrays with entries ``|x| < 2**46``."""
    total = 0
    for start in range(0, a.shape[0], _CHUNK):
        ah, al = _split(a[start : start + _CHUNK])
        bh, bl = _split(b[start : start + _CHUNK])
        hh = int(np.sum(ah * bh))
        hl = int(np.sum(ah * bl)) + int(np.sum(al * bh))
        ll = int(np.sum(al * bl))
        total += (hh << (2 * _LIMB_BITS)) + (hl << _LIMB_BITS) + ll
    return total


def _sq_norm(v: FixedArray) -> int:
    return _dot_exact(v, v)


def _pairwise_sq_dist(rows: FixedArray) -> list[list[int]]:
    n = rows.shape[0]
    dist = [[0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            d = _sq_norm(rows[i] - rows[j])
            dist[i][j] = dist[j][i] = d
    return dist


def _div_round(total: FixedArray, count: int) -> FixedArray:
    """``total / count`` rounded half up, exactly, in int64."""
    return np.floor_divide(2 * total + count, 2 * count)


def _weighted_mean(rows: FixedArray, weights: Sequence[int]) -> FixedArray:
    """Exact ``round(sum_i w_i * rows_i / sum_i w_i)`` for int weights ``0 <= w_i <= 2**20``.

    The product ``w * q`` would overflow int64, so ``q`` is split as ``h * 2**23 + l`` and the
    quotient assembled from ``sum w h`` and ``sum w l`` with a carried remainder.
    """
    w = np.asarray(weights, dtype=np.int64)
    denom = int(w.sum())
    high, low = _split(rows)
    sum_high = np.sum(w[:, None] * high, axis=0)
    sum_low = np.sum(w[:, None] * low, axis=0)
    q1, r1 = np.divmod(sum_high, denom)
    rest = (r1 << _LIMB_BITS) + sum_low
    result: FixedArray = (q1 << _LIMB_BITS) + np.floor_divide(2 * rest + denom, 2 * denom)
    return result


def _scale(row: FixedArray, factor: float) -> FixedArray:
    """``rint(row * factor)``: one correctly rounded multiplication per coordinate."""
    if factor == 1.0:
        return row.copy()
    return np.rint(row.astype(np.float64) * factor).astype(np.int64)


def _sqrt_ratio(num: int, den: int) -> float:
    """``sqrt(num / den)`` as a correctly rounded chain of IEEE operations (``den > 0``)."""
    return math.sqrt(num / den)


def _lower_median(values: Sequence[int]) -> int:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


# --------------------------------------------------------------------------- input handling


@dataclass(frozen=True)
class _Prepared:
    shape: tuple[int, ...]
    rows: FixedArray  # (n, d), canonical order
    order: tuple[int, ...]  # order[k] = caller's index of canonical row k

    @property
    def n(self) -> int:
        return len(self.order)


def _prepare(updates: Sequence[npt.ArrayLike] | npt.ArrayLike, max_norm: float) -> _Prepared:
    try:
        items: list[Any] = list(updates)  # type: ignore[arg-type]
    except TypeError as exc:
        raise AggregationError("updates must be a sequence of arrays, one per party") from exc
    if not items:
        raise AggregationError("no updates to aggregate")
    if len(items) > MAX_PARTIES:
        raise AggregationError(f"{len(items)} updates exceed the limit of {MAX_PARTIES} parties")
    if not 0 < max_norm <= MAX_ABS:
        raise AggregationError(f"max_norm must be in (0, {MAX_ABS:g}], got {max_norm!r}")
    bound = math.floor(max_norm * SCALE)
    shape: tuple[int, ...] | None = None
    flat: list[FixedArray] = []
    for i, item in enumerate(items):
        try:
            arr = np.asarray(item)
        except (TypeError, ValueError) as exc:
            raise AggregationError(f"party {i}: update is not an array ({exc})") from exc
        if arr.ndim == 0 or arr.size == 0:
            raise AggregationError(f"party {i}: update has shape {arr.shape}, needs >= 1 value")
        if shape is None:
            shape = arr.shape
        elif arr.shape != shape:
            raise AggregationError(f"party {i}: update has shape {arr.shape}, party 0 sent {shape}")
        q = quantize(arr, where=f"party {i}").ravel()
        if _sq_norm(q) > bound * bound:
            raise AggregationError(f"party {i}: update norm exceeds max_norm={max_norm:g}")
        flat.append(q)
    assert shape is not None
    keys = [(aggregate_digest(q), i) for i, q in enumerate(flat)]
    order = tuple(i for _, i in sorted(keys))
    rows = np.stack([flat[i] for i in order])
    return _Prepared(shape=shape, rows=rows, order=order)


def _finish(
    prep: _Prepared,
    fixed_flat: FixedArray,
    *,
    selected: Sequence[int],
    flagged: Sequence[int],
    weights: Sequence[float] | FloatArray,
) -> AggregationResult:
    """Build the result; ``selected``, ``flagged`` and ``weights`` are in canonical order."""
    fixed = fixed_flat.reshape(prep.shape)
    fixed.setflags(write=False)
    agg = dequantize(fixed)
    agg.setflags(write=False)
    w = np.zeros(prep.n, dtype=np.float64)
    for k, value in enumerate(weights):
        w[prep.order[k]] = value
    w.setflags(write=False)
    return AggregationResult(
        aggregate=agg,
        fixed=fixed,
        digest=aggregate_digest(fixed),
        selected=tuple(sorted(prep.order[k] for k in selected)),
        flagged=tuple(sorted(prep.order[k] for k in flagged)),
        weights=w,
    )


def _check_f(
    f: int | None, n: int, default: int, minimum_n: Callable[[int], int], rule: str
) -> int:
    f = default if f is None else f
    if isinstance(f, bool) or not isinstance(f, int) or f < 0:
        raise AggregationError(f"{rule}: f must be a non-negative int, got {f!r}")
    if n < minimum_n(f):
        raise AggregationError(f"{rule} with f={f} needs at least {minimum_n(f)} parties, got {n}")
    return f


def _default_f(n: int) -> int:
    return max(0, (n - 1) // 4)


def _coordinate_credit(
    argsorted: npt.NDArray[np.intp], lo: int, hi: int, n: int
) -> npt.NDArray[np.int64]:
    """How many coordinates each (canonical) row contributes to when ranks ``lo:hi`` are kept."""
    return np.bincount(argsorted[lo:hi].ravel(), minlength=n).astype(np.int64)


def _flag_low_credit(credit: npt.NDArray[np.int64], kept: int, n: int) -> list[int]:
    """Rows kept in fewer than half as many coordinates as an equal share would give."""
    d_times_kept = int(credit.sum())
    if kept == n or d_times_kept == 0:
        return []
    return [k for k in range(n) if 2 * n * int(credit[k]) < d_times_kept]


# --------------------------------------------------------------------------- the rules


def fedavg(
    updates: Sequence[npt.ArrayLike] | npt.ArrayLike, *, max_norm: float = DEFAULT_MAX_NORM
) -> AggregationResult:
    """Mean of the updates with equal weights (FedAvg; no sample-count weighting).

    ``updates`` is a sequence of ``n`` arrays of one shape (or an array of shape ``(n, ...)``).
    """
    prep = _prepare(updates, max_norm)
    n = prep.n
    fixed = _div_round(prep.rows.sum(axis=0), n)
    return _finish(prep, fixed, selected=range(n), flagged=(), weights=[1.0 / n] * n)


def median(
    updates: Sequence[npt.ArrayLike] | npt.ArrayLike, *, max_norm: float = DEFAULT_MAX_NORM
) -> AggregationResult:
    """Coordinate-wise median; for an even ``n`` the mean of the two middle values."""
    prep = _prepare(updates, max_norm)
    n = prep.n
    idx = np.argsort(prep.rows, axis=0, kind="stable")
    ordered = np.take_along_axis(prep.rows, idx, axis=0)
    lo, hi = (n - 1) // 2, n // 2 + 1
    fixed = _div_round(ordered[lo:hi].sum(axis=0), hi - lo)
    credit = _coordinate_credit(idx, lo, hi, n)
    return _result_from_credit(prep, fixed, credit, hi - lo)


def _result_from_credit(
    prep: _Prepared, fixed: FixedArray, credit: npt.NDArray[np.int64], kept: int
) -> AggregationResult:
    n = prep.n
    total = int(credit.sum())
    weights = [int(c) / total for c in credit]
    selected = [k for k in range(n) if credit[k] > 0]
    return _finish(
        prep, fixed, selected=selected, flagged=_flag_low_credit(credit, kept, n), weights=weights
    )


def trimmed_mean(
    updates: Sequence[npt.ArrayLike] | npt.ArrayLike,
    *,
    f: int | None = None,
    max_norm: float = DEFAULT_MAX_NORM,
) -> AggregationResult:
    """Coordinate-wise mean after dropping the ``f`` largest and ``f`` smallest values.

    ``f`` defaults to ``(n - 1) // 4``; needs ``n > 2 f``.
    """
    prep = _prepare(updates, max_norm)
    n = prep.n
    f = _check_f(f, n, _default_f(n), lambda f: 2 * f + 1, "trimmed_mean")
    idx = np.argsort(prep.rows, axis=0, kind="stable")
    ordered = np.take_along_axis(prep.rows, idx, axis=0)
    fixed = _div_round(ordered[f : n - f].sum(axis=0), n - 2 * f)
    credit = _coordinate_credit(idx, f, n - f, n)
    return _result_from_credit(prep, fixed, credit, n - 2 * f)


def _krum_scores(dist: list[list[int]], members: Sequence[int], neighbours: int) -> list[int]:
    scores = []
    for i in members:
        others = sorted(dist[i][j] for j in members if j != i)
        scores.append(sum(others[: max(0, neighbours)]))
    return scores


def _krum_ranking(dist: list[list[int]], members: Sequence[int], f: int) -> list[int]:
    """``members`` sorted by Krum score, ties by canonical position."""
    scores = _krum_scores(dist, members, len(members) - f - 2)
    return [m for _, m in sorted(zip(scores, members, strict=True))]


def krum(
    updates: Sequence[npt.ArrayLike] | npt.ArrayLike,
    *,
    f: int | None = None,
    max_norm: float = DEFAULT_MAX_NORM,
) -> AggregationResult:
    """The single update with the best Krum score (Blanchard et al. 2017).

    A score is the sum of squared L2 distances to the ``n - f - 2`` closest other updates,
    computed exactly in integers. ``f`` (assumed Byzantine parties) defaults to
    ``(n - 1) // 4``; needs ``n >= 2 f + 3``. Every party but the chosen one is flagged.
    """
    return multikrum(updates, f=f, m=1, max_norm=max_norm)


def multikrum(
    updates: Sequence[npt.ArrayLike] | npt.ArrayLike,
    *,
    f: int | None = None,
    m: int | None = None,
    max_norm: float = DEFAULT_MAX_NORM,
) -> AggregationResult:
    """Mean of the ``m`` updates with the best Krum scores (Blanchard et al. 2017).

    ``m`` defaults to ``n - f``; ``m = 1`` is Krum. Unselected parties are flagged.
    """
    prep = _prepare(updates, max_norm)
    n = prep.n
    f = _check_f(f, n, _default_f(n), lambda f: 2 * f + 3, "multikrum")
    m = n - f if m is None else m
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= n:
        raise AggregationError(f"multikrum: m must be an int in [1, {n}], got {m!r}")
    chosen = sorted(_krum_ranking(_pairwise_sq_dist(prep.rows), range(n), f)[:m])
    fixed = _div_round(prep.rows[chosen].sum(axis=0), m)
    weights = [1.0 / m if k in chosen else 0.0 for k in range(n)]
    flagged = [k for k in range(n) if k not in chosen]
    return _finish(prep, fixed, selected=chosen, flagged=flagged, weights=weights)


def bulyan(
    updates: Sequence[npt.ArrayLike] | npt.ArrayLike,
    *,
    f: int | None = None,
    max_norm: float = DEFAULT_MAX_NORM,
) -> AggregationResult:
    """Bulyan over Krum (El Mhamdi et al. 2018).

    1. Select ``theta = n - 2f`` updates by applying Krum repeatedly, each time removing the
       winner from the candidates (scores recomputed on the remaining set).
    2. Per coordinate, average the ``beta = theta - 2f`` selected values closest to the
       coordinate's median over the selection (ties by canonical order).

    ``f`` defaults to ``(n - 3) // 4``; needs ``n >= 4 f + 3``. Parties not chosen in step 1
    are flagged.
    """
    prep = _prepare(updates, max_norm)
    n = prep.n
    f = _check_f(f, n, max(0, (n - 3) // 4), lambda f: 4 * f + 3, "bulyan")
    dist = _pairwise_sq_dist(prep.rows)
    remaining = list(range(n))
    chosen: list[int] = []
    theta, beta = n - 2 * f, n - 4 * f
    while len(chosen) < theta:
        winner = _krum_ranking(dist, remaining, f)[0]
        chosen.append(winner)
        remaining.remove(winner)
    chosen.sort()
    sel = prep.rows[chosen]
    ordered = np.sort(sel, axis=0)
    lo, hi = (theta - 1) // 2, theta // 2 + 1
    med = _div_round(ordered[lo:hi].sum(axis=0), hi - lo)
    idx = np.argsort(np.abs(sel - med), axis=0, kind="stable")[:beta]
    closest = np.take_along_axis(sel, idx, axis=0)
    fixed = _div_round(closest.sum(axis=0), beta)
    credit_sel = np.bincount(idx.ravel(), minlength=theta)
    credit = np.zeros(n, dtype=np.int64)
    credit[chosen] = credit_sel
    total = int(credit.sum())
    weights = [int(c) / total for c in credit]
    flagged = [k for k in range(n) if k not in chosen]
    return _finish(prep, fixed, selected=chosen, flagged=flagged, weights=weights)


def _clip_rows(rows: FixedArray, tau_sq: int) -> tuple[FixedArray, list[bool]]:
    out = rows.copy()
    clipped = []
    for k in range(rows.shape[0]):
        sq = _sq_norm(rows[k])
        over = sq > tau_sq
        if over:
            out[k] = _scale(rows[k], _sqrt_ratio(tau_sq, sq))
        clipped.append(over)
    return out, clipped


def _tau_sq(rows: FixedArray, tau: float | None, rule: str) -> int:
    if tau is None:
        return _lower_median([_sq_norm(r) for r in rows])
    if not (tau >= 0 and math.isfinite(tau)):
        raise AggregationError(f"{rule}: tau must be non-negative and finite, got {tau!r}")
    # the threshold itself goes through the same fixed-point grid as the updates
    return int(np.rint(np.float64(tau) * SCALE)) ** 2


def clip(
    updates: Sequence[npt.ArrayLike] | npt.ArrayLike,
    *,
    tau: float | None = None,
    max_norm: float = DEFAULT_MAX_NORM,
) -> AggregationResult:
    """Scale every update with L2 norm above ``tau`` down to norm ``tau``, then average.

    ``tau`` defaults to the (lower) median of the parties' norms, so at most half the parties
    are clipped and no party can pull the mean by more than ``tau / n``. Clipped parties are
    flagged.
    """
    prep = _prepare(updates, max_norm)
    n = prep.n
    rows, clipped = _clip_rows(prep.rows, _tau_sq(prep.rows, tau, "clip"))
    fixed = _div_round(rows.sum(axis=0), n)
    flagged = [k for k in range(n) if clipped[k]]
    return _finish(prep, fixed, selected=range(n), flagged=flagged, weights=[1.0 / n] * n)


def fltrust(
    updates: Sequence[npt.ArrayLike] | npt.ArrayLike,
    *,
    root: npt.ArrayLike | None = None,
    max_norm: float = DEFAULT_MAX_NORM,
) -> AggregationResult:
    """FLTrust (Cao et al., NDSS 2021) against the server's ``root`` update ``g_0``.

    1. Trust score ``TS_i = ReLU(cos(g_i, g_0))``, held as ``floor(2**20 * TS_i)`` computed
       exactly with ``isqrt``.
    2. Each update is rescaled to the root's norm, ``g_i * ||g_0|| / ||g_i||``.
    3. The aggregate is ``sum_i TS_i g_i' / sum_i TS_i``.

    A party with score 0 (non-positive cosine, or a zero update) is flagged. If every score is
    0 the aggregate is the zero update. Raises :class:`AggregationError` if ``root`` is missing,
    of another shape, or zero.
    """
    if root is None:
        raise AggregationError("fltrust needs the server's root update (root=...)")
    prep = _prepare(updates, max_norm)
    n = prep.n
    root_arr = np.asarray(root)
    if root_arr.shape != prep.shape:
        raise AggregationError(
            f"fltrust: root update has shape {root_arr.shape}, the updates {prep.shape}"
        )
    g0 = quantize(root_arr, where="root update").ravel()
    sq0 = _sq_norm(g0)
    if sq0 > math.floor(max_norm * SCALE) ** 2:
        raise AggregationError(f"fltrust: the root update's norm exceeds max_norm={max_norm:g}")
    if sq0 == 0:
        raise AggregationError("fltrust: the root update is zero, so no direction to trust")
    trust: list[int] = []
    normalised = np.zeros_like(prep.rows)
    for k in range(n):
        row = prep.rows[k]
        dot = _dot_exact(row, g0)
        sq = _sq_norm(row)
        if dot <= 0 or sq == 0:
            trust.append(0)
            continue
        trust.append(math.isqrt((dot * dot << (2 * _TRUST_BITS)) // (sq * sq0)))
        normalised[k] = _scale(row, _sqrt_ratio(sq0, sq))
    total = sum(trust)
    flagged = [k for k in range(n) if trust[k] == 0]
    selected = [k for k in range(n) if trust[k] > 0]
    if total == 0:
        zero = np.zeros(prep.rows.shape[1], dtype=np.int64)
        return _finish(prep, zero, selected=(), flagged=flagged, weights=[0.0] * n)
    fixed = _weighted_mean(normalised, trust)
    return _finish(
        prep, fixed, selected=selected, flagged=flagged, weights=[t / total for t in trust]
    )


def _coordinate_median(rows: FixedArray) -> FixedArray:
    """Coordinate-wise median of ``rows`` (n, d); for an even ``n`` the mean of the two middle
    values, rounded half up."""
    n = rows.shape[0]
    ordered = np.sort(rows, axis=0)
    lo, hi = (n - 1) // 2, n // 2 + 1
    return _div_round(ordered[lo:hi].sum(axis=0), hi - lo)


def robust(
    updates: Sequence[npt.ArrayLike] | npt.ArrayLike,
    *,
    f: int | None = None,
    max_norm: float = DEFAULT_MAX_NORM,
) -> AggregationResult:
    """The default rule: centered clipping around the median, with outlier and
    inner-product filters.

    With ``c`` the coordinate-wise median of the ``n`` updates ``g_i`` and ``r_i = ||g_i - c||``:

    1. Radius. ``tau`` is the (lower) median of the ``r_i``, the spread of the honest
       majority around its centre; an attacker can neither raise it nor the centre much while
       it is a minority (the median's breakdown point is 1/2, Yin et al. 2018).
    2. Far filter. Updates with ``r_i > 3 tau`` are dropped: boosted (scaling) updates,
       noise, sign flips with a large factor, and on IID data label flippers and Fang et
       al.'s Trim attack (whose values sit beyond the honest extremes in every coordinate)
       lie there, while honest updates stayed within about ``2.2 tau`` in our measurements
       on the benchmark, IID and non-IID.
    3. Centered clipping (Karimireddy, He and Jaggi, "Learning from history for Byzantine
       robust optimization", ICML 2021), with the median as the centre: every other update
       becomes ``v_i = c + (g_i - c) min(1, tau / r_i)``, so no party moves the mean by more
       than ``tau / m``.
    4. Inner-product filter. ``ref`` is the mean of the ``v_i``; updates whose inner product
       with ``ref`` is not positive (``<g_i, ref> <= 0``) are dropped. This is the condition
       IPM (Xie et al. 2020) is built to create for the aggregate, and it catches what sits
       near the centre but points backwards: IPM itself, Fang et al.'s Krum attack (``-lambda
       s`` with ``s`` the sign of the honest mean), sign flipping, and the label flippers
       and Trim attackers that step 2 leaves on non-IID data. It is FLTrust's
       ``ReLU(cos)`` trust test (Cao et al. 2021) with a reference estimated from the
       parties' updates instead of a server's root data set, which parties of a ledger
       round do not have.
    5. The aggregate is the mean of the kept ``v_i``, each party with equal weight.

    Why not the previous design (median-norm clipping, Multi-Krum keeping ``n - f``, trimmed
    mean): the attacks that send one vector from every attacker near the centre (IPM, Fang's
    Krum attack, ALIE) have zero mutual distance, so Multi-Krum keeps most or all of them
    and drops honest parties instead, and the trimmed mean then keeps the attackers' central values
    in every coordinate while trimming honest ones, so the attackers' share of the aggregate
    grew from 20 % to up to half. Multi-Krum's fixed ``n - f`` and the trim also cost
    accuracy with no attack at all, on non-IID data most. Here an honest party is dropped
    only beyond ``3 tau`` or pointing away from the robust mean (rare in the benchmark),
    nothing amplifies an accepted attacker beyond ``1 / m``, and what passes both filters
    is bounded by ``tau`` (at most the spread of honest updates).
    The inner-product test is only as good as ``ref``, which accepted attackers move too:
    where the honest signal is weak against the attackers' norm (late rounds in the
    benchmark) Fang's Krum attack can pass it, and then weighs what it would under FedAvg,
    ``1 / m`` per attacker within ``tau`` of the centre. On the FLTrust-setting benchmark
    (MNIST, 100 clients, 20 malicious) the rule stays within 0.008 of attack-free FedAvg
    under every attack, IID and Dirichlet(0.5).

    Exact arithmetic: ``c`` and the means are integer, ``r_i**2`` and the inner products are
    exact Python ints (:func:`_dot_exact`), the clipping factor is one correctly rounded
    ``sqrt`` of an int/int division applied with one multiplication per coordinate
    (:func:`_scale`). ``v_i`` lies between ``c`` and ``g_i`` in every coordinate, so the
    aggregate stays inside the coordinate-wise range of the updates. Step 2 keeps at least
    the party at the median distance; if no update passes step 4, or ``ref`` is zero, step 4
    is skipped, so identical updates (or a single one) aggregate to themselves and the
    weights always sum to 1.

    ``f`` (assumed Byzantine parties, default ``(n - 1) // 4``) is not needed to aggregate:
    the filters estimate from the round who to drop. It is only checked, ``n >= 2 f + 1``,
    the honest majority the median centre needs. Flagged: the parties dropped in step 2 or
    4 (weight 0), and kept parties with ``r_i**2 > 3 tau**2`` (``r_i`` above about ``1.73
    tau``), whose update had to be shrunk by more than 40 % (clipping made them harmless,
    but they are unusual enough to count towards exclusion). Every kept party's weight is
    ``1 / m``.
    """
    prep = _prepare(updates, max_norm)
    n = prep.n
    _check_f(f, n, _default_f(n), lambda f: 2 * f + 1, "robust")
    rows = prep.rows
    center = _coordinate_median(rows)
    offsets = rows - center
    dist_sq = [_sq_norm(offsets[k]) for k in range(n)]
    tau_sq = _lower_median(dist_sq)
    # never empty: the party at the median distance is near
    near = [k for k in range(n) if dist_sq[k] <= _FAR_RATIO**2 * tau_sq]
    clipped = rows.copy()
    for k in near:
        if dist_sq[k] > tau_sq:
            clipped[k] = center + _scale(offsets[k], _sqrt_ratio(tau_sq, dist_sq[k]))
    ref = _div_round(clipped[near].sum(axis=0), len(near))
    kept = near
    if ref.any():
        kept = [k for k in near if _dot_exact(rows[k], ref) > 0] or near
    fixed = _div_round(clipped[kept].sum(axis=0), len(kept))
    share = 1.0 / len(kept)
    chosen = set(kept)
    weights = [share if k in chosen else 0.0 for k in range(n)]
    flagged = [k for k in range(n) if k not in chosen or dist_sq[k] > _FLAG_SQ_RATIO * tau_sq]
    return _finish(prep, fixed, selected=kept, flagged=flagged, weights=weights)


def _reputation(
    updates: Sequence[npt.ArrayLike] | npt.ArrayLike, **options: Any
) -> AggregationResult:
    """:func:`.reputation.reputation` (imported late: that module builds on this one)."""
    from ailedger.federated.reputation import reputation

    return reputation(updates, **options)


#: aggregation rules by name; each takes the updates and keyword options
RULES: dict[str, Callable[..., AggregationResult]] = {
    "fedavg": fedavg,
    "median": median,
    "trimmed_mean": trimmed_mean,
    "krum": krum,
    "multikrum": multikrum,
    "bulyan": bulyan,
    "clip": clip,
    "fltrust": fltrust,
    "default": robust,
    "reputation": _reputation,
}
