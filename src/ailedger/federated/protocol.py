"""The federated round protocol over the ledger: one state machine per party.

A task (the ``TrainingTask`` contract, :mod:`ailedger.ledger.training`) lists the participant
accounts; its :class:`TaskSpec` (shape, rule, thresholds; its SHA-256 is on chain) is shared
off chain. Each round, every party, in its own process or all in one:

1. trains: ``train(global_params) -> update``, any model on a flat parameter vector;
2. writes the update blob: the canonical fixed-point bytes of
   :func:`ailedger.federated.aggregate.aggregate_digest` (``rint(x * 2**24)`` as int64 with its
   shape), so the blob's SHA-256 *is* the update's aggregate digest; an update that is not
   finite, has the wrong shape or too large a norm is refused before anything is sent;
3. commits ``keccak256(digest ‖ salt ‖ account)`` (commit-reveal, so nobody can copy another's
   update), waits for the commit phase to end, and reveals ``(digest, salt)``;
4. fetches every revealed blob from its owner (or any party holding it, since blobs are
   content-addressed, :mod:`.transport`), checks it against the revealed digest, and validates
   it; a blob that does not match, is malformed (:func:`decode_update`: truncated, wrong
   shape, a coordinate out of the fixed-point range, which is where an infinity or overflow
   ends up, or a norm above the task's ``max_norm``), or replays a digest revealed in an
   earlier round is rejected with a reason, and so is a party that committed but never
   revealed;
5. aggregates the accepted updates (in the canonical order of their addresses) with the
   task's rule, deterministically and bit for bit (:mod:`.aggregate`), and scores each party's
   contribution (GTG-Shapley, Liu et al. 2022, over FedAvg reconstructions of coalitions as
   in the paper, with the party's own ``evaluate``; without one, the rule's weights);
6. votes to exclude every party flagged (by the rule, or rejected in step 4) in at least
   ``exclude_after`` rounds and in at least ``exclude_fraction`` of the rounds it committed
   in (robust rules also flag honest parties now and then: Multi-Krum always drops ``f``),
   unless that would leave no more active parties than the quorum, then attests the
   aggregate's digest and the digest of its scores (SHA-256 of RFC 8785 JSON);
7. once the round is closed on chain (a quorum attested one digest, or the deadline passed),
   applies the finalized aggregate to its copy of the global model (in fixed point, so every
   party holds the same bits) or, for a failed round, keeps the model, and goes on.

A round never waits for a silent party: phases close early once everyone acted and otherwise
at their deadlines; after the attest deadline any party calls ``advance``. On a development
node that mines only when it receives a transaction (anvil's automine, the embedded chain),
:meth:`Party.run` sends a 0-wei transfer to itself when the chain has not moved for a while,
so deadlines still arrive.

Tasks with the stateful ``reputation`` rule (:mod:`.reputation`, issue 13) add to this:

- the spec names a public validation set by its provenance registration
  (:class:`PublicSet`: registrant and digest, registered with ``provenance register``); each
  party checks its local copy against that registration before use (:func:`check_public_set`)
  and, each round, trains the reference update on it from the current global model
  (``reference(global_params, round)``), quantised to the fixed-point grid, so the reference
  digest is the same at every party. A spec with ``fallback`` uses the rule's reference
  estimated from the updates instead (narrower scope, see :mod:`.reputation`); a reputation
  spec with neither is refused;
- the reputation state is derived from finalized rounds only: a party starts from the initial
  state and applies each finalized round's result in order, so one that joins late or
  restarts replays the rounds from the chain and the blobs (never taking a peer's state);
- the attestation binds the round: its aggregate slot holds the *round digest*
  ``SHA-256("ailedger/reputation-round/v1" ‖ 0x00 ‖ aggregate ‖ state ‖ reference)`` (so the
  quorum agrees on the aggregate, the state after the round and the reference together) and
  its scores slot the reference digest; a party that attests another reference digest, or
  another round digest, is faulty for the round (flagged, the round finalizes without it);
- the parties the rule excludes are voted on at once, as are the parties the sentinel marked
  for this task (:meth:`ailedger.sentinel.actions.TrainingExclusion.marked`).

A spec with ``timing: "adaptive"`` lets the parties change the phase windows as the task
runs, with no central authority (:mod:`.timing_chain`): after each round closes, every party
learns windows from the chain's record of the closed rounds only (the schedule and the block
that included each party's commit, reveal and attestation), so every honest party computes
the same three; it proposes them (``TrainingTask.propose_windows``) when they differ enough
from the windows in effect, and a quorum proposing the same ones makes them the windows of
the rounds after the next one starts. Parties silent for several rounds go to the exclusion
vote. Each round's report gives the windows the round ran with.

For every rule, each round's spread-to-signal ratio ``B**2`` (:func:`.reputation.spread_to_signal`)
goes into the round report, with a warning when the malicious fraction the task is sized for
reaches about ``1 / (2 + B**2)`` (Allouah et al., NeurIPS 2023).
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import math
import queue
import re
import secrets
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ailedger._fs import write_atomic
from ailedger._input import parse_json, read_bounded
from ailedger.crypto.canonical import canonical_json
from ailedger.errors import (
    AggregationError,
    AiledgerError,
    InputError,
    TransactionReverted,
    VerificationError,
)
from ailedger.federated.aggregate import (
    FRAC_BITS,
    MAX_ABS,
    RULES,
    SCALE,
    aggregate_digest,
    dequantize,
    quantize,
)
from ailedger.federated.contribution import gtg_shapley
from ailedger.federated.reputation import (
    ReputationResult,
    ReputationState,
    breakdown_warning,
    default_f,
    spread_to_signal,
)
from ailedger.federated.timing_chain import ChainTiming
from ailedger.federated.transport import (
    MAX_BLOB_BYTES,
    BlobMismatch,
    BlobServer,
    BlobStore,
    BlobUnavailable,
    fetch_any,
    parse_networks,
)
from ailedger.ledger import Ledger, Receipt
from ailedger.ledger.provenance import ProvenanceRegistry
from ailedger.ledger.training import Phase, RoundState, TrainingTask, Windows, commitment

__all__ = [
    "SPEC_FORMAT",
    "Evaluator",
    "LedgerRecorder",
    "Party",
    "PublicSet",
    "Reference",
    "RoundReport",
    "TaskRef",
    "TaskSpec",
    "Trainer",
    "TrainingError",
    "UpdateRejected",
    "check_public_set",
    "create_task",
    "decode_update",
    "encode_update",
    "model_digest",
    "round_digest",
    "run_local",
    "scores_digest",
]

FloatArray = npt.NDArray[np.float64]
FixedArray = npt.NDArray[np.int64]
#: ``train(global_params) -> update`` (same shape), the party's local training
Trainer = Callable[[FloatArray], npt.ArrayLike]
#: ``evaluate(params) -> utility`` (e.g. accuracy on the party's validation data)
Evaluator = Callable[[FloatArray], float]
#: ``reference(global_params, round) -> update``: training on the public validation set from
#: the global model, the same at every party (deterministic: seeded by the round, not by history)
Reference = Callable[[FloatArray, int], npt.ArrayLike]

SPEC_FORMAT = "ailedger/training-task/v1"
_DOMAIN = b"ailedger/fixed-point/v1\x00"
_MAX_ABS_FIXED = int(MAX_ABS) * SCALE
_FETCHERS = 8
_ROUND_CLOSED = ("not the current round", "task finished", "not in the attest phase")
_ROUND_DOMAIN = b"ailedger/reputation-round/v1\x00"
_TIMINGS = ("fixed", "adaptive")
# a window proposal that lost a race with the round's end, or was already made, is moot
_PROPOSAL_MOOT = ("already proposed", "not the current round", "task finished")


class UpdateRejected(VerificationError):
    """An update blob is unusable; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"update rejected: {reason}")


class TrainingError(AiledgerError):
    """The protocol cannot go on (the task is unknown, the spec differs from the chain's, a
    party's result disagrees with the finalized one, or the task did not finish in time)."""


# --------------------------------------------------------------------------- the task spec


@dataclass(frozen=True, kw_only=True)
class PublicSet:
    """A public validation set named by its provenance registration: ``registrant`` (the
    account that registered it, checksummed or not) and ``digest`` (64 lowercase hex digits,
    the root digest of its model-signing manifest, as ``provenance register`` prints);
    ``registry``, the ``ProvenanceRegistry`` contract holding the registration (each workspace
    deploys its own; ``train create`` names the creator's), or None for the party's own."""

    registrant: str
    digest: str
    registry: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.registrant, str) or not _ADDRESS.match(self.registrant):
            raise InputError("public_set: registrant must be an address (0x and 40 hex digits)")
        if not isinstance(self.digest, str) or not _HEX64.match(self.digest):
            raise InputError("public_set: digest must be 64 lowercase hex digits")
        if self.registry is not None and (
            not isinstance(self.registry, str) or not _ADDRESS.match(self.registry)
        ):
            raise InputError("public_set: registry must be an address (0x and 40 hex digits)")

    def to_json(self) -> dict[str, str]:
        doc = {"registrant": self.registrant, "digest": self.digest}
        return doc | ({"registry": self.registry} if self.registry else {})

    @classmethod
    def parse(cls, text: str) -> PublicSet:
        """``REGISTRANT:DIGEST``, the digest as 64 hex digits, optionally after ``0x`` or
        ``sha256:`` (the forms ``provenance register`` prints)."""
        registrant, sep, digest = text.strip().partition(":")
        if not sep:
            raise InputError("a public set is REGISTRANT:DIGEST (address, 64 hex digits)")
        digest = digest.strip()
        digest = digest.removeprefix("sha256:") if digest.startswith("sha256:") else digest
        return cls(registrant=registrant.strip(), digest=digest.removeprefix("0x").lower())


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """What every party of a task agrees on off chain; :meth:`digest` goes on chain.

    ``shape`` of the parameter vector (and so of every update); ``initial_digest`` the hex
    aggregate digest of the initial global model; ``rule`` a name of
    :data:`~ailedger.federated.aggregate.RULES` (not ``fltrust``, which needs a trusted server);
    ``max_norm`` bounds an update's L2 norm; ``rounds``, ``quorum`` and the phase lengths in
    blocks go to the contract; ``exclude_after`` and ``exclude_fraction`` govern exclusion
    votes; ``contribution`` is ``gtg`` or ``weights``; ``extra`` is free-form JSON (model,
    data, training settings) that the digest covers too.

    For the ``reputation`` rule: ``public_set`` names the public validation set the reference
    update is trained on, or ``fallback`` says the reference is estimated from the updates
    (one of the two is required). ``sized_for`` is the malicious fraction the task is sized
    for, in ``[0, 1)``, against which ``B**2`` is checked each round (default: the rule's
    :func:`~.reputation.default_f` over the number of participants). These three appear in
    the JSON (and so the digest) only when set, so older specs keep their digests.

    ``timing`` is ``fixed`` (the windows above, for the whole task) or ``adaptive`` (the
    parties learn the windows from the chain and change them by quorum, see the module
    docstring); it appears in the JSON only when adaptive.
    """

    shape: tuple[int, ...]
    initial_digest: str
    rounds: int
    quorum: int
    rule: str = "default"
    max_norm: float = 1000.0
    commit_blocks: int = 40
    reveal_blocks: int = 40
    attest_blocks: int = 40
    exclude_after: int = 2
    exclude_fraction: float = 0.5
    contribution: str = "gtg"
    extra: Mapping[str, Any] = field(default_factory=dict)
    public_set: PublicSet | None = None
    fallback: bool = False
    sized_for: float | None = None
    timing: str = "fixed"

    def __post_init__(self) -> None:
        if not self.shape or any(not isinstance(d, int) or d < 1 for d in self.shape):
            raise InputError(f"shape must be positive dimensions, got {self.shape!r}")
        if self.rule not in RULES or self.rule == "fltrust":
            usable = ", ".join(r for r in RULES if r != "fltrust")
            raise InputError(f"rule {self.rule!r} cannot run a task; use one of {usable}")
        if not 0 < self.max_norm <= MAX_ABS:
            raise InputError(f"max_norm must be in (0, {MAX_ABS:g}], got {self.max_norm!r}")
        for name in ("rounds", "quorum", "commit_blocks", "reveal_blocks", "attest_blocks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.exclude_after, bool) or self.exclude_after < 1:
            raise InputError(f"exclude_after must be >= 1, got {self.exclude_after!r}")
        if not 0 <= self.exclude_fraction <= 1:
            raise InputError(f"exclude_fraction must be in [0, 1], got {self.exclude_fraction}")
        if self.timing not in _TIMINGS:
            raise InputError(f"timing must be fixed or adaptive, got {self.timing!r}")
        if self.contribution not in ("gtg", "weights"):
            raise InputError(f"contribution must be gtg or weights, got {self.contribution!r}")
        if len(self.initial_digest) != 64:
            raise InputError("initial_digest must be 64 hex digits")
        if self.public_set is not None and not isinstance(self.public_set, PublicSet):
            raise InputError("public_set must be a PublicSet")
        if not isinstance(self.fallback, bool):
            raise InputError("fallback must be true or false")
        if self.sized_for is not None and not 0 <= self.sized_for < 1:
            raise InputError(f"sized_for must be a fraction in [0, 1), got {self.sized_for!r}")
        if self.rule == "reputation":
            if self.public_set is None and not self.fallback:
                raise InputError(
                    "rule reputation needs a public validation set (public_set: registrant "
                    "and digest of a set registered with `provenance register`), or fallback "
                    "for the narrower reference estimated from the updates"
                )
            if self.public_set is not None and self.fallback:
                raise InputError("give a public set or fallback, not both")
        elif self.public_set is not None or self.fallback:
            raise InputError(
                f"a public set or fallback reference needs rule reputation, not {self.rule!r}"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SPEC_FORMAT,
            "shape": list(self.shape),
            "initial_digest": self.initial_digest,
            "rounds": self.rounds,
            "quorum": self.quorum,
            "rule": self.rule,
            "max_norm": self.max_norm,
            "commit_blocks": self.commit_blocks,
            "reveal_blocks": self.reveal_blocks,
            "attest_blocks": self.attest_blocks,
            "exclude_after": self.exclude_after,
            "exclude_fraction": self.exclude_fraction,
            "contribution": self.contribution,
            "extra": dict(self.extra),
            **({"public_set": self.public_set.to_json()} if self.public_set else {}),
            **({"fallback": True} if self.fallback else {}),
            **({"sized_for": self.sized_for} if self.sized_for is not None else {}),
            **({"timing": self.timing} if self.timing != "fixed" else {}),
        }

    @classmethod
    def from_json(cls, doc: Any) -> TaskSpec:
        """The spec in ``doc`` (from outside: every field's type and range is checked, an
        unknown field is refused), or :class:`InputError` naming the first bad field."""
        where = "task spec"
        if not isinstance(doc, Mapping) or doc.get("format") != SPEC_FORMAT:
            raise InputError(f"not a training task spec (format {SPEC_FORMAT})")
        _known_fields(doc, _SPEC_FIELDS, where)
        shape = _field(doc, "shape", list, where)
        if not 1 <= len(shape) <= _MAX_DIMS:
            raise InputError(f"{where}: shape must have 1 to {_MAX_DIMS} dimensions")
        dims = tuple(
            _integer(shape, k, 1, _MAX_VALUES, f"{where} shape") for k in range(len(shape))
        )
        if math.prod(dims) > _MAX_VALUES:
            raise InputError(f"{where}: shape {dims} has more than {_MAX_VALUES} values")
        initial = _field(doc, "initial_digest", str, where)
        if not _HEX64.match(initial):
            raise InputError(f"{where}: initial_digest must be 64 lowercase hex digits")
        extra = _field(doc, "extra", Mapping, where, default={})
        public_set = None
        if "public_set" in doc:
            named = _field(doc, "public_set", Mapping, where)
            inner = f"{where} public_set"
            _known_fields(named, frozenset({"registrant", "digest", "registry"}), inner)
            public_set = PublicSet(
                registrant=_address(named, "registrant", inner),
                digest=_field(named, "digest", str, inner),
                registry=_address(named, "registry", inner) if "registry" in named else None,
            )
        fallback = _field(doc, "fallback", bool, where, default=False)
        sized_for = _number(doc, "sized_for", where) if "sized_for" in doc else None
        timing = _text(doc, "timing", where) if "timing" in doc else "fixed"
        if timing not in _TIMINGS:
            raise InputError(f"{where}: timing must be fixed or adaptive")
        return cls(
            shape=dims,
            initial_digest=initial,
            rounds=_integer(doc, "rounds", 1, _MAX_ROUNDS, where),
            quorum=_integer(doc, "quorum", 1, _MAX_PARTIES, where),
            rule=_text(doc, "rule", where),
            max_norm=_number(doc, "max_norm", where),
            commit_blocks=_integer(doc, "commit_blocks", 1, _MAX_BLOCKS, where),
            reveal_blocks=_integer(doc, "reveal_blocks", 1, _MAX_BLOCKS, where),
            attest_blocks=_integer(doc, "attest_blocks", 1, _MAX_BLOCKS, where),
            exclude_after=_integer(doc, "exclude_after", 1, _MAX_ROUNDS, where),
            exclude_fraction=_number(doc, "exclude_fraction", where),
            contribution=_text(doc, "contribution", where),
            extra=dict(extra),
            public_set=public_set,
            fallback=fallback,
            sized_for=sized_for,
            timing=timing,
        )

    def digest(self) -> bytes:
        """SHA-256 of the spec's RFC 8785 canonical JSON."""
        return hashlib.sha256(canonical_json(self.to_json())).digest()


@dataclass(frozen=True, kw_only=True)
class TaskRef:
    """What a party needs to join a task: the chain, the contract, the task id and the spec
    (the file ``ailedger train create`` writes and ``ailedger train join`` reads)."""

    chain_id: int
    contract: str
    task: int
    spec: TaskSpec
    participants: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "contract": self.contract,
            "task": self.task,
            "participants": list(self.participants),
            "spec": self.spec.to_json(),
            "spec_digest": self.spec.digest().hex(),
        }

    @classmethod
    def from_json(cls, doc: Any) -> TaskRef:
        """The task reference in ``doc`` (from outside: a task file), every field checked;
        :class:`InputError` naming the first bad one."""
        where = "task file"
        if not isinstance(doc, Mapping):
            raise InputError(f"{where}: not a JSON object")
        _known_fields(doc, _REF_FIELDS, where)
        contract = _address(doc, "contract", where)
        participants = _field(doc, "participants", list, where)
        if not 1 <= len(participants) <= _MAX_PARTIES:
            raise InputError(f"{where}: participants must list 1 to {_MAX_PARTIES} addresses")
        accounts = tuple(
            _address(participants, k, f"{where} participants") for k in range(len(participants))
        )
        if len({a.lower() for a in accounts}) != len(accounts):
            raise InputError(f"{where}: participants are not distinct")
        ref = cls(
            chain_id=_integer(doc, "chain_id", 1, 2**64 - 1, where),
            contract=contract,
            task=_integer(doc, "task", 0, 2**256 - 1, where),
            spec=TaskSpec.from_json(_field(doc, "spec", Mapping, where)),
            participants=accounts,
        )
        digest = ref.spec.digest().hex()  # also checks extra canonicalises (RFC 8785)
        if "spec_digest" in doc:
            claimed = _field(doc, "spec_digest", str, where)
            if claimed != digest:
                raise InputError(f"{where}: the spec does not match its spec_digest")
        return ref

    def save(self, path: Path) -> None:
        write_atomic(path, (json.dumps(self.to_json(), indent=1) + "\n").encode())

    @classmethod
    def load(cls, path: Path) -> TaskRef:
        """Read a task file (outside data: bounded in size and depth, UTF-8, no duplicate
        keys, every field checked); :class:`InputError` saying what is wrong."""
        try:
            with path.open("rb") as handle:
                data = read_bounded(handle, limit=_MAX_TASK_FILE, what=f"task file {path}")
        except OSError as exc:
            raise InputError(f"cannot read the task file {path}: {exc.strerror}") from exc
        return cls.from_json(parse_json(data, what=f"task file {path}"))


# the bounds of a task file's fields (the TrainingTask contract's, and a blob's size)
_MAX_TASK_FILE = 1024 * 1024
_MAX_DIMS = 8
_MAX_VALUES = MAX_BLOB_BYTES // 8
_MAX_ROUNDS = 2**32
_MAX_BLOCKS = 2**32
_MAX_PARTIES = 64
_MAX_TEXT = 64
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}\Z")
_SPEC_FIELDS = frozenset(
    TaskSpec(shape=(1,), initial_digest="0" * 64, rounds=1, quorum=1).to_json()
) | {"public_set", "fallback", "sized_for", "timing"}
_REF_FIELDS = frozenset({"chain_id", "contract", "task", "participants", "spec", "spec_digest"})
_MISSING = object()


def _known_fields(doc: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(str(k)[:40] for k in doc if k not in known)
    if unknown:
        raise InputError(f"{where}: unknown field {unknown[0]!r}")


def _field(
    doc: Mapping[str, Any] | list[Any],
    key: str | int,
    kind: type,
    where: str,
    default: Any = _MISSING,
) -> Any:
    """``doc[key]``, which must be a ``kind``; :class:`InputError` if missing or another type."""
    if isinstance(doc, list):
        value = doc[int(key)]
        name = f"{where}[{key}]"
    else:
        value = doc.get(str(key), default)
        name = f"{where}: {key}"
        if value is _MISSING:
            raise InputError(f"{where}: missing field {key!r}")
    if value is default:
        return value
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        expected = {list: "a list", Mapping: "an object", str: "a string", int: "an integer"}
        raise InputError(f"{name} must be {expected.get(kind, kind.__name__)}, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)


def _integer(
    doc: Mapping[str, Any] | list[Any], key: str | int, low: int, high: int, where: str
) -> int:
    value: int = _field(doc, key, int, where)
    if not low <= value <= high:
        name = f"{where}[{key}]" if isinstance(doc, list) else f"{where}: {key}"
        raise InputError(f"{name} must be in [{low}, {high}], got {str(value)[:40]}")
    return value


def _number(doc: Mapping[str, Any], key: str, where: str) -> float:
    value = doc.get(key, _MISSING)
    if value is _MISSING:
        raise InputError(f"{where}: missing field {key!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where}: {key} must be a number, not {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InputError(f"{where}: {key} must be a finite number")
    return number


def _text(doc: Mapping[str, Any], key: str, where: str) -> str:
    value: str = _field(doc, key, str, where)
    if len(value) > _MAX_TEXT:
        raise InputError(f"{where}: {key} is longer than {_MAX_TEXT} characters")
    return value


def _address(doc: Mapping[str, Any] | list[Any], key: str | int, where: str) -> str:
    value: str = _field(doc, key, str, where)
    if not _ADDRESS.match(value):
        name = f"{where}[{key}]" if isinstance(doc, list) else f"{where}: {key}"
        raise InputError(f"{name} must be an address (0x and 40 hex digits)")
    return value


def model_digest(params: npt.ArrayLike) -> str:
    """The hex digest of a model's fixed-point form (what :attr:`TaskSpec.initial_digest` holds)."""
    return aggregate_digest(quantize(params, where="initial model")).hex()


def check_public_set(registry: ProvenanceRegistry, path: Path, public_set: PublicSet) -> None:
    """Check the local copy at ``path`` of a task's public validation set before use.

    1. hash the file or folder into its model-signing manifest
       (:func:`ailedger.provenance.digest.digest_artifact`); its root digest must be the one
       the task names, else :class:`~ailedger.errors.VerificationError` naming both;
    2. the task's registrant must have registered that digest on chain
       (:meth:`ProvenanceRegistry.registration`), else
       :class:`~ailedger.provenance.registry.RegisteredByOther` (other accounts did) or
       :class:`~ailedger.provenance.registry.NotRegistered`.
    """
    from ailedger.provenance.digest import digest_artifact
    from ailedger.provenance.registry import NotRegistered, RegisteredByOther

    computed = digest_artifact(path).root_digest
    if computed != public_set.digest:
        raise VerificationError(
            f"the public set at {path} has digest {computed}, the task names {public_set.digest}"
        )
    digest = bytes.fromhex(computed)
    if registry.registration(public_set.registrant, digest) is None:
        others = registry.registrants(digest)
        if others:
            raise RegisteredByOther(digest, public_set.registrant, others)
        raise NotRegistered(
            f"the public set {computed} is not registered by {public_set.registrant} on "
            f"chain {registry.ledger.chain_id}"
        )


def round_digest(aggregate: bytes, state: bytes, reference: bytes) -> bytes:
    """What a party of a ``reputation`` task attests: SHA-256 over a domain tag, the
    aggregate digest, the reputation state's digest after the round, and the reference
    update's digest (module docstring), each 32 bytes."""
    for what, value in (("aggregate", aggregate), ("state", state), ("reference", reference)):
        if len(value) != 32:
            raise InputError(f"the {what} digest must be 32 bytes")
    return hashlib.sha256(_ROUND_DOMAIN + aggregate + state + reference).digest()


def create_task(
    contract: TrainingTask, spec: TaskSpec, participants: Sequence[str]
) -> tuple[int, Receipt]:
    """Create the on-chain task for ``spec``; returns its id and the receipt."""
    return contract.create_task(
        spec_digest=spec.digest(),
        participants=list(participants),
        rounds=spec.rounds,
        quorum=spec.quorum,
        rule=spec.rule,
        commit_blocks=spec.commit_blocks,
        reveal_blocks=spec.reveal_blocks,
        attest_blocks=spec.attest_blocks,
    )


# --------------------------------------------------------------------------- update blobs


def encode_update(update: npt.ArrayLike, *, shape: tuple[int, ...], max_norm: float) -> bytes:
    """The canonical blob of an update (module docstring, step 2); its SHA-256 equals
    :func:`~ailedger.federated.aggregate.aggregate_digest` of the fixed-point update.

    Raises :class:`UpdateRejected` for a wrong shape, NaN or infinity, a coordinate beyond
    ``MAX_ABS`` or a norm above ``max_norm``.
    """
    arr = np.asarray(update)
    if arr.shape != shape:
        raise UpdateRejected(f"wrong shape {arr.shape}, the task needs {shape}")
    try:
        fixed = quantize(arr, where="update")
    except AggregationError as exc:
        raise UpdateRejected(str(exc).removeprefix("update: ")) from exc
    _check_norm(fixed, max_norm)
    return _pack(fixed)


def _pack(fixed: FixedArray) -> bytes:
    head = _DOMAIN + struct.pack("<BB", FRAC_BITS, fixed.ndim)
    head += struct.pack(f"<{fixed.ndim}Q", *fixed.shape)
    return head + np.ascontiguousarray(fixed, dtype="<i8").tobytes(order="C")


def decode_update(blob: bytes, *, shape: tuple[int, ...], max_norm: float) -> FixedArray:
    """Parse and validate an update blob; returns the int64 fixed-point update.

    Checks, in order: the format header and fractional bits; the declared shape against
    ``shape``; the length; every coordinate within ``±MAX_ABS`` (an infinity or overflow
    quantised by a careless or hostile encoder lands outside); the L2 norm at most
    ``max_norm``. Raises :class:`UpdateRejected` naming the first failure.
    """
    if len(blob) > MAX_BLOB_BYTES:
        raise UpdateRejected(f"blob of {len(blob)} bytes is too large")
    if not blob.startswith(_DOMAIN) or len(blob) < len(_DOMAIN) + 2:
        raise UpdateRejected("not an ailedger fixed-point update blob")
    frac_bits, ndim = struct.unpack_from("<BB", blob, len(_DOMAIN))
    if frac_bits != FRAC_BITS:
        raise UpdateRejected(f"fixed point with {frac_bits} fractional bits, not {FRAC_BITS}")
    start = len(_DOMAIN) + 2
    if len(blob) < start + 8 * ndim:
        raise UpdateRejected("truncated header")
    declared = tuple(int(d) for d in struct.unpack_from(f"<{ndim}Q", blob, start))
    if declared != shape:
        raise UpdateRejected(f"wrong shape {declared}, the task needs {shape}")
    body = blob[start + 8 * ndim :]
    count = math.prod(shape)
    if len(body) != 8 * count:
        raise UpdateRejected(f"{len(body)} bytes of values, {8 * count} expected")
    fixed = np.frombuffer(body, dtype="<i8").astype(np.int64).reshape(shape)
    if fixed.size and int(np.max(np.abs(fixed.astype(np.float64)))) > _MAX_ABS_FIXED:
        raise UpdateRejected(f"a coordinate exceeds |x| <= {MAX_ABS:g} (infinity or overflow)")
    _check_norm(fixed, max_norm)
    return fixed


def _check_norm(fixed: FixedArray, max_norm: float) -> None:
    flat = [int(v) for v in fixed.ravel()]
    bound = math.floor(max_norm * SCALE)
    if sum(v * v for v in flat) > bound * bound:
        norm = math.sqrt(float(sum(v * v for v in flat))) / SCALE
        raise UpdateRejected(f"norm {norm:.6g} exceeds max_norm {max_norm:g}")


def scores_digest(task: int, round: int, scores: Mapping[str, float]) -> bytes:
    """SHA-256 of the RFC 8785 JSON ``{"task", "round", "scores": {address: value}}``."""
    doc = {"task": task, "round": round, "scores": {k: float(v) for k, v in scores.items()}}
    return hashlib.sha256(canonical_json(doc)).digest()


# --------------------------------------------------------------------------- reports


@dataclass(kw_only=True)
class RoundReport:
    """What one party saw and did in one round.

    ``status`` is the on-chain outcome (``finalized`` or ``failed``); ``aggregate_digest`` the
    finalized digest (hex); ``attested`` what this party attested (hex, None if it did not);
    ``own`` what became of its own update (``revealed`` or a reason). ``accepted`` parties'
    updates went into the aggregate; ``rejected`` maps a party to the reason its update was
    refused; ``flagged`` are the rule's suspects plus the rejected; ``excluded`` every party
    excluded on chain so far; ``scores`` each party's contribution (0 for the rejected);
    ``utility`` the party's ``evaluate`` of the global model after the round.

    ``b2`` is the round's spread-to-signal ratio ``B**2`` of the accepted updates (None if
    unbounded or there were none) and ``warnings`` the breakdown warning it raised, if any.
    For a ``reputation`` task: ``reference_digest`` and ``state_digest`` (hex) are this
    party's reference update and reputation state after the round, ``round_digest`` what it
    attests (:func:`round_digest`), ``rule_excluded`` the parties the rule excluded, and
    ``faulty`` the parties that attested another reference or round digest, with why.

    ``windows`` are the round's phase windows (blocks: ``commit``, ``reveal``, ``attest``):
    for an adaptive task those it started with, from its chain record; for a fixed one the
    task's windows (read when the round closed). For an adaptive task, ``proposed_windows`` are
    the windows this party proposed for the later rounds after this one closed (None if it
    proposed none; set once sent, which may be after ``on_round`` saw the report) and
    ``timing_excluded`` the parties it found silent for too long.
    """

    round: int
    status: str = "pending"
    aggregate_digest: str | None = None
    attested: str | None = None
    own: str = "not committed"
    accepted: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    flagged: list[str] = field(default_factory=list)
    votes: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    utility: float | None = None
    gas_used: int = 0
    b2: float | None = None
    warnings: list[str] = field(default_factory=list)
    reference_digest: str | None = None
    state_digest: str | None = None
    round_digest: str | None = None
    rule_excluded: list[str] = field(default_factory=list)
    faulty: dict[str, str] = field(default_factory=dict)
    windows: dict[str, int] | None = None
    proposed_windows: dict[str, int] | None = None
    timing_excluded: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "status": self.status,
            "aggregate_digest": self.aggregate_digest,
            "attested": self.attested,
            "own": self.own,
            "accepted": list(self.accepted),
            "rejected": dict(self.rejected),
            "flagged": list(self.flagged),
            "votes": list(self.votes),
            "excluded": list(self.excluded),
            "scores": dict(self.scores),
            "utility": self.utility,
            "gas_used": self.gas_used,
            "b2": self.b2,
            "warnings": list(self.warnings),
            "reference_digest": self.reference_digest,
            "state_digest": self.state_digest,
            "round_digest": self.round_digest,
            "rule_excluded": list(self.rule_excluded),
            "faulty": dict(self.faulty),
            "windows": dict(self.windows) if self.windows is not None else None,
            "proposed_windows": (
                dict(self.proposed_windows) if self.proposed_windows is not None else None
            ),
            "timing_excluded": list(self.timing_excluded),
        }


@dataclass
class _Computed:
    fixed: FixedArray
    digest: bytes
    accepted: list[str]
    rejected: dict[str, str]
    flagged: list[str]
    committed: list[str]
    scores: dict[str, float]
    attest: bytes = b""
    b2: float | None = None
    warnings: list[str] = field(default_factory=list)
    reference: bytes | None = None
    state: ReputationState | None = None
    rule_excluded: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.attest:
            self.attest = self.digest


@dataclass
class _Local:
    round: int
    salt: bytes | None = None
    digest: bytes | None = None
    tried_commit: bool = False
    committed: bool = False
    revealed: bool = False
    attested: bool = False
    computed: _Computed | None = None
    report: RoundReport = field(init=False)

    def __post_init__(self) -> None:
        self.report = RoundReport(round=self.round)


# --------------------------------------------------------------------------- the party


class Party:
    """One party's side of a task: drive it with :meth:`step` (one action at a time) or
    :meth:`run` (until the task finishes).

    ``contract`` must sign as the party's account. ``initial_params`` must match the spec's
    ``initial_digest``. ``store`` holds this party's blobs (its own and those it fetched, which
    it serves to others too) and ``endpoint`` is where others fetch them (a
    :class:`~.transport.BlobServer` URL, or ``store.uri`` on one machine); given that
    ``server``, the party lets it serve exactly this task's blobs it holds (its own updates
    and those it fetched and checked), nothing else of the store. ``fetch_timeout`` (seconds)
    bounds each request to a peer in all, and twice that the fetch of one blob from its owner
    and the fallbacks together. ``allowed_networks`` (CIDR strings), when given, restricts
    fetches to peers with addresses in those networks (see :mod:`.transport`; link-local,
    multicast, unspecified and broadcast addresses are refused in any case). Subclasses may
    override :meth:`make_update`, :meth:`publish`
    and :meth:`send_reveal` (tests use that to play faulty parties). ``on_round`` is called
    with each closed round's report.

    For a ``reputation`` task that names a public set, ``reference`` trains the reference
    update on the party's local copy of it (checked first with :func:`check_public_set`);
    :meth:`make_reference` calls it. ``sentinel_marks`` is the workspace's
    ``sentinel/exclusions.json``: the parties it marks for this task (key: the task id as a
    decimal string) are voted on each round.
    """

    def __init__(
        self,
        *,
        contract: TrainingTask,
        task: int,
        spec: TaskSpec,
        initial_params: npt.ArrayLike,
        train: Trainer,
        store: BlobStore,
        endpoint: str,
        evaluate: Evaluator | None = None,
        server: BlobServer | None = None,
        fetch_timeout: float = 10.0,
        seed: int = 0,
        on_round: Callable[[RoundReport], None] | None = None,
        allowed_networks: Sequence[str] | None = None,
        reference: Reference | None = None,
        sentinel_marks: Path | None = None,
    ) -> None:
        self.contract = contract
        self.task = task
        self.spec = spec
        self.address = contract.ledger.account
        self.train = train
        self.evaluate = evaluate
        self.store = store
        self.endpoint = endpoint
        self.server = server
        self.fetch_timeout = fetch_timeout
        self.allowed_networks = (
            None if allowed_networks is None else parse_networks(allowed_networks)
        )
        self.seed = seed
        self.on_round = on_round
        fixed = quantize(initial_params, where="initial model")
        if fixed.shape != spec.shape or aggregate_digest(fixed).hex() != spec.initial_digest:
            raise TrainingError("the initial model is not the one the task spec names")
        self.global_fixed: FixedArray = fixed
        self.reports: list[RoundReport] = []
        self.done = False
        self.refused: str | None = None
        self.excluded = False
        self._announced = False
        self._round = 0
        self._local = _Local(0)
        self._flags: dict[str, int] = {}
        self._seen: dict[str, int] = {}
        self._voted: set[str] = set()
        self._digest_rounds: dict[bytes, int] = {}
        self._from_block: int | None = None
        self._endpoint_cache: dict[str, str] | None = None
        self._gas = 0
        self.reference = reference
        self.sentinel_marks = sentinel_marks
        self._timing: ChainTiming | None = None
        # windows to propose in a round, sent when this party has nothing else to do then
        self._proposal: tuple[int, Windows, RoundReport] | None = None
        self._check_task()
        self.reputation_state: ReputationState | None = None
        if spec.rule == "reputation":
            if spec.public_set is not None and reference is None:
                raise TrainingError(
                    "the task names a public validation set: give this party its local copy "
                    "(train join --public-set PATH)"
                )
            # derived from the finalized rounds only (module docstring)
            self.reputation_state = ReputationState.initial(contract.participants(task))

    @property
    def params(self) -> FloatArray:
        """The current global model (float64, exact value of the fixed-point copy)."""
        return dequantize(self.global_fixed)

    @property
    def gas_used(self) -> int:
        """Gas this party's transactions consumed so far."""
        return self._gas

    def global_digest(self) -> str:
        """Hex digest of the current global model's fixed-point form (equal at every party)."""
        return aggregate_digest(self.global_fixed).hex()

    def _check_task(self) -> None:
        try:
            info = self.contract.task_info(self.task)
        except TransactionReverted as exc:
            raise TrainingError(f"no task {self.task} at {self.contract.address}") from exc
        if info.spec_digest != self.spec.digest():
            raise TrainingError(
                f"task {self.task}'s spec digest on chain is {info.spec_digest.hex()}, "
                f"this spec's is {self.spec.digest().hex()}"
            )
        if info.rule != self.spec.rule or info.rounds != self.spec.rounds:
            raise TrainingError("the task on chain has another rule or number of rounds")

    # -- hooks ------------------------------------------------------------------------------

    def make_update(self, round: int) -> npt.ArrayLike:
        """This round's update: ``train(global_params)``."""
        return self.train(self.params)

    def publish(self, blob: bytes) -> bytes:
        """Store the blob where others fetch it; returns the digest to commit to."""
        return self.store.put(blob)

    def send_reveal(self, round: int, digest: bytes, salt: bytes) -> Receipt | None:
        """Reveal the commitment on chain (None: nothing was sent)."""
        return self.contract.reveal(self.task, round, digest, salt)

    def make_reference(self, round: int) -> npt.ArrayLike | None:
        """This round's reference update, ``reference(global_params, round)`` (None for the
        fallback reference)."""
        if self.reference is None or self.spec.public_set is None:
            return None
        return self.reference(self.params, round)

    # -- driving ------------------------------------------------------------------------------

    def step(self) -> bool:
        """Take the next action the chain's state calls for; False when there was none."""
        if self.done:
            return False
        try:
            return self._step()
        except TransactionReverted as exc:
            if exc.reason == "party excluded" and self._check_excluded():
                return True
            raise

    def _step(self) -> bool:
        if not self._announced:
            self._announced = True
            try:
                self._spend(self.contract.announce(self.task, self.endpoint))
            except TransactionReverted as exc:
                if exc.reason == "party excluded":
                    raise
                self._stop(exc.reason)
            return True
        state = self.contract.round_state(self.task)
        if self._round < state.round:
            while self._round < state.round:
                self._close_round(latest=self._round + 1 == state.round)
            self.done = state.phase == Phase.FINISHED
            return True
        # under a scheduled fee policy ([chain] fee_policy), a phase's transactions may wait
        # for a cheaper block, but must be mined before the phase's deadline (exclusive),
        # and only while the phase still waits for another party too: the action that
        # completes it goes at once, since waiting would hold up every party's round (and
        # adaptive windows would count this party as slower). Anything else (advancing an
        # expired round) goes at once.
        ledger = self.contract.ledger
        end = {
            Phase.COMMIT: state.commit_end,
            Phase.REVEAL: state.reveal_end,
            Phase.ATTEST: state.attest_end,
        }.get(state.phase, 0)
        if ledger.fee_hook is not None and self._completes_phase(state):
            end = 0
        with ledger.fee_deadline(end - 1):
            return self._act(state)

    def _completes_phase(self, state: RoundState) -> bool:
        """Whether this party's own action in the phase is still to come and every other
        party the phase waits for has acted (asked only with a fee hook, and the extra call
        only on the step that acts)."""
        local = self._local
        if state.phase == Phase.REVEAL:
            return local.committed and not local.revealed and state.revealed + 1 >= state.committed
        if state.phase == Phase.COMMIT and not local.tried_commit:
            done = state.committed
        elif state.phase == Phase.ATTEST and not local.attested:
            done = state.attested
        else:
            return False
        return done + 1 >= self.contract.task_info(self.task).active

    def _act(self, state: RoundState) -> bool:
        local = self._local
        if state.phase == Phase.COMMIT and not local.tried_commit:
            self._commit(local)
            return True
        if state.phase == Phase.REVEAL and local.committed and not local.revealed:
            self._reveal(local)
            return True
        if self._proposal is not None and state.phase in (Phase.ATTEST, Phase.EXPIRED):
            # before the actions that may close the round (and so void the proposal)
            self._send_proposal(state.round)
            return True
        if state.phase == Phase.ATTEST and not local.attested:
            self._attest(local)
            return True
        if state.phase == Phase.EXPIRED:
            try:
                self._spend(self.contract.advance(self.task))
            except TransactionReverted as exc:
                if exc.reason not in ("round still open", "task finished"):
                    raise
            return True
        if self._proposal is not None:
            self._send_proposal(state.round)
            return True
        return False

    def run(
        self,
        *,
        poll_interval: float = 0.2,
        mine_idle_after: float | None = 2.0,
        timeout: float = 600.0,
    ) -> list[RoundReport]:
        """Step until the task finishes (or this party is excluded or refused).

        With ``mine_idle_after`` (seconds), a chain that produced no block for that long is
        nudged with a 0-wei transfer to this party's own account (development nodes mine only
        on demand); None never does that. Raises :class:`TrainingError` after ``timeout``.
        """
        deadline = time.monotonic() + timeout
        ledger = self.contract.ledger
        last_block = ledger.block_number()
        last_change = time.monotonic()
        while not self.done:
            if time.monotonic() > deadline:
                raise TrainingError(f"task {self.task} did not finish within {timeout:.0f} s")
            if self.step():
                continue
            block = ledger.block_number()
            if block != last_block:
                last_block, last_change = block, time.monotonic()
            elif mine_idle_after is not None and time.monotonic() - last_change > mine_idle_after:
                self._spend(ledger.transfer(self.address, 0))
                continue
            time.sleep(poll_interval)
        return self.reports

    # -- the phases -----------------------------------------------------------------------

    def _commit(self, local: _Local) -> None:
        local.tried_commit = True
        if self._check_excluded():
            return
        try:
            blob = encode_update(
                self.make_update(local.round), shape=self.spec.shape, max_norm=self.spec.max_norm
            )
        except UpdateRejected as exc:
            local.report.own = f"not submitted: {exc.reason}"
            return
        digest = self.publish(blob)
        self._serve(digest)
        salt = secrets.token_bytes(32)
        try:
            self._spend(
                self.contract.commit(self.task, local.round, commitment(digest, salt, self.address))
            )
        except TransactionReverted as exc:
            if exc.reason == "party excluded":
                raise
            local.report.own = f"commit refused: {exc.reason}"
            return
        local.committed = True
        local.salt, local.digest = salt, digest
        local.report.own = "committed"

    def _reveal(self, local: _Local) -> None:
        local.revealed = True
        assert local.digest is not None
        assert local.salt is not None
        try:
            receipt = self.send_reveal(local.round, local.digest, local.salt)
        except TransactionReverted as exc:
            if exc.reason == "party excluded":
                raise
            local.report.own = f"reveal refused: {exc.reason}"
            return
        if receipt is None:
            local.report.own = "not revealed"
            return
        self._spend(receipt)
        local.report.own = "revealed"

    def _attest(self, local: _Local) -> None:
        local.attested = True
        computed = local.computed = self._compute(local.round)
        self._vote(computed, local.report)
        second = (
            computed.reference
            if computed.reference is not None
            else scores_digest(self.task, local.round, computed.scores)
        )
        try:
            self._spend(self.contract.attest(self.task, local.round, computed.attest, second))
        except TransactionReverted as exc:
            if exc.reason not in _ROUND_CLOSED:
                raise
            return
        local.report.attested = computed.attest.hex()

    def _close_round(self, *, latest: bool = True) -> None:
        """Close this party's round (the chain has moved past it); ``latest`` when the chain
        is in the round right after it (only then does an adaptive party propose windows:
        from a later round, its proposal would not be the one the others make)."""
        local = self._local
        report = local.report
        outcome = self.contract.outcome(self.task, local.round)
        report.status = outcome.status
        if outcome.status == "finalized":
            assert outcome.aggregate_digest is not None
            report.aggregate_digest = outcome.aggregate_digest.hex()
            computed = local.computed
            if computed is None or computed.attest != outcome.aggregate_digest:
                computed = local.computed = self._compute(local.round)
            if computed.attest != outcome.aggregate_digest:
                raise TrainingError(
                    f"round {local.round}: a quorum finalized {outcome.aggregate_digest.hex()}, "
                    f"this party computes {computed.attest.hex()}"
                )
            self.global_fixed = self.global_fixed + computed.fixed
            if computed.state is not None:
                self.reputation_state = computed.state
                report.aggregate_digest = computed.digest.hex()
                report.round_digest = outcome.aggregate_digest.hex()
                report.faulty = self._faulty(local.round, computed)
        elif local.computed is None:
            local.computed = self._compute(local.round)
        computed = local.computed
        if computed is not None:
            for party in report.faulty:
                if party not in computed.flagged:
                    computed.flagged.append(party)
            report.accepted = list(computed.accepted)
            report.rejected = dict(computed.rejected)
            report.flagged = sorted(computed.flagged)
            report.scores = dict(computed.scores)
            report.b2 = computed.b2
            report.warnings = list(computed.warnings)
            report.rule_excluded = list(computed.rule_excluded)
            if computed.reference is not None:
                report.reference_digest = computed.reference.hex()
            if self.reputation_state is not None:
                report.state_digest = self.reputation_state.digest().hex()
            self._count_flags(computed)
        silent = self._observe_timing(local.round, report)
        if self._round + 1 < self.spec.rounds:
            # a party that did not attest in time still votes on the rule's exclusions
            now = list(computed.rule_excluded if computed and report.status == "finalized" else ())
            self._vote(None, report, now=[*now, *silent])
            if latest:
                self._plan_proposal(local.round + 1, report)
        report.excluded = sorted(
            s.party for s in self.contract.party_states(self.task) if s.excluded
        )
        if self.evaluate is not None:
            report.utility = float(self.evaluate(self.params))
        report.gas_used = self._gas - sum(r.gas_used for r in self.reports)
        self.reports.append(report)
        if self.on_round is not None:
            self.on_round(report)
        self._round += 1
        self._local = _Local(self._round)

    def _observe_timing(self, round: int, report: RoundReport) -> list[str]:
        """Record the windows ``round`` ran with in its report; for an adaptive task, learn
        from its chain record (:mod:`.timing_chain`) and return the parties silent too long."""
        if self.spec.timing != "adaptive":
            # the task's windows now: fixed ones never change (honest parties of a fixed task
            # propose none), and a call is cheaper than the round's logs
            report.windows = _windows_json(self.contract.windows(self.task))
            return []
        if self._timing is None:
            self._timing = ChainTiming(
                contract=self.contract,
                task=self.task,
                participants=self.contract.participants(self.task),
                quorum=self.spec.quorum,
                initial=Windows(
                    commit_blocks=self.spec.commit_blocks,
                    reveal_blocks=self.spec.reveal_blocks,
                    attest_blocks=self.spec.attest_blocks,
                ),
                from_block=self._start_block(),
            )
        record = self._timing.close(round)
        report.windows = _windows_json(record.windows)
        active = [s.party for s in self.contract.party_states(self.task) if not s.excluded]
        silent = [p for p in self._timing.to_exclude(active) if p != self.address]
        report.timing_excluded = list(silent)
        return silent

    def _plan_proposal(self, round: int, report: RoundReport) -> None:
        """Plan to propose the learned windows in ``round`` (the current one) if they differ
        enough from those in effect and a later round can use them. The proposal waits until
        this party has nothing else to do in the round, or is about to attest or advance
        (which may close the round), so it does not delay the party's commit and reveal (on
        a chain that mines one transaction per block, every transaction is a block)."""
        self._proposal = None
        if self._timing is None or round + 1 >= self.spec.rounds or self.excluded:
            return
        proposal = self._timing.proposal(self.contract.windows(self.task))
        if proposal is not None:
            self._proposal = (round, proposal, report)

    def _send_proposal(self, current: int) -> None:
        """Send the planned proposal if its round is still ``current``; drop it either way."""
        assert self._proposal is not None
        (round, windows, report), self._proposal = self._proposal, None
        if round != current:
            return
        try:
            self._spend(self.contract.propose_windows(self.task, round, *windows.as_tuple()))
        except TransactionReverted as exc:
            if exc.reason not in _PROPOSAL_MOOT:
                raise
            return
        report.proposed_windows = _windows_json(windows)

    def _faulty(self, round: int, computed: _Computed) -> dict[str, str]:
        """The parties whose attestation of the finalized ``round`` differs from this one's:
        another reference digest (its scores slot), or another round digest."""
        assert computed.reference is not None
        faulty: dict[str, str] = {}
        for att in self.contract.attestations(self.task, round, from_block=self._start_block()):
            if att.scores_digest != computed.reference:
                faulty[att.party] = (
                    f"reported reference digest {att.scores_digest.hex()}, the public set "
                    f"gives {computed.reference.hex()}"
                )
            elif att.aggregate_digest != computed.attest:
                faulty[att.party] = "attested another round digest (aggregate or state differs)"
        return faulty

    def _marked(self, report: RoundReport) -> list[str]:
        """Parties of this task the sentinel marked (none if no marks file); a bad marks file
        is reported as a warning, never stops the party."""
        if self.sentinel_marks is None or not self.sentinel_marks.exists():
            return []
        from ailedger.sentinel.actions import TrainingExclusion

        try:
            marks = TrainingExclusion.marked(self.sentinel_marks, str(self.task))
        except AiledgerError as exc:
            report.warnings.append(f"sentinel marks not read: {exc}")
            return []
        participants = {p.lower(): p for p in self.contract.participants(self.task)}
        return sorted(participants[p.lower()] for p in marks if p.lower() in participants)

    def _count_flags(self, computed: _Computed) -> None:
        for party in computed.committed:
            self._seen[party] = self._seen.get(party, 0) + 1
        for party in computed.flagged:
            self._flags[party] = self._flags.get(party, 0) + 1

    def _vote(
        self, computed: _Computed | None, report: RoundReport, *, now: Sequence[str] = ()
    ) -> None:
        """Vote to exclude the parties over the thresholds (module docstring, step 6),
        counting ``computed`` (the round not yet closed) if given."""
        flags = dict(self._flags)
        seen = dict(self._seen)
        for party in computed.committed if computed else ():
            seen[party] = seen.get(party, 0) + 1
        for party in computed.flagged if computed else ():
            flags[party] = flags.get(party, 0) + 1
        # the rule's exclusions (memory across rounds already) and the sentinel's marks are
        # voted on at once
        at_once = {*now, *(computed.rule_excluded if computed else ()), *self._marked(report)}
        for party in sorted(set(flags) | at_once):
            if party == self.address or party in self._voted:
                continue
            count = flags.get(party, 0)
            if party not in at_once and count < self.spec.exclude_after:
                continue
            if party not in at_once and count < self.spec.exclude_fraction * seen.get(party, count):
                continue
            if self.contract.task_info(self.task).active <= self.spec.quorum:
                continue
            self._voted.add(party)
            try:
                self._spend(self.contract.vote_exclude(self.task, party))
            except TransactionReverted as exc:
                if exc.reason not in ("party already excluded", "already voted", "task finished"):
                    raise
                continue
            report.votes.append(party)

    def _check_excluded(self) -> bool:
        if self.contract.party_state(self.task, self.address).excluded:
            self.excluded = True
            self._local.report.own = "excluded"
            self._stop("party excluded")
            return True
        return False

    def _stop(self, reason: str) -> None:
        self.refused = reason
        self.done = True

    def _spend(self, receipt: Receipt) -> None:
        self._gas += receipt.gas_used

    # -- computing the aggregate -------------------------------------------------------

    def _compute(self, round: int) -> _Computed:
        """Fetch, check and aggregate the round's revealed updates (module docstring, 4-5)."""
        committed, reveals = self._round_parties(round)
        rejected: dict[str, str] = {}
        accepted: dict[str, FixedArray] = {}
        for party in committed:
            if party not in reveals:
                rejected[party] = "committed but never revealed"
        wanted: dict[str, tuple[bytes, list[str]]] = {}
        for party in sorted(reveals):
            digest = reveals[party]
            earlier = self._digest_rounds.get(digest)
            if earlier is not None and earlier < round:
                rejected[party] = f"replays the update revealed in round {earlier}"
                continue
            self._digest_rounds.setdefault(digest, round)
            # LedgerError (this party's own node) is raised here, outside the per-party part
            wanted[party] = (digest, self._sources(party, digest))
        # fetched side by side, so slow peers cost one deadline, not one each; whatever a
        # party's endpoint or server does makes that party faulty, never this one (fetch_any
        # raises nothing but BlobMismatch and BlobUnavailable)
        fetched = self._fetch_all(wanted)
        for party in sorted(wanted):
            try:
                accepted[party] = decode_update(
                    fetched[party](), shape=self.spec.shape, max_norm=self.spec.max_norm
                )
            except BlobMismatch:
                rejected[party] = "blob does not match its revealed digest"
            except BlobUnavailable as exc:
                rejected[party] = f"blob unavailable: {exc}"
            except UpdateRejected as exc:
                rejected[party] = exc.reason
        order = sorted(accepted)
        rows = [dequantize(accepted[p]) for p in order]
        flagged = set(rejected)
        options: dict[str, Any] = {}
        state = self.reputation_state
        reference: bytes | None = None
        if state is not None:
            options = {"state": state, "parties": order, "fallback": self.spec.fallback}
            ref = self.make_reference(round)
            if ref is not None:
                options["reference"] = ref
        excluded: list[str] = []
        if rows:
            try:
                result = RULES[self.spec.rule](rows, max_norm=self.spec.max_norm, **options)
            except AggregationError as exc:
                for p in order:
                    rejected.setdefault(p, f"not aggregated: {exc}")
                fixed = np.zeros(self.spec.shape, dtype=np.int64)
                weights = [0.0] * len(order)
            else:
                fixed = np.asarray(result.fixed, dtype=np.int64)
                flagged.update(order[k] for k in result.flagged)
                weights = [float(w) for w in result.weights]
                if isinstance(result, ReputationResult):
                    state, reference = result.state, result.reference_digest
                    excluded = [order[k] for k in result.excluded]
        else:
            fixed = np.zeros(self.spec.shape, dtype=np.int64)
            weights = []
        if self.reputation_state is not None and reference is None:
            # no result this round: the state stays, and the reference is what was used
            reference = _reference_digest(options.get("reference"), self.spec.shape)
        scores = {p: 0.0 for p in sorted(set(committed) | set(reveals))}
        scores.update(self._scores(round, order, rows, weights))
        b2, warnings = self._breakdown(rows)
        digest = aggregate_digest(fixed)
        attest = digest
        if state is not None and reference is not None:
            attest = round_digest(digest, state.digest(), reference)
        return _Computed(
            fixed=fixed,
            digest=digest,
            accepted=order,
            rejected=rejected,
            flagged=sorted(flagged),
            committed=committed,
            scores=scores,
            attest=attest,
            b2=b2,
            warnings=warnings,
            reference=reference,
            state=state,
            rule_excluded=excluded,
        )

    def _breakdown(self, rows: list[FloatArray]) -> tuple[float | None, list[str]]:
        """``B**2`` of the accepted updates and the breakdown warning (module docstring)."""
        if not rows:
            return None, []
        try:
            b2 = spread_to_signal(rows, max_norm=self.spec.max_norm)
        except AggregationError:
            return None, []
        sized_for = self.spec.sized_for
        if sized_for is None:
            n = self.contract.task_info(self.task).participants
            sized_for = default_f(n) / n
        warning = breakdown_warning(b2, sized_for)
        return b2, [warning] if warning else []

    def _round_parties(self, round: int) -> tuple[list[str], dict[str, bytes]]:
        """Who committed in ``round``, and each revealed digest: from the contract's state
        while no party has moved past the round, else from its events (slower)."""
        states = self.contract.party_states(self.task)
        if all((s.committed_round or 0) <= round for s in states):
            committed = sorted(s.party for s in states if s.committed_round == round)
            reveals = {
                s.party: s.update_digest
                for s in states
                if s.revealed_round == round and s.update_digest is not None
            }
            return committed, reveals
        start = self._start_block()
        reveals = self.contract.reveals(self.task, round, from_block=start)
        events = self.contract.events(self.task, "Committed", from_block=start)
        return sorted(str(e["party"]) for e in events if int(e["round"]) == round), reveals

    def _start_block(self) -> int:
        if self._from_block is None:
            self._from_block = self.contract.created_block(self.task)
        return self._from_block

    def _endpoints(self, refresh: bool) -> dict[str, str]:
        if refresh or self._endpoint_cache is None:
            self._endpoint_cache = self.contract.endpoints(
                self.task, from_block=self._start_block()
            )
        return self._endpoint_cache

    def _sources(self, party: str, digest: bytes) -> list[str]:
        """Where to fetch ``party``'s blob: its own endpoint first, then the others'."""
        if self.store.has(digest):
            return []
        endpoints = self._endpoints(refresh=False)
        if party not in endpoints:
            endpoints = self._endpoints(refresh=True)
        owner = endpoints.get(party)
        others = [url for who, url in sorted(endpoints.items()) if who not in (party, self.address)]
        return [*([owner] if owner else []), *others]

    def _fetch_all(
        self, wanted: Mapping[str, tuple[bytes, list[str]]]
    ) -> dict[str, Callable[[], bytes]]:
        """Fetch each party's blob at once (at most :data:`_FETCHERS` at a time); each value
        returns the blob or raises what fetching it raised."""
        if len(wanted) <= 1:
            return {p: functools.partial(self._fetch, *args) for p, args in wanted.items()}
        with ThreadPoolExecutor(_FETCHERS, thread_name_prefix="ailedger-fetch") as pool:
            futures = {p: pool.submit(self._fetch, *args) for p, args in wanted.items()}
            concurrent.futures.wait(futures.values())
        return {p: future.result for p, future in futures.items()}

    def _fetch(self, digest: bytes, sources: Sequence[str]) -> bytes:
        """The blob ``digest`` (checked), from the store or else ``sources``; once held,
        this party serves it to the others too."""
        if self.store.has(digest):
            blob = self.store.get(digest)
        else:
            # with a server, it answers "still fetching" to peers meanwhile and relays the
            # blob once checked, so an owner serving only some parties cannot split them
            blob = fetch_any(
                sources,
                digest,
                timeout=self.fetch_timeout,
                total=2 * self.fetch_timeout,
                allowed_networks=self.allowed_networks,
                relay=self.server,
            )
            self.store.put(blob)
        self._serve(digest)
        return blob

    def _serve(self, digest: bytes) -> None:
        if self.server is not None:
            self.server.allow(digest)

    def _scores(
        self, round: int, order: list[str], rows: list[FloatArray], weights: list[float]
    ) -> dict[str, float]:
        if not order:
            return {}
        if self.spec.contribution == "weights" or self.evaluate is None:
            return dict(zip(order, weights, strict=True))
        evaluate = self.evaluate
        base = self.params
        stacked = np.stack(rows)

        def utility(coalition: frozenset[int]) -> float:
            if not coalition:
                return float(evaluate(base))
            members = sorted(coalition)
            return float(evaluate(base + stacked[members].mean(axis=0)))

        seed = int(np.random.SeedSequence([self.seed, self.task, round]).generate_state(1)[0])
        estimate = gtg_shapley(len(order), utility, seed=seed, max_permutations=60)
        return {p: float(v) for p, v in zip(order, estimate.values, strict=True)}


def _windows_json(windows: Windows) -> dict[str, int]:
    return {
        "commit": windows.commit_blocks,
        "reveal": windows.reveal_blocks,
        "attest": windows.attest_blocks,
    }


def _reference_digest(reference: npt.ArrayLike | None, shape: tuple[int, ...]) -> bytes:
    """The digest :mod:`.reputation` gives a reference (SHA-256 of its little-endian int64
    fixed-point values); of the zero vector when there is none (the fallback, no updates)."""
    if reference is None:
        fixed = np.zeros(math.prod(shape), dtype=np.int64)
    else:
        try:
            fixed = quantize(reference, where="reference update").ravel()
        except AggregationError:
            fixed = np.zeros(math.prod(shape), dtype=np.int64)
    return hashlib.sha256(fixed.astype("<i8").tobytes()).digest()


# --------------------------------------------------------------------------- in-process runs


def run_local(parties: Sequence[Party], *, miner: Ledger, max_steps: int = 100_000) -> None:
    """Drive several parties that share one process (and one chain) to the end of their task.

    Each party takes one action in turn; when none has anything to do, ``miner`` sends a 0-wei
    transfer to itself, so a deadline on a chain that mines on demand still arrives.
    """
    for _ in range(max_steps):
        if all(p.done for p in parties):
            return
        progressed = False
        for party in parties:
            progressed = party.step() or progressed
        if not progressed:
            miner.transfer(miner.account, 0)
    raise TrainingError(f"the parties did not finish within {max_steps} steps")


# --------------------------------------------------------------------------- recording


class LedgerRecorder:
    """Records each round of a training run that one coordinator aggregates by itself
    (``ailedger train simulate``, a Flower server) on chain: one ``record`` transaction per
    round, on a single-participant task whose spec digest describes the run.

    Use :meth:`start` to create the task, then :meth:`record` (or call the recorder with any
    object that has ``round``, ``digest`` (hex) and optional ``contributions``, such as a
    simulation's round result). With ``background`` the calls return at once and a worker
    thread sends the transactions in order, so training goes on while the chain works; call
    :meth:`flush` at the end (a failure surfaces there, or at the next call).
    """

    def __init__(self, *, contract: TrainingTask, task: int, background: bool = False) -> None:
        self.contract = contract
        self.task = task
        self.background = background
        self.receipts: list[Receipt] = []
        self._work: queue.Queue[tuple[int, bytes, bytes | None] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None

    @classmethod
    def start(
        cls,
        contract: TrainingTask,
        *,
        spec: Mapping[str, Any],
        rounds: int,
        rule: str,
        background: bool = False,
    ) -> LedgerRecorder:
        """Create a single-participant task (this ledger's account) for a run of ``rounds``."""
        digest = hashlib.sha256(canonical_json(dict(spec))).digest()
        task, _ = contract.create_task(
            spec_digest=digest,
            participants=[contract.ledger.account],
            rounds=rounds,
            quorum=1,
            rule=rule,
            commit_blocks=1,
            reveal_blocks=1,
            attest_blocks=1,
        )
        return cls(contract=contract, task=task, background=background)

    def record(self, round: int, aggregate_digest: bytes, scores: bytes | None = None) -> Receipt:
        """Finalize ``round`` with its aggregate digest (and scores digest, default zero)."""
        receipt = self.contract.record(self.task, round, aggregate_digest, scores or bytes(32))
        self.receipts.append(receipt)
        return receipt

    def __call__(self, result: Any) -> None:
        contributions = getattr(result, "contributions", None)
        scores = None
        if contributions is not None:
            values = {str(i): float(v) for i, v in enumerate(contributions)}
            scores = scores_digest(self.task, int(result.round), values)
        digest = bytes.fromhex(str(result.digest))
        if not self.background:
            self.record(int(result.round), digest, scores)
            return
        self._raise_failure()
        if self._worker is None:
            self._worker = threading.Thread(target=self._drain, name="ledger-recorder", daemon=True)
            self._worker.start()
        self._work.put((int(result.round), digest, scores))

    def flush(self) -> None:
        """Wait until every queued round is on chain; re-raise a failure of the worker."""
        if self._worker is not None:
            self._work.put(None)
            self._worker.join()
            self._worker = None
        self._raise_failure()

    def _drain(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self.record(*item)
                except BaseException as exc:  # handed to the caller by flush or the next call
                    self._error = exc

    def _raise_failure(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    @property
    def gas_used(self) -> int:
        return sum(r.gas_used for r in self.receipts)
