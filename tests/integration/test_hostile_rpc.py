"""A hostile JSON-RPC node and bad ``--rpc`` URLs through the CLI, in separate processes.

``ailedger chain status --rpc URL`` runs as a user would run it, so a SIGSEGV (exit -11), a
traceback or a reply read whole into memory would show. Every other hostile reply is covered
in process by ``tests/unit/ledger/test_hostile_node.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import one_line_error, run
from tests.hostile_node import hostile  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AILEDGER_")}
    env["AILEDGER_PASSPHRASE"] = "correct horse battery staple"
    path = tmp_path_factory.mktemp("hostile") / "ws"
    run("init", "-w", str(path), "--unsafe-fast-kdf", env=env)
    # two quick attempts, so the transient case (HTTP 502) does not wait for the backoff
    config = path / "config.toml"
    text = config.read_text().replace("[chain]\n", "[chain]\nretries = 2\nbackoff = 0.01\n", 1)
    config.write_text(text)
    return path, env


# Runs a command and prints its exit code and peak RSS. The command is forked from this small
# process: a child's peak RSS starts from the memory of the process that forked it, which for
# pytest itself would hide the figure.
_MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def status(url: str, ws: tuple[Path, dict[str, str]]) -> tuple[int, str, int]:
    """Run ``chain status --rpc URL``: exit code, stderr and peak memory (KiB)."""
    workspace, env = ws
    command = [sys.executable, "-m", "ailedger", "chain", "status", "--rpc", url]
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command, "-w", str(workspace)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    code, peak_kib = done.stdout.split()
    return int(code), done.stderr, int(peak_kib)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("nested", "JSON nested deeper than 64 levels"),
        ("huge", "sent a reply larger than 33554432 bytes"),
        ("text", "not JSON"),
        ("html", "answered HTTP 502 after 2 attempts"),
    ],
)
def test_hostile_node_gives_one_line_exit_3(
    hostile: str,  # noqa: F811 (fixture)
    ws: tuple[Path, dict[str, str]],
    path: str,
    message: str,
) -> None:
    code, stderr, peak_kib = status(f"{hostile}/{path}", ws)
    assert code == 3, (code, stderr)  # not -11 (SIGSEGV), not 1 (internal error)
    line = one_line_error(subprocess.CompletedProcess([], code, "", stderr))
    assert line.startswith(f"error: the node at {hostile}/{path} ")
    assert message in line
    # a 200 MB reply is refused after 32 MiB: the process never holds it (it took 712 MB)
    assert peak_kib < 200 * 1024, f"peak RSS {peak_kib} KiB"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:99999", "Port out of range"),
        ("http://:8545", "names no host"),
        ("ftp://127.0.0.1:8545", "not an http(s) JSON-RPC URL"),
    ],
)
def test_bad_rpc_url_exit_2(ws: tuple[Path, dict[str, str]], url: str, message: str) -> None:
    workspace, env = ws
    done = run("chain", "status", "--rpc", url, "-w", str(workspace), env=env, check=2)
    assert message in one_line_error(done)
