"""Our cosigned checkpoints, opened by Go's own golang.org/x/mod/sumdb/note.

Debian's golang-golang-x-mod-dev (0.7) knows note signatures of type 0x01 only: it verifies the
log's Ed25519 signature and keeps our tlog-cosignature lines (type 0x04) as unverified, as
signed-note requires of unknown keys. The cosignatures themselves are then verified by
note.Open through Go Verifiers written from the spec in ``go/open_cosigned.go``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog.log import AuditLog
from ailedger.auditlog.note import NoteVerifier
from ailedger.auditlog.witness import Witness, verify_cosigned

PROGRAM = Path(__file__).resolve().parent / "go" / "open_cosigned.go"
GOPATH = "/usr/share/gocode"
ORIGIN = "example.com/witnessed-log"


@pytest.fixture(scope="module")
def open_cosigned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    note_pkg = Path(GOPATH) / "src" / "golang.org" / "x" / "mod" / "sumdb" / "note"
    if go is None or not note_pkg.is_dir():
        message = "Go and golang-golang-x-mod-dev are not installed (see .ci/run)"
        if os.environ.get("AILEDGER_REQUIRE_GO"):
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path_factory.mktemp("go")
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": GOPATH,
        "GOCACHE": str(out / "cache"),
        "GOFLAGS": "",
    }
    binary = out / "open_cosigned"
    subprocess.run(
        [go, "build", "-o", str(binary), str(PROGRAM)],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    return binary


def cosigned_note(tmp_path: Path) -> tuple[bytes, str, list[str]]:
    """A log of 5 entries whose checkpoint two real witnesses cosigned (via add-checkpoint)."""
    log_key = Ed25519PrivateKey.generate()
    log_verifier = NoteVerifier.from_public_key(ORIGIN, log_key.public_key())
    with AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN) as log:
        log.append_many([{"decision": "approve", "n": i} for i in range(5)])
        note = log.checkpoint(log_key)
    witness_keys = []
    for n in (1, 2):
        with Witness.open(
            tmp_path / f"w{n}", {ORIGIN: [log_verifier]}, name=f"w{n}.example"
        ) as witness:
            reply = witness.add_checkpoint(b"old 0\n\n" + note)
            assert reply.status == 200, reply.body
            note += reply.body
            witness_keys.append(witness.verifier.verifier_key())
    verify_cosigned(note, witness_keys, 2)
    return note, log_verifier.verifier_key(), witness_keys


def run_go(
    binary: Path, note: bytes, tmp_path: Path, *keys: str
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "note"
    path.write_bytes(note)
    return subprocess.run(
        [str(binary), str(path), *keys], capture_output=True, text=True, timeout=60
    )


def test_go_sumdb_note_verifies_log_signature_and_cosignatures(
    open_cosigned: Path, tmp_path: Path
) -> None:
    note, log_key, witness_keys = cosigned_note(tmp_path)
    done = run_go(open_cosigned, note, tmp_path, log_key, *witness_keys)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # Go's note package does not know the cosignature/v1 algorithm byte (0x04) ...
    assert result["new_verifier_errors"] == ["unknown verifier algorithm"] * 2
    # ... verifies the log's Ed25519 signature and keeps the cosignatures as unverified ...
    assert result["log_only_verified"] == [ORIGIN]
    assert result["log_only_unverified"] == ["w1.example", "w2.example"]
    assert note.decode().startswith(result["text"])
    # ... and verifies all three through note.Open once given cosignature/v1 verifiers.
    assert result["verified"] == [ORIGIN, "w1.example", "w2.example"]
    assert result["unverified"] == []


def test_go_rejects_a_tampered_cosignature(open_cosigned: Path, tmp_path: Path) -> None:
    note, log_key, witness_keys = cosigned_note(tmp_path)
    lines = note.decode().split("\n")
    name, encoded = lines[-2].removeprefix("— ").split(" ")
    raw = bytearray(base64.b64decode(encoded))
    raw[-1] ^= 1
    lines[-2] = f"— {name} {base64.b64encode(bytes(raw)).decode()}"
    done = run_go(open_cosigned, "\n".join(lines).encode(), tmp_path, log_key, *witness_keys)
    assert done.returncode == 1
    assert "invalid signature for key w2.example" in done.stderr


def test_go_verifies_the_known_answer_vector(open_cosigned: Path, tmp_path: Path) -> None:
    kat = json.loads(
        (Path(__file__).resolve().parents[1] / "kat" / "tlog_cosignature.json").read_text("utf-8")
    )["ailedger"]
    done = run_go(
        open_cosigned,
        kat["cosigned_note"].encode(),
        tmp_path,
        kat["log_verifier_key"],
        kat["verifier_key"],
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verified"] == ["example.com/behind-the-sofa", kat["name"]]
