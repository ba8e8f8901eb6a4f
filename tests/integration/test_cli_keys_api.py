"""``ailedger keys api``: create, list and revoke API keys while another process serves them.

The test's own process stands in for ``ailedger serve``: it holds the audit log's write lock
and an open :class:`ApiKeys` store and checks tokens, while ``create`` and ``revoke`` run as
processes of their own. The CLI must work beside it, and the holder must see a new key and a
revocation within about a second.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import one_line_error, run


def run_here(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str, check: int = 0
) -> subprocess.CompletedProcess[str]:
    """``ailedger ARGS`` through the same entry point, in this process."""
    from ailedger.cli import main

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["ailedger", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert code == check, (code, out, err)
    return subprocess.CompletedProcess(args, code, out, err)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    from ailedger.workspace import Workspace

    path = tmp_path_factory.mktemp("keys-api") / "ws"
    Workspace.init(path, passphrase=lambda: "pw", unsafe_fast_kdf=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AILEDGER_")}
    env["AILEDGER_WORKSPACE"] = str(path)
    return path, env


class Holder:
    """The stand-in for the service, in this test's process: it holds the log's write lock
    and an open key store, as ``serve`` does, while the CLI runs in processes of its own."""

    def __init__(self, workspace: Path) -> None:
        from ailedger.auditlog import AuditLog
        from ailedger.service.auth import ApiKeys
        from ailedger.workspace import Workspace

        ws = Workspace.open(workspace)
        self.log = AuditLog.for_workspace(ws)
        self.keys = ApiKeys.for_workspace(ws)  # the service's refresh interval (0.1 s)
        self.keys.list()

    def ask(self, token: str) -> str:
        key = self.keys.check(token)
        return "no" if key is None else f"ok {key.id}"

    def wait_for(self, token: str, answer: str, *, within: float) -> float:
        """Seconds until ``token`` gets ``answer``; fails after ``within`` seconds."""
        start = time.monotonic()
        while True:
            got = self.ask(token)
            elapsed = time.monotonic() - start
            if got == answer:
                return elapsed
            assert elapsed < within, f"still {got!r} after {elapsed:.2f} s"
            time.sleep(0.01)

    def close(self) -> None:
        self.keys.close()
        self.log.close()


@pytest.fixture
def holder(workspace: tuple[Path, dict[str, str]]) -> Iterator[Holder]:
    made = Holder(workspace[0])
    yield made
    made.close()


def log_is_locked(path: Path) -> bool:
    fd = os.open(path / "log.sqlite.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_create_list_revoke_beside_a_running_holder(
    workspace: tuple[Path, dict[str, str]],
    holder: Holder,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, env = workspace
    monkeypatch.setenv("AILEDGER_WORKSPACE", str(path))
    assert log_is_locked(path)  # the holder has the log, as `serve` would

    created = run("keys", "api", "create", "--scope", "append", "-s", "read", "--json", env=env)
    doc = json.loads(created.stdout)
    assert set(doc) == {"id", "token"}
    key_id, token = doc["id"], doc["token"]
    assert re.fullmatch(rf"ailedger_{key_id}_[0-9a-f]{{64}}", token)
    assert holder.wait_for(token, f"ok {key_id}", within=1.5) < 1.5
    assert holder.ask(token[:-1] + ("0" if token[-1] != "0" else "1")) == "no"

    text = run_here(
        capsys, monkeypatch, "keys", "api", "create", "-s", "admin", "--name", "ops team"
    )
    admin_token = text.stdout.strip()
    assert re.fullmatch(r"ailedger_[0-9a-f]{16}_[0-9a-f]{64}", admin_token)
    assert "shown only this once" in text.stderr and admin_token not in text.stderr

    listed = json.loads(run_here(capsys, monkeypatch, "keys", "api", "list", "--json").stdout)[
        "keys"
    ]
    by_id = {k["id"]: k for k in listed}
    assert by_id[key_id]["scopes"] == ["append", "read"] and by_id[key_id]["revoked"] is None
    admin_id = admin_token.split("_")[1]
    assert by_id[admin_id]["name"] == "ops team" and by_id[admin_id]["scopes"] == ["admin"]
    assert all(set(k) == {"id", "name", "scopes", "created", "revoked"} for k in listed)
    people = run_here(capsys, monkeypatch, "keys", "api", "list")
    for shown in (json.dumps(listed), people.stdout, people.stderr):
        assert token.split("_")[2] not in shown and admin_token.split("_")[2] not in shown
    assert key_id in people.stdout and "ops team" in people.stdout

    revoked = run("keys", "api", "revoke", key_id, "--json", env=env)
    assert json.loads(revoked.stdout) == {"id": key_id, "revoked": True}
    seen_after = holder.wait_for(token, "no", within=1.5)
    assert seen_after < 1.5
    assert holder.ask(admin_token) == f"ok {admin_id}"  # the other key still works
    after = json.loads(run_here(capsys, monkeypatch, "keys", "api", "list", "--json").stdout)[
        "keys"
    ]
    assert {k["id"]: k["revoked"] for k in after}[key_id] is not None
    assert log_is_locked(path)


def test_bad_input_is_one_line_and_the_right_exit_code(
    workspace: tuple[Path, dict[str, str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, _ = workspace
    monkeypatch.setenv("AILEDGER_WORKSPACE", str(path))

    def listed() -> str:
        return run_here(capsys, monkeypatch, "keys", "api", "list", "--json").stdout

    before = listed()
    bad_scope = run_here(capsys, monkeypatch, "keys", "api", "create", "-s", "write", check=2)
    assert "'write' is not one of 'append', 'read', 'admin'" in one_line_error(bad_scope)
    assert bad_scope.stdout == ""
    no_scope = run_here(capsys, monkeypatch, "keys", "api", "create", check=2)
    assert "--scope" in one_line_error(no_scope)
    missing = run_here(capsys, monkeypatch, "keys", "api", "revoke", "0123456789abcdef", check=1)
    assert "no API key 0123456789abcdef" in one_line_error(missing)
    malformed = run_here(capsys, monkeypatch, "keys", "api", "revoke", "../../etc", check=2)
    assert "not an API key id" in one_line_error(malformed)
    long_name = run_here(
        capsys, monkeypatch, "keys", "api", "create", "-s", "read", "--name", "x" * 200, check=2
    )
    assert "at most 100 characters" in one_line_error(long_name)
    assert listed() == before  # nothing was added
