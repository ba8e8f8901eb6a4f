"""The workspace on disk: private from creation, tightened when loosened, relative paths, and an
``init`` that leaves either a whole workspace or nothing."""

from __future__ import annotations

import os
import stat
import tomllib
import warnings
from pathlib import Path

import pytest
import tomli_w

from ailedger.auditlog.log import AuditLog
from ailedger.errors import AiledgerError, ContractNotFound, WorkspaceError
from ailedger.workspace import InsecurePermissionsWarning, Workspace

PASSPHRASE = "workspace test"


def init(path: Path, **options: object) -> Workspace:
    return Workspace.init(path, passphrase=lambda: PASSPHRASE, unsafe_fast_kdf=True, **options)  # type: ignore[arg-type]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def tree(path: Path) -> dict[str, int]:
    """Every file and folder under ``path`` (relative name -> mode)."""
    return {str(p.relative_to(path)): mode(p) for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """A workspace made from a relative path under a permissive umask (0): its modes."""
    base = tmp_path_factory.mktemp("made")
    cwd = Path.cwd()
    old_umask = os.umask(0)
    os.chdir(base)
    try:
        ws = init(Path("rel") / "ws")
        assert ws.path == base / "rel" / "ws"
        with AuditLog.for_workspace(ws) as log:
            log.append({"ssn": "123"}, sensitive=("ssn",))
            modes = tree(ws.path)  # while the log is open: its -wal and -shm exist
    finally:
        os.umask(old_umask)
        os.chdir(cwd)
    return base / "rel" / "ws", modes


def test_folders_are_0700_and_files_0600_from_creation(made: tuple[Path, dict[str, int]]) -> None:
    path, modes = made
    assert mode(path) == 0o700
    for name in ("keys", "chain", "blobs"):
        assert modes[name] == 0o700, name
    for name in ("log.sqlite-wal", "log.sqlite-shm", "keys/log.key", "chain/chain.sqlite"):
        assert name in modes
    for name, found in modes.items():
        if (path / name).is_dir():
            assert found == 0o700, name
        else:
            assert found == (0o644 if name.endswith(".pub") else 0o600), name
    # nothing of the staging folder is left beside it
    assert sorted(p.name for p in path.parent.iterdir()) == ["ws"]


def test_relative_paths_open_the_same_workspace(
    made: tuple[Path, dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = made
    monkeypatch.chdir(path.parent.parent)
    ws = Workspace.open(Path("rel/ws"))
    assert ws.path == path
    with AuditLog.for_workspace(ws, writable=False) as log:
        assert log.show(0).private == {"ssn": "123"}


def test_loosened_modes_are_tightened_with_a_warning(made: tuple[Path, dict[str, int]]) -> None:
    path, _ = made
    loosened = [path, path / "keys", path / "config.toml", path / "log.sqlite"]
    loosened += [path / "keys" / "ethereum.json", path / "chain" / "chain.sqlite"]
    for p in loosened:
        p.chmod(0o755 if p.is_dir() else 0o644)
    with pytest.warns(InsecurePermissionsWarning, match="6 file\\(s\\) or folder\\(s\\)"):
        Workspace.open(path)
    for p in loosened:
        assert mode(p) == (0o700 if p.is_dir() else 0o600), p
    assert mode(path / "keys" / "ed25519.pub") == 0o644
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Workspace.open(path)  # nothing left to tighten: no warning


def test_a_failed_init_leaves_nothing_and_a_second_init_works(tmp_path: Path) -> None:
    path = tmp_path / "ws"
    with pytest.raises(ContractNotFound):
        init(path, anchor_registry="0x" + "12" * 20)  # fails after keys and chain were made
    assert list(tmp_path.iterdir()) == []

    calls = []

    def failing_passphrase() -> str:
        calls.append(1)
        if len(calls) > 1:  # the keystore was written; the signing key is next
            raise WorkspaceError("no more passphrase")
        return PASSPHRASE

    with pytest.raises(WorkspaceError, match="no more passphrase"):
        Workspace.init(path, passphrase=failing_passphrase, unsafe_fast_kdf=True)
    assert list(tmp_path.iterdir()) == []

    path.mkdir()  # an empty folder is fine: the new workspace replaces it
    ws = init(path)
    assert (path / "config.toml").is_file()
    assert ws.path == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws"]

    # init again with a node that does not answer: the workspace keeps its chain
    before = (path / "config.toml").read_bytes()
    config = tomllib.loads(before.decode())
    config["chain"].update(retries=1, backoff=0.01, request_timeout=1.0)
    (path / "config.toml").write_text(tomli_w.dumps(config))
    before = (path / "config.toml").read_bytes()
    with pytest.raises(AiledgerError):
        init(path, rpc="http://127.0.0.1:9")
    assert (path / "config.toml").read_bytes() == before
    assert Workspace.open(path).config["chain"]["backend"] == "embedded"


def test_init_refuses_a_folder_that_is_not_a_workspace(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(WorkspaceError, match="not an ailedger workspace"):
        init(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_fee_and_gas_settings_reach_the_ledger(tmp_path: Path) -> None:
    ws = init(tmp_path / "ws")
    config_file = ws.path / "config.toml"
    config = tomllib.loads(config_file.read_text())
    config.setdefault("chain", {}).update({"priority_fee_wei": 7, "gas_margin": 1.5})
    config_file.write_text(tomli_w.dumps(config))
    settings = Workspace.open(ws.path).settings()
    assert settings.priority_fee_wei == 7
    assert settings.gas_margin == 1.5
