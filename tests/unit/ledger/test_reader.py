"""ChainReader: records equal what was sent and what the node reports, on anvil and the embedded
chain; the batch and fallback paths agree; faulty nodes raise one clear error of the right class."""

from __future__ import annotations

import http.server
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from eth_account import Account
from eth_utils import keccak, to_checksum_address

from ailedger.errors import (
    BlockNotFound,
    InputError,
    MalformedChainData,
    NodeUnavailable,
)
from ailedger.ledger import ChainReader, Ledger, LedgerSettings, Signer
from tests.conftest import ROOT, AnvilNode, free_port
from tests.hostile_node import hostile  # noqa: F401  (a fixture)

FAST = LedgerSettings(retries=2, backoff=0.01, backoff_max=0.02)
ERC20 = json.loads((ROOT / "node_modules/@uniswap/v2-core/build/ERC20.json").read_text())
ERC20_CODE = "0x" + str(ERC20["bytecode"]).removeprefix("0x")
TRANSFER_TOPIC = bytes.fromhex("ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef")
GWEI = 10**9


def _word(value: int) -> str:
    return value.to_bytes(32, "big").hex()


def _hex(value: Any) -> int:
    return int(str(value), 16)


class Sent:
    """Transactions of every kind signed here and mined together in one anvil block."""

    def __init__(self, node: AnvilNode) -> None:
        self.node = node
        self.account = Account.from_key(secrets.token_bytes(32))
        node.fund(self.account.address)
        self.chain_id = _hex(node.rpc("eth_chainId"))
        self.nonce = _hex(node.rpc("eth_getTransactionCount", self.account.address, "latest"))
        self.txs: dict[bytes, dict[str, Any]] = {}

    def send(self, tx: dict[str, Any]) -> bytes:
        tx = {"chainId": self.chain_id, "nonce": self.nonce, **tx}
        self.nonce += 1
        signed = self.account.sign_transaction(tx)
        tx_hash = bytes.fromhex(
            str(self.node.rpc("eth_sendRawTransaction", "0x" + signed.raw_transaction.hex()))[2:]
        )
        self.txs[tx_hash] = tx
        return tx_hash


@pytest.fixture(scope="module")
def module_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilNode]:
    """A node for this module's read-only tests (nothing else mines on it)."""
    node = AnvilNode(port=free_port(), state=tmp_path_factory.mktemp("reader") / "state.json")
    node.start()
    yield node
    node.stop()


@pytest.fixture(scope="module")
def mixed_block(module_node: AnvilNode) -> tuple[AnvilNode, Sent, int]:
    """One block with a legacy, an access-list, an EIP-1559 transfer, a contract creation and
    (next block) a token transfer that logs; returns (node, sent, first block number)."""
    node = module_node
    sent = Sent(node)
    node.rpc("evm_setAutomine", False)
    recipient = to_checksum_address("0x" + "ab" * 20)
    sent.send({"to": recipient, "value": 7, "gas": 21000, "gasPrice": 3 * GWEI})
    sent.send(
        {
            "to": recipient,
            "value": 8,
            "gas": 30000,
            "gasPrice": 3 * GWEI,
            "accessList": [],
            "type": 1,
        }
    )
    sent.send(
        {
            "to": recipient,
            "value": 9,
            "gas": 21000,
            "maxFeePerGas": 5 * GWEI,
            "maxPriorityFeePerGas": 2 * GWEI,
            "type": 2,
        }
    )
    creation = sent.send(
        {
            "data": ERC20_CODE + _word(10**24),
            "value": 0,
            "gas": 3_000_000,
            "maxFeePerGas": 5 * GWEI,
            "maxPriorityFeePerGas": GWEI,
            "type": 2,
        }
    )
    node.rpc("evm_mine")
    first = _hex(node.rpc("eth_blockNumber"))
    token = node.rpc("eth_getTransactionReceipt", "0x" + creation.hex())["contractAddress"]  # type: ignore[index]
    sent.send(
        {
            "to": to_checksum_address(token),
            "data": "0xa9059cbb" + _word(int(recipient, 16)) + _word(12345),
            "value": 0,
            "gas": 100_000,
            "maxFeePerGas": 5 * GWEI,
            "maxPriorityFeePerGas": GWEI,
            "type": 2,
        }
    )
    node.rpc("evm_mine")
    node.rpc("evm_setAutomine", True)
    return node, sent, first


def _check_against_node(node: AnvilNode, sent: Sent, reader: ChainReader, first: int) -> None:
    blocks = list(reader.blocks(first, first + 2))
    assert [b.number for b in blocks] == [first, first + 1]
    assert blocks[1].parent_hash == blocks[0].hash
    seen = 0
    for block in blocks:
        raw_block: Any = node.rpc("eth_getBlockByNumber", hex(block.number), False)
        assert block.hash.hex() == raw_block["hash"][2:]
        assert block.timestamp == _hex(raw_block["timestamp"])
        assert block.base_fee_per_gas == _hex(raw_block["baseFeePerGas"])
        assert block.gas_used == sum(tx.gas_used for tx in block.transactions)
        for index, tx in enumerate(block.transactions):
            mine = sent.txs[tx.hash]
            seen += 1
            assert tx.index == index and tx.block_number == block.number
            assert tx.sender == sent.account.address
            assert tx.nonce == mine["nonce"]
            assert tx.value == mine["value"]
            assert tx.gas_limit == mine["gas"]
            assert tx.input == bytes.fromhex(mine.get("data", "0x")[2:])
            assert tx.type == mine.get("type", 0)
            assert tx.to == mine.get("to")
            assert tx.is_creation == ("to" not in mine)
            assert tx.max_fee_per_gas == mine.get("maxFeePerGas")
            assert tx.max_priority_fee_per_gas == mine.get("maxPriorityFeePerGas")
            receipt: Any = node.rpc("eth_getTransactionReceipt", "0x" + tx.hash.hex())
            assert tx.status == _hex(receipt["status"]) == 1
            assert tx.gas_used == _hex(receipt["gasUsed"])
            assert tx.effective_gas_price == _hex(receipt["effectiveGasPrice"])
            if "gasPrice" in mine:
                assert tx.effective_gas_price == mine["gasPrice"]
            else:
                tip = min(
                    mine["maxPriorityFeePerGas"], mine["maxFeePerGas"] - block.base_fee_per_gas
                )
                assert tx.effective_gas_price == block.base_fee_per_gas + tip
            if tx.is_creation:
                assert tx.contract_address == to_checksum_address(receipt["contractAddress"])
                # the CREATE address: keccak(rlp([sender, nonce]))[12:] (Yellow Paper eq. 86)
                assert 0 < tx.nonce < 0x80  # a one-byte RLP item
                rlp = bytes([0xD6, 0x94]) + bytes.fromhex(tx.sender[2:]) + bytes([tx.nonce])
                assert tx.contract_address == to_checksum_address(keccak(rlp)[12:])
            else:
                assert tx.contract_address is None
            assert len(tx.logs) == len(receipt["logs"])
            for log, raw_log in zip(tx.logs, receipt["logs"], strict=True):
                assert log.address == to_checksum_address(raw_log["address"])
                assert log.log_index == _hex(raw_log["logIndex"])
            if tx.selector == bytes.fromhex("a9059cbb"):
                (log,) = tx.logs
                assert log.topics[0] == TRANSFER_TOPIC
                assert log.topics[1][12:].hex() == tx.sender[2:].lower()
                assert log.topics[2][12:] == bytes.fromhex("ab" * 20)
                assert int.from_bytes(log.data, "big") == 12345
                assert log.address == tx.to
    assert seen == len(sent.txs) == 5


def test_reader_round_trip_on_anvil(mixed_block: tuple[AnvilNode, Sent, int]) -> None:
    node, sent, first = mixed_block
    with ChainReader.connect(node.url, batch_size=3) as reader:
        assert reader.chain_id() == _hex(node.rpc("eth_chainId"))
        assert reader.head() == first + 1
        _check_against_node(node, sent, reader, first)
        assert reader._block_receipts is True  # anvil has eth_getBlockReceipts
        assert reader.block(first) == next(reader.blocks(first, first + 1))
        assert reader.block_hash(first) == reader.block(first).hash
        expected = list(reader.blocks(first, first + 2))
    with Ledger.connect(node.url, settings=FAST) as ledger:
        shared = ChainReader.from_ledger(ledger, batch_size=1)
        assert list(shared.blocks(first, first + 2)) == expected
        shared.close()
        assert ledger.block_number() == first + 1  # the ledger's connection still works


# -- a node in front of anvil that limits or breaks what it forwards --------------------------


class Proxy:
    """Forwards JSON-RPC to ``upstream``; ``mode`` picks how it limits or breaks replies."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = "pass"
        self.mutate: Callable[[dict[str, Any]], None] = lambda item: None
        self.posts = 0
        self.calls = 0
        self.session = requests.Session()


def _handler(proxy: Proxy) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            proxy.posts += 1
            items = request if isinstance(request, list) else [request]
            proxy.calls += len(items)
            mode = proxy.mode
            try:
                if mode == "sleep":
                    time.sleep(1.0)
                elif mode == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                elif mode == "text":
                    self._send(b"<html>not json</html>")
                    return
                elif mode == "no-batch" and isinstance(request, list):
                    self._send(
                        json.dumps(
                            {
                                "jsonrpc": "2.0",
                                "id": None,
                                "error": {"code": -32600, "message": "no batches"},
                            }
                        ).encode()
                    )
                    return
                refused = [
                    i
                    for i in items
                    if mode == "no-block-receipts" and i["method"] == "eth_getBlockReceipts"
                ]
                forwarded = [i for i in items if i not in refused]
                replies = self.session_post(forwarded) if forwarded else []
                for item in replies:
                    proxy.mutate(item)
                replies += [
                    {
                        "jsonrpc": "2.0",
                        "id": i["id"],
                        "error": {"code": -32601, "message": "Method not found"},
                    }
                    for i in refused
                ]
                body = replies if isinstance(request, list) else replies[0]
                self._send(json.dumps(body).encode())
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass

        def session_post(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            reply = proxy.session.post(proxy.upstream, json=items, timeout=10).json()
            return list(reply)

    return Handler


@pytest.fixture
def proxy(mixed_block: tuple[AnvilNode, Sent, int]) -> Iterator[tuple[str, Proxy]]:
    node, _, _ = mixed_block
    state = Proxy(node.url)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()
    state.session.close()


def test_fallback_without_block_receipts_reads_the_same(
    mixed_block: tuple[AnvilNode, Sent, int], proxy: tuple[str, Proxy]
) -> None:
    node, sent, first = mixed_block
    url, state = proxy
    with ChainReader.connect(node.url, batch_size=10) as direct:
        expected = list(direct.blocks(first, first + 2))
    state.mode = "no-block-receipts"
    with ChainReader.connect(url, batch_size=10, settings=FAST) as reader:
        assert list(reader.blocks(first, first + 2)) == expected
        assert reader._block_receipts is False  # detected once, then not asked again
        _check_against_node(node, sent, reader, first)
    # batching: 2 blocks + their 5 receipts are 7 calls but far fewer HTTP requests
    assert state.calls >= 7
    assert state.posts < state.calls


def test_batches_carry_many_calls(
    mixed_block: tuple[AnvilNode, Sent, int], proxy: tuple[str, Proxy]
) -> None:
    _, _, first = mixed_block
    url, state = proxy
    with ChainReader.connect(url, batch_size=10, settings=FAST) as reader:
        state.posts = state.calls = 0
        blocks = list(reader.blocks(0, first + 2))
    assert [b.number for b in blocks] == list(range(first + 2))
    # each batch of up to 10 blocks is one request with the blocks and their receipts
    assert state.calls == 2 * len(blocks)
    assert state.posts == -(-len(blocks) // 10)


def test_block_batches_are_the_blocks_as_read_together(
    mixed_block: tuple[AnvilNode, Sent, int], proxy: tuple[str, Proxy]
) -> None:
    _, _, first = mixed_block
    url, state = proxy
    with ChainReader.connect(url, batch_size=3, settings=FAST) as reader:
        expected = list(reader.blocks(0, first + 2))
        state.posts = 0
        batches = list(reader.block_batches(0, first + 2))
        assert state.posts == len(batches)  # one request per list: nothing waits inside one
        assert [b for batch in batches for b in batch] == expected
        assert [len(batch) for batch in batches[:-1]] == [3] * (len(batches) - 1)
        assert 1 <= len(batches[-1]) <= 3
        with pytest.raises(InputError, match="empty or inverted"):
            reader.block_batches(5, 5)


def test_a_node_without_batches_is_read_call_by_call(
    mixed_block: tuple[AnvilNode, Sent, int], proxy: tuple[str, Proxy]
) -> None:
    node, sent, first = mixed_block
    url, state = proxy
    state.mode = "no-batch"
    with ChainReader.connect(url, batch_size=10, settings=FAST) as reader:
        _check_against_node(node, sent, reader, first)


@pytest.mark.parametrize(
    ("mode", "message"),
    [("sleep", "did not answer"), ("drop", "did not answer"), ("text", "malformed reply")],
)
def test_faulty_node_is_unavailable(
    mixed_block: tuple[AnvilNode, Sent, int], proxy: tuple[str, Proxy], mode: str, message: str
) -> None:
    _, _, first = mixed_block
    url, state = proxy
    state.mode = mode
    with (
        ChainReader.connect(url, timeout=0.3, settings=FAST) as reader,
        pytest.raises(NodeUnavailable, match=message) as caught,
    ):
        list(reader.blocks(first, first + 2))
    assert not isinstance(caught.value, MalformedChainData)
    assert caught.value.exit_code == 3
    assert "\n" not in str(caught.value)


def _in_block(item: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> None:
    result = item.get("result")
    if isinstance(result, dict) and "transactions" in result:
        change(result)


def _in_receipts(item: dict[str, Any], change: Callable[[list[Any]], None]) -> None:
    result = item.get("result")
    if isinstance(result, list):
        change(result)


MALFORMED: dict[str, Callable[[dict[str, Any]], None]] = {
    "bad hash": lambda item: _in_block(item, lambda b: b.update(parentHash="0x1234")),
    "another block": lambda item: _in_block(item, lambda b: b.update(number="0x0")),
    "tx not an object": lambda item: _in_block(
        item, lambda b: b.update(transactions=["0x" + "00" * 32])
    ),
    "bad address": lambda item: _in_block(
        item, lambda b: [t.update({"from": "0x123"}) for t in b["transactions"]]
    ),
    "missing value": lambda item: _in_block(
        item, lambda b: [t.pop("value") for t in b["transactions"]]
    ),
    "receipt for another tx": lambda item: _in_receipts(
        item, lambda rs: [r.update(transactionHash="0x" + "11" * 32) for r in rs]
    ),
    "missing receipt": lambda item: _in_receipts(item, lambda rs: rs.pop() if rs else None),
    "bad topic": lambda item: _in_receipts(
        item, lambda rs: [log.update(topics=["0xdead"]) for r in rs for log in r["logs"]]
    ),
    "status 7": lambda item: _in_receipts(item, lambda rs: [r.update(status="0x7") for r in rs]),
    "tx at another position": lambda item: _in_block(
        item, lambda b: [t.update(transactionIndex="0x63") for t in b["transactions"]]
    ),
    "tx in another block": lambda item: _in_block(
        item, lambda b: [t.update(blockNumber="0x0") for t in b["transactions"]]
    ),
    "bad tx block number": lambda item: _in_block(
        item, lambda b: [t.update(blockNumber="12") for t in b["transactions"]]
    ),
    "receipt of another block number": lambda item: _in_receipts(
        item, lambda rs: [r.update(blockNumber="0x0") for r in rs]
    ),
    "receipt at another position": lambda item: _in_receipts(
        item, lambda rs: [r.update(transactionIndex="0x63") for r in rs]
    ),
    "log of another tx": lambda item: _in_receipts(
        item,
        lambda rs: [log.update(transactionHash="0x" + "22" * 32) for r in rs for log in r["logs"]],
    ),
}


def _pad(value: str) -> str:
    """The same quantity with leading zeros (which some nodes send)."""
    return "0x000" + value[2:]


def test_links_written_differently_still_match(
    mixed_block: tuple[AnvilNode, Sent, int], proxy: tuple[str, Proxy]
) -> None:
    """The link checks compare values, not text: padded numbers and upper-case hashes pass."""
    node, _, first = mixed_block
    with ChainReader.connect(node.url) as direct:
        expected = list(direct.blocks(first, first + 2))
    url, state = proxy

    def rewrite(item: dict[str, Any]) -> None:
        def block(b: dict[str, Any]) -> None:
            for t in b["transactions"]:
                t.update(
                    blockNumber=_pad(t["blockNumber"]),
                    transactionIndex=_pad(t["transactionIndex"]),
                    blockHash="0x" + t["blockHash"][2:].upper(),
                )

        def receipts(rs: list[Any]) -> None:
            for r in rs:
                r.update(blockNumber=_pad(r["blockNumber"]))
                for log in r["logs"]:
                    log.update(transactionHash="0x" + log["transactionHash"][2:].upper())

        _in_block(item, block)
        _in_receipts(item, receipts)

    state.mutate = rewrite
    with ChainReader.connect(url, settings=FAST) as reader:
        assert list(reader.blocks(first, first + 2)) == expected


@pytest.mark.parametrize("fault", sorted(MALFORMED))
def test_malformed_chain_data(
    mixed_block: tuple[AnvilNode, Sent, int], proxy: tuple[str, Proxy], fault: str
) -> None:
    _, _, first = mixed_block
    url, state = proxy
    state.mutate = MALFORMED[fault]
    with (
        ChainReader.connect(url, settings=FAST) as reader,
        pytest.raises(MalformedChainData, match="sent malformed chain data") as caught,
    ):
        list(reader.blocks(first, first + 2))
    assert caught.value.exit_code == 3
    assert "\n" not in str(caught.value)


def test_ranges_and_urls_are_checked(anvil: AnvilNode) -> None:
    with pytest.raises(InputError, match="WebSocket"):
        ChainReader.connect("ws://127.0.0.1:8545")
    with ChainReader.connect(anvil.url, settings=FAST) as reader:
        head = reader.head()
        with pytest.raises(InputError, match="empty or inverted"):
            reader.blocks(5, 5)
        with pytest.raises(InputError, match="empty or inverted"):
            reader.blocks(5, 2)
        with pytest.raises(InputError, match="non-negative"):
            reader.blocks(-1, 2)
        with pytest.raises(BlockNotFound, match=f"block {head + 1} is not on the chain"):
            list(reader.blocks(head, head + 2))
        with pytest.raises(InputError, match="percentiles"):
            reader.fee_history(2, None, [50, 10])
        with pytest.raises(InputError, match="block_count"):
            reader.fee_history(0)


def test_fee_history_computed_from_blocks_matches_the_node(
    mixed_block: tuple[AnvilNode, Sent, int],
) -> None:
    node, _, first = mixed_block
    with ChainReader.connect(node.url, settings=FAST) as reader:
        reported = reader.fee_history(first + 2, None, [0, 25, 50, 90, 100])
        assert reader._fee_history is True
        raw: Any = node.rpc("eth_feeHistory", hex(first + 2), "latest", [0, 25, 50, 90, 100])
        assert reported.oldest == _hex(raw["oldestBlock"])
        assert reported.base_fee_per_gas == tuple(_hex(b) for b in raw["baseFeePerGas"])
        assert reported.newest == first + 1
        reader._fee_history = False  # as on a node (or the embedded chain) without the method
        computed = reader.fee_history(first + 2, None, [0, 25, 50, 90, 100])
    assert computed == reported


def test_embedded_chain_reads_with_the_same_meaning(tmp_path: Path) -> None:
    funder = Signer.from_key(secrets.token_bytes(32))
    with Ledger.embedded(
        tmp_path / "chain", signer=funder, genesis_balances={funder.address: 10**24}
    ) as ledger:
        transfer = ledger.transfer("0x" + "cd" * 20, 11)
        pending = ledger.send({"data": ERC20_CODE + _word(1000), "gas": 3_000_000})
        created = ledger.wait(pending)
        reader = ChainReader.from_ledger(ledger)
        assert reader.chain_id() == ledger.chain_id
        assert reader.head() == ledger.block_number() == 2
        blocks = list(reader.blocks(0, 3))
        (tx,) = blocks[transfer.block_number].transactions
        assert tx.hash.hex() == transfer.tx_hash[2:]
        assert (tx.to, tx.value, tx.sender, tx.type) == (
            to_checksum_address("0x" + "cd" * 20),
            11,
            funder.address,
            2,
        )
        assert tx.gas_used == transfer.gas_used and tx.status == 1
        (creation,) = blocks[created.block_number].transactions
        assert creation.is_creation
        assert creation.contract_address == to_checksum_address(created.raw["contractAddress"])
        assert blocks[2].parent_hash == blocks[1].hash
        history = reader.fee_history(3, None, [50])
        assert history.oldest == 0 and history.base_fee_per_gas[:3] == tuple(
            b.base_fee_per_gas for b in blocks
        )
        with pytest.raises(BlockNotFound):
            reader.block(3)
        reader.close()


@pytest.mark.parametrize(
    "path",
    [
        "nested",
        "nested-result",
        "huge",
        "huge-announced",
        "text",
        "not-utf8",
        "wrong-id",
        "duplicate-keys",
        "error-object",
        "redirect",
        "bad-hex",
    ],
)
def test_hostile_replies_are_refused_in_bounds(hostile: str, path: str) -> None:  # noqa: F811
    reader = ChainReader.connect(f"{hostile}/{path}", timeout=5, settings=FAST)
    with pytest.raises(NodeUnavailable) as caught:
        reader.head()
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400
    reader.close()


def test_quick_depth_scan_agrees_with_the_general_one() -> None:
    from ailedger.ledger.reader import _shallow

    inside_strings = b'{"a": "' + b"[{" * 200 + b'", "b": [1, {"c": "]]]"}]}'
    assert _shallow(inside_strings)
    assert _shallow(b"[" * 64 + b"]" * 64)
    assert not _shallow(b"[" * 65 + b"]" * 65)
    assert not _shallow(b'{"a": "\\"[[["}')  # escapes: left to parse_json's general scan
    assert not _shallow(b'"x"' + b"[" * 100)
