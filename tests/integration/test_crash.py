"""SIGKILL during appends: nothing whose append returned is lost, and the log verifies; SIGKILL
while an older log's raw record keys are encrypted: none is lost, none stays raw; SIGKILL
during `init`: no half-made workspace."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog import _merkle
from ailedger.auditlog.log import AuditLog
from ailedger.auditlog.verify import verify_stored
from ailedger.workspace import Workspace

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


OPENER = """
import sys
from pathlib import Path
from ailedger.auditlog.log import AuditLog
print("opening", flush=True)
AuditLog.open(Path(sys.argv[1])).close()
print("opened", flush=True)
"""
LEGACY_RECORDS = 20000


@pytest.fixture(scope="module")
def legacy_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, bytes]]:
    """A log as the previous version stored it: raw record keys, no data key file."""
    folder = tmp_path_factory.mktemp("legacy")
    path = folder / "log.sqlite"
    with AuditLog.open(path, origin="legacy.example/log") as log:
        log.append_many(
            [{"k": k, "ssn": f"S{k:08d}"} for k in range(LEGACY_RECORDS)], sensitive=("ssn",)
        )
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT idx, key FROM record_keys").fetchall()
            raw = {int(i): log._unwrap_key(int(i), bytes(k)) for i, k in rows}
            conn.executemany(
                "UPDATE record_keys SET key = ? WHERE idx = ?", [(k, i) for i, k in raw.items()]
            )
            conn.execute("DELETE FROM meta WHERE key = 'data_key_id'")
        conn.close()
    (folder / "keys" / "log.key").unlink()
    return path, raw


@pytest.mark.parametrize("trial", range(5))
def test_sigkill_while_record_keys_are_wrapped(
    tmp_path: Path, legacy_log: tuple[Path, dict[int, bytes]], trial: int
) -> None:
    source, raw = legacy_log
    path = tmp_path / "log.sqlite"
    shutil.copy(source, path)
    opener = subprocess.Popen(
        [sys.executable, "-c", OPENER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert opener.stdout is not None
    assert opener.stdout.readline() == "opening\n"
    time.sleep(random.Random(trial).uniform(0.0, 0.4))
    os.kill(opener.pid, signal.SIGKILL)
    opener.wait()
    with AuditLog.open(path) as log:  # finishes whatever the killed process had not
        for index in (0, 7, LEGACY_RECORDS - 1):
            assert log.show(index).private == {"ssn": f"S{index:08d}"}
    stored = path.read_bytes()
    assert not any(key in stored for key in list(raw.values())[:: LEGACY_RECORDS // 50])
    assert (tmp_path / "keys" / "log.key").stat().st_size == 32


def test_a_data_key_cut_short_before_use_is_made_again(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    AuditLog.open(path, origin="short.example/log").close()
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'data_key_id'")
    conn.close()
    (tmp_path / "keys" / "log.key").write_bytes(b"")  # a crash between creating and writing it
    with AuditLog.open(path) as log:
        log.append({"ssn": "1"}, sensitive=("ssn",))
        assert log.show(0).private == {"ssn": "1"}
    assert (tmp_path / "keys" / "log.key").stat().st_size == 32


INIT = """
import sys
from pathlib import Path
from ailedger.workspace import Workspace
Workspace.init(Path(sys.argv[1]), passphrase=lambda: "pw", unsafe_fast_kdf=True)
"""


def test_sigkill_during_init_leaves_no_workspace_and_init_then_works(tmp_path: Path) -> None:
    path = tmp_path / "ws"
    child = subprocess.Popen([sys.executable, "-c", INIT, str(path)])
    try:
        deadline = time.monotonic() + 60
        # killed once its keys exist, while the chain is being set up
        while not list(tmp_path.glob(".ws.*.init/keys/ed25519.pem")):
            assert child.poll() is None and time.monotonic() < deadline, "init ended first"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert not path.exists()
    assert len(list(tmp_path.glob(".ws.*.init"))) == 1  # the killed run's staging folder
    ws = Workspace.init(path, passphrase=lambda: "pw", unsafe_fast_kdf=True)
    assert ws.path == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws"]  # and it is cleaned up
    assert not (path / ".init-pid").exists()
