"""Adaptive phase windows for the ``TrainingTask`` rounds (commit, reveal, attest, in blocks).

Today a task fixes its three windows when it is created (40 blocks each by default,
:class:`ailedger.federated.protocol.TaskSpec`). A phase closes early once every active party
acted, so a fixed window costs time only when someone is silent, and then it costs the whole
window, every round; a window that is too short drops slow honest parties instead.

:class:`AdaptiveTiming` learns the windows from what it observes:

1. each party's latency per phase, in blocks from the phase's start to the block that included
   its transaction, is kept as an exponentially decayed sample (weight ``decay**age`` in
   rounds), and its high ``quantile`` is read from the weighted sample;
2. a party counts as *live* if it acted in a phase within the last ``forget`` rounds; a window
   covers every live party: the largest live party's quantile, times ``1 + slack``, plus
   ``margin`` blocks, and never less than what the ``quorum``-th fastest party needs (the
   attest phase needs only a quorum, so its window is the ``quorum``-th smallest quantile);
3. on a timeout in which a live party missed its phase, that phase's window is multiplied by
   ``growth`` (PBFT doubles the view-change timeout after each failed view, Castro and
   Liskov, OSDI 1999, §4.4; Tendermint raises ``timeout_propose`` by ``timeout_propose_delta``
   each round, Buchman, Kwon and Milosevic, arXiv:1807.04938, 2018); the extra factor then
   shrinks by ``shrink`` each round that passes without a miss, so windows fall back slowly;
4. windows stay within ``[minimum, maximum]`` blocks; until every live party has been seen
   ``warmup`` times in a phase, its window is at least the ``initial`` (fixed) one;
5. a party that acted in no phase for ``exclude_after`` rounds is proposed for exclusion
   (:meth:`AdaptiveTiming.to_exclude`): ``TrainingTask.vote_exclude`` lowers the task's
   ``active`` count once a quorum voted, and the contract closes commit, reveal and attest
   early once ``active`` parties acted, so an excluded silent party no longer costs a whole
   window every round. This is how consensus engines stop waiting on a crashed replica:
   they remove it from the validator set (a reconfiguration), rather than time it out
   forever. Exclusion never takes the active parties below the quorum.

The windows are in blocks; :meth:`AdaptiveTiming.observe_block_time` keeps a decayed estimate
of the block interval so a caller can also convert a latency measured in seconds.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ailedger.errors import InputError

__all__ = [
    "PHASES",
    "AdaptiveTiming",
    "PhaseWindows",
    "RoundsOutcome",
    "simulate_rounds",
    "weighted_quantile",
]

PHASES = ("commit", "reveal", "attest")


@dataclass(frozen=True, slots=True)
class PhaseWindows:
    """Window lengths in blocks for one round (the ``TaskSpec``/contract fields)."""

    commit_blocks: int
    reveal_blocks: int
    attest_blocks: int

    def of(self, phase: str) -> int:
        """The window of ``phase`` (one of :data:`PHASES`)."""
        return int(getattr(self, f"{_check_phase(phase)}_blocks"))


def _check_phase(phase: str) -> str:
    if phase not in PHASES:
        raise InputError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    return phase


def weighted_quantile(values: Iterable[float], weights: Iterable[float], q: float) -> float:
    """The ``q`` quantile of ``values`` weighted by ``weights`` (the smallest value whose
    cumulative weight reaches ``q`` of the total). Raises :class:`InputError` when empty."""
    pairs = sorted((float(v), float(w)) for v, w in zip(values, weights, strict=True) if w > 0)
    if not pairs:
        raise InputError("no weighted values to take a quantile of")
    total = sum(w for _, w in pairs)
    running = 0.0
    for value, weight in pairs:
        running += weight
        if running >= q * total - 1e-12:
            return value
    return pairs[-1][0]


class AdaptiveTiming:
    """Learn commit/reveal/attest windows (blocks) for a task's rounds; see the module doc.

    Call :meth:`observe` for each party that acted in a phase (its latency in blocks from the
    phase's start), :meth:`timeout` when a phase ran to its deadline with live parties
    missing, :meth:`end_round` once per round, and read :meth:`windows` for the next round.
    """

    def __init__(
        self,
        parties: Iterable[str],
        *,
        quorum: int,
        initial: PhaseWindows | None = None,
        quantile: float = 0.999,
        slack: float = 0.2,
        margin: int = 2,
        decay: float = 0.95,
        memory: int = 64,
        forget: int = 3,
        growth: float = 1.5,
        shrink: float = 0.85,
        minimum: int = 2,
        maximum: int = 2**16,
        warmup: int = 5,
        exclude_after: int | None = 3,
    ) -> None:
        self.parties = tuple(dict.fromkeys(parties))
        if not self.parties:
            raise InputError("no parties given")
        if not 1 <= quorum <= len(self.parties):
            raise InputError(f"quorum must lie in [1, {len(self.parties)}], got {quorum}")
        if not 0.5 <= quantile <= 1.0 or slack < 0 or margin < 0:
            raise InputError("quantile must lie in [0.5, 1], slack and margin be non-negative")
        if not 0.0 < decay <= 1.0 or not 0.0 < shrink <= 1.0 or growth < 1.0:
            raise InputError("decay and shrink must lie in (0, 1], growth be at least 1")
        if not 1 <= minimum <= maximum <= 2**32 or memory < 1 or forget < 1:
            raise InputError("need 1 <= minimum <= maximum <= 2**32, memory and forget >= 1")
        if exclude_after is not None and exclude_after < 1:
            raise InputError(f"exclude_after must be at least 1 round or None, got {exclude_after}")
        self.exclude_after = exclude_after
        self._known = frozenset(self.parties)
        self.quorum = quorum
        self.initial = initial or PhaseWindows(40, 40, 40)
        self.quantile = quantile
        self.slack = slack
        self.margin = margin
        self.decay = decay
        self.forget = forget
        self.growth = growth
        self.shrink = shrink
        self.minimum = minimum
        self.warmup = warmup
        self.maximum = maximum
        self.round = 0
        self._samples: dict[tuple[str, str], deque[tuple[int, float]]] = {
            (p, ph): deque(maxlen=memory) for p in self.parties for ph in PHASES
        }
        self._last_seen: dict[tuple[str, str], int] = {}
        self._backoff = dict.fromkeys(PHASES, 1.0)
        self.block_time: float | None = None

    # -- observations ------------------------------------------------------------------------

    def observe(self, party: str, phase: str, latency_blocks: float) -> None:
        """``party`` acted in ``phase`` ``latency_blocks`` blocks after the phase started."""
        key = (self._check_party(party), _check_phase(phase))
        if not math.isfinite(latency_blocks) or latency_blocks < 0:
            raise InputError(
                f"latency must be a finite non-negative number of blocks, got {latency_blocks}"
            )
        self._samples[key].append((self.round, float(latency_blocks)))
        self._last_seen[key] = self.round

    def timeout(self, phase: str, missing: Iterable[str]) -> None:
        """``phase`` reached its deadline without ``missing``; grow its window if a live party
        was among them (a silent party's absence is no reason to wait longer)."""
        _check_phase(phase)
        if any(self._live(self._check_party(p), phase) for p in missing):
            self._backoff[phase] = min(self._backoff[phase] * self.growth, 2.0**20)

    def end_round(self) -> None:
        """Close a round: extra backoff shrinks toward 1 (slowly, by ``shrink``)."""
        self.round += 1
        for phase in PHASES:
            self._backoff[phase] = max(1.0, self._backoff[phase] * self.shrink)

    def observe_block_time(self, seconds: float) -> None:
        """One observed block interval (seconds); kept as an exponentially weighted mean."""
        if not math.isfinite(seconds) or seconds <= 0:
            raise InputError(f"block time must be positive seconds, got {seconds}")
        a = 1.0 - self.decay
        self.block_time = (
            seconds if self.block_time is None else (1 - a) * self.block_time + a * seconds
        )

    def to_blocks(self, seconds: float) -> float:
        """A latency in seconds as blocks, with the learned block time (error before any)."""
        if self.block_time is None:
            raise InputError("no block time observed yet")
        return seconds / self.block_time

    # -- the windows -------------------------------------------------------------------------

    def party_quantile(self, party: str, phase: str) -> float | None:
        """The decayed ``quantile`` of ``party``'s latency in ``phase`` (None before any).

        The larger of the weighted empirical quantile and a log-normal one (decayed mean and
        deviation of the log latencies): a few recent samples alone underestimate a tail.
        """
        samples = self._samples[(self._check_party(party), _check_phase(phase))]
        if not samples:
            return None
        weights = [self.decay ** (self.round - r) for r, _ in samples]
        values = [v for _, v in samples]
        empirical = weighted_quantile(values, weights, self.quantile)
        if len(samples) < 3:
            return empirical
        logs = [math.log(max(v, 0.5)) for v in values]
        total = sum(weights)
        mean = sum(w * x for w, x in zip(weights, logs, strict=True)) / total
        var = sum(w * (x - mean) ** 2 for w, x in zip(weights, logs, strict=True)) / total
        z = statistics.NormalDist().inv_cdf(min(self.quantile, 0.9999))
        return max(empirical, math.exp(mean + z * math.sqrt(var)))

    def window(self, phase: str) -> int:
        """The window (blocks) for ``phase`` in the next round."""
        _check_phase(phase)
        live = [
            q
            for p in self.parties
            if self._live(p, phase) and (q := self.party_quantile(p, phase)) is not None
        ]
        if len(live) < self.quorum:
            base = float(self.initial.of(phase))
        else:
            live.sort()
            need = live[self.quorum - 1] if phase == "attest" else live[-1]
            base = need * (1.0 + self.slack) + self.margin
            if any(
                len(self._samples[(p, phase)]) < self.warmup
                for p in self.parties
                if self._live(p, phase)
            ):
                base = max(base, float(self.initial.of(phase)))
        blocks = math.ceil(base * self._backoff[phase])
        return int(min(max(blocks, self.minimum), self.maximum))

    def windows(self) -> PhaseWindows:
        """The three windows (blocks) for the next round."""
        return PhaseWindows(*(self.window(ph) for ph in PHASES))

    def live(self, phase: str) -> tuple[str, ...]:
        """Parties that acted in ``phase`` within the last ``forget`` rounds."""
        return tuple(p for p in self.parties if self._live(p, _check_phase(phase)))

    def to_exclude(self, among: Iterable[str] | None = None) -> tuple[str, ...]:
        """Parties of ``among`` (default: all) that acted in no phase in the last
        ``exclude_after`` rounds, to vote out; at most as many as keep ``quorum`` of ``among``.
        Empty when ``exclude_after`` is None."""
        pool = self.parties if among is None else tuple(self._check_party(p) for p in among)
        if self.exclude_after is None or self.round < self.exclude_after:
            return ()
        silent = []
        for p in pool:
            seen = [self._last_seen.get((p, ph)) for ph in PHASES]
            last = max((r for r in seen if r is not None), default=None)
            if last is None or self.round - last > self.exclude_after:
                silent.append(p)
        return tuple(silent[: max(0, len(pool) - self.quorum)])

    def _live(self, party: str, phase: str) -> bool:
        seen = self._last_seen.get((party, phase))
        return seen is not None and self.round - seen < self.forget

    def _check_party(self, party: str) -> str:
        if party not in self._known:
            raise InputError(f"unknown party {party!r}")
        return party


# -- simulation ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoundsOutcome:
    """What a run of simulated rounds cost and whom it dropped."""

    rounds: int
    blocks: int
    """Blocks the rounds took in all (phases plus one block per round to advance)."""
    honest_missed: int
    """Actions of parties that did act, but after their phase's deadline (commit, reveal; an
    attestation only when the round then failed for want of a quorum)."""
    failed_rounds: int
    round_blocks: tuple[int, ...] = ()
    """Blocks each round took."""

    def rounds_per_hour(self, block_time: float) -> float:
        """Rounds per hour at ``block_time`` seconds per block."""
        return 3600.0 * self.rounds / (self.blocks * block_time) if self.blocks else 0.0


def simulate_rounds(
    latencies: Sequence[Sequence[Sequence[float]]],
    *,
    quorum: int,
    policy: PhaseWindows | AdaptiveTiming,
) -> RoundsOutcome:
    """Run rounds with the contract's phase rules under fixed or adaptive windows.

    ``latencies[r][i][k]`` is how many blocks party ``i`` needs in phase ``k`` (commit, reveal,
    attest) of round ``r``; ``math.inf`` for a silent party. As in ``TrainingTask``: commit
    closes early once every party committed, reveal once every committer revealed, attest as
    soon as ``quorum`` attested (the simulation has every honest party attest the same digest);
    a phase otherwise lasts its whole window, and a round failed if fewer than ``quorum``
    attested in time. An adaptive policy observes every finite latency, also late ones: a late
    transaction still lands in a block (reverted), which dates it; after each round the parties
    it proposes (:meth:`AdaptiveTiming.to_exclude`) are excluded from the later rounds, as a
    quorum's ``vote_exclude`` does (an excluded party that acts again counts as missed).
    """
    if not latencies:
        raise InputError("no rounds to simulate")
    adaptive = policy if isinstance(policy, AdaptiveTiming) else None
    names = (
        adaptive.parties
        if adaptive is not None
        else tuple(str(i) for i in range(len(latencies[0])))
    )
    blocks = missed = failed = 0
    per_round: list[int] = []
    excluded: set[int] = set()
    for row in latencies:
        before = blocks
        if len(row) != len(names) or any(len(cell) != len(PHASES) for cell in row):
            raise InputError(f"each round needs {len(names)} parties x {len(PHASES)} phases")
        windows = adaptive.windows() if adaptive is not None else policy
        assert isinstance(windows, PhaseWindows)
        members = [i for i in range(len(names)) if i not in excluded]
        missed += sum(1 for i in excluded if math.isfinite(float(row[i][0])))
        acting = list(members)
        for k, phase in enumerate(PHASES):
            window = windows.of(phase)
            lat = {i: float(row[i][k]) for i in acting}
            on_time = [i for i in acting if lat[i] <= window]
            late = [i for i in acting if window < lat[i] < math.inf]
            if phase == "attest":
                times = sorted(lat[i] for i in on_time)
                done = len(times) >= quorum
                blocks += math.ceil(times[quorum - 1]) if done else window
                if not done:
                    failed += 1
                    missed += len(late)
            else:
                everyone = len(on_time) == len(acting)
                blocks += (
                    math.ceil(max((lat[i] for i in on_time), default=0.0)) if everyone else window
                )
                missed += len(late)
            if adaptive is not None:
                for i in acting:
                    if lat[i] < math.inf:
                        adaptive.observe(names[i], phase, lat[i])
                if len(on_time) < len(acting) and phase != "attest":
                    adaptive.timeout(phase, [names[i] for i in acting if i not in on_time])
            if phase == "commit":
                acting = on_time
            elif phase == "reveal":
                acting = [i for i in members if math.isfinite(float(row[i][2]))]
        blocks += 1
        per_round.append(blocks - before)
        if adaptive is not None:
            adaptive.end_round()
            out = adaptive.to_exclude([names[i] for i in members])
            excluded.update(i for i in members if names[i] in out)
    return RoundsOutcome(
        rounds=len(latencies),
        blocks=blocks,
        honest_missed=missed,
        failed_rounds=failed,
        round_blocks=tuple(per_round),
    )
