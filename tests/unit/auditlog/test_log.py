"""The stored log: exact RFC 6962 roots and proofs, durability, privacy, checkpoints."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ailedger.auditlog import _merkle
from ailedger.auditlog.log import AuditLog
from ailedger.auditlog.proof import verify_receipt
from ailedger.auditlog.verify import DirectorySource, verify_export, verify_stored
from ailedger.errors import InputError, VerificationError, WorkspaceError, WorkspaceLocked

ORIGIN = "test.example/log"


@pytest.fixture
def log(tmp_path: Path):  # type: ignore[no-untyped-def]
    opened = AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN)
    yield opened
    opened.close()


def leaves_of(log: AuditLog) -> list[bytes]:
    return [_merkle.leaf_hash(data) for _, data in log.entries()]


@pytest.mark.parametrize("batches", [[1], [255, 1], [256], [257], [300, 300, 70000]])
def test_roots_match_the_reference_at_every_tile_boundary(
    log: AuditLog, batches: list[int]
) -> None:
    count = 0
    for batch in batches:
        log.append_many({"n": count + i} for i in range(batch))
        count += batch
    leaves = leaves_of(log)
    assert len(leaves) == log.size == count
    for size in {1, 2, 255, 256, 257, 511, 512, 65535, 65536, 65537, count} - {0}:
        if size <= count:
            assert log.root(size) == _merkle.root_from_leaf_hashes(leaves[:size]), size


@pytest.mark.parametrize("count", [255, 256, 4096 + 256 + 3])
def test_entries_are_stored_in_order_at_their_indexes(log: AuditLog, count: int) -> None:
    # whole multi-row INSERTs, a remainder, and a second pipelined batch
    assert log.append_many({"i": i} for i in range(count)) == range(count)
    assert [(idx, json.loads(data)["i"]) for idx, data in log.entries()] == [
        (i, i) for i in range(count)
    ]
    assert log.append({"i": count}) == count
    assert log.entry_data(count) == b'{"i":%d}' % count


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_stored_proofs_verify(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("proofs") / "log.sqlite"
    with AuditLog.open(path, origin=ORIGIN) as log:
        n = data.draw(st.integers(1, 700))
        log.append_many({"i": i} for i in range(n))
        leaves = leaves_of(log)
        size = data.draw(st.integers(1, n))
        index = data.draw(st.integers(0, size - 1))
        root = log.root(size)
        _merkle.verify_inclusion(log.prove_inclusion(index, size), index, size, leaves[index], root)
        old = data.draw(st.integers(1, size))
        proof = log.prove_consistency(old, size)
        _merkle.verify_consistency(proof, old, size, log.root(old), root)


def test_reopen_and_readers_follow_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    with AuditLog.open(path, origin=ORIGIN) as writer:
        writer.append_many({"i": i} for i in range(300))
        reader = AuditLog.open(path, writable=False)
        assert reader.size == 300
        writer.append_many({"i": i} for i in range(300, 600))
        assert reader.size == 600
        assert reader.root() == writer.root()
        with pytest.raises(WorkspaceError, match="read-only"):
            reader.append({"x": 1})
        reader.close()
    with AuditLog.open(path) as again:
        assert again.origin == ORIGIN
        assert again.size == 600
        again.append({"i": 600})
        assert again.root() == _merkle.root_from_leaf_hashes(leaves_of(again))


def test_origin_is_fixed(tmp_path: Path) -> None:
    AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN).close()
    with pytest.raises(WorkspaceError, match=r"not 'other\.example/log'"):
        AuditLog.open(tmp_path / "log.sqlite", origin="other.example/log")
    with pytest.raises(InputError, match="one word"):
        AuditLog.open(tmp_path / "new.sqlite", origin="has space")


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN), pytest.raises(WorkspaceLocked):
        AuditLog.open(tmp_path / "log.sqlite", lock_timeout=0.1)


def test_a_noticeable_lock_wait_is_announced_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level("INFO", logger="ailedger.progress"),
        AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN),
        pytest.raises(WorkspaceLocked),
    ):
        AuditLog.open(tmp_path / "log.sqlite", lock_timeout=1.3)
    waits = [r.getMessage() for r in caplog.records if r.name == "ailedger.progress"]
    assert len(waits) == 1
    assert waits[0].startswith("waiting up to 1 s for the audit log")


def test_concurrent_appends_are_sequenced(log: AuditLog) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        for i in range(50):
            index = log.append({"worker": worker, "i": i})
            with lock:
                got.append(index)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == list(range(200))
    assert log.size == 200
    assert log.root() == _merkle.root_from_leaf_hashes(leaves_of(log))


def test_sensitive_fields_are_committed_and_erasable(log: AuditLog, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    index = log.append_decision(
        model="sha256:" + "ab" * 32, input={"age": 52, "name": "Ada"}, output=1, actor="svc"
    )
    entry = log.show(index)
    assert "Ada" not in entry.data.decode()
    assert entry.record["input"]["commitment"].startswith("sha256:")
    assert entry.private == {"input": {"age": 52, "name": "Ada"}}
    # the same input committed twice gives different commitments (fresh salt)
    again = log.show(
        log.append_decision(
            model="sha256:" + "ab" * 32, input={"age": 52, "name": "Ada"}, output=1, actor="svc"
        )
    )
    assert again.record["input"] != entry.record["input"]
    log.checkpoint(key)
    assert log.erase(index) is True
    assert log.erase(index) is False
    assert log.show(index).private == {"input": None}
    assert log.show(index).data == entry.data
    db = sqlite3.connect(log.path)
    assert db.execute("SELECT count(*) FROM private WHERE idx = ?", (index,)).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM record_keys WHERE idx = ?", (index,)).fetchone()[0] == 0
    db.close()
    verify_stored(log, log.verifier(key.public_key()), deep=True)
    log.export(tmp_path / "export")
    verify_export(DirectorySource(tmp_path / "export"), log.verifier(key.public_key()))


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ([1, 2], "must be a JSON object"),
        ({"x": float("nan")}, "cannot be canonicalised"),
        ({"x": "y" * 70000}, "at most 65535 bytes"),
        ({1: "not a string key"}, "cannot be canonicalised"),
    ],
)
def test_bad_records_are_refused_and_nothing_is_written(
    log: AuditLog, record: object, message: str
) -> None:
    log.append({"ok": True})
    with pytest.raises(InputError, match=message):
        log.append_many([{"fine": 1}, record])  # type: ignore[list-item]
    assert log.size == 1


def test_sensitive_field_must_exist(log: AuditLog) -> None:
    with pytest.raises(InputError, match="'ssn' is not in the record"):
        log.append({"a": 1}, sensitive=("ssn",))


def test_checkpoints_receipts_and_refusing_a_fork(log: AuditLog) -> None:
    key = Ed25519PrivateKey.generate()
    log.append_many({"i": i} for i in range(40))
    first = log.checkpoint(key)
    assert log.checkpoint(key) == first
    log.append_many({"i": i} for i in range(40, 90))
    second = log.checkpoint(key)
    assert [size for size, _ in log.checkpoints()] == [40, 90]
    receipt = log.receipt(17, checkpoint=first)
    checked = verify_receipt(
        receipt.to_bytes(), [log.verifier(key.public_key())], entry=log.entry_data(17)
    )
    assert (checked.size, checked.root_hash) == (40, log.root(40))
    with pytest.raises(InputError, match="not covered"):
        log.receipt(50, checkpoint=first)
    assert second.startswith(ORIGIN.encode())
    # rewrite a stored hash behind the log's back: it must refuse to sign what follows
    log.append({"i": 90})
    db = sqlite3.connect(log.path)
    db.execute("UPDATE tiles SET data = zeroblob(length(data)) WHERE level = 0 AND idx = 0")
    db.commit()
    db.close()
    log.close()
    with AuditLog.open(log.path) as reopened, pytest.raises(VerificationError, match="forked"):
        reopened.checkpoint(key)


def test_export_is_c2sp_tiles(log: AuditLog, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    log.append_many({"i": i} for i in range(70000))
    log.checkpoint(key)
    out = tmp_path / "export"
    assert log.export(out) == 70000
    for tile in _merkle.tiles_for_size(70000):
        data = (out / tile.path()).read_bytes()
        assert len(data) == 32 * tile.width
    bundle = _merkle.decode_entry_bundle((out / _merkle.entries_path(3)).read_bytes())
    assert [json.loads(b)["i"] for b in bundle] == list(range(768, 1024))
    assert (out / "tile/entries/273.p/112").exists()
    # a level-1 hash is the root of the level-0 tile beneath it
    level0 = (out / "tile/0/005").read_bytes()
    level1 = (out / "tile/1/000").read_bytes()
    assert len((out / "tile/1/001.p/17").read_bytes()) == 17 * 32
    assert len((out / "tile/2/000.p/1").read_bytes()) == 32
    leaves = [level0[i : i + 32] for i in range(0, len(level0), 32)]
    assert level1[5 * 32 : 6 * 32] == _merkle.root_from_leaf_hashes(leaves)
    report = verify_export(DirectorySource(out), log.verifier(key.public_key()))
    assert report.size == 70000
    assert report.root == log.root()


# -- one append_many is all or nothing; hostile stored data is a VerificationError ---------------


def test_append_many_is_all_or_nothing_across_batches(log: AuditLog, tmp_path: Path) -> None:
    log.append({"before": True})
    root = log.root()

    def records() -> object:
        for i in range(10_000):  # three batches of 4,096 are written before record 9,001
            yield {"i": i, "pad": "x" * (70_000 if i == 9_000 else 10)}

    with pytest.raises(InputError, match="at most 65535 bytes"):
        log.append_many(records())  # type: ignore[arg-type]
    assert (log.size, log.stored_count(), log.root()) == (1, 1, root)
    with AuditLog.open(tmp_path / "log.sqlite", writable=False) as reader:
        assert reader.size == 1
    # the tree was rolled back too: the same records then give the reference root
    assert log.append_many({"i": i} for i in range(10_000)) == range(1, 10_001)
    assert log.root() == _merkle.root_from_leaf_hashes(leaves_of(log))


def test_append_many_rolls_back_on_any_failure(log: AuditLog) -> None:
    def records() -> object:
        for i in range(5_000):
            yield {"i": i}
        raise OSError("the input stream broke")

    with pytest.raises(OSError, match="the input stream broke"):
        log.append_many(records())  # type: ignore[arg-type]
    assert (log.size, log.stored_count()) == (0, 0)
    assert log.append({"after": 1}) == 0  # the sequencer's path still works


def test_sensitive_field_named_twice_is_committed_once(log: AuditLog) -> None:
    index = log.append_many([{"ssn": "123", "n": 1}], sensitive=("ssn", "ssn"))[0]
    assert log.show(index).private == {"ssn": "123"}


def test_records_nested_too_deeply_are_refused(log: AuditLog) -> None:
    deep: object = 1
    for _ in range(65):
        deep = [deep]
    with pytest.raises(InputError, match="nested deeper than 64 levels"):
        log.append_many([{"fine": [[["x"]]]}, {"deep": deep}])
    assert log.size == 0
    assert log.append_many([{"brackets": "[{" * 100}]) == range(1)  # inside a string: fine


@pytest.mark.parametrize("index", [2**64, 2**63, 3, -1])
def test_index_out_of_range_is_input_error(log: AuditLog, index: int) -> None:
    log.append_many({"i": i} for i in range(3))
    with pytest.raises(InputError, match=f"the log has no entry {index} \\(size 3\\)"):
        log.show(index)
    with pytest.raises(InputError, match="no entry"):
        log.erase(index)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("UPDATE entries SET data = 'a text row' WHERE idx = 1", "entry 1 is stored as TEXT"),
        ("UPDATE entries SET data = 42 WHERE idx = 1", "entry 1 is stored as INTEGER"),
        ("UPDATE entries SET data = x'7b6e6f74' WHERE idx = 1", "stored entry 1: not JSON"),
        ("UPDATE entries SET data = x'ff' WHERE idx = 1", "stored entry 1: not UTF-8"),
        ("UPDATE entries SET data = x'5b315d' WHERE idx = 1", "entry 1 is not a JSON object"),
        ("DELETE FROM entries WHERE idx = 1", "entry 1 is missing"),
        ("UPDATE private SET nonce = 'text' WHERE idx = 1", "private value 'ssn' of entry 1"),
        ("UPDATE private SET ciphertext = x'00' WHERE idx = 1", "do not decrypt"),
    ],
)
def test_wrongly_typed_stored_data_is_a_verification_error(
    log: AuditLog, tmp_path: Path, sql: str, message: str
) -> None:
    log.append_many([{"ssn": str(i), "i": i} for i in range(3)], sensitive=("ssn",))
    log.close()
    with sqlite3.connect(tmp_path / "log.sqlite") as raw:
        raw.execute(sql)
    raw.close()
    with AuditLog.open(tmp_path / "log.sqlite", writable=False) as reader:
        with pytest.raises(VerificationError, match=message):
            reader.show(1)
        if "is stored as" in message:
            with pytest.raises(VerificationError, match=message):
                list(reader.entries())
        assert reader.show(0).private == {"ssn": "0"}
