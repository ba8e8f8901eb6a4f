"""JSON-RPC over HTTP to a node that may be hostile: bounded replies, checked before web3 sees them.

web3's own ``HTTPProvider`` reads a whole reply into memory and hands it to the C JSON decoder,
which overflows the C stack on deeply nested input once web3 has raised the recursion limit to
100,000. This provider (web3's ``JSONBaseProvider`` interface: ``make_request(method, params)``
returning the decoded JSON-RPC response) instead:

1. posts the request without following redirects and with one deadline for the whole exchange
   (``timeout`` seconds), reading the body one socket read at a time, so a slow-drip node
   cannot hold it longer;
2. refuses a reply larger than ``max_reply_bytes`` (announced or actually sent) without reading
   the rest of it;
3. decodes it with :func:`ailedger._input.parse_json` (size, depth and duplicate-key limits);
4. checks the JSON-RPC 2.0 envelope (``jsonrpc``, the request's ``id``, exactly one of
   ``result`` or a well-formed ``error``) and, for the methods ailedger calls, the JSON type of
   the result (a hex quantity, hex data, a 32-byte hash, an object with the fields read);
5. refuses a JSON-RPC ``error`` to a read (EIP-1474 error objects): only errors to a
   transaction, a call or a gas estimate reach web3, so a node that will not serve a read is
   unavailable (exit 3), not a failed check (exit 1).

Every refusal is a :class:`NodeReplyError`, which :class:`~ailedger.ledger.Ledger` turns into
:class:`~ailedger.errors.NodeUnavailable` (retrying first when ``transient``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import requests
from web3.providers.base import JSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

from ailedger._input import parse_json
from ailedger.errors import InputError

__all__ = ["MAX_REPLY_BYTES", "BoundedHTTPProvider", "NodeReplyError"]

#: the largest JSON-RPC reply read from a node (an ``eth_getLogs`` page fits many times over)
MAX_REPLY_BYTES = 32 * 1024 * 1024
_READ = 64 * 1024
_MAX_ERROR_MESSAGE = 300


class NodeReplyError(Exception):
    """The node answered, but not with a JSON-RPC reply ailedger accepts.

    ``transient``: worth retrying (HTTP 429 or 5xx, a reply cut short by the deadline).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")
_DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def _matches(pattern: re.Pattern[str], what: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, str) and pattern.fullmatch(value):
            return None
        return f"expected {what}, got {_kind(value)}"

    return check


_is_quantity = _matches(_QUANTITY, "a hex quantity")
_is_data = _matches(_DATA, "hex data")
_is_hash = _matches(_HASH, "a 32-byte hex hash")


def _is_optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    return lambda value: None if value is None else check(value)


def _is_object(
    fields: dict[str, Callable[[Any], str | None]], *, nullable: bool
) -> Callable[[Any], str | None]:
    """An object (or null when ``nullable``) whose listed fields pass their checks."""

    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, dict):
            return f"expected an object, got {_kind(value)}"
        for name, field_check in fields.items():
            problem = field_check(value.get(name))
            if problem is not None:
                return f"field {name!r}: {problem}"
        return None

    return check


def _is_list_of_objects(value: Any) -> str | None:
    if not isinstance(value, list):
        return f"expected a list, got {_kind(value)}"
    if not all(isinstance(item, dict) for item in value):
        return "expected a list of objects"
    return None


def _is_address_or_null(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and _ADDRESS.fullmatch(value)):
        return None
    return f"expected an address or null, got {_kind(value)}"


def _any(value: Any) -> str | None:
    return None


_RECEIPT = _is_object(
    {
        "status": _is_quantity,
        "blockNumber": _is_quantity,
        "blockHash": _is_hash,
        "gasUsed": _is_quantity,
        "effectiveGasPrice": _is_optional(_is_quantity),
        "contractAddress": _is_address_or_null,
        "logs": _is_list_of_objects,
    },
    nullable=True,
)
_BLOCK = _is_object(
    {
        "number": _is_quantity,
        "hash": _is_hash,
        "baseFeePerGas": _is_optional(_is_quantity),
    },
    nullable=True,
)
_TRANSACTION = _is_object({"hash": _is_hash}, nullable=True)

#: result checks for the methods ailedger calls; other methods get the envelope check only
RESULT_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "eth_chainId": _is_quantity,
    "eth_blockNumber": _is_quantity,
    "eth_getBalance": _is_quantity,
    "eth_estimateGas": _is_quantity,
    "eth_getTransactionCount": _is_quantity,
    "eth_maxPriorityFeePerGas": _is_quantity,
    "eth_gasPrice": _is_quantity,
    "eth_getCode": _is_data,
    "eth_call": _is_data,
    "eth_sendRawTransaction": _is_hash,
    "eth_getTransactionReceipt": _RECEIPT,
    "eth_getBlockByNumber": _BLOCK,
    "eth_getBlockByHash": _BLOCK,
    "eth_getTransactionByHash": _TRANSACTION,
    "eth_getLogs": _is_list_of_objects,
    "web3_clientVersion": _any,
}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string" if len(value) > 40 else f"{value!r}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def check_reply(method: str, request_id: int, raw: bytes, *, max_bytes: int) -> RPCResponse:
    """Decode and check one JSON-RPC reply to ``method`` (steps 3 and 4 above)."""
    try:
        reply = parse_json(raw, what="the reply", max_bytes=max_bytes)
    except InputError as exc:
        raise NodeReplyError(f"sent a malformed reply to {method}: {exc}") from exc
    problem = _envelope_problem(reply, request_id)
    if problem is None and "result" in reply:
        problem = RESULT_CHECKS.get(method, _any)(reply["result"])
        if problem is not None:
            problem = f"result: {problem}"
    if problem is not None:
        raise NodeReplyError(f"sent a malformed reply to {method}: {problem}")
    if "error" in reply:
        error = dict(reply["error"])
        error["message"] = " ".join(error["message"].split())[:_MAX_ERROR_MESSAGE]
        if not _error_is_an_answer(method, error):
            # a read the node cannot serve: the node is unavailable or misbehaving (exit 3),
            # never a failed check of what was read
            raise NodeReplyError(
                f"answered {method} with error {error['code']}: {error['message']}",
                transient=error["code"] in _TRANSIENT_ERROR_CODES,
            )
        reply = {**reply, "error": error}
    response: RPCResponse = reply
    return response


#: methods whose JSON-RPC error is an answer ailedger handles (a refused transaction, a gas
#: estimate that fails); an ``eth_call`` error is one only when it is a revert
_ERRORS_ANSWER = frozenset({"eth_sendRawTransaction", "eth_estimateGas"})
#: EIP-1474's code for a reverted execution (geth, anvil, erigon send it with the revert data)
_REVERT_CODE = 3
#: EIP-1474 "limit exceeded" and "resource unavailable": worth retrying
_TRANSIENT_ERROR_CODES = frozenset({-32005, -32002})


def _error_is_an_answer(method: str, error: dict[str, Any]) -> bool:
    """Whether a JSON-RPC error to ``method`` is an answer rather than a node failure.

    A transaction the node refuses, a gas estimate that fails and a call that reverts are
    answers, which :class:`~ailedger.ledger.Ledger` reports as such. Any other error, to a call
    (an internal error, a missing state or header) or to any read (chain id, code, logs,
    blocks, receipts, nonce, fees), means the node could not or would not serve it.
    """
    if method == "eth_call":
        return error["code"] == _REVERT_CODE or "revert" in error["message"].lower()
    return method in _ERRORS_ANSWER


def _envelope_problem(reply: Any, request_id: int) -> str | None:
    if not isinstance(reply, dict):
        return f"expected a JSON-RPC object, got {_kind(reply)}"
    if reply.get("jsonrpc") != "2.0":
        return 'no "jsonrpc": "2.0"'
    if ("result" in reply) == ("error" in reply):
        return 'expected exactly one of "result" and "error"'
    if "error" in reply:
        error = reply["error"]
        if (
            not isinstance(error, dict)
            or type(error.get("code")) is not int
            or not isinstance(error.get("message"), str)
        ):
            return "an error must be an object with an integer code and a message"
        if reply.get("id") not in (request_id, None):
            return f"the reply's id is {_kind(reply.get('id'))}, the request's {request_id}"
    elif type(reply.get("id")) is not int or reply["id"] != request_id:
        return f"the reply's id is {_kind(reply.get('id'))}, the request's {request_id}"
    return None


class BoundedHTTPProvider(JSONBaseProvider):
    """web3 provider for a JSON-RPC node over http(s) that reads replies within bounds."""

    def __init__(self, url: str, *, timeout: float, max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        super().__init__()
        self.endpoint_uri = url
        self.timeout = timeout
        self.max_reply_bytes = max_reply_bytes
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy or .netrc from the environment for a node

    def __str__(self) -> str:
        return f"RPC connection {self.endpoint_uri}"

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        body = self.encode_rpc_request(method, params)
        request_id = int(json.loads(body)["id"])  # our own bytes
        return check_reply(method, request_id, self._post(body), max_bytes=self.max_reply_bytes)

    def make_batch_request(self, batch_requests: list[tuple[RPCEndpoint, Any]]) -> Any:
        raise NotImplementedError("ailedger sends no batch requests")

    def is_connected(self, show_traceback: bool = False) -> bool:
        try:
            self.make_request(RPCEndpoint("web3_clientVersion"), [])
        except (OSError, requests.RequestException, NodeReplyError):
            if show_traceback:
                raise
            return False
        return True

    def _post(self, body: bytes) -> bytes:
        """POST ``body`` and read the reply (steps 1 and 2 above)."""
        deadline = time.monotonic() + self.timeout
        with self._session.post(
            self.endpoint_uri,
            data=body,
            headers={"Content-Type": "application/json", "Accept-Encoding": "identity"},
            timeout=self.timeout,
            stream=True,
            allow_redirects=False,
        ) as response:
            status = response.status_code
            if status != 200:
                transient = status == 429 or status >= 500
                raise NodeReplyError(f"answered HTTP {status}", transient=transient)
            announced = response.headers.get("Content-Length", "")
            if announced.isdigit() and int(announced) > self.max_reply_bytes:
                raise NodeReplyError(f"sent a reply larger than {self.max_reply_bytes} bytes")
            data = bytearray()
            while True:
                chunk = response.raw.read1(_READ, decode_content=True)
                if not chunk:
                    break
                data += chunk
                if len(data) > self.max_reply_bytes:
                    raise NodeReplyError(f"sent a reply larger than {self.max_reply_bytes} bytes")
                if time.monotonic() > deadline:
                    raise NodeReplyError(
                        f"did not finish its reply within {self.timeout:g} s", transient=True
                    )
            return bytes(data)
