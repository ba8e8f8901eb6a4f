"""What the service shows of its workspace: plain functions over a :class:`ServiceContext`
returning JSON-ready values, shared by the JSON read endpoints (:mod:`.reads`) and the dashboard.

Where each answer comes from:

- provenance registrations: the ``provenance.register`` events this workspace appended to its
  log (:func:`ailedger.provenance.registry.register_artifact`), each read back from the
  ``ProvenanceRegistry`` on chain (one the chain does not hold is left out); the chain's own
  event log is not scanned, as the embedded chain filters logs block by block (measured
  here: about 50 s for 200 blocks). One registration's lineage: its parents as recorded
  on chain, walked breadth-first;
- sharing grants: the registry's grant records of one registration (live and revoked);
- training: tasks and round outcomes read from the workspace's ``TrainingTask`` contract,
  joined with the ``training.round`` reports a party appended to this workspace's log
  (``train join``: accuracy, contribution scores, rejections, exclusions) only where the
  report's outcome and aggregate digest are the chain's, so a report of another contract's
  task with the same id is never shown;
- sentinel alerts: ``sentinel.alert`` records (and their ``sentinel.retraction``) that
  :class:`ailedger.sentinel.actions.AuditAction` appends to the log. The log holds whatever its
  appenders sent, so an alert here is what a holder of an ``append`` key recorded, not a
  verified finding;
- checkpoints, anchors and entries: the log itself.

The log is scanned incrementally (at most :data:`SCAN_WINDOW` of its newest entries on the
first look, then only what was appended since) for the records named above, recognised by
their RFC 8785 bytes before they are parsed; the findings are kept, bounded, in the context's
``extra`` under ``"views.index"``.

Chain reads use ``ctx.extra["ledger"]`` when the service keeps a ledger open, else they open the
workspace's chain (``ctx.rpc``, the configured node, or the embedded chain) read-only for the
call, without a passphrase, trying a node once and waiting at most :data:`CHAIN_WAIT` seconds
for the embedded chain's lock. When the chain cannot be read the answer is empty and marked:
a :class:`Listing` with ``chain == "unavailable"`` (a dict gets the key ``"chain"``), never an
error. Bad input raises :class:`~ailedger.errors.InputError`; something that does not exist
raises :class:`NotFound`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ailedger._input import parse_json
from ailedger.auditlog._merkle import leaf_hash
from ailedger.errors import AiledgerError, InputError, LedgerError, WorkspaceError

if TYPE_CHECKING:
    from ailedger.auditlog import AuditLog
    from ailedger.ledger import Ledger
    from ailedger.ledger.provenance import ProvenanceRegistry
    from ailedger.ledger.training import TrainingTask
    from ailedger.service.context import ServiceContext
    from ailedger.workspace import Workspace

__all__ = [
    "CHAIN_WAIT",
    "MAX_LIMIT",
    "SCAN_WINDOW",
    "Listing",
    "NotFound",
    "alerts",
    "anchors",
    "check_limit",
    "checkpoints",
    "entries",
    "grant_list",
    "grants",
    "lineage",
    "parse_task",
    "registrations",
    "training_rounds",
    "training_tasks",
]

#: the most items any listing returns
MAX_LIMIT = 1000
#: newest log entries scanned for alerts and training reports on the first look
SCAN_WINDOW = 100_000
#: seconds to wait for the embedded chain's lock before answering "unavailable"
CHAIN_WAIT = 2.0
#: seconds a node may take per request before answering "unavailable"
NODE_TIMEOUT = 5.0
#: the largest task id (uint256)
_MAX_TASK = 2**256 - 1
#: kept by the log index: alerts, retractions, training reports
_KEEP_ALERTS = MAX_LIMIT
_KEEP_RETRACTIONS = 10_000
_KEEP_REPORTS = 4096
_KEEP_REGISTRATIONS = 100_000
#: byte strings that mark the records the log index reads (records are RFC 8785 JSON)
_MARKS = (b'"type":"sentinel.', b'"kind":"training.round"', b'"kind":"provenance.register"')
#: the largest signed statement read to find an artifact's name
_MAX_STATEMENT = 4 * 1024 * 1024
_REPORT_FIELDS = (
    "status",
    "aggregate_digest",
    "round_digest",
    "accepted",
    "rejected",
    "flagged",
    "excluded",
    "scores",
    "utility",
    "warnings",
    "faulty",
    "b2",
)
_ALERT_FIELDS = ("tx", "block", "class", "detector", "score", "flagged", "reasons", "accounts")


class NotFound(InputError):
    """What was asked for does not exist (an unregistered digest, an unknown task): HTTP 404."""


class Listing(list[dict[str, Any]]):
    """A list of JSON objects that also says whether the chain was read.

    ``chain`` is ``"ok"`` or ``"unavailable"`` (then the list is empty and ``note`` says why);
    ``total`` is how many items exist in all, when known.
    """

    def __init__(
        self,
        items: Iterable[dict[str, Any]] = (),
        *,
        chain: str = "ok",
        note: str | None = None,
        total: int | None = None,
    ) -> None:
        super().__init__(items)
        self.chain = chain
        self.note = note
        self.total = total


# -- input -------------------------------------------------------------------------------------


def check_limit(limit: object, what: str = "limit") -> int:
    """``limit`` if it is an integer from 1 to :data:`MAX_LIMIT`, else :class:`InputError`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"{what} must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


def _check_start(start: object, what: str) -> int:
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < 2**63:
        raise InputError(f"{what} must be a non-negative integer, got {start!r}")
    return start


def parse_task(value: object) -> int:
    """A task id: an integer from 0 to 2**256 - 1 (or its decimal text); else InputError."""
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 78:
            raise InputError(f"a task id is a non-negative integer, got {value[:40]!r}")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TASK:
        raise InputError(f"a task id is an integer from 0 to 2**256 - 1, got {value!r}")
    return value


def _parse_digest(text: object, what: str) -> bytes:
    from ailedger.provenance.registry import parse_digest

    if not isinstance(text, str) or len(text) > 100:
        raise InputError(f"{what} must be sha256:<64 hex>, 0x<64 hex> or 64 hex digits")
    return parse_digest(text, what)


def _parse_registrant(text: str | None) -> str | None:
    from ailedger.ledger.provenance import parse_address

    if text is None:
        return None
    if not isinstance(text, str) or len(text) > 100:
        raise InputError("registrant must be an Ethereum address")
    return parse_address(text.strip(), "registrant")


# -- the chain ---------------------------------------------------------------------------------


def _open_ledger(workspace: Workspace, rpc: str | None) -> Ledger:
    """The workspace's chain for reading: no signer, one try per node request."""
    from ailedger.ledger import Ledger

    base = workspace.settings()
    settings = dataclasses.replace(
        base, retries=1, request_timeout=min(base.request_timeout, NODE_TIMEOUT)
    )
    chain = workspace.config.get("chain", {})
    expected = None
    if rpc is None and chain.get("backend") == "rpc":
        rpc = str(chain["rpc"])
        expected = chain.get("chain_id")
    if rpc is not None:
        return Ledger.connect(
            rpc, settings=settings, expected_chain_id=int(expected) if expected else None
        )
    if not (workspace.chain_dir / "chain.sqlite").exists():
        raise WorkspaceError(f"the workspace {workspace.path} has no embedded chain yet")
    return Ledger.embedded(workspace.chain_dir, lock_timeout=CHAIN_WAIT, settings=settings)


@contextmanager
def _chain(ctx: ServiceContext) -> Iterator[Ledger]:
    """A ledger on the workspace's chain for one view (see the module docstring)."""
    shared = ctx.extra.get("ledger")
    if shared is not None:
        yield shared
        return
    # the embedded chain admits one holder at a time, this process's threads included
    lock = ctx.extra.setdefault("views.chain_lock", threading.Lock())
    with lock:
        ledger = _open_ledger(ctx.workspace, ctx.rpc)
        try:
            yield ledger
        finally:
            ledger.close()


def _unavailable(exc: AiledgerError) -> Listing:
    return Listing(chain="unavailable", note=str(exc).splitlines()[0] if str(exc) else None)


_CHAIN_ERRORS = (LedgerError, WorkspaceError)


def _registry(ctx: ServiceContext, ledger: Ledger) -> ProvenanceRegistry:
    from ailedger.provenance.registry import provenance_registry

    return provenance_registry(ctx.workspace, ledger)


def _training(ctx: ServiceContext, ledger: Ledger) -> TrainingTask:
    from ailedger.ledger.training import TrainingTask

    address = ctx.workspace.contract_address(ledger.chain_id, TrainingTask.NAME)
    return TrainingTask(ledger=ledger, address=address)


def _digest_text(raw: bytes) -> str:
    return "sha256:" + bytes(raw).hex()


def _owner_of(ctx: ServiceContext, registry: ProvenanceRegistry, digest: bytes) -> str:
    """Whose registration of ``digest`` to show: the workspace's own account's if it made one,
    else the first account this workspace's log saw register it; :class:`NotFound` when
    neither holds a registration of it."""
    own = str(ctx.workspace.keystore().address)
    candidates = [own, *_index(ctx).registrants(registry.ledger.chain_id, digest)]
    for owner in dict.fromkeys(candidates):
        if registry.is_registered(owner, digest):
            return owner
    raise NotFound(
        f"{_digest_text(digest)} is not registered by {own} (name its registrant with "
        "?registrant=ADDRESS)"
    )


# -- provenance --------------------------------------------------------------------------------


def registrations(ctx: ServiceContext, *, limit: int = 100, offset: int = 0) -> Listing:
    """Registrations of datasets and models made through this workspace, newest first:
    ``limit`` of them after skipping ``offset``.

    They are found in the log's ``provenance.register`` events (the chain's own event log
    is too slow to scan on the embedded chain) and each is read back from the registry on
    chain, so one the chain does not hold is left out. Each: ``digest`` and
    ``statement_digest`` (``sha256:<hex>``), ``kind``, ``owner``, ``parents``
    (``[{"owner", "digest"}]``), ``block_number``, ``timestamp`` (seconds), ``tx_hash`` and
    ``name`` (from the signed statement, when this workspace holds it).
    """
    check_limit(limit)
    _check_start(offset, "offset")
    index = _index(ctx)
    out = Listing()
    try:
        with _chain(ctx) as ledger:
            registry = _registry(ctx, ledger)
            known = index.registrations(ledger.chain_id)
            out.total = len(known)
            for owner, raw, event in known[offset : offset + limit]:
                record = registry.registration(owner, raw)
                if record is None:
                    continue
                out.append(_registration_json(ctx.workspace, record, event.get("tx_hash")))
    except _CHAIN_ERRORS as exc:
        return _unavailable(exc)
    return out


def _registration_json(workspace: Workspace, record: Any, tx_hash: object = None) -> dict[str, Any]:
    from ailedger.provenance.registry import Registration

    doc = Registration.from_chain(record).to_json()
    doc["tx_hash"] = tx_hash if isinstance(tx_hash, str) else None
    doc["name"] = _statement_name(workspace, record.statement_digest)
    return doc


def _statement_name(workspace: Workspace, statement_digest: bytes) -> str | None:
    """The artifact name in the signed statement stored in the blobs, or None."""
    from ailedger.provenance.registry import parse_envelope

    path = workspace.blobs_dir / statement_digest.hex()
    try:
        with path.open("rb") as handle:
            blob = handle.read(_MAX_STATEMENT + 1)
    except OSError:
        return None
    if len(blob) > _MAX_STATEMENT or hashlib.sha256(blob).digest() != statement_digest:
        return None
    try:
        envelope = parse_envelope(blob, "statement")
        statement = parse_json(base64.b64decode(envelope.get("payload", "")), what="statement")
        name = statement["subject"][0]["name"]
    except (AiledgerError, ValueError, KeyError, IndexError, TypeError):
        return None
    return name if isinstance(name, str) else None


def lineage(ctx: ServiceContext, digest: str, *, registrant: str | None = None) -> dict[str, Any]:
    """One registration and its registered ancestors (walked breadth-first through the
    parents recorded on chain, at most :data:`MAX_LIMIT` of them).

    ``digest`` is ``sha256:<hex>``, ``0x<hex>`` or 64 hex digits; ``registrant`` (an address)
    picks whose registration, by default the workspace's own account's (else one this
    workspace's log saw). Returns ``{"root", "root_owner", "registration", "nodes", "edges",
    "children", "chain"}``: ``nodes`` are registrations (as in :func:`registrations`),
    ``edges`` ``{"parent", "parent_owner", "child", "child_owner"}`` and ``children`` the
    registrations this workspace's log saw made with the root as a parent. Raises
    :class:`InputError` for a malformed digest or address and :class:`NotFound` when the
    digest is not registered (by ``registrant``).
    """
    from ailedger.provenance.digest import Digest

    raw = _parse_digest(digest, "digest")
    owner = _parse_registrant(registrant)
    nodes: dict[tuple[str, bytes], Any] = {}
    try:
        with _chain(ctx) as ledger:
            registry = _registry(ctx, ledger)
            if owner is None:
                owner = _owner_of(ctx, registry, raw)
            queue: deque[tuple[str, bytes]] = deque([(owner, raw)])
            while queue and len(nodes) < MAX_LIMIT:
                ref = queue.popleft()
                if ref in nodes:
                    continue
                record = registry.registration(*ref)
                if record is None:
                    if not nodes:
                        raise NotFound(f"{_digest_text(raw)} is not registered by {owner}")
                    continue
                nodes[ref] = record
                queue.extend(p for p in record.parents if p not in nodes)
            children = _index(ctx).children(ledger.chain_id, owner, raw)
    except _CHAIN_ERRORS as exc:
        gone = _unavailable(exc)
        return {
            "root": str(Digest(raw)),
            "root_owner": owner,
            "registration": None,
            "nodes": [],
            "edges": [],
            "children": [],
            "chain": gone.chain,
            "note": gone.note,
        }
    shown = [_registration_json(ctx.workspace, record) for record in nodes.values()]
    edges = [
        {
            "parent": _digest_text(p[1]),
            "parent_owner": p[0],
            "child": _digest_text(c[1]),
            "child_owner": c[0],
        }
        for c, record in nodes.items()
        for p in record.parents
        if p in nodes
    ]
    return {
        "root": _digest_text(raw),
        "root_owner": owner,
        "registration": shown[0],
        "nodes": shown,
        "edges": edges,
        "children": [{"owner": o, "digest": _digest_text(d)} for o, d in children],
        "chain": "ok",
    }


# -- sharing -----------------------------------------------------------------------------------


def grant_list(
    ctx: ServiceContext, resource: str, *, registrant: str | None = None, limit: int = MAX_LIMIT
) -> tuple[str | None, Listing]:
    """``(owner, grants)``: :func:`grants` with the registrant whose grants they are."""
    from ailedger.ledger.contracts import load_artifact
    from ailedger.ledger.provenance import ProvenanceRegistry

    raw = _parse_digest(resource, "resource")
    owner = _parse_registrant(registrant)
    check_limit(limit)
    out = Listing()
    try:
        with _chain(ctx) as ledger:
            registry = _registry(ctx, ledger)
            if owner is None:
                owner = _owner_of(ctx, registry, raw)
            elif not registry.is_registered(owner, raw):
                raise NotFound(f"{_digest_text(raw)} is not registered by {owner}")
            fns = ledger.contract(
                load_artifact(ProvenanceRegistry.NAME), registry.address, check_code=False
            ).functions
            count = int(ledger.call(fns.grantee_count(owner, raw)))
            out.total = count
            for i in range(min(count, limit)):
                key = bytes(ledger.call(fns.grantee_at(owner, raw, i)))
                grant = registry.grant_of(owner, raw, key)
                out.append(
                    {
                        "key": key.hex(),
                        "granted_block": grant.granted_block,
                        "revoked_block": grant.revoked_block or None,
                        "live": grant.live,
                    }
                )
    except _CHAIN_ERRORS as exc:
        return owner, _unavailable(exc)
    return owner, out


def grants(
    ctx: ServiceContext, resource: str, *, registrant: str | None = None, limit: int = MAX_LIMIT
) -> Listing:
    """Every X25519 key granted access to a registration of ``resource`` (a digest), live or
    revoked, in order of first grant: ``{"key": 64 hex, "granted_block", "revoked_block"
    (None while live), "live"}``. Whose registration: as in :func:`lineage`. Raises
    :class:`InputError` for a malformed digest and :class:`NotFound` when it is not
    registered."""
    return grant_list(ctx, resource, registrant=registrant, limit=limit)[1]


# -- training ----------------------------------------------------------------------------------


def training_tasks(ctx: ServiceContext, *, limit: int = 100) -> Listing:
    """The tasks of the workspace's ``TrainingTask`` contract, newest first: ``task``,
    ``creator``, ``spec_digest`` (hex), ``rule``, ``rounds``, ``quorum``, the phase lengths in
    blocks, ``participants`` (addresses), ``active`` (not excluded), ``round`` (the current
    one), ``phase`` (``commit``, ``reveal``, ``attest``, ``expired``, ``finished``) and
    ``finished``."""
    check_limit(limit)
    out = Listing()
    try:
        with _chain(ctx) as ledger:
            contract = _training(ctx, ledger)
            count = contract.task_count()
            out.total = count
            # task ids run from 1 to task_count
            for task in range(count, max(0, count - limit), -1):
                info = contract.task_info(task)
                state = contract.round_state(task)
                out.append(
                    {
                        "task": task,
                        "creator": info.creator,
                        "spec_digest": info.spec_digest.hex(),
                        "rule": info.rule,
                        "rounds": info.rounds,
                        "quorum": info.quorum,
                        "commit_blocks": info.commit_blocks,
                        "reveal_blocks": info.reveal_blocks,
                        "attest_blocks": info.attest_blocks,
                        "participants": contract.participants(task),
                        "active": info.active,
                        "round": info.round,
                        "phase": state.phase.name.lower(),
                        "finished": info.finished,
                    }
                )
    except _CHAIN_ERRORS as exc:
        return _unavailable(exc)
    return out


def training_rounds(ctx: ServiceContext, task: int) -> Listing:
    """The rounds of ``task`` so far, oldest first (at most the newest :data:`MAX_LIMIT`).

    Per round, from the chain: ``status`` (``pending``, ``finalized``, ``failed``),
    ``aggregate_digest`` (hex, when finalized) and ``votes`` (attestations of it). From this
    workspace's audit log, when a party here reported the round (``train join``) and its
    report agrees with the chain (same outcome and aggregate digest): ``accuracy`` (the
    party's evaluation of the global model after the round), ``scores`` (contributions),
    ``accepted``, ``rejected`` (party -> reason), ``flagged``, ``warnings`` and ``excluded``
    (every party excluded on chain by then); without a report those are None, except
    ``excluded`` of a closed round, which is then the parties excluded on chain now.
    Raises :class:`InputError` for a malformed id and :class:`NotFound` for an unknown task.
    """
    task = parse_task(task)
    out = Listing()
    try:
        with _chain(ctx) as ledger:
            contract = _training(ctx, ledger)
            if not 1 <= task <= contract.task_count():
                raise NotFound(f"no training task {task} on the TrainingTask at {contract.address}")
            info = contract.task_info(task)
            last = min(info.round, info.rounds - 1)
            first = max(0, last - MAX_LIMIT + 1)
            outcomes = {r: contract.outcome(task, r) for r in range(first, last + 1)}
            excluded_now = sorted(s.party for s in contract.party_states(task) if s.excluded)
    except _CHAIN_ERRORS as exc:
        return _unavailable(exc)
    reports = _index(ctx).reports(task)
    out.total = last + 1
    for r, outcome in outcomes.items():
        digest = outcome.aggregate_digest.hex() if outcome.aggregate_digest else None
        row: dict[str, Any] = {
            "round": r,
            "status": outcome.status,
            "aggregate_digest": digest,
            "votes": outcome.votes,
        }
        report = _matching_report(reports.get(r), outcome.status, digest)
        row["reported"] = report is not None
        row["accuracy"] = report.get("utility") if report else None
        for key in ("scores", "accepted", "rejected", "flagged", "warnings", "excluded"):
            row[key] = report.get(key) if report else None
        if report is None and outcome.status != "pending":
            row["excluded"] = excluded_now
        out.append(row)
    return out


def _matching_report(
    report: dict[str, Any] | None, status: str, digest: str | None
) -> dict[str, Any] | None:
    """The report if it describes the round the chain closed (same outcome, same digest)."""
    if report is None or status == "pending" or report.get("status") != status:
        return None
    if status == "finalized" and digest not in (
        report.get("aggregate_digest"),
        report.get("round_digest"),
    ):
        return None
    return report


# -- the log: alerts, checkpoints, anchors, entries --------------------------------------------


class _LogIndex:
    """What the views need from the log's records, found by one incremental scan (bounded)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next: int | None = None
        self.first = 0
        self.alerts: deque[tuple[int, dict[str, Any]]] = deque(maxlen=_KEEP_ALERTS)
        self.retracted: OrderedDict[str, str] = OrderedDict()
        self._reports: OrderedDict[tuple[int, int], dict[str, Any]] = OrderedDict()
        #: (chain id, owner, digest) -> the event's fields (parents as (owner, digest) pairs)
        self._registered: OrderedDict[tuple[int, str, bytes], dict[str, Any]] = OrderedDict()

    def update(self, log: AuditLog) -> None:
        with self.lock:
            size = log.size
            if self.next is None:
                self.first = self.next = max(0, size - SCAN_WINDOW)
            if size <= self.next:
                return
            for index, data in log.entries(self.next, size):
                if any(mark in data for mark in _MARKS):
                    self._take(index, data)
            self.next = size

    def _take(self, index: int, data: bytes) -> None:
        try:
            record = json.loads(data)
        except ValueError:
            return
        if not isinstance(record, dict):
            return
        kind = record.get("type")
        if kind == "sentinel.alert" and isinstance(record.get("alert"), dict):
            self.alerts.append((index, record))
        elif kind == "sentinel.retraction" and isinstance(record.get("alert_id"), str):
            self.retracted[record["alert_id"]] = str(record.get("reason", ""))
            while len(self.retracted) > _KEEP_RETRACTIONS:
                self.retracted.popitem(last=False)
        elif kind == "event" and record.get("kind") == "provenance.register":
            self._registration(record.get("fields"))
        elif kind == "event" and record.get("kind") == "training.round":
            fields = record.get("fields")
            if not isinstance(fields, dict):
                return
            task, round_ = fields.get("task"), fields.get("round")
            if type(task) is not int or type(round_) is not int:
                return
            self._reports[(task, round_)] = {k: fields.get(k) for k in _REPORT_FIELDS}
            self._reports.move_to_end((task, round_))
            while len(self._reports) > _KEEP_REPORTS:
                self._reports.popitem(last=False)

    def _registration(self, fields: object) -> None:
        if not isinstance(fields, dict) or type(fields.get("chain_id")) is not int:
            return
        try:
            owner = _event_owner(fields.get("owner"))
            digest = _event_digest(fields.get("digest"))
            parents = tuple(
                (_event_owner(p.get("owner")), _event_digest(p.get("digest")))
                for p in fields.get("parents") or ()
            )
        except (AiledgerError, AttributeError, TypeError, ValueError):
            return
        key = (fields["chain_id"], owner, digest)
        tx = fields.get("tx_hash")
        self._registered[key] = {"parents": parents, "tx_hash": tx if isinstance(tx, str) else None}
        self._registered.move_to_end(key)
        while len(self._registered) > _KEEP_REGISTRATIONS:
            self._registered.popitem(last=False)

    def registrations(self, chain_id: int) -> list[tuple[str, bytes, dict[str, Any]]]:
        """``(owner, digest, fields)`` of the registrations seen on ``chain_id``, newest first."""
        with self.lock:
            found = [(o, d, f) for (c, o, d), f in self._registered.items() if c == chain_id]
        return found[::-1]

    def registrants(self, chain_id: int, digest: bytes) -> list[str]:
        """The accounts seen registering ``digest`` on ``chain_id``, oldest first."""
        with self.lock:
            return [o for (c, o, d) in self._registered if c == chain_id and d == digest]

    def children(self, chain_id: int, owner: str, digest: bytes) -> list[tuple[str, bytes]]:
        """``(owner, digest)`` of the registrations seen with ``(owner, digest)`` as a parent."""
        with self.lock:
            return [
                (o, d)
                for (c, o, d), f in self._registered.items()
                if c == chain_id and (owner, digest) in f["parents"]
            ]

    def reports(self, task: int) -> dict[int, dict[str, Any]]:
        with self.lock:
            return {r: rep for (t, r), rep in self._reports.items() if t == task}


def _event_owner(value: object) -> str:
    from ailedger.ledger.provenance import parse_address

    if not isinstance(value, str):
        raise InputError("not an address")
    return parse_address(value, "owner")


def _event_digest(value: object) -> bytes:
    """A digest as the log's ``provenance.*`` events write it (``0x<hex>``)."""
    if not isinstance(value, str):
        raise InputError("not a digest")
    return _parse_digest(value, "digest")


def _index(ctx: ServiceContext) -> _LogIndex:
    index = ctx.extra.get("views.index")
    if not isinstance(index, _LogIndex):
        index = ctx.extra.setdefault("views.index", _LogIndex())
    index.update(ctx.log)
    return index


def alerts(ctx: ServiceContext, *, limit: int = 100) -> Listing:
    """Sentinel alerts recorded in the log, newest first: ``index`` (the entry), ``alert_id``,
    ``actor``, ``tx``, ``block``, ``class``, ``detector``, ``score``, ``flagged``,
    ``reasons`` (as the detector gave them, e.g. ``[{"feature", "value", "why"}]``),
    ``accounts``, ``retracted`` (the retraction's reason, or None) and the whole ``alert``.
    ``total`` is how many the index holds (at most :data:`MAX_LIMIT`)."""
    check_limit(limit)
    index = _index(ctx)
    with index.lock:
        found = list(index.alerts)
        retracted = dict(index.retracted)
    out = Listing(total=len(found))
    for entry, record in reversed(found[-limit:]):
        doc: dict[str, Any] = record["alert"]
        out.append(
            {
                "index": entry,
                "alert_id": record.get("alert_id"),
                "actor": record.get("actor"),
                **{key: doc.get(key) for key in _ALERT_FIELDS},
                "retracted": retracted.get(str(record.get("alert_id"))),
                "alert": doc,
            }
        )
    return out


def checkpoints(ctx: ServiceContext, *, limit: int = 100) -> Listing:
    """The log's signed checkpoints, newest first: ``size``, ``root`` (hex), ``origin`` and
    the signed ``note`` (text)."""
    from ailedger.auditlog.checkpoint import Checkpoint

    check_limit(limit)
    found = ctx.log.checkpoints()
    out = Listing(total=len(found))
    for size, note in reversed(found[-limit:]):
        text = note.decode("utf-8", "replace")
        try:
            head = Checkpoint.parse(text.split("\n\n", 1)[0] + "\n")
        except InputError:
            continue
        out.append(
            {"size": size, "root": head.root_hash.hex(), "origin": head.origin, "note": text}
        )
    return out


def anchors(ctx: ServiceContext, *, limit: int = 100) -> Listing:
    """Anchors of the log's checkpoints on chain, newest first: ``id``, ``size``, ``root``
    (hex), ``chain_id``, ``registry``, ``tx_hash``, ``block_number``, ``block_hash`` and
    ``status`` (as :mod:`ailedger.auditlog.anchoring` records them)."""
    check_limit(limit)
    rows = ctx.log.anchor_rows()
    out = Listing(total=len(rows))
    for row in reversed(rows[-limit:]):
        anchor_id, size, root, chain_id, registry, tx, block, block_hash, status = row
        out.append(
            {
                "id": anchor_id,
                "size": size,
                "root": bytes(root).hex() if isinstance(root, bytes) else root,
                "chain_id": chain_id,
                "registry": registry,
                "tx_hash": tx,
                "block_number": block,
                "block_hash": block_hash,
                "status": status,
            }
        )
    return out


def entries(ctx: ServiceContext, *, start: int, limit: int) -> Listing:
    """Entries ``start`` to ``start + limit - 1`` (fewer past the end), oldest first:
    ``index``, ``leaf_hash`` (hex, RFC 6962 §2.1: SHA-256 of 0x00 and the entry) and the
    public ``record`` (sensitive fields appear as their commitments)."""
    _check_start(start, "start")
    check_limit(limit)
    out = Listing(total=ctx.log.size)
    for index, data in ctx.log.entries(start, start + limit):
        try:
            record: Any = json.loads(data)
        except ValueError:
            record = None
        out.append(
            {
                "index": index,
                "leaf_hash": leaf_hash(data).hex(),
                "record": record,
            }
        )
    return out
