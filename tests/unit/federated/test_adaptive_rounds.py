"""Adaptive phase windows in real rounds: parties learn them from the chain and change them by
quorum; a silent party is voted out, a slow honest one is never dropped, a lone hostile
proposer changes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ailedger.errors import InputError, TransactionReverted
from ailedger.federated.protocol import Party, TaskSpec, create_task, model_digest, run_local
from ailedger.federated.timing_chain import differs_enough
from ailedger.federated.transport import BlobStore
from ailedger.ledger import Ledger
from ailedger.ledger.training import Phase, TrainingTask, Windows
from tests.conftest import Chain, new_signer
from tests.unit.federated.test_protocol import DIM, MAX_NORM, linear_party

JUNK = (1, 1, 1)


@pytest.fixture
def backend() -> str:
    """The embedded chain only: these runs take a few hundred blocks."""
    return "embedded"


class SilentHostile(Party):
    """Never trains, commits, reveals or attests, but proposes junk windows every round."""

    tried: set[int]
    refusals: list[str]

    def step(self) -> bool:
        state = self.contract.round_state(self.task)
        if state.phase == Phase.FINISHED:
            self.done = True
            return False
        if not hasattr(self, "tried"):
            self.tried, self.refusals = set(), []
        if state.round not in self.tried:
            self.tried.add(state.round)
            try:
                self.contract.propose_windows(self.task, state.round, *JUNK)
            except TransactionReverted as exc:
                self.refusals.append(exc.reason)
                return False
            return True
        return False


class Slow(Party):
    """An honest party that acts only ``DELAY`` blocks after it first sees each phase."""

    DELAY = 3
    first_seen: dict[tuple[int, int], int]

    def step(self) -> bool:
        if not hasattr(self, "first_seen"):
            self.first_seen = {}
        state = self.contract.round_state(self.task)
        block = self.contract.ledger.block_number()
        seen = self.first_seen.setdefault((state.round, int(state.phase)), block)
        acting = state.phase in (Phase.COMMIT, Phase.REVEAL, Phase.ATTEST)
        if acting and block - seen < self.DELAY and not self.done and self._announced:
            return False
        return super().step()


class LoneProposer(Party):
    """Honest in every phase, but proposes junk windows once per round, alone."""

    proposed: list[int]

    def step(self) -> bool:
        if not hasattr(self, "proposed"):
            self.proposed = []
        state = self.contract.round_state(self.task)
        if state.phase == Phase.COMMIT and state.round not in self.proposed:
            self.proposed.append(state.round)
            self.contract.propose_windows(self.task, state.round, *JUNK)
            return True
        return super().step()


def federation(
    chain: Chain,
    tmp_path: Path,
    kinds: list[type[Party]],
    *,
    rounds: int,
    quorum: int,
    blocks: int,
    timing: str,
) -> tuple[Ledger, TrainingTask, int, TaskSpec, list[Party]]:
    miner = chain.ledger(new_signer())
    contract = TrainingTask.deploy(miner)
    ledgers = [chain.ledger(new_signer()) for _ in kinds]
    spec = TaskSpec(
        shape=(DIM,),
        initial_digest=model_digest(np.zeros(DIM)),
        rounds=rounds,
        quorum=quorum,
        max_norm=MAX_NORM,
        commit_blocks=blocks,
        reveal_blocks=blocks,
        attest_blocks=blocks,
        contribution="weights",
        timing=timing,
    )
    task, _ = create_task(contract, spec, [lg.account for lg in ledgers])
    store = BlobStore(tmp_path / "blobs")
    parties: list[Party] = []
    for i, (kind, ledger) in enumerate(zip(kinds, ledgers, strict=True)):
        train, _ = linear_party(i)
        parties.append(
            kind(
                contract=contract.with_ledger(ledger),
                task=task,
                spec=spec,
                initial_params=np.zeros(DIM),
                train=train,
                store=store,
                endpoint=store.uri,
            )
        )
    return miner, contract, task, spec, parties


def test_windows_change_by_quorum_and_later_rounds_use_them(chain: Chain, tmp_path: Path) -> None:
    kinds: list[type[Party]] = [Party, Party, Slow, SilentHostile]
    miner, contract, task, spec, parties = federation(
        chain, tmp_path, kinds, rounds=5, quorum=3, blocks=12, timing="adaptive"
    )
    run_local(parties, miner=miner)
    honest = parties[:3]
    slow, hostile = parties[2], parties[3]
    initial = Windows(commit_blocks=12, reveal_blocks=12, attest_blocks=12)

    # every round finalized with every honest update, the slow party's too
    for k in range(spec.rounds):
        assert contract.outcome(task, k).status == "finalized"
        for party in honest:
            assert slow.address in party.reports[k].accepted
    assert [r.own for r in slow.reports] == ["revealed"] * spec.rounds

    # the silent party was voted out on the chain record of its silence, and could then
    # propose no more
    assert contract.party_state(task, hostile.address).excluded
    assert isinstance(hostile, SilentHostile)
    assert hostile.refusals and set(hostile.refusals) == {"party excluded"}
    assert all(hostile.address in party.reports[2].timing_excluded for party in honest), [
        p.reports[2].timing_excluded for p in honest
    ]

    # every honest party proposed the same windows in the same rounds (one chain record)
    proposed = [[r.proposed_windows for r in party.reports] for party in honest]
    assert proposed[0] == proposed[1] == proposed[2]
    assert any(w is not None for w in proposed[0])

    # the chain's record of each round (log queries over a short range each: on the embedded
    # chain their cost grows with the blocks they cover)
    records = []
    start = parties[0]._start_block()  # the block that created the task, as the party read it
    for k in range(spec.rounds):
        records.append(contract.round_record(task, k, from_block=start))
        start = records[-1].start

    # a quorum adopted the learned windows; the hostile party's junk never was
    changes = contract.window_changes(task, from_block=records[1].start)
    assert len(changes) == 1
    (change,) = changes
    assert change.windows.as_tuple() != JUNK
    assert change.windows != initial
    assert [r.proposed_windows for r in honest[0].reports if r.proposed_windows] == [
        {
            "commit": change.windows.commit_blocks,
            "reveal": change.windows.reveal_blocks,
            "attest": change.windows.attest_blocks,
        }
    ]
    junk = contract.window_proposals(task, 0, from_block=records[0].start)
    assert junk == {hostile.address: Windows(commit_blocks=1, reveal_blocks=1, attest_blocks=1)}
    assert records[0].start < records[0].final_commit_end == records[0].commit_end

    # each round ran with the windows in effect: the spec's until the change, then the new
    assert 0 < change.round < spec.rounds
    for k, record in enumerate(records):
        effect = change.windows if k >= change.round else initial
        assert record.windows == effect, (k, record.windows, effect)
        for party in honest:
            assert party.reports[k].windows == {
                "commit": effect.commit_blocks,
                "reveal": effect.reveal_blocks,
                "attest": effect.attest_blocks,
            }
    # while the silent party was in, every commit phase ran to its deadline; the learned
    # windows are shorter than the spec's where no honest party needed that long
    assert all(r.final_commit_end == r.commit_end for r in records[:3])
    assert change.windows.reveal_blocks < initial.reveal_blocks
    assert change.windows.attest_blocks < initial.attest_blocks
    # and long enough for the slow honest party in the phases it waits longest in
    commits = [r.commits[slow.address] - r.start for r in records]
    reveals = [r.reveals[slow.address] - r.final_commit_end for r in records]
    assert change.windows.commit_blocks > max(commits)
    assert change.windows.reveal_blocks > max(reveals)


def test_a_lone_proposer_changes_nothing(chain: Chain, tmp_path: Path) -> None:
    kinds: list[type[Party]] = [LoneProposer, Party, Party]
    miner, contract, task, spec, parties = federation(
        chain, tmp_path, kinds, rounds=2, quorum=2, blocks=12, timing="fixed"
    )
    run_local(parties, miner=miner)
    assert parties[0].proposed == [0, 1]  # type: ignore[attr-defined]
    assert contract.window_changes(task) == []
    assert contract.windows(task).as_tuple() == (12, 12, 12)
    for k in range(spec.rounds):
        assert contract.outcome(task, k).status == "finalized"
        assert contract.round_record(task, k).windows.as_tuple() == (12, 12, 12)
        for party in parties:
            assert party.reports[k].windows == {"commit": 12, "reveal": 12, "attest": 12}
            assert party.reports[k].proposed_windows is None


def test_the_timing_mode_is_part_of_the_spec_and_checked() -> None:
    base = {"shape": (DIM,), "initial_digest": "0" * 64, "rounds": 2, "quorum": 2}
    fixed = TaskSpec(**base)  # type: ignore[arg-type]
    adaptive = TaskSpec(**base, timing="adaptive")  # type: ignore[arg-type]
    assert "timing" not in fixed.to_json()  # older specs keep their digests
    assert adaptive.to_json()["timing"] == "adaptive"
    assert fixed.digest() != adaptive.digest()
    assert TaskSpec.from_json(adaptive.to_json()) == adaptive
    with pytest.raises(InputError, match="timing must be fixed or adaptive"):
        TaskSpec(**base, timing="fast")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="timing must be fixed or adaptive"):
        TaskSpec.from_json({**adaptive.to_json(), "timing": "fast"})
    with pytest.raises(InputError, match="timing must be a string"):
        TaskSpec.from_json({**adaptive.to_json(), "timing": 3})


def test_hysteresis_ignores_small_changes() -> None:
    def w(c: int, r: int, a: int) -> Windows:
        return Windows(commit_blocks=c, reveal_blocks=r, attest_blocks=a)

    assert not differs_enough(w(40, 40, 40), w(40, 40, 40))
    assert not differs_enough(w(35, 45, 40), w(40, 40, 40))  # within a quarter
    assert differs_enough(w(29, 40, 40), w(40, 40, 40))
    assert not differs_enough(w(3, 4, 4), w(4, 4, 4))  # a quarter, but one block
    assert differs_enough(w(2, 4, 4), w(4, 4, 4))
