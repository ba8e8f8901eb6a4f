"""Round-2 probes P07s, C08, C01 and W03b through the `ailedger` entry point, embedded chain.

P07s: an honest export of size 5, verified after the operator anchored size 6, was called
"truncated or rolled back". C08: `init` in a folder it cannot create gave an internal error.
C01: `log show ١` showed entry 1. W03b: one witness key could be configured under two names.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog.witness import WitnessVerifier
from ailedger.cli import main


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def one_line_error(done: Done) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def env() -> Iterator[None]:
    """The CLI's entry point runs in this process (fast), with a passphrase and no workspace
    from the environment."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [k for k in os.environ if k.startswith("AILEDGER_")]:
            patch.delenv(name)
        patch.setenv("AILEDGER_PASSPHRASE", "correct horse battery staple")
        yield


def run(*args: str, env: None, check: int | None = 0) -> Done:
    """``ailedger ARGS`` through :func:`ailedger.cli.main`, as the console script runs it."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["ailedger", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = int(exc.code or 0)
    finally:
        sys.argv = argv
    done = Done(code, out.getvalue(), err.getvalue())
    if check is not None:
        assert done.returncode == check, done
    return done


@pytest.fixture(scope="module")
def stale(tmp_path_factory: pytest.TempPathFactory, env: None) -> dict[str, str]:
    """A workspace whose export ``old`` (size 5) predates its second anchor (size 6)."""
    root = tmp_path_factory.mktemp("round2")
    ws = str(root / "ws")
    run("init", "-w", ws, "--unsafe-fast-kdf", env=env)
    (root / "five.jsonl").write_text("".join(json.dumps({"i": i}) + "\n" for i in range(5)))
    (root / "six.jsonl").write_text(json.dumps({"i": 5}) + "\n")
    run("log", "append", str(root / "five.jsonl"), "-w", ws, env=env)
    run("log", "anchor", "-w", ws, env=env)
    run("log", "export", str(root / "old"), "-w", ws, env=env)
    run("log", "append", str(root / "six.jsonl"), "-w", ws, env=env)
    run("log", "anchor", "-w", ws, env=env)
    key = run("log", "key", "-w", ws, env=env).stdout.strip()
    return {"ws": ws, "old": str(root / "old"), "key": key, "root": str(root)}


def test_p07s_an_older_export_is_older_not_truncated(stale: dict[str, str], env: None) -> None:
    base = ["verify", stale["old"], "--key", stale["key"], "-w", stale["ws"]]
    done = run(*base, env=env, check=1)
    line = one_line_error(done)
    # not an accusation: what holds first, then that it is older, then both explanations
    assert line.startswith("error: this export (size 5) is consistent in itself")
    assert "older than the operator's anchor #1 (size 6" in line
    assert "it is an outdated copy, or the log was truncated" in line
    accepted = run(*base, "--allow-older", "--json", env=env)
    doc = json.loads(accepted.stdout)
    assert doc["size"] == 5 and doc["anchors"] == 1
    assert [a["size"] for a in doc["newer_anchors_unchecked"]] == [6]
    text = run(*base, "--allow-older", env=env)
    assert "warning: this export is older than 1 anchor(s)" in text.stderr


def test_c01_a_non_ascii_index_shows_nothing(stale: dict[str, str], env: None) -> None:
    done = run("log", "show", "١", "-w", stale["ws"], env=env, check=2)
    assert "not an integer in ASCII digits" in one_line_error(done)
    assert done.stdout == ""
    shown = run("log", "show", "1", "-w", stale["ws"], "--json", env=env)
    assert json.loads(shown.stdout)["index"] == 1


def test_w03b_one_witness_key_is_not_added_under_a_second_name(
    stale: dict[str, str], env: None
) -> None:
    key = Ed25519PrivateKey.generate().public_key()
    first = WitnessVerifier.from_public_key("w1.example/witness", key).verifier_key()
    alias = WitnessVerifier.from_public_key("evil.example/w", key).verifier_key()
    run("witness", "add", "http://127.0.0.1:1/w", first, "-w", stale["ws"], env=env)
    done = run("witness", "add", "http://127.0.0.1:2/w", alias, "-w", stale["ws"], env=env, check=2)
    assert "already configured as w1.example/witness" in one_line_error(done)


@pytest.mark.parametrize("where", ["/proc/self/nope", "FILE/ws", "FILE/deeper/ws"])
def test_c08_init_where_nothing_can_be_made_is_one_line_exit_2(
    where: str, tmp_path: Path, env: None
) -> None:
    (tmp_path / "file").write_text("not a folder")
    path = where.replace("FILE", str(tmp_path / "file"))
    done = run("init", "-w", path, "--unsafe-fast-kdf", env=env, check=2)
    assert "cannot create the workspace" in one_line_error(done)
    assert not Path(path).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no half workspace
