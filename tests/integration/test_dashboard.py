"""The dashboard end to end: a real service process, headless Chromium driven by Playwright.

The browser checks an entry's inclusion itself (WebCrypto SHA-256 and Ed25519); the tests
then alter what it receives on the way (the entry's bytes, a proof hash, the checkpoint's
signature) with Playwright's request routing, as a hostile network or server would, and
check it names the failure. Every page is screenshotted into the test's tmp dir.
"""

from __future__ import annotations

import base64
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ailedger.auditlog import AuditLog
from ailedger.auditlog.anchoring import Anchorer
from ailedger.provenance.registry import register_artifact
from ailedger.sentinel.actions import AuditAction
from ailedger.service.auth import ApiKeys, Scope
from ailedger.workspace import Workspace
from tests.conftest import stop_process

CHROMIUM = Path("/usr/bin/chromium")
PASSPHRASE = "dashboard test passphrase"
ENTRIES = 300  # more than one full tile (256), so proofs cross tile boundaries
PRIVATE_INDEX = 7
HOSTILE_INDEX = 11
PNG = b"\x89PNG\r\n\x1a\n"
HOSTILE = '<script>document.title="pwned"</script><img src=x onerror="document.title=1">'
ALERT = {
    "tx": "0x" + "ab" * 32,
    "class": "sandwich",
    "detector": "isolation-forest",
    "block": 42,
    "score": 0.93,
    "reasons": [
        {"feature": "gas_price_ratio", "value": 7.5, "why": "far above the block's median"}
    ],
}


@dataclass
class Service:
    url: str
    workspace: Path
    entries: list[bytes]
    dataset: str
    model: str
    token: str = ""


def _fill(root: Path) -> Service:
    """A workspace with a dataset and a model registered on its embedded chain (the model made
    from the dataset), and a log of ENTRIES entries (one private, one hostile, one sentinel
    alert, after the registrations' own events) under a signed checkpoint."""
    path = root / "ws"
    workspace = Workspace.init(path, passphrase=lambda: PASSPHRASE, unsafe_fast_kdf=True)
    (root / "data.csv").write_text("x,y\n1,2\n")
    (root / "model.bin").write_bytes(b"weights")
    key = workspace.signing_key(lambda: PASSPHRASE)
    with workspace.ledger(passphrase=lambda: PASSPHRASE) as ledger:
        data = register_artifact(
            workspace, ledger, root / "data.csv", kind="dataset", signing_key=key
        )
        model = register_artifact(
            workspace,
            ledger,
            root / "model.bin",
            kind="model",
            signing_key=key,
            parents=[data.digest],
        )
        with AuditLog.for_workspace(workspace) as log:
            anchorer = Anchorer(log=log, registry=workspace.anchor_registry(ledger), key=key)
            log.append_many({"type": "decision", "n": n} for n in range(log.size, PRIVATE_INDEX))
            log.append({"type": "decision", "input": "salary 1234"}, sensitive=["input"])
            log.append_many(
                {"type": "decision", "n": n} for n in range(PRIVATE_INDEX + 1, HOSTILE_INDEX)
            )
            log.append({"type": "note", "comment": HOSTILE})
            AuditAction(log)(ALERT)
            log.append_many({"type": "decision", "n": n} for n in range(HOSTILE_INDEX + 2, 150))
            anchorer.anchor()
            log.append_many({"type": "decision", "n": n} for n in range(150, ENTRIES))
            anchorer.anchor()  # signs the checkpoint of all ENTRIES
            entries = [data for _, data in log.entries()]
    assert len(entries) == ENTRIES
    return Service(
        url="",
        workspace=path,
        entries=entries,
        dataset=f"sha256:{data.digest.hex()}",
        model=f"sha256:{model.digest.hex()}",
    )


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`ailedger serve` over the filled workspace, on a free loopback port, in its own process."""
    root = tmp_path_factory.mktemp("dashboard")
    made = _fill(root)
    with ApiKeys.for_workspace(Workspace.open(made.workspace)) as keys:
        made.token = keys.create([Scope.APPEND], name="dashboard test")[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AILEDGER_")}
    env["AILEDGER_PASSPHRASE"] = PASSPHRASE
    command = [sys.executable, "-m", "ailedger", "serve", "--workspace", str(made.workspace)]
    process = subprocess.Popen(
        [*command, "--port", "0", "--no-anchor"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while not line.startswith("serving "):
            ready, _, _ = select.select([process.stdout], [], [], 1)
            if ready:
                line = process.stdout.readline()
            if process.poll() is not None:
                pytest.fail(f"`ailedger serve` exited with {process.returncode}: {line}")
            if time.monotonic() > deadline:
                pytest.fail("`ailedger serve` did not start within 60 s")
        made.url = line.split()[1]
        yield made
    finally:
        stop_process(process)
        if process.stdout:
            process.stdout.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("AILEDGER_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing and AILEDGER_REQUIRE_BROWSER is set")
        pytest.skip(f"no Chromium at {CHROMIUM} (install Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Watched:
    page: Any
    problems: list[str]


@pytest.fixture
def page(browser: Any, service: Service) -> Iterator[Watched]:
    """A fresh page that records console errors, script errors and any off-origin request."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda exc: problems.append(str(exc)))
    opened.on(
        "request",
        lambda r: None if r.url.startswith(service.url) else problems.append("off-origin " + r.url),
    )
    opened.on("dialog", lambda d: problems.append("dialog " + d.message))
    try:
        yield Watched(opened, problems)
    finally:
        context.close()


def _shot(page: Any, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 1000


def _serve(body: bytes, content_type: str) -> Any:
    """A Playwright route handler answering with ``body`` instead of the service."""

    def handler(route: Any) -> None:
        route.fulfill(body=body, content_type=content_type)

    return handler


def _verify(page: Any) -> str:
    page.click("#verify")
    page.wait_for_selector("#verify-result.ok, #verify-result.bad", timeout=10_000)
    return str(page.inner_text("#verify-result"))


def test_pages_render_with_strict_headers(page: Watched, service: Service, tmp_path: Path) -> None:
    p = page.page
    response = p.goto(service.url + "/")
    assert response.status == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert p.inner_text("#log-size") == str(ENTRIES)
    assert p.inner_text("#checkpoint-size") == str(ENTRIES)
    assert p.inner_text("#alert-count") == "1"
    assert p.locator("#anchor-timeline circle.anchor").count() == 2
    assert p.locator("#anchors tbody tr").count() == 2
    assert p.inner_text("#anchors tbody tr:first-child td:first-child") == str(ENTRIES)
    _shot(p, tmp_path / "overview.png")

    p.goto(service.url + "/entries?start=0&limit=10")
    assert p.locator("#entries tbody tr").count() == 10
    p.click("#next")
    assert p.inner_text("#entries tbody tr:first-child td:first-child") == "10"
    _shot(p, tmp_path / "entries.png")

    p.goto(service.url + f"/entries/{PRIVATE_INDEX}")
    assert "private, committed as sha256:" in p.inner_text("#fields")
    assert "salary" not in p.content()
    _shot(p, tmp_path / "entry-private.png")

    p.goto(service.url + f"/entries/{HOSTILE_INDEX}")
    assert HOSTILE in p.inner_text("#fields")  # shown as text, never run
    assert p.title() == f"Entry {HOSTILE_INDEX} · ailedger"

    p.goto(service.url + "/lineage")
    assert p.locator("#registrations tbody tr").count() == 2
    _shot(p, tmp_path / "registrations.png")
    p.click(f'#registrations a[href="/lineage/{service.model}"]')
    assert p.locator("#lineage-graph g.node").count() == 2
    assert p.locator("#lineage-graph line.edge").count() == 1
    focus = p.locator("#lineage-graph g.node.focus title").text_content() or ""
    assert focus.startswith(service.model)
    _shot(p, tmp_path / "lineage.png")

    p.goto(service.url + "/alerts")
    reasons = p.inner_text("#alerts .reasons")
    assert reasons == "gas_price_ratio = 7.5: far above the block's median"
    _shot(p, tmp_path / "alerts.png")

    response = p.goto(service.url + "/training")
    assert response.status == 200
    assert "no training task yet" in p.inner_text("main")
    _shot(p, tmp_path / "training.png")
    assert page.problems == []
    response = p.goto(service.url + "/training/1")
    assert response.status == 404
    assert "no training task 1" in p.inner_text("#error")
    assert "content-security-policy" in response.headers


def test_browser_verifies_inclusion(page: Watched, service: Service, tmp_path: Path) -> None:
    p = page.page
    # one more decision, logged through the service's API: it signs a checkpoint within 1 s
    answer = httpx.post(
        f"{service.url}/v1/entries",
        json={"type": "decision", "via": "http"},
        headers={"Authorization": f"Bearer {service.token}"},
    )
    assert answer.status_code == 201, answer.text
    new = answer.json()["index"]
    assert new == ENTRIES
    size = 0
    deadline = time.monotonic() + 10
    while size <= new and time.monotonic() < deadline:
        time.sleep(0.2)
        size = int(httpx.get(f"{service.url}/log/checkpoint").text.split("\n")[1])
    assert size == ENTRIES + 1
    for index in (0, 257, new):
        p.goto(service.url + f"/entries/{index}")
        result = _verify(p)
        assert result == (
            f"verified: entry {index} is in the log's tree of size {size}, "
            "under a valid signed checkpoint"
        ), result
        steps = p.inner_text("#verify-steps")
        assert "checkpoint signature valid" in steps  # Chromium checked Ed25519 itself
    _shot(p, tmp_path / "entry-verified.png")
    assert page.problems == []


def test_browser_names_tampering(page: Watched, service: Service, tmp_path: Path) -> None:
    p = page.page
    index = 257
    entry = service.entries[index]
    forged = entry.replace(b'"n":257', b'"n":258')
    assert forged != entry
    p.route(
        f"**/ui/entries/{index}/raw",
        _serve(forged, "application/octet-stream"),
    )
    p.goto(service.url + f"/entries/{index}")
    result = _verify(p)
    assert result.startswith("failed: recomputed root "), result
    assert "does not match the checkpoint's root" in result
    _shot(p, tmp_path / "entry-tampered.png")
    p.unroute(f"**/ui/entries/{index}/raw")

    proof = httpx.get(f"{service.url}/v1/entries/{index}/proof").content
    head, checkpoint = proof.split(b"\n\n", 1)
    lines = head.split(b"\n")
    first_hash = lines.index(next(line for line in lines[2:] if len(line) == 44))
    flipped = bytearray(base64.b64decode(lines[first_hash]))
    flipped[0] ^= 1
    lines[first_hash] = base64.b64encode(bytes(flipped))
    bad_path = b"\n".join(lines) + b"\n\n" + checkpoint
    note, signature = checkpoint.rsplit(b" ", 1)
    raw = bytearray(base64.b64decode(signature))
    raw[-1] ^= 1
    bad_signature = head + b"\n\n" + note + b" " + base64.b64encode(bytes(raw)) + b"\n"
    for body, expected in [
        (bad_path, "does not match the checkpoint's root"),
        (bad_signature, "the signature on the proof's checkpoint does not verify"),
        (head.split(b"\n")[0] + b"\n\n" + checkpoint, "the proof has no index line"),
    ]:
        p.route(
            f"**/v1/entries/{index}/proof",
            _serve(body, "text/plain"),
        )
        p.goto(service.url + f"/entries/{index}")
        result = _verify(p)
        assert result.startswith("failed: ") and expected in result, (expected, result)
        p.unroute(f"**/v1/entries/{index}/proof")

    p.route("**/log/checkpoint", _serve(bad_signature.split(b"\n\n", 1)[1], "text/plain"))
    p.goto(service.url + f"/entries/{index}")
    result = _verify(p)
    assert (
        result == "failed: the signature on the served checkpoint does not verify with the log key"
    )
    assert page.problems == []


def test_bad_requests_get_clear_answers(service: Service) -> None:
    with httpx.Client(base_url=service.url) as client:
        raw = client.get("/ui/entries/42/raw")
        assert raw.status_code == 200 and raw.content == service.entries[42]
        assert raw.headers["content-type"] == "application/octet-stream"
        for path, status, message in [
            ("/entries?limit=1000", 400, "limit must be between 1 and 100, got 1000"),
            ("/entries?start=-1", 400, "start must be a non-negative decimal number"),
            ("/entries?start=100000", 400, "start 100000 is past the end of the log (size"),
            ("/entries/abc", 400, "the entry index must be a non-negative decimal number"),
            ("/entries/100000", 404, "the log has no entry 100000 (size"),
            ("/training/x", 400, "the task id must be a non-negative decimal number"),
        ]:
            response = client.get(path)
            assert response.status_code == status, path
            assert message in response.text, (path, response.text)
            assert "Traceback" not in response.text
        missing = client.get("/ui/entries/100000/raw")
        assert missing.status_code == 404
        assert json.loads(missing.text)["error"].startswith("the log has no entry 100000 (size")
        assert client.get("/ui/static/../../pyproject.toml").status_code == 404
        paths = client.get("/openapi.json").json()["paths"]
        assert "/v1/entries/{index}" in paths  # the API is described, the pages are not
        assert not {"/", "/entries", "/ui/entries/{index}/raw"} & set(paths)
        script = client.get("/ui/static/dashboard.js")
        assert script.status_code == 200 and "crypto.subtle.digest" in script.text


def test_training_rounds_render_as_chart_and_tables() -> None:
    """A task's rounds (as ``views.training_rounds`` gives them) become the accuracy chart
    (y = 1 at the top of the plot, 0 at its bottom), the contributions and the exclusions."""
    from ailedger.service.dashboard import _rounds_body

    hostile = "<b>mallory</b>"
    rounds = [
        {"round": 0, "status": "finalized", "accuracy": 0.5, "scores": {"alice": 0.1}},
        {"round": 1, "status": "finalized", "accuracy": 0.75, "excluded": [hostile]},
        {"round": 2, "status": "failed", "accuracy": 1.0, "scores": {hostile: -0.2}},
    ]
    body = _rounds_body(rounds)
    assert 'points="50.0,120.0 335.0,70.0 620.0,20.0"' in body
    assert "<td>alice</td><td>0.1</td>" in body
    assert hostile not in body and "&lt;b&gt;mallory&lt;/b&gt;" in body
    assert body.count("<tr>") == 1 + 3 + 1 + 2  # header and rows of both tables


def test_lineage_layers_follow_longest_paths() -> None:
    from ailedger.service.dashboard import _layers

    a, b, c, d = (("0xowner", f"sha256:{n}") for n in "abcd")
    layers = _layers([d, c, b, a], [(a, b), (a, c), (b, d), (c, d), (a, d)])
    assert layers == {a: 0, b: 1, c: 1, d: 2}


def test_pages_without_a_chain(service: Service) -> None:
    """With the chain node gone, every page still answers 200, saying what it cannot show."""
    from fastapi.testclient import TestClient

    from ailedger.service.app import create_app
    from ailedger.service.context import ServiceContext

    workspace = Workspace.open(service.workspace)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        node = f"http://127.0.0.1:{closed.getsockname()[1]}"
        with AuditLog.for_workspace(workspace, writable=False) as log:
            ctx = ServiceContext(workspace=workspace, log=log, rpc=node)
            with TestClient(create_app(ctx)) as client:
                for path in ("/lineage", f"/lineage/{service.model}", "/training", "/training/0"):
                    response = client.get(path)
                    assert response.status_code == 200, path
                    expected = f"not available now: the node at {node} did not answer"
                    assert expected in response.text, path
                for path in ("/", "/entries", "/entries/3", "/alerts"):
                    assert client.get(path).status_code == 200, path
