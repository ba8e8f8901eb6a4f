"""The C2SP tlog-tiles read API under ``/log/``, served straight from the log's store.

C2SP tlog-tiles (https://c2sp.org/tlog-tiles):

- ``/log/checkpoint``: the latest signed checkpoint, ``text/plain; charset=utf-8``, mutable, so
  its headers prevent caching beyond a second.
- ``/log/tile/<L>/<N>[.p/<W>]``: Merkle tree tiles, ``application/octet-stream``; ``<N>`` in
  3-digit path elements, all but the last starting with ``x`` (index 1234067 is
  ``x001/x234/067``); a full tile is 256 hashes (8,192 bytes), a partial one ``W`` (1-255).
- ``/log/tile/entries/<N>[.p/<W>]``: entry bundles (each entry a big-endian uint16 length,
  then its bytes).

Tiles and bundles are immutable: a full one is sent with ``Cache-Control: public,
max-age=31536000, immutable``; a partial one with a short max-age, as the log may stop serving
it once the full one exists. A tile or bundle beyond the current tree, or a path not in the
spec's canonical form, is 404. The bytes are those ``AuditLog.export`` writes for the same
tree (both read :meth:`AuditLog.tile` and the stored entries).
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Response

from ailedger.auditlog import _merkle
from ailedger.errors import InputError
from ailedger.service.api import PUBLIC
from ailedger.service.auth import ApiKey, Scope, require
from ailedger.service.background import served_checkpoint
from ailedger.service.context import ServiceContext, context

__all__ = ["FULL_CACHE", "PARTIAL_CACHE", "router"]

#: Cache-Control of full tiles and bundles (immutable) and of partial ones
FULL_CACHE = "public, max-age=31536000, immutable"
PARTIAL_CACHE = "public, max-age=60"
#: Cache-Control of the checkpoint (mutable: at most a second)
CHECKPOINT_CACHE = "public, max-age=1"

router = APIRouter(prefix="/log", tags=["tlog-tiles"])

Ctx = Annotated[ServiceContext, Depends(context)]
Public = Annotated[ApiKey | None, Depends(require(Scope.READ, public=True))]

_BINARY: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}, "description": "the tile bytes"}
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such tile in the log"}}


def _missing(path: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"the log has no {path}")


@router.get(
    "/checkpoint",
    response_class=Response,
    responses={
        **PUBLIC,
        200: {"content": {"text/plain": {}}, "description": "the latest signed checkpoint"},
        404: {"description": "no checkpoint signed yet"},
    },
)
async def checkpoint(ctx: Ctx, _key: Public) -> Response:
    """The latest signed checkpoint (C2SP signed note)."""
    found = await anyio.to_thread.run_sync(served_checkpoint, ctx)
    if found is None:
        raise HTTPException(status_code=404, detail="the log has no signed checkpoint yet")
    return Response(
        content=found[1],
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": CHECKPOINT_CACHE},
    )


def _level_width(size: int, level: int) -> int:
    """How many hashes level ``level`` of the tile tree has for a tree of ``size`` leaves."""
    covered = size
    for _ in range(level):
        covered //= _merkle.TILE_WIDTH
    return covered


def _tile_bytes(ctx: ServiceContext, tile: _merkle.Tile) -> bytes | None:
    log = ctx.log
    size = log.size
    if tile.index * _merkle.TILE_WIDTH + tile.width > _level_width(size, tile.level):
        return None
    return log.tile(tile.level, tile.index, tile.width)


def _bundle_bytes(ctx: ServiceContext, index: int, width: int) -> bytes | None:
    log = ctx.log
    start = index * _merkle.TILE_WIDTH
    if start + width > log.size:
        return None
    data = [d for _, d in log.entries(start, start + width)]
    if len(data) != width:
        return None
    return _merkle.encode_entry_bundle(data)


def _binary(data: bytes, partial: bool) -> Response:
    return Response(
        content=data,
        media_type="application/octet-stream",
        headers={"Cache-Control": PARTIAL_CACHE if partial else FULL_CACHE},
    )


@router.get(
    "/tile/entries/{path:path}",
    response_class=Response,
    responses={**PUBLIC, **_BINARY, **_NOT_FOUND},
)
async def entry_bundle(path: str, ctx: Ctx, _key: Public) -> Response:
    """Entry bundle ``<N>[.p/<W>]`` (C2SP tlog-tiles)."""
    full_path = f"tile/entries/{path}"
    try:
        index, width = _merkle.parse_entries_path(full_path)
    except InputError:
        raise _missing(full_path) from None
    data = await anyio.to_thread.run_sync(_bundle_bytes, ctx, index, width)
    if data is None:
        raise _missing(full_path)
    return _binary(data, width < _merkle.TILE_WIDTH)


@router.get(
    "/tile/{path:path}",
    response_class=Response,
    responses={**PUBLIC, **_BINARY, **_NOT_FOUND},
)
async def tile(path: str, ctx: Ctx, _key: Public) -> Response:
    """Merkle tree tile ``<L>/<N>[.p/<W>]`` (C2SP tlog-tiles)."""
    full_path = f"tile/{path}"
    try:
        parsed = _merkle.parse_tile_path(full_path)
    except InputError:
        raise _missing(full_path) from None
    data = await anyio.to_thread.run_sync(_tile_bytes, ctx, parsed)
    if data is None:
        raise _missing(full_path)
    return _binary(data, parsed.is_partial)
