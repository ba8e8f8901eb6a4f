"""Round-2 probes W03b, N05 and C01, through the CLI's entry point in this process.

W03b: one witness key given under two names was reported as two witnesses. N05: a JSON-RPC
error object from the node made `verify` exit 1 (a check failed) instead of 3 (the node is
unavailable). C01: integers in other scripts' digits (``١``) were accepted as arguments.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog.witness import WitnessVerifier
from ailedger.cli import app
from ailedger.cli._common import ascii_int, ascii_int_params
from ailedger.ledger._rpc import NodeReplyError, check_reply
from tests.unit.auditlog import test_verify_witness_only
from tests.unit.auditlog.test_verify_witness_only import Run, make_export

#: fixture: the CLI's entry point in this process, as an auditor without any workspace runs it
cli = test_verify_witness_only.run

KEY = Ed25519PrivateKey.generate()


def _wkey(name: str) -> str:
    return WitnessVerifier.from_public_key(name, KEY.public_key()).verifier_key()


def test_w03b_one_key_under_two_names_is_one_witness(tmp_path: Path, cli: Run) -> None:
    log_key = Ed25519PrivateKey.generate()
    names = ["w1.example/witness", "evil.example/w"]
    vkey, _ = make_export(tmp_path / "export", log_key, [{"i": 1}], [(n, KEY) for n in names])
    base = ["verify", str(tmp_path / "export"), "--key", vkey]
    base += ["--witness", _wkey(names[0]), "--witness", _wkey(names[1])]
    done = cli(*base, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["witnesses"] == [names[0]]  # one entry: the name given first
    assert doc["witness_aliases"] == {names[0]: [names[1]]}
    text = cli(*base)
    assert text.returncode == 0, text.stderr
    assert f"cosigned by 1 witness(es): {names[0]} (the same key also named {names[1]})" in (
        text.stdout
    )
    # and it never makes a quorum of two (held before; kept)
    assert cli(*base, "--witness-quorum", "2").returncode == 2


@pytest.fixture
def erring_node() -> Iterator[str]:
    """A JSON-RPC node answering every request with an error object (100 kB message + ESC)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            message = "x" * 100_000 + "\x1b[2J"
            error = {"code": -32000, "message": message}
            body = json.dumps({"jsonrpc": "2.0", "id": request["id"], "error": error}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_n05_a_json_rpc_error_to_a_read_is_node_unavailable(
    tmp_path: Path, cli: Run, erring_node: str
) -> None:
    vkey, _ = make_export(tmp_path / "export", Ed25519PrivateKey.generate(), [{"i": 1}], [])
    done = cli("verify", str(tmp_path / "export"), "--key", vkey, "--rpc", erring_node)
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1
    assert "\x1b" not in done.stderr and len(done.stderr) < 1000


def test_n05_which_json_rpc_errors_are_answers() -> None:
    def error(request_id: int, code: int, message: str) -> bytes:
        reply = {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
        return json.dumps(reply).encode()

    for method in ("eth_chainId", "eth_getLogs", "eth_getCode", "eth_getTransactionReceipt"):
        with pytest.raises(NodeReplyError, match=f"answered {method} with error -32000"):
            check_reply(method, 1, error(1, -32000, "nope"), max_bytes=1 << 20)
    with pytest.raises(NodeReplyError) as caught:
        check_reply("eth_getLogs", 1, error(1, -32005, "limit exceeded"), max_bytes=1 << 20)
    assert caught.value.transient
    # a revert and a refused transaction are answers, handled as before
    reverted = check_reply("eth_call", 2, error(2, 3, "execution reverted: no"), max_bytes=1 << 20)
    assert reverted["error"]["message"] == "execution reverted: no"
    # a revert without revert data (message only), as some nodes send it
    bare = check_reply("eth_call", 4, error(4, -32000, "Execution Reverted"), max_bytes=1 << 20)
    assert bare["error"]["code"] == -32000
    # any other error to a call is the node failing, not the contract answering
    for code, message in ((-32603, "internal error"), (-32000, "header not found")):
        with pytest.raises(NodeReplyError, match=f"answered eth_call with error {code}"):
            check_reply("eth_call", 5, error(5, code, message), max_bytes=1 << 20)
    refused = error(3, -32000, "nonce too low")
    assert check_reply("eth_sendRawTransaction", 3, refused, max_bytes=1 << 20)["error"]


@pytest.mark.parametrize(
    "args",
    [
        ["log", "show", "١"],
        ["log", "erase", "１"],
        ["log", "proof", "1_0"],
        ["log", "anchor", "--confirmations", "٣"],
        ["witness", "serve", "--port", "８０"],
        ["verify", "x", "--key", "k", "--witness-quorum", "١"],
        ["log", "show", " 1"],
    ],
)
def test_c01_integers_take_ascii_digits_only(args: list[str], cli: Run) -> None:
    done = cli(*args)
    assert done.returncode == 2, done.stderr
    assert "not an integer in ASCII digits" in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_c01_every_integer_parameter_of_the_cli_is_ascii_only() -> None:
    import click

    def walk(command: click.Command) -> Iterator[click.Parameter]:
        yield from command.params
        if isinstance(command, click.Group):
            for sub in command.commands.values():
                yield from walk(sub)

    command = ascii_int_params(typer.main.get_command(app))
    integers = [p for p in walk(command) if isinstance(p.type, click.types.IntParamType)]
    assert len(integers) >= 10
    for param in integers:
        with pytest.raises(click.BadParameter):
            param.type.convert("١", param, None)
        assert param.type.convert("7", param, None) == 7
    assert ascii_int("+12") == 12 and ascii_int("-3") == -3
    for bad in ("١", "1_0", " 1", "", "0x10", "1" * 81):
        with pytest.raises(ValueError, match=r"^"):
            ascii_int(bad)
