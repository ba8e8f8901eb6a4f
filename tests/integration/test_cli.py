"""The CLI in separate OS processes, on the embedded chain and on a real anvil node."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import pytest
import tomli_w

from ailedger.ledger._embedded import EmbeddedChain
from tests.cli import one_line_error, run
from tests.conftest import AnvilNode

ORIGIN = "0x" + hashlib.sha256(b"cli origin").hexdigest()
ROOT_A = "0x" + "aa" * 32
ROOT_B = "0x" + "bb" * 32


def set_chain_options(workspace: Path, **options: object) -> None:
    path = workspace / "config.toml"
    config = tomllib.loads(path.read_text())
    config["chain"].update(options)
    path.write_text(tomli_w.dumps(config))


def snapshot(workspace: Path) -> dict[str, bytes]:
    files = [workspace / "config.toml", *sorted((workspace / "keys").iterdir())]
    return {str(p): hashlib.sha256(p.read_bytes()).digest() for p in files}


@pytest.fixture
def workspace(
    tmp_path: Path, env: dict[str, str], backend: str, request: pytest.FixtureRequest
) -> Path:
    """An initialised workspace on the chosen backend (anvil: funded after a first refusal)."""
    path = tmp_path / "ws"
    if backend == "embedded":
        run("init", "-w", str(path), "--unsafe-fast-kdf", env=env)
        return path
    node: AnvilNode = request.getfixturevalue("anvil")
    refused = run("init", "-w", str(path), "--rpc", node.url, "--unsafe-fast-kdf", env=env, check=1)
    assert "no ether" in one_line_error(refused)
    address = json.loads((path / "keys" / "ethereum.json").read_text())["address"]
    node.fund("0x" + address)
    run("init", "-w", str(path), "--unsafe-fast-kdf", env=env)
    return path


def test_anchor_then_read_back_in_another_process(workspace: Path, env: dict[str, str]) -> None:
    wrote = run("chain", "anchor", ORIGIN, "3", ROOT_A, "-w", str(workspace), "--json", env=env)
    receipt = json.loads(wrote.stdout)
    assert receipt["size"] == 3
    assert receipt["gas_used"] > 21000
    run("chain", "anchor", ORIGIN, "8", ROOT_B, "-w", str(workspace), env=env)
    read = run("chain", "anchors", ORIGIN, "-w", str(workspace), "--json", env=env)
    doc = json.loads(read.stdout)
    assert [(a["size"], a["root"]) for a in doc["anchors"]] == [(3, ROOT_A), (8, ROOT_B)]
    assert doc["anchors"][0]["block_number"] == receipt["block_number"]
    status = json.loads(run("chain", "status", "-w", str(workspace), "--json", env=env).stdout)
    assert doc["anchorer"] == status["account"]
    assert status["block"] >= receipt["block_number"] + 1
    assert int(status["balance_wei"]) > 0


def test_results_go_to_stdout_as_text_or_json(workspace: Path, env: dict[str, str]) -> None:
    text = run("chain", "status", "-w", str(workspace), env=env)
    assert text.stderr == ""
    assert "chain id" in text.stdout
    as_json = run("chain", "status", "-w", str(workspace), "--json", env=env)
    assert json.loads(as_json.stdout)["chain_id"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("0x12", "1", ROOT_A), "ORIGIN must be 0x followed by 64 hex digits"),
        ((ORIGIN, "1", "0x" + "zz" * 32), "ROOT must be 0x followed by 64 hex digits"),
        ((ORIGIN[2:], "1", ROOT_A), "ORIGIN must be 0x"),
        ((ORIGIN, "0", ROOT_A), "SIZE must be from 1"),
        ((ORIGIN, "ten", ROOT_A), "SIZE must be a positive integer"),
        ((ORIGIN, str(2**64), ROOT_A), "SIZE must be from 1"),
        ((ORIGIN, "1_0", ROOT_A), "SIZE must be a positive integer in ASCII digits"),
        ((ORIGIN, "\u0661\u0662", ROOT_A), "SIZE must be a positive integer in ASCII digits"),
        ((ORIGIN, "\uff15", ROOT_A), "SIZE must be a positive integer in ASCII digits"),
        ((ORIGIN, " 5", ROOT_A), "SIZE must be a positive integer in ASCII digits"),
        ((ORIGIN, "+5", ROOT_A), "SIZE must be a positive integer in ASCII digits"),
        ((ORIGIN, "9" * 5000, ROOT_A), "SIZE must be a positive integer in ASCII digits"),
        ((ORIGIN, str(2**64 - 1) + "0", ROOT_A), "SIZE must be from 1"),
    ],
)
def test_malformed_input_exits_2(
    workspace: Path, env: dict[str, str], args: tuple[str, str, str], message: str
) -> None:
    done = run("chain", "anchor", *args, "-w", str(workspace), env=env, check=2)
    assert message in one_line_error(done)


def test_negative_size_is_a_usage_error(workspace: Path, env: dict[str, str]) -> None:
    done = run("chain", "anchor", ORIGIN, "-4", ROOT_A, "-w", str(workspace), env=env, check=2)
    assert "No such option" in done.stderr
    assert "Traceback" not in done.stderr
    after_dashes = run(
        "chain", "anchor", "-w", str(workspace), "--", ORIGIN, "-4", ROOT_A, env=env, check=2
    )
    assert "SIZE must be a positive integer" in one_line_error(after_dashes)


def test_size_that_does_not_increase_exits_1(workspace: Path, env: dict[str, str]) -> None:
    run("chain", "anchor", ORIGIN, "5", ROOT_A, "-w", str(workspace), env=env)
    for size in ("5", "4"):
        done = run("chain", "anchor", ORIGIN, size, ROOT_B, "-w", str(workspace), env=env, check=1)
        assert "size must increase" in one_line_error(done)
    doc = json.loads(
        run("chain", "anchors", ORIGIN, "-w", str(workspace), "--json", env=env).stdout
    )
    assert [a["size"] for a in doc["anchors"]] == [5]


def test_wrong_passphrase(workspace: Path, env: dict[str, str]) -> None:
    before = snapshot(workspace)
    bad = {**env, "AILEDGER_PASSPHRASE": "not it"}
    done = run("chain", "anchor", ORIGIN, "1", ROOT_A, "-w", str(workspace), env=bad, check=1)
    assert "wrong passphrase" in one_line_error(done)
    assert snapshot(workspace) == before


def test_no_passphrase_and_no_terminal(workspace: Path, env: dict[str, str]) -> None:
    bare = {k: v for k, v in env.items() if k != "AILEDGER_PASSPHRASE"}
    done = run("chain", "anchor", ORIGIN, "1", ROOT_A, "-w", str(workspace), env=bare, check=2)
    assert "AILEDGER_PASSPHRASE" in one_line_error(done)


@pytest.mark.parametrize("backend", ["embedded"])
def test_unknown_contract_address(tmp_path: Path, env: dict[str, str], backend: str) -> None:
    path = tmp_path / "ws"
    done = run(
        "init",
        "-w",
        str(path),
        "--unsafe-fast-kdf",
        "--anchor-registry",
        "0x" + "12" * 20,
        env=env,
        check=1,
    )
    assert "no contract at 0x1212" in one_line_error(done)


@pytest.mark.parametrize("backend", ["anvil"])
def test_wrong_chain_id(workspace: Path, env: dict[str, str]) -> None:
    set_chain_options(workspace, chain_id=1)
    done = run("chain", "status", "-w", str(workspace), env=env, check=1)
    assert "serves chain id 31337, the workspace expects 1" in one_line_error(done)


@pytest.mark.parametrize("backend", ["anvil"])
def test_shared_registry_between_workspaces(
    workspace: Path, env: dict[str, str], anvil: AnvilNode, tmp_path: Path
) -> None:
    config = tomllib.loads((workspace / "config.toml").read_text())
    registry = config["contracts"]["31337"]["AnchorRegistry"]
    second = tmp_path / "second"
    second.mkdir()
    (second / "config.toml").write_text(
        tomli_w.dumps({"chain": config["chain"], "contracts": config["contracts"]})
    )
    run("init", "-w", str(second), "--unsafe-fast-kdf", env=env)
    shared = tomllib.loads((second / "config.toml").read_text())["contracts"]["31337"]
    assert shared == config["contracts"]["31337"]
    assert shared["AnchorRegistry"] == registry
    address = json.loads((second / "keys" / "ethereum.json").read_text())["address"]
    anvil.fund("0x" + address)
    other_origin = "0x" + hashlib.sha256(b"second workspace").hexdigest()
    run("chain", "anchor", other_origin, "2", ROOT_A, "-w", str(second), env=env)
    # anchors are kept per account: the first workspace anchors the same origin, even smaller
    run("chain", "anchor", other_origin, "1", ROOT_B, "-w", str(workspace), env=env)
    mine = json.loads(
        run("chain", "anchors", other_origin, "-w", str(workspace), "--json", env=env).stdout
    )
    assert [(a["size"], a["root"]) for a in mine["anchors"]] == [(1, ROOT_B)]
    theirs = json.loads(
        run("chain", "anchors", other_origin, "-w", str(second), "--json", env=env).stdout
    )
    assert [(a["size"], a["root"]) for a in theirs["anchors"]] == [(2, ROOT_A)]
    assert theirs["anchorer"].lower() == "0x" + address.lower()
    by_address = run(
        "chain",
        "anchors",
        other_origin,
        "--anchorer",
        theirs["anchorer"],
        "-w",
        str(workspace),
        "--json",
        env=env,
    )
    assert json.loads(by_address.stdout)["anchors"] == theirs["anchors"]


def test_node_killed_then_back(own_anvil: AnvilNode, env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "ws"
    run("init", "-w", str(path), "--rpc", own_anvil.url, "--unsafe-fast-kdf", env=env, check=1)
    own_anvil.fund("0x" + json.loads((path / "keys" / "ethereum.json").read_text())["address"])
    run("init", "-w", str(path), "--unsafe-fast-kdf", env=env)
    set_chain_options(path, retries=3, backoff=0.05)
    run("chain", "anchor", ORIGIN, "1", ROOT_A, "-w", str(path), env=env)
    own_anvil.stop()
    before = snapshot(path)
    down = run("chain", "anchor", ORIGIN, "2", ROOT_B, "-w", str(path), env=env, check=3)
    assert "did not answer after 3 attempts" in one_line_error(down)
    assert run("chain", "status", "-w", str(path), env=env, check=3).returncode == 3
    assert snapshot(path) == before
    own_anvil.start()
    run("chain", "anchor", ORIGIN, "2", ROOT_B, "-w", str(path), env=env)
    doc = json.loads(run("chain", "anchors", ORIGIN, "-w", str(path), "--json", env=env).stdout)
    assert [a["size"] for a in doc["anchors"]] == [1, 2]


@pytest.mark.parametrize("backend", ["embedded"])
def test_workspace_in_use_by_another_process(workspace: Path, env: dict[str, str]) -> None:
    set_chain_options(workspace, lock_timeout=0.3)
    holder = EmbeddedChain(workspace / "chain")
    try:
        done = run("chain", "status", "-w", str(workspace), env=env, check=3)
    finally:
        holder.close()
    assert "in use by another process" in one_line_error(done)
    run("chain", "status", "-w", str(workspace), env=env)


def test_missing_workspace(tmp_path: Path, env: dict[str, str]) -> None:
    # unavailable, like a node (README's exit codes): 3
    done = run("chain", "status", "-w", str(tmp_path / "nowhere"), env=env, check=3)
    assert "run `ailedger init` first" in one_line_error(done)


def test_workspace_from_environment(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "from-env"
    with_ws = {**env, "AILEDGER_WORKSPACE": str(path)}
    run("init", "--unsafe-fast-kdf", env=with_ws)
    assert (path / "config.toml").is_file()
    assert json.loads(run("chain", "status", "--json", env=with_ws).stdout)["block"] >= 1


def test_malformed_config(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "ws"
    path.mkdir()
    (path / "config.toml").write_text("[chain\nbackend = 1")
    done = run("chain", "status", "-w", str(path), env=env, check=2)
    assert "not valid TOML" in one_line_error(done)


def test_verbose_shows_traceback(tmp_path: Path, env: dict[str, str]) -> None:
    done = run("-vv", "chain", "status", "-w", str(tmp_path / "nowhere"), env=env, check=3)
    assert "Traceback" in done.stderr
    assert done.stderr.rstrip().splitlines()[-1].startswith("error: no ailedger workspace")


def test_version_and_usage(env: dict[str, str]) -> None:
    assert run("--version", env=env).stdout.startswith("ailedger ")
    assert run("chain", "anchor", env=env, check=2).returncode == 2
    assert run("no-such-command", env=env, check=2).returncode == 2


def test_key_files_are_private(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "ws"
    run("init", "-w", str(path), "--unsafe-fast-kdf", env=env)
    for key in (path / "keys").iterdir():
        mode = key.stat().st_mode & 0o777
        assert mode == (0o644 if key.suffix == ".pub" else 0o600), key
        assert env["AILEDGER_PASSPHRASE"].encode() not in key.read_bytes()


def test_demo(env: dict[str, str], tmp_path: Path) -> None:
    done = run("demo", "--json", "--keep", str(tmp_path / "demo"), env=env)
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert report["training"]["malicious_excluded"] is True
    assert report["training"]["final_accuracy"] > 0.7
    assert report["provenance"]["verified"] is True
    assert report["audit"]["size"] == report["anchor"]["size"] >= report["decisions"] == 50
    assert report["anchor"]["status"] == "final"
    sentinel = report["sentinel"]
    assert sentinel["drainer_flagged"] is True and "approval_drain" in sentinel["classes"]
    assert report["audit"]["size"] >= report["decisions"] + sentinel["alerts"]
    assert report["tampering_detected"] is True
    assert "a tampered copy is rejected: entry" in done.stderr
    # the kept workspace opens with the passphrase the demo was given
    kept = tmp_path / "demo" / "workspace"
    assert report["workspace"] == str(kept)
    info = json.loads(run("log", "info", "-w", str(kept), "--json", env=env).stdout)
    assert info["size"] == report["audit"]["size"] and info["anchors"][-1]["status"] == "final"
    verified = run("verify", report["export"], "--key", report["verifier_key"], "-w", str(kept),
                   "--json", env=env)  # fmt: skip
    assert json.loads(verified.stdout)["size"] == report["audit"]["size"]
