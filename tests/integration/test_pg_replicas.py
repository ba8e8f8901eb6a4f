"""Several processes append to one PostgreSQL log at once, and one of them is killed.

Each writer is a separate Python process (this file run as a script) appending from several
threads, so commit groups of different processes alternate under the log's advisory lock. A
writer records every index it was given, after ``append`` returned: what it acknowledged.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ailedger.auditlog import _merkle
from ailedger.auditlog.pglog import PostgresLog
from tests.pg import new_database

ORIGIN = "test.example/replicas"
ROOT = Path(__file__).resolve().parents[2]


def writer(dsn: str, key_path: str, name: str, count: int, threads: int, acks: str) -> None:
    """Append ``count`` records ``{"p": name, "i": i}`` from ``threads`` threads; write
    ``i index`` to ``acks`` once each append returned."""
    fd = os.open(acks, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    log = PostgresLog.open(dsn, origin=ORIGIN, key_path=Path(key_path))
    # all writers start together (imports take seconds on a busy machine)
    go = Path(acks).with_name("go")
    Path(acks).with_name(f"ready-{name}").touch()
    while not go.exists():
        time.sleep(0.01)

    def work(start: int) -> None:
        for i in range(start, count, threads):
            index = log.append({"p": name, "i": i})
            os.write(fd, f"{i} {index}\n".encode())  # one small O_APPEND write: atomic

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    log.close()
    os.close(fd)


def holder(dsn: str, key_path: str) -> None:
    """Take the log's sequencer lock, write an entry inside the transaction, say so on
    stdout, and wait there (to be killed)."""
    log = PostgresLog.open(dsn, origin=ORIGIN, key_path=Path(key_path))
    with log._sequencing() as (conn, tree):
        log._write(conn, tree, [b'{"p":"holder"}'], [()])
        conn.execute("SELECT 1").fetchone()  # the pipeline is flushed: the lock is held
        print("holding", flush=True)
        time.sleep(120)


def start_writer(
    dsn: str, directory: Path, name: str, count: int, threads: int = 32
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__)),
            dsn,
            str(directory / "log.key"),
            name,
            str(count),
            str(threads),
            str(directory / f"acks-{name}"),
        ],
        env=env,
        stderr=subprocess.PIPE,
    )


def start_together(
    dsn: str, directory: Path, names: list[str], count: int
) -> dict[str, subprocess.Popen[bytes]]:
    """Start a writer per name; once all have opened the log, let them go."""
    writers = {name: start_writer(dsn, directory, name, count) for name in names}
    try:
        deadline = time.monotonic() + 60
        while not all((directory / f"ready-{name}").exists() for name in names):
            for name, process in writers.items():
                assert process.poll() is None, f"writer {name} failed"
            assert time.monotonic() < deadline, "the writers did not start"
            time.sleep(0.02)
    except BaseException:
        stop_all(writers)
        raise
    (directory / "go").touch()
    return writers


def stop_all(writers: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGKILL the writers still running (only these processes, by their PIDs)."""
    for process in writers.values():
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
        if process.stderr is not None:
            process.stderr.close()


def acknowledged(directory: Path, name: str) -> dict[int, int]:
    """What writer ``name`` acknowledged: its record number -> the index it was given."""
    path = directory / f"acks-{name}"
    if not path.exists():
        return {}
    out: dict[int, int] = {}
    for line in path.read_text().splitlines():
        i, index = line.split()
        out[int(i)] = int(index)
    return out


def check_log(dsn: str, directory: Path, names: list[str]) -> list[dict[str, object]]:
    """Every acknowledged record is at its index; the log is consecutive and its stored tree
    matches the entries; returns the records."""
    with PostgresLog.open(dsn, writable=False) as log:
        size = log.size
        rows = list(log.entries())
        assert [index for index, _ in rows] == list(range(size))
        assert log.stored_count() == size
        records = [json.loads(data) for _, data in rows]
        leaves = [_merkle.leaf_hash(data) for _, data in rows]
        assert log.root() == _merkle.root_from_leaf_hashes(leaves)
        for index in (0, size // 2, size - 1):
            proof = log.prove_inclusion(index, size)
            _merkle.verify_inclusion(proof, index, size, leaves[index], log.root())
    seen = [(r["p"], r["i"]) for r in records]
    assert len(set(seen)) == len(seen), "an entry was written twice"
    for name in names:
        for i, index in acknowledged(directory, name).items():
            assert records[index] == {"p": name, "i": i}
    return records


def test_three_writers_append_to_one_log(postgres: str, tmp_path: Path) -> None:
    dsn = new_database(postgres)
    PostgresLog.open(dsn, origin=ORIGIN, key_path=tmp_path / "log.key").close()
    names = ["a", "b", "c"]
    writers = start_together(dsn, tmp_path, names, 2000)
    try:
        for process in writers.values():
            _, err = process.communicate(timeout=120)
            assert process.returncode == 0, err.decode()[-2000:]
    finally:
        stop_all(writers)
    records = check_log(dsn, tmp_path, names)
    assert len(records) == 6000
    for name in names:
        assert sorted(acknowledged(tmp_path, name)) == list(range(2000))
    # the writers' groups interleaved (one sequencer at a time, not one writer after another)
    owners = [r["p"] for r in records]
    switches = sum(1 for x, y in itertools.pairwise(owners) if x != y)
    assert switches > 3


def test_killing_a_writer_mid_load_loses_nothing_and_the_others_go_on(
    postgres: str, tmp_path: Path
) -> None:
    dsn = new_database(postgres)
    PostgresLog.open(dsn, origin=ORIGIN, key_path=tmp_path / "log.key").close()
    names = ["a", "b", "c"]
    writers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        writers = start_together(dsn, tmp_path, names, 10**6)
        deadline = time.monotonic() + 60

        def wait_for(name: str, count: int) -> None:
            while len(acknowledged(tmp_path, name)) < count:
                assert writers[name].poll() is None, writers[name].stderr.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, f"{name} stalled"
                time.sleep(0.02)

        wait_for("a", 100)
        writers["a"].send_signal(signal.SIGKILL)
        writers["a"].wait()
        others = {name: len(acknowledged(tmp_path, name)) for name in ("b", "c")}
        for name, done in others.items():
            wait_for(name, done + 150)  # they keep going: the lock was released
    finally:
        stop_all(writers)
    records = check_log(dsn, tmp_path, names)
    for name in names:
        assert len(acknowledged(tmp_path, name)) <= sum(1 for r in records if r["p"] == name)


def test_a_writer_killed_while_holding_the_lock_releases_it(postgres: str, tmp_path: Path) -> None:
    dsn = new_database(postgres)
    with PostgresLog.open(dsn, origin=ORIGIN, key_path=tmp_path / "log.key") as log:
        assert log.append({"p": "x", "i": 0}) == 0
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__)), "hold", dsn, str(tmp_path / "log.key")],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == b"holding\n"
            done: list[int] = []
            waiting = threading.Thread(target=lambda: done.append(log.append({"p": "x", "i": 1})))
            waiting.start()
            waiting.join(timeout=1.0)
            assert done == []  # it waits for the lock
            process.send_signal(signal.SIGKILL)
            process.wait()
            waiting.join(timeout=30)
            assert done == [1]  # the holder's uncommitted entry 1 is gone; ours took its place
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
        assert [json.loads(d)["p"] for _, d in log.entries()] == ["x", "x"]
        assert log.root() == _merkle.root_from_leaf_hashes(
            [_merkle.leaf_hash(d) for _, d in log.entries()]
        )


if __name__ == "__main__":
    if sys.argv[1] == "hold":
        holder(sys.argv[2], sys.argv[3])
    else:
        writer(*sys.argv[1:4], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
