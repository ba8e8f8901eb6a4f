"""Private values at rest: erasure leaves no readable copy, record keys are encrypted.

The files are scanned as raw bytes (the database, its WAL, its shared memory and any journal),
the way someone holding a copy of them would look.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from ailedger.auditlog.log import AuditLog
from ailedger.errors import WorkspaceError

ORIGIN = "erase.example/log"
VICTIM = 7


def plaintext(k: int) -> bytes:
    return f"SSN-{k:06d}-PLAIN".encode()


@dataclass(frozen=True)
class Secrets:
    """Every stored form of one record's private value."""

    wrapped_key: bytes
    raw_key: bytes
    ciphertext: bytes
    salt: bytes
    plaintext: bytes

    @classmethod
    def of(cls, log: AuditLog, index: int) -> Secrets:
        conn = sqlite3.connect(log.path)
        try:
            (wrapped,) = conn.execute(
                "SELECT key FROM record_keys WHERE idx = ?", (index,)
            ).fetchone()
            salt, ciphertext = conn.execute(
                "SELECT salt, ciphertext FROM private WHERE idx = ?", (index,)
            ).fetchone()
        finally:
            conn.close()
        return cls(
            wrapped_key=bytes(wrapped),
            raw_key=log._unwrap_key(index, bytes(wrapped)),
            ciphertext=bytes(ciphertext),
            salt=bytes(salt),
            plaintext=plaintext(index),
        )

    def found_in(self, folder: Path, stem: str = "log.sqlite") -> dict[str, list[str]]:
        """Which of the secrets each of the log's files holds (files that hold none omitted)."""
        found = {}
        for path in sorted(folder.iterdir()):
            if not path.name.startswith(stem) or path.name.endswith(".lock"):
                continue
            data = path.read_bytes()
            hits = [name for name, value in vars(self).items() if value in data]
            if hits:
                found[path.name] = hits
        return found


def fill(log: AuditLog, count: int) -> None:
    """Single appends (the long-running ``audited()`` case) then a batch, all with a secret."""
    for k in range(count):
        log.append({"k": k, "ssn": plaintext(k).decode()}, sensitive=("ssn",))
    log.append_many(
        [{"k": k, "ssn": plaintext(k).decode()} for k in range(count, count + 40)],
        sensitive=("ssn",),
    )


@pytest.mark.parametrize("count", [60, 1500])
def test_erase_leaves_no_copy_in_the_database_or_its_wal(tmp_path: Path, count: int) -> None:
    with AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN) as log:
        fill(log, count)
        secrets = Secrets.of(log, VICTIM)
        before = secrets.found_in(tmp_path)
        # the scan sees the stored forms (60: copies in the WAL; 1500: checkpointed into the file)
        assert any("ciphertext" in hits for hits in before.values()), before
        assert log.erase(VICTIM) is True
        assert secrets.found_in(tmp_path) == {}
        # the process keeps running and writing: still nothing comes back
        log.append({"after": "erasure"})
        assert secrets.found_in(tmp_path) == {}
        assert log.show(VICTIM).private == {"ssn": None}
        assert log.show(VICTIM + 1).private == {"ssn": plaintext(VICTIM + 1).decode()}
        assert log.erase(VICTIM) is False


def test_erase_returns_only_once_a_reader_of_an_older_snapshot_let_go(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN) as log:
        fill(log, 60)
        secrets = Secrets.of(log, VICTIM)
        reader = sqlite3.connect(log.path, isolation_level=None, check_same_thread=False)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM private").fetchone()  # holds its snapshot
        released = threading.Event()

        def release() -> None:
            reader.execute("COMMIT")
            released.set()

        timer = threading.Timer(0.5, release)
        timer.start()
        try:
            assert log.erase(VICTIM) is True
            assert released.is_set()
        finally:
            timer.join()
            reader.close()
        assert secrets.found_in(tmp_path) == {}


ERASER = """
import sys, time
from pathlib import Path
from ailedger.auditlog.log import AuditLog
log = AuditLog.open(Path(sys.argv[1]), origin=sys.argv[2])
for k in range(60):
    log.append({"k": k, "ssn": f"SSN-{k:06d}-PLAIN"}, sensitive=("ssn",))
print("ready", flush=True)
sys.stdin.readline()
log.erase(int(sys.argv[3]))
print("erased", flush=True)
time.sleep(60)
"""


def test_erase_leaves_no_copy_when_killed_right_after(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", ERASER, str(path), ORIGIN, str(VICTIM)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "ready\n"
        with AuditLog.open(path, writable=False) as reader:
            secrets = Secrets.of(reader, VICTIM)
        assert "log.sqlite-wal" in secrets.found_in(tmp_path)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline() == "erased\n"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert secrets.found_in(tmp_path) == {}
    with AuditLog.open(path) as log:  # recovery after the crash brings nothing back
        assert log.show(VICTIM).private == {"ssn": None}
        assert log.size == 60
    assert secrets.found_in(tmp_path) == {}


def test_a_copy_of_the_database_alone_reveals_no_private_value(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN) as log:
        fill(log, 30)
        secrets = Secrets.of(log, VICTIM)
        assert log.key_path == tmp_path / "keys" / "log.key"
    assert len(secrets.wrapped_key) == 60
    assert (tmp_path / "keys" / "log.key").stat().st_mode & 0o777 == 0o600
    stolen = tmp_path / "stolen"
    stolen.mkdir()
    shutil.copy(tmp_path / "log.sqlite", stolen / "log.sqlite")
    copy_files = {"log.sqlite": (stolen / "log.sqlite").read_bytes()}
    assert secrets.raw_key not in copy_files["log.sqlite"]
    assert secrets.plaintext not in copy_files["log.sqlite"]
    with AuditLog.open(stolen / "log.sqlite", writable=False) as thief:
        assert thief.entry_data(VICTIM)  # the public entry is there...
        with pytest.raises(WorkspaceError, match="cannot read"):
            thief.show(VICTIM)  # ...not its private value
    with pytest.raises(WorkspaceError, match="missing"):
        AuditLog.open(stolen / "log.sqlite")  # and no new key is made up for it
    (stolen / "keys").mkdir()
    (stolen / "keys" / "log.key").write_bytes(os.urandom(32))
    with pytest.raises(WorkspaceError, match="not the key"):
        AuditLog.open(stolen / "log.sqlite")
    # with its own key file the owner reads it
    with AuditLog.open(tmp_path / "log.sqlite", writable=False) as owner:
        assert owner.show(VICTIM).private == {"ssn": plaintext(VICTIM).decode()}


def test_raw_record_keys_of_an_older_log_are_wrapped_on_open(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    with AuditLog.open(path, origin=ORIGIN) as log:
        fill(log, 20)
        raw = {i: Secrets.of(log, i).raw_key for i in range(60)}
    # what the previous version wrote: raw 32-byte record keys, no data key
    conn = sqlite3.connect(path)
    conn.executemany(
        "UPDATE record_keys SET key = ? WHERE idx = ?", [(k, i) for i, k in raw.items()]
    )
    conn.execute("DELETE FROM meta WHERE key = 'data_key_id'")
    conn.commit()
    conn.close()
    (tmp_path / "keys" / "log.key").unlink()
    with AuditLog.open(path, writable=False) as reader:  # read-only: both forms are read
        assert reader.show(VICTIM).private == {"ssn": plaintext(VICTIM).decode()}
    with AuditLog.open(path) as log:
        assert log.show(VICTIM).private == {"ssn": plaintext(VICTIM).decode()}
        found = Secrets.of(log, VICTIM).found_in(tmp_path)
        assert all("raw_key" not in hits for hits in found.values()), found
        for key in raw.values():
            for name in ("log.sqlite", "log.sqlite-wal"):
                assert key not in (tmp_path / name).read_bytes()
    assert (tmp_path / "keys" / "log.key").stat().st_mode & 0o777 == 0o600


def test_log_files_are_private_and_relative_paths_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with AuditLog.open(Path("rel") / "log.sqlite", origin=ORIGIN) as log:
        assert log.path == tmp_path / "rel" / "log.sqlite"
        log.append({"x": 1}, sensitive=("x",))
        for name in ("log.sqlite", "log.sqlite-wal", "log.sqlite-shm", "keys/log.key"):
            assert (tmp_path / "rel" / name).stat().st_mode & 0o777 == 0o600, name
    with AuditLog.open(Path("rel/log.sqlite"), writable=False) as reader:
        assert reader.show(0).private == {"x": 1}
