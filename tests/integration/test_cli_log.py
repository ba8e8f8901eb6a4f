"""`ailedger log ...` and `ailedger verify` in separate processes, on the embedded chain."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ailedger.auditlog import _merkle
from tests.integration.test_cli import one_line_error, run


@pytest.fixture
def ws(tmp_path: Path, env: dict[str, str]) -> Path:
    path = tmp_path / "ws"
    run("init", "-w", str(path), "--unsafe-fast-kdf", env=env)
    return path


def append(ws: Path, env: dict[str, str], text: str, *extra: str) -> dict[str, int]:
    source = ws.parent / "records.jsonl"
    source.write_text(text)
    done = run("log", "append", str(source), "-w", str(ws), "--json", *extra, env=env)
    return dict(json.loads(done.stdout))


def test_append_show_proof_export_anchor_verify(ws: Path, env: dict[str, str]) -> None:
    first = append(ws, env, '{"decision": "approve", "applicant": "A-17"}\n')
    assert first == {"first": 0, "count": 1, "size": 1}
    lines = "".join(
        json.dumps({"decision": "deny", "n": i, "ssn": f"{i:09d}"}) + "\n" for i in range(300)
    )
    assert append(ws, env, lines, "--sensitive", "ssn")["size"] == 301
    shown = json.loads(run("log", "show", "5", "-w", str(ws), "--json", env=env).stdout)
    assert shown["private"] == {"ssn": "000000004"}
    assert "000000004" not in json.dumps(shown["record"])
    proof = run("log", "proof", "5", "-w", str(ws), env=env).stdout
    assert proof.startswith("c2sp.org/tlog-proof@v1\nindex 5\n")
    anchored = json.loads(run("log", "anchor", "-w", str(ws), "--json", env=env).stdout)
    assert anchored["anchored"]["size"] == 301
    assert anchored["anchored"]["status"] == "final"
    export = ws.parent / "export"
    run("log", "export", str(export), "-w", str(ws), env=env)
    assert (export / "checkpoint").read_text().startswith("ailedger.local/log/")
    key = run("log", "key", "-w", str(ws), env=env).stdout.strip()
    assert key.startswith("ailedger.local/log/")
    assert len(key.split("+", 2)) == 3
    report = json.loads(
        run("verify", str(export), "--key", key, "-w", str(ws), "--json", env=env).stdout
    )
    assert (report["ok"], report["size"], report["anchors"]) == (True, 301, 1)
    # the receipt verifies on its own, against the entry's bytes
    (ws.parent / "receipt").write_text(proof)
    bundle = _merkle.decode_entry_bundle((export / "tile/entries/000").read_bytes())
    (ws.parent / "entry").write_bytes(bundle[5])
    checked = run(
        "verify",
        str(export),
        "--key",
        key,
        "-w",
        str(ws),
        "--json",
        "--receipt",
        f"{ws.parent / 'receipt'}={ws.parent / 'entry'}",
        "--entry",
        f"5={ws.parent / 'entry'}",
        env=env,
    )
    assert json.loads(checked.stdout)["receipts_checked"] == 1
    # the operator's own check, deep
    deep = json.loads(run("verify", "-w", str(ws), "--deep", "--json", env=env).stdout)
    assert deep["size"] == 301


def test_erase_keeps_every_proof(ws: Path, env: dict[str, str]) -> None:
    append(ws, env, '{"patient": "P-1", "note": "secret"}\n', "-s", "note")
    run("log", "anchor", "-w", str(ws), env=env)
    erased = json.loads(run("log", "erase", "0", "-w", str(ws), "--json", env=env).stdout)
    assert erased == {"index": 0, "erased": True}
    shown = json.loads(run("log", "show", "0", "-w", str(ws), "--json", env=env).stdout)
    assert shown["private"] == {"note": None}
    run("verify", "-w", str(ws), "--deep", env=env)


def test_tampered_export_exits_1_naming_the_entry(ws: Path, env: dict[str, str]) -> None:
    append(ws, env, "".join(json.dumps({"i": i}) + "\n" for i in range(40)))
    run("log", "anchor", "-w", str(ws), env=env)
    export = ws.parent / "export"
    run("log", "export", str(export), "-w", str(ws), env=env)
    bundle_path = export / "tile/entries/000.p/40"
    entries = _merkle.decode_entry_bundle(bundle_path.read_bytes())
    entries[12] = b'{"i":1200}'
    bundle_path.write_bytes(_merkle.encode_entry_bundle(entries))
    key = run("log", "key", "-w", str(ws), env=env).stdout.strip()
    done = run("verify", str(export), "--key", key, "-w", str(ws), env=env, check=1)
    assert "entry 12" in one_line_error(done)


def test_wrong_key_is_refused(ws: Path, env: dict[str, str], tmp_path: Path) -> None:
    append(ws, env, '{"i": 1}\n')
    export = tmp_path / "export"
    run("log", "export", str(export), "-w", str(ws), env=env)
    other = tmp_path / "other"
    run("init", "-w", str(other), "--unsafe-fast-kdf", env=env)
    wrong = run("log", "key", "-w", str(other), env=env).stdout.strip()
    done = run("verify", str(export), "--key", wrong, "-w", str(ws), env=env, check=1)
    assert "checkpoint" in one_line_error(done)
    bad = run("verify", str(export), "--key", "not-a-key", "-w", str(ws), env=env, check=2)
    one_line_error(bad)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_verify_over_http(ws: Path, env: dict[str, str], served: tuple[Path, str]) -> None:
    root, url = served
    append(ws, env, "".join(json.dumps({"i": i}) + "\n" for i in range(600)))
    run("log", "anchor", "-w", str(ws), env=env)
    run("log", "export", str(root), "-w", str(ws), env=env)
    key = run("log", "key", "-w", str(ws), env=env).stdout.strip()
    report = json.loads(run("verify", url, "--key", key, "-w", str(ws), "--json", env=env).stdout)
    assert report["size"] == 600
    (root / "tile/entries/001").unlink()
    done = run("verify", url, "--key", key, "-w", str(ws), env=env, check=1)
    assert "entries 256..511" in one_line_error(done)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]\n", "record 1 is not a JSON object"),
        ("{not json}\n", "not JSON"),
        ("", "no record given"),
    ],
)
def test_bad_records_exit_2(ws: Path, env: dict[str, str], text: str, message: str) -> None:
    source = ws.parent / "bad.jsonl"
    source.write_text(text)
    done = run("log", "append", str(source), "-w", str(ws), env=env, check=2)
    assert message in one_line_error(done)
    shown = run("log", "show", "0", "-w", str(ws), env=env, check=2)
    assert "no entry 0" in one_line_error(shown)
