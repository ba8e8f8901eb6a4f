"""SIGKILL during appends: nothing whose append returned is lost, and the log verifies."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog import _merkle
from ailedger.auditlog.log import AuditLog
from ailedger.auditlog.verify import verify_stored

WRITER = """
import sys
from pathlib import Path
from ailedger.auditlog.log import AuditLog
log = AuditLog.open(Path(sys.argv[1]), origin="crash.example/log")
k = 0
while True:
    if k % 3 == 0:
        indexes = log.append_many([{"k": k + j} for j in range(50)])
        for j, index in zip(range(50), indexes):
            print(index, k + j, flush=False)
        sys.stdout.flush()
        k += 50
    else:
        index = log.append({"k": k}, sensitive=("k",) if k % 2 else ())
        print(index, k, flush=True)
        k += 1
"""


@pytest.mark.parametrize("trial", range(50))
def test_sigkill_loses_no_returned_append(tmp_path: Path, trial: int) -> None:
    path = tmp_path / "log.sqlite"
    rng = random.Random(trial)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    # Let it get going (the first line), then kill it at a random moment.
    first = writer.stdout.readline()
    assert first, "the writer printed nothing"
    time.sleep(rng.uniform(0.0, 0.3))
    os.kill(writer.pid, signal.SIGKILL)
    rest = writer.stdout.read()
    writer.wait()
    # A line cut by the kill (no newline yet) is dropped: only whole lines are claims.
    complete = (first + rest).split("\n")[:-1]
    returned = [tuple(map(int, line.split())) for line in complete]
    with AuditLog.open(path) as log:
        assert log.size >= len(returned)
        for index, k in returned:
            record = log.show(index)
            value = record.record["k"]
            if isinstance(value, dict):
                assert record.private["k"] == k
            else:
                assert value == k
        assert log.stored_count() == log.size
        leaves = [_merkle.leaf_hash(data) for _, data in log.entries()]
        assert log.root() == _merkle.root_from_leaf_hashes(leaves)
        key = Ed25519PrivateKey.generate()
        log.checkpoint(key)
        log.append({"after": "restart"})
        log.checkpoint(key)
        verify_stored(log, log.verifier(key.public_key()), deep=True)
