"""`AuditLog.export` flushes once: files written atomically, one fsync pass, checkpoint last.

The fsync calls are observed (each is passed on to the real ``os.fsync``), not replaced: the
files are really written and flushed on the test's file system.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger import _fs
from ailedger._fs import sync_files, write_atomic
from ailedger.auditlog.log import AuditLog
from ailedger.auditlog.verify import DirectorySource, verify_export
from ailedger.errors import InputError

ORIGIN = "flush.example/log"
TEMP = re.compile(r"\.(.+)\.[0-9a-f]{16}\.tmp")


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The paths of every descriptor passed to ``os.fsync``, in order (via /proc/self/fd).

    A temporary file of ``write_atomic`` (fsynced before its rename) is listed under the name
    it is renamed to.
    """
    seen: list[Path] = []
    real = os.fsync

    def spy(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        temp = TEMP.fullmatch(path.name)
        seen.append(path.parent / temp.group(1) if temp else path)
        real(fd)

    monkeypatch.setattr(_fs.os, "fsync", spy)
    return seen


def files_under(root: Path) -> set[Path]:
    return {p.resolve() for p in root.rglob("*") if p.is_file()}


def test_export_fsyncs_every_file_once_and_the_checkpoint_last(
    tmp_path: Path, fsynced: list[Path]
) -> None:
    key = Ed25519PrivateKey.generate()
    out = tmp_path / "export"
    with AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN) as log:
        log.append_many({"i": i} for i in range(600))  # 2 full bundles and a partial one
        log.checkpoint(key)
        fsynced.clear()  # only the export's own flushes count
        assert log.export(out) == 600
        verifier = log.verifier(key.public_key())
    files = files_under(out)
    assert len(files) >= 8  # tiles, bundles, checkpoint copy, listing, checkpoint
    synced_files = [p for p in fsynced if p.is_file()]
    assert sorted(synced_files) == sorted(files)  # each file exactly once, no temp names
    assert synced_files[-1] == (out / "checkpoint").resolve()
    folders = [p for p in fsynced if p.is_dir()]
    assert out.resolve() in folders and tmp_path.resolve() in folders
    # one pass: a folder is flushed once, except the export's root, flushed again for the
    # checkpoint's rename
    assert len(folders) == len(set(folders)) + 1
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert verify_export(DirectorySource(out), verifier).size == 600


def test_export_over_an_older_export_replaces_it(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    out = tmp_path / "export"
    with AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN) as log:
        log.append_many({"i": i} for i in range(100))
        log.checkpoint(key)
        log.export(out)
        log.append_many({"i": i} for i in range(100, 300))
        log.checkpoint(key)
        assert log.export(out) == 300
        report = verify_export(DirectorySource(out), log.verifier(key.public_key()))
    assert report.size == 300
    assert (out / "ailedger" / "checkpoints" / "100").is_file()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_a_failed_export_leaves_no_checkpoint_and_no_temp_file(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    out = tmp_path / "export"
    (out / "tile").mkdir(parents=True)
    (out / "tile" / "entries").write_bytes(b"in the way")  # the bundles' folder is a file
    with AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN) as log:
        log.append_many({"i": i} for i in range(10))
        log.checkpoint(key)
        with pytest.raises(InputError, match=r"cannot write .*tile/entries"):
            log.export(out)
    assert not (out / "checkpoint").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_write_atomic_without_durable_skips_fsync_but_writes_whole(
    tmp_path: Path, fsynced: list[Path]
) -> None:
    target = tmp_path / "a" / "b" / "file"
    write_atomic(target, b"first", mode=0o640, durable=False)
    write_atomic(target, b"second", mode=0o640, durable=False)
    assert fsynced == []
    assert target.read_bytes() == b"second"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["file"]
    write_atomic(target, b"third")
    assert fsynced == [target.resolve(), target.parent.resolve()]


def test_sync_files_flushes_files_then_every_folder_up_to_roots_parent(
    tmp_path: Path, fsynced: list[Path]
) -> None:
    root = tmp_path / "root"
    paths = [root / "x" / "y" / "one", root / "x" / "y" / "two", root / "z" / "three"]
    for path in paths:
        write_atomic(path, path.name.encode(), durable=False)
    sync_files(paths, root)
    got = list(fsynced)
    assert sorted(p for p in got if p.is_file()) == sorted(p.resolve() for p in paths)
    want_folders = {root / "x" / "y", root / "x", root / "z", root, tmp_path}
    assert sorted(p for p in got if p.is_dir()) == sorted(p.resolve() for p in want_folders)
    # every file of a folder before that folder, and each folder before its parent
    order = {p: n for n, p in enumerate(got)}
    for path in paths:
        assert order[path.resolve()] < order[path.parent.resolve()] < order[root.resolve()]


def test_sync_files_names_a_missing_file(tmp_path: Path) -> None:
    write_atomic(tmp_path / "root" / "here", b"x", durable=False)
    with pytest.raises(InputError, match=r"cannot sync .*root/gone"):
        sync_files([tmp_path / "root" / "here", tmp_path / "root" / "gone"], tmp_path / "root")
