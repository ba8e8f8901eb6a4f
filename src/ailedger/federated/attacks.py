"""Poisoning attacks on federated learning, for evaluating the rules in :mod:`.aggregate`.

Model-update attacks share one calling convention, ``attack(own, benign, *, rng, **params)``:
``own`` (shape ``(m, d)``) holds the updates the ``m`` malicious parties would have sent had
they been honest, ``benign`` (shape ``(b, d)``) the benign parties' updates, known to the
attacker in the full-knowledge setting; the result has shape ``(m, d)``. Attacks that need
randomness draw it from ``rng`` only, so a seeded :class:`numpy.random.Generator` reproduces
them. Sources:

- sign flipping and Gaussian noise: the Byzantine baselines of Blanchard et al. 2017 and
  Fang et al. 2020;
- scaling: model-replacement boosting, Bagdasaryan et al. 2020, "How to backdoor federated
  learning" (AISTATS);
- ALIE: Baruch et al. 2019, "A little is enough: circumventing defenses for distributed
  learning" (NeurIPS), ``z_max`` from their §3;
- IPM: Xie et al. 2020, "Fall of empires: breaking Byzantine-tolerant SGD by inner product
  manipulation" (UAI);
- Krum and Trim attacks, full knowledge: Fang et al. 2020, "Local model poisoning attacks to
  Byzantine-robust federated learning" (USENIX Security), §3.3 and §3.4; applied to updates
  (the global model before the round is the origin);
- free riding: Lin et al. 2019, "Free-riders in federated learning: attacks and defenses";
- reference-aware: an adaptive attack on reputation built on a public reference update
  (:mod:`.reputation`, FLTrust's trust signal), in the spirit of the adaptive attacks that
  Cao et al. 2021 (§6) and Fang et al. 2020 build against a known defence;
- sleeper: a party that behaves for ``k`` rounds and then attacks, the "on-off" attack on
  trust systems (Sun, Han and Liu 2008, "Defense of trust management vulnerabilities in
  distributed networks", IEEE Communications Magazine); once awake it sign-flips, the
  strongest standard attack against the reputation rule on the cross-silo sweep;
- label flipping (a data attack, so not in :data:`ATTACKS`): Tolpegin et al. 2020, "Data
  poisoning attacks against federated learning systems" (ESORICS).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from ailedger.errors import AggregationError, InputError
from ailedger.federated.aggregate import krum

__all__ = [
    "ATTACKS",
    "alie",
    "alie_z",
    "fang_krum",
    "fang_trim",
    "free_rider",
    "gaussian_noise",
    "ipm",
    "label_flip",
    "reference_aware",
    "scaling",
    "sign_flip",
    "sleeper",
    "sleeper_wake",
]

FloatArray = npt.NDArray[np.float64]


def _pair(own: npt.ArrayLike, benign: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    o = np.asarray(own, dtype=np.float64)
    b = np.asarray(benign, dtype=np.float64)
    if o.ndim != 2 or b.ndim != 2:
        raise InputError(f"own and benign must be 2-D (parties, d), got {o.shape} and {b.shape}")
    if o.shape[1] != b.shape[1]:
        raise InputError(f"own has d={o.shape[1]}, benign has d={b.shape[1]}")
    return o, b


def _need_benign(b: FloatArray, attack: str, at_least: int = 1) -> None:
    if b.shape[0] < at_least:
        raise InputError(f"{attack} needs at least {at_least} benign update(s), got {b.shape[0]}")


def sign_flip(
    own: npt.ArrayLike,
    benign: npt.ArrayLike,
    *,
    rng: np.random.Generator | None = None,
    scale: float = 1.0,
) -> FloatArray:
    """Send ``-scale`` times the honest update."""
    o, _ = _pair(own, benign)
    return -scale * o


def scaling(
    own: npt.ArrayLike,
    benign: npt.ArrayLike,
    *,
    rng: np.random.Generator | None = None,
    factor: float = 10.0,
) -> FloatArray:
    """Boost the honest (or backdoored) update by ``factor``, as model replacement does with
    ``factor = n / eta`` to survive averaging."""
    o, _ = _pair(own, benign)
    return factor * o


def gaussian_noise(
    own: npt.ArrayLike,
    benign: npt.ArrayLike,
    *,
    rng: np.random.Generator,
    sigma: float = 1.0,
) -> FloatArray:
    """Send independent ``N(0, sigma**2)`` noise in place of each update."""
    o, _ = _pair(own, benign)
    return rng.normal(0.0, sigma, size=o.shape)


def alie_z(n: int, m: int) -> float:
    """Baruch et al.'s ``z_max = Phi^-1((n - s) / n)`` with ``s = floor(n / 2 + 1) - m``.

    ``n`` parties in all, ``m`` of them malicious; ``s`` is how many benign parties the
    attackers must seem closer than for a majority-based rule to accept them.
    """
    if not 0 < m < n:
        raise InputError(f"ALIE needs 0 < m < n, got n={n}, m={m}")
    s = n // 2 + 1 - m
    p = (n - s) / n
    if not 0 < p < 1:
        raise InputError(f"ALIE z_max undefined for n={n}, m={m} (p={p})")
    return NormalDist().inv_cdf(p)


def alie(
    own: npt.ArrayLike,
    benign: npt.ArrayLike,
    *,
    rng: np.random.Generator | None = None,
    z: float | None = None,
) -> FloatArray:
    """ "A little is enough": every attacker sends ``mu - z * sigma`` per coordinate.

    ``mu`` and ``sigma`` are the coordinate-wise mean and (population) standard deviation of
    the benign updates; ``z`` defaults to :func:`alie_z` for ``n = m + b`` parties.
    """
    o, b = _pair(own, benign)
    _need_benign(b, "alie", 2)
    m = o.shape[0]
    z = alie_z(m + b.shape[0], m) if z is None else z
    crafted = b.mean(axis=0) - z * b.std(axis=0)
    return np.tile(crafted, (m, 1))


def ipm(
    own: npt.ArrayLike,
    benign: npt.ArrayLike,
    *,
    rng: np.random.Generator | None = None,
    epsilon: float = 0.5,
) -> FloatArray:
    """Inner-product manipulation: every attacker sends ``-epsilon`` times the benign mean, so
    the aggregate's inner product with the true gradient turns negative if enough get in."""
    o, b = _pair(own, benign)
    _need_benign(b, "ipm")
    return np.tile(-epsilon * b.mean(axis=0), (o.shape[0], 1))


def _direction(updates: FloatArray) -> FloatArray:
    """Fang et al.'s ``s``: the sign of each coordinate's change without attack."""
    out: FloatArray = np.sign(updates.mean(axis=0))
    return out


def fang_krum(
    own: npt.ArrayLike,
    benign: npt.ArrayLike,
    *,
    rng: np.random.Generator | None = None,
    f: int | None = None,
    threshold: float = 1e-5,
    spread: float = 0.0,
) -> FloatArray:
    """Fang et al.'s full-knowledge attack on Krum (§3.3), in update space.

    1. ``s`` is the sign of the mean of all honest updates (own and benign).
    2. ``lambda`` starts at Fang et al.'s upper bound: ``1 / ((n - 2c - 1) sqrt(d))`` times the
       least, over benign ``i``, sum of distances to the ``n - c - 2`` nearest benign updates,
       plus ``1 / sqrt(d)`` times the largest benign norm (distance to the global model).
    3. The first attacker sends ``-lambda s``, the others points within ``spread`` of it (the
       same point by default); while Krum (:func:`.aggregate.krum` with ``f`` assumed
       Byzantine, default ``m``) does not choose one of them, ``lambda`` is halved, down to
       ``threshold``.
    """
    o, b = _pair(own, benign)
    c, nb = o.shape[0], b.shape[0]
    n, d = c + nb, o.shape[1]
    f = c if f is None else f
    if c < 1 or n - 2 * c - 1 <= 0:
        raise InputError(f"fang_krum needs n > 2c + 1, got n={n}, c={c}")
    s = _direction(np.vstack([o, b]))
    dist = np.sqrt(((b[:, None, :] - b[None, :, :]) ** 2).sum(axis=2))
    k = n - c - 2
    nearest = np.sort(dist, axis=1)[:, 1 : k + 1].sum(axis=1)
    lam = float(nearest.min()) / ((n - 2 * c - 1) * math.sqrt(d))
    lam += float(np.linalg.norm(b, axis=1).max()) / math.sqrt(d)
    offsets = np.zeros_like(o)
    if spread > 0 and rng is not None and c > 1:
        offsets[1:] = rng.uniform(-spread, spread, size=(c - 1, d)) / math.sqrt(d)
    while True:
        crafted: FloatArray = -lam * s + offsets
        try:
            chosen = krum(np.vstack([crafted, b]), f=f).selected
        except AggregationError:
            chosen = ()
        if (chosen and chosen[0] < c) or lam / 2 < threshold:
            return crafted
        lam /= 2


def fang_trim(
    own: npt.ArrayLike,
    benign: npt.ArrayLike,
    *,
    rng: np.random.Generator,
    b: float = 2.0,
) -> FloatArray:
    """Fang et al.'s full-knowledge attack on trimmed mean and median (§3.4), in update space.

    With ``s_j`` the sign of coordinate ``j``'s honest mean and ``w_max,j``, ``w_min,j`` the
    honest extremes, each attacker draws coordinate ``j`` uniformly from

    - ``s_j = -1``: ``[w_max,j, b w_max,j]`` if ``w_max,j > 0`` else ``[w_max,j / b, w_max,j]``;
    - ``s_j = +1`` (and ``0``): ``[w_min,j / b, w_min,j]`` if ``w_min,j > 0`` else
      ``[b w_min,j, w_min,j]``,

    so every value sits just beyond the honest range, on the side opposite to the change.
    """
    o, ben = _pair(own, benign)
    if b <= 1:
        raise InputError(f"fang_trim needs b > 1, got {b}")
    honest = np.vstack([o, ben])
    s = _direction(honest)
    w_max, w_min = honest.max(axis=0), honest.min(axis=0)
    up_lo = np.where(w_max > 0, w_max, w_max / b)
    up_hi = np.where(w_max > 0, b * w_max, w_max)
    down_lo = np.where(w_min > 0, w_min / b, b * w_min)
    down_hi = w_min
    lo = np.where(s < 0, up_lo, down_lo)
    hi = np.where(s < 0, up_hi, down_hi)
    u = rng.uniform(0.0, 1.0, size=o.shape)
    out: FloatArray = lo + u * (hi - lo)
    return out


def free_rider(
    own: npt.ArrayLike,
    benign: npt.ArrayLike,
    *,
    rng: np.random.Generator | None = None,
    previous: npt.ArrayLike | None = None,
) -> FloatArray:
    """A party that trains nothing: it sends the zero update or, given ``previous`` (the last
    global update, or the last global model where models are exchanged), a copy of it."""
    o, _ = _pair(own, benign)
    if previous is None:
        return np.zeros_like(o)
    prev = np.asarray(previous, dtype=np.float64)
    if prev.shape != (o.shape[1],):
        raise InputError(f"previous has shape {prev.shape}, expected ({o.shape[1]},)")
    return np.tile(prev, (o.shape[0], 1))


def reference_aware(
    own: npt.ArrayLike,
    benign: npt.ArrayLike,
    *,
    rng: np.random.Generator | None = None,
    reference: npt.ArrayLike | None = None,
    cosine: float = 0.05,
    boost: float = 2.0,
) -> FloatArray:
    """An attacker who knows the reference update ``g_0`` of a reputation rule.

    With ``r = g_0 / ||g_0||`` and ``h`` the mean of the benign updates, every attacker sends

        ``x = N (cosine * r + sqrt(1 - cosine**2) * u)``,  ``u = -h_perp / ||h_perp||``,

    where ``h_perp = h - <h, r> r`` is the part of the honest direction the reference does not
    see, and ``N = boost`` times the median benign norm. So ``cos(x, g_0) = cosine`` (slightly
    positive: its cosine reputation only grows) while ``x`` pushes against the honest
    direction as far as that constraint allows. ``boost = 2`` matches the reputation rule's
    clipping bound (twice the median norm). If ``h`` is parallel to ``r`` the attack sends
    ``N * cosine * r``. Raises :class:`InputError` without a non-zero ``reference``.
    """
    o, b = _pair(own, benign)
    _need_benign(b, "reference_aware")
    if reference is None:
        raise InputError("reference_aware needs the reference update (reference=...)")
    g0 = np.asarray(reference, dtype=np.float64).ravel()
    if g0.shape != (o.shape[1],):
        raise InputError(f"reference has shape {g0.shape}, expected ({o.shape[1]},)")
    if not 0 < cosine < 1 or boost <= 0:
        raise InputError(
            f"reference_aware needs 0 < cosine < 1 and boost > 0, got {cosine}, {boost}"
        )
    norm0 = float(np.linalg.norm(g0))
    if norm0 == 0 or not math.isfinite(norm0):
        raise InputError("reference_aware: the reference update is zero or not finite")
    r = g0 / norm0
    h = b.mean(axis=0)
    h_perp = h - float(h @ r) * r
    size = boost * float(np.median(np.linalg.norm(b, axis=1)))
    perp_norm = float(np.linalg.norm(h_perp))
    if perp_norm == 0:
        crafted = size * cosine * r
    else:
        crafted = size * (cosine * r - math.sqrt(1 - cosine**2) * h_perp / perp_norm)
    return np.tile(crafted, (o.shape[0], 1))


def sleeper_wake(rounds: int) -> int:
    """Default first attacking round of :func:`sleeper` for a run of ``rounds`` rounds: a
    third of them spent behaving (at least one)."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise InputError(f"sleeper needs rounds >= 1, got {rounds!r}")
    return max(1, rounds // 3)


def sleeper(
    own: npt.ArrayLike,
    benign: npt.ArrayLike,
    *,
    rng: np.random.Generator | None = None,
    round_no: int | None = None,
    wake: int | None = None,
    rounds: int | None = None,
    then: str = "sign_flip",
    **params: object,
) -> FloatArray:
    """Behave for ``wake`` rounds, then attack with ``ATTACKS[then]`` (default sign flipping).

    ``round_no`` is the current round (0-based). Before round ``wake`` the attackers send
    ``own`` unchanged (their honest updates), so any reputation built from agreement with
    the honest direction grows; from round ``wake`` on they send
    ``ATTACKS[then](own, benign, rng=rng, **params)``. ``wake`` defaults to
    :func:`sleeper_wake` of ``rounds`` (a third of the run). Sign flipping is the default
    because it is the standard attack that hurts the reputation rule most on the cross-silo
    sweep (``benchmarks/federated.py --cross-silo``). Raises :class:`InputError` without
    ``round_no``, without ``wake`` or ``rounds``, or for an unknown or recursive ``then``.
    """
    o, _ = _pair(own, benign)
    if isinstance(round_no, bool) or not isinstance(round_no, int) or round_no < 0:
        raise InputError(f"sleeper needs the current round (round_no >= 0), got {round_no!r}")
    if wake is None:
        if rounds is None:
            raise InputError("sleeper needs wake= (first attacking round) or rounds=")
        wake = sleeper_wake(rounds)
    if isinstance(wake, bool) or not isinstance(wake, int) or wake < 0:
        raise InputError(f"sleeper needs wake >= 0, got {wake!r}")
    if then == "sleeper" or then not in ATTACKS:
        raise InputError(
            f"sleeper: unknown attack {then!r} to wake into; use one of "
            f"{', '.join(a for a in ATTACKS if a != 'sleeper')}"
        )
    if round_no < wake:
        return o.copy()
    return ATTACKS[then](o, benign, rng=rng, **params)


def label_flip(
    labels: npt.ArrayLike,
    num_classes: int,
    *,
    mapping: dict[int, int] | None = None,
) -> npt.NDArray[np.int64]:
    """Poison labels: class ``y`` becomes ``num_classes - 1 - y``, or ``mapping[y]`` for the
    classes in ``mapping`` (others kept), e.g. ``{source: target}`` for a targeted flip."""
    y = np.asarray(labels)
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"labels must be integers, got {y.dtype}")
    if num_classes < 2:
        raise InputError(f"num_classes must be >= 2, got {num_classes}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise InputError(f"labels must lie in [0, {num_classes})")
    y = y.astype(np.int64)
    if mapping is None:
        return num_classes - 1 - y
    table = np.arange(num_classes, dtype=np.int64)
    for src, dst in mapping.items():
        if not (0 <= src < num_classes and 0 <= dst < num_classes):
            raise InputError(f"mapping {src} -> {dst} leaves [0, {num_classes})")
        table[src] = dst
    flipped: npt.NDArray[np.int64] = table[y]
    return flipped


#: model-update attacks by name; each is ``attack(own, benign, *, rng, **params)``
ATTACKS: dict[str, Callable[..., FloatArray]] = {
    "sign_flip": sign_flip,
    "scaling": scaling,
    "gaussian": gaussian_noise,
    "alie": alie,
    "ipm": ipm,
    "fang_krum": fang_krum,
    "fang_trim": fang_trim,
    "free_rider": free_rider,
    "reference_aware": reference_aware,
    "sleeper": sleeper,
}
