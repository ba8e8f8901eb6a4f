"""A consortium end to end on one anvil node (issue 12, items 1 and 3), through the CLI.

Organisation A creates the consortium from its workspace; B joins with the file alone (no
hand-edited config.toml). A registers and seals a dataset for B, B opens it; B verifies A's
model from the artifact and its bundle, pinned to the consortium's registry; an outsider
verifies A's log export. ``chain fund`` on anvil, on the embedded chain, and refused by a node
that is not a development node.

The CLI runs in this process (``ailedger.cli.main``, the entry point, with its exit codes and
one-line errors): a separate interpreter per command costs seconds of imports each.
"""

from __future__ import annotations

import http.server
import json
import secrets
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from ailedger.consortium import read_consortium
from ailedger.ledger import Ledger
from ailedger.provenance.bundle import BundleMismatch, verify_with_bundle
from ailedger.workspace import Workspace
from tests.conftest import ANVIL, AnvilNode, free_port, stop_process


def cli(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> tuple[str, str]:
    """Run ``ailedger ARGS`` through its entry point; (stdout, stderr) once it exited ``code``."""
    from ailedger.cli import main

    saved = sys.argv
    sys.argv = ["ailedger", *args]
    try:
        main()
        done = 0
    except SystemExit as exc:
        done = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    finally:
        sys.argv = saved
    out, err = capsys.readouterr()
    assert done == code, (done, out, err)
    return out, err


def one_line(err: str) -> str:
    assert "Traceback" not in err
    # one error line; a node's retries before it are progress lines
    lines = [line for line in err.splitlines() if line.strip() and "; retrying in " not in line]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(autouse=True)
def _cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AILEDGER_PASSPHRASE", "correct horse battery staple")
    monkeypatch.delenv("AILEDGER_WORKSPACE", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./.ailedger from elsewhere


def account(ws: Path) -> str:
    return "0x" + str(json.loads((ws / "keys" / "ethereum.json").read_text())["address"])


def test_create_join_share_verify(
    anvil: AnvilNode, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a, b, file = tmp_path / "org-a", tmp_path / "org-b", tmp_path / "consortium.toml"
    # A on the node: unfunded first, told how to fund; `chain fund` on anvil; then deployed
    _, err = cli(capsys, "init", "-w", str(a), "--rpc", anvil.url, "--unsafe-fast-kdf", code=1)
    assert f"ailedger chain fund {account(a)}" in one_line(err)
    out, _ = cli(capsys, "chain", "fund", account(a), "--ether", "5", "-w", str(a), "--json")
    assert int(json.loads(out)["balance_wei"]) >= 5 * 10**18
    cli(capsys, "init", "-w", str(a), "--unsafe-fast-kdf")
    cli(capsys, "keys", "show", "-w", str(a))  # makes A's sharing key
    cli(capsys, "consortium", "create", "--out", str(file), "--name", "clinics", "-w", str(a))
    made = read_consortium(file)
    a_config = tomllib.loads((a / "config.toml").read_text())
    assert made.contracts == a_config["contracts"]["31337"]
    assert (made.chain_id, made.rpc, made.name) == (31337, anvil.url, "clinics")
    assert made.members[0].account == account(a)
    assert len(made.members[0].sharing_key) == 64 and made.members[0].log_key

    # B joins with the file only: same node, every contract, nothing deployed
    out, _ = cli(capsys, "init", "--join", str(file), "-w", str(b), "--unsafe-fast-kdf", "--json")
    assert json.loads(out)["contracts"] == made.contracts
    b_config = tomllib.loads((b / "config.toml").read_text())
    assert b_config["chain"]["rpc"] == anvil.url
    out, _ = cli(capsys, "keys", "show", "-w", str(b), "--json")
    b_key = json.loads(out)["x25519"]["hex"]
    cli(capsys, "consortium", "add-member", str(file), "-w", str(b))
    shown, _ = cli(capsys, "consortium", "show", "-w", str(b), "--json")
    members = json.loads(shown)["members"]
    assert [m["account"] for m in members] == [account(a), account(b)]
    assert members[1]["sharing_key"] == b_key

    # A registers a dataset, grants B, seals; B opens it with its own workspace as joined
    data = tmp_path / "records.csv"
    data.write_text("id,diagnosis\n1,flu\n")
    out, _ = cli(
        capsys, "provenance", "register", str(data), "--kind", "dataset", "-w", str(a), "--json"
    )
    dataset = json.loads(out)["digest"]
    cli(capsys, "share", "grant", dataset, b_key, "-w", str(a))
    sealed, opened = tmp_path / "records.sealed", tmp_path / "opened.csv"
    cli(capsys, "share", "seal", str(data), "-r", dataset, "-o", str(sealed), "-w", str(a))
    cli(
        capsys,
        "share", "open", str(sealed), "-r", dataset, "-o", str(opened),
        "--owner", account(a), "-w", str(b),
    )  # fmt: skip
    assert opened.read_bytes() == data.read_bytes()

    # A registers a model; B verifies it from artifact + bundle + the consortium's registry
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights" * 50)
    out, _ = cli(
        capsys,
        "provenance", "register", str(model), "--kind", "model",
        "--parent", dataset, "-w", str(a), "--json",
    )  # fmt: skip
    a_public = Workspace.open(a).public_key()
    with Ledger.connect(made.rpc, expected_chain_id=made.chain_id) as ledger:
        checked = verify_with_bundle(
            model,
            ledger,
            trusted_keys=[a_public],
            registry=made.contracts["ProvenanceRegistry"],
        )
        assert checked.registration.owner == account(a)
        with pytest.raises(BundleMismatch, match="not the trusted registry"):
            verify_with_bundle(
                model, ledger, trusted_keys=[a_public], registry=made.contracts["TrainingTask"]
            )
    pem = tmp_path / "org-a.pub"
    pem.write_bytes((a / "keys" / "ed25519.pub").read_bytes())
    out, _ = cli(
        capsys, "provenance", "verify", str(model), "--trust", str(pem), "-w", str(b), "--json"
    )
    assert json.loads(out)["owner"] == account(a)
    # in a workspace that joined, a bundle naming a registry other than the consortium's is
    # refused, even one that holds contract code
    bundle = json.loads((tmp_path / "model.bin.ailedger.json").read_text())
    bundle["registry"] = made.contracts["TrainingTask"]
    moved = tmp_path / "moved.ailedger.json"
    moved.write_text(json.dumps(bundle))
    _, err = cli(
        capsys,
        "provenance", "verify", str(model), "--trust", str(pem), "--bundle", str(moved),
        "-w", str(b), code=1,
    )  # fmt: skip
    assert "not the trusted registry" in one_line(err)

    # an outsider verifies A's export with only the key and the node; then cannot reach it
    records = tmp_path / "decisions.jsonl"
    records.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(3)))
    cli(capsys, "log", "append", str(records), "-w", str(a))
    cli(capsys, "log", "anchor", "-w", str(a))
    export = tmp_path / "export"
    cli(capsys, "log", "export", str(export), "-w", str(a))
    key, _ = cli(capsys, "log", "key", "-w", str(a))
    assert key.strip() == made.members[0].log_key
    out, _ = cli(capsys, "verify", str(export), "--key", key.strip(), "--rpc", anvil.url, "--json")
    assert json.loads(out)["anchors_trust"] == "chain" and json.loads(out)["anchors"] >= 1
    gone = f"http://127.0.0.1:{free_port()}"
    _, err = cli(capsys, "verify", str(export), "--key", key.strip(), "--rpc", gone, code=3)
    assert "retrying in" in err  # the retries are progress on stderr, before the one error
    line = one_line(err)
    assert "anchors are on chain 31337" in line and gone in line


@pytest.fixture
def other_chain(tmp_path: Path) -> Iterator[str]:
    """An anvil node of chain id 4242 that this test starts and stops."""
    port = free_port()
    process = subprocess.Popen(
        [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--hardfork", "prague",
         "--silent", "--chain-id", "4242"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    node = AnvilNode(port=port, state=tmp_path / "unused.json", process=process)
    try:
        for _ in range(200):
            try:
                node.rpc("eth_chainId")
                break
            except OSError:
                threading.Event().wait(0.05)
        yield node.url
    finally:
        stop_process(process)


def test_join_refuses_wrong_chain_missing_code_and_no_node(
    anvil: AnvilNode, other_chain: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    nowhere = "0x" + "11" * 20
    base = {
        "format": 1,
        "name": "c",
        "chain_id": 31337,
        "rpc": anvil.url,
        "contracts": {
            "AnchorRegistry": nowhere,
            "ProvenanceRegistry": nowhere,
            "TrainingTask": nowhere,
        },
        "members": [{"account": nowhere}],
    }

    def join(name: str, code: int, **changes: object) -> str:
        import tomli_w

        path = tmp_path / f"{name}.toml"
        path.write_text(tomli_w.dumps({**base, **changes}))
        ws = tmp_path / name
        _, err = cli(
            capsys, "init", "--join", str(path), "-w", str(ws), "--unsafe-fast-kdf", code=code
        )
        assert not ws.exists()  # nothing half made
        return one_line(err)

    assert "no contract at" in join("no-code", 1)
    line = join("wrong-chain", 2, rpc=other_chain)
    assert "on chain 31337" in line and "serves chain 4242" in line
    line = join("no-node", 3, rpc=f"http://127.0.0.1:{free_port()}")
    assert "cannot be reached" in line or "did not answer" in line


def test_export_on_another_chain_is_exit_2(
    anvil: AnvilNode, other_chain: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    cli(capsys, "init", "-w", str(ws), "--rpc", anvil.url, "--unsafe-fast-kdf", code=1)
    anvil.fund(account(ws))
    cli(capsys, "init", "-w", str(ws), "--unsafe-fast-kdf")
    records = tmp_path / "r.jsonl"
    records.write_text('{"i": 1}\n')
    cli(capsys, "log", "append", str(records), "-w", str(ws))
    cli(capsys, "log", "anchor", "-w", str(ws))
    cli(capsys, "log", "export", str(tmp_path / "export"), "-w", str(ws))
    key, _ = cli(capsys, "log", "key", "-w", str(ws))
    _, err = cli(
        capsys, "verify", str(tmp_path / "export"), "--key", key.strip(), "--rpc", other_chain,
        code=2,
    )  # fmt: skip
    line = one_line(err)
    assert "chain 31337" in line and "serves chain 4242" in line


def test_chain_fund_on_the_embedded_chain_and_create_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    cli(capsys, "init", "-w", str(ws), "--unsafe-fast-kdf")
    someone = "0x" + secrets.token_hex(20)
    out, _ = cli(capsys, "chain", "fund", someone, "--ether", "2.5", "-w", str(ws), "--json")
    doc = json.loads(out)
    assert (doc["backend"], int(doc["balance_wei"])) == ("embedded", 25 * 10**17)
    _, err = cli(capsys, "consortium", "create", "--out", str(tmp_path / "c.toml"), "-w", str(ws),
                 code=2)  # fmt: skip
    assert "other organisations cannot reach" in one_line(err)
    assert not (tmp_path / "c.toml").exists()
    _, err = cli(capsys, "chain", "fund", someone, "--ether", "-1", "-w", str(ws), code=2)
    assert "--ether" in one_line(err)


class _NotDev(http.server.BaseHTTPRequestHandler):
    """A node that is no development node: a geth-like client version, chain 1."""

    answers: ClassVar[dict[str, str]] = {
        "web3_clientVersion": "Geth/v1.14.0-stable/linux-amd64/go1.22",
        "eth_chainId": "0x1",
    }
    #: methods asked, filled by the server thread and read by the test
    called: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        batch = request if isinstance(request, list) else [request]
        replies = []
        for call in batch:
            self.called.append(call["method"])
            result = self.answers.get(call["method"], "0x0")
            replies.append({"jsonrpc": "2.0", "id": call["id"], "result": result})
        body = json.dumps(replies if isinstance(request, list) else replies[0]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def not_dev_node() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotDev)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_chain_fund_refused_on_a_node_that_is_not_a_dev_node(
    not_dev_node: str, capsys: pytest.CaptureFixture[str]
) -> None:
    someone = "0x" + secrets.token_hex(20)
    _NotDev.called.clear()
    _, err = cli(capsys, "chain", "fund", someone, "--rpc", not_dev_node, code=2)
    line = one_line(err)
    assert "not a development node: send ether to" in line and "Geth/v1.14.0" in line
    assert "anvil_setBalance" not in _NotDev.called
