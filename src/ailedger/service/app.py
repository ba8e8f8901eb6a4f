"""The service's FastAPI application: routers, errors as JSON, body limit, metrics, lifespan.

:func:`create_app` builds the app over one :class:`ServiceContext` (stored as
``app.state.service``). It includes the audit API (:mod:`.api`), the C2SP tlog-tiles read API
(:mod:`.tiles`), the read endpoints (:mod:`.reads`) and the dashboard (:mod:`.dashboard`) when
those modules are installed, and serves ``/healthz``, ``/metrics`` (Prometheus text format)
and ``/openapi.json``. Every error answers ``{"error": "one line"}`` with its status. CORS is
off (no CORS headers are sent, so browsers keep other origins out); the interactive docs pages
are off too (they load scripts from a CDN).

``POST /v1/entries``, the hot path, is answered by :class:`ailedger.service.api.FastAppend`
ahead of the middleware below (it applies the same limit and counts its responses itself).

The body limit is an ASGI middleware: a ``Content-Length`` above the limit is answered 413
before anything is read, and a chunked body is counted as it arrives and refused once it passes
the limit.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from ailedger.errors import (
    AiledgerError,
    InputError,
    NodeUnavailable,
    VerificationError,
    WorkspaceError,
)
from ailedger.service import api, tiles
from ailedger.service._encoder import BatchEncoder
from ailedger.service.api import (
    BATCH_COMMITTER_KEY,
    BATCHER_KEY,
    DEFAULT_MAX_BODY,
    ENCODER_KEY,
    MAX_BODY_KEY,
    METRICS_KEY,
    BatchCommitter,
    FastAppend,
    GroupCommitter,
    notify_signer,
)
from ailedger.service.background import (
    ANCHOR_KEY,
    SIGNER_KEY,
    AnchorLoop,
    CheckpointSigner,
    served_checkpoint,
)
from ailedger.service.context import ServiceContext
from ailedger.service.metrics import CONTENT_TYPE_LATEST, Metrics, StatusCounter

__all__ = ["BodyTooLarge", "ServiceApp", "create_app"]

_log = logging.getLogger("ailedger.service")

#: routers written beside this module; a missing one is skipped
_OPTIONAL_ROUTERS = ("ailedger.service.reads", "ailedger.service.dashboard")


class BodyTooLarge(InputError):
    """A request body is larger than the service takes."""


def _one_line(text: object) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else "error"
    return line[:500]


class BodyLimit:
    """ASGI middleware refusing request bodies larger than ``max_body`` bytes (413)."""

    def __init__(self, app: Any, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and not value.isdigit():
                bad = JSONResponse({"error": "malformed Content-Length"}, status_code=400)
                await bad(scope, receive, send)
                return
            if name == b"content-length" and int(value) > self.max_body:
                await _too_large(self.max_body)(scope, receive, send)
                return
        received = 0
        limit = self.max_body

        async def limited() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(f"the request body is larger than {limit} bytes")
            return message

        await self.app(scope, limited, send)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {"error": f"the request body is larger than {limit} bytes (nothing was appended)"},
        status_code=413,
        headers={"Connection": "close"},
    )


def _status_of(exc: AiledgerError) -> int:
    if isinstance(exc, BodyTooLarge):
        return 413
    if isinstance(exc, InputError):
        return 400
    if isinstance(exc, NodeUnavailable | WorkspaceError):
        return 503
    if isinstance(exc, VerificationError):
        return 500
    return 500


class ServiceApp(FastAPI):
    """The service's FastAPI app, with ``POST /v1/entries`` answered by :class:`FastAppend`
    (when ``fast_append`` is set) before FastAPI's middleware and routing; every other request
    takes the usual way."""

    fast_append: FastAppend | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_append
        if (
            fast is not None
            and scope["type"] == "http"
            and scope["path"] == "/v1/entries"
            and scope["method"] == "POST"
        ):
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _install_errors(app: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse(
            {"error": _one_line(exc.detail)},
            status_code=exc.status_code,
            headers=dict(exc.headers) if exc.headers else None,
        )

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        if errors:
            first = errors[0]
            where = ".".join(str(part) for part in first.get("loc", ()))
            message = f"{where}: {first.get('msg', 'invalid')}"
        else:
            message = "the request is not valid"
        return JSONResponse({"error": _one_line(message)}, status_code=422)

    async def ailedger_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AiledgerError)
        status = _status_of(exc)
        if status >= 500:
            _log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return JSONResponse({"error": _one_line(exc)}, status_code=status)

    async def internal_error(request: Request, exc: Exception) -> Response:
        _log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "internal error"}, status_code=500)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(AiledgerError, ailedger_error)
    app.add_exception_handler(Exception, internal_error)


def _include_optional(app: FastAPI) -> None:
    for name in _OPTIONAL_ROUTERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            _log.info("%s is not installed: its routes are not served", name)
            continue
        app.include_router(module.router)


def _watch(metrics: Metrics, ctx: ServiceContext) -> None:
    def checkpoint_size() -> float:
        found = served_checkpoint(ctx)
        return float(found[0]) if found is not None else 0.0

    def anchor_loop() -> AnchorLoop | None:
        found = ctx.extra.get(ANCHOR_KEY)
        return found if isinstance(found, AnchorLoop) else None

    def lag_entries() -> float:
        loop = anchor_loop()
        return float(loop.lag_entries()) if loop else 0.0

    def lag_seconds() -> float:
        loop = anchor_loop()
        return loop.lag_seconds() if loop else 0.0

    def anchor_failures() -> float:
        loop = anchor_loop()
        return float(loop.failures) if loop else 0.0

    def anchor_deferred() -> float:
        loop = anchor_loop()
        return 1.0 if loop is not None and loop.deferred else 0.0

    def signer_failing() -> float:
        signer = ctx.extra.get(SIGNER_KEY)
        return 1.0 if isinstance(signer, CheckpointSigner) and signer.last_error else 0.0

    metrics.watch("ailedger_log_size", "Entries in the log.", lambda: float(ctx.log.size))
    metrics.watch(
        "ailedger_checkpoint_size", "Tree size of the served checkpoint.", checkpoint_size
    )
    metrics.watch(
        "ailedger_anchor_lag_entries",
        "Entries appended since the last confirmed anchor.",
        lag_entries,
    )
    metrics.watch(
        "ailedger_anchor_lag_seconds", "Seconds since the last confirmed anchor.", lag_seconds
    )
    metrics.watch(
        "ailedger_anchor_failures", "Anchoring attempts failed in a row.", anchor_failures
    )
    metrics.watch(
        "ailedger_anchor_deferred",
        "1 while the anchor due waits for a cheaper block ([chain] fee_policy = scheduled).",
        anchor_deferred,
    )
    metrics.watch(
        "ailedger_checkpoint_failing", "1 while signing checkpoints fails.", signer_failing
    )


def create_app(
    ctx: ServiceContext,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    signer: CheckpointSigner | None = None,
    anchor_loop: AnchorLoop | None = None,
    encoder_process: bool = False,
) -> FastAPI:
    """The service's app over ``ctx``.

    ``max_body`` is the largest request body taken, in bytes (413 above it). ``signer`` (the
    checkpoint signer) and ``anchor_loop`` run while the app runs (started and stopped by its
    lifespan); without a signer the service serves the log's latest stored checkpoint. With
    ``encoder_process``, batch bodies are decoded, encoded and hashed in a second process
    (:class:`ailedger.service._encoder.BatchEncoder`, started by the lifespan), so the service
    uses two cores.
    """
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
        raise InputError(f"the body limit must be a positive number of bytes, got {max_body!r}")
    metrics = Metrics()
    ctx.extra[METRICS_KEY] = metrics
    ctx.extra[MAX_BODY_KEY] = max_body

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        committer = GroupCommitter(ctx.log, on_commit=functools.partial(notify_signer, ctx))
        ctx.extra[BATCHER_KEY] = committer
        batches = BatchCommitter(ctx.log, on_commit=functools.partial(notify_signer, ctx))
        ctx.extra[BATCH_COMMITTER_KEY] = batches
        if signer is not None:
            ctx.extra[SIGNER_KEY] = signer
            await anyio.to_thread.run_sync(signer.start)
        if anchor_loop is not None:
            ctx.extra[ANCHOR_KEY] = anchor_loop
            anchor_loop.start()
        encoder = None
        if encoder_process:
            encoder = BatchEncoder()
            await encoder.start()  # on the event loop's thread, which the worker follows
            ctx.extra[ENCODER_KEY] = encoder
        try:
            yield
        finally:
            if encoder is not None:
                ctx.extra.pop(ENCODER_KEY, None)
                await anyio.to_thread.run_sync(encoder.stop)
            await committer.stop()
            await batches.stop()
            if anchor_loop is not None:
                await anyio.to_thread.run_sync(anchor_loop.stop)
            if signer is not None:
                await anyio.to_thread.run_sync(signer.stop)

    app = ServiceApp(
        title="ailedger",
        summary="A tamper-evident audit log of AI decisions, anchored on Ethereum.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.service = ctx
    _install_errors(app)
    app.include_router(api.router)
    app.include_router(tiles.router)
    _include_optional(app)
    _watch(metrics, ctx)

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, Any]:
        """200 while the service runs: the log's size and the served checkpoint's size."""

        def read() -> dict[str, Any]:
            found = served_checkpoint(ctx)
            return {
                "status": "ok",
                "size": ctx.log.size,
                "checkpoint_size": None if found is None else found[0],
            }

        return await anyio.to_thread.run_sync(read)

    @app.get(
        "/metrics",
        tags=["service"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus metrics"}},
    )
    async def prometheus() -> Response:
        """Prometheus metrics (text exposition format)."""
        data = await anyio.to_thread.run_sync(metrics.render)
        return Response(content=data, media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimit, max_body=max_body)
    app.add_middleware(StatusCounter, metrics=metrics)
    app.fast_append = FastAppend(ctx, max_body=max_body, metrics=metrics, status_of=_status_of)
    return app
