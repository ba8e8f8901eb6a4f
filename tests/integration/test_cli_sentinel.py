"""`ailedger sentinel` end to end: a scenario on a real anvil node, then fit, scan, watch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AnvilNode, free_port

ENV = {k: v for k, v in os.environ.items() if not k.startswith("AILEDGER_")}
ENV["AILEDGER_PASSPHRASE"] = "sentinel test passphrase"


def run(*args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "ailedger", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    if check is not None:
        assert done.returncode == check, (done.returncode, done.stdout, done.stderr[-2000:])
    return done


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


@dataclass
class Traffic:
    node: AnvilNode
    labels: Path
    summary: dict[str, Any]
    workspace: Path

    @property
    def first(self) -> int:
        return int(self.summary["blocks"][0])

    @property
    def last(self) -> int:
        return int(self.summary["blocks"][1])

    def attacks(self) -> dict[str, str]:
        out = {}
        for line in self.labels.read_text().splitlines():
            record = json.loads(line)
            if record["class"] != "benign":
                out[record["tx"]] = record["class"]
        return out


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    folder = tmp_path_factory.mktemp("sentinel")
    node = AnvilNode(port=free_port(), state=folder / "anvil.json")
    node.start()
    try:
        labels = folder / "labels.jsonl"
        done = run(
            "sentinel", "simulate", "--rpc", node.url, "--transactions", "500", "--seed", "3",
            "--labels", str(labels), "--json",
        )  # fmt: skip
        summary = json.loads(done.stdout)
        workspace = folder / "ws"
        run("init", "--workspace", str(workspace))
        yield Traffic(node, labels, summary, workspace)
    finally:
        node.stop()


def _sentinel(traffic: Traffic, *args: str, check: int | None = 0) -> Any:
    return run(
        "sentinel", *args, "--workspace", str(traffic.workspace), "--rpc", traffic.node.url,
        check=check,
    )  # fmt: skip


def test_simulate_writes_labels_apart_from_the_chain(traffic: Traffic) -> None:
    attacks = traffic.attacks()
    assert attacks, "the scenario holds attacks"
    counts = traffic.summary["counts"]
    assert sum(v for k, v in counts.items() if k != "benign") == len(attacks)
    for tx in list(attacks)[:5]:
        found = traffic.node.rpc("eth_getTransactionByHash", tx)
        assert isinstance(found, dict) and int(str(found["blockNumber"]), 16) <= traffic.last
        # nothing of the label is on chain: the calldata does not name the class
        assert attacks[tx].encode().hex() not in str(found["input"])


def test_fit_then_scan_scores_every_transaction_and_flags_the_attacks(traffic: Traffic) -> None:
    middle = (traffic.first + traffic.last) // 2
    fitted = json.loads(
        _sentinel(
            traffic, "fit", "--from", str(traffic.first), "--to", str(middle), "--json"
        ).stdout
    )
    assert fitted["transactions"] > 10
    done = _sentinel(traffic, "scan", "--from", str(middle + 1), "--json")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    expected = sum(
        len(traffic.node.rpc("eth_getBlockByNumber", hex(n), False)["transactions"])  # type: ignore[index]
        for n in range(middle + 1, traffic.last + 1)
    )
    assert len(lines) == expected
    assert {"tx", "block", "score", "flagged", "class", "reasons"} <= set(lines[0])
    flagged = {line["tx"]: line for line in lines if line["flagged"]}
    for line in flagged.values():
        assert line["reasons"], "every flagged transaction says why"
    sandwiches = [tx for tx, c in traffic.attacks().items() if c == "sandwich"]
    in_range = [tx for tx in sandwiches if tx in {line["tx"] for line in lines}]
    for tx in in_range:
        assert flagged[tx]["class"] == "sandwich"
    assert "flagged" in done.stderr


def test_scan_fail_on_alert_exits_1_and_rules_only_needs_no_model(traffic: Traffic) -> None:
    sandwich_blocks = sorted(
        int(json.loads(line)["block"])
        for line in traffic.labels.read_text().splitlines()
        if json.loads(line)["class"] == "sandwich"
    )
    if not sandwich_blocks:
        pytest.skip("this seed drew no sandwich")
    block = str(sandwich_blocks[0])
    done = _sentinel(
        traffic, "scan", "--rules-only", "--from", block, "--to", block, "--fail-on-alert", check=1
    )
    assert "sandwich" in done.stdout


def test_watch_audits_each_alert_once_and_resumes_where_it_stopped(traffic: Traffic) -> None:
    attack_blocks = sorted(
        {
            int(json.loads(line)["block"])
            for line in traffic.labels.read_text().splitlines()
            if json.loads(line)["class"] != "benign"
        }
    )
    start, until = attack_blocks[0], min(attack_blocks[0] + 3, traffic.last)
    first = _sentinel(
        traffic, "watch", "--rules-only", "--from", str(start), "--until", str(until),
        "--poll", "0.1", "--json",
    )  # fmt: skip
    events = [json.loads(line) for line in first.stdout.splitlines()]
    alerts = [e for e in events if e["event"] == "alert"]
    assert alerts
    log = run("log", "info", "--workspace", str(traffic.workspace), "--json", check=None)
    if log.returncode == 0:
        assert json.loads(log.stdout)["size"] >= len(alerts)
    entries = [
        json.loads(
            run("log", "show", str(i), "--workspace", str(traffic.workspace), "--json").stdout
        )["record"]
        for i in range(len(alerts))
    ]
    assert {e["alert"]["tx"] for e in entries} == {a["tx"] for a in alerts}
    assert all(e["type"] == "sentinel.alert" for e in entries)
    again = _sentinel(
        traffic, "watch", "--rules-only", "--from", str(start), "--until", str(until),
        "--poll", "0.1", "--json",
    )  # fmt: skip
    assert again.stdout == ""
    assert "0 transactions scored" in again.stderr
    assert f"nothing left to watch: the checkpoint is already past block {until}" in again.stderr


def test_bad_ranges_models_and_nodes_get_one_line_and_the_right_exit_code(
    traffic: Traffic, tmp_path: Path
) -> None:
    done = _sentinel(traffic, "scan", "--rules-only", "--from", "10", "--to", "5", check=2)
    assert "inverted" in one_line_error(done)
    done = _sentinel(traffic, "scan", "--rules-only", "--from", "0", "--to", "999999", check=2)
    assert "head" in one_line_error(done)
    bad = tmp_path / "model.bin"
    bad.write_bytes(b'{"format": "nope"}\nxxxx')
    done = _sentinel(traffic, "scan", "--model", str(bad), "--from", "1", "--to", "2", check=2)
    assert "model" in one_line_error(done)
    # a model made in another workspace is keyed with another key: refused before unpickling
    other = tmp_path / "other"
    run("init", "--workspace", str(other))
    last = str(traffic.last)
    run(
        "sentinel", "fit", "--workspace", str(other), "--rpc", traffic.node.url,
        "--from", str(traffic.first), "--to", last, "--model", str(tmp_path / "theirs.bin"),
    )  # fmt: skip
    done = _sentinel(
        traffic, "scan", "--model", str(tmp_path / "theirs.bin"), "--from", last, "--to", last,
        check=2,
    )  # fmt: skip
    assert "altered" in one_line_error(done) or "keyed" in one_line_error(done)
    port = free_port()
    done = run(
        "sentinel", "scan", "--rules-only", "--workspace", str(traffic.workspace),
        "--rpc", f"http://127.0.0.1:{port}", "--from", "1", "--to", "2", check=3,
    )  # fmt: skip
    assert "; retrying in " in done.stderr  # progress lines before the one error line
    done.stderr = "".join(x for x in done.stderr.splitlines(True) if "; retrying in " not in x)
    one_line_error(done)


def test_report_splits_by_time_and_labels_its_figures_synthetic(
    traffic: Traffic, tmp_path: Path
) -> None:
    done = _sentinel(
        traffic, "report", "--labels", str(traffic.labels), "--from", str(traffic.first),
        "--plots", str(tmp_path / "plots"), "--json",
    )  # fmt: skip
    doc = json.loads(done.stdout)
    assert "synthetic" in doc["note"]
    train, test = doc["train_blocks"], doc["test_blocks"]
    assert train[1] < test[0], "the split is by time: every training block precedes the test"
    assert {"rules", "isolation-forest"} <= set(doc["detectors"])
    for name in doc["detectors"]:
        for metrics in doc["detectors"][name]["per_class"].values():
            assert 0.0 <= metrics["precision"] <= 1.0 and 0.0 <= metrics["recall"] <= 1.0
    assert all(Path(p).exists() for p in doc["plots"])
