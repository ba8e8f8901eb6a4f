"""Shared fixtures: a real anvil node, funded signers, ledgers on both backends."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from ailedger.ledger import Ledger, LedgerSettings, Signer

ROOT = Path(__file__).resolve().parent.parent
ANVIL = ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
FUNDS = 10**24


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[Any], timeout: float = 10) -> None:
    """End a process this test session started: SIGTERM, then SIGKILL after ``timeout``."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class AnvilNode:
    """An anvil process this test session started (and only it ends)."""

    port: int
    state: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if not ANVIL.exists():
            pytest.fail(f"anvil is not installed at {ANVIL}: run `make test`")
        self.process = subprocess.Popen(
            [
                str(ANVIL),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--hardfork",
                "prague",
                "--silent",
                # bounds anvil's on-disk state cache (~/.foundry/anvil/tmp), never cleared by a kill
                "--max-persisted-states",
                "256",
                "--state",
                str(self.state),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.rpc("eth_chainId")
                return
            except requests.ConnectionError:
                time.sleep(0.05)
        self.stop()
        pytest.fail("anvil did not start within 20 s")

    def stop(self) -> None:
        """Stop the node gracefully (it writes its --state file)."""
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def rpc(self, method: str, *params: object) -> object:
        reply = requests.post(
            self.url,
            json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)},
            timeout=10,
        ).json()
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["result"]

    def fund(self, address: str, wei: int = FUNDS) -> None:
        self.rpc("anvil_setBalance", address, hex(wei))


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilNode]:
    node = AnvilNode(port=free_port(), state=tmp_path_factory.mktemp("anvil") / "state.json")
    node.start()
    yield node
    node.stop()


@pytest.fixture
def own_anvil(tmp_path: Path) -> Iterator[AnvilNode]:
    """A node of the test's own, which the test may stop and restart."""
    node = AnvilNode(port=free_port(), state=tmp_path / "anvil-state.json")
    node.start()
    yield node
    node.stop()


def new_signer() -> Signer:
    return Signer.from_key(secrets.token_bytes(32))


FAST = LedgerSettings(retries=3, backoff=0.05, backoff_max=0.2, poll_interval=0.02)


@pytest.fixture(params=["embedded", "anvil"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Chain:
    """Opens ledgers for several signers on one chain of the chosen backend."""

    backend: str
    directory: Path
    node: AnvilNode | None
    funder: Signer
    base: Ledger | None = None

    def ledger(self, signer: Signer | None = None) -> Ledger:
        """A ledger signing as ``signer`` (funded), sharing one connection per test."""
        if self.base is None:
            if self.backend == "embedded":
                self.base = Ledger.embedded(
                    self.directory,
                    signer=self.funder,
                    genesis_balances={self.funder.address: FUNDS},
                )
            else:
                assert self.node is not None
                self.base = Ledger.connect(self.node.url, signer=self.funder, settings=FAST)
        if signer is not None:
            if self.node is not None:
                self.node.fund(signer.address)
            else:
                self.base.transfer(signer.address, FUNDS // 1000)
        return self.base.with_signer(signer)

    def close(self) -> None:
        if self.base is not None:
            self.base.close()
            self.base = None


@pytest.fixture
def chain(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Chain]:
    node = request.getfixturevalue("anvil") if backend == "anvil" else None
    made = Chain(backend, tmp_path / "chain", node, new_signer())
    yield made
    made.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """The DSN (superuser, database ``postgres``) of a throwaway PostgreSQL cluster
    (:mod:`tests.pg`); skipped only when PostgreSQL is not installed and
    ``AILEDGER_REQUIRE_POSTGRES`` is unset (CI sets it, so there it fails instead)."""
    from tests import pg

    if not pg.available():
        reason = "PostgreSQL is not installed (initdb, pg_ctl): apt-get install postgresql"
        if os.environ.get("AILEDGER_REQUIRE_POSTGRES"):
            pytest.fail(reason)
        pytest.skip(reason)
    cluster = pg.PostgresCluster()
    cluster.start()
    yield cluster.dsn
    cluster.stop()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Environment for CLI subprocesses: a passphrase, and no workspace from outside."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("AILEDGER_")}
    out["AILEDGER_PASSPHRASE"] = "correct horse battery staple"
    return out
