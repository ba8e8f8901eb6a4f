"""Anchors bound to the log's operator (issue 11, items 1, 6 and 7), through the CLI.

A squatter anchors the victim's origin first with the largest size; a restored backup is
appended to and anchored; an export names its operator in a binding signed by the log's key.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tomllib
from pathlib import Path

import pytest

from ailedger.ledger import AnchorRegistry, Ledger
from tests.cli import one_line_error, run
from tests.conftest import AnvilNode, new_signer

MAX = str(2**64 - 1)
ZERO = "0x" + "00" * 32


def records(n: int, tag: str = "i") -> str:
    return "".join(json.dumps({tag: i}) + "\n" for i in range(n))


def append(ws: Path, env: dict[str, str], text: str) -> None:
    source = ws.parent / f"records-{ws.name}.jsonl"
    source.write_text(text)
    run("log", "append", str(source), "-w", str(ws), env=env)


def config(ws: Path) -> dict[str, object]:
    return tomllib.loads((ws / "config.toml").read_text())


def account(ws: Path) -> str:
    return "0x" + str(json.loads((ws / "keys" / "ethereum.json").read_text())["address"])


def origin_hash(ws: Path) -> str:
    origin = str(config(ws)["log"]["origin"])  # type: ignore[index]
    return "0x" + hashlib.sha256(origin.encode()).hexdigest()


def anvil_workspace(path: Path, node: AnvilNode, env: dict[str, str], *extra: str) -> Path:
    run("init", "-w", str(path), "--rpc", node.url, "--unsafe-fast-kdf", *extra, env=env, check=1)
    node.fund(account(path))
    run("init", "-w", str(path), "--unsafe-fast-kdf", *extra, env=env)
    return path


def verify_json(*args: str, env: dict[str, str]) -> dict[str, object]:
    return dict(json.loads(run("verify", *args, "--json", env=env).stdout))


def test_squatted_origin_on_anvil(anvil: AnvilNode, env: dict[str, str], tmp_path: Path) -> None:
    victim = anvil_workspace(tmp_path / "victim", anvil, env)
    registry = config(victim)["contracts"]["31337"]["AnchorRegistry"]  # type: ignore[index]
    squatter = anvil_workspace(tmp_path / "squatter", anvil, env, "--anchor-registry", registry)
    append(victim, env, records(40))
    # the reproduction from the issue: a third party anchors the victim's origin first
    run("chain", "anchor", origin_hash(victim), MAX, ZERO, "-w", str(squatter), env=env)
    anchored = json.loads(run("log", "anchor", "-w", str(victim), "--json", env=env).stdout)
    assert anchored["anchored"]["size"] == 40
    deep = verify_json("-w", str(victim), "--deep", env=env)
    assert (deep["size"], deep["anchors"], deep["anchors_trust"]) == (40, 1, "chain")
    export = tmp_path / "export"
    run("log", "export", str(export), "-w", str(victim), env=env)
    key = run("log", "key", "-w", str(victim), env=env).stdout.strip()
    # an outsider: the key and a node, nothing else (the registry comes from the binding)
    outsider = verify_json(str(export), "--key", key, "--rpc", anvil.url, env=env)
    assert (outsider["size"], outsider["anchors"], outsider["anchors_trust"]) == (40, 1, "chain")
    anchoring = outsider["anchoring"]
    assert isinstance(anchoring, dict)
    assert anchoring["operator"].lower() == account(victim).lower()
    assert anchoring["registry"].lower() == registry.lower()
    pinned = verify_json(
        str(export), "--key", key, "--rpc", anvil.url, "--operator", account(victim), env=env
    )
    assert pinned["anchors"] == 1
    # pinning another account than the signed binding names is a failed check
    wrong = run(
        "verify", str(export), "--key", key, "--rpc", anvil.url,
        "--operator", account(squatter), env=env, check=1,
    )  # fmt: skip
    assert "--operator" in one_line_error(wrong)
    # without a binding the outsider must say who anchors; the squatter's claim verifies nothing
    (export / "ailedger" / "binding").unlink()
    unbound = run("verify", str(export), "--key", key, "--rpc", anvil.url, env=env, check=2)
    assert "--operator" in one_line_error(unbound)
    as_squatter = run(
        "verify", str(export), "--key", key, "--rpc", anvil.url, "--registry", registry,
        "--operator", account(squatter), env=env, check=1,
    )  # fmt: skip
    assert "truncated or rolled back" in one_line_error(as_squatter)
    explicit = verify_json(
        str(export), "--key", key, "--rpc", anvil.url, "--registry", registry,
        "--operator", account(victim), env=env,
    )  # fmt: skip
    assert explicit["anchors"] == 1


def test_squatted_origin_on_the_embedded_chain(env: dict[str, str], tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    run("init", "-w", str(victim), "--unsafe-fast-kdf", env=env)
    append(victim, env, records(30))
    chain_id = next(iter(config(victim)["contracts"]))  # type: ignore[call-overload]
    registry = config(victim)["contracts"][chain_id]["AnchorRegistry"]  # type: ignore[index]
    squatter = new_signer()
    from ailedger.workspace import Workspace

    ws = Workspace.open(victim)
    with ws.ledger(passphrase=lambda: env["AILEDGER_PASSPHRASE"]) as ledger:
        ledger.transfer(squatter.address, 10**18)
    with Ledger.embedded(ws.chain_dir, signer=squatter) as theirs:
        taken = AnchorRegistry(ledger=theirs, address=registry)
        taken.anchor(bytes.fromhex(origin_hash(victim)[2:]), 2**64 - 1, bytes(32))
    anchored = json.loads(run("log", "anchor", "-w", str(victim), "--json", env=env).stdout)
    assert anchored["anchored"]["size"] == 30
    deep = verify_json("-w", str(victim), "--deep", env=env)
    assert (deep["anchors"], deep["anchors_trust"]) == (1, "operator-controlled")
    text = run("verify", "-w", str(victim), "--deep", env=env).stderr  # a note: a diagnostic
    assert "not outside evidence" in text and "witnesses" in text
    export = tmp_path / "export"
    run("log", "export", str(export), "-w", str(victim), env=env)
    key = run("log", "key", "-w", str(victim), env=env).stdout.strip()
    report = verify_json(str(export), "--key", key, "-w", str(victim), env=env)
    assert (report["anchors"], report["anchors_trust"]) == (1, "operator-controlled")
    # another party's own embedded chain cannot show the operator's anchors: said plainly
    other = tmp_path / "other"
    run("init", "-w", str(other), "--unsafe-fast-kdf", env=env)
    done = run("verify", str(export), "--key", key, "-w", str(other), env=env, check=2)
    assert "embedded chain" in one_line_error(done)


def test_export_on_a_chain_the_verifier_does_not_reach(
    anvil: AnvilNode, env: dict[str, str], tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    run("init", "-w", str(ws), "--unsafe-fast-kdf", env=env)
    append(ws, env, records(3))
    run("log", "anchor", "-w", str(ws), env=env)
    export = tmp_path / "export"
    exported = json.loads(
        run("log", "export", str(export), "-w", str(ws), "--json", env=env).stdout
    )
    assert [c["operator"].lower() for c in exported["anchoring"]] == [account(ws).lower()]
    key = run("log", "key", "-w", str(ws), env=env).stdout.strip()
    done = run("verify", str(export), "--key", key, "--rpc", anvil.url, env=env, check=2)
    line = one_line_error(done)
    assert "serves chain 31337" in line and str(exported["anchoring"][0]["chain_id"]) in line


def test_a_forged_binding_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    run("init", "-w", str(ws), "--unsafe-fast-kdf", env=env)
    append(ws, env, records(2))
    export = tmp_path / "export"
    run("log", "export", str(export), "-w", str(ws), env=env)
    key = run("log", "key", "-w", str(ws), env=env).stdout.strip()
    binding = export / "ailedger" / "binding"
    text = binding.read_text()
    forged = text.split("\n")
    forged[2] = " ".join([*forged[2].split(" ")[:3], "0x" + "66" * 20])
    binding.write_text("\n".join(forged))
    done = run("verify", str(export), "--key", key, "-w", str(ws), env=env, check=1)
    assert "binding" in one_line_error(done)


def test_log_anchor_refuses_a_restored_backup_that_forks(
    env: dict[str, str], tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    run("init", "-w", str(ws), "--unsafe-fast-kdf", env=env)
    append(ws, env, records(5))
    run("log", "anchor", "-w", str(ws), env=env)
    backup = tmp_path / "backup"
    backup.mkdir()
    for file in ws.glob("log.sqlite*"):
        shutil.copy(file, backup / file.name)
    append(ws, env, records(5, "j"))
    run("log", "anchor", "-w", str(ws), env=env)
    for file in ws.glob("log.sqlite*"):
        file.unlink()
    for file in backup.iterdir():
        shutil.copy(file, ws / file.name)
    append(ws, env, records(7, "other"))
    done = run("log", "anchor", "-w", str(ws), env=env, check=1)
    line = one_line_error(done)
    assert "anchor #1" in line and "size 10" in line and "backup" in line
    # nor is a checkpoint of the fork signed into an export
    refused = run("log", "export", str(tmp_path / "export"), "-w", str(ws), env=env, check=1)
    assert "anchor #1" in one_line_error(refused)
    assert not (tmp_path / "export" / "checkpoint").exists()
    # nor signed by `log checkpoint`, nor by `log proof` for an entry no checkpoint covers yet
    signed = run("log", "checkpoint", "-w", str(ws), env=env, check=1)
    assert "anchor #1" in one_line_error(signed) and signed.stdout == ""
    proved = run("log", "proof", "11", "-w", str(ws), env=env, check=1)
    assert "anchor #1" in one_line_error(proved) and proved.stdout == ""
    listed = run("chain", "anchors", origin_hash(ws), "-w", str(ws), "--json", env=env)
    assert [a["size"] for a in json.loads(listed.stdout)["anchors"]] == [5, 10]


@pytest.mark.parametrize(
    ("listing", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        (b"[1, 2", "not JSON"),
        (b"[true]", "not a list of tree sizes"),
        (b"[-1]", "not a list of tree sizes"),
        (b'{"a": 1}', "not a list of tree sizes"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_broken_checkpoint_listing_fails_in_one_line(
    env: dict[str, str], tmp_path: Path, listing: bytes, message: str
) -> None:
    ws = tmp_path / "ws"
    run("init", "-w", str(ws), "--unsafe-fast-kdf", env=env)
    append(ws, env, records(2))
    export = tmp_path / "export"
    run("log", "export", str(export), "-w", str(ws), env=env)
    (export / "ailedger" / "checkpoints.json").write_bytes(listing)
    key = run("log", "key", "-w", str(ws), env=env).stdout.strip()
    done = run("verify", str(export), "--key", key, "-w", str(ws), env=env, check=1)
    assert message in one_line_error(done)


def test_verify_bad_inputs_exit_2(env: dict[str, str], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    run("init", "-w", str(ws), "--unsafe-fast-kdf", env=env)
    append(ws, env, records(2))
    export = tmp_path / "export"
    run("log", "export", str(export), "-w", str(ws), env=env)
    key_file = tmp_path / "key"
    key_file.write_bytes(b"\xff\xfe not a key")
    done = run("verify", str(export), "--key-file", str(key_file), "-w", str(ws), env=env, check=2)
    assert "not UTF-8" in one_line_error(done)
    for operator in ("0x1234", "not-an-address"):
        done = run(
            "verify", str(export), "--key-file", str(key_file), "-w", str(ws),
            "--operator", operator, env=env, check=2,
        )  # fmt: skip
        one_line_error(done)
    key = run("log", "key", "-w", str(ws), env=env).stdout.strip()
    entry = tmp_path / "entry"
    entry.write_bytes(b"{}")
    for index in ("\u0661", "1_0", "-1"):
        done = run(
            "verify", str(export), "--key", key, "-w", str(ws), "--entry", f"{index}={entry}",
            env=env, check=2,
        )  # fmt: skip
        assert "--entry takes INDEX=FILE" in one_line_error(done)
