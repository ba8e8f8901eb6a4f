"""The CLI behaves as git, cosign and rekor-cli do (issue 12, item 5; STYLE.md, "CLI").

Results on stdout (text for people, or JSON with --json), progress and diagnostics on stderr;
global options before or after the command; exit codes as the README says; Ctrl-C is one
line and 130; ``log show`` asks for the passphrase; ``log search`` and ``log info``; lock waits
and node retries are progress on stderr. Commands run through the CLI's entry point in this
process (quick), and in their own OS process where a signal or a terminal is the point; all
on the embedded chain.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ailedger.cli._common import Ticker, on_sigint, progress, reset_interrupt
from ailedger.ledger._embedded import EmbeddedChain
from tests.cli import run
from tests.conftest import free_port
from tests.integration.test_cli import set_chain_options
from tests.integration.test_consortium import cli, one_line

PASSPHRASE = "correct horse battery staple"
RECORDS = [
    {"actor": "alice", "model": "sha256:" + "ab" * 32, "time": "2026-11-30T10:00:00Z",
     "fields": {"task": 3}, "output": 1, "ssn": "123-45-6789"},
    {"actor": "bob", "model": "sha256:" + "cd" * 32, "time": "2026-12-01T09:00:00+00:00",
     "fields": {"task": 4}, "output": "1", "ssn": "987-65-4321"},
    {"actor": "alice", "model": "sha256:" + "cd" * 32, "time": "2026-12-02T00:00:00Z",
     "fields": {"task": 3}, "output": True, "ssn": "555-55-5555"},
]  # fmt: skip


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AILEDGER_")}


@pytest.fixture(autouse=True)
def _cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [k for k in os.environ if k.startswith("AILEDGER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AILEDGER_PASSPHRASE", PASSPHRASE)
    monkeypatch.chdir(tmp_path)  # no ./.ailedger from elsewhere


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded workspace whose log holds RECORDS (``ssn`` committed, not logged)."""
    path = tmp_path_factory.mktemp("conventions") / "ws"
    records = path.parent / "records.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    env = {**_clean_env(), "AILEDGER_PASSPHRASE": PASSPHRASE}
    run("init", "-w", str(path), "--unsafe-fast-kdf", env=env)
    run("log", "append", str(records), "-s", "ssn", "-w", str(path), env=env)
    return path


def test_results_go_to_stdout_without_json(
    ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, err = cli(capsys, "keys", "show", "-w", str(ws))  # `keys show > keys.txt`
    assert out.startswith("account  0x") and "x25519" in out
    assert err == ""
    out, err = cli(capsys, "log", "show", "1", "-w", str(ws))  # `log show 1 | jq`
    doc = json.loads(out)
    assert doc["record"]["actor"] == "bob" and doc["private"] == {"ssn": "987-65-4321"}
    assert err == ""
    out, err = cli(capsys, "log", "info", "-w", str(ws))
    assert "size        3" in out and err == ""
    out, err = cli(capsys, "chain", "status", "-w", str(ws))
    assert "chain id" in out and err == ""


def test_global_options_before_or_after_the_command(
    ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before, _ = cli(capsys, "--json", "--workspace", str(ws), "log", "info")
    after, _ = cli(capsys, "log", "info", "--json", "-w", str(ws))
    mixed, _ = cli(capsys, "-w", str(ws), "log", "info", "--json")
    assert json.loads(before) == json.loads(after) == json.loads(mixed)
    assert json.loads(before)["size"] == 3
    # the command's own option wins over the one before it
    other, _ = cli(capsys, "-w", str(ws.parent / "nowhere"), "log", "info", "-w", str(ws))
    assert "size        3" in other
    # --rpc before a command that takes no node is refused, not ignored
    _, err = cli(capsys, "--rpc", "http://127.0.0.1:9", "log", "info", code=2)
    assert "--rpc does not apply to 'ailedger log info'" in one_line(err)
    # a malformed --rpc before the command is checked as one after it is
    _, before_err = cli(capsys, "--rpc", "ftp://x", "chain", "status", code=2)
    _, after_err = cli(capsys, "chain", "status", "--rpc", "ftp://x", code=2)
    assert one_line(before_err) == one_line(after_err)


@pytest.mark.parametrize(
    "args",
    [("log", "info"), ("log", "search"), ("log", "show", "0"), ("keys", "show"),
     ("chain", "status")],
    ids=lambda args: " ".join(args[:2]),
)  # fmt: skip
def test_a_missing_workspace_is_exit_3(
    args: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, err = cli(capsys, *args, "-w", str(tmp_path / "nowhere"), code=3)
    assert "run `ailedger init` first" in one_line(err)


def test_not_registered_is_exit_1_everywhere(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unknown = ws.parent / "unknown.csv"
    unknown.write_text("a,b\n1,2\n")
    _, err = cli(capsys, "provenance", "verify", str(unknown), "-w", str(ws), code=1)
    assert "is not registered by" in one_line(err)
    digest = "sha256:" + "12" * 32
    sealed = ws.parent / "x.sealed"
    _, err = cli(
        capsys, "share", "seal", str(unknown), "-r", digest, "-o", str(sealed),
        "-w", str(ws), code=1,
    )  # fmt: skip
    assert "is not registered by this workspace's account" in one_line(err)


def test_log_show_asks_for_the_passphrase(
    ws: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AILEDGER_PASSPHRASE")
    _, err = cli(capsys, "log", "show", "0", "-w", str(ws), code=2)
    message = one_line(err)
    assert "entry 0 has private values" in message and "--no-private" in message
    out, _ = cli(capsys, "log", "show", "0", "--no-private", "-w", str(ws))
    public = json.loads(out)
    assert public["private"] is None and "123-45-6789" not in out
    monkeypatch.setenv("AILEDGER_PASSPHRASE", "not it")
    _, err = cli(capsys, "log", "show", "0", "-w", str(ws), code=1)
    assert "wrong passphrase" in one_line(err)
    # on a terminal it is asked for, and the private value is shown once it is given
    output, code = _on_terminal(
        ["log", "show", "0", "-w", str(ws)], _clean_env(), answer=PASSPHRASE
    )
    assert code == 0, output
    assert "Passphrase:" in output and "123-45-6789" in output


def _on_terminal(args: list[str], env: dict[str, str], *, answer: str) -> tuple[str, int]:
    """Run ``ailedger ARGS`` on a new pseudo-terminal; answer its passphrase prompt."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal
        os.execve(sys.executable, [sys.executable, "-m", "ailedger", *args], env)  # noqa: S606
    seen = b""
    answered = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if not answered and b"Passphrase:" in seen:
                os.write(fd, answer.encode() + b"\n")
                answered = True
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return seen.decode(errors="replace"), os.waitstatus_to_exitcode(status)


def _search(ws: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    out, _ = cli(capsys, "log", "search", *args, "--json", "-w", str(ws))
    return [json.loads(line) for line in out.splitlines()]


def test_log_search(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def indexes(*args: str) -> list[object]:
        return [hit["index"] for hit in _search(ws, capsys, *args)]

    assert indexes("--actor", "alice") == [0, 2]
    assert indexes("--model", "0x" + "cd" * 32) == [1, 2]  # either text form of a digest
    assert indexes("--model", "sha256:abab") == [0]  # a prefix
    assert indexes("--since", "2026-12-01") == [1, 2]
    assert indexes("--until", "2026-12-01T09:00:00Z") == [0]  # the end is excluded
    assert indexes("--since", "2026-12-01T10:00:00+01:00", "--until", "2026-12-02") == [1]
    assert indexes("--where", "fields.task=3") == [0, 2]
    assert indexes("--where", "output=1") == [0]  # JSON: 1 is neither "1" nor true
    assert indexes("--where", "output=true") == [2]
    assert indexes("--where", 'output="1"') == [1]
    assert indexes("--actor", "alice", "--where", "fields.task=3", "--limit", "1") == [0]
    assert indexes("--actor", "carol") == []
    assert indexes("--where", "ssn=123-45-6789") == []  # private values are not searchable
    hit = _search(ws, capsys, "--actor", "bob")[0]
    assert hit["record"] == {**RECORDS[1], "ssn": hit["record"]["ssn"]}  # type: ignore[index]
    assert len(str(hit["leaf_hash"])) == 64
    out, err = cli(capsys, "log", "search", "--actor", "bob", "-w", str(ws))
    assert out.split()[0] == "1" and "2026-12-01T09:00:00+00:00" in out
    assert "1 match(es) in 3 entries" in err  # the count is a diagnostic
    for bad, message in [
        (("--since", "yesterday"), "--since: 'yesterday' is not a time"),
        (("--where", "actor"), "--where takes FIELD=VALUE"),
        (("--where", "a..b=1"), "--where takes FIELD=VALUE"),
        (("--where", "fields=" + "[" * 10_000), "--where fields: "),  # too deep: no recursion
        (("--where", "fields={oops"), "--where fields: "),
    ]:
        _, err = cli(capsys, "log", "search", *bad, "-w", str(ws), code=2)
        assert message in one_line(err)


def test_log_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ws"
    cli(capsys, "init", "-w", str(path), "--unsafe-fast-kdf")
    fresh = json.loads(cli(capsys, "log", "info", "-w", str(path), "--json")[0])
    assert (fresh["size"], fresh["latest_checkpoint"], fresh["anchors"]) == (0, None, [])
    assert fresh["store"] == {"backend": "sqlite", "path": str(path / "log.sqlite")}
    assert fresh["chain"]["backend"] == "embedded" and fresh["origin"].startswith("ailedger.")
    (tmp_path / "two.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    cli(capsys, "log", "append", str(tmp_path / "two.jsonl"), "-w", str(path))
    cli(capsys, "log", "anchor", "-w", str(path))
    info = json.loads(cli(capsys, "log", "info", "-w", str(path), "--json")[0])
    assert info["size"] == 2
    assert info["latest_checkpoint"]["size"] == 2 and info["latest_checkpoint"]["signatures"] == 1
    assert [(a["size"], a["chain_id"]) for a in info["anchors"]] == [(2, info["chain"]["chain_id"])]
    assert info["anchors"][0]["root"] == info["latest_checkpoint"]["root"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_python_drops_is_raised_again_at_the_next_progress_line() -> None:
    # Python drops an exception raised while a finalizer runs; the CLI's handler remembers it
    class Finalized:
        def __del__(self) -> None:
            on_sigint(signal.SIGINT, None)

    reset_interrupt()
    try:
        Finalized()  # collected at once: its KeyboardInterrupt is "ignored"
        tick = Ticker(every=3600.0)
        with pytest.raises(KeyboardInterrupt):
            tick("round 2")
        with pytest.raises(KeyboardInterrupt):
            progress("round 3")
    finally:
        reset_interrupt()
    progress("a new command")  # forgotten once reset


def test_ctrl_c_prints_interrupted_and_exits_130() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "ailedger", "train", "simulate", "--rounds", "100000",
         "--clients", "4", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env=_clean_env(),
    )  # fmt: skip
    try:
        assert process.stderr is not None
        first = process.stderr.readline()  # progress, on stderr, also with --json
        assert first.startswith(b"training 4 parties"), first
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert out == b""
    assert b"Traceback" not in err
    assert err.decode().splitlines()[-1] == "interrupted"


def test_demo_keep_refuses_a_folder_in_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    _, err = cli(capsys, "demo", "--keep", str(tmp_path), code=2)
    assert "give a new or empty folder" in one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_lock_waits_and_node_retries_are_progress_on_stderr(
    ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_chain_options(ws, lock_timeout=1.0, retries=3, backoff=0.6)
    holder = EmbeddedChain(ws / "chain")
    try:
        _, err = cli(capsys, "chain", "status", "-w", str(ws), code=3)
    finally:
        holder.close()
    lines = err.splitlines()
    assert lines[0].startswith(f"waiting up to 1 s for the embedded chain in {ws / 'chain'}")
    assert len(lines) == 2 and "in use by another process" in one_line(lines[1])
    gone = f"http://127.0.0.1:{free_port()}"
    _, err = cli(capsys, "chain", "status", "--rpc", gone, "-w", str(ws), code=3)
    lines = err.splitlines()
    assert (
        lines[0]
        == f"the node at {gone} did not answer (ConnectionError); retrying in 1.20 s (3 of 3)"
    )
    assert "did not answer after 3 attempts" in one_line(lines[1])
