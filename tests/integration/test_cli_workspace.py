"""The workspace from the command line: relative paths, private files, a failed ``init``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli import one_line_error, run


def test_relative_workspace_for_every_log_command(tmp_path: Path, env: dict[str, str]) -> None:
    # a failed init first (no contract at the given registry): nothing is left half-made
    failed = run(
        "init", "-w", "rel/ws", "--unsafe-fast-kdf", "--anchor-registry", "0x" + "12" * 20,
        env=env, cwd=tmp_path, check=1,
    )  # fmt: skip
    assert "no contract at" in one_line_error(failed)
    assert list((tmp_path / "rel").iterdir()) == []

    run("init", "-w", "rel/ws", "--unsafe-fast-kdf", env=env, cwd=tmp_path)
    ws = tmp_path / "rel" / "ws"
    (tmp_path / "records.jsonl").write_text('{"n": 1, "ssn": "123"}\n{"n": 2, "ssn": "456"}\n')
    appended = run(
        "log", "append", "records.jsonl", "-w", "rel/ws", "--sensitive", "ssn", "--json",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert json.loads(appended.stdout)["count"] == 2
    from_env = {**env, "AILEDGER_WORKSPACE": "rel/ws"}
    shown = json.loads(run("log", "show", "0", "--json", env=from_env, cwd=tmp_path).stdout)
    assert shown["private"] == {"ssn": "123"}
    run("log", "checkpoint", env=from_env, cwd=tmp_path)
    run("log", "erase", "0", env=from_env, cwd=tmp_path)
    run("log", "export", "out", "-w", "rel/ws", env=env, cwd=tmp_path)
    assert (tmp_path / "out" / "checkpoint").is_file()
    assert ws.stat().st_mode & 0o777 == 0o700
    assert (ws / "log.sqlite").stat().st_mode & 0o777 == 0o600


def test_loose_modes_are_tightened_with_a_one_line_warning(
    tmp_path: Path, env: dict[str, str]
) -> None:
    run("init", "-w", "ws", "--unsafe-fast-kdf", env=env, cwd=tmp_path)
    ws = tmp_path / "ws"
    ws.chmod(0o755)
    (ws / "log.sqlite").chmod(0o644)
    done = run("log", "key", "-w", "ws", env=env, cwd=tmp_path)
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, done.stderr
    assert "open to other users" in warnings[0]
    assert "Traceback" not in done.stderr
    assert ws.stat().st_mode & 0o777 == 0o700
    assert (ws / "log.sqlite").stat().st_mode & 0o777 == 0o600
    again = run("log", "key", "-w", "ws", env=env, cwd=tmp_path)
    assert "warning:" not in again.stderr
