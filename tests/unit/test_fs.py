"""write_atomic in a folder others can write to: planted links and names are never followed."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from ailedger._fs import create_private_file, tighten, write_atomic
from ailedger.errors import InputError


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_bytes(b"original")
    path.chmod(0o644)
    return path


def assert_untouched(victim: Path) -> None:
    assert victim.read_bytes() == b"original"
    assert victim.stat().st_mode & 0o777 == 0o644


def test_a_link_at_the_old_predictable_temp_name_is_not_followed(
    tmp_path: Path, victim: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    # the name the previous version used: .NAME.PID.tmp
    (shared / f".out.json.{os.getpid()}.tmp").symlink_to(victim)
    write_atomic(shared / "out.json", b"new", mode=0o600)
    assert_untouched(victim)
    assert (shared / "out.json").read_bytes() == b"new"
    assert (shared / "out.json").stat().st_mode & 0o777 == 0o600


def test_planted_names_are_skipped_never_opened(
    tmp_path: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    # someone who could guess the next random names plants a link and a file there
    (shared / ".out.json.aaaa.tmp").symlink_to(victim)
    (shared / ".out.json.bbbb.tmp").symlink_to(tmp_path / "dangling")
    (shared / ".out.json.cccc.tmp").write_bytes(b"theirs")
    names: Iterator[str] = iter(["aaaa", "bbbb", "cccc", "dddd"])
    monkeypatch.setattr(secrets, "token_hex", lambda _n: next(names))
    write_atomic(shared / "out.json", b"new", mode=0o644)
    assert_untouched(victim)
    assert not (tmp_path / "dangling").exists()
    assert (shared / ".out.json.cccc.tmp").read_bytes() == b"theirs"
    assert (shared / "out.json").read_bytes() == b"new"
    assert not (shared / ".out.json.dddd.tmp").exists()


def test_a_link_at_the_target_is_replaced_not_written_through(tmp_path: Path, victim: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "out.json").symlink_to(victim)
    write_atomic(shared / "out.json", b"new", mode=0o600)
    assert_untouched(victim)
    assert not (shared / "out.json").is_symlink()
    assert (shared / "out.json").read_bytes() == b"new"


def test_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "public", b"x", mode=0o644)
    finally:
        os.umask(old)
    assert (tmp_path / "public").stat().st_mode & 0o777 == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes", mode=0o600)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_private_files_and_tightening_never_follow_links(tmp_path: Path, victim: Path) -> None:
    assert create_private_file(tmp_path / "db") is True
    assert (tmp_path / "db").stat().st_mode & 0o777 == 0o600
    assert create_private_file(tmp_path / "db") is False
    (tmp_path / "link").symlink_to(victim)
    assert create_private_file(tmp_path / "link") is False
    assert tighten(tmp_path / "link", 0o600) is None
    assert_untouched(victim)
    loose = tmp_path / "loose"
    loose.write_bytes(b"")
    loose.chmod(0o664)
    assert tighten(loose, 0o600) == 0o664
    assert loose.stat().st_mode & 0o777 == 0o600
    assert tighten(loose, 0o600) is None
    assert tighten(tmp_path / "missing", 0o600) is None


def test_an_unwritable_destination_is_one_input_error(tmp_path: Path) -> None:
    """A destination under a regular file (or a read-only folder) is a clear error, not OSError."""
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a folder")
    with pytest.raises(InputError, match=r"cannot write .*lineage\.svg"):
        write_atomic(blocker / "lineage.svg", b"<svg/>")
    assert blocker.read_bytes() == b"not a folder"
