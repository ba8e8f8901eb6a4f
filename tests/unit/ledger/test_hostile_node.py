"""A hostile JSON-RPC node, in process: every bad reply is NodeUnavailable with one line.

The node is :mod:`tests.hostile_node` (a real HTTP server on 127.0.0.1). web3 has raised the
recursion limit to 100,000 in this process too, so a nested reply reaching the C decoder would
crash the test run (SIGSEGV) rather than fail one test.
"""

from __future__ import annotations

import json
import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ailedger.errors import InputError, NodeUnavailable
from ailedger.ledger import Ledger, LedgerSettings
from ailedger.ledger._rpc import MAX_REPLY_BYTES, RESULT_CHECKS, NodeReplyError, check_reply
from ailedger.ledger._settings import check_rpc_url
from ailedger.ledger.contracts import load_artifact
from tests.hostile_node import hostile  # noqa: F401 (fixture)

ONCE = LedgerSettings(retries=1, request_timeout=5.0)


def test_web3_raised_the_recursion_limit() -> None:
    assert sys.getrecursionlimit() >= 100_000  # the condition under which nesting crashed


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("nested", "JSON nested deeper than 64 levels"),
        ("nested-result", "JSON nested deeper than 64 levels"),
        ("huge", f"sent a reply larger than {MAX_REPLY_BYTES} bytes"),
        ("huge-announced", f"sent a reply larger than {MAX_REPLY_BYTES} bytes"),
        ("text", "sent a malformed reply to eth_chainId: the reply: not JSON"),
        ("html", "answered HTTP 502"),
        ("not-utf8", "not UTF-8"),
        ("wrong-type", "result: expected a hex quantity, got an object"),
        ("bad-hex", "result: expected a hex quantity, got '0xzz'"),
        ("list", "expected a JSON-RPC object, got a list"),
        ("wrong-id", "the reply's id is"),
        ("duplicate-keys", "duplicate key 'result'"),
        ("redirect", "answered HTTP 307"),
        ("error-object", "an error must be an object with an integer code and a message"),
        ("nothing-here", "answered HTTP 404"),
    ],
)
def test_hostile_reply_is_node_unavailable(
    hostile: str,  # noqa: F811 (fixture)
    path: str,
    message: str,
) -> None:
    url = f"{hostile}/{path}"
    with pytest.raises(NodeUnavailable) as caught:
        _ = Ledger.connect(url, settings=ONCE).chain_id
    text = str(caught.value)
    assert text.startswith(f"the node at {url} ")
    assert message in text
    assert "\n" not in text


def test_slow_drip_is_cut_at_the_deadline(hostile: str) -> None:  # noqa: F811 (fixture)
    settings = LedgerSettings(retries=1, request_timeout=0.5)
    with pytest.raises(NodeUnavailable, match=r"did not finish its reply within 0\.5 s"):
        _ = Ledger.connect(f"{hostile}/drip", settings=settings).chain_id


def test_garbage_inside_logs_is_node_unavailable(hostile: str) -> None:  # noqa: F811 (fixture)
    ledger = Ledger.connect(f"{hostile}/garbage-logs", settings=ONCE)
    registry = ledger.contract(load_artifact("AnchorRegistry"), "0x" + "11" * 20, check_code=False)
    with pytest.raises(NodeUnavailable, match="sent a reply that does not fit its request"):
        ledger.logs(registry, registry.events._events[0]["name"])


def test_transient_http_errors_are_retried(hostile: str) -> None:  # noqa: F811 (fixture)
    settings = LedgerSettings(retries=3, backoff=0.01)
    with pytest.raises(NodeUnavailable, match="answered HTTP 502 after 3 attempts"):
        _ = Ledger.connect(f"{hostile}/html", settings=settings).chain_id


@pytest.mark.parametrize(
    ("method", "result", "problem"),
    [
        ("eth_getTransactionReceipt", {"status": "0x1"}, "field 'blockNumber'"),
        ("eth_getTransactionReceipt", "0x1", "expected an object"),
        ("eth_getBlockByNumber", {"number": "0x1", "hash": 7}, "field 'hash'"),
        ("eth_sendRawTransaction", "0x1234", "32-byte hex hash"),
        ("eth_getCode", "0x123", "hex data"),
        ("eth_getLogs", {"a": 1}, "expected a list"),
        ("eth_chainId", True, "got a boolean"),
    ],
)
def test_results_of_the_wrong_type_are_refused(method: str, result: object, problem: str) -> None:
    raw = json.dumps({"jsonrpc": "2.0", "id": 3, "result": result}).encode()
    with pytest.raises(NodeReplyError, match=problem):
        check_reply(method, 3, raw, max_bytes=MAX_REPLY_BYTES)


def test_good_replies_pass() -> None:
    raw = b'{"jsonrpc": "2.0", "id": 3, "result": null}'
    assert check_reply("eth_getTransactionReceipt", 3, raw, max_bytes=100)["result"] is None
    error = b'{"jsonrpc": "2.0", "id": 3, "error": {"code": -32000, "message": "a\\nb  c"}}'
    assert (
        check_reply("eth_sendRawTransaction", 3, error, max_bytes=100)["error"]["message"]
        == "a b c"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:99999", "Port out of range"),
        ("http://127.0.0.1:0", "port must be 1-65535"),
        ("http://h:abc", "Port could not be cast"),
        ("http://", "names no host"),
        ("http://:8545", "names no host"),
        ("ftp://127.0.0.1:8545", "not an http(s) JSON-RPC URL"),
        ("file:///etc/passwd", "not an http(s) JSON-RPC URL"),
        ("127.0.0.1:8545", "not an http(s) JSON-RPC URL"),
        ("ws://127.0.0.1:8546", "WebSocket nodes are not supported"),
        ("wss://node.example", "WebSocket nodes are not supported"),
        ("http://[::1", "Invalid IPv6 URL"),
        ("http://a b/", "whitespace"),
        ("http://a\x00b/", "control characters"),
        ("", "empty"),
    ],
)
def test_bad_urls_are_refused_before_any_request(url: str, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        check_rpc_url(url)
    with pytest.raises(InputError, match=re.escape(message)):
        Ledger.connect(url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8545", "https://node.example/v3/key", "http://[::1]:8545/"]
)
def test_good_urls_pass(url: str) -> None:
    assert check_rpc_url(url) == url


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=20)
    | st.sampled_from(["0x1", "0x"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_ENVELOPES = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "1.0", 2]), "id": st.sampled_from([3, "3", None, 4])},
    optional={"result": _JSON, "error": _JSON},
)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from([*sorted(RESULT_CHECKS), "eth_somethingElse"]),
    raw=st.binary(max_size=300) | _ENVELOPES.map(lambda e: json.dumps(e).encode()),
)
def test_any_reply_is_accepted_or_refused_with_one_line(method: str, raw: bytes) -> None:
    refusal = ""
    try:
        reply = check_reply(method, 3, raw, max_bytes=MAX_REPLY_BYTES)
    except NodeReplyError as exc:  # the only exception allowed out
        refusal = str(exc)
    if refusal:
        assert "\n" not in refusal
    else:
        assert reply["jsonrpc"] == "2.0"
        assert ("result" in reply) != ("error" in reply)
