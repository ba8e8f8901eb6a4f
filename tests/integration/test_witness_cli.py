"""Witnesses end to end, on loopback: `witness serve` processes, `log checkpoint`, `verify`.

The story: two organisations witness a log anchored on the operator's own (embedded) chain.
A rewritten history and a rolled back log are refused by both witnesses and never cosigned,
and a witness that restarts remembers what it cosigned.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w

from ailedger.auditlog.witness import verify_cosigned
from tests.cli import one_line_error, run
from tests.conftest import free_port, stop_process


@dataclass
class WitnessProcess:
    """An `ailedger witness serve` process this test started (and only it stops)."""

    state: Path
    name: str
    follow: str
    env: dict[str, str]
    port: int = 0
    process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def key(self) -> str:
        done = run("witness", "key", "--state", str(self.state), "--name", self.name, env=self.env)
        return done.stdout.strip()

    def start(self) -> None:
        self.port = self.port or free_port()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ailedger",
                "witness",
                "serve",
                "--state",
                str(self.state),
                "--port",
                str(self.port),
                "--follow",
                self.follow,
                "--name",
                self.name,
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"witness exited: {self.process.stderr.read()}")  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail("the witness did not start within 30 s")

    def kill(self) -> None:
        """SIGKILL: what the witness acknowledged must already be on disk."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def latest(self, origin: str) -> bytes:
        digest = hashlib.sha256(origin.encode()).hexdigest()
        url = f"{self.url}/{digest}/checkpoint"
        with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 - http to loopback
            return bytes(reply.read())


@pytest.fixture
def ws(tmp_path: Path, env: dict[str, str]) -> Path:
    path = tmp_path / "ws"
    run("init", "-w", str(path), "--unsafe-fast-kdf", env=env)
    return path


@pytest.fixture
def witnesses(ws: Path, tmp_path: Path, env: dict[str, str]) -> Iterator[list[WitnessProcess]]:
    log_key = run("log", "key", "-w", str(ws), env=env).stdout.strip()
    origin = log_key.split("+", 1)[0]
    started = [
        WitnessProcess(tmp_path / f"w{n}", f"w{n}.example", f"{origin}={log_key}", env)
        for n in (1, 2)
    ]
    try:
        for witness in started:
            witness.start()
        yield started
    finally:
        for witness in started:
            witness.stop()


def append(ws: Path, env: dict[str, str], *records: dict[str, object]) -> None:
    source = ws.parent / "records.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    run("log", "append", str(source), "-w", str(ws), env=env)


def checkpoint(
    ws: Path, env: dict[str, str], check: int | None = 0
) -> subprocess.CompletedProcess[str]:
    return run("log", "checkpoint", "-w", str(ws), env=env, check=check)


def test_two_witnesses_cosign_and_refuse_forks_and_rollbacks(
    ws: Path, witnesses: list[WitnessProcess], env: dict[str, str], tmp_path: Path
) -> None:
    w1, w2 = witnesses
    keys = [w.key() for w in witnesses]
    log_key = run("log", "key", "-w", str(ws), env=env).stdout.strip()
    origin = log_key.split("+", 1)[0]
    run("witness", "add", w1.url, keys[0], "-w", str(ws), env=env)
    added = run(
        "witness", "add", w2.url, keys[1], "--quorum", "2", "-w", str(ws), "--json", env=env
    )
    assert json.loads(added.stdout)["quorum"] == 2
    append(ws, env, *({"decision": "approve", "n": i} for i in range(3)))
    unsigned_backup = tmp_path / "backup-unsigned"
    shutil.copytree(ws, unsigned_backup)

    # both witnesses cosign the first checkpoint
    note = checkpoint(ws, env).stdout.encode()
    assert verify_cosigned(note, keys, 2).checkpoint.size == 3
    signed_backup = tmp_path / "backup-signed"
    shutil.copytree(ws, signed_backup)

    # a witness killed and restarted keeps its state: the next checkpoint extends what it saw
    w1.kill()
    w1.start()
    assert verify_cosigned(w1.latest(origin), keys[:1], 1).checkpoint.size == 3
    append(ws, env, {"decision": "deny", "n": 3}, {"decision": "deny", "n": 4})
    note = checkpoint(ws, env).stdout.encode()
    assert verify_cosigned(note, keys, 2).checkpoint.size == 5
    assert verify_cosigned(w1.latest(origin), keys[:1], 1).checkpoint.size == 5

    # the export ships the cosigned checkpoint, and `verify --witness` holds it to k of n
    export = tmp_path / "export"
    run("log", "export", str(export), "-w", str(ws), env=env)
    assert verify_cosigned((export / "checkpoint").read_bytes(), keys, 2).checkpoint.size == 5
    witness_args = ["--witness", keys[0], "--witness", keys[1], "--witness-quorum", "2"]
    report = run(
        "verify", str(export), "--key", log_key, "-w", str(ws), "--json", *witness_args, env=env
    )
    assert json.loads(report.stdout)["witnesses"] == ["w1.example", "w2.example"]

    # a rewritten history of the same size (restored backup, other entries) is refused
    append(signed_backup, env, *({"decision": "forged", "n": i} for i in range(2)))
    refused = checkpoint(signed_backup, env, check=1)
    assert "another history at size 5" in refused.stderr
    assert refused.stderr.count("refused") == 2
    assert "witness quorum not met: 0 of 2" in refused.stderr
    for witness in witnesses:
        assert witness.latest(origin).startswith(note.split(b"\n\n")[0])
    forged_export = tmp_path / "forged"
    run("log", "export", str(forged_export), "-w", str(signed_backup), env=env)
    failed = run(
        "verify",
        str(forged_export),
        "--key",
        log_key,
        "-w",
        str(signed_backup),
        *witness_args,
        env=env,
        check=1,
    )
    assert "0 of the trusted witnesses, 2 required" in one_line_error(failed)
    # ... and one witness is not enough when two are required
    one = run(
        "verify",
        str(export),
        "--key",
        log_key,
        "-w",
        str(ws),
        "--witness",
        keys[0],
        "--witness-quorum",
        "2",
        env=env,
        check=2,
    )
    assert "quorum" in one_line_error(one)

    # a rollback to a smaller size is refused
    rolled = checkpoint(unsigned_backup, env, check=1)
    assert rolled.stderr.count("rolled back") == 2
    for witness in witnesses:
        assert verify_cosigned(witness.latest(origin), keys, 1).checkpoint.size == 5


def test_unreachable_witness_fails_the_quorum_with_one_line_each(
    ws: Path, env: dict[str, str], tmp_path: Path
) -> None:
    away = WitnessProcess(tmp_path / "away", "away.example", "", env, port=free_port())
    key = away.key()
    run("witness", "add", away.url, key, "-w", str(ws), env=env)
    append(ws, env, {"decision": "approve"})
    done = checkpoint(ws, env, check=1)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith(f"witness away.example ({away.url}) is unreachable")
    assert lines[1] == "error: witness quorum not met: 0 of 1 witnesses cosigned, 1 required"
    assert "Traceback" not in done.stderr
    # the signed checkpoint is kept: once the witness is back, it gets cosigned
    log_key = run("log", "key", "-w", str(ws), env=env).stdout.strip()
    away.follow = f"{log_key.split('+', 1)[0]}={log_key}"
    away.start()
    try:
        note = checkpoint(ws, env).stdout.encode()
    finally:
        away.stop()
    assert verify_cosigned(note, [key], 1).checkpoint.size == 1
    # what a hostile witness answers is printed as text, never interpreted (rich markup)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Rude)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        rude_key = WitnessProcess(tmp_path / "rude", "rude.example", "", env).key()
        run(
            "witness",
            "add",
            f"http://127.0.0.1:{server.server_address[1]}",
            rude_key,
            "-w",
            str(ws),
            env=env,
        )
        done = checkpoint(ws, env, check=1)
    finally:
        server.shutdown()
        server.server_close()
    assert "Traceback" not in done.stderr
    assert "refused: HTTP 400: [/bold] no [link=x]" in done.stderr
    assert "1 of 2 witnesses cosigned, 2 required" in done.stderr


class _Rude(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = b"[/bold] no [link=x]\n"
        self.send_response(400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_witness_add_refuses_bad_input(ws: Path, env: dict[str, str], tmp_path: Path) -> None:
    witness_key = WitnessProcess(tmp_path / "w", "w.example", "", env).key()
    log_key = run("log", "key", "-w", str(ws), env=env).stdout.strip()
    before = (ws / "config.toml").read_bytes()
    for url, key, message in [
        ("http://127.0.0.1:1", log_key, "not a witness key"),
        ("ftp://127.0.0.1/", witness_key, "http(s)"),
        ("http://127.0.0.1:99999/", witness_key, "Port out of range"),
        ("http://127.0.0.1:1", "nonsense", "form"),
    ]:
        done = run("witness", "add", url, key, "-w", str(ws), env=env, check=2)
        assert message in one_line_error(done)
    assert (ws / "config.toml").read_bytes() == before
    # a hand-edited, broken [witness] table is one line and exit 2
    config = tomllib.loads(before.decode())
    for broken in ({"servers": "w"}, {"servers": [{"url": "http://x"}]}, {"quorum": 3}):
        config["witness"] = broken
        (ws / "config.toml").write_text(tomli_w.dumps(config))
        done = run("log", "checkpoint", "-w", str(ws), env=env, check=2)
        assert "[witness]" in one_line_error(done)


def test_witness_serve_refuses_bad_follow_and_busy_state(
    tmp_path: Path, env: dict[str, str]
) -> None:
    done = run(
        "witness", "serve", "--state", str(tmp_path / "s"), "--follow", "nokey", env=env, check=2
    )
    assert "ORIGIN=VERIFIER_KEY" in one_line_error(done)
    done = run(
        "witness", "serve", "--state", str(tmp_path / "s"), "--follow", "a=b+c+d", env=env, check=2
    )
    one_line_error(done)
