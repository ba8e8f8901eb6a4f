"""Adaptive phase windows of a real task, learned from the chain's record of its rounds.

A task whose spec says ``timing: "adaptive"`` lets its parties change the commit, reveal and
attest windows (blocks) while it runs, with no central authority
(``TrainingTask.propose_windows``: a quorum of participants proposing the same three windows
in one round makes them the windows of every round from the next one on). For that to work,
every honest party must compute the *same* windows; so each one learns them only from what
the chain recorded of the rounds already closed, never from its own clock or view:

1. for each closed round, in order (:class:`ChainTiming.close`), read its schedule and the
   block that included each party's commit, reveal and attestation
   (:meth:`~ailedger.ledger.training.TrainingTask.round_record`);
2. a party's latency in a phase is the number of blocks from the phase's start to that
   block: commit from the round's start, reveal from the end of the commit phase, attest
   from the end of the reveal phase (after any early close, as the last ``Schedule`` event
   of the round says); each is an :meth:`AdaptiveTiming.observe` of
   :mod:`ailedger.sentinel.timing` (the estimator, with its sources: PBFT's and
   Tendermint's growing timeouts);
3. a commit phase in which an active party (one not excluded when the round started) did
   not commit, or a reveal phase in which a committer did not reveal, is an
   :meth:`AdaptiveTiming.timeout` with those parties missing (it lengthens the window only
   if one of them was live, i.e. a slow honest party, not a silent one);
4. :meth:`ChainTiming.proposal` returns the estimator's windows when they differ enough
   from the windows in effect (hysteresis, below), else None; :meth:`ChainTiming.to_exclude`
   names the parties silent for ``exclude_after`` rounds, for the exclusion vote.

Hysteresis: the learned windows are proposed only if some phase's learned window differs
from the one in effect by at least :data:`MIN_CHANGE_BLOCKS` blocks *and* by at least
:data:`MIN_CHANGE_FRACTION` of it, so a window that only jitters by a block or two is never
re-proposed (each proposal costs a transaction, and a change needs a quorum to agree).
A transaction refused before it was sent, or one that reverted, leaves no trace on chain, so
a party that missed a phase is seen only as missing (step 3), never with its latency.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from ailedger.errors import InputError
from ailedger.ledger.training import MAX_PHASE_BLOCKS, RoundRecord, TrainingTask, Windows
from ailedger.sentinel.timing import AdaptiveTiming, PhaseWindows

__all__ = [
    "MIN_CHANGE_BLOCKS",
    "MIN_CHANGE_FRACTION",
    "WARMUP_ROUNDS",
    "ChainTiming",
    "differs_enough",
    "observe_round",
]

#: a learned window must differ from the one in effect by at least this many blocks ...
MIN_CHANGE_BLOCKS = 2
#: ... and by at least this fraction of it, to be proposed
MIN_CHANGE_FRACTION = 0.25
#: rounds a live party must be seen in before the windows may fall below the task's initial
WARMUP_ROUNDS = 3


def observe_round(timing: AdaptiveTiming, record: RoundRecord, active: Iterable[str]) -> None:
    """Feed one closed round's chain record to ``timing`` (module docstring, steps 2-3) and
    close the round in it. ``active`` are the parties not excluded when the round started."""
    for party, block in sorted(record.commits.items()):
        timing.observe(party, "commit", max(0, block - record.start))
    for party, block in sorted(record.reveals.items()):
        timing.observe(party, "reveal", max(0, block - record.final_commit_end))
    for party, block in sorted(record.attests.items()):
        timing.observe(party, "attest", max(0, block - record.final_reveal_end))
    missing_commit = sorted(p for p in active if p not in record.commits)
    if missing_commit:
        timing.timeout("commit", missing_commit)
    missing_reveal = sorted(p for p in record.commits if p not in record.reveals)
    if missing_reveal:
        timing.timeout("reveal", missing_reveal)
    timing.end_round()


def differs_enough(learned: Windows, current: Windows) -> bool:
    """True if some phase's ``learned`` window differs from ``current``'s by at least
    :data:`MIN_CHANGE_BLOCKS` blocks and :data:`MIN_CHANGE_FRACTION` of it."""
    for new, old in zip(learned.as_tuple(), current.as_tuple(), strict=True):
        gap = abs(new - old)
        if gap >= MIN_CHANGE_BLOCKS and gap >= MIN_CHANGE_FRACTION * old:
            return True
    return False


class ChainTiming:
    """The adaptive windows of ``task``, from its chain record (module docstring).

    ``participants`` as the contract lists them, ``quorum`` the task's, ``initial`` the
    windows the task was created with; ``from_block`` where the task's events start. Call
    :meth:`close` for rounds 0, 1, 2, ... in order, once each round is closed on chain.
    """

    def __init__(
        self,
        *,
        contract: TrainingTask,
        task: int,
        participants: Sequence[str],
        quorum: int,
        initial: Windows,
        from_block: int = 0,
    ) -> None:
        self.contract = contract
        self.task = task
        self.participants = tuple(participants)
        self.from_block = from_block
        self.timing = AdaptiveTiming(
            self.participants,
            quorum=quorum,
            initial=PhaseWindows(*initial.as_tuple()),
            warmup=WARMUP_ROUNDS,
            maximum=min(2**16, MAX_PHASE_BLOCKS),
        )
        self.rounds = 0
        self.records: list[RoundRecord] = []
        #: each excluded party, with the block it was excluded in
        self.excluded: dict[str, int] = {}

    def close(self, round: int) -> RoundRecord:
        """Observe ``round`` (the next one not yet observed) from the chain; its record."""
        if round != self.rounds:
            raise InputError(f"rounds are observed in order: expected {self.rounds}, got {round}")
        # a log query costs what its block range holds, so each starts where the round can
        # have started at the earliest (exclusions are read up to the head each time, so
        # none between two queries is missed)
        record = self.contract.round_record(self.task, round, from_block=self.from_block)
        self.excluded.update(record.exclusions)
        active = [
            p for p in self.participants if self.excluded.get(p, record.start + 1) > record.start
        ]
        observe_round(self.timing, record, active)
        self.records.append(record)
        # the next round starts where this one ended, after its reveal phase
        self.from_block = record.final_reveal_end
        self.rounds += 1
        return record

    def windows(self) -> Windows:
        """The windows learned from the rounds observed so far."""
        learned = self.timing.windows()
        return Windows(
            commit_blocks=_bounded(learned.commit_blocks),
            reveal_blocks=_bounded(learned.reveal_blocks),
            attest_blocks=_bounded(learned.attest_blocks),
        )

    def proposal(self, current: Windows) -> Windows | None:
        """The learned windows if they differ enough from ``current`` (hysteresis), else None."""
        learned = self.windows()
        return learned if differs_enough(learned, current) else None

    def to_exclude(self, among: Iterable[str]) -> tuple[str, ...]:
        """Parties of ``among`` silent for the estimator's ``exclude_after`` rounds."""
        return self.timing.to_exclude(among)


def _bounded(blocks: int) -> int:
    return int(min(max(1, math.ceil(blocks)), MAX_PHASE_BLOCKS))
