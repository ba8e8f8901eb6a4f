"""``ailedger serve`` as a separate process, under faults: the chain node goes away and comes
back, and bad requests of every kind.

- The node goes away (issue 10, "Load and faults"): appends go on answering 201, ``/metrics``
  shows the anchoring lag growing; the node comes back (anvil restarted on the same port from
  the state it saved, so the workspace's contracts are still there) and anchoring catches up:
  the lag returns to 0 and the chain holds an anchor of the whole log.
- Malformed JSON, a non-object in a batch, an oversized body, a bad index, a missing, a
  revoked and a wrong-scoped key: the right 4xx (400, 422, 413, 400/404, 401, 401, 403), a
  JSON body ``{"error": "one line"}``, and nothing appended (the next good append gets the
  very next index).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import tomli_w

from tests.cli import run
from tests.conftest import AnvilNode, stop_process


def api_key(workspace: Path, env: dict[str, str], *scopes: str) -> tuple[str, str]:
    """A new API key of ``workspace`` with ``scopes``, made by the CLI: (id, token)."""
    flags = [arg for scope in scopes for arg in ("--scope", scope)]
    made = json.loads(
        run("keys", "api", "create", *flags, "--json", "-w", str(workspace), env=env).stdout
    )
    return str(made["id"]), str(made["token"])


PASSPHRASE = "correct horse battery staple"


def new_workspace(path: Path, node: AnvilNode | None = None) -> Path:
    """A workspace made in this process (quicker than the CLI): on the embedded chain, or on
    ``node``, whose account is funded after the first refusal, as an operator would."""
    from ailedger.errors import LedgerError
    from ailedger.workspace import Workspace

    def passphrase() -> str:
        return PASSPHRASE

    if node is None:
        Workspace.init(path, passphrase=passphrase, unsafe_fast_kdf=True)
        return path
    with pytest.raises(LedgerError, match="ether"):
        Workspace.init(path, passphrase=passphrase, rpc=node.url, unsafe_fast_kdf=True)
    node.fund("0x" + json.loads((path / "keys" / "ethereum.json").read_text())["address"])
    Workspace.init(path, passphrase=passphrase, rpc=node.url, unsafe_fast_kdf=True)
    return path


def make_key(workspace: Path, *scopes: str) -> tuple[str, str]:
    """A new API key of ``workspace`` made with the library: (id, token)."""
    from ailedger.service.auth import ApiKeys
    from ailedger.workspace import Workspace

    with ApiKeys.for_workspace(Workspace.open(workspace)) as keys:
        key, token = keys.create(scopes)
    return key.id, token


def revoke_key(workspace: Path, key_id: str) -> None:
    from ailedger.service.auth import ApiKeys
    from ailedger.workspace import Workspace

    with ApiKeys.for_workspace(Workspace.open(workspace)) as keys:
        assert keys.revoke(key_id)


@dataclass
class Service:
    """An ``ailedger serve`` process this test started (and only it stops, by its handle)."""

    process: subprocess.Popen[bytes]
    url: str
    output: IO[bytes]

    def stop(self) -> None:
        stop_process(self.process)
        self.output.close()

    def logged(self) -> str:
        self.output.flush()
        return Path(self.output.name).read_text(errors="replace")


def start_service(
    workspace: Path, env: dict[str, str], output: Path, *extra: str, timeout: float = 60
) -> Service:
    """Start ``ailedger serve`` over ``workspace`` on a free loopback port (``--port 0``; it
    prints ``serving URL`` once it listens); wait until ``/healthz`` answers."""
    sink = output.open("wb")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "ailedger", "serve", "-w", str(workspace)),
            *("--host", "127.0.0.1", "--port", "0", *extra),
        ],
        env=env,
        stdout=sink,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    service = Service(process=process, url="", output=sink)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            service.stop()
            pytest.fail(f"ailedger serve exited with {process.returncode}: {service.logged()}")
        if not service.url:
            found = re.search(r"^serving (http://127\.0\.0\.1:[0-9]+)$", service.logged(), re.M)
            service.url = found.group(1) if found else ""
        if service.url:
            try:
                if httpx.get(service.url + "/healthz", timeout=1).status_code == 200:
                    return service
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    service.stop()
    pytest.fail(f"ailedger serve did not answer /healthz within {timeout} s: {service.logged()}")


def metric(text: str, name: str) -> float:
    """The value of the unlabelled sample ``name`` in a Prometheus text exposition."""
    found = re.search(rf"^{re.escape(name)} ([-+0-9.eE]+|NaN)$", text, re.MULTILINE)
    assert found is not None, f"/metrics has no {name}: {text[:2000]}"
    return float(found.group(1))


def cli_env() -> dict[str, str]:
    """Environment for CLI processes: a passphrase, and no workspace from outside."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("AILEDGER_")}
    out["AILEDGER_PASSPHRASE"] = PASSPHRASE
    return out


# -- bad requests ---------------------------------------------------------------------------

#: the bad-request service's body limit (``--max-body``), in bytes: small, so an oversized
#: body is quick to send and fits the socket buffers before the service refuses it
MAX_BODY = 64 * 1024


@dataclass
class Served:
    service: Service
    workspace: Path
    env: dict[str, str]
    append_token: str
    read_token: str
    client: httpx.Client

    def append(self, body: Any, token: str | None = None) -> int:
        """Append one good record; its index."""
        reply = self.client.post(
            "/v1/entries", json=body, headers=bearer(token or self.append_token)
        )
        assert reply.status_code == 201, reply.text
        return int(reply.json()["index"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One service over an embedded-chain workspace, shared by the bad-request tests."""
    tmp = tmp_path_factory.mktemp("served")
    env = cli_env()
    workspace = new_workspace(tmp / "ws")
    _, append_token = make_key(workspace, "append")
    _, read_token = make_key(workspace, "read")
    service = start_service(workspace, env, tmp / "serve.log", "--max-body", str(MAX_BODY))
    try:
        with httpx.Client(base_url=service.url, timeout=30) as client:
            yield Served(service, workspace, env, append_token, read_token, client)
    finally:
        service.stop()


def one_line_error(reply: httpx.Response, status: int) -> str:
    """Assert the status and a JSON body ``{"error": one line}``; the message."""
    assert reply.status_code == status, (reply.status_code, reply.text)
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert set(body) == {"error"}, body
    message = body["error"]
    assert isinstance(message, str)
    assert message
    assert "\n" not in message
    assert "Traceback" not in message
    return message


def post_raw(served: Served, content: bytes, token: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json", **bearer(token or served.append_token)}
    return served.client.post("/v1/entries", content=content, headers=headers)


@pytest.mark.parametrize(
    ("content", "status", "words"),
    [
        (b'{"decision": ', 400, "not JSON"),
        (b'{"a": 1, "a": 2}', 400, "duplicate"),
        (b"\xff\xfe{}", 400, "UTF-8"),
        (b'[{"decision": 1}, 5]', 422, "batch item 1"),
        (b'[{"decision": 1}, [2]]', 422, "batch item 1"),
        (b"[]", 422, "empty"),
        (b'"just a string"', 422, "string"),
    ],
)
def test_bad_bodies_are_refused_and_append_nothing(
    served: Served, content: bytes, status: int, words: str
) -> None:
    before = served.append({"decision": "before"})
    message = one_line_error(post_raw(served, content), status)
    assert words.lower() in message.lower(), message
    assert served.append({"decision": "after"}) == before + 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_body_is_413_and_appends_nothing(served: Served, chunked: bool) -> None:
    before = served.append({"decision": "before"})
    # a valid batch, just past the service's --max-body
    record = b'{"decision": "' + b"x" * 1000 + b'"}'
    content = b"[" + b",".join([record] * (MAX_BODY // len(record) + 2)) + b"]"
    assert MAX_BODY < len(content) < 2 * MAX_BODY
    if chunked:  # no Content-Length: the service counts the body as it arrives
        pieces = [content[at : at + 8192] for at in range(0, len(content), 8192)]
        reply = served.client.post(
            "/v1/entries",
            content=iter(pieces),
            headers={"Content-Type": "application/json", **bearer(served.append_token)},
        )
    else:
        reply = post_raw(served, content)
    message = one_line_error(reply, 413)
    assert f"larger than {MAX_BODY} bytes" in message, message
    assert served.append({"decision": "after"}) == before + 1


def test_batch_over_the_record_limit_is_413(served: Served) -> None:
    before = served.append({"decision": "before"})
    message = one_line_error(post_raw(served, b"[" + b",".join([b"{}"] * 10_001) + b"]"), 413)
    assert "10000" in message.replace(",", ""), message
    assert served.append({"decision": "after"}) == before + 1


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/entries/abc", 400),
        ("/v1/entries/1.5", 400),
        ("/v1/entries/-1", 404),
        ("/v1/entries/99999999999999999999", 404),
        ("/v1/entries/abc/proof", 400),
        ("/v1/entries/123456789/proof", 404),
    ],
)
def test_bad_index_is_a_clear_4xx(served: Served, path: str, status: int) -> None:
    served.append({"decision": "something to read"})
    one_line_error(served.client.get(path, headers=bearer(served.read_token)), status)


def test_missing_key_is_401_and_appends_nothing(served: Served) -> None:
    before = served.append({"decision": "before"})
    reply = served.client.post("/v1/entries", json={"decision": "no key"})
    one_line_error(reply, 401)
    assert reply.headers["www-authenticate"].startswith("Bearer")
    garbled = served.client.post(
        "/v1/entries", json={"decision": "bad key"}, headers=bearer("ailedger_not_a_token")
    )
    one_line_error(garbled, 401)
    assert served.append({"decision": "after"}) == before + 1


def test_wrong_scope_is_403_and_appends_nothing(served: Served) -> None:
    before = served.append({"decision": "before"})
    reply = served.client.post(
        "/v1/entries", json={"decision": "read key"}, headers=bearer(served.read_token)
    )
    one_line_error(reply, 403)
    assert "insufficient_scope" in reply.headers["www-authenticate"]
    erase = served.client.post(f"/v1/entries/{before}/erase", headers=bearer(served.append_token))
    one_line_error(erase, 403)
    assert served.append({"decision": "after"}) == before + 1


def test_revoked_key_is_401_while_the_service_runs(served: Served) -> None:
    key_id, token = make_key(served.workspace, "append")
    # a key made while the service runs is taken once the service rereads the store (0.1 s)
    deadline = time.monotonic() + 5
    while True:
        reply = served.client.post("/v1/entries", json={"decision": "new"}, headers=bearer(token))
        if reply.status_code == 201 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert reply.status_code == 201, reply.text
    first = int(reply.json()["index"])
    revoke_key(served.workspace, key_id)
    deadline = time.monotonic() + 5  # the service rereads the key store within 0.1 s
    while True:
        reply = served.client.post(
            "/v1/entries", json={"decision": "revoked"}, headers=bearer(token)
        )
        if reply.status_code != 201 or time.monotonic() > deadline:
            break
        first = int(reply.json()["index"])  # accepted before the revocation was seen
        time.sleep(0.05)
    one_line_error(reply, 401)
    assert served.append({"decision": "after"}) == first + 1


# -- the chain node goes away ---------------------------------------------------------------


def set_chain_options(workspace: Path, **options: object) -> None:
    path = workspace / "config.toml"
    config = tomllib.loads(path.read_text())
    config["chain"].update(options)
    path.write_text(tomli_w.dumps(config))


def wait_for(what: str, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def test_appends_go_on_while_the_node_is_down_and_anchoring_catches_up(
    own_anvil: AnvilNode, tmp_path: Path
) -> None:
    workspace = new_workspace(tmp_path / "ws", own_anvil)
    # fail fast while the node is down: one quick retry per attempt, short timeouts
    set_chain_options(workspace, retries=1, backoff=0.05, backoff_max=0.1, request_timeout=3)
    _, token = make_key(workspace, "append", "read")
    service = start_service(
        workspace, cli_env(), tmp_path / "serve.log",
        "--rpc", own_anvil.url, "--anchor-every", "5", "--anchor-seconds", "0.5",
        "--checkpoint-interval", "0.2",
    )  # fmt: skip
    try:
        with httpx.Client(base_url=service.url, headers=bearer(token), timeout=30) as client:

            def scrape() -> str:
                reply = client.get("/metrics")
                assert reply.status_code == 200
                return reply.text

            def append(n: int) -> None:
                for _ in range(n):
                    started = time.monotonic()
                    reply = client.post("/v1/entries", json={"decision": "while anchoring"})
                    assert reply.status_code == 201, reply.text
                    assert time.monotonic() - started < 10  # never waits for the chain

            # 1. the node is up: the first entries are anchored
            append(5)
            wait_for(
                "the first anchor",
                lambda: metric(scrape(), "ailedger_anchor_lag_entries") == 0,
                timeout=30,
            )
            assert metric(scrape(), "ailedger_log_size") == 5

            # 2. the node goes away (saving its state): appends go on, the lag grows
            own_anvil.stop()
            append(6)
            wait_for(
                "a failed anchoring attempt",
                lambda: metric(scrape(), "ailedger_anchor_failures") >= 1,
                timeout=30,
            )
            text = scrape()
            assert metric(text, "ailedger_anchor_lag_entries") == 6
            lag_seconds = metric(text, "ailedger_anchor_lag_seconds")
            assert lag_seconds > 0
            append(4)
            text = scrape()
            assert metric(text, "ailedger_anchor_lag_entries") == 10
            assert metric(text, "ailedger_anchor_lag_seconds") > lag_seconds
            assert metric(text, "ailedger_log_size") == 15

            # 3. the node comes back on the same port with its state (the contracts, the first
            # anchor): anchoring catches up by itself
            own_anvil.start()
            wait_for(
                "anchoring to catch up",
                lambda: metric(scrape(), "ailedger_anchor_lag_entries") == 0,
                timeout=90,
            )
            text = scrape()
            assert metric(text, "ailedger_anchor_lag_seconds") == 0
            assert metric(text, "ailedger_anchor_failures") == 0
            anchors = client.get("/v1/anchors").json()
            assert max(a["size"] for a in anchors if a["status"] in ("anchored", "final")) == 15
    finally:
        service.stop()

    # the chain itself holds the operator's anchor of all 15 entries, with the log's root
    from ailedger.auditlog.anchoring import chain_anchors
    from ailedger.auditlog.log import AuditLog
    from ailedger.workspace import Workspace

    ws = Workspace.open(workspace)
    with AuditLog.for_workspace(ws, writable=False) as log, ws.ledger() as ledger:
        claims = chain_anchors(
            ws.anchor_registry(ledger), log.origin_hash, operator=ws.keystore().address
        )
        newest = max(claims, key=lambda claim: claim.size)
        assert newest.size == 15
        assert newest.root == log.root(15)
