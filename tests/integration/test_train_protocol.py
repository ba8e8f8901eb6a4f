"""The training protocol with each party in its own OS process, workspace and key, on anvil."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ailedger.errors import LedgerError
from ailedger.workspace import Workspace
from tests.conftest import AnvilNode, free_port

PASSPHRASE = "correct horse battery staple"
ROUNDS = 3


def make_workspace(path: Path, node: AnvilNode) -> str:
    """A workspace on ``node`` with a funded account; returns the account."""
    with pytest.raises(LedgerError, match="no ether"):
        Workspace.init(path, passphrase=lambda: PASSPHRASE, rpc=node.url, unsafe_fast_kdf=True)
    address = "0x" + json.loads((path / "keys" / "ethereum.json").read_text())["address"]
    node.fund(address)
    Workspace.init(path, passphrase=lambda: PASSPHRASE, rpc=node.url, unsafe_fast_kdf=True)
    return address


def ailedger(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ailedger", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )


@pytest.mark.anvil
@pytest.mark.slow
def test_four_processes_train_and_exclude_the_malicious_one(
    tmp_path: Path, anvil: AnvilNode, env: dict[str, str]
) -> None:
    spaces = [tmp_path / f"party{i}" for i in range(4)]
    accounts = [make_workspace(ws, anvil) for ws in spaces]
    outsider = tmp_path / "outsider"
    make_workspace(outsider, anvil)
    task_file = tmp_path / "task.json"
    create = ailedger(
        "train", "create", "-w", str(spaces[0]), "--participants", ",".join(accounts),
        "--rounds", str(ROUNDS), "--phase-blocks", "30", "--out", str(task_file), "--json",
        env=env,
    )  # fmt: skip
    out, err = create.communicate(timeout=120)
    assert create.returncode == 0, err
    assert "creating a task for 4 parties" in err  # progress on stderr, also with --json
    created = json.loads(out)
    assert created["spec"]["quorum"] == 3
    assert [a.lower() for a in created["participants"]] == [a.lower() for a in accounts]

    port = free_port()
    announced = f"http://127.0.0.1:{port}"
    joins = [
        ailedger(
            "train", "join", str(task_file), "-w", str(ws), "--json",
            "--mine-idle-after", "0.5", "--poll-interval", "0.05", "--timeout", "240",
            *(["--attack", "scaling"] if i == 3 else []),
            *(["--port", str(port), "--announce", announced + "/"] if i == 1 else []),
            env=env,
        )
        for i, ws in enumerate(spaces)
    ]  # fmt: skip
    stranger = ailedger("train", "join", str(task_file), "-w", str(outsider), env=env)
    _, stranger_err = stranger.communicate(timeout=120)
    assert stranger.returncode == 1
    assert "is not a participant of task" in stranger_err
    assert "Traceback" not in stranger_err

    results = []
    for i, process in enumerate(joins):
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        results.append(json.loads(out))
        # progress on stderr, also with --json: who joined, where its blobs are, each round
        joined = f"joined task {created['task']} as party {i} ({results[-1]['account']}), "
        assert f"{joined}serving blobs at {results[-1]['endpoint']}" in err
        assert "round 0: " in err
    honest, malicious = results[:3], results[3]
    assert results[1]["endpoint"] == announced
    bad = accounts[3].lower()

    assert malicious["excluded"] is True
    assert len({r["model_digest"] for r in honest}) == 1
    for result in honest:
        assert result["excluded"] is False
        rounds = result["rounds"]
        assert [r["round"] for r in rounds] == list(range(ROUNDS))
        assert all(r["status"] == "finalized" for r in rounds)
        assert bad in [a.lower() for a in rounds[0]["flagged"]]
        assert bad in [a.lower() for a in rounds[-1]["excluded"]]
        assert bad not in [a.lower() for a in rounds[-1]["accepted"]]
        assert result["test_accuracy"] > 0.6
    # every party attested the same digest in each round it attested
    for k in range(ROUNDS):
        digests = {r["rounds"][k]["aggregate_digest"] for r in honest}
        assert len(digests) == 1
        attested = {r["rounds"][k]["attested"] for r in honest} - {None}
        assert attested <= digests
