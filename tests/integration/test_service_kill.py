"""``ailedger serve`` killed with SIGKILL under load, then restarted: nothing acknowledged is
lost, the log verifies, and every checkpoint it served is consistent with the new one."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ailedger.auditlog import AuditLog, _merkle
from ailedger.auditlog.checkpoint import open_checkpoint
from ailedger.service.auth import ApiKeys, Scope
from ailedger.workspace import Workspace
from tests.cli import one_line_error, run
from tests.conftest import stop_process

OPTIONS = ("--no-anchor", "--checkpoint-interval", "0.1")


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 Merkle Tree Hash of leaf hashes, written out here (split at the largest
    power of two below the size)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started that still run, and theirs."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found.append(int(child))
            found.extend(_children(int(child)))
    return found


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (an ended process nobody reaped yet, a zombie, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Served:
    """One ``ailedger serve`` process this test started (and only it ends)."""

    def __init__(self, ws: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ailedger", "serve", "-w", str(ws), "--port", "0", *OPTIONS],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # the one line printed once it listens
        assert line.startswith("serving http://127.0.0.1:"), (line, self.process.stderr)
        self.url = line.split()[1]

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture
def ws(tmp_path: Path, env: dict[str, str]) -> Path:
    path = tmp_path / "ws"
    Workspace.init(path, passphrase=lambda: env["AILEDGER_PASSPHRASE"], unsafe_fast_kdf=True)
    return path


@pytest.fixture
def served(ws: Path, env: dict[str, str]) -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for one in started:
        if one.process.poll() is None:
            one.stop()


def test_sigkill_under_load_loses_nothing_acknowledged(
    ws: Path, env: dict[str, str], served: list[Served]
) -> None:
    with ApiKeys.for_workspace(Workspace.open(ws)) as keys:
        _, token = keys.create([Scope.APPEND, Scope.READ], name="load")
    headers = {"Authorization": f"Bearer {token}"}
    first = Served(ws, env)
    served.append(first)

    # while it runs, a CLI command that would write the log says so at once, in one line
    records = ws.parent / "records.jsonl"
    records.write_text('{"from": "cli"}\n')
    refused = run("log", "append", str(records), "-w", str(ws), env=env, check=3)
    assert one_line_error(refused) == (
        f"error: the workspace is held by `ailedger serve` (pid {first.process.pid} at "
        f"{first.url}): write through its API, or stop it"
    )

    acked: dict[int, dict[str, Any]] = {}
    checkpoints: set[bytes] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def appender(worker: int) -> None:
        with httpx.Client(base_url=first.url, headers=headers, timeout=10) as client:
            n = 0
            while not stop.is_set():
                n += 1
                batch = n % 10 == 0
                body: Any = (
                    # over 4 KiB: a batch the service's encoder process takes
                    [{"w": worker, "n": n, "k": k, "pad": "x" * 250} for k in range(20)]
                    if batch
                    else {"w": worker, "n": n}
                )
                try:
                    response = client.post("/v1/entries", json=body)
                except httpx.HTTPError:
                    return  # the service is gone: this answer never came
                assert response.status_code == 201, response.text
                doc = response.json()
                with lock:
                    if batch:
                        for k, record in enumerate(body):
                            acked[doc["first"] + k] = record
                    else:
                        acked[doc["index"]] = body

    def watcher() -> None:
        with httpx.Client(base_url=first.url, timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.get("/log/checkpoint")
                except httpx.HTTPError:
                    return
                if response.status_code == 200:
                    with lock:
                        checkpoints.add(response.content)
                time.sleep(0.05)

    threads = [threading.Thread(target=appender, args=(w,)) for w in range(6)]
    threads.append(threading.Thread(target=watcher))
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while True:  # mid-load: after some answers and a few checkpoints
        with lock:
            if len(acked) >= 300 and len(checkpoints) >= 3:
                break
        assert time.monotonic() < deadline, (len(acked), len(checkpoints))
        time.sleep(0.02)
    helpers = _children(first.process.pid)  # the batch encoder's process, with its own
    assert helpers
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait()
    stop.set()
    for thread in threads:
        thread.join()
    assert first.process.returncode == -signal.SIGKILL
    # the processes the service started end with it, even killed
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in helpers):
        assert time.monotonic() < deadline, [pid for pid in helpers if _running(pid)]
        time.sleep(0.05)

    second = Served(ws, env)
    served.append(second)
    with httpx.Client(base_url=second.url, headers=headers, timeout=10) as client:
        # every acknowledged entry is there, with its content
        size = client.get("/healthz").json()["size"]
        assert size >= max(acked) + 1
        for index in sorted(acked)[:: max(1, len(acked) // 20)]:  # a sample over HTTP
            response = client.get(f"/v1/entries/{index}")
            assert response.status_code == 200
            assert response.json()["record"] == acked[index]
        latest = client.get("/log/checkpoint").content
        appended = client.post("/v1/entries", json={"after": "restart"})
        assert appended.json() == {"index": size}
    second.stop()

    # the log verifies: its entries hash to the signed root, and every checkpoint served before
    # the kill is consistent with the one served after it
    workspace = Workspace.open(ws)
    with AuditLog.for_workspace(workspace, writable=False) as log:
        verifier = log.verifier(workspace.public_key())
        new = open_checkpoint(latest, [verifier], origin=log.origin)
        assert new.size == size
        for index, record in acked.items():  # and every one in the store
            assert json.loads(log.entry_data(index)) == record
        leaves = [hashlib.sha256(b"\x00" + data).digest() for _, data in log.entries(0, new.size)]
        assert mth(leaves) == new.root_hash
        for note in checkpoints:
            old = open_checkpoint(note, [verifier], origin=log.origin)
            assert old.size <= new.size
            proof = log.prove_consistency(old.size, new.size)
            _merkle.verify_consistency(proof, old.size, new.size, old.root_hash, new.root_hash)
            assert mth(leaves[: old.size]) == old.root_hash
