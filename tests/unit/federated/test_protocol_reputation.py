"""The reputation rule in the on-chain round protocol (issue 13): a public reference set
checked against its registration, reference digests attested with the aggregate, the state
derived from finalized rounds, exclusions voted on, and B^2 in every round report."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from ailedger.errors import InputError, VerificationError
from ailedger.federated.protocol import (
    Party,
    PublicSet,
    TaskSpec,
    TrainingError,
    check_public_set,
    create_task,
    model_digest,
    run_local,
)
from ailedger.federated.reputation import WARMUP_ROUNDS
from ailedger.federated.transport import BlobStore
from ailedger.ledger.provenance import ProvenanceRegistry
from ailedger.ledger.training import TrainingTask
from ailedger.provenance.registry import NotRegistered, RegisteredByOther
from tests.conftest import Chain, new_signer
from tests.unit.federated.test_protocol import DIM, MAX_NORM, TRUE_W, linear_party

embedded = pytest.mark.parametrize("backend", ["embedded"])

#: a valid registration to name in specs that never reach a chain
SOME_SET = PublicSet(registrant="0x" + "ab" * 20, digest="cd" * 32)


def public_reference() -> Callable[[npt.NDArray[np.float64], int], npt.NDArray[np.float64]]:
    """Least squares on a small public set: the same steps as a party's local training."""
    rng = np.random.default_rng(1234)
    x = rng.normal(size=(30, DIM))
    y = x @ TRUE_W

    def reference(w: npt.NDArray[np.float64], round: int) -> npt.NDArray[np.float64]:
        new = w.copy()
        for _ in range(3):
            new -= 0.1 * x.T @ (x @ new - y) / len(y)
        return new - w

    return reference


class SignFlip(Party):
    def make_update(self, round: int) -> npt.ArrayLike:
        return -np.asarray(super().make_update(round), dtype=np.float64)


class Disagreeing(Party):
    """Derives another reference (as from another public set); it cannot agree with the
    quorum, so it stops when a round finalizes without it."""

    def make_reference(self, round: int) -> npt.ArrayLike | None:
        ref = np.asarray(super().make_reference(round), dtype=np.float64)
        return ref + np.linspace(-0.5, 0.5, DIM)

    def step(self) -> bool:
        try:
            return super().step()
        except TrainingError as exc:
            self.mismatch = str(exc)
            self.done = True
            return True


class ReputationFederation:
    """A reputation task on one chain: ``kinds`` gives each party's class."""

    def __init__(
        self,
        chain: Chain,
        tmp_path: Path,
        kinds: list[type[Party]],
        *,
        rounds: int,
        fallback: bool = False,
    ) -> None:
        self.miner = chain.ledger(new_signer())
        self.contract = TrainingTask.deploy(self.miner)
        self.ledgers = [chain.ledger(new_signer()) for _ in kinds]
        n = len(kinds)
        self.spec = TaskSpec(
            shape=(DIM,),
            initial_digest=model_digest(np.zeros(DIM)),
            rounds=rounds,
            quorum=n // 2 + 1,
            rule="reputation",
            max_norm=MAX_NORM,
            commit_blocks=3 * n + 4,
            reveal_blocks=3 * n + 4,
            attest_blocks=3 * n + 4,
            exclude_after=100,  # only the rule's exclusions are voted on
            public_set=None if fallback else SOME_SET,
            fallback=fallback,
            contribution="weights",
        )
        self.task, _ = create_task(self.contract, self.spec, [lg.account for lg in self.ledgers])
        self.store = BlobStore(tmp_path / "blobs")
        self.kinds = kinds
        self.parties = [self.party(i) for i in range(n)]

    def party(self, i: int, kind: type[Party] | None = None) -> Party:
        train, evaluate = linear_party(i)
        return (kind or self.kinds[i])(
            contract=self.contract.with_ledger(self.ledgers[i]),
            task=self.task,
            spec=self.spec,
            initial_params=np.zeros(DIM),
            train=train,
            evaluate=evaluate,
            store=self.store,
            endpoint=self.store.uri,
            reference=None if self.spec.fallback else public_reference(),
        )

    @property
    def honest(self) -> list[Party]:
        return [p for p in self.parties if type(p) is Party]

    def run(self) -> None:
        run_local(self.parties, miner=self.miner)

    def check_agreement(self) -> None:
        """Every round finalized; the honest parties hold bit-identical models and states."""
        assert len({p.global_digest() for p in self.honest}) == 1
        states = {p.reputation_state.digest() for p in self.honest if p.reputation_state}
        assert len(states) == 1
        for k in range(self.spec.rounds):
            outcome = self.contract.outcome(self.task, k)
            assert outcome.status == "finalized"
            assert outcome.aggregate_digest is not None
            reports = [p.reports[k] for p in self.honest]
            assert {r.round_digest for r in reports} == {outcome.aggregate_digest.hex()}
            assert (
                len({(r.aggregate_digest, r.state_digest, r.reference_digest) for r in reports})
                == 1
            )
            assert all(r.b2 is not None and r.b2 >= 0 for r in reports)


@embedded
def test_a_sign_flipper_is_excluded_by_reputation_after_warmup(
    chain: Chain, tmp_path: Path
) -> None:
    fed = ReputationFederation(
        chain, tmp_path, [SignFlip, Party, Party, Party], rounds=WARMUP_ROUNDS + 2
    )
    flipper = fed.parties[0].address
    fed.run()
    fed.check_agreement()
    for party in fed.honest:
        excluded_in = [r.round for r in party.reports if flipper in r.rule_excluded]
        assert excluded_in and min(excluded_in) == WARMUP_ROUNDS
        # at the attestation of the first round after warm-up, or (when the round finalized
        # before this party attested) as it closes that round
        voted_in = [r.round for r in party.reports if flipper in r.votes]
        assert voted_in == [WARMUP_ROUNDS]
        assert flipper not in party.reports[-1].accepted
        assert party.reputation_state is not None
        assert party.reputation_state.reputation(flipper) < 0
        assert all(party.reputation_state.reputation(p.address) > 0 for p in fed.honest)
    assert fed.contract.party_state(fed.task, flipper).excluded
    # the model learnt despite the flipper: closer to the true weights than the start
    w = fed.honest[0].params
    assert np.linalg.norm(w - TRUE_W) < 0.5 * np.linalg.norm(TRUE_W)


@embedded
def test_a_party_reporting_another_reference_is_faulty_and_the_round_finalizes(
    chain: Chain, tmp_path: Path
) -> None:
    fed = ReputationFederation(chain, tmp_path, [Disagreeing, Party, Party, Party], rounds=1)
    odd = fed.parties[0]
    fed.run()
    fed.check_agreement()
    assert "a quorum finalized" in getattr(odd, "mismatch", "")
    for party in fed.honest:
        (report,) = party.reports
        assert report.faulty[odd.address].startswith("reported reference digest ")
        assert report.reference_digest is not None
        assert report.reference_digest in report.faulty[odd.address]
        assert odd.address in report.flagged
    # the finalized round counts only the three parties that agree
    assert fed.contract.outcome(fed.task, 0).votes == 3


@embedded
def test_a_restarted_party_rebuilds_the_state_from_finalized_rounds(
    chain: Chain, tmp_path: Path
) -> None:
    fed = ReputationFederation(chain, tmp_path, [Party, Party, Party], rounds=4)
    restart_at = WARMUP_ROUNDS + 1
    for _ in range(10_000):
        if fed.contract.round_state(fed.task).round >= restart_at:
            break
        progressed = False
        for party in fed.parties:
            progressed = party.step() or progressed
            if fed.contract.round_state(fed.task).round >= restart_at:
                break
        if not progressed:
            fed.miner.transfer(fed.miner.account, 0)
    assert fed.contract.round_state(fed.task).round == restart_at
    # a fresh process for party 1: no state, the initial model; it replays the finalized rounds
    fed.parties[1] = fed.party(1)
    assert fed.parties[1].reputation_state is not None
    assert fed.parties[1].reputation_state.rounds == 0
    fed.run()
    fed.check_agreement()
    restarted = fed.parties[1]
    assert len(restarted.reports) == fed.spec.rounds
    assert [r.own for r in restarted.reports[:restart_at]] == ["not committed"] * restart_at
    assert restarted.reports[-1].own == "revealed"


@embedded
def test_a_fallback_task_runs_without_a_public_set(chain: Chain, tmp_path: Path) -> None:
    fed = ReputationFederation(
        chain, tmp_path, [SignFlip, Party, Party, Party], rounds=1, fallback=True
    )
    fed.run()
    fed.check_agreement()
    (report,) = fed.honest[0].reports
    assert report.reference_digest is not None and report.faulty == {}
    state = fed.honest[0].reputation_state
    assert state is not None and state.reputation(fed.parties[0].address) < 0


@embedded
def test_parties_marked_by_the_sentinel_are_voted_on(chain: Chain, tmp_path: Path) -> None:
    fed = ReputationFederation(chain, tmp_path, [Party] * 4, rounds=2)
    marked = fed.parties[0].address
    marks = tmp_path / "sentinel" / "exclusions.json"
    marks.parent.mkdir()
    # the format TrainingExclusion writes: task id -> lowercase address -> alert ids
    marks.write_text(json.dumps({"tasks": {str(fed.task): {marked.lower(): ["alert-1"]}}}))
    for party in fed.parties[1:]:
        party.sentinel_marks = marks
    fed.parties[0].sentinel_marks = tmp_path / "nothing-here.json"
    fed.run()
    assert fed.contract.party_state(fed.task, marked).excluded
    voters = [p for p in fed.parties[1:] if marked in p.reports[0].votes]
    assert len(voters) == 3
    assert fed.parties[0].reports[0].votes == []
    assert fed.parties[0].excluded
    assert all(marked not in p.reports[1].accepted for p in fed.parties[1:])


# --------------------------------------------------------------------------- the task spec


def spec(**options: Any) -> TaskSpec:
    return TaskSpec(
        shape=(DIM,), initial_digest="0" * 64, rounds=3, quorum=2, rule="reputation", **options
    )


def test_a_reputation_task_without_a_public_set_is_refused() -> None:
    with pytest.raises(InputError, match="rule reputation needs a public validation set"):
        spec()
    with pytest.raises(InputError, match="not both"):
        spec(public_set=SOME_SET, fallback=True)
    with pytest.raises(InputError, match="needs rule reputation"):
        TaskSpec(shape=(1,), initial_digest="0" * 64, rounds=1, quorum=1, public_set=SOME_SET)
    doc = spec(fallback=True).to_json()
    assert TaskSpec.from_json(doc) == spec(fallback=True)
    named = spec(public_set=SOME_SET, sized_for=0.25)
    assert TaskSpec.from_json(named.to_json()) == named
    del doc["fallback"]
    with pytest.raises(InputError, match="rule reputation needs a public validation set"):
        TaskSpec.from_json(doc)
    # a spec without the new fields keeps its JSON and digest
    plain = TaskSpec(shape=(1,), initial_digest="0" * 64, rounds=1, quorum=1)
    assert not {"public_set", "fallback", "sized_for"} & set(plain.to_json())
    with pytest.raises(InputError, match="registrant must be an address"):
        PublicSet.parse("nobody:" + "cd" * 32)
    assert PublicSet.parse(f"{SOME_SET.registrant}:0x{'CD' * 32}") == SOME_SET
    assert PublicSet.parse(f"{SOME_SET.registrant}:sha256:{'cd' * 32}") == SOME_SET


@embedded
def test_the_public_set_is_checked_against_its_registration(chain: Chain, tmp_path: Path) -> None:
    registrant = chain.ledger(new_signer())
    other = chain.ledger(new_signer())
    registry = ProvenanceRegistry.deploy(registrant)
    good = tmp_path / "public.npz"
    good.write_bytes(b"public validation set")
    # a single file's root digest: SHA-256 over its SHA-256 (model-signing manifest)
    digest = hashlib.sha256(hashlib.sha256(good.read_bytes()).digest()).digest()
    registry.register(digest, 1, b"\x01" * 32)
    named = PublicSet(registrant=registrant.account, digest=digest.hex())
    check_public_set(registry, good, named)

    tampered = tmp_path / "tampered.npz"
    tampered.write_bytes(b"public validation set, edited")
    with pytest.raises(VerificationError, match=f"the task names {digest.hex()}"):
        check_public_set(registry, tampered, named)
    with pytest.raises(RegisteredByOther):
        check_public_set(registry, good, PublicSet(registrant=other.account, digest=digest.hex()))
    unregistered = tmp_path / "unregistered.npz"
    unregistered.write_bytes(b"never registered")
    loose = hashlib.sha256(hashlib.sha256(unregistered.read_bytes()).digest()).hexdigest()
    with pytest.raises(NotRegistered, match="is not registered by"):
        check_public_set(
            registry, unregistered, PublicSet(registrant=registrant.account, digest=loose)
        )


@embedded
def test_a_party_of_a_public_set_task_needs_the_set(chain: Chain, tmp_path: Path) -> None:
    fed = ReputationFederation(chain, tmp_path, [Party, Party, Party], rounds=1)
    train, _ = linear_party(0)
    with pytest.raises(TrainingError, match="--public-set PATH"):
        Party(
            contract=fed.contract.with_ledger(fed.ledgers[0]),
            task=fed.task,
            spec=fed.spec,
            initial_params=np.zeros(DIM),
            train=train,
            store=fed.store,
            endpoint=fed.store.uri,
        )
