"""`ailedger log ...` and `ailedger verify` in separate processes, on the embedded chain."""

from __future__ import annotations

import functools
import http.server
import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ailedger.auditlog import _merkle
from tests.cli import one_line_error, run


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
        ("[1, 2]\n", "line 1: the record is not a JSON object"),
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


# -- log append: streamed, all or nothing; bad input of every kind is one line -------------------


def test_append_is_all_or_nothing_and_names_the_failing_line(ws: Path, env: dict[str, str]) -> None:
    lines = [json.dumps({"i": i}) + "\n" for i in range(10_000)]
    lines[9_000] = json.dumps({"i": 9_000, "pad": "x" * 70_000}) + "\n"  # line 9,001
    source = ws.parent / "records.jsonl"
    source.write_text("".join(lines))
    done = run("log", "append", str(source), "-w", str(ws), env=env, check=2)
    line = one_line_error(done)
    assert f"{source} line 9001: a log entry is at most 65535 bytes" in line
    assert line.endswith("(nothing was appended)")
    # before: 8,192 records were committed, and re-running duplicated them
    assert "(size 0)" in one_line_error(run("log", "show", "0", "-w", str(ws), env=env, check=2))
    lines[9_000] = json.dumps({"i": 9_000}) + "\n"
    source.write_text("".join(lines))
    done = run("log", "append", str(source), "-w", str(ws), "--json", env=env)
    assert json.loads(done.stdout) == {"first": 0, "count": 10_000, "size": 10_000}
    shown = json.loads(run("log", "show", "9999", "-w", str(ws), "--json", env=env).stdout)
    assert shown["record"] == {"i": 9_999}


def test_append_reads_json_lines_exactly(ws: Path, env: dict[str, str]) -> None:
    source = ws.parent / "records.jsonl"
    # U+2028 and U+0085 are legal inside JSON strings; only \n ends a record
    source.write_bytes('{"a": "x\u2028y\u0085z"}\n\n{"b": 1}\n{"c": 1, "c": 2}\n'.encode())
    done = run("log", "append", str(source), "-w", str(ws), env=env, check=2)
    assert "records.jsonl line 4: duplicate key 'c'" in one_line_error(done)
    source.write_bytes(b'{"a": 1}\n{"b": "\xff"}\n')
    done = run("log", "append", str(source), "-w", str(ws), env=env, check=2)
    assert "records.jsonl line 2: not UTF-8" in one_line_error(done)
    piped = subprocess.run(
        [sys.executable, "-m", "ailedger", "log", "append", "-", "-w", str(ws), "--json"],
        input='{"a": "x\u2028y\u0085z"}\n\n{"b": 1}\n'.encode(),
        capture_output=True,
        env=env,
        timeout=120,
        check=True,
    )
    assert json.loads(piped.stdout) == {"first": 0, "count": 2, "size": 2}
    shown = json.loads(run("log", "show", "0", "-w", str(ws), "--json", env=env).stdout)
    assert shown["record"] == {"a": "x\u2028y\u0085z"}


def test_bad_arguments_are_one_line_exit_2(ws: Path, env: dict[str, str]) -> None:
    append(ws, env, '{"ssn": "1", "n": 1}\n')
    source = ws.parent / "records.jsonl"
    twice = run(
        "log", "append", str(source), "-s", "ssn", "-s", "ssn", "-w", str(ws), env=env, check=2
    )
    assert "--sensitive 'ssn' is given twice" in one_line_error(twice)
    for command in ("show", "proof", "erase"):
        for index in (str(2**64), "1"):
            done = run("log", command, index, "-w", str(ws), env=env, check=2)
            assert f"the log has no entry {index} (size 1)" in one_line_error(done)


def test_stored_entry_of_the_wrong_type_exits_1(ws: Path, env: dict[str, str]) -> None:
    append(ws, env, "".join(json.dumps({"i": i}) + "\n" for i in range(3)))
    with sqlite3.connect(ws / "log.sqlite") as raw:
        raw.execute("UPDATE entries SET data = 'written as text' WHERE idx = 1")
    raw.close()
    done = run("log", "show", "1", "-w", str(ws), env=env, check=1)
    assert "entry 1 is stored as TEXT, not bytes" in one_line_error(done)
    with sqlite3.connect(ws / "log.sqlite") as raw:
        raw.execute("UPDATE entries SET data = x'7b7b' WHERE idx = 1")
    raw.close()
    done = run("log", "show", "1", "-w", str(ws), env=env, check=1)
    assert "the stored entry 1: not JSON" in one_line_error(done)


def test_proof_is_checked_before_it_is_handed_out(ws: Path, env: dict[str, str]) -> None:
    append(ws, env, "".join(json.dumps({"i": i}) + "\n" for i in range(300)))
    run("log", "checkpoint", "-w", str(ws), env=env)
    with sqlite3.connect(ws / "log.sqlite") as raw:
        (data,) = raw.execute("SELECT data FROM tiles WHERE level = 0 AND idx = 0").fetchone()
        damaged = bytearray(data)
        damaged[4 * 32] ^= 1  # the hash of leaf 4, the sibling of leaf 5
        raw.execute("UPDATE tiles SET data = ? WHERE level = 0 AND idx = 0", (bytes(damaged),))
    raw.close()
    out = ws.parent / "receipt"
    done = run("log", "proof", "5", "--out", str(out), "-w", str(ws), env=env, check=1)
    assert "inclusion proof root (leaf 5, size 300) mismatch" in one_line_error(done)
    assert done.stdout == ""
    assert not out.exists()
    run("log", "proof", "200", "-w", str(ws), env=env)  # a path the damage does not touch


BROKEN_CONFIGS = [
    (("[chain]\n", "[chain]\nretries = 'five'\n"), "chain.retries must be an integer"),
    (("[chain]\n", "[chain]\nretries = 1.5\n"), "chain.retries must be an integer"),
    (("[chain]\n", "[chain]\nlock_timeout = -1\n"), "chain.lock_timeout must be above 0"),
    (("[chain]\n", "[chain]\nrpc = 'http://127.0.0.1:99999'\n"), "chain.rpc is refused"),
    (('backend = "embedded"', "backend = 5"), "chain.backend must be a string"),
    (('origin = "', 'origin = 7\nx = "'), "log.origin must be a string"),
    (("[chain]\n", "[chain\n"), "is not valid TOML: Expected ']'"),
]


def test_broken_config_is_one_line_exit_2_naming_the_key(ws: Path, env: dict[str, str]) -> None:
    config = ws / "config.toml"
    good = config.read_text()
    for (old, new), message in BROKEN_CONFIGS:
        assert old in good
        config.write_text(good.replace(old, new, 1))
        done = run("log", "show", "0", "-w", str(ws), env=env, check=2)
        assert message in one_line_error(done)
    config.write_bytes(good.encode() + b"# \xff\n")
    done = run("log", "show", "0", "-w", str(ws), env=env, check=2)
    assert "config.toml is not UTF-8" in one_line_error(done)
