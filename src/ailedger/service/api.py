"""The audit API: append decisions, read entries and their proofs, erase, list anchors.

- ``POST /v1/entries``: a JSON object appends one entry (201 ``{"index": N}``); a JSON array
  of 1 to 10,000 objects appends them in one transaction, all or nothing (201 ``{"first": N,
  "count": K}``). ``?sensitive=FIELD`` (repeatable) commits those top-level fields instead of
  logging them, as ``ailedger log append --sensitive`` does. 201 means durable: the entries are
  on disk (``synchronous=FULL``) before the answer. Single appends from concurrent requests are
  committed together (:class:`GroupCommitter`), and so are the batches of concurrent requests
  (:class:`BatchCommitter`): one disk flush for whatever has queued up.
- ``GET /v1/entries/{index}``: the entry; the plaintext of its private fields only for a key
  with the ``read`` scope.
- ``GET /v1/entries/{index}/proof``: its C2SP tlog-proof (https://c2sp.org/tlog-proof) against
  the latest signed checkpoint; 425 (RFC 8470 §5.2, Too Early) with ``Retry-After`` while no
  checkpoint covers it yet.
- ``POST /v1/entries/{index}/erase`` (``admin``): destroy the entry's private values.
- ``GET /v1/anchors``: the log's anchors on chain and their status.

Bad input answers 400 (malformed JSON, a bad query), 413 (a body or batch too large) or 422
(a value that is JSON but not a record), with ``{"error": "one line"}``, and appends nothing.

``POST /v1/entries`` is the hot path: :class:`FastAppend` answers it as a plain ASGI handler in
front of FastAPI's routing, dependency resolution and response models (which cost several
times what the append itself does), with the same checks in the same order and the same
answers; the FastAPI route stays declared (and working) for the OpenAPI document. A request
body's nesting is bounded with a cheap scan of its bytes (:func:`parse_body`) before the
decoder runs.

A batch (an array, without ``sensitive`` names) takes a faster way to the same entries:
:func:`encode_batch` decodes the body and encodes its records at about half the exact path's
CPU per entry (:func:`ailedger.auditlog.records.encode_json_records`), in the batch encoder's
process when the service runs one (:mod:`._encoder`, the second core: from 4 KiB bodies) or
else in a worker thread, and :class:`BatchCommitter` appends the encoded entries
(:meth:`AuditLog.append_encoded`). A body that way does not take (anything malformed or
unusual) goes the exact way, parsed, checked and appended in one worker-thread call, with the
exact path's answers.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar
from urllib.parse import parse_qsl

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel

from ailedger._input import DEFAULT_MAX_DEPTH, parse_json
from ailedger.auditlog.records import encode_json_records
from ailedger.errors import AiledgerError, InputError
from ailedger.service._encoder import BatchEncoder
from ailedger.service.auth import ApiKey, Scope, authorize, require
from ailedger.service.background import SIGNER_KEY, CheckpointSigner, served_checkpoint
from ailedger.service.context import ServiceContext, context
from ailedger.service.metrics import Metrics

if TYPE_CHECKING:
    from ailedger.auditlog.log import AuditLog

__all__ = [
    "BATCH_COMMITTER_KEY",
    "ENCODER_KEY",
    "MAX_BATCH",
    "BatchCommitter",
    "FastAppend",
    "GroupCommitter",
    "append_body",
    "encode_batch",
    "notify_signer",
    "parse_body",
    "router",
]

_log = logging.getLogger("ailedger.service")
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

#: the most records one batch request may hold
MAX_BATCH = 10_000
#: the most ``sensitive`` names one request may give, and their longest name
_MAX_SENSITIVE = 100
_MAX_NAME = 200
#: the most single appends one group commit takes
GROUP_MAX = 4096
BATCHER_KEY = "append_batcher"
BATCH_COMMITTER_KEY = "batch_committer"
#: the most entries one group commit of batches takes (unless one batch alone is larger)
GROUP_MAX_ENTRIES = 32_768
#: where the service keeps its :class:`BatchEncoder` (when it runs one)
ENCODER_KEY = "batch_encoder"
METRICS_KEY = "metrics"
MAX_BODY_KEY = "max_body"
DEFAULT_MAX_BODY = 16 * 1024 * 1024

_INDEX = re.compile(r"-?[0-9]{1,30}", re.ASCII)

router = APIRouter(prefix="/v1", tags=["entries"])

Ctx = Annotated[ServiceContext, Depends(context)]


class Appended(BaseModel):
    """One entry appended."""

    index: int


class AppendedBatch(BaseModel):
    """A batch appended: indexes ``first`` to ``first + count - 1``."""

    first: int
    count: int


class Entry(BaseModel):
    """An entry: its record as logged, its RFC 6962 leaf hash (hex), and, for the ``read``
    scope, the plaintext of its sensitive fields (``None`` once erased)."""

    index: int
    leaf_hash: str
    record: dict[str, Any]
    private: dict[str, Any] | None = None


class Erased(BaseModel):
    """Whether anything was left to erase."""

    index: int
    erased: bool


class AnchorInfo(BaseModel):
    """One anchor of the log on chain (``status``: new, pending, anchored, final, ...)."""

    size: int
    root: str
    chain_id: int
    registry: str
    tx_hash: str | None
    block_number: int | None
    block_hash: str | None
    status: str


#: what the key guard of a non-public route may answer (ailedger.service.auth)
_GUARDED: dict[int | str, dict[str, Any]] = {
    401: {"description": "no API key, or an unknown or revoked one"},
    403: {"description": "the API key lacks the scope"},
    429: {"description": "the API key's rate limit is exceeded (see Retry-After)"},
}


#: what the key guard of a public route may answer (a malformed or unknown key sent anyway)
PUBLIC: dict[int | str, dict[str, Any]] = {
    401: {"description": "a malformed, unknown or revoked API key was sent"},
    429: {"description": "the API key's rate limit is exceeded (see Retry-After)"},
}


def _error(status: int, message: str, **headers: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message, headers=headers or None)


def _metrics(ctx: ServiceContext) -> Metrics | None:
    found = ctx.extra.get(METRICS_KEY)
    return found if isinstance(found, Metrics) else None


class _Committer(Generic[ItemT, ResultT]):
    """What both group committers share: requests queue an item and wait for its result, and
    one task on the event loop commits whatever has queued up (:meth:`_commit_some`, one
    durable transaction in a worker thread) while the next ones queue up behind it, so the
    disk flush is shared by every request in a group. ``on_commit`` is called once after
    each group (the checkpoint signer's wake-up)."""

    def __init__(self, log: AuditLog, *, on_commit: Callable[[], None] | None = None) -> None:
        self.log = log
        self.on_commit = on_commit
        self._pending: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def _enqueue(self, item: ItemT) -> ResultT:
        if self._task is None or self._task.done():
            self._stopping = False
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        assert self._wake is not None
        done: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._pending.append((item, done))
        self._wake.set()
        # a request cancelled while waiting cancels only ``done``: its item is still
        # committed with its group, and _settle skips telling it
        return await done

    async def stop(self) -> None:
        """Commit what is queued, then end the task."""
        task, self._task = self._task, None
        if task is not None and self._wake is not None:
            self._stopping = True
            self._wake.set()
            await task

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            while self._pending:
                await self._commit_some()
                if self.on_commit is not None:
                    try:
                        self.on_commit()
                    except Exception:  # a wake-up that failed must not stop the appends
                        _log.exception("the group commit's on_commit callback failed")
            if self._stopping:
                return
            await self._wake.wait()
            self._wake.clear()

    async def _commit_some(self) -> None:
        """Take items from the front of the queue, commit them, settle their futures."""
        raise NotImplementedError


class GroupCommitter(_Committer[tuple[dict[str, Any], tuple[str, ...]], int]):
    """Commits the single appends of concurrent requests together (group commit).

    A group is at most :data:`GROUP_MAX` records, appended with one
    :meth:`AuditLog.append_many` call. Records with different ``sensitive`` names go in
    separate transactions. If a group is refused because one record is bad
    (:class:`InputError`), each of its records is appended on its own, so only the bad one
    fails.
    """

    async def append(self, record: dict[str, Any], sensitive: tuple[str, ...]) -> int:
        """Append ``record``; return its index once it is durable."""
        return await self._enqueue((record, sensitive))

    async def _commit_some(self) -> None:
        group, self._pending = self._pending[:GROUP_MAX], self._pending[GROUP_MAX:]
        if all(not names for (_, names), _ in group):  # the common case: one transaction
            await self._commit_group([(record, done) for (record, _), done in group], ())
            return
        by_names: dict[tuple[str, ...], list[tuple[dict[str, Any], asyncio.Future[int]]]] = {}
        for (record, names), done in group:
            by_names.setdefault(names, []).append((record, done))
        for names, items in by_names.items():
            await self._commit_group(items, names)

    async def _commit_group(
        self, items: list[tuple[dict[str, Any], asyncio.Future[int]]], names: tuple[str, ...]
    ) -> None:
        records = [record for record, _ in items]
        try:
            indexes = await anyio.to_thread.run_sync(self._append_many, records, names)
        except InputError:
            for record, done in items:  # find the bad one(s): each on its own
                try:
                    found = await anyio.to_thread.run_sync(self._append_many, [record], names)
                except Exception as exc:
                    _settle(done, exc)
                else:
                    _settle(done, found.start)
            return
        except Exception as exc:
            for _, done in items:
                _settle(done, exc)
            return
        for (_, done), index in zip(items, indexes, strict=True):
            _settle(done, index)

    def _append_many(self, records: list[dict[str, Any]], names: tuple[str, ...]) -> range:
        return self.log.append_many(records, sensitive=names)


class BatchCommitter(_Committer[tuple[list[bytes], list[bytes] | None], range]):
    """Commits the encoded batches of concurrent requests together (group commit).

    Each batch request whose body was encoded (:func:`encode_batch`, in the batch encoder's
    process or in a worker thread) queues its entries here; a group is whatever batches have
    queued up (at most :data:`GROUP_MAX_ENTRIES` entries, or one larger batch), appended with
    one :meth:`AuditLog.append_encoded` call: the disk flush (milliseconds here, as long as
    the CPU work of a batch of 1,000) is shared. Each request's entries stay consecutive and
    are appended all or none; a failed transaction fails every request in it, having
    appended nothing.
    """

    async def append(self, datas: list[bytes], leaf_hashes: list[bytes] | None) -> range:
        """Append encoded entries (with their leaf hashes, when known); their indexes once
        they are durable."""
        return await self._enqueue((datas, leaf_hashes))

    async def _commit_some(self) -> None:
        take, entries = 0, 0
        for (datas, _), _ in self._pending:
            if take and entries + len(datas) > GROUP_MAX_ENTRIES:
                break
            take += 1
            entries += len(datas)
        group, self._pending = self._pending[:take], self._pending[take:]
        datas = [data for (batch, _), _ in group for data in batch]
        leaves: list[bytes] | None = None
        if all(hashes is not None for (_, hashes), _ in group):
            leaves = [h for (_, hashes), _ in group for h in hashes or ()]
        try:
            appended = await anyio.to_thread.run_sync(
                functools.partial(self.log.append_encoded, datas, leaf_hashes=leaves)
            )
        except Exception as exc:
            for _, done in group:
                _settle(done, exc)
            return
        at = appended.start
        for (batch, _), done in group:
            _settle(done, range(at, at + len(batch)))
            at += len(batch)


def _settle(done: asyncio.Future[ResultT], outcome: ResultT | Exception) -> None:
    if done.done():  # the request was cancelled (its client left): nothing to tell
        return
    if isinstance(outcome, Exception):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)


def notify_signer(ctx: ServiceContext) -> None:
    """Wake the service's checkpoint signer (if it runs): the log grew."""
    signer = ctx.extra.get(SIGNER_KEY)
    if isinstance(signer, CheckpointSigner):
        signer.notify()


def _committer(ctx: ServiceContext) -> GroupCommitter:
    found = ctx.extra.get(BATCHER_KEY)
    if not isinstance(found, GroupCommitter):
        found = GroupCommitter(ctx.log, on_commit=functools.partial(notify_signer, ctx))
        ctx.extra[BATCHER_KEY] = found
    return found


def _batch_committer(ctx: ServiceContext) -> BatchCommitter:
    found = ctx.extra.get(BATCH_COMMITTER_KEY)
    if not isinstance(found, BatchCommitter):
        found = BatchCommitter(ctx.log, on_commit=functools.partial(notify_signer, ctx))
        ctx.extra[BATCH_COMMITTER_KEY] = found
    return found


def _sensitive_names(names: list[str]) -> tuple[str, ...]:
    if len(names) > _MAX_SENSITIVE:
        raise _error(400, f"at most {_MAX_SENSITIVE} sensitive fields per request")
    for at, name in enumerate(names):
        if not name or len(name) > _MAX_NAME or not name.isprintable():
            raise _error(400, f"sensitive field #{at + 1} is not a field name")
        if name in names[:at]:
            raise _error(400, f"sensitive field {name!r} is given twice")
    return tuple(names)


def _index(raw: str, size: int) -> int:
    if _INDEX.fullmatch(raw) is None:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise _error(400, f"{shown!r} is not an entry index (an integer)")
    index = int(raw)
    if not 0 <= index < size:
        raise _error(404, f"the log has no entry {index} (size {size})")
    return index


_BODY_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "description": "one record"},
                        {
                            "type": "array",
                            "items": {"type": "object"},
                            "minItems": 1,
                            "maxItems": MAX_BATCH,
                            "description": "a batch of records, appended all or nothing",
                        },
                    ]
                }
            }
        },
    }
}


@router.post(
    "/entries",
    status_code=201,
    response_model=Appended | AppendedBatch,
    openapi_extra=_BODY_SCHEMA,
    responses={
        **_GUARDED,
        400: {"description": "malformed JSON or query"},
        413: {"description": "body or batch too large"},
        422: {"description": "not a record, or a batch holding a non-record"},
    },
)
async def append_entries(
    request: Request,
    ctx: Ctx,
    _key: Annotated[ApiKey | None, Depends(require(Scope.APPEND))],
    sensitive: Annotated[
        list[str] | None, Query(description="A field to commit instead of logging (repeat).")
    ] = None,
) -> Appended | AppendedBatch:
    """Append one record (a JSON object) or a batch (a JSON array of objects)."""
    # FastAppend answers this route in a running service; this body serves an app mounted
    # some other way, and the route declares the operation in the OpenAPI document
    names = _sensitive_names(list(sensitive or []))
    body = await request.body()
    first, count = await append_body(ctx, body, names)
    if count is None:
        return Appended(index=first)
    return AppendedBatch(first=first, count=count)


_NOT_STRUCTURE = bytes(range(256)).translate(None, b'"[]{}')
_INNERMOST = re.compile(rb"[\[{][\]}]")
#: what parse_json is told once the scan has bounded the depth: no second scan
_SCANNED = 1 << 62
#: bodies up to this many bytes are parsed on the event loop, larger ones in a worker thread
_PARSE_ON_LOOP = 64 * 1024
#: batch bodies from this many bytes go to the batch encoder's process (when it runs): below,
#: the round trip costs about what encoding them here does
_ENCODE_ELSEWHERE = 4 * 1024


def _nesting_at_most(data: bytes, max_depth: int) -> bool:
    """True if ``data``'s JSON brackets nest at most ``max_depth`` deep; False when that is
    not shown (deeper, unbalanced, or not JSON: the exact check then decides).

    Works on bytes with C-speed passes: drop escaped backslashes and quotes, keep only quotes
    and brackets, drop quoted strings, then remove innermost bracket pairs once per level (each
    round lowers a balanced sequence by exactly one level). Up to where a decoder stops, its
    strings are exactly the spans found here (a backslash outside a string stops it), so
    it never nests deeper than the bound shown.
    """
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return True
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = data.translate(None, _NOT_STRUCTURE)
    if b'"' in brackets:
        # what lies between two quotes is a string's (split and join: 4 times a regex's
        # speed); adjacent quotes go first (a string without brackets, or two strings with
        # nothing kept between them, merged into one), leaving far fewer parts to split
        parts = brackets.replace(b'""', b"").split(b'"')
        if len(parts) % 2 == 0:  # an odd number of quotes: not shown
            return False
        brackets = b"".join(parts[::2])
    for _ in range(max_depth):
        brackets, removed = _INNERMOST.subn(b"", brackets)
        if not brackets:
            return True
        if not removed:
            return False
    return not brackets


def parse_body(body: bytes, *, max_bytes: int) -> Any:
    """A request body's JSON value, bounded as :func:`ailedger._input.parse_json` bounds it
    (size, nesting at most ``DEFAULT_MAX_DEPTH`` levels, duplicate keys, ...).

    The nesting is bounded by :func:`_nesting_at_most` (a few passes in C, about 20 times
    faster on a batch than parse_json's own check); only when that cannot show it does
    parse_json's exact check run. Raises :class:`InputError`.
    """
    depth = _SCANNED if _nesting_at_most(body, DEFAULT_MAX_DEPTH) else DEFAULT_MAX_DEPTH
    return parse_json(body, what="the request body", max_bytes=max_bytes, max_depth=depth)


async def append_body(
    ctx: ServiceContext, body: bytes, names: tuple[str, ...]
) -> tuple[int, int | None]:
    """Append what a ``POST /v1/entries`` body holds: ``(index, None)`` for one record,
    ``(first, count)`` for a batch, once durable. Raises ``HTTPException`` (400, 413, 422)
    for bad input, having appended nothing."""
    max_body = int(ctx.extra.get(MAX_BODY_KEY, DEFAULT_MAX_BODY))
    metrics = _metrics(ctx)
    started = time.perf_counter()
    if not names and body.startswith(b"["):
        # a batch: encoded in the encoder's process (the other core) or a worker thread,
        # then group-committed with the batches of other requests
        encoder = ctx.extra.get(ENCODER_KEY)
        encoded: tuple[list[bytes], list[bytes] | None] | None
        if isinstance(encoder, BatchEncoder) and encoder.running and len(body) >= _ENCODE_ELSEWHERE:
            encoded = await encoder.encode(body, max_body)
        else:
            encoded = await anyio.to_thread.run_sync(_encode_here, body, max_body)
        if encoded is not None:
            appended = await _batch_committer(ctx).append(*encoded)
            return _appended_batch(ctx, appended, metrics, started)
    if len(body) <= _PARSE_ON_LOOP and not body.startswith(b"["):
        value = _parse(body, max_body)
    else:
        # milliseconds of decoding: off the event loop, which answers others meanwhile, and
        # in the same worker call as the batch's append (one thread hop, not two)
        value, indexes = await anyio.to_thread.run_sync(
            _parse_and_append, ctx.log, body, max_body, names
        )
        if indexes is not None:
            return _appended_batch(ctx, indexes, metrics, started)
    if isinstance(value, dict):
        try:
            index = await _committer(ctx).append(value, names)
        except InputError as exc:
            raise _error(422, f"{exc} (nothing was appended)") from exc
        if metrics is not None:
            metrics.append_single.observe(time.perf_counter() - started)
            metrics.appends.inc()
        return index, None
    _check_batch(value)
    indexes = await anyio.to_thread.run_sync(_append_batch, ctx.log, value, names)
    return _appended_batch(ctx, indexes, metrics, started)


def _parse(body: bytes, max_body: int) -> Any:
    """The body's JSON value; 400 or 413 (``HTTPException``) when it is not JSON or too big."""
    try:
        return parse_body(body, max_bytes=max_body)
    except InputError as exc:
        status = 413 if "larger than" in str(exc) else 400
        raise _error(status, f"{exc} (nothing was appended)") from exc


def _check_batch(value: Any) -> None:
    """422 or 413 (``HTTPException``) unless ``value`` is a batch: 1 to MAX_BATCH objects."""
    if not isinstance(value, list):
        raise _error(
            422, f"the body is a JSON {_kind(value)}: send an object or an array of objects"
        )
    if not value:
        raise _error(422, "the batch is empty: send 1 to 10000 objects (nothing was appended)")
    if len(value) > MAX_BATCH:
        raise _error(
            413,
            f"the batch holds {len(value)} records, at most {MAX_BATCH} are taken "
            "(nothing was appended)",
        )
    for at, item in enumerate(value):
        if type(item) is not dict:
            raise _error(
                422,
                f"batch item {at} is a JSON {_kind(item)}, not an object (nothing was appended)",
            )


def _append_batch(log: AuditLog, value: list[Any], names: tuple[str, ...]) -> range:
    """Append a checked batch in one transaction (a worker thread); 422 for a bad record."""
    try:
        return log.append_many(value, sensitive=names)
    except InputError as exc:
        raise _error(422, f"{exc} (nothing was appended)") from exc


def _parse_and_append(
    log: AuditLog, body: bytes, max_body: int, names: tuple[str, ...]
) -> tuple[Any, range | None]:
    """In a worker thread: parse a large body and, when it is a batch, append it.

    Returns ``(value, indexes)``, with ``indexes`` None when the body is a single object (the
    group committer appends that one on the event loop's side). Raises ``HTTPException`` as
    :func:`append_body` would.
    """
    value = _parse(body, max_body)
    if isinstance(value, dict):
        return value, None
    _check_batch(value)
    return None, _append_batch(log, value, names)


def _encode_here(body: bytes, max_body: int) -> tuple[list[bytes], None] | None:
    datas = encode_batch(body, max_bytes=max_body)
    return None if datas is None else (datas, None)


def encode_batch(body: bytes, *, max_bytes: int) -> list[bytes] | None:
    """The entries of a batch body, each exactly as :func:`.records.encode_record` makes it,
    when the body is a JSON array of 1 to :data:`MAX_BATCH` objects that :func:`parse_body`
    accepts; None when that is not shown (then :func:`parse_body` and
    :meth:`AuditLog.append_many` decide, with their messages).

    The nesting is bounded first (:func:`_nesting_at_most`), then
    :func:`.records.encode_json_records` decodes and encodes the records, at about half
    of the CPU per entry of that exact path.
    """
    if len(body) > max_bytes or not body.startswith(b"["):
        return None
    if not _nesting_at_most(body, DEFAULT_MAX_DEPTH):
        return None
    datas = encode_json_records(body)
    if datas is None or not 0 < len(datas) <= MAX_BATCH:
        return None
    return datas


def _appended_batch(
    ctx: ServiceContext, indexes: range, metrics: Metrics | None, started: float
) -> tuple[int, int]:
    count = len(indexes)
    if metrics is not None:
        metrics.batch_size.observe(count)
        metrics.append_batch.observe(time.perf_counter() - started)
        metrics.appends.inc(count)
    notify_signer(ctx)
    return indexes.start, count


def _query_names(query: bytes) -> tuple[str, ...]:
    """The ``sensitive`` names of a raw query string, checked as the route checks them."""
    if not query:
        return ()
    text = query.decode("latin-1")
    found = [
        value for name, value in parse_qsl(text, keep_blank_values=True) if name == "sensitive"
    ]
    return _sensitive_names(found)


_JSON_HEADERS = [(b"content-type", b"application/json")]


class FastAppend:
    """``POST /v1/entries`` as a plain ASGI handler (see the module docstring).

    It does what the FastAPI stack does for that route, in the same order: the body limit on
    ``Content-Length`` (413, or 400 when malformed), the key guard (:func:`authorize`: 401,
    403, 429, 503), the ``sensitive`` names (400), the body read up to ``max_body`` bytes
    (413), then :func:`append_body`. Each answer is counted in ``metrics.responses``; errors
    answer ``{"error": "one line"}`` with the status ``status_of`` gives an
    :class:`AiledgerError` (the app's own mapping).
    """

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        max_body: int,
        metrics: Metrics | None,
        status_of: Callable[[AiledgerError], int],
    ) -> None:
        self.ctx = ctx
        self.max_body = max_body
        self.metrics = metrics
        self.status_of = status_of

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Answer one ``POST /v1/entries`` (an ASGI ``http`` scope)."""
        headers: list[tuple[bytes, bytes]] = []
        try:
            status, body = await self._answer(scope, receive, headers)
        except _Gone:  # the client left before its body arrived: nobody to answer
            return
        except HTTPException as exc:
            status = exc.status_code
            body = _error_body(exc.detail)
            headers = [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in (exc.headers or {}).items()
            ]
        except AiledgerError as exc:
            status = self.status_of(exc)
            if status >= 500:
                _log.error("POST /v1/entries failed: %s", exc)
            body = _error_body(exc)
            headers = [(b"connection", b"close")] if status == 413 else []
        except Exception:
            _log.exception("POST /v1/entries failed")
            status, body = 500, _error_body("internal error")
        if self.metrics is not None:
            self.metrics.count_response(status)
        headers.extend(_JSON_HEADERS)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(
        self, scope: Any, receive: Any, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, bytes]:
        authorization: str | None = None
        length: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif name == b"content-length":
                length = value
        if length is not None:
            if not length.isdigit():
                return 400, _error_body("malformed Content-Length")
            if int(length) > self.max_body:
                headers.append((b"connection", b"close"))
                return 413, _error_body(
                    f"the request body is larger than {self.max_body} bytes (nothing was appended)"
                )
        authorize(authorization, self.ctx, Scope.APPEND)
        names = _query_names(scope.get("query_string", b""))
        body = await self._read(receive)
        first, count = await append_body(self.ctx, body, names)
        if count is None:
            return 201, b'{"index":%d}' % first
        return 201, b'{"first":%d,"count":%d}' % (first, count)

    async def _read(self, receive: Any) -> bytes:
        """The whole request body, refused (413) past ``max_body`` bytes."""
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _Gone
            chunk = message.get("body", b"")
            if chunk:
                received += len(chunk)
                if received > self.max_body:
                    raise _error(
                        413,
                        f"the request body is larger than {self.max_body} bytes "
                        "(nothing was appended)",
                        Connection="close",
                    )
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _Gone(Exception):
    """The client disconnected before its request body was read."""


def _error_body(message: object) -> bytes:
    text = str(message).strip()
    line = text.splitlines()[0][:500] if text else "error"
    return json.dumps({"error": line}, ensure_ascii=False, separators=(",", ":")).encode()


def _kind(value: object) -> str:
    kinds = {list: "array", dict: "object", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


def _read_entry(ctx: ServiceContext, raw: str, with_private: bool) -> Entry:
    log = ctx.log
    index = _index(raw, log.size)
    entry = log.show(index)
    return Entry(
        index=entry.index,
        leaf_hash=entry.leaf_hash.hex(),
        record=entry.record,
        private=entry.private if with_private else None,
    )


@router.get(
    "/entries/{index}",
    response_model=Entry,
    response_model_exclude_none=False,
    responses={
        **PUBLIC,
        400: {"description": "not an integer"},
        404: {"description": "no such entry"},
    },
)
async def get_entry(
    index: str,
    ctx: Ctx,
    key: Annotated[ApiKey | None, Depends(require(Scope.READ, public=True))],
) -> Entry:
    """Entry ``index``; its private values only for a key with the ``read`` scope."""
    with_private = ctx.keys is None or key is not None
    return await anyio.to_thread.run_sync(_read_entry, ctx, index, with_private)


def _proof(ctx: ServiceContext, raw: str) -> bytes:
    log = ctx.log
    index = _index(raw, log.size)
    served = served_checkpoint(ctx)
    if served is None or served[0] <= index:
        raise _error(
            425,
            f"entry {index} is not covered by a signed checkpoint yet: retry in a second",
            **{"Retry-After": "1"},
        )
    return log.receipt(index, checkpoint=served[1]).to_bytes()


@router.get(
    "/entries/{index}/proof",
    response_class=Response,
    responses={
        **PUBLIC,
        200: {"content": {"text/plain": {}}, "description": "a C2SP tlog-proof"},
        400: {"description": "not an integer"},
        404: {"description": "no such entry"},
        425: {"description": "no signed checkpoint covers the entry yet"},
    },
)
async def get_proof(
    index: str,
    ctx: Ctx,
    _key: Annotated[ApiKey | None, Depends(require(Scope.READ, public=True))],
) -> Response:
    """The entry's C2SP tlog-proof against the latest signed checkpoint."""
    receipt = await anyio.to_thread.run_sync(_proof, ctx, index)
    return Response(content=receipt, media_type="text/plain; charset=utf-8")


def _erase(ctx: ServiceContext, raw: str) -> Erased:
    log = ctx.log
    index = _index(raw, log.size)
    return Erased(index=index, erased=log.erase(index))


@router.post(
    "/entries/{index}/erase",
    response_model=Erased,
    responses={
        **_GUARDED,
        400: {"description": "not an integer"},
        404: {"description": "no such entry"},
    },
)
async def erase_entry(
    index: str,
    ctx: Ctx,
    _key: Annotated[ApiKey | None, Depends(require(Scope.ADMIN))],
) -> Erased:
    """Destroy entry ``index``'s private values for good (its proofs still verify)."""
    return await anyio.to_thread.run_sync(_erase, ctx, index)


def _anchors(ctx: ServiceContext) -> list[AnchorInfo]:
    return [
        AnchorInfo(
            size=int(row[1]),
            root="0x" + bytes(row[2]).hex(),
            chain_id=int(row[3]),
            registry=str(row[4]),
            tx_hash=row[5],
            block_number=None if row[6] is None else int(row[6]),
            block_hash=row[7],
            status=str(row[8]),
        )
        for row in ctx.log.anchor_rows()
    ]


@router.get("/anchors", response_model=list[AnchorInfo], responses=PUBLIC)
async def list_anchors(
    ctx: Ctx,
    _key: Annotated[ApiKey | None, Depends(require(Scope.READ, public=True))],
) -> list[AnchorInfo]:
    """Every anchor of the log, oldest first."""
    return await anyio.to_thread.run_sync(_anchors, ctx)
