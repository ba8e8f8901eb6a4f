"""The PostgreSQL log: the same bytes as SQLite, atomic batches, erasure, shared by writers.

Runs against a real PostgreSQL server (the session's throwaway cluster, :mod:`tests.pg`); each
test gets a database of its own.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog import _merkle
from ailedger.auditlog.backend import log_settings, open_log
from ailedger.auditlog.log import AuditLog
from ailedger.auditlog.pglog import PostgresLog, describe_dsn
from ailedger.auditlog.proof import verify_receipt
from ailedger.auditlog.verify import DirectorySource, verify_export
from ailedger.errors import InputError, LogStoreUnavailable, VerificationError, WorkspaceError
from ailedger.workspace import Workspace
from tests.pg import new_database

ORIGIN = "test.example/pglog"


@pytest.fixture
def dsn(postgres: str) -> str:
    return new_database(postgres)


@pytest.fixture
def pglog(dsn: str, tmp_path: Path) -> Iterator[PostgresLog]:
    opened = PostgresLog.open(dsn, origin=ORIGIN, key_path=tmp_path / "log.key")
    yield opened
    opened.close()


def reference_root(log: PostgresLog | AuditLog, size: int | None = None) -> bytes:
    """The RFC 6962 root recomputed from the entries alone (no stored hash used)."""
    leaves = [_merkle.leaf_hash(data) for _, data in log.entries(0, size)]
    return _merkle.root_from_leaf_hashes(leaves)


def files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


def test_tiles_roots_proofs_and_checkpoints_are_byte_identical_to_sqlite(
    pglog: PostgresLog, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    sqlite = AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN)
    try:
        # batches that leave partial tiles at levels 0, 1 and 2, and singles through the
        # sequencer; some records with sensitive fields (their commitments are salted at
        # random, so the PostgreSQL log gets the entries exactly as SQLite stored them)
        batches = [1, 254, 1, 1, 300, 65536 - 557 + 700]
        sizes: list[int] = []
        count = 0
        for number, batch in enumerate(batches):
            if batch == 1:
                record = {"n": count, "secret": f"s{count}", "note": "é\u2028"}
                sqlite.append(record, sensitive=["secret"])
            else:
                sqlite.append_many({"n": count + i, "x": [i]} for i in range(batch))
            stored = [json.loads(data) for _, data in sqlite.entries(count)]
            if batch == 1:
                assert pglog.append(stored[0]) == count
            else:
                assert pglog.append_many(stored) == range(count, count + batch)
            count += batch
            sizes.append(count)
            assert sqlite.checkpoint(key) == pglog.checkpoint(key), number
        assert pglog.size == sqlite.size == count
        assert list(pglog.entries(65000, 65600)) == list(sqlite.entries(65000, 65600))
        assert pglog.checkpoints() == sqlite.checkpoints()
        assert pglog.root() == reference_root(sqlite)
        for size in sizes:
            assert pglog.root(size) == sqlite.root(size), size
            for tile in _merkle.tiles_for_size(size):
                assert pglog.tile(tile.level, tile.index, tile.width) == sqlite.tile(
                    tile.level, tile.index, tile.width
                ), (size, tile)
            for index in {0, size // 2, size - 1}:
                assert pglog.prove_inclusion(index, size) == sqlite.prove_inclusion(index, size)
            for old in {1, size // 3, size}:
                assert pglog.prove_consistency(old, size) == sqlite.prove_consistency(old, size)
        receipt = pglog.receipt(count - 5)
        assert receipt == sqlite.receipt(count - 5)
        checked = verify_receipt(
            receipt, [pglog.verifier(key.public_key())], entry=pglog.entry_data(count - 5)
        )
        assert checked.size == count
    finally:
        sqlite.close()


def test_exports_are_the_same_files_as_sqlites_and_verify(
    pglog: PostgresLog, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    with AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN) as sqlite:
        for batch in (3, 300, 1):
            sqlite.append_many({"b": batch, "i": i} for i in range(batch))
            pglog.append_many(json.loads(d) for _, d in sqlite.entries(pglog.size))
            sqlite.checkpoint(key)
            pglog.checkpoint(key)
        assert pglog.export(tmp_path / "pg") == sqlite.export(tmp_path / "sq") == 304
    exported = {p.relative_to(tmp_path / "pg"): p.read_bytes() for p in files(tmp_path / "pg")}
    assert exported == {
        p.relative_to(tmp_path / "sq"): p.read_bytes() for p in files(tmp_path / "sq")
    }
    assert Path("tile/0/001.p/48") in exported
    report = verify_export(DirectorySource(tmp_path / "pg"), pglog.verifier(key.public_key()))
    assert report.size == 304
    assert report.root == pglog.root()


def test_private_fields_are_encrypted_and_come_back(pglog: PostgresLog, dsn: str) -> None:
    index = pglog.append_decision(
        model="sha256:" + "ab" * 32, input={"age": 41}, output="yes", actor="svc"
    )
    first = pglog.append_many(
        [{"a": 1, "b": "hidden-b-value"}, {"a": 2, "b": [1, 2]}], sensitive=["b"]
    )
    assert pglog.show(index).private == {"input": {"age": 41}}
    assert pglog.show(first[0]).private == {"b": "hidden-b-value"}
    assert pglog.show(first[1]).private == {"b": [1, 2]}
    assert pglog.show(first[1]).record["b"]["commitment"].startswith("sha256:")
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT ciphertext FROM private").fetchall()
        entries = conn.execute("SELECT data FROM entries").fetchall()
    assert len(rows) == 3
    assert not any(b"hidden-b-value" in bytes(r[0]) for r in rows + entries)


def test_append_many_is_all_or_nothing(pglog: PostgresLog) -> None:
    assert pglog.append_many({"i": i} for i in range(10)) == range(10)
    root = pglog.root()

    def records() -> Iterator[Any]:
        yield from ({"i": i} for i in range(5000))  # more than one written batch
        yield ["not", "an", "object"]

    with pytest.raises(InputError, match="JSON object"):
        pglog.append_many(records())
    assert pglog.size == 10
    assert pglog.stored_count() == 10
    assert pglog.root() == root
    with pytest.raises(InputError, match="not in the record"):
        pglog.append_many([{"a": 1}, {"b": 2}], sensitive=["a"])
    assert pglog.append({"i": 10}) == 10
    assert pglog.append_many({"i": i} for i in range(11, 300)) == range(11, 300)
    assert pglog.root() == reference_root(pglog)


def test_erase_leaves_no_readable_value_in_the_table_files(pglog: PostgresLog, dsn: str) -> None:
    pglog.append_many({"n": i} for i in range(3))
    index = pglog.append({"n": 3, "secret": "the-plaintext-value"}, sensitive=["secret"])
    kept = pglog.append({"n": 4, "secret": "another-value"}, sensitive=["secret"])
    root, proof = pglog.root(), pglog.prove_inclusion(index)
    with psycopg.connect(dsn, autocommit=True) as conn:

        def one(query: str, *params: object) -> Any:
            row = conn.execute(query, params).fetchone()
            assert row is not None
            return row[0]

        key = bytes(one("SELECT key FROM record_keys WHERE idx = %s", index))
        cipher = bytes(one("SELECT ciphertext FROM private WHERE idx = %s", index))
        conn.execute("CHECKPOINT")  # the table pages are on disk now
        base = Path(one("SELECT current_setting('data_directory')"))
        files = [
            base / one("SELECT pg_relation_filepath(%s)", t) for t in ("record_keys", "private")
        ]
        database = files[0].parent
    before = b"".join(f.read_bytes() for f in files)
    assert key in before and cipher in before  # the scan below can see them
    assert pglog.show(index).private == {"secret": "the-plaintext-value"}

    assert pglog.erase(index) is True
    assert pglog.erase(index) is False
    assert pglog.show(index).private == {"secret": None}
    assert pglog.show(kept).private == {"secret": "another-value"}
    assert pglog.root() == root
    assert pglog.prove_inclusion(index) == proof
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    everything = b"".join(
        f.read_bytes() for f in database.iterdir() if f.is_file() and f.name[0].isdigit()
    )
    assert key not in everything
    assert cipher not in everything
    assert b"the-plaintext-value" not in everything


def test_concurrent_appends_in_one_process_get_consecutive_indexes(pglog: PostgresLog) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        for i in range(80):
            index = pglog.append({"w": worker, "i": i})
            with lock:
                got.append(index)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == list(range(480))
    seen = {(r["w"], r["i"]) for _, r in ((i, json.loads(d)) for i, d in pglog.entries())}
    assert len(seen) == 480
    assert pglog.root() == reference_root(pglog)


def test_two_writers_on_one_database_share_one_log(dsn: str, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    one = PostgresLog.open(dsn, origin=ORIGIN, key_path=tmp_path / "log.key")
    two = PostgresLog.open(dsn, key_path=tmp_path / "log.key")
    try:
        assert two.origin == ORIGIN
        assert one.append_many({"a": i} for i in range(300)) == range(300)
        assert two.size == 300
        assert two.append({"b": 0}, sensitive=["b"]) == 300
        assert one.append({"a": 300}) == 301
        assert one.show(300).private == {"b": 0}  # the same data key
        note = two.checkpoint(key)
        assert one.checkpoint(key) == note  # same size: the same note, not a second one
        assert b"\n302\n" in note
        assert one.tile(0, 1, 46) == two.tile(0, 1, 46)
        assert one.root() == two.root() == reference_root(one)
        reader = PostgresLog.open(dsn, writable=False)
        with reader:
            assert reader.size == 302
            assert reader.entry_data(300) == one.entry_data(300)
            with pytest.raises(WorkspaceError, match="cannot read"):
                reader.show(300)  # no data key, no private value (as with SQLite)
            with pytest.raises(WorkspaceError, match="read-only"):
                reader.append({"c": 1})
            one.append({"a": 302})
            assert reader.size == 303
            assert reader.root() == one.root()
    finally:
        one.close()
        two.close()


def test_a_lost_connection_fails_only_the_group_in_flight(pglog: PostgresLog, dsn: str) -> None:
    pglog.append_many({"i": i} for i in range(5))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    # the writer's connection was idle when it was dropped: it is replaced, nothing is lost
    assert pglog.append({"i": 5}) == 5
    after = pglog.size
    assert after == 6
    assert pglog.append({"i": 6}) == after  # reconnected
    assert pglog.root() == reference_root(pglog)


def test_opening_refuses_other_origins_and_missing_logs(dsn: str, tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="no audit log"):
        PostgresLog.open(dsn, writable=False)
    PostgresLog.open(dsn, origin=ORIGIN, key_path=tmp_path / "k").close()
    with pytest.raises(WorkspaceError, match=r"not 'other\.example/log'"):
        PostgresLog.open(dsn, origin="other.example/log", key_path=tmp_path / "k")
    (tmp_path / "k2").write_bytes(b"\x01" * 32)
    with pytest.raises(WorkspaceError, match="not the key"):
        PostgresLog.open(dsn, key_path=tmp_path / "k2")
    with pytest.raises(InputError, match="one word"):
        PostgresLog.open(dsn, origin="two words", key_path=tmp_path / "k")


def test_bad_dsns_and_unreachable_servers_are_one_line_errors_without_the_password(
    postgres: str, tmp_path: Path
) -> None:
    secret = "pw-never-printed-42"
    closed = f"host=127.0.0.1 port=1 dbname=x user=u password={secret} connect_timeout=2"
    with pytest.raises(LogStoreUnavailable) as unreachable:
        PostgresLog.open(closed, origin=ORIGIN, key_path=tmp_path / "k")
    wrong = psycopg.conninfo.make_conninfo(postgres, password=secret)
    with pytest.raises(LogStoreUnavailable) as refused:
        PostgresLog.open(wrong, origin=ORIGIN, key_path=tmp_path / "k")
    with pytest.raises(InputError) as malformed:
        PostgresLog.open(f"host=x password={secret} nonsense", origin=ORIGIN)
    url = f"postgresql://u:{secret}@127.0.0.1:1/x?connect_timeout=2"
    with pytest.raises(LogStoreUnavailable) as by_url:
        PostgresLog.open(url, origin=ORIGIN, key_path=tmp_path / "k")
    for caught in (unreachable, refused, malformed, by_url):
        message = str(caught.value)
        assert secret not in message
        assert "\n" not in message
    assert "127.0.0.1:1/x" in str(unreachable.value)
    assert "authentication failed" in str(refused.value)
    assert describe_dsn(url) == "postgresql://u@127.0.0.1:1/x"
    assert LogStoreUnavailable.exit_code == 3


def test_open_log_follows_the_workspace_config(dsn: str, tmp_path: Path) -> None:
    sqlite_ws = Workspace(path=tmp_path / "a", config={"log": {"origin": ORIGIN}})
    with open_log(sqlite_ws) as log:
        assert isinstance(log, AuditLog)
    pg_ws = Workspace(
        path=tmp_path / "b", config={"log": {"origin": ORIGIN, "backend": "postgres", "dsn": dsn}}
    )
    with open_log(pg_ws) as log:
        assert isinstance(log, PostgresLog)
        assert log.append({"x": 1}) == 0
        assert (tmp_path / "b" / "keys" / "log.key").stat().st_mode & 0o077 == 0
    with open_log(pg_ws, writable=False) as log:
        assert log.size == 1
    bad: list[tuple[dict[str, Any], str]] = [
        ({"log": "x"}, "must be a table"),
        ({"log": {"backend": "mysql"}}, "must be one of sqlite, postgres"),
        ({"log": {"backend": "postgres"}}, "needs a dsn"),
        ({"log": {"backend": "postgres", "dsn": 5}}, "non-empty string"),
        ({"log": {"backend": "postgres", "dsn": "password=hunter2 x"}}, "not a PostgreSQL"),
        ({"log": {"dsn": dsn}}, "only for backend"),
    ]
    for config, message in bad:
        with pytest.raises(WorkspaceError, match=message) as caught:
            log_settings(config)
        assert "hunter2" not in str(caught.value)
    assert "password" not in repr(log_settings(pg_ws.config))


def test_verification_refuses_a_tampered_tile(pglog: PostgresLog, dsn: str) -> None:
    pglog.append_many({"i": i} for i in range(600))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE tiles SET data = substr(data, 1, 100) WHERE level = 0 AND idx = 0")
    fresh = PostgresLog.open(dsn, writable=False)
    with fresh, pytest.raises(VerificationError, match="corrupt"):
        fresh.prove_inclusion(3)
