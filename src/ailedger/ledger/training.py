"""Federated training rounds on chain: a typed client of the ``TrainingTask`` contract.

One contract holds many tasks, each known by its id. A round has three phases with deadlines
in blocks (commit, reveal, attest; see the contract's docstring in ``TrainingTask.vy``). The
commitment is ``keccak256(update_digest ‖ salt ‖ sender)`` (:func:`commitment`); a revert
raises :class:`~ailedger.errors.TransactionReverted` whose ``reason`` is the contract's
message (``"not a participant"``, ``"reveal does not match the commitment"``, ...).

The windows may change while a task runs: :meth:`TrainingTask.propose_windows` proposes
those of the rounds after the current one; once a quorum proposed the same three in one
round they apply from the next round's start (``WindowsChanged`` events,
:meth:`TrainingTask.window_changes`).
:meth:`TrainingTask.round_record` reads what a closed round's timing was on chain: its
schedule and the block that included each party's commit, reveal and attestation.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3.logs import DISCARD

from ailedger.errors import InputError, LedgerError
from ailedger.ledger._ledger import Ledger, PendingTransaction, Receipt
from ailedger.ledger.contracts import load_artifact

__all__ = [
    "Attestation",
    "Outcome",
    "PartyState",
    "Phase",
    "RoundRecord",
    "RoundState",
    "TaskInfo",
    "TrainingTask",
    "WindowChange",
    "Windows",
    "commitment",
    "rule_id",
]

_MAX_PARTICIPANTS = 64
_MAX_ENDPOINT = 256
_ANNOUNCED_TOPIC = "0x" + keccak(text="Announced(uint256,address,string)").hex()
# the events that date a round's phases and its parties' exclusions, by topic
_ROUND_TOPICS = {
    "0x" + keccak(text=signature).hex(): signature.partition("(")[0]
    for signature in (
        "Schedule(uint256,uint256,uint256,uint256,uint256)",
        "Committed(uint256,uint256,address,bytes32)",
        "Revealed(uint256,uint256,address,bytes32)",
        "Attested(uint256,uint256,address,bytes32,bytes32)",
        "PartyExcluded(uint256,address,uint256)",
    )
}
# Gas limits sent with each call, so no estimate is needed (a revert is then mined and its
# reason read back by replaying the call). Measured maxima with a margin: an attestation that
# finalizes a round and starts the next costs about 135 000.
_GAS = {
    "announce": 60_000,
    "commit": 120_000,
    "reveal": 150_000,
    "attest": 250_000,
    "advance": 200_000,
    "vote_exclude": 150_000,
    "record": 250_000,
    "propose_windows": 120_000,
}
#: the largest phase window the contract takes (blocks)
MAX_PHASE_BLOCKS = 2**32


class Phase(enum.IntEnum):
    """Phase of a task's current round at the latest block (``NONE``: no such task)."""

    NONE = 0
    COMMIT = 1
    REVEAL = 2
    ATTEST = 3
    EXPIRED = 4
    FINISHED = 5


@dataclass(frozen=True, kw_only=True)
class TaskInfo:
    """A task's fixed settings and progress. ``rule_id`` is :func:`rule_id` of the rule name."""

    task: int
    creator: str
    spec_digest: bytes
    rule_id: bytes
    rounds: int
    quorum: int
    commit_blocks: int
    reveal_blocks: int
    attest_blocks: int
    participants: int
    active: int
    round: int
    finished: bool

    @property
    def rule(self) -> str:
        """The rule's name, decoded from ``rule_id``."""
        return self.rule_id.rstrip(b"\x00").decode("ascii", errors="replace")


@dataclass(frozen=True, kw_only=True)
class RoundState:
    """The current round: phase, deadlines (block numbers, each exclusive) and counters."""

    round: int
    phase: Phase
    commit_end: int
    reveal_end: int
    attest_end: int
    committed: int
    revealed: int
    attested: int
    leader: bytes | None
    leader_votes: int


@dataclass(frozen=True, kw_only=True)
class PartyState:
    """One account's standing in a task; ``*_round`` is the last round it acted in, or None;
    ``update_digest`` is the digest it revealed in ``revealed_round`` (None if it never did).
    """

    party: str
    participant: bool
    excluded: bool
    exclusion_votes: int
    committed_round: int | None
    revealed_round: int | None
    attested_round: int | None
    update_digest: bytes | None


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How a round ended: ``status`` is ``pending``, ``finalized`` or ``failed``."""

    status: str
    aggregate_digest: bytes | None
    votes: int


@dataclass(frozen=True, kw_only=True)
class Attestation:
    """A participant's attestation of a round (from the ``Attested`` events)."""

    party: str
    aggregate_digest: bytes
    scores_digest: bytes
    block_number: int


@dataclass(frozen=True, kw_only=True)
class Windows:
    """The three phase windows of a round, in blocks."""

    commit_blocks: int
    reveal_blocks: int
    attest_blocks: int

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.commit_blocks, self.reveal_blocks, self.attest_blocks)


@dataclass(frozen=True, kw_only=True)
class WindowChange:
    """Windows a quorum adopted (a ``WindowsChanged`` event): they apply from ``round`` on;
    ``block_number`` is where the quorum was reached (in round ``round - 1``)."""

    round: int
    windows: Windows
    block_number: int


@dataclass(frozen=True, kw_only=True)
class RoundRecord:
    """The timing of one round as the chain recorded it (block numbers).

    ``start`` is the block that started the round (its first ``Schedule`` event);
    ``commit_end``/``reveal_end``/``attest_end`` the deadlines it started with, and
    ``final_commit_end``/``final_reveal_end`` the ends of its commit and reveal phases after
    any early close (its last ``Schedule`` event). ``commits``, ``reveals`` and ``attests``
    map each party that acted to the block that included its transaction; ``exclusions``
    each party excluded in the blocks the query covered, to the block it was.
    """

    round: int
    start: int
    commit_end: int
    reveal_end: int
    attest_end: int
    final_commit_end: int
    final_reveal_end: int
    commits: dict[str, int]
    reveals: dict[str, int]
    attests: dict[str, int]
    exclusions: dict[str, int]

    @property
    def windows(self) -> Windows:
        """The windows the round started with."""
        return Windows(
            commit_blocks=self.commit_end - self.start,
            reveal_blocks=self.reveal_end - self.commit_end,
            attest_blocks=self.attest_end - self.reveal_end,
        )


def rule_id(name: str) -> bytes:
    """The 32-byte id of an aggregation rule: its ASCII name, left-aligned, zero-padded."""
    raw = name.encode("ascii", errors="replace")
    if not name.isascii() or not raw or len(raw) > 32:
        raise InputError(f"a rule name must be 1 to 32 ASCII characters, got {name!r}")
    return raw.ljust(32, b"\x00")


def commitment(update_digest: bytes, salt: bytes, sender: str) -> bytes:
    """``keccak256(update_digest ‖ salt ‖ sender)``, what :meth:`TrainingTask.commit` takes."""
    _check_bytes32("update_digest", update_digest)
    _check_bytes32("salt", salt)
    return bytes(keccak(update_digest + salt + bytes.fromhex(_address(sender)[2:])))


class TrainingTask:
    """The ``TrainingTask`` contract at ``address`` on ``ledger``'s chain."""

    NAME = "TrainingTask"

    def __init__(self, *, ledger: Ledger, address: str) -> None:
        self.ledger = ledger
        self._contract = ledger.contract(load_artifact(self.NAME), address)
        self.address = str(self._contract.address)

    @classmethod
    def deploy(cls, ledger: Ledger) -> TrainingTask:
        address, _ = ledger.deploy(load_artifact(cls.NAME))
        return cls(ledger=ledger, address=address)

    def with_ledger(self, ledger: Ledger) -> TrainingTask:
        """The same contract through another ledger (e.g. one signing as another party)."""
        return TrainingTask(ledger=ledger, address=self.address)

    # -- transactions ---------------------------------------------------------------------

    def create_task(
        self,
        *,
        spec_digest: bytes,
        participants: list[str],
        rounds: int,
        quorum: int,
        rule: str,
        commit_blocks: int,
        reveal_blocks: int,
        attest_blocks: int,
    ) -> tuple[int, Receipt]:
        """Create a task; returns its id and the receipt. Round 0 starts at once."""
        _check_bytes32("spec_digest", spec_digest)
        if not 1 <= len(participants) <= _MAX_PARTICIPANTS:
            raise InputError(f"a task needs 1 to {_MAX_PARTICIPANTS} participants")
        for name, value in (
            ("rounds", rounds),
            ("quorum", quorum),
            ("commit_blocks", commit_blocks),
            ("reveal_blocks", reveal_blocks),
            ("attest_blocks", attest_blocks),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        call = self._contract.functions.create_task(
            spec_digest,
            [_address(p) for p in participants],
            rounds,
            quorum,
            rule_id(rule),
            commit_blocks,
            reveal_blocks,
            attest_blocks,
        )
        receipt = self.ledger.transact(call)
        events = self._contract.events.TaskCreated().process_receipt(receipt.raw, errors=DISCARD)
        if len(events) != 1:
            raise LedgerError("create_task emitted no TaskCreated event")
        return int(events[0]["args"]["task"]), receipt

    def announce(self, task: int, endpoint: str) -> Receipt:
        """Publish the URL where this account serves its blobs (an event only)."""
        if len(endpoint.encode()) > _MAX_ENDPOINT:
            raise InputError(f"an endpoint is at most {_MAX_ENDPOINT} bytes")
        return self._transact("announce", self._contract.functions.announce(task, endpoint))

    def send_commit(self, task: int, round: int, commitment: bytes) -> PendingTransaction:
        """Broadcast a commitment without waiting."""
        _check_bytes32("commitment", commitment)
        return self._send("commit", self._contract.functions.commit(task, round, commitment))

    def commit(self, task: int, round: int, commitment: bytes) -> Receipt:
        return self.ledger.wait(self.send_commit(task, round, commitment))

    def reveal(self, task: int, round: int, update_digest: bytes, salt: bytes) -> Receipt:
        _check_bytes32("update_digest", update_digest)
        _check_bytes32("salt", salt)
        return self._transact(
            "reveal", self._contract.functions.reveal(task, round, update_digest, salt)
        )

    def attest(
        self, task: int, round: int, aggregate_digest: bytes, scores_digest: bytes
    ) -> Receipt:
        _check_bytes32("aggregate_digest", aggregate_digest)
        _check_bytes32("scores_digest", scores_digest)
        return self._transact(
            "attest", self._contract.functions.attest(task, round, aggregate_digest, scores_digest)
        )

    def advance(self, task: int) -> Receipt:
        """Close the current round after its attest deadline (anyone may)."""
        return self._transact("advance", self._contract.functions.advance(task))

    def vote_exclude(self, task: int, party: str) -> Receipt:
        return self._transact(
            "vote_exclude", self._contract.functions.vote_exclude(task, _address(party))
        )

    def propose_windows(
        self, task: int, round: int, commit_blocks: int, reveal_blocks: int, attest_blocks: int
    ) -> Receipt:
        """Propose the windows (blocks) of the rounds after ``round``, the current one."""
        for name, value in (
            ("commit_blocks", commit_blocks),
            ("reveal_blocks", reveal_blocks),
            ("attest_blocks", attest_blocks),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{name} must be a non-negative integer, got {value!r}")
            if value >= 2**256:
                raise InputError(f"{name} is out of range")
        call = self._contract.functions.propose_windows(
            task, round, commit_blocks, reveal_blocks, attest_blocks
        )
        return self._transact("propose_windows", call)

    def record(
        self, task: int, round: int, aggregate_digest: bytes, scores_digest: bytes
    ) -> Receipt:
        """Record a round of a single-participant task (its creator aggregates alone)."""
        _check_bytes32("aggregate_digest", aggregate_digest)
        _check_bytes32("scores_digest", scores_digest)
        return self._transact(
            "record", self._contract.functions.record(task, round, aggregate_digest, scores_digest)
        )

    # -- reads ----------------------------------------------------------------------------

    def task_count(self) -> int:
        return int(self.ledger.call(self._contract.functions.task_count()))

    def task_info(self, task: int) -> TaskInfo:
        raw = self.ledger.call(self._contract.functions.task_info(task))
        (creator, spec, rule, rounds, quorum, cb, rb, ab, n, active, round_, finished) = raw
        return TaskInfo(
            task=task,
            creator=str(creator),
            spec_digest=bytes(spec),
            rule_id=bytes(rule),
            rounds=int(rounds),
            quorum=int(quorum),
            commit_blocks=int(cb),
            reveal_blocks=int(rb),
            attest_blocks=int(ab),
            participants=int(n),
            active=int(active),
            round=int(round_),
            finished=bool(finished),
        )

    def windows(self, task: int) -> Windows:
        """The windows the task's rounds start with now (the current round's, unless a
        change was adopted and applied since it started)."""
        info = self.task_info(task)
        return Windows(
            commit_blocks=info.commit_blocks,
            reveal_blocks=info.reveal_blocks,
            attest_blocks=info.attest_blocks,
        )

    def pending_windows(self, task: int) -> Windows | None:
        """The windows a quorum adopted in the current round (the next round starts with
        them), or None."""
        c, r, a = self.ledger.call(self._contract.functions.pending_windows(task))
        if not int(c):
            return None
        return Windows(commit_blocks=int(c), reveal_blocks=int(r), attest_blocks=int(a))

    def window_changes(self, task: int, *, from_block: int = 0) -> list[WindowChange]:
        """Every window change a quorum adopted in ``task``, oldest first."""
        return [
            WindowChange(
                round=int(e["round"]),
                windows=Windows(
                    commit_blocks=int(e["commit_blocks"]),
                    reveal_blocks=int(e["reveal_blocks"]),
                    attest_blocks=int(e["attest_blocks"]),
                ),
                block_number=int(e["block_number"]),
            )
            for e in self.events(task, "WindowsChanged", from_block=from_block)
        ]

    def window_proposals(self, task: int, round: int, *, from_block: int = 0) -> dict[str, Windows]:
        """What each party proposed in ``round`` (address to windows)."""
        logs = self.ledger.logs(
            self._contract,
            "WindowsProposed",
            from_block=from_block,
            argument_filters={"task": task, "round": round},
        )
        return {
            str(e["args"]["party"]): Windows(
                commit_blocks=int(e["args"]["commit_blocks"]),
                reveal_blocks=int(e["args"]["reveal_blocks"]),
                attest_blocks=int(e["args"]["attest_blocks"]),
            )
            for e in logs
        }

    def round_record(self, task: int, round: int, *, from_block: int = 0) -> RoundRecord:
        """The on-chain timing of ``round`` (see :class:`RoundRecord`); :class:`InputError` if
        the round never started. Its ``exclusions`` are every ``PartyExcluded`` event from
        ``from_block`` to the head. One log query, whose cost grows with its block range:
        give ``from_block`` at or before the round's start, as close to it as known."""
        query = {
            "address": self.address,
            "fromBlock": from_block,
            "toBlock": "latest",
            "topics": [list(_ROUND_TOPICS), "0x" + task.to_bytes(32, "big").hex()],
        }
        raw = self.ledger._rpc(lambda: self.ledger.w3.eth.get_logs(query))  # type: ignore[arg-type]
        found: dict[str, list[Any]] = {name: [] for name in _ROUND_TOPICS.values()}
        for log in sorted(raw, key=lambda e: (int(e["blockNumber"]), int(e["logIndex"]))):
            topics = log["topics"]
            name = _ROUND_TOPICS.get("0x" + bytes(topics[0]).hex()) if topics else None
            if name is None:
                continue
            event = getattr(self._contract.events, name)().process_log(log)
            if name == "PartyExcluded" or int(event["args"]["round"]) == round:
                found[name].append(event)
        schedules = found["Schedule"]
        if not schedules:
            raise InputError(f"round {round} of task {task} has not started")
        first, last = schedules[0], schedules[-1]

        def acted(event: str) -> dict[str, int]:
            return {str(e["args"]["party"]): int(e["blockNumber"]) for e in found[event]}

        return RoundRecord(
            round=round,
            start=int(first["blockNumber"]),
            commit_end=int(first["args"]["commit_end"]),
            reveal_end=int(first["args"]["reveal_end"]),
            attest_end=int(first["args"]["attest_end"]),
            final_commit_end=int(last["args"]["commit_end"]),
            final_reveal_end=int(last["args"]["reveal_end"]),
            commits=acted("Committed"),
            reveals=acted("Revealed"),
            attests=acted("Attested"),
            exclusions=acted("PartyExcluded"),
        )

    def participants(self, task: int) -> list[str]:
        return [str(a) for a in self.ledger.call(self._contract.functions.participants(task))]

    def round_state(self, task: int) -> RoundState:
        raw = self.ledger.call(self._contract.functions.round_state(task))
        round_, phase, ce, re, ae, committed, revealed, attested, leader, votes = raw
        return RoundState(
            round=int(round_),
            phase=Phase(int(phase)),
            commit_end=int(ce),
            reveal_end=int(re),
            attest_end=int(ae),
            committed=int(committed),
            revealed=int(revealed),
            attested=int(attested),
            leader=bytes(leader) if int(votes) else None,
            leader_votes=int(votes),
        )

    def party_state(self, task: int, party: str) -> PartyState:
        return _party_state(
            self.ledger.call(self._contract.functions.party_state(task, _address(party)))
        )

    def party_states(self, task: int) -> list[PartyState]:
        """:meth:`party_state` of every participant, in one call."""
        return [
            _party_state(raw)
            for raw in self.ledger.call(self._contract.functions.party_states(task))
        ]

    def outcome(self, task: int, round: int) -> Outcome:
        status, digest, votes = self.ledger.call(self._contract.functions.outcome(task, round))
        name = {0: "pending", 1: "finalized", 2: "failed"}[int(status)]
        return Outcome(
            status=name,
            aggregate_digest=bytes(digest) if int(status) == 1 else None,
            votes=int(votes),
        )

    def created_block(self, task: int) -> int:
        """The block in which ``task`` was created (where its events start)."""
        logs = self.ledger.logs(self._contract, "TaskCreated", argument_filters={"task": task})
        if not logs:
            raise InputError(f"no task {task} on the TrainingTask at {self.address}")
        return int(logs[0]["blockNumber"])

    def reveals(self, task: int, round: int, *, from_block: int = 0) -> dict[str, bytes]:
        """Each revealing party's update digest in ``round`` (address to digest)."""
        logs = self.ledger.logs(
            self._contract,
            "Revealed",
            from_block=from_block,
            argument_filters={"task": task, "round": round},
        )
        return {str(e["args"]["party"]): bytes(e["args"]["update_digest"]) for e in logs}

    def revealed_rounds(self, task: int, *, from_block: int = 0) -> dict[bytes, int]:
        """Every update digest revealed in ``task``, with the round that revealed it."""
        logs = self.ledger.logs(
            self._contract, "Revealed", from_block=from_block, argument_filters={"task": task}
        )
        return {bytes(e["args"]["update_digest"]): int(e["args"]["round"]) for e in logs}

    def attestations(self, task: int, round: int, *, from_block: int = 0) -> list[Attestation]:
        logs = self.ledger.logs(
            self._contract,
            "Attested",
            from_block=from_block,
            argument_filters={"task": task, "round": round},
        )
        return [
            Attestation(
                party=str(e["args"]["party"]),
                aggregate_digest=bytes(e["args"]["aggregate_digest"]),
                scores_digest=bytes(e["args"]["scores_digest"]),
                block_number=int(e["blockNumber"]),
            )
            for e in logs
        ]

    def endpoints(self, task: int, *, from_block: int = 0) -> dict[str, str]:
        """Where each participant serves its blobs (its latest announcement).

        An endpoint is whatever bytes its party sent (the contract cannot check UTF-8), so the
        logs are decoded here, not by web3 (whose decoder raises on one bad string, for every
        reader): bytes that are not UTF-8 are replaced, and the fetch then refuses that
        party's endpoint, making it faulty and no one else.
        """
        query = {
            "address": self.address,
            "fromBlock": from_block,
            "toBlock": "latest",
            "topics": [_ANNOUNCED_TOPIC, "0x" + task.to_bytes(32, "big").hex()],
        }
        logs = self.ledger._rpc(lambda: self.ledger.w3.eth.get_logs(query))  # type: ignore[arg-type]
        found: dict[str, str] = {}
        for log in logs:
            topics, data = log["topics"], bytes(log["data"])
            if len(topics) != 3:
                continue
            try:
                (raw,) = abi_decode(["bytes"], data)
            except (DecodingError, ValueError):
                continue
            party = to_checksum_address(bytes(topics[2])[-20:])
            found[party] = bytes(raw)[:_MAX_ENDPOINT].decode("utf-8", "replace")
        return found

    def events(self, task: int, event: str, *, from_block: int = 0) -> list[dict[str, Any]]:
        """Decoded ``event`` logs of ``task`` as dicts (``args`` plus ``block_number``)."""
        logs = self.ledger.logs(
            self._contract, event, from_block=from_block, argument_filters={"task": task}
        )
        return [{**dict(e["args"]), "block_number": int(e["blockNumber"])} for e in logs]

    def _send(self, name: str, call: Any) -> PendingTransaction:
        data = call._encode_transaction_data()
        return self.ledger.send({"to": self.address, "data": data, "gas": _GAS[name]})

    def _transact(self, name: str, call: Any) -> Receipt:
        return self.ledger.wait(self._send(name, call))


def _party_state(raw: Any) -> PartyState:
    party, participant, excluded, votes, committed, revealed, attested, digest = raw

    def last(value: Any) -> int | None:
        return int(value) - 1 if int(value) else None

    return PartyState(
        party=str(party),
        participant=bool(participant),
        excluded=bool(excluded),
        exclusion_votes=int(votes),
        committed_round=last(committed),
        revealed_round=last(revealed),
        attested_round=last(attested),
        update_digest=bytes(digest) if int(revealed) else None,
    )


def _check_bytes32(what: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise InputError(f"{what} must be 32 bytes")


def _address(value: str) -> str:
    try:
        return str(to_checksum_address(value))
    except (TypeError, ValueError) as exc:
        raise InputError(f"not an Ethereum address: {value!r}") from exc
