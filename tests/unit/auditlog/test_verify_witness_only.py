"""`ailedger verify EXPORT --key K --witness W`: witnesses as the only outside evidence.

No chain, no workspace: the export is checked against the log's key and the witnesses'
cosignatures; with neither a chain nor witnesses the result says plainly that anchors went
unchecked.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog.checkpoint import Checkpoint
from ailedger.auditlog.log import AuditLog
from ailedger.auditlog.witness import WitnessVerifier, cosign, verify_cosigned
from ailedger.cli import main

ORIGIN = "witness-only.example/log"


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


Run = Callable[..., Done]


def make_export(
    folder: Path,
    log_key: Ed25519PrivateKey,
    records: list[dict[str, int]],
    witnesses: list[tuple[str, Ed25519PrivateKey]],
) -> tuple[str, bytes]:
    """A log of ``records`` signed by ``log_key``, cosigned by ``witnesses``, exported to
    ``folder``; returns the log's verifier key and the cosigned checkpoint."""
    with AuditLog.open(folder.with_suffix(".sqlite"), origin=ORIGIN) as log:
        log.append_many(records)
        note = log.checkpoint(log_key)
        text = note.decode().split("\n\n", 1)[0] + "\n"
        checkpoint = Checkpoint.parse(text)
        lines = [cosign(checkpoint, name, key, timestamp=1_700_000_000) for name, key in witnesses]
        cosigned = log.add_cosignatures(checkpoint.size, lines)
        log.export(folder)
        return log.verifier_key(log_key.public_key()), cosigned


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """The CLI's entry point in this process, as an auditor without any workspace runs it
    (none in the environment, none in the current folder)."""
    import os

    for name in [k for k in os.environ if k.startswith("AILEDGER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AILEDGER_WORKSPACE", str(tmp_path / "no-workspace"))
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str) -> Done:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["ailedger", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return Done(code, out, err)

    return invoke


W1 = ("w1.example/witness", Ed25519PrivateKey.generate())
W2 = ("w2.example/witness", Ed25519PrivateKey.generate())


def wkey(witness: tuple[str, Ed25519PrivateKey]) -> str:
    return WitnessVerifier.from_public_key(witness[0], witness[1].public_key()).verifier_key()


def test_witnesses_alone_verify_an_export_without_any_chain(tmp_path: Path, run: Run) -> None:
    log_key = Ed25519PrivateKey.generate()
    vkey, note = make_export(tmp_path / "export", log_key, [{"i": i} for i in range(300)], [W1])
    # the cosigned note holds up on its own, independently of the CLI
    assert verify_cosigned(note, [wkey(W1)], 1).checkpoint.size == 300
    done = run("verify", str(tmp_path / "export"), "--key", vkey, "--witness", wkey(W1), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["size"] == 300 and doc["ok"] is True
    assert doc["witnesses"] == [W1[0]] and doc["witnesses_checked"] is True
    assert doc["anchors_checked"] is False and doc["anchors_trust"] == "unchecked"
    assert doc["anchoring"] is None
    assert not (tmp_path / "no-workspace").exists()  # no workspace was made to find a chain
    text = run("verify", str(tmp_path / "export"), "--key", vkey, "--witness", wkey(W1))
    assert text.returncode == 0, text.stderr
    assert "anchors unchecked" in text.stdout and "cosigned by 1 witness" in text.stdout
    assert "warning" not in text.stderr


def test_witness_quorum_and_wrong_witness_fail_with_exit_1(tmp_path: Path, run: Run) -> None:
    log_key = Ed25519PrivateKey.generate()
    vkey, _ = make_export(tmp_path / "export", log_key, [{"i": 1}, {"i": 2}], [W1])
    base = ["verify", str(tmp_path / "export"), "--key", vkey]
    short = run(*base, "--witness", wkey(W1), "--witness", wkey(W2), "--witness-quorum", "2")
    assert short.returncode == 1, short.stderr
    assert "Traceback" not in short.stderr and short.stderr.startswith("error: ")
    stranger = run(*base, "--witness", wkey(W2))
    assert stranger.returncode == 1, stranger.stderr
    # one of two suffices when the quorum is one
    either = run(
        *base, "--witness", wkey(W1), "--witness", wkey(W2), "--witness-quorum", "1", "--json"
    )
    assert either.returncode == 0, either.stderr
    assert json.loads(either.stdout)["witnesses"] == [W1[0]]


def test_a_rewritten_history_resigned_by_the_operator_fails_the_witnesses(
    tmp_path: Path, run: Run
) -> None:
    """The operator holds the log key, so it can re-sign anything; it cannot make the witness
    cosign the rewrite, and moving the old cosignature onto the new checkpoint does not verify."""
    log_key = Ed25519PrivateKey.generate()
    _, honest = make_export(tmp_path / "honest", log_key, [{"i": 1}, {"i": 2}], [W1])
    vkey, _ = make_export(tmp_path / "rewritten", log_key, [{"i": 1}, {"i": 666}], [])
    rewritten = tmp_path / "rewritten" / "checkpoint"
    moved = rewritten.read_bytes() + honest.split(b"\n\n", 1)[1].split(b"\n", 1)[1]
    rewritten.write_bytes(moved)
    done = run("verify", str(tmp_path / "rewritten"), "--key", vkey, "--witness", wkey(W1))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    # without witnesses the same export passes, and the output says why that means little
    bare = run("verify", str(tmp_path / "rewritten"), "--key", vkey)
    assert bare.returncode == 0, bare.stderr
    assert "anchors unchecked" in bare.stdout  # the result
    assert "neither a chain nor witnesses were checked" in bare.stderr  # a warning


def test_no_chain_and_no_witness_reports_what_was_not_checked(tmp_path: Path, run: Run) -> None:
    log_key = Ed25519PrivateKey.generate()
    vkey, _ = make_export(tmp_path / "export", log_key, [{"i": 1}], [])
    done = run("verify", str(tmp_path / "export"), "--key", vkey, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["anchors_checked"], doc["anchors_trust"], doc["witnesses_checked"]) == (
        False,
        "unchecked",
        False,
    )
    # asking for the operator's anchors without a chain is a usage error, not a silent skip
    pinned = run("verify", str(tmp_path / "export"), "--key", vkey, "--operator", "0x" + "11" * 20)
    assert pinned.returncode == 2, pinned.stderr
    assert "need a chain" in pinned.stderr
