"""The TrainingTask contract, run on both backends: the embedded chain and a real anvil node."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import pytest

from ailedger.errors import TransactionReverted
from ailedger.ledger import Ledger, load_artifact
from ailedger.ledger.training import Phase, TrainingTask, commitment, rule_id
from tests.conftest import Chain, new_signer


def h(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


@dataclass
class Setup:
    owner: TrainingTask
    parties: list[TrainingTask]
    stranger: TrainingTask
    task: int

    def address(self, i: int) -> str:
        return self.parties[i].ledger.account


def setup(chain: Chain, *, n: int = 3, quorum: int = 2, rounds: int = 3, blocks: int = 30) -> Setup:
    owner = TrainingTask.deploy(chain.ledger(new_signer()))
    parties = [owner.with_ledger(chain.ledger(new_signer())) for _ in range(n)]
    stranger = owner.with_ledger(chain.ledger(new_signer()))
    task, _ = owner.create_task(
        spec_digest=h("spec"),
        participants=[p.ledger.account for p in parties],
        rounds=rounds,
        quorum=quorum,
        rule="default",
        commit_blocks=blocks,
        reveal_blocks=blocks,
        attest_blocks=blocks,
    )
    return Setup(owner, parties, stranger, task)


def mine_to(ledger: Ledger, block: int) -> None:
    while ledger.block_number() < block:
        ledger.transfer(ledger.account, 0)


def commit(party: TrainingTask, task: int, round: int, digest: bytes) -> bytes:
    salt = secrets.token_bytes(32)
    party.commit(task, round, commitment(digest, salt, party.ledger.account))
    return salt


def reverts(reason: str) -> pytest.RaisesContext[TransactionReverted]:
    return pytest.raises(TransactionReverted, match=f"^transaction reverted: {reason}$")


def test_a_round_closes_its_phases_early_and_finalizes_at_quorum(chain: Chain) -> None:
    s = setup(chain)
    info = s.owner.task_info(s.task)
    assert (info.rounds, info.quorum, info.participants, info.active) == (3, 2, 3, 3)
    assert (info.rule, info.rule_id, info.spec_digest) == ("default", rule_id("default"), h("spec"))
    assert info.creator == s.owner.ledger.account
    assert s.owner.participants(s.task) == [s.address(i) for i in range(3)]
    assert s.owner.round_state(s.task).phase == Phase.COMMIT

    updates = [h(f"update {i}") for i in range(3)]
    salts = [commit(p, s.task, 0, u) for p, u in zip(s.parties, updates, strict=True)]
    state = s.owner.round_state(s.task)
    assert (state.phase, state.committed) == (Phase.REVEAL, 3)
    gas = [
        p.reveal(s.task, 0, u, salt).gas_used
        for p, u, salt in zip(s.parties, updates, salts, strict=True)
    ]
    assert all(g > 21000 for g in gas)
    state = s.owner.round_state(s.task)
    assert (state.phase, state.revealed) == (Phase.ATTEST, 3)
    assert s.owner.reveals(s.task, 0) == {s.address(i): updates[i] for i in range(3)}
    assert [p.update_digest for p in s.owner.party_states(s.task)] == updates

    s.parties[0].attest(s.task, 0, h("aggregate"), h("scores 0"))
    assert s.owner.outcome(s.task, 0).status == "pending"
    s.parties[1].attest(s.task, 0, h("aggregate"), h("scores 1"))
    outcome = s.owner.outcome(s.task, 0)
    assert (outcome.status, outcome.aggregate_digest, outcome.votes) == (
        "finalized",
        h("aggregate"),
        2,
    )
    state = s.owner.round_state(s.task)
    assert (state.round, state.phase, state.committed) == (1, Phase.COMMIT, 0)
    with reverts("not the current round"):
        s.parties[2].attest(s.task, 0, h("aggregate"), h("scores 2"))
    assert [a.party for a in s.owner.attestations(s.task, 0)] == [s.address(0), s.address(1)]
    contract = s.owner.ledger.contract(load_artifact("TrainingTask"), s.owner.address)
    finalized = s.owner.ledger.logs(contract, "RoundFinalized", argument_filters={"task": s.task})
    assert [(e["args"]["round"], e["args"]["aggregate_digest"]) for e in finalized] == [
        (0, h("aggregate"))
    ]


def test_bad_calls_revert_with_reasons_and_the_round_still_finalizes(chain: Chain) -> None:
    s = setup(chain)
    a, b, c = s.parties
    u = [h(f"u{i}") for i in range(3)]
    for call in (
        lambda: s.stranger.commit(s.task, 0, h("c")),
        lambda: s.stranger.announce(s.task, "http://127.0.0.1:1"),
        lambda: s.stranger.vote_exclude(s.task, s.address(0)),
    ):
        with reverts("not a participant"):
            call()
    with reverts("unknown task"):
        a.commit(s.task + 1, 0, h("c"))
    with reverts("not the current round"):
        a.commit(s.task, 1, h("c"))
    salt_a = commit(a, s.task, 0, u[0])
    with reverts("already committed"):
        a.commit(s.task, 0, h("again"))
    with reverts("not in the reveal phase"):
        a.reveal(s.task, 0, u[0], salt_a)
    salt_b = commit(b, s.task, 0, u[1])
    salt_c = commit(c, s.task, 0, u[2])
    with reverts("reveal does not match the commitment"):
        a.reveal(s.task, 0, u[1], salt_a)
    with reverts("reveal does not match the commitment"):
        b.reveal(s.task, 0, u[0], salt_a)
    with reverts("not a participant"):
        s.stranger.reveal(s.task, 0, u[0], salt_a)
    a.reveal(s.task, 0, u[0], salt_a)
    with reverts("already revealed"):
        a.reveal(s.task, 0, u[0], salt_a)
    with reverts("not in the attest phase"):
        a.attest(s.task, 0, h("agg"), h("s"))
    b.reveal(s.task, 0, u[1], salt_b)
    c.reveal(s.task, 0, u[2], salt_c)
    with reverts("round still open"):
        s.stranger.advance(s.task)
    a.attest(s.task, 0, h("agg"), h("s"))
    with reverts("already attested"):
        a.attest(s.task, 0, h("agg"), h("s"))
    with reverts("not a participant"):
        s.stranger.attest(s.task, 0, h("agg"), h("s"))
    c.attest(s.task, 0, h("agg"), h("s"))
    assert s.owner.outcome(s.task, 0).status == "finalized"
    assert s.owner.round_state(s.task).round == 1


def test_silent_parties_and_split_votes_never_deadlock(chain: Chain) -> None:
    s = setup(chain, rounds=3, blocks=4)
    a, b, c = s.parties
    ledger = s.owner.ledger
    u = [h(f"r0 {i}") for i in range(3)]
    salts = [commit(p, s.task, 0, d) for p, d in zip(s.parties, u, strict=True)]
    a.reveal(s.task, 0, u[0], salts[0])
    b.reveal(s.task, 0, u[1], salts[1])
    assert s.owner.round_state(s.task).phase == Phase.REVEAL
    mine_to(ledger, s.owner.round_state(s.task).reveal_end)
    assert s.owner.round_state(s.task).phase == Phase.ATTEST
    with reverts("not in the reveal phase"):
        c.reveal(s.task, 0, u[2], salts[2])
    a.attest(s.task, 0, h("agg"), h("s"))
    b.attest(s.task, 0, h("agg"), h("s"))
    assert s.owner.outcome(s.task, 0).status == "finalized"

    # round 1: everyone attests a different digest, so the round fails at once
    for i, p in enumerate(s.parties):
        commit(p, s.task, 1, h(f"r1 {i}"))
    mine_to(ledger, s.owner.round_state(s.task).reveal_end)
    for i, p in enumerate(s.parties):
        p.attest(s.task, 1, h(f"agg {i}"), h("s"))
    failed = s.owner.outcome(s.task, 1)
    assert (failed.status, failed.aggregate_digest, failed.votes) == ("failed", None, 1)

    # round 2: nobody acts; after the attest deadline anyone closes it
    state = s.owner.round_state(s.task)
    assert state.round == 2
    mine_to(ledger, state.attest_end)
    assert s.owner.round_state(s.task).phase == Phase.EXPIRED
    s.stranger.advance(s.task)
    assert s.owner.outcome(s.task, 2).status == "failed"
    info = s.owner.task_info(s.task)
    assert info.finished
    assert s.owner.round_state(s.task).phase == Phase.FINISHED
    with reverts("task finished"):
        a.commit(s.task, 3, h("late"))
    with reverts("task finished"):
        s.stranger.advance(s.task)


def test_replays_are_refused_and_a_quorum_excludes_a_party(chain: Chain) -> None:
    s = setup(chain, quorum=2)
    a, b, c = s.parties
    u = [h(f"r0 {i}") for i in range(3)]
    salts = [commit(p, s.task, 0, d) for p, d in zip(s.parties, u, strict=True)]
    for p, d, salt in zip(s.parties, u, salts, strict=True):
        p.reveal(s.task, 0, d, salt)
    a.attest(s.task, 0, h("agg0"), h("s"))
    b.attest(s.task, 0, h("agg0"), h("s"))

    salt = commit(c, s.task, 1, u[2])
    commit(a, s.task, 1, h("r1 a"))
    commit(b, s.task, 1, h("r1 b"))
    with reverts("update already revealed in this task"):
        c.reveal(s.task, 1, u[2], salt)
    with reverts("not the current round"):
        c.reveal(s.task, 0, u[2], salts[2])

    a.vote_exclude(s.task, s.address(2))
    with reverts("already voted"):
        a.vote_exclude(s.task, s.address(2))
    with reverts("cannot vote to exclude yourself"):
        a.vote_exclude(s.task, s.address(0))
    with reverts("party is not a participant"):
        a.vote_exclude(s.task, s.stranger.ledger.account)
    assert s.owner.party_state(s.task, s.address(2)).exclusion_votes == 1
    assert not s.owner.party_state(s.task, s.address(2)).excluded
    b.vote_exclude(s.task, s.address(2))
    state = s.owner.party_state(s.task, s.address(2))
    assert (state.excluded, state.exclusion_votes) == (True, 2)
    assert s.owner.task_info(s.task).active == 2
    with reverts("party excluded"):
        c.attest(s.task, 1, h("agg1"), h("s"))
    with reverts("party already excluded"):
        a.vote_exclude(s.task, s.address(2))
    excluded = s.owner.events(s.task, "PartyExcluded")
    assert [e["party"] for e in excluded] == [s.address(2)]


def test_task_creation_is_checked_and_a_lone_creator_records_rounds(chain: Chain) -> None:
    ledger = chain.ledger(new_signer())
    owner = TrainingTask.deploy(ledger)
    others = [new_signer().address for _ in range(3)]
    settings = dict(rule="fedavg", commit_blocks=5, reveal_blocks=5, attest_blocks=5)
    with reverts("quorum must be a majority of the participants"):
        owner.create_task(
            spec_digest=h("x"), participants=others[:2], rounds=1, quorum=1, **settings
        )
    with reverts("quorum must be a majority of the participants"):
        owner.create_task(spec_digest=h("x"), participants=others, rounds=1, quorum=4, **settings)
    with reverts("duplicate participant"):
        owner.create_task(
            spec_digest=h("x"), participants=[others[0], others[0]], rounds=1, quorum=2, **settings
        )
    shared, _ = owner.create_task(
        spec_digest=h("x"), participants=others, rounds=1, quorum=2, **settings
    )
    with reverts("only the creator records"):
        owner.with_ledger(chain.ledger(new_signer())).record(shared, 0, h("a"), h("s"))
    with reverts("task has several participants: use commit"):
        owner.record(shared, 0, h("a"), h("s"))

    lone, _ = owner.create_task(
        spec_digest=h("run"), participants=[ledger.account], rounds=2, quorum=1, **settings
    )
    assert lone == shared + 1 == owner.task_count()
    gas = [owner.record(lone, r, h(f"agg {r}"), h(f"s {r}")).gas_used for r in range(2)]
    assert all(g > 21000 for g in gas)
    assert [owner.outcome(lone, r).aggregate_digest for r in range(2)] == [h("agg 0"), h("agg 1")]
    assert owner.task_info(lone).finished
    with reverts("task finished"):
        owner.record(lone, 2, h("agg 2"), h("s"))
