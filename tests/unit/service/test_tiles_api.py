"""The C2SP tlog-tiles read API (ailedger.service.tiles): the bytes of ``log export``."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from ailedger.auditlog import AuditLog
from ailedger.service.app import create_app
from ailedger.service.background import CheckpointSigner
from ailedger.service.context import ServiceContext
from ailedger.service.tiles import FULL_CACHE
from ailedger.workspace import Workspace

ORIGIN = "tiles.example/log"
SIZE = 4 * 256 + 122  # four full level-0 tiles and a partial one; a partial level-1 tile


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, AuditLog, Path]]:
    tmp_path = tmp_path_factory.mktemp("tiles")
    log = AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN)
    log.append_many([{"n": i} for i in range(SIZE - 3)])
    for i in range(3):
        log.append({"single": i})
    ctx = ServiceContext(workspace=Workspace(path=tmp_path, config={}), log=log)
    signer = CheckpointSigner(log, Ed25519PrivateKey.generate(), interval=0.05)
    with TestClient(create_app(ctx, signer=signer)) as client:
        deadline = time.monotonic() + 10
        while client.get("/healthz").json()["checkpoint_size"] != SIZE:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        export = tmp_path / "export"
        assert log.export(export) == SIZE
        yield client, log, export
    log.close()


def test_every_exported_file_is_served_byte_for_byte(
    served: tuple[TestClient, AuditLog, Path],
) -> None:
    client, _, export = served
    files = sorted(p for p in (export / "tile").rglob("*") if p.is_file())
    paths = {p.relative_to(export).as_posix() for p in files}
    # what the C2SP spec says a tree of SIZE has (computed here, not by the library)
    full0, partial0 = divmod(SIZE, 256)
    expected = {f"tile/0/{n:03d}" for n in range(full0)} | {f"tile/0/{full0:03d}.p/{partial0}"}
    expected |= {f"tile/entries/{n:03d}" for n in range(full0)}
    expected |= {f"tile/entries/{full0:03d}.p/{partial0}"}
    expected |= {f"tile/1/000.p/{full0}"}
    assert paths == expected
    for path in files:
        name = path.relative_to(export).as_posix()
        response = client.get(f"/log/{name}")
        assert response.status_code == 200, name
        assert response.content == path.read_bytes(), name
        assert response.headers["content-type"] == "application/octet-stream"
        cache = response.headers["cache-control"]
        if ".p/" in name:
            assert "immutable" not in cache and "max-age=" in cache
        else:
            assert cache == FULL_CACHE
    checkpoint = client.get("/log/checkpoint")
    assert checkpoint.content == (export / "checkpoint").read_bytes()
    assert checkpoint.headers["content-type"] == "text/plain; charset=utf-8"
    assert "immutable" not in checkpoint.headers["cache-control"]


def test_tiles_hold_rfc6962_hashes(served: tuple[TestClient, AuditLog, Path]) -> None:
    client, _, _ = served
    bundle = client.get("/log/tile/entries/001").content
    entries = []
    at = 0
    while at < len(bundle):
        length = int.from_bytes(bundle[at : at + 2], "big")
        entries.append(bundle[at + 2 : at + 2 + length])
        at += 2 + length
    assert len(entries) == 256 and entries[0] == b'{"n":256}'
    tile = client.get("/log/tile/0/001").content
    assert len(tile) == 8192
    leaves = [hashlib.sha256(b"\x00" + e).digest() for e in entries]
    assert tile == b"".join(leaves)
    # level 1 hash 1 is the root of leaves 256..511 (RFC 6962 node hashes, computed here)
    level = leaves
    while len(level) > 1:
        level = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
            for i in range(0, len(level), 2)
        ]
    assert client.get("/log/tile/1/000.p/2").content[32:64] == level[0]
    # an older tree's partial tile is a prefix of the newer one
    assert client.get("/log/tile/0/000.p/7").content == client.get("/log/tile/0/000").content[:224]


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/999",  # beyond the tree
        f"tile/0/{SIZE // 256:03d}",  # the partial tile asked for as full
        f"tile/0/{SIZE // 256:03d}.p/{SIZE % 256 + 1}",  # wider than the tree
        "tile/1/000",
        "tile/2/000.p/1",
        "tile/entries/999",
        f"tile/entries/{SIZE // 256:03d}.p/{SIZE % 256 + 1}",
        "tile/0/0",  # not in canonical form
        "tile/0/x000/001",
        "tile/0/001.p/256",
        "tile/0/000.p/0",
        "tile/00/000",
        "tile/64/000",
        "tile/0/abc",
        "tile/entries/1",
        "tile/0/x001/000",  # index 1000, canonical, beyond this tree
    ],
)
def test_missing_or_malformed_tiles_are_404(
    served: tuple[TestClient, AuditLog, Path], path: str
) -> None:
    client, _, _ = served
    response = client.get(f"/log/{path}")
    assert response.status_code == 404, path
    assert set(response.json()) == {"error"}
