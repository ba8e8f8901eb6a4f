"""One log over two stores: the same behaviour on SQLite and on PostgreSQL, and a workspace
whose log is in PostgreSQL used through the CLI (no ``log.sqlite`` anywhere).

PostgreSQL is the session's throwaway cluster (:mod:`tests.pg`); each test gets a schema.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog import _merkle
from ailedger.auditlog.log import AuditLog
from ailedger.auditlog.pglog import PostgresLog, parse_dsn
from ailedger.auditlog.proof import verify_receipt
from ailedger.auditlog.records import encode_record
from ailedger.auditlog.verify import verify_stored
from ailedger.errors import InputError, VerificationError, WorkspaceError
from ailedger.workspace import Workspace
from tests.cli import one_line_error, run
from tests.pg import new_database

ORIGIN = "test.example/stores"


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, object]]:
    """How to open one log (writable or not) in either store: (store name, open function)."""
    key_path = tmp_path / "keys" / "log.key"
    if request.param == "sqlite":
        path = tmp_path / "log.sqlite"

        def open_sqlite(writable: bool = True) -> AuditLog:
            return AuditLog.open(path, origin=ORIGIN, writable=writable, key_path=key_path)

        yield "sqlite", open_sqlite
    else:
        dsn = new_database(request.getfixturevalue("postgres"))

        def open_pg(writable: bool = True) -> AuditLog:
            return PostgresLog.open(dsn, origin=ORIGIN, writable=writable, key_path=key_path)

        yield "postgres", open_pg


def test_the_same_log_behaviour_on_both_stores(opener: tuple[str, object]) -> None:
    name, open_log = opener
    assert callable(open_log)
    key = Ed25519PrivateKey.generate()
    with open_log() as log:
        assert isinstance(log, AuditLog)
        assert (log.path is None) == (name == "postgres")
        decision = log.append_decision(model="m", input={"age": 41}, output="yes", actor="a")
        batch = log.append_many(
            ({"n": i, "ssn": f"{i:09d}"} for i in range(300)), sensitive=["ssn"]
        )
        assert (decision, batch) == (0, range(1, 301))
        with pytest.raises(InputError):
            log.append_many([{"ok": 1}, ["not", "an", "object"]])  # type: ignore[list-item]
        assert log.size == log.stored_count() == 301
        leaves = [_merkle.leaf_hash(d) for _, d in log.entries()]
        assert log.root() == _merkle.root_from_leaf_hashes(leaves)
        note = log.checkpoint(key)
        assert log.checkpoint(key) == note  # nothing new: the same note
        assert log.show(7).private == {"ssn": "000000006"}
        assert log.erase(7) is True
        assert log.erase(7) is False
        assert log.show(7).private == {"ssn": None}
        receipt = log.receipt(7)
        checked = verify_receipt(receipt, [log.verifier(key.public_key())], entry=log.entry_data(7))
        assert checked.size == 301
        report = verify_stored(log, log.verifier(key.public_key()), deep=True)
        assert (report.size, report.root) == (301, log.root())
        # a well-formed signature line of another key (the caller checks cosignatures)
        witness = "— witness.example/w " + base64.b64encode(bytes(72)).decode() + "\n"
        assert log.add_cosignatures(301, [witness]).endswith(witness.encode())
        assert log.add_cosignatures(301, [witness]).count(witness.encode()) == 1
        with pytest.raises(InputError, match="no signed checkpoint of size 5"):
            log.add_cosignatures(5, [witness])
        anchor = log.add_anchor(size=301, root=log.root(), chain_id=1, registry="0xab")
        log.update_anchor(anchor, status="final", block_number=9)
        assert log.anchor_rows() == [(anchor, 301, log.root(), 1, "0xab", None, 9, None, "final")]
        with pytest.raises(InputError, match="no column"):
            log.update_anchor(anchor, root=b"x")
    with open_log(writable=False) as reader:
        assert reader.size == 301
        assert reader.show(0).private == {"input": {"age": 41}}
        assert reader.checkpoints()[-1][1].endswith(witness.encode())
        for write in (
            lambda: reader.append({"x": 1}),
            lambda: reader.erase(0),
            lambda: reader.checkpoint(key),
            lambda: reader.add_anchor(size=1, root=b"r", chain_id=1, registry="0x"),
        ):
            with pytest.raises(WorkspaceError, match="read-only"):
                write()


def test_a_forked_history_is_refused_on_both_stores(opener: tuple[str, object]) -> None:
    _, open_log = opener
    assert callable(open_log)
    key = Ed25519PrivateKey.generate()
    with open_log() as log:
        log.append_many({"i": i} for i in range(20))
        log.checkpoint(key)
        log.append({"i": 20})
        signed_root = log.root(20)
        # a signed checkpoint of this size with another root, as a rewritten log would meet
        with log._store.sequencing():
            log._store.add_checkpoint(21, b"\x00" * 32, b"forged", 0.0)
        with pytest.raises(VerificationError, match="forked"):
            log.checkpoint(key)
        assert log.root(20) == signed_root


def _pg_workspace(tmp_path: Path, dsn: str) -> Path:
    """A workspace folder whose config.toml (written before ``init``) puts the log in
    PostgreSQL."""
    path = tmp_path / "ws"
    path.mkdir(mode=0o700)
    config = {"log": {"backend": "postgres", "dsn": dsn}}
    (path / "config.toml").write_text(tomli_w.dumps(config))
    (path / "config.toml").chmod(0o600)
    return path


def test_cli_on_a_postgres_workspace_has_no_sqlite_log(
    tmp_path: Path, env: dict[str, str], postgres: str
) -> None:
    dsn = new_database(postgres)
    ws = _pg_workspace(tmp_path, dsn)
    run("init", "-w", str(ws), "--unsafe-fast-kdf", env=env)
    assert not (ws / "log.sqlite").exists()
    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps({"n": i, "ssn": str(i)}) + "\n" for i in range(300)))
    done = run("log", "append", str(records), "-s", "ssn", "-w", str(ws), "--json", env=env)
    assert json.loads(done.stdout)["size"] == 300
    run("log", "checkpoint", "-w", str(ws), env=env)
    for extra in ((), ("--deep",)):
        report = json.loads(run("verify", "-w", str(ws), "--json", *extra, env=env).stdout)
        assert (report["ok"], report["size"]) == (True, 300)
    assert not (ws / "log.sqlite").exists()
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM entries").fetchone()
    assert row is not None and row[0] == 300
    # the log's rows changed behind its back: verification fails, one line, exit 1
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM entries WHERE idx = 299")
    failed = run("verify", "-w", str(ws), "--json", env=env, check=1)
    assert "300 entries but stores 299" in one_line_error(failed)


def test_for_workspace_opens_the_configured_store(tmp_path: Path, postgres: str) -> None:
    dsn = new_database(postgres)
    ws = Workspace(
        path=tmp_path / "ws", config={"log": {"origin": ORIGIN, "backend": "postgres", "dsn": dsn}}
    )
    with AuditLog.for_workspace(ws) as log:
        assert isinstance(log, PostgresLog)
        assert log.append({"x": 1}) == 0
        assert parse_dsn(dsn)["password"] not in log.where
    with AuditLog.for_workspace(ws, writable=False) as log:
        assert log.size == 1
    assert not ws.log_path.exists()


def test_append_encoded_matches_append_many_on_both_stores(opener: tuple[str, object]) -> None:
    _, open_log = opener
    assert callable(open_log)
    records = [{"n": i, "x": [i, {"y": "z"}]} for i in range(600)]
    datas = [encode_record(r) for r in records]
    leaves = [_merkle.leaf_hash(d) for d in datas]
    with open_log() as log:
        assert isinstance(log, AuditLog)
        assert log.append_encoded(datas[:100]) == range(0, 100)
        # with the leaf hashes a caller computed (the service's encoder process)
        assert log.append_encoded(datas[100:], leaf_hashes=leaves[100:]) == range(100, 600)
        for bad in ([b""], ["not bytes"], [b"{}" * 40_000]):
            with pytest.raises(InputError):
                log.append_encoded(bad)  # type: ignore[arg-type]
        with pytest.raises(InputError, match="leaf hashes"):  # one hash off: refused
            log.append_encoded(datas[:3], leaf_hashes=[leaves[0], leaves[1], leaves[1]])
        # right at both ends, shifted by one between them: the random spot checks find it
        shifted = [leaves[0], *leaves[:498], leaves[499]]
        with pytest.raises(InputError, match="leaf hashes"):
            log.append_encoded(datas[:500], leaf_hashes=shifted)
        assert log.size == log.stored_count() == 600
        assert [d for _, d in log.entries()] == datas
        # the tree of the same entries appended record by record
        assert log.root() == _merkle.root_from_leaf_hashes(leaves)
        assert log.tile(0, 1, 256) == b"".join(leaves[256:512])
