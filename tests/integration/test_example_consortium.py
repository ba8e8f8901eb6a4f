"""``examples/consortium/run.py`` runs end to end as a new user would run it (issue 12, item 4).

The script starts its own anvil node and three organisations as separate processes and
workspaces; this test runs it as a subprocess and checks the outcomes it promises from the
JSON summary it writes: exit 0, the malicious party excluded by the others, the partner's open
refused after the revocation, and the outsider's verification (log and model) passed with no
workspace.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ANVIL, ROOT

SCRIPT = ROOT / "examples" / "consortium" / "run.py"


@pytest.mark.anvil
@pytest.mark.slow
def test_the_consortium_story_runs_end_to_end(tmp_path: Path, env: dict[str, str]) -> None:
    if not ANVIL.exists():
        pytest.fail(f"anvil is not installed at {ANVIL}: run `make test`")
    summary_file = tmp_path / "summary.json"
    script = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--dir", str(tmp_path / "story"), "--anvil", str(ANVIL),
         "--summary", str(summary_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        out, err = script.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        script.terminate()  # the script stops its anvil and parties on SIGTERM
        out, err = script.communicate(timeout=30)
        pytest.fail(f"the example did not finish within 540 s:\n{out[-4000:]}\n{err[-2000:]}")
    assert script.returncode == 0, (out[-4000:], err[-4000:])
    assert "Traceback" not in err
    summary = json.loads(summary_file.read_text())
    assert summary["ok"] is True and summary["failed_step"] is None
    assert [s["number"] for s in summary["steps"]] == list(range(1, 12))

    accounts = summary["organisations"]
    assert summary["consortium"] == {"chain_id": 31337, "members": 3}
    assert len({a.lower() for a in accounts.values()}) == 3

    share = summary["share"]
    assert share["opened_before_revoke"] is True
    assert share["open_after_revoke_refused"] is True
    assert "revoked" in share["refusal"] and share["refusal"].startswith("error: ")

    training = summary["training"]
    bad = accounts["clinic-c"].lower()
    assert training["malicious"].lower() == bad
    assert training["malicious_excluded"] is True and training["excluded"] == [bad]
    assert training["honest_agree"] is True
    assert all(r["status"] == "finalized" for r in training["rounds"])
    assert training["accuracy"] > 0.5  # ten classes: chance is 0.1

    assert summary["model"]["lineage_has_dataset"] is True
    assert summary["model"]["digest"].startswith("sha256:")
    predictions = summary["predictions"]
    assert predictions["count"] == 20 and predictions["log_size"] >= 20
    assert predictions["model"] == summary["model"]["digest"]

    outsider = summary["outsider"]
    assert outsider["verify_passed"] is True
    assert outsider["anchors_trust"] == "chain" and outsider["anchors"] >= 1
    assert outsider["model_verified"] is True
    assert outsider["model_owner"].lower() == accounts["clinic-a"].lower()
    assert not list((tmp_path / "story" / "outsider").glob("**/.ailedger"))


def test_a_failing_step_is_named_and_exits_1(tmp_path: Path, env: dict[str, str]) -> None:
    """An anvil that is no node (exits at once) fails step 1, named, in the summary too."""
    fake = tmp_path / "anvil"
    fake.write_text("#!/bin/sh\nexit 7\n")
    fake.chmod(0o755)
    summary_file = tmp_path / "summary.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dir", str(tmp_path / "story"), "--anvil", str(fake),
         "--summary", str(summary_file)],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "FAILED at step 1 (start a development node (anvil) on loopback)" in done.stderr
    assert "anvil exited with code 7" in done.stderr
    assert "Traceback" not in done.stderr
    summary = json.loads(summary_file.read_text())
    assert summary["ok"] is False and summary["failed_step"]["number"] == 1


def test_bad_arguments_are_exit_2(tmp_path: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--anvil", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no anvil at" in done.stderr and "Traceback" not in done.stderr
