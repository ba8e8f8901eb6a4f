"""The batch encoder process (ailedger.service._encoder): batches encoded on the other core are
logged exactly as in-process ones, bad ones get the same answers, and a failed or stopped
worker leaves the service working in-process."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ailedger.auditlog import AuditLog
from ailedger.auditlog.records import encode_record
from ailedger.service.api import ENCODER_KEY
from ailedger.service.app import create_app
from ailedger.service.context import ServiceContext
from ailedger.workspace import Workspace

ORIGIN = "encoder.example/log"


@dataclass
class Served:
    client: TestClient
    log: AuditLog
    ctx: ServiceContext

    def encoded(self) -> int:
        encoder = self.ctx.extra.get(ENCODER_KEY)
        return int(getattr(encoder, "encoded", -1))

    def worker_pids(self) -> list[int]:
        encoder = self.ctx.extra.get(ENCODER_KEY)
        pool = getattr(encoder, "_pool", None)
        return list(pool._processes) if pool is not None else []  # type: ignore[attr-defined]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    log = AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN)
    ctx = ServiceContext(workspace=Workspace(path=tmp_path, config={}), log=log)
    app = create_app(ctx, encoder_process=True)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Served(client=client, log=log, ctx=ctx)
    log.close()


def _batch(tag: str, n: int = 200) -> list[dict[str, Any]]:
    # more than 4 KiB (the encoder's threshold), with what canonical encoding must rewrite:
    # unsorted names, a whole float, a small float, non-ASCII text and names
    return [
        {"z": i, "a": tag, "f": 1.0, "g": 1e-7, "t": "caf\u00e9 \u2028", "\u00e9": [i, {"b": 2}]}
        for i in range(n)
    ]


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # our own child, once ended: reap it
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return False


def test_batches_through_the_worker_are_logged_as_encode_record_makes_them(
    served: Served,
) -> None:
    assert served.worker_pids(), "the worker runs"
    records = _batch("one")
    response = served.client.post("/v1/entries", json=records)
    assert response.status_code == 201, response.text
    assert response.json() == {"first": 0, "count": len(records)}
    body = json.dumps(records, ensure_ascii=False, indent=1).encode()  # another layout
    response = served.client.post(
        "/v1/entries", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.json() == {"first": len(records), "count": len(records)}
    assert served.encoded() == 2  # both went through the worker
    for index, data in served.log.entries():
        want = encode_record(records[index % len(records)])
        assert data == want
        assert served.log.show(index).leaf_hash == hashlib.sha256(b"\x00" + want).digest()
    # the tree over them is the one the entries make
    leaves = [hashlib.sha256(b"\x00" + d).digest() for _, d in served.log.entries()]
    assert served.log.root() == _mth(leaves)


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 Merkle Tree Hash, written out here."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


BAD_TAILS = [
    (b', {"d": 1, "d": 2}]', 400, "duplicate"),
    (b', {"d": NaN}]', 400, "NaN"),
    (b", 7]", 422, "item 200"),
    (b', {"d": 9007199254740993}]', 422, "canonicalised"),
]


def test_what_the_worker_leaves_gets_the_exact_answer(served: Served) -> None:
    for tail, status, needle in BAD_TAILS:
        body = json.dumps(_batch("bad")).encode()[:-1] + tail
        response = served.client.post(
            "/v1/entries", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == status, response.text
        assert needle in response.json()["error"]
    assert served.log.size == 0
    assert served.encoded() == 0


def test_sensitive_fields_take_the_exact_path(served: Served) -> None:
    records = [{"ssn": f"{i:09d}", "pad": "x" * 100} for i in range(100)]
    response = served.client.post("/v1/entries", json=records, params={"sensitive": "ssn"})
    assert response.status_code == 201, response.text
    entry = served.log.show(42)
    assert entry.private == {"ssn": "000000042"}
    assert set(entry.record["ssn"]) == {"commitment"}


def test_a_dead_worker_leaves_the_service_encoding_in_process(served: Served) -> None:
    (pid,) = served.worker_pids()
    os.kill(pid, signal.SIGKILL)
    assert _gone(pid)
    for tag in ("after", "again"):  # the first finds the worker gone, the next skips it
        response = served.client.post("/v1/entries", json=_batch(tag))
        assert response.status_code == 201, response.text
    assert served.worker_pids() == []
    assert served.encoded() == 0
    assert [json.loads(d)["a"] for _, d in served.log.entries()][::200] == ["after", "again"]


def test_the_worker_ends_with_the_service(tmp_path: Path) -> None:
    log = AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN)
    ctx = ServiceContext(workspace=Workspace(path=tmp_path, config={}), log=log)
    with TestClient(create_app(ctx, encoder_process=True)) as client:
        pids = Served(client=client, log=log, ctx=ctx).worker_pids()
        assert pids
    assert all(_gone(pid) for pid in pids)
    log.close()


def test_concurrent_batches_are_group_committed_each_consecutive(served: Served) -> None:
    # batches over 4 KiB (through the worker) and small ones (encoded in a thread), from
    # several threads at once: every batch's entries are consecutive and hold what it sent
    got: list[tuple[int, int, list[dict[str, Any]]]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(thread: int) -> None:
        try:
            for n in range(6):
                size = 150 if n % 2 else 5
                records = [{"t": thread, "n": n, "k": k, "pad": "y" * 30} for k in range(size)]
                response = served.client.post("/v1/entries", json=records)
                assert response.status_code == 201, response.text
                with lock:
                    got.append((response.json()["first"], response.json()["count"], records))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    covered = sorted(i for first, count, _ in got for i in range(first, first + count))
    assert covered == list(range(served.log.size))  # disjoint, nothing lost or added
    for first, count, records in got:
        assert count == len(records)
        stored = [json.loads(d) for _, d in served.log.entries(first, first + count)]
        assert stored == records
    assert served.encoded() == 8 * 3
