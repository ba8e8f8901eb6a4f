"""LedgerStrategy under Flower's deployment engine: a SuperLink and three SuperNodes as separate
processes on loopback, a run submitted with ``flwr run``, every round recorded on anvil."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ailedger.errors import InputError
from ailedger.federated.aggregate import DEFAULT_MAX_NORM, RULES, aggregate_digest, quantize
from ailedger.ledger import Keystore, Ledger
from ailedger.ledger.training import TrainingTask
from tests.conftest import FAST, AnvilNode, free_port, new_signer, stop_process

pytest.importorskip("flwr")

from ailedger.federated.flower_app import (
    initial_params,
    local_update,
    partition_data,
    write_app,
)

NODES = 3
ROUNDS = 2
PASSPHRASE = "flower deployment test"
BIN = Path(sys.executable).parent
#: a loaded 2-core machine starts these processes slowly; a healthy run takes well under this
RUN_TIMEOUT = 300.0


# --------------------------------------------------------------------------- processes


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time in clock ticks) of a live process, else None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(roots: set[int]) -> dict[int, int]:
    """Every live descendant of ``roots``: pid -> start time (to tell a reused pid apart)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _stat(int(entry))) is not None:
            children.setdefault(info[0], []).append((int(entry), info[2]))
    found: dict[int, int] = {}
    todo = list(roots)
    while todo:
        for pid, start in children.get(todo.pop(), []):
            if pid not in found:
                found[pid] = start
                todo.append(pid)
    return found


def _running(pid: int, start: int) -> bool:
    info = _stat(pid)
    return info is not None and info[2] == start and info[1] != "Z"


@dataclass
class Deployment:
    """A SuperLink and SuperNodes this test started; ``stop`` ends them and all they spawned."""

    home: Path
    env: dict[str, str]
    port: int
    logs: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    spawned: dict[int, int] = field(default_factory=dict)
    cmdlines: dict[int, bytes] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [str(BIN / args[0]), *args[1:]], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def wait_ready(self, timeout: float) -> None:
        """Wait until the SuperLink accepts connections (its one HTTP port)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ended = [p.args[0] for p in self.processes if p.poll() is not None]
            assert not ended, f"{ended} ended early:\n{self.log('superlink')[-3000:]}"
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        pytest.fail(f"the SuperLink did not listen within {timeout} s")

    def flwr(self, *args: str, timeout: float = 120) -> Any:
        """Run the ``flwr`` CLI against this SuperLink; its JSON output."""
        done = subprocess.run(
            [str(BIN / "flwr"), *args, "--format", "json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout[done.stdout.index("{") :])

    def watch(self) -> None:
        """Note the processes spawned so far (SuperExecs, ServerApp and ClientApp processes
        start in sessions of their own, so only their pids find them)."""
        for pid, start in _descendants({p.pid for p in self.processes}).items():
            if pid not in self.spawned:
                self.spawned[pid] = start
                with contextlib.suppress(OSError):
                    self.cmdlines[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()

    def stop(self) -> list[int]:
        """SIGTERM the started processes (SIGKILL after 10 s), wait up to 10 s for what they
        spawned to end by itself, then SIGKILL the rest; returns the pids that needed it."""
        self.watch()
        for process in self.processes:
            stop_process(process)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_running(p, s) for p, s in self.spawned.items()):
            time.sleep(0.2)  # a SuperExec ends by itself once its parent has gone
        killed = [pid for pid, start in self.spawned.items() if _running(pid, start)]
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        return killed

    def serverapp_ended(self) -> bool:
        """Whether a ServerApp process was seen and none is running now."""
        seen = [
            (pid, start)
            for pid, start in self.spawned.items()
            if b"flwr-serverapp" in self.cmdlines.get(pid, b"")
        ]
        return bool(seen) and not any(_running(p, s) for p, s in seen)

    def leftovers(self) -> list[int]:
        """Pids of started or spawned processes still running."""
        alive = [p.pid for p in self.processes if p.poll() is None]
        return alive + [p for p, s in self.spawned.items() if _running(p, s)]


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    home = tmp_path / "flwr"
    home.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AILEDGER_", "FLWR_"))}
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # flwr spawns its tools by name
            "FLWR_HOME": str(home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_TMPDIR": str(tmp_path / "ray"),
            "PYTHONUNBUFFERED": "1",
            "AILEDGER_PASSPHRASE": PASSPHRASE,
        }
    )
    made = Deployment(home=home, env=env, port=free_port(), logs=logs)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "loopback"\n\n'
        f'[superlink.loopback]\naddress = "127.0.0.1:{made.port}"\ninsecure = true\n'
    )
    try:
        made.start(
            "superlink",
            "flower-superlink",
            "--insecure",
            "--host",
            "127.0.0.1",
            "--port",
            str(made.port),
            "--database",
            str(tmp_path / "superlink.db"),
            "--disable-runtime-dependency-installation",
        )
        for k in range(NODES):
            made.start(
                f"supernode{k}",
                "flower-supernode",
                "--insecure",
                "--superlink",
                f"127.0.0.1:{made.port}",
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
                "--node-config",
                f"partition-id={k} num-partitions={NODES}",
                "--max-wait-time",
                "120",
            )
        yield made
    finally:
        made.stop()


# --------------------------------------------------------------------------- the tests


def test_app_folder_passes_flowers_checks_and_bad_config_is_refused(tmp_path: Path) -> None:
    from flwr.cli.config_utils import load_and_validate

    app = write_app(tmp_path / "ailedger-app", num_server_rounds=2, min_nodes=3)
    config, _ = load_and_validate(app / "pyproject.toml")  # Flower's own check, imports too
    components = config["tool"]["flwr"]["app"]["components"]
    assert components == {
        "serverapp": "ailedger.federated.flower_app:server_app",
        "clientapp": "ailedger.federated.flower_app:client_app",
    }
    assert config["tool"]["flwr"]["app"]["config"]["num-server-rounds"] == 2
    bad: list[tuple[dict[str, Any], str]] = [
        ({"rounds": 2}, "unknown run config key"),
        ({"rpc": "http://127.0.0.1:8545"}, "keystore is not"),
        ({"rule": "fltrust"}, "not usable here"),
        ({"num_server_rounds": 0}, "integer >= 1"),
        ({"lr": -1.0}, "positive number"),
    ]
    for options, message in bad:
        with pytest.raises(InputError, match=message):
            write_app(tmp_path / "other", **options)
    with pytest.raises(InputError, match="partition-id"):
        partition_data(3, 3)


@pytest.mark.anvil
@pytest.mark.slow
def test_rounds_run_across_supernodes_and_are_recorded_on_anvil(
    deployment: Deployment, anvil: AnvilNode, tmp_path: Path
) -> None:
    keystore = Keystore.create(tmp_path / "key.json", PASSPHRASE, unsafe_fast_kdf=True)
    anvil.fund(keystore.address)
    with Ledger.connect(anvil.url, signer=new_signer(), settings=FAST) as ledger:
        anvil.fund(ledger.account)
        address = TrainingTask.deploy(ledger).address
    report_path = tmp_path / "report.json"
    app = write_app(
        tmp_path / "ailedger-app",
        num_server_rounds=ROUNDS,
        min_nodes=NODES,
        rpc=anvil.url,
        keystore=str(tmp_path / "key.json"),
        contract=address,
        report=str(report_path),
    )

    deployment.wait_ready(timeout=120)
    submitted = deployment.flwr("run", str(app), "loopback")
    assert submitted["success"] is True, submitted
    run_id = submitted["run-id"]
    deadline = time.monotonic() + RUN_TIMEOUT
    while not report_path.exists():
        deployment.watch()
        ended = [p.args[0] for p in deployment.processes if p.poll() is not None]
        if ended or deployment.serverapp_ended() or time.monotonic() > deadline:
            time.sleep(1)  # the report may be landing just now
            if report_path.exists():
                break
            done = subprocess.run(
                [str(BIN / "flwr"), "log", run_id, "loopback", "--show"],
                env=deployment.env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            pytest.fail(
                f"the run did not finish (ended: {ended}); its log:\n{done.stdout[-4000:]}"
                f"\nSuperLink log:\n{deployment.log('superlink')[-2000:]}"
            )
        time.sleep(0.5)
    report = json.loads(report_path.read_text())
    # the ServerApp writes the report just before it returns; the SuperLink marks the run
    # finished once the ServerApp process has ended, a moment later
    until = time.monotonic() + 60
    while True:
        (run,) = deployment.flwr("ls", "loopback", "--run-id", run_id)["runs"]
        if run["status"] != "running" or time.monotonic() > until:
            break
        time.sleep(0.5)
    assert run["status"] == "finished:completed"
    assert run["fab-id"] == "ailedger/ailedger-flower"

    # each SuperNode process trained its own share: node ids as the SuperNodes logged them
    node_of = {}
    for k in range(NODES):
        match = re.search(r"SuperNode ID: (\d+)", deployment.log(f"supernode{k}"))
        assert match, deployment.log(f"supernode{k}")
        node_of[k] = int(match.group(1))
    assert len(set(node_of.values())) == NODES
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    for r in rounds:
        assert r["nodes"] == sorted(node_of.values())
        assert r["rejected"] == []
        partitions = {int(node): m["partition-id"] for node, m in r["metrics"].items()}
        assert partitions == {node: k for k, node in node_of.items()}
        assert {m["num-examples"] for m in r["metrics"].values()} == {
            len(partition_data(k, NODES)[1]) for k in range(NODES)
        }

    # recompute every round here from the shares: the chain holds exactly those aggregates
    reader = Ledger.connect(anvil.url, settings=FAST)
    chain = TrainingTask(ledger=reader, address=address)
    task = report["task"]
    assert report["contract"].lower() == address.lower()
    assert chain.task_info(task).finished
    assert report["account"].lower() == keystore.address.lower()
    model = initial_params(0)
    for k, r in enumerate(rounds):
        by_node = sorted(node_of.items(), key=lambda item: item[1])
        updates = [
            local_update(model, part, NODES, server_round=r["round"]) - model for part, _ in by_node
        ]
        result = RULES["default"](updates, max_norm=DEFAULT_MAX_NORM)
        assert result.digest.hex() == r["digest"]
        outcome = chain.outcome(task, k)
        assert outcome.status == "finalized"
        assert outcome.aggregate_digest is not None
        assert outcome.aggregate_digest.hex() == r["digest"]
        receipt: Any = anvil.rpc("eth_getTransactionReceipt", r["tx_hash"])
        assert receipt["from"].lower() == keystore.address.lower()
        assert int(receipt["status"], 16) == 1
        model = model + result.aggregate
    reader.close()
    assert report["final_digest"] == aggregate_digest(quantize(model)).hex()
    assert report["final_accuracy"] > 0.3  # from 0.11 at the start: the model learned
    assert np.all(np.isfinite(model))

    # and every process of the deployment stops, including those flwr spawned
    assert deployment.stop() == []  # SIGTERM to the four was enough: the rest ended by itself
    assert len(deployment.spawned) >= 1 + NODES  # a SuperExec beside each, at least
    assert deployment.leftovers() == []
