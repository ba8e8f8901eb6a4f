"""The round protocol over a real chain, with honest and faulty parties in one process."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from ailedger.errors import TransactionReverted
from ailedger.federated._demo import demo_training
from ailedger.federated.aggregate import MAX_ABS, aggregate_digest, quantize
from ailedger.federated.protocol import (
    Party,
    TaskSpec,
    UpdateRejected,
    create_task,
    decode_update,
    encode_update,
    model_digest,
    run_local,
)
from ailedger.federated.transport import BlobStore, blob_digest
from ailedger.ledger import Ledger, Receipt
from ailedger.ledger.training import TrainingTask
from tests.conftest import Chain, new_signer

DIM = 6
MAX_NORM = 100.0
TRUE_W = np.arange(1.0, DIM + 1.0)


def linear_party(seed: int) -> tuple[Any, Any]:
    """Least squares on the party's own synthetic data: a few gradient steps per round."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, DIM))
    y = x @ TRUE_W + 0.05 * rng.normal(size=40)

    def train(w: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        new = w.copy()
        for _ in range(3):
            new -= 0.1 * x.T @ (x @ new - y) / len(y)
        return new - w

    def evaluate(w: npt.NDArray[np.float64]) -> float:
        return -float(np.mean((x @ w - y) ** 2))

    return train, evaluate


class Federation:
    """A TrainingTask with honest parties and, optionally, one of another class."""

    def __init__(
        self,
        chain: Chain,
        tmp_path: Path,
        *,
        honest: int = 3,
        faulty: type[Party] | None = None,
        stranger: type[Party] | None = None,
        rounds: int = 1,
    ) -> None:
        self.miner = chain.ledger(new_signer())
        contract = TrainingTask.deploy(self.miner)
        kinds: list[type[Party]] = ([faulty] if faulty else []) + [Party] * honest
        ledgers = [chain.ledger(new_signer()) for _ in kinds]
        n = len(kinds)
        self.spec = TaskSpec(
            shape=(DIM,),
            initial_digest=model_digest(np.zeros(DIM)),
            rounds=rounds,
            quorum=n // 2 + 1,
            rule="default",
            max_norm=MAX_NORM,
            commit_blocks=3 * n + 4,
            reveal_blocks=3 * n + 4,
            attest_blocks=3 * n + 4,
        )
        self.task, _ = create_task(contract, self.spec, [lg.account for lg in ledgers])
        if stranger is not None:
            kinds.append(stranger)
            ledgers.append(chain.ledger(new_signer()))
        store = BlobStore(tmp_path / "blobs")
        self.parties: list[Party] = []
        for i, (kind, ledger) in enumerate(zip(kinds, ledgers, strict=True)):
            train, evaluate = linear_party(i)
            self.parties.append(
                kind(
                    contract=contract.with_ledger(ledger),
                    task=self.task,
                    spec=self.spec,
                    initial_params=np.zeros(DIM),
                    train=train,
                    evaluate=evaluate,
                    store=store,
                    endpoint=store.uri,
                )
            )
        self.contract = contract

    @property
    def honest(self) -> list[Party]:
        return [p for p in self.parties if type(p) is Party]

    @property
    def odd(self) -> Party:
        (party,) = [p for p in self.parties if type(p) is not Party]
        return party

    def run(self) -> None:
        run_local(self.parties, miner=self.miner)

    def check_rounds_finalized(self) -> None:
        """Every round finalized with the honest parties' updates, all agreeing bit for bit."""
        digests = {p.global_digest() for p in self.honest}
        assert len(digests) == 1
        assert digests != {self.spec.initial_digest}
        for k in range(self.spec.rounds):
            outcome = self.contract.outcome(self.task, k)
            assert outcome.status == "finalized"
            assert outcome.aggregate_digest is not None
            for party in self.honest:
                report = party.reports[k]
                assert report.aggregate_digest == outcome.aggregate_digest.hex()
                assert {p.address for p in self.honest} <= set(report.accepted)


def test_honest_parties_agree_on_every_round(chain: Chain, tmp_path: Path) -> None:
    fed = Federation(chain, tmp_path, honest=3, rounds=2)
    fed.run()
    fed.check_rounds_finalized()
    party = fed.honest[0]
    assert [r.own for r in party.reports] == ["revealed", "revealed"]
    assert party.reports[0].rejected == {}
    assert party.reports[1].utility is not None
    assert party.reports[0].utility is not None
    assert party.reports[1].utility > party.reports[0].utility
    assert set(party.reports[0].scores) == {p.address for p in fed.honest}
    assert all(v > 0 for v in party.reports[0].scores.values())
    assert party.gas_used == sum(r.gas_used for r in party.reports) > 0


# --------------------------------------------------------------------------- faulty parties


def raw_blob(values: npt.NDArray[np.int64]) -> bytes:
    """An update blob of arbitrary int64 values, bypassing every check of encode_update."""
    honest = encode_update(np.zeros(values.shape), shape=values.shape, max_norm=MAX_NORM)
    return honest[: len(honest) - 8 * values.size] + values.astype("<i8").tobytes()


class WrongShape(Party):
    def publish(self, blob: bytes) -> bytes:
        return self.store.put(encode_update(np.ones(DIM + 1), shape=(DIM + 1,), max_norm=1e3))


class InfiniteUpdate(Party):
    def publish(self, blob: bytes) -> bytes:
        return self.store.put(raw_blob(np.full(DIM, 2**62, dtype=np.int64)))


class HugeNorm(Party):
    def publish(self, blob: bytes) -> bytes:
        return self.store.put(encode_update(np.full(DIM, 500.0), shape=(DIM,), max_norm=MAX_ABS))


class NaNUpdate(Party):
    def make_update(self, round: int) -> npt.ArrayLike:
        update = np.asarray(super().make_update(round), dtype=np.float64)
        update[2] = np.nan
        return update


class MismatchedBlob(Party):
    def publish(self, blob: bytes) -> bytes:
        promised = blob_digest(blob + b"something else")
        self.store.path(promised).write_bytes(blob)
        return promised


class NeverReveals(Party):
    def send_reveal(self, round: int, digest: bytes, salt: bytes) -> Receipt | None:
        return None


class RevealsTwice(Party):
    second: str = ""

    def send_reveal(self, round: int, digest: bytes, salt: bytes) -> Receipt | None:
        first = super().send_reveal(round, digest, salt)
        try:
            super().send_reveal(round, digest, salt)
        except TransactionReverted as exc:
            self.second = exc.reason
        return first


class ReplaysOldUpdate(Party):
    first: npt.ArrayLike | None = None

    def make_update(self, round: int) -> npt.ArrayLike:
        if self.first is None:
            self.first = super().make_update(round)
        return self.first


@pytest.mark.parametrize("backend", ["embedded"])
@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (WrongShape, f"wrong shape ({DIM + 1},), the task needs ({DIM},)"),
        (InfiniteUpdate, "a coordinate exceeds |x| <= 1.04858e+06 (infinity or overflow)"),
        (HugeNorm, f"norm 1224.74 exceeds max_norm {MAX_NORM:g}"),
        (MismatchedBlob, "blob does not match its revealed digest"),
        (NeverReveals, "committed but never revealed"),
    ],
)
def test_a_bad_update_is_rejected_with_a_reason_and_the_round_finalizes(
    chain: Chain, tmp_path: Path, kind: type[Party], reason: str
) -> None:
    fed = Federation(chain, tmp_path, faulty=kind)
    fed.run()
    fed.check_rounds_finalized()
    for party in fed.honest:
        assert party.reports[0].rejected == {fed.odd.address: reason}
        assert fed.odd.address in party.reports[0].flagged
        assert fed.odd.address not in party.reports[0].accepted
        assert party.reports[0].scores[fed.odd.address] == 0.0


@pytest.mark.parametrize("backend", ["embedded"])
def test_a_nan_update_is_refused_before_it_is_sent(chain: Chain, tmp_path: Path) -> None:
    fed = Federation(chain, tmp_path, faulty=NaNUpdate)
    fed.run()
    fed.check_rounds_finalized()
    assert (
        fed.odd.reports[0].own == "not submitted: non-finite value (NaN or Inf) at flat position 2"
    )
    assert fed.contract.party_state(fed.task, fed.odd.address).committed_round is None
    assert fed.odd.address not in fed.honest[0].reports[0].accepted


@pytest.mark.parametrize("backend", ["embedded"])
def test_a_second_reveal_is_refused_and_the_first_counts(chain: Chain, tmp_path: Path) -> None:
    fed = Federation(chain, tmp_path, faulty=RevealsTwice)
    fed.run()
    fed.check_rounds_finalized()
    assert isinstance(fed.odd, RevealsTwice)
    assert fed.odd.second == "already revealed"
    assert fed.odd.address in fed.honest[0].reports[0].accepted


@pytest.mark.parametrize("backend", ["embedded"])
def test_a_replayed_update_is_refused_and_the_round_finalizes(chain: Chain, tmp_path: Path) -> None:
    fed = Federation(chain, tmp_path, faulty=ReplaysOldUpdate, rounds=2)
    fed.run()
    fed.check_rounds_finalized()
    assert [r.own for r in fed.odd.reports] == [
        "revealed",
        "reveal refused: update already revealed in this task",
    ]
    first, second = fed.honest[0].reports
    assert fed.odd.address in first.accepted
    assert second.rejected == {fed.odd.address: "committed but never revealed"}


@pytest.mark.parametrize("backend", ["embedded"])
def test_an_unregistered_account_is_refused(chain: Chain, tmp_path: Path) -> None:
    fed = Federation(chain, tmp_path, honest=3, stranger=Party)
    stranger = fed.parties[-1]
    fed.run()
    assert stranger.refused == "not a participant"
    assert stranger.reports == []
    fed.parties.pop()
    fed.check_rounds_finalized()
    assert stranger.address not in fed.honest[0].reports[0].accepted


# --------------------------------------------------------------------------- blobs


def test_the_blob_digest_is_the_update_digest_and_decoding_checks_it() -> None:
    update = np.linspace(-1, 1, DIM)
    blob = encode_update(update, shape=(DIM,), max_norm=MAX_NORM)
    assert blob_digest(blob) == aggregate_digest(quantize(update))
    assert np.array_equal(decode_update(blob, shape=(DIM,), max_norm=MAX_NORM), quantize(update))
    cases = {
        b"not a blob": "not an ailedger fixed-point update blob",
        blob[:-1]: "47 bytes of values, 48 expected",
        blob + b"\x00" * 8: "56 bytes of values, 48 expected",
        blob[:24] + struct.pack("<B", 16) + blob[25:]: "fixed point with 16 fractional bits",
    }
    for bad, reason in cases.items():
        with pytest.raises(UpdateRejected, match=reason.replace("(", r"\(")):
            decode_update(bad, shape=(DIM,), max_norm=MAX_NORM)
    with pytest.raises(UpdateRejected, match="wrong shape"):
        decode_update(blob, shape=(DIM, 1), max_norm=MAX_NORM)
    with pytest.raises(UpdateRejected, match="wrong shape"):
        encode_update(np.zeros(3), shape=(DIM,), max_norm=MAX_NORM)
    with pytest.raises(UpdateRejected, match="non-finite"):
        encode_update(np.full(DIM, np.inf), shape=(DIM,), max_norm=MAX_NORM)


# --------------------------------------------------------------------------- the demo


def test_demo_training_excludes_the_malicious_party(tmp_path: Path) -> None:
    signer = new_signer()
    with Ledger.embedded(
        tmp_path / "chain", signer=signer, genesis_balances={signer.address: 10**24}
    ) as ledger:
        lines: list[str] = []
        report = demo_training(ledger, blobs_dir=tmp_path / "blobs", rounds=3, say=lines.append)
    malicious = [p for p in report["parties"] if p["role"] == "malicious"]
    assert len(malicious) == 1
    assert report["malicious_excluded"] is True
    assert report["excluded"] == [malicious[0]["address"]]
    assert [r["status"] for r in report["rounds"]] == ["finalized"] * 3
    assert malicious[0]["address"] not in report["rounds"][-1]["accepted"]
    assert malicious[0]["contribution"] < min(
        p["contribution"] for p in report["parties"] if p["role"] == "honest"
    )
    assert report["final_accuracy"] > 0.7
    assert len(lines) == 4
