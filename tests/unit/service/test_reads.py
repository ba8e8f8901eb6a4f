"""The read views and endpoints (ailedger.service.views, ailedger.service.reads) over a real
workspace on the embedded chain: registrations and lineage, grants, a training task run by
parties through the protocol, sentinel alerts as AuditAction writes them, checkpoints."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi.testclient import TestClient

from ailedger.auditlog import AuditLog
from ailedger.auditlog.events import record_event
from ailedger.crypto import envelope
from ailedger.errors import InputError, LedgerError
from ailedger.federated.protocol import Party, RoundReport, TaskSpec, create_task, model_digest
from ailedger.federated.protocol import run_local as run_parties
from ailedger.federated.transport import BlobStore
from ailedger.ledger import Ledger
from ailedger.ledger.training import TrainingTask
from ailedger.provenance.registry import register_artifact
from ailedger.provenance.sharing import grant, revoke
from ailedger.sentinel.actions import AuditAction, alert_id
from ailedger.sentinel.detectors import Alert, Reason
from ailedger.service import views
from ailedger.service.app import create_app
from ailedger.service.auth import ApiKeys, Scope
from ailedger.service.context import ServiceContext
from ailedger.workspace import Workspace
from tests.conftest import AnvilNode, free_port, new_signer
from tests.unit.federated.test_protocol import DIM, MAX_NORM, WrongShape, linear_party

PASSPHRASE = "reads tests"


def passphrase() -> str:
    return PASSPHRASE


def key_hex(key: X25519PrivateKey) -> str:
    return envelope.dump_public_key(key.public_key(), encoding="raw").hex()


@dataclass
class World:
    ws: Workspace
    account: str
    dataset: str  # sha256:<hex>
    model: str
    other: str  # a dataset registered by another account only
    other_owner: str
    bob: str  # granted, live (hex key)
    carol: str  # granted, then revoked
    task: int
    lone_task: int
    honest: list[str]
    faulty: str
    reports: list[dict[str, Any]]
    alerts: list[Alert]


def digest_of(reg: Any) -> str:
    return "sha256:" + bytes(reg.digest).hex()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One workspace with everything the views show, built once for the module."""
    root = tmp_path_factory.mktemp("reads")
    ws = Workspace.init(root / "ws", passphrase=passphrase, unsafe_fast_kdf=True)
    (root / "data.csv").write_bytes(b"age,outcome\n41,1\n29,0\n" * 50)
    (root / "model").mkdir()
    (root / "model" / "weights.bin").write_bytes(bytes(range(256)) * 8)
    (root / "other.csv").write_bytes(b"another party's data\n" * 20)
    bob, carol = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    reports: list[dict[str, Any]] = []
    with ws.ledger(passphrase=passphrase) as ledger:
        account = ledger.account
        key = ws.signing_key(passphrase)
        dataset = register_artifact(ws, ledger, root / "data.csv", kind="dataset", signing_key=key)
        model = register_artifact(
            ws, ledger, root / "model", kind="model", signing_key=key, parents=[dataset.digest]
        )
        grant(ws, ledger, dataset.digest, key_hex(bob))
        grant(ws, ledger, dataset.digest, key_hex(carol))
        revoke(ws, ledger, dataset.digest, key_hex(carol))
        # another organisation registers on the same registry under its own account
        stranger = new_signer()
        ledger.transfer(stranger.address, 10**18)
        as_stranger = ledger.with_signer(stranger)
        other = register_artifact(
            ws, as_stranger, root / "other.csv", kind="dataset", signing_key=key
        )
        task, honest, faulty = _train(ws, ledger, root, reports)
        contract = TrainingTask(
            ledger=ledger, address=ws.contract_address(ledger.chain_id, TrainingTask.NAME)
        )
        lone_task, _ = contract.create_task(
            spec_digest=hashlib.sha256(b"lone").digest(),
            participants=[account],
            rounds=3,
            quorum=1,
            rule="fedavg",
            commit_blocks=5,
            reveal_blocks=5,
            attest_blocks=5,
        )
        contract.record(lone_task, 0, hashlib.sha256(b"agg 0").digest(), bytes(32))
    # a report of "round 0 of lone_task" from another contract: its digest is not the chain's
    record_event(
        ws,
        "training.round",
        {"task": lone_task, "round": 0, "status": "finalized", "aggregate_digest": "ab" * 32,
         "utility": 0.99, "scores": {}},
    )  # fmt: skip
    alerts = [
        Alert(
            tx="0x" + "11" * 32,
            block=7,
            score=0.97,
            flagged=True,
            attack_class="sandwich",
            detector="rules",
            reasons=(Reason(feature="victim_slippage", value=0.031, why="front-run a swap"),),
            accounts=("0x" + "aa" * 20,),
        ),
        Alert(
            tx="0x" + "22" * 32,
            block=9,
            score=0.8,
            flagged=True,
            attack_class="spam_flood",
            detector="iforest",
            reasons=(Reason(feature="gas_price", value=3, why="far above the block's median"),),
        ),
    ]
    with AuditLog.for_workspace(ws) as log:
        audit = AuditAction(log)
        log.append({"type": "decision", "model": "m1", "output": "approve"})
        audit(alerts[0])
        log.append({"type": "decision", "model": "m1", "output": "deny"})
        audit(alerts[1])
        audit.retract(alerts[0], reason="block 7 left the canonical chain")
        log.checkpoint(ws.signing_key(passphrase))
    return World(
        ws=ws,
        account=account,
        dataset=digest_of(dataset),
        model=digest_of(model),
        other=digest_of(other),
        other_owner=stranger.address,
        bob=key_hex(bob),
        carol=key_hex(carol),
        task=task,
        lone_task=lone_task,
        honest=honest,
        faulty=faulty,
        reports=reports,
        alerts=alerts,
    )


def _train(
    ws: Workspace, ledger: Ledger, root: Path, reports: list[dict[str, Any]]
) -> tuple[int, list[str], str]:
    """Three honest parties and one sending a wrong-shaped update, two rounds, on the
    workspace's TrainingTask; the first honest party reports to the workspace's log as
    ``train join`` does."""
    contract = TrainingTask(
        ledger=ledger, address=ws.contract_address(ledger.chain_id, TrainingTask.NAME)
    )
    signers = [new_signer() for _ in range(4)]
    for signer in signers:
        ledger.transfer(signer.address, 10**18)
    ledgers = [ledger.with_signer(s) for s in signers]
    spec = TaskSpec(
        shape=(DIM,),
        initial_digest=model_digest(np.zeros(DIM)),
        rounds=2,
        quorum=3,
        rule="default",
        max_norm=MAX_NORM,
        commit_blocks=16,
        reveal_blocks=16,
        attest_blocks=16,
        exclude_after=1,
        exclude_fraction=0.5,
        contribution="weights",
    )
    task, _ = create_task(contract, spec, [lg.account for lg in ledgers])
    store = BlobStore(root / "blobs")

    def report(r: RoundReport) -> None:
        doc = {"task": task, **r.to_json()}
        reports.append(doc)
        record_event(ws, "training.round", doc)

    parties = []
    for i, lg in enumerate(ledgers):
        train, evaluate = linear_party(i)
        kind = WrongShape if i == 3 else Party
        parties.append(
            kind(
                contract=contract.with_ledger(lg),
                task=task,
                spec=spec,
                initial_params=np.zeros(DIM),
                train=train,
                evaluate=evaluate,
                store=store,
                endpoint=store.uri,
                on_round=report if i == 0 else None,
            )
        )
    run_parties(parties, miner=ledger)
    return task, [lg.account for lg in ledgers[:3]], ledgers[3].account


@pytest.fixture(scope="module")
def ctx(world: World) -> Iterator[ServiceContext]:
    log = AuditLog.for_workspace(world.ws)
    keys = ApiKeys.for_workspace(world.ws, refresh_interval=0.0)
    yield ServiceContext(workspace=world.ws, log=log, keys=keys)
    keys.close()
    log.close()


@pytest.fixture(scope="module")
def tokens(ctx: ServiceContext) -> dict[str, str]:
    assert ctx.keys is not None
    return {
        "read": ctx.keys.create([Scope.READ], name="auditor")[1],
        "append": ctx.keys.create([Scope.APPEND], name="model server")[1],
        "admin": ctx.keys.create([Scope.ADMIN], name="operator")[1],
    }


@pytest.fixture(scope="module")
def client(ctx: ServiceContext, tokens: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as made:
        made.headers["Authorization"] = f"Bearer {tokens['read']}"
        yield made


# -- provenance --------------------------------------------------------------------------------


def test_registrations_list_every_account_newest_first(world: World, ctx: ServiceContext) -> None:
    found = views.registrations(ctx)
    assert found.chain == "ok" and found.total == 3
    assert [r["digest"] for r in found] == [world.other, world.model, world.dataset]
    other, model, dataset = found
    assert (other["owner"], other["kind"]) == (world.other_owner, "dataset")
    assert (model["owner"], model["kind"], model["name"]) == (world.account, "model", "model")
    assert model["parents"] == [{"owner": world.account, "digest": world.dataset}]
    assert dataset["name"] == "data.csv" and dataset["parents"] == []
    assert dataset["block_number"] < model["block_number"] < other["block_number"]
    assert all(r["tx_hash"].startswith("0x") and r["timestamp"] > 0 for r in found)
    # the statement digest is the SHA-256 of the blob the workspace stored
    blob = (world.ws.blobs_dir / dataset["statement_digest"].removeprefix("sha256:")).read_bytes()
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == dataset["statement_digest"]
    # paging
    assert [r["digest"] for r in views.registrations(ctx, limit=1, offset=1)] == [world.model]
    assert list(views.registrations(ctx, limit=5, offset=3)) == []


def test_lineage_has_the_model_its_dataset_and_the_edge(world: World, ctx: ServiceContext) -> None:
    graph = views.lineage(ctx, world.model)
    assert graph["chain"] == "ok"
    assert {n["digest"] for n in graph["nodes"]} == {world.model, world.dataset}
    assert graph["edges"] == [
        {
            "parent": world.dataset,
            "parent_owner": world.account,
            "child": world.model,
            "child_owner": world.account,
        }
    ]
    assert graph["registration"]["digest"] == world.model
    assert graph["registration"]["kind"] == "model"
    # the dataset's children name the model; other digest forms are the same registration
    up = views.lineage(ctx, "0x" + world.dataset.removeprefix("sha256:"))
    assert up["children"] == [{"owner": world.account, "digest": world.model}]
    assert up["edges"] == [] and [n["digest"] for n in up["nodes"]] == [world.dataset]
    # a digest only another account registered is shown as that account's
    theirs = views.lineage(ctx, world.other)
    assert theirs["root_owner"] == world.other_owner == theirs["registration"]["owner"]


def test_lineage_refuses_bad_input_and_unknown_digests(world: World, ctx: ServiceContext) -> None:
    for bad in ("sha256:xyz", "12" * 31, "", "sha256:" + "0" * 65):
        with pytest.raises(InputError):
            views.lineage(ctx, bad)
    with pytest.raises(views.NotFound):
        views.lineage(ctx, "sha256:" + "00" * 32)
    with pytest.raises(views.NotFound):  # registered, but not by this registrant
        views.lineage(ctx, world.other, registrant=world.account)
    with pytest.raises(InputError):
        views.lineage(ctx, world.model, registrant="0x1234")


# -- sharing -----------------------------------------------------------------------------------


def test_grants_show_live_and_revoked_keys(world: World, ctx: ServiceContext) -> None:
    found = views.grants(ctx, world.dataset)
    assert found.chain == "ok" and found.total == 2, found.note
    assert [g["key"] for g in found] == [world.bob, world.carol]
    bob, carol = found
    assert bob["live"] is True and bob["revoked_block"] is None
    assert carol["live"] is False and carol["revoked_block"] > carol["granted_block"] > 0
    assert list(views.grants(ctx, world.model)) == []
    with pytest.raises(views.NotFound):
        views.grants(ctx, "sha256:" + "00" * 32)
    with pytest.raises(InputError):
        views.grants(ctx, "not a digest")


# -- training ----------------------------------------------------------------------------------


def test_training_tasks_come_from_the_chain(world: World, ctx: ServiceContext) -> None:
    found = views.training_tasks(ctx)
    assert found.chain == "ok" and found.total == 2, found.note
    assert [t["task"] for t in found] == [world.lone_task, world.task]
    lone, task = found
    assert task["participants"] == [*world.honest, world.faulty]
    assert (task["rule"], task["rounds"], task["quorum"]) == ("default", 2, 3)
    assert task["finished"] is True and task["phase"] == "finished"
    assert task["active"] == 3  # the faulty party was excluded
    assert (lone["rule"], lone["finished"], lone["participants"]) == (
        "fedavg",
        False,
        [world.account],
    )


def test_training_rounds_join_the_chain_and_the_party_reports(
    world: World, ctx: ServiceContext
) -> None:
    rounds = views.training_rounds(ctx, world.task)
    assert rounds.chain == "ok" and [r["round"] for r in rounds] == [0, 1]
    assert len(world.reports) == 2
    for row, report in zip(rounds, world.reports, strict=True):
        assert row["status"] == "finalized" and row["reported"] is True
        assert row["aggregate_digest"] == report["aggregate_digest"]
        assert row["accuracy"] == report["utility"]
        assert row["scores"] == report["scores"]
        assert set(world.honest) <= set(row["scores"])
        assert all(row["scores"][p] > 0 for p in world.honest)
        assert row["scores"].get(world.faulty, 0) == 0  # rejected, then excluded
        assert row["votes"] >= 3  # the quorum attested the aggregate
    first = rounds[0]
    assert world.faulty in first["rejected"] and world.faulty in first["flagged"]
    assert set(first["accepted"]) == set(world.honest)
    # excluded after round 0 was flagged (exclude_after=1), as the chain says
    assert world.faulty in rounds[1]["excluded"]
    assert rounds[1]["accuracy"] > rounds[0]["accuracy"]


def test_a_report_the_chain_disagrees_with_is_not_shown(world: World, ctx: ServiceContext) -> None:
    rounds = views.training_rounds(ctx, world.lone_task)
    assert [r["round"] for r in rounds] == [0, 1]
    assert rounds[0]["status"] == "finalized"
    assert rounds[0]["aggregate_digest"] == hashlib.sha256(b"agg 0").hexdigest()
    assert rounds[0]["reported"] is False and rounds[0]["accuracy"] is None
    assert rounds[1]["status"] == "pending"


def test_training_rounds_refuse_bad_and_unknown_tasks(world: World, ctx: ServiceContext) -> None:
    with pytest.raises(views.NotFound):
        views.training_rounds(ctx, 99)
    for bad in (-1, 2**256, True, "1.5", "x", "٣"):
        with pytest.raises(InputError):
            views.training_rounds(ctx, bad)  # type: ignore[arg-type]


# -- the log -----------------------------------------------------------------------------------


def test_alerts_come_newest_first_with_their_reasons(world: World, ctx: ServiceContext) -> None:
    found = views.alerts(ctx)
    assert [a["tx"] for a in found] == [world.alerts[1].tx, world.alerts[0].tx]
    spam, sandwich = found
    assert spam["class"] == "spam_flood" and spam["retracted"] is None
    assert spam["reasons"] == [
        {"feature": "gas_price", "value": 3, "why": "far above the block's median"}
    ]
    assert sandwich["alert_id"] == alert_id(world.alerts[0].to_json())
    assert sandwich["retracted"] == "block 7 left the canonical chain"
    assert sandwich["accounts"] == ["0x" + "aa" * 20] and sandwich["actor"] == "ailedger-sentinel"
    # the entry named is the alert's record in the log
    record = ctx.log.show(sandwich["index"]).record
    assert record["type"] == "sentinel.alert" and record["alert"]["tx"] == sandwich["tx"]
    assert [a["tx"] for a in views.alerts(ctx, limit=1)] == [world.alerts[1].tx]


def test_new_alerts_are_seen_on_the_next_look(world: World, tmp_path: Path) -> None:
    with AuditLog.open(tmp_path / "log.sqlite", origin="example.com/log") as log:
        mine = ServiceContext(workspace=world.ws, log=log)
        assert list(views.alerts(mine)) == []
        AuditAction(log)(world.alerts[0])
        assert [a["tx"] for a in views.alerts(mine)] == [world.alerts[0].tx]
        log.append({"type": "decision", "note": '"type":"sentinel.alert" in a string'})
        assert len(views.alerts(mine)) == 1


def test_checkpoints_and_entries(world: World, ctx: ServiceContext) -> None:
    (latest,) = views.checkpoints(ctx)
    assert latest["size"] == ctx.log.size
    assert latest["root"] == ctx.log.root(latest["size"]).hex()
    assert latest["note"] == ctx.log.latest_checkpoint().decode()  # type: ignore[union-attr]
    rows = views.entries(ctx, start=0, limit=2)
    assert [r["index"] for r in rows] == [0, 1] and rows.total == ctx.log.size
    data = ctx.log.entry_data(1)
    assert rows[1]["leaf_hash"] == hashlib.sha256(b"\x00" + data).hexdigest()
    with pytest.raises(InputError):
        views.entries(ctx, start=-1, limit=2)
    for bad in (0, 1001, True):
        with pytest.raises(InputError):
            views.checkpoints(ctx, limit=bad)


# -- the chain unavailable ---------------------------------------------------------------------


def test_an_unreachable_node_gives_empty_answers_marked_unavailable(
    world: World, ctx: ServiceContext
) -> None:
    down = ServiceContext(workspace=world.ws, log=ctx.log, rpc=f"http://127.0.0.1:{free_port()}")
    for found in (
        views.registrations(down),
        views.grants(down, world.dataset),
        views.training_tasks(down),
        views.training_rounds(down, 0),
    ):
        assert list(found) == [] and found.chain == "unavailable" and found.note
    graph = views.lineage(down, world.model)
    assert graph["chain"] == "unavailable" and graph["nodes"] == graph["edges"] == []
    with pytest.raises(InputError):  # bad input is still refused first
        views.lineage(down, "sha256:nope")


def test_a_busy_embedded_chain_is_unavailable_not_a_hang(
    world: World, ctx: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "CHAIN_WAIT", 0.1)
    with world.ws.ledger():
        found = views.training_tasks(ctx)
    assert found.chain == "unavailable" and "in use" in (found.note or "")
    assert views.training_tasks(ctx).chain == "ok"


# -- the HTTP endpoints ------------------------------------------------------------------------


def test_endpoints_answer_json(world: World, client: TestClient) -> None:
    got = client.get("/v1/provenance", params={"limit": 2})
    assert got.status_code == 200
    body = got.json()
    assert [r["digest"] for r in body["registrations"]] == [world.other, world.model]
    assert (body["total"], body["chain"], body["limit"], body["offset"]) == (3, "ok", 2, 0)

    got = client.get(f"/v1/provenance/{world.model}")
    assert got.status_code == 200
    assert got.json()["edges"][0]["parent"] == world.dataset

    got = client.get(f"/v1/sharing/{world.dataset}/grants")
    assert got.status_code == 200
    body = got.json()
    assert body["owner"] == world.account
    assert [(g["key"], g["live"]) for g in body["grants"]] == [
        (world.bob, True),
        (world.carol, False),
    ]

    tasks = client.get("/v1/training/tasks").json()["tasks"]
    assert [t["task"] for t in tasks] == [world.lone_task, world.task]
    rounds = client.get(f"/v1/training/tasks/{world.task}/rounds").json()
    assert rounds["task"] == world.task
    assert [r["accuracy"] for r in rounds["rounds"]] == [r["utility"] for r in world.reports]

    alerts = client.get("/v1/alerts").json()["alerts"]
    assert alerts[1]["reasons"][0]["feature"] == "victim_slippage"
    checkpoints = client.get("/v1/checkpoints").json()["checkpoints"]
    assert checkpoints[0]["size"] >= 5


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/provenance/sha256:zz", 400),
        ("/v1/provenance/" + "00" * 32, 404),
        ("/v1/sharing/xyz/grants", 400),
        ("/v1/sharing/" + "00" * 32 + "/grants", 404),
        ("/v1/training/tasks/abc/rounds", 400),
        ("/v1/training/tasks/-1/rounds", 400),
        ("/v1/training/tasks/99/rounds", 404),
        ("/v1/provenance?limit=0", 422),
        ("/v1/provenance?limit=1001", 422),
        ("/v1/provenance?limit=ten", 422),
        ("/v1/provenance?offset=-1", 422),
        ("/v1/alerts?limit=5000", 422),
        ("/v1/checkpoints?limit=-3", 422),
        ("/v1/provenance/" + "00" * 32 + "?registrant=nobody", 400),
    ],
)
def test_bad_input_and_unknown_things_answer_4xx_json(
    client: TestClient, path: str, status: int
) -> None:
    got = client.get(path)
    assert got.status_code == status, got.text
    body = got.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    assert "\n" not in body["error"]


def test_endpoints_need_the_read_scope(client: TestClient, tokens: dict[str, str]) -> None:
    assert client.get("/v1/alerts", headers={"Authorization": ""}).status_code == 401
    bare = client.get("/v1/provenance", headers={"Authorization": "Bearer nonsense"})
    assert bare.status_code == 401 and "error" in bare.json()
    append = client.get("/v1/alerts", headers={"Authorization": f"Bearer {tokens['append']}"})
    assert append.status_code == 403 and "read" in append.json()["error"]
    admin = client.get("/v1/alerts", headers={"Authorization": f"Bearer {tokens['admin']}"})
    assert admin.status_code == 200


def test_the_openapi_document_lists_the_read_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/provenance",
        "/v1/provenance/{digest}",
        "/v1/sharing/{resource}/grants",
        "/v1/training/tasks",
        "/v1/training/tasks/{task}/rounds",
        "/v1/alerts",
        "/v1/checkpoints",
    ):
        assert "get" in paths[path], path
    assert "404" in paths["/v1/provenance/{digest}"]["get"]["responses"]


# -- the same views over a real node -----------------------------------------------------------


def test_the_views_read_a_workspace_on_a_real_node(anvil: AnvilNode, tmp_path: Path) -> None:
    path = tmp_path / "ws"
    with pytest.raises(LedgerError, match="no ether"):
        Workspace.init(path, passphrase=passphrase, rpc=anvil.url, unsafe_fast_kdf=True)
    address = "0x" + json.loads((path / "keys" / "ethereum.json").read_text())["address"]
    anvil.fund(address)
    ws = Workspace.init(path, passphrase=passphrase, rpc=anvil.url, unsafe_fast_kdf=True)
    (tmp_path / "data.csv").write_bytes(b"x,y\n1,2\n")
    (tmp_path / "model.bin").write_bytes(b"\x01" * 64)
    reader = X25519PrivateKey.generate()
    with ws.ledger(passphrase=passphrase) as ledger:
        key = ws.signing_key(passphrase)
        data = register_artifact(ws, ledger, tmp_path / "data.csv", kind="dataset", signing_key=key)
        model = register_artifact(
            ws, ledger, tmp_path / "model.bin", kind="model", signing_key=key, parents=[data.digest]
        )
        grant(ws, ledger, model.digest, key_hex(reader))
        contract = TrainingTask(
            ledger=ledger, address=ws.contract_address(ledger.chain_id, TrainingTask.NAME)
        )
        task, _ = contract.create_task(
            spec_digest=hashlib.sha256(b"spec").digest(),
            participants=[ledger.account],
            rounds=1,
            quorum=1,
            rule="fedavg",
            commit_blocks=5,
            reveal_blocks=5,
            attest_blocks=5,
        )
        aggregate = hashlib.sha256(b"the only round").digest()
        contract.record(task, 0, aggregate, bytes(32))
    record_event(
        ws,
        "training.round",
        {"task": task, "round": 0, "status": "finalized", "aggregate_digest": aggregate.hex(),
         "utility": 0.875, "scores": {ledger.account: 1.0}, "excluded": []},
    )  # fmt: skip
    with AuditLog.for_workspace(ws) as log:
        ctx = ServiceContext(workspace=ws, log=log)
        assert [r["digest"] for r in views.registrations(ctx)] == [
            digest_of(model),
            digest_of(data),
        ]
        graph = views.lineage(ctx, digest_of(model))
        assert [(e["parent"], e["child"]) for e in graph["edges"]] == [
            (digest_of(data), digest_of(model))
        ]
        assert [g["key"] for g in views.grants(ctx, digest_of(model))] == [key_hex(reader)]
        (only,) = views.training_tasks(ctx)
        assert (only["task"], only["finished"]) == (task, True)
        (row,) = views.training_rounds(ctx, task)
        assert (row["aggregate_digest"], row["accuracy"]) == (aggregate.hex(), 0.875)
