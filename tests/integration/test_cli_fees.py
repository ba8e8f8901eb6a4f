"""``ailedger fees history|forecast|plan`` against a real anvil node and the embedded chain."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ailedger.cli import main
from tests.conftest import AnvilNode, free_port


def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """Run the CLI in this process (its real entry point); returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["ailedger", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def mined(anvil: AnvilNode) -> AnvilNode:
    """At least 8 blocks on the shared node."""
    for _ in range(8):
        anvil.rpc("evm_mine")
    return anvil


def test_history_matches_the_nodes_blocks(
    mined: AnvilNode, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(
        monkeypatch, capsys, "fees", "history", "--rpc", mined.url, "--blocks", "5", "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["blocks"]) == 5
    for row in doc["blocks"]:
        block = mined.rpc("eth_getBlockByNumber", hex(row["block"]), False)
        assert isinstance(block, dict)
        assert int(row["base_fee_per_gas"]) == int(block["baseFeePerGas"], 16)
        assert row["gas_used_ratio"] == int(block["gasUsed"], 16) / int(block["gasLimit"], 16)
        assert set(row["tips"]) == {"10", "50", "90"}
    numbers = [row["block"] for row in doc["blocks"]]
    assert numbers == list(range(numbers[0], numbers[0] + 5))


def test_forecast_and_plan(
    mined: AnvilNode, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(
        monkeypatch, capsys, "fees", "forecast", "--rpc", mined.url, "--ahead", "4", "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    head = int(str(mined.rpc("eth_blockNumber")), 16)
    assert [b["block"] for b in doc["blocks"]] == list(range(head + 1, head + 5))
    for b in doc["blocks"]:
        q = [int(b["quantiles"][k]) for k in ("0.05", "0.5", "0.95")]
        assert int(b["lower"]) <= q[0] <= q[1] <= q[2] <= int(b["upper"])
    code, out, err = cli(
        monkeypatch, capsys, "fees", "plan", "--rpc", mined.url, "--within", "6", "--json"
    )
    assert code == 0, err
    plan = json.loads(out)
    assert int(plan["max_fee_per_gas"]) >= int(plan["next_base_fee_per_gas"])
    assert isinstance(plan["send_now"], bool)


@pytest.mark.parametrize(
    "args",
    [
        ("history", "--blocks", "0"),
        ("history", "--blocks", "-3"),
        ("history", "--blocks", "99999999999999999999999"),
        ("history", "--blocks", "many"),
        ("forecast", "--ahead", "0"),
        ("forecast", "--ahead", "1001"),
        ("forecast", "--history", "2"),
        ("plan", "--within", "0"),
    ],
)
def test_bad_input_is_exit_code_2(
    args: tuple[str, ...],
    mined: AnvilNode,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = cli(monkeypatch, capsys, "fees", *args, "--rpc", mined.url)
    assert code == 2
    assert out == ""
    assert "Traceback" not in err and err.startswith("error: ")


def test_unreachable_node_is_exit_code_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = cli(monkeypatch, capsys, "fees", "history", "--rpc", url)
    assert code == 3
    assert out == ""
    # the retries (with backoff) are progress lines on stderr, then one error line
    errors = [line for line in err.splitlines() if "; retrying in " not in line]
    assert "; retrying in " in err
    assert errors[0].startswith("error: ") and len(errors) == 1


def test_without_rpc_reads_the_workspace_chain(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in [k for k in env if k.startswith("AILEDGER_")] + ["AILEDGER_WORKSPACE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AILEDGER_PASSPHRASE", env["AILEDGER_PASSPHRASE"])
    workspace = str(tmp_path / "ws")
    code, _, err = cli(monkeypatch, capsys, "init", "--workspace", workspace, "--unsafe-fast-kdf")
    assert code == 0, err
    code, out, err = cli(
        monkeypatch, capsys, "fees", "history", "--workspace", workspace, "--blocks", "3", "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert 1 <= len(doc["blocks"]) <= 3
    assert all(int(row["base_fee_per_gas"]) > 0 for row in doc["blocks"])
