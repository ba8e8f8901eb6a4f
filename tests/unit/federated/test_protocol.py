"""The round protocol over a real chain, with honest and faulty parties in one process."""

from __future__ import annotations

import struct
import time
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
from ailedger.federated.transport import BlobServer, BlobStore, blob_digest
from ailedger.ledger import Ledger, Receipt
from ailedger.ledger.training import TrainingTask
from tests.conftest import Chain, free_port, new_signer
from tests.unit.federated.test_transport import HostilePeer, drip, reply

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


# --------------------------------------------------------------------------- hostile endpoints


class Unreachable(Party):
    """A party whose blob is nowhere the others can fetch it: it keeps it aside and
    announces ``endpoint`` (malformed, refusing, lying or dripping), so it computes what
    the honest parties compute and the round still finalizes."""

    def publish(self, blob: bytes) -> bytes:
        return BlobStore(self.store.directory / "aside").put(blob)


class NotUtf8(Unreachable):
    """Announces bytes that are not UTF-8 (the contract takes any bytes as a string), with
    calldata built by hand, as a hostile party would."""

    def step(self) -> bool:
        if self._announced:
            return super().step()
        self._announced = True
        call = self.contract._contract.functions.announce(self.task, "ZZZZ")
        data = call._encode_transaction_data().replace("5a5a5a5a", "ff3a2fc0")
        ledger = self.contract.ledger
        ledger.wait(ledger.send({"to": self.contract.address, "data": data, "gas": 200_000}))
        return True


def hostile_federation(
    chain: Chain,
    tmp_path: Path,
    endpoints: list[str],
    *,
    fetch_timeout: float = 10.0,
    kind: type[Party] = Unreachable,
) -> tuple[TrainingTask, int, list[Party], list[Party]]:
    """Three honest parties serving over HTTP (each its own store and server) and one
    :class:`Unreachable` party per endpoint; runs one round and returns the parties."""
    miner = chain.ledger(new_signer())
    contract = TrainingTask.deploy(miner)
    n = 3 + len(endpoints)
    ledgers = [chain.ledger(new_signer()) for _ in range(n)]
    spec = TaskSpec(
        shape=(DIM,),
        initial_digest=model_digest(np.zeros(DIM)),
        rounds=1,
        quorum=n // 2 + 1,
        max_norm=MAX_NORM,
        commit_blocks=3 * n + 4,
        reveal_blocks=3 * n + 4,
        attest_blocks=3 * n + 4,
    )
    task, _ = create_task(contract, spec, [lg.account for lg in ledgers])
    parties: list[Party] = []
    servers: list[BlobServer] = []
    for i, ledger in enumerate(ledgers):
        train, evaluate = linear_party(i)
        store = BlobStore(tmp_path / f"party{i}")
        server = BlobServer(store) if i < 3 else None
        if server is not None:
            servers.append(server)
        parties.append(
            (Party if i < 3 else kind)(
                contract=contract.with_ledger(ledger),
                task=task,
                spec=spec,
                initial_params=np.zeros(DIM),
                train=train,
                evaluate=evaluate,
                store=store,
                endpoint=server.url if server else endpoints[i - 3],
                server=server,
                fetch_timeout=fetch_timeout,
            )
        )
    try:
        run_local(parties, miner=miner)
    finally:
        for server in servers:
            server.close()
    return contract, task, parties[:3], parties[3:]


ISSUE_CASES = ["unclosed-ipv6", "space", "liar"]
ALL_CASES = [*ISSUE_CASES, "ftp", "no-host", "wildcard", "refused", "500", "too-large"]


@pytest.mark.parametrize(
    ("backend", "cases"), [("embedded", ISSUE_CASES), ("anvil", ALL_CASES)]
)  # the embedded chain's log queries are slow with many parties: the full list on anvil
def test_hostile_endpoints_make_their_party_faulty_never_the_caller(
    chain: Chain, tmp_path: Path, cases: list[str]
) -> None:
    liar = HostilePeer(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwrong"))
    broken = HostilePeer(reply(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"))
    huge = HostilePeer(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n"))
    closed = f"http://127.0.0.1:{free_port()}"
    known = {
        "unclosed-ipv6": ("http://[::1", "malformed blob endpoint 'http://[::1'"),
        "space": ("http://a b/", "malformed blob endpoint 'http://a b/': contains white space"),
        "ftp": ("ftp://x", "malformed blob endpoint 'ftp://x': unsupported scheme 'ftp'"),
        "no-host": ("http://", "malformed blob endpoint 'http://': no host"),
        "wildcard": ("http://0.0.0.0:80", "is no address to fetch from"),
        "refused": (closed, "is unreachable"),
        "500": (broken.url, "answered 500"),
        "too-large": (huge.url, "exceeds 67108864 bytes"),
        "liar": (liar.url, "blob does not match its revealed digest"),
    }
    expected = dict(known[case] for case in cases)
    try:
        contract, task, honest, bad = hostile_federation(chain, tmp_path, list(expected))
    finally:
        for peer in (liar, broken, huge):
            peer.close()
    outcome = contract.outcome(task, 0)
    assert outcome.status == "finalized"
    assert outcome.aggregate_digest is not None
    assert len({p.global_digest() for p in honest}) == 1
    for party in honest:
        report = party.reports[0]
        assert report.aggregate_digest == outcome.aggregate_digest.hex()
        assert sorted(report.accepted) == sorted(p.address for p in honest)
        for odd, endpoint in zip(bad, expected, strict=True):
            assert expected[endpoint] in report.rejected[odd.address], report.rejected
            assert odd.address in report.flagged
            assert report.scores[odd.address] == 0.0
    # each honest server serves the task's blobs its party holds, nothing else of its store
    digests = {p.address: contract.party_state(task, p.address).update_digest for p in honest}
    for party in honest:
        assert party.server is not None
        assert all(party.server.allowed(d) for d in digests.values() if d is not None)
        assert not any(
            party.server.allowed(contract.party_state(task, odd.address).update_digest or b"")
            for odd in bad
        )
        assert not party.server.allowed(party.store.put(b"another task's blob"))


@pytest.mark.parametrize("backend", ["anvil"])
def test_an_endpoint_that_is_not_utf8_makes_its_party_faulty(chain: Chain, tmp_path: Path) -> None:
    contract, task, honest, (odd,) = hostile_federation(chain, tmp_path, [""], kind=NotUtf8)
    assert contract.endpoints(task)[odd.address] == "\ufffd:/\ufffd"
    assert contract.outcome(task, 0).status == "finalized"
    for party in honest:
        reason = party.reports[0].rejected[odd.address]
        assert reason.startswith("blob unavailable: malformed blob endpoint '\ufffd:/\ufffd'")


@pytest.mark.parametrize("backend", ["anvil"])
def test_slow_drip_parties_cannot_stall_the_round(chain: Chain, tmp_path: Path) -> None:
    trickle = b"HTTP/1.1 200 OK\r\nContent-Length: 9999\r\n\r\n" + b"x" * 99
    dripping = [HostilePeer(drip(trickle)) for _ in range(2)]
    started = time.monotonic()
    try:
        contract, task, honest, slow = hostile_federation(
            chain, tmp_path, [p.url for p in dripping], fetch_timeout=1.0
        )
    finally:
        for peer in dripping:
            peer.close()
    assert contract.outcome(task, 0).status == "finalized"
    for party in honest:
        assert sorted(party.reports[0].accepted) == sorted(p.address for p in honest)
        for odd, peer in zip(slow, dripping, strict=True):
            reason = party.reports[0].rejected[odd.address]
            assert reason.startswith(f"blob unavailable: {peer.url}/")
            assert "did not deliver within 1 s" in reason
    # five parties, each waiting at most 2 x fetch_timeout for both dripping blobs together
    assert time.monotonic() - started < 60
