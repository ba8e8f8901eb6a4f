"""Read endpoints for provenance, sharing, training, alerts and checkpoints (JSON, scope ``read``).

Each endpoint is a thin wrapper of a function of :mod:`ailedger.service.views`, which says where
the data comes from. Every answer is a JSON object; listings are bounded (``limit`` from 1 to
1000) and carry ``"chain": "ok"`` or ``"chain": "unavailable"`` (then the listing is empty and
``note`` says why: the node is down, the embedded chain is busy, the workspace has no such
contract), so an outage of the chain is never an error here. Bad input (a malformed digest or
address, a task id that is not an integer, a limit out of range) answers 400 or 422, something
that does not exist 404, each as ``{"error": "one line"}``.

The routes need a key with the ``read`` scope (``admin`` implies it), see
:func:`ailedger.service.auth.require`.
"""

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from ailedger.service import views
from ailedger.service.auth import Scope, require
from ailedger.service.context import ServiceContext, context

__all__ = ["router"]


class ErrorBody(BaseModel):
    """What every error answers."""

    error: str


class _Reads(APIRoute):
    """Answers :class:`views.NotFound` with 404 (the app maps other errors itself)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except views.NotFound as exc:
                line = str(exc).splitlines()[0] if str(exc) else "not found"
                return JSONResponse({"error": line[:500]}, status_code=404)

        return route


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed input"},
    401: {"model": ErrorBody, "description": "No, unknown or revoked API key"},
    403: {"model": ErrorBody, "description": "The API key lacks the read scope"},
    422: {"model": ErrorBody, "description": "A parameter out of range"},
    429: {"model": ErrorBody, "description": "Rate limited"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    404: {"model": ErrorBody, "description": "Not registered, or no such task"},
}

router = APIRouter(
    tags=["reads"],
    route_class=_Reads,
    dependencies=[Depends(require(Scope.READ))],
    responses=_ERRORS,
)

Ctx = Annotated[ServiceContext, Depends(context)]
Limit = Annotated[int, Query(ge=1, le=views.MAX_LIMIT, description="Items to return (1-1000).")]
Registrant = Annotated[
    str | None,
    Query(
        max_length=100,
        description="Whose registration (an address); default: the service's own account's, "
        "else the earliest registrant's.",
    ),
]


def _chain(found: views.Listing) -> dict[str, Any]:
    out: dict[str, Any] = {"chain": found.chain, "total": found.total}
    if found.note is not None:
        out["note"] = found.note
    return out


@router.get("/v1/provenance")
async def provenance(
    ctx: Ctx,
    limit: Limit = 100,
    offset: Annotated[int, Query(ge=0, le=2**53, description="Newest items to skip.")] = 0,
) -> dict[str, Any]:
    """Registered datasets and models, newest first: ``{"registrations", "total", "limit",
    "offset", "chain"}``."""
    found = await anyio.to_thread.run_sync(
        lambda: views.registrations(ctx, limit=limit, offset=offset)
    )
    return {"registrations": list(found), "limit": limit, "offset": offset, **_chain(found)}


@router.get("/v1/provenance/{digest}", responses=_NOT_FOUND)
async def provenance_one(ctx: Ctx, digest: str, registrant: Registrant = None) -> dict[str, Any]:
    """One registration with its lineage: ``{"registration", "nodes", "edges", "children",
    "registrants", "root", "root_owner", "chain"}`` (DIGEST: ``sha256:<hex>``, ``0x<hex>`` or
    64 hex digits)."""
    return await anyio.to_thread.run_sync(lambda: views.lineage(ctx, digest, registrant=registrant))


@router.get("/v1/sharing/{resource}/grants", responses=_NOT_FOUND)
async def sharing_grants(
    ctx: Ctx, resource: str, registrant: Registrant = None, limit: Limit = views.MAX_LIMIT
) -> dict[str, Any]:
    """Every key granted access to a registration of RESOURCE (a digest), live or revoked, in
    order of first grant: ``{"resource", "owner", "grants", "chain"}``."""
    owner, found = await anyio.to_thread.run_sync(
        lambda: views.grant_list(ctx, resource, registrant=registrant, limit=limit)
    )
    return {"resource": resource, "owner": owner, "grants": list(found), **_chain(found)}


@router.get("/v1/training/tasks")
async def training_tasks(ctx: Ctx, limit: Limit = 100) -> dict[str, Any]:
    """Training tasks of the service's TrainingTask contract, newest first."""
    found = await anyio.to_thread.run_sync(lambda: views.training_tasks(ctx, limit=limit))
    return {"tasks": list(found), **_chain(found)}


@router.get("/v1/training/tasks/{task}/rounds", responses=_NOT_FOUND)
async def training_rounds(ctx: Ctx, task: str) -> dict[str, Any]:
    """The rounds of TASK (a decimal id): outcome on chain, and accuracy, contributions and
    excluded parties where a party here reported them."""
    number = views.parse_task(task)
    found = await anyio.to_thread.run_sync(lambda: views.training_rounds(ctx, number))
    return {"task": number, "rounds": list(found), **_chain(found)}


@router.get("/v1/alerts")
async def alerts(ctx: Ctx, limit: Limit = 100) -> dict[str, Any]:
    """Sentinel alerts recorded in the log, newest first, with their reasons."""
    found = await anyio.to_thread.run_sync(lambda: views.alerts(ctx, limit=limit))
    return {"alerts": list(found), "total": found.total}


@router.get("/v1/checkpoints")
async def checkpoints(ctx: Ctx, limit: Limit = 100) -> dict[str, Any]:
    """The log's signed checkpoints, newest first."""
    found = await anyio.to_thread.run_sync(lambda: views.checkpoints(ctx, limit=limit))
    return {"checkpoints": list(found), "total": found.total}
