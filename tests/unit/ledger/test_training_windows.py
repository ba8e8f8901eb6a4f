"""Phase windows changed by a quorum of a TrainingTask's participants, on both backends."""

from __future__ import annotations

import pytest

from ailedger.errors import InputError
from ailedger.ledger.training import MAX_PHASE_BLOCKS, Phase, TrainingTask, Windows
from tests.conftest import Chain
from tests.unit.ledger.test_training_contract import Setup, commit, h, mine_to, reverts, setup


def finish_round(s: Setup, round: int, voters: int = 3) -> None:
    """Every party commits and reveals, ``voters`` of them attest one digest (a quorum)."""
    updates = [h(f"update {round} {i}") for i in range(len(s.parties))]
    salts = [commit(p, s.task, round, u) for p, u in zip(s.parties, updates, strict=True)]
    for p, u, salt in zip(s.parties, updates, salts, strict=True):
        p.reveal(s.task, round, u, salt)
    for p in s.parties[:voters]:
        p.attest(s.task, round, h(f"aggregate {round}"), h("scores"))
    assert s.owner.outcome(s.task, round).status == "finalized"


def test_a_quorum_changes_the_windows_from_the_next_round_on(chain: Chain) -> None:
    s = setup(chain, n=4, quorum=3, rounds=4, blocks=30)
    a, b, c, d = s.parties
    assert s.owner.windows(s.task) == Windows(commit_blocks=30, reveal_blocks=30, attest_blocks=30)
    assert s.owner.pending_windows(s.task) is None

    a.propose_windows(s.task, 0, 5, 6, 7)
    b.propose_windows(s.task, 0, 5, 6, 7)
    d.propose_windows(s.task, 0, 9, 9, 9)  # a different triple does not add to the tally
    assert s.owner.pending_windows(s.task) is None
    receipt = c.propose_windows(s.task, 0, 5, 6, 7)
    assert 21_000 < receipt.gas_used < 120_000
    new = Windows(commit_blocks=5, reveal_blocks=6, attest_blocks=7)
    assert s.owner.pending_windows(s.task) == new
    # the current round keeps its deadlines, and the task reports its windows until then
    state = s.owner.round_state(s.task)
    assert (state.commit_end - s.owner.round_record(s.task, 0).start) == 30
    assert s.owner.windows(s.task).commit_blocks == 30
    (change,) = s.owner.window_changes(s.task)
    assert (change.round, change.windows, change.block_number) == (1, new, receipt.block_number)
    proposals = s.owner.window_proposals(s.task, 0)
    assert proposals == {
        s.address(0): new,
        s.address(1): new,
        s.address(2): new,
        s.address(3): Windows(commit_blocks=9, reveal_blocks=9, attest_blocks=9),
    }

    finish_round(s, 0)
    # round 1 starts with the new windows
    record = s.owner.round_record(s.task, 1)
    assert record.windows == new
    state = s.owner.round_state(s.task)
    assert (state.round, state.phase) == (1, Phase.COMMIT)
    assert (state.commit_end, state.reveal_end, state.attest_end) == (
        record.start + 5,
        record.start + 11,
        record.start + 18,
    )
    assert s.owner.windows(s.task) == new
    assert s.owner.pending_windows(s.task) is None
    # round 0's record: what each party's transaction was included in
    zero = s.owner.round_record(s.task, 0)
    assert zero.windows == Windows(commit_blocks=30, reveal_blocks=30, attest_blocks=30)
    assert set(zero.commits) == set(zero.reveals) == {s.address(i) for i in range(4)}
    assert set(zero.attests) == {s.address(i) for i in range(3)}
    assert zero.final_commit_end == max(zero.commits.values())
    assert zero.final_reveal_end == max(zero.reveals.values())
    assert zero.start < zero.final_commit_end < zero.final_reveal_end <= record.start

    # the early close of commit and reveal uses the windows in effect too
    updates = [h(f"update 1 {i}") for i in range(4)]
    salts = [commit(p, s.task, 1, u) for p, u in zip(s.parties, updates, strict=True)]
    state = s.owner.round_state(s.task)
    assert state.reveal_end - state.commit_end == 6
    for p, u, salt in zip(s.parties, updates, salts, strict=True):
        p.reveal(s.task, 1, u, salt)
    state = s.owner.round_state(s.task)
    assert state.attest_end - state.reveal_end == 7

    # with no proposal in round 1, an expired round still leads to the same windows
    mine_to(s.owner.ledger, state.attest_end)
    s.owner.advance(s.task)
    assert s.owner.outcome(s.task, 1).status == "failed"
    assert s.owner.round_record(s.task, 2).windows == new


def test_a_minority_or_a_split_changes_nothing(chain: Chain) -> None:
    s = setup(chain, n=3, quorum=2, rounds=3, blocks=20)
    a, b, c = s.parties
    # a hostile party alone, however it proposes, changes nothing
    a.propose_windows(s.task, 0, 1, 1, 1)
    assert s.owner.pending_windows(s.task) is None
    # votes from an earlier round do not count in a later one
    finish_round(s, 0, voters=2)
    b.propose_windows(s.task, 1, 1, 1, 1)
    assert s.owner.pending_windows(s.task) is None
    c.propose_windows(s.task, 1, 2, 1, 1)
    finish_round(s, 1, voters=2)
    assert s.owner.window_changes(s.task) == []
    assert s.owner.round_record(s.task, 2).windows == Windows(
        commit_blocks=20, reveal_blocks=20, attest_blocks=20
    )


def test_bad_proposals_revert_with_reasons(chain: Chain) -> None:
    s = setup(chain, n=3, quorum=2, rounds=2, blocks=20)
    a, b, c = s.parties
    with reverts("not a participant"):
        s.stranger.propose_windows(s.task, 0, 5, 5, 5)
    with reverts("unknown task"):
        a.propose_windows(s.task + 1, 0, 5, 5, 5)
    with reverts("not the current round"):
        a.propose_windows(s.task, 1, 5, 5, 5)
    for windows, reason in (
        ((0, 5, 5), "commit_blocks out of range"),
        ((5, 0, 5), "reveal_blocks out of range"),
        ((5, 5, 0), "attest_blocks out of range"),
        ((MAX_PHASE_BLOCKS + 1, 5, 5), "commit_blocks out of range"),
        ((5, MAX_PHASE_BLOCKS + 1, 5), "reveal_blocks out of range"),
        ((5, 5, 2**200), "attest_blocks out of range"),
    ):
        with reverts(reason):
            a.propose_windows(s.task, 0, *windows)
    with pytest.raises(InputError, match="commit_blocks must be a non-negative integer"):
        a.propose_windows(s.task, 0, -1, 5, 5)
    a.propose_windows(s.task, 0, MAX_PHASE_BLOCKS, 5, 5)  # the bound itself is accepted
    with reverts("already proposed"):
        a.propose_windows(s.task, 0, 6, 6, 6)
    # an excluded party may no longer propose
    b.vote_exclude(s.task, s.address(0))
    c.vote_exclude(s.task, s.address(0))
    assert s.owner.party_state(s.task, s.address(0)).excluded
    with reverts("party excluded"):
        a.propose_windows(s.task, 0, 5, 5, 5)
    # the proposal of round 0 does not block one in round 1
    for p in (b, c):
        p.propose_windows(s.task, 0, 3, 3, 3)
    assert s.owner.pending_windows(s.task) == Windows(
        commit_blocks=3, reveal_blocks=3, attest_blocks=3
    )
    mine_to(s.owner.ledger, s.owner.round_state(s.task).attest_end)
    s.owner.advance(s.task)
    assert s.owner.round_record(s.task, 1).windows.as_tuple() == (3, 3, 3)
    b.propose_windows(s.task, 1, 4, 4, 4)
    mine_to(s.owner.ledger, s.owner.round_state(s.task).attest_end)
    s.owner.advance(s.task)
    assert s.owner.task_info(s.task).finished
    with reverts("task finished"):
        c.propose_windows(s.task, 2, 5, 5, 5)
    with reverts("task finished"):
        c.propose_windows(s.task, 1, 5, 5, 5)


def test_a_task_reports_only_its_own_windows(chain: Chain) -> None:
    """A change in one task leaves another task's windows alone."""
    s = setup(chain, n=3, quorum=2, rounds=2, blocks=20)
    other, _ = s.owner.create_task(
        spec_digest=h("other"),
        participants=[p.ledger.account for p in s.parties],
        rounds=2,
        quorum=2,
        rule="default",
        commit_blocks=11,
        reveal_blocks=12,
        attest_blocks=13,
    )
    for p in s.parties[:2]:
        p.propose_windows(s.task, 0, 2, 2, 2)
    assert s.owner.pending_windows(other) is None
    assert TrainingTask.windows(s.owner, other) == Windows(
        commit_blocks=11, reveal_blocks=12, attest_blocks=13
    )
    assert s.owner.task_info(s.task).commit_blocks == 20
