"""Behaviour only a real node shows: outages, reorgs, confirmations, chain ids."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from ailedger.errors import InputError, NodeUnavailable, WrongChain
from ailedger.ledger import AnchorRegistry, Ledger, LedgerSettings
from tests.conftest import FAST, AnvilNode, new_signer

ORIGIN = hashlib.sha256(b"rpc tests").digest()


def test_wrong_chain_id_is_refused(anvil: AnvilNode) -> None:
    with pytest.raises(WrongChain, match="serves chain id 31337, the workspace expects 1"):
        Ledger.connect(anvil.url, expected_chain_id=1)
    assert Ledger.connect(anvil.url, expected_chain_id=31337).chain_id == 31337


@pytest.mark.parametrize("url", ["127.0.0.1:8545", "ws://127.0.0.1:8545", "", "http://"])
def test_malformed_url(url: str) -> None:
    with pytest.raises(InputError):
        Ledger.connect(url)


def test_node_down_raises_node_unavailable_after_retries() -> None:
    from tests.conftest import free_port

    settings = LedgerSettings(retries=3, backoff=0.05)
    ledger = Ledger.connect(f"http://127.0.0.1:{free_port()}", settings=settings)
    started = time.monotonic()
    with pytest.raises(NodeUnavailable, match="did not answer after 3 attempts"):
        ledger.block_number()
    assert time.monotonic() - started >= 0.05 + 0.1


def test_node_killed_mid_run_then_back(own_anvil: AnvilNode) -> None:
    signer = new_signer()
    own_anvil.fund(signer.address)
    ledger = Ledger.connect(own_anvil.url, signer=signer, settings=FAST)
    registry = AnchorRegistry.deploy(ledger)
    registry.anchor(ORIGIN, 1, b"\x01" * 32)
    own_anvil.stop()

    def keep_anchoring() -> None:
        for size in range(2, 100):
            registry.anchor(ORIGIN, size, b"\x02" * 32)

    with pytest.raises(NodeUnavailable):
        keep_anchoring()
    own_anvil.start()
    # The node restarted from its saved state: the next anchor works, nonces resynchronised.
    done = registry.count(signer.address, ORIGIN)
    registry.anchor(ORIGIN, 1000, b"\x03" * 32)
    assert registry.count(signer.address, ORIGIN) == done + 1


def test_reorg_dropping_a_transaction_is_detected_and_resent(anvil: AnvilNode) -> None:
    signer = new_signer()
    anvil.fund(signer.address)
    ledger = Ledger.connect(anvil.url, signer=signer, settings=FAST)
    registry = AnchorRegistry.deploy(ledger)
    origin = hashlib.sha256(b"reorg").digest()
    snapshot = anvil.rpc("evm_snapshot")
    pending = registry.send_anchor(origin, 5, b"\x05" * 32)
    first = ledger.wait(pending)
    anvil.rpc("evm_revert", snapshot)
    assert registry.count(signer.address, origin) == 0
    again = ledger.wait(pending)
    assert again.tx_hash == first.tx_hash
    assert registry.count(signer.address, origin) == 1


def test_confirmations_wait_for_later_blocks(anvil: AnvilNode) -> None:
    signer = new_signer()
    anvil.fund(signer.address)
    ledger = Ledger.connect(anvil.url, signer=signer, settings=FAST)
    registry = AnchorRegistry.deploy(ledger)
    pending = registry.send_anchor(hashlib.sha256(b"conf").digest(), 1, b"\x01" * 32)

    def mine_later() -> None:
        time.sleep(0.3)
        anvil.rpc("evm_mine")
        anvil.rpc("evm_mine")

    miner = threading.Thread(target=mine_later)
    miner.start()
    receipt = ledger.wait(pending, confirmations=3)
    miner.join()
    assert ledger.block_number() - receipt.block_number + 1 >= 3


def test_a_call_the_node_fails_is_node_unavailable_not_a_revert(anvil: AnvilNode) -> None:
    """A node that forwards everything but answers every eth_call with an internal error: the
    registry read raises NodeUnavailable (exit 3), not TransactionReverted (a failed check)."""
    import http.server
    import json
    import urllib.request

    class Proxy(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = json.loads(body)
            if request["method"] == "eth_call":
                error = {"code": -32603, "message": "internal error: state unavailable"}
                answer = json.dumps({"jsonrpc": "2.0", "id": request["id"], "error": error})
                reply = answer.encode()
            else:
                forward = urllib.request.Request(  # noqa: S310 (anvil on loopback)
                    anvil.url, data=body, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(forward, timeout=10) as response:  # noqa: S310
                    reply = response.read()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    signer = new_signer()
    anvil.fund(signer.address)
    registry = AnchorRegistry.deploy(Ledger.connect(anvil.url, signer=signer, settings=FAST))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proxied = Ledger.connect(
            f"http://127.0.0.1:{server.server_address[1]}",
            settings=LedgerSettings(retries=2, backoff=0.01),
        )
        through = AnchorRegistry(ledger=proxied, address=registry.address)
        with pytest.raises(NodeUnavailable, match="internal error: state unavailable"):
            through.count(signer.address, ORIGIN)
    finally:
        server.shutdown()
        server.server_close()
