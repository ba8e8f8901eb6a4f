"""Symlinks in the folders on the way to an output: planted ones are refused, swaps are moot.

Another user is simulated by handing a link to uid 65534 (``nobody``) with ``lchown``, which
needs root; those tests are skipped for other users.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger._fs import open_dir, write_atomic
from ailedger.auditlog.log import AuditLog
from ailedger.errors import InputError

OTHER_UID = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="lchown to another user needs root")


def plant(link: Path, target: Path, *, uid: int = OTHER_UID) -> None:
    """A symlink at ``link`` to ``target``, owned by ``uid`` (another user by default)."""
    link.symlink_to(target, target_is_directory=True)
    os.lchown(link, uid, uid)


@pytest.fixture
def secret_dir(tmp_path: Path) -> Path:
    """A folder the attacker wants written into (an /etc stand-in), with one file in it."""
    target = tmp_path / "etc"
    target.mkdir()
    (target / "passwd").write_bytes(b"root:x:0:0\n")
    return target


def assert_untouched(target: Path) -> None:
    assert sorted(p.name for p in target.iterdir()) == ["passwd"]
    assert (target / "passwd").read_bytes() == b"root:x:0:0\n"


@needs_root
def test_an_output_folder_planted_as_another_users_symlink_is_refused(
    tmp_path: Path, secret_dir: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o1777)
    plant(shared / "export", secret_dir)  # the attacker got there first
    with pytest.raises(InputError, match=r"refusing to follow the symlink 'export'.*user 65534"):
        write_atomic(shared / "export" / "passwd", b"pwned\n")
    with pytest.raises(InputError, match="symlink 'export'"):
        write_atomic(shared / "export" / "tile" / "0" / "000", b"x" * 32)  # missing folders too
    assert_untouched(secret_dir)


@needs_root
def test_log_export_into_a_planted_folder_writes_nothing_there(
    tmp_path: Path, secret_dir: Path
) -> None:
    """Every output path of an export goes through write_atomic, so the export is refused."""
    shared = tmp_path / "shared"
    shared.mkdir()
    out = shared / "out"
    out.mkdir()
    plant(out / "tile", secret_dir)  # a component below the export folder
    with AuditLog.open(tmp_path / "log.sqlite", origin="fs.example/log") as log:
        log.append_many({"i": i} for i in range(3))
        log.checkpoint(Ed25519PrivateKey.generate())
        with pytest.raises(InputError, match="symlink 'tile'"):
            log.export(out)
    assert_untouched(secret_dir)


@needs_root
def test_a_link_deep_in_a_chain_of_links_is_checked_too(tmp_path: Path, secret_dir: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    hop = tmp_path / "hop"
    hop.mkdir()
    plant(hop / "inner", secret_dir)  # planted by the other user
    plant(mine / "outer", hop, uid=os.geteuid())  # the user's own link, to a shared folder
    with pytest.raises(InputError, match="symlink 'inner'"):
        write_atomic(mine / "outer" / "inner" / "x", b"data")
    assert_untouched(secret_dir)


def test_the_users_own_links_are_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "relative").symlink_to("real")
    (tmp_path / "absolute").symlink_to(real)
    (tmp_path / "to-link").symlink_to("absolute")  # a link to a link
    write_atomic(tmp_path / "relative" / "a", b"1")
    write_atomic(tmp_path / "absolute" / "sub" / "b", b"2")
    write_atomic(tmp_path / "to-link" / "sub" / ".." / "c", b"3")
    assert {p.name: p.read_bytes() for p in real.iterdir() if p.is_file()} == {
        "a": b"1",
        "c": b"3",
    }
    assert (real / "sub" / "b").read_bytes() == b"2"


def test_relative_paths_and_bad_components(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_atomic(Path("rel") / "dir" / "f", b"x")
    assert (tmp_path / "rel" / "dir" / "f").read_bytes() == b"x"
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(InputError, match="cannot write"):
        write_atomic(Path("file") / "f", b"x")  # a file where a folder should be
    with pytest.raises(FileNotFoundError):
        os.close(open_dir(tmp_path / "missing"))  # no create: nothing is made
    assert not (tmp_path / "missing").exists()
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(InputError, match="too many symbolic links"):
        write_atomic(loop / "f", b"x")


@pytest.mark.parametrize("owner", ["self", "other"])
def test_a_parent_swapped_for_a_symlink_mid_write_does_not_redirect_it(
    tmp_path: Path, secret_dir: Path, monkeypatch: pytest.MonkeyPatch, owner: str
) -> None:
    """The race: the folder is checked, then replaced by a link before the file is created
    and renamed. The write lands in the folder that was checked (now moved aside), never in
    the link's target, whoever owns the link."""
    if owner == "other" and os.geteuid() != 0:
        pytest.skip("lchown to another user needs root")
    out = tmp_path / "shared" / "out"
    out.mkdir(parents=True)
    real_token = secrets.token_hex

    def swap_then_name(n: int) -> str:
        if not (tmp_path / "shared" / "moved").exists():
            out.rename(tmp_path / "shared" / "moved")
            plant(out, secret_dir, uid=os.geteuid() if owner == "self" else OTHER_UID)
        return real_token(n)

    monkeypatch.setattr(secrets, "token_hex", swap_then_name)
    write_atomic(out / "passwd", b"new\n")
    assert_untouched(secret_dir)
    assert (tmp_path / "shared" / "moved" / "passwd").read_bytes() == b"new\n"
    assert [p.name for p in (tmp_path / "shared" / "moved").iterdir()] == ["passwd"]
