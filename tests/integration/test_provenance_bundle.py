"""Artifacts carry their evidence (issue 12, item 2): org A registers a model on a shared anvil
node, org B verifies it on "another machine" from the artifact, its bundle, the node and A's
public key only, through the library and the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization

from ailedger.crypto.keys import generate_signing_key
from ailedger.errors import SignatureError
from ailedger.ledger import Keystore, Ledger
from ailedger.ledger.provenance import ProvenanceRegistry
from ailedger.provenance import load_verified
from ailedger.provenance.bundle import BundleMismatch, bundle_path
from ailedger.provenance.digest import Digest, ManifestMismatch
from ailedger.provenance.registry import register_artifact
from ailedger.workspace import Workspace
from tests.cli import one_line_error, run
from tests.conftest import AnvilNode

PASSPHRASE = "bundle tests"


@dataclass
class Org:
    ws: Workspace
    ledger: Ledger
    pem: Path


def make_org(root: Path, name: str, node: AnvilNode, registry: str | None) -> Org:
    path = root / name
    Keystore.create(path / "keys" / "ethereum.json", PASSPHRASE, unsafe_fast_kdf=True)
    generate_signing_key(path / "keys" / "ed25519.pem", PASSPHRASE)
    ws = Workspace(path=path, config={"chain": {"backend": "rpc", "rpc": node.url}})
    ws.blobs_dir.mkdir()
    signer = ws.signer(lambda: PASSPHRASE)
    node.fund(signer.address)
    ledger = Ledger.connect(node.url, signer=signer)
    address = registry or ProvenanceRegistry.deploy(ledger).address
    ws.config["contracts"] = {str(ledger.chain_id): {ProvenanceRegistry.NAME: address}}
    ws.save()
    pem = root / f"{name}.pub.pem"
    pem.write_bytes(
        ws.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return Org(ws=ws, ledger=ledger, pem=pem)


@pytest.fixture
def setup(anvil: AnvilNode, tmp_path: Path) -> tuple[Org, Path, Path]:
    """A registers model.npy (bundle written beside it); B's machine gets a copy of both."""
    org_a = make_org(tmp_path, "org_a", anvil, None)
    model = tmp_path / "a_out" / "model.npy"
    model.parent.mkdir()
    np.save(model, np.arange(12, dtype=np.float64).reshape(3, 4))
    reg = register_artifact(
        org_a.ws,
        org_a.ledger,
        model,
        kind="model",
        signing_key=org_a.ws.signing_key(lambda: PASSPHRASE),
        write_bundle=True,
    )
    assert reg.bundle == bundle_path(model) == model.parent / "model.npy.ailedger.json"
    machine_b = tmp_path / "machine_b"
    machine_b.mkdir()
    shutil.copy(model, machine_b / model.name)
    shutil.copy(reg.bundle, machine_b / reg.bundle.name)
    return org_a, machine_b / model.name, machine_b / reg.bundle.name


def outsider_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**env, "HOME": str(tmp_path / "home")}


def test_partner_verifies_from_artifact_and_bundle_only(
    setup: tuple[Org, Path, Path], anvil: AnvilNode, env: dict[str, str], tmp_path: Path
) -> None:
    org_a, model, bundle = setup
    key = org_a.ws.public_key()
    loaded = load_verified(model, trusted_keys=[key], rpc=anvil.url)
    assert loaded.tolist() == np.arange(12, dtype=np.float64).reshape(3, 4).tolist()
    # the bundle's envelope is byte for byte the statement whose digest is on chain
    doc = json.loads(bundle.read_text())
    envelope = base64.b64decode(doc["dsse_envelope"])
    record = ProvenanceRegistry(ledger=org_a.ledger, address=doc["registry"]).registration(
        org_a.ws.keystore().address, Digest.parse(doc["digest"]).raw
    )
    assert record is not None
    assert hashlib.sha256(envelope).digest() == record.statement_digest
    assert doc["statement_digest"] == "sha256:" + record.statement_digest.hex()
    assert (doc["chain_id"], doc["registrant"]) == (
        org_a.ledger.chain_id,
        org_a.ws.keystore().address,
    )
    # the CLI with no workspace at all: artifact, bundle beside it, --rpc and --trust
    cli = ["provenance", "verify", str(model), "--rpc", anvil.url, "--trust", str(org_a.pem)]
    out = json.loads(run(*cli, "--json", env=outsider_env(env, tmp_path)).stdout)
    assert out["digest"] == doc["digest"] and out["digest"].startswith("sha256:")
    assert out["owner"] == org_a.ws.keystore().address
    # trusting nobody is a usage error, not a pass
    none = run(*cli[:5], env=outsider_env(env, tmp_path), check=2)
    assert "--trust" in one_line_error(none)


def test_tampered_artifact_and_bundle_are_refused(
    setup: tuple[Org, Path, Path], anvil: AnvilNode, env: dict[str, str], tmp_path: Path
) -> None:
    org_a, model, bundle = setup
    key = org_a.ws.public_key()
    original = model.read_bytes()
    model.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(ManifestMismatch, match="differs"):
        load_verified(model, trusted_keys=[key], rpc=anvil.url)
    cli = ["provenance", "verify", str(model), "--rpc", anvil.url, "--trust", str(org_a.pem)]
    changed = run(*cli, env=outsider_env(env, tmp_path), check=1)
    assert "model.npy" in one_line_error(changed)
    model.write_bytes(original)

    doc = json.loads(bundle.read_text())
    envelope = bytearray(base64.b64decode(doc["dsse_envelope"]))
    envelope[-3] ^= 1
    altered = {**doc, "dsse_envelope": base64.b64encode(bytes(envelope)).decode()}
    bundle.write_text(json.dumps(altered))
    with pytest.raises(BundleMismatch, match="altered"):
        load_verified(model, trusted_keys=[key], rpc=anvil.url)
    # consistent in itself, but not the statement registered on chain
    altered["statement_digest"] = str(Digest.of(bytes(envelope)))
    bundle.write_text(json.dumps(altered))
    with pytest.raises(BundleMismatch, match="not the one registered"):
        load_verified(model, trusted_keys=[key], rpc=anvil.url)
    bundle.write_text("{not json")
    with pytest.raises(BundleMismatch, match="damaged"):
        load_verified(model, trusted_keys=[key], rpc=anvil.url)


def test_bundle_of_another_registrant_or_chain_is_refused(
    setup: tuple[Org, Path, Path], anvil: AnvilNode, tmp_path: Path
) -> None:
    org_a, model, bundle = setup
    key = org_a.ws.public_key()
    a_address = org_a.ws.keystore().address
    doc = json.loads(bundle.read_text())
    # Mallory registers the same bytes under her account and ships her own bundle
    mallory = make_org(tmp_path, "mallory", anvil, doc["registry"])
    other = tmp_path / "mallory_out" / model.name
    other.parent.mkdir()
    shutil.copy(model, other)
    reg = register_artifact(
        mallory.ws,
        mallory.ledger,
        other,
        kind="model",
        signing_key=mallory.ws.signing_key(lambda: PASSPHRASE),
        write_bundle=True,
    )
    assert reg.bundle is not None
    with pytest.raises(BundleMismatch, match=f"not from the trusted registrant {a_address}"):
        load_verified(
            model, trusted_keys=[key], rpc=anvil.url, bundle=reg.bundle, registrant=a_address
        )
    with pytest.raises(SignatureError):
        load_verified(model, trusted_keys=[key], rpc=anvil.url, bundle=reg.bundle)
    # a bundle whose registration is on another chain
    bundle.write_text(json.dumps({**doc, "chain_id": doc["chain_id"] + 1}))
    with pytest.raises(BundleMismatch, match=f"on chain {doc['chain_id'] + 1}, but the node"):
        load_verified(model, trusted_keys=[key], rpc=anvil.url)


def test_cli_register_writes_the_bundle_and_statement_prints_the_registered_bytes(
    setup: tuple[Org, Path, Path], env: dict[str, str], tmp_path: Path
) -> None:
    org_a = setup[0]
    ws = ["-w", str(org_a.ws.path)]
    env = {**env, "AILEDGER_PASSPHRASE": PASSPHRASE}
    data = tmp_path / "records.csv"
    data.write_text("a,b\n1,2\n")
    reg = json.loads(
        run("provenance", "register", str(data), "--kind", "dataset", *ws, "--json", env=env).stdout
    )
    assert reg["bundle"] == str(tmp_path / "records.csv.ailedger.json")
    assert reg["digest"].startswith("sha256:")
    # given in the 0x form, printed as the exact registered bytes
    printed = run("provenance", "statement", "0x" + reg["digest"][7:], *ws, env=env).stdout
    assert "sha256:" + hashlib.sha256(printed.encode()).hexdigest() == reg["statement_digest"]
    doc = json.loads(Path(reg["bundle"]).read_text())
    assert base64.b64decode(doc["dsse_envelope"]) == printed.encode()


def test_readme_snippet_runs_as_written(
    setup: tuple[Org, Path, Path], anvil: AnvilNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's load_verified snippet, run in a folder holding only what a partner got;
    only the node's URL is replaced by the test node's."""
    org_a = setup[0]
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("```python\n", readme.index("Artifacts carry their evidence"))
    snippet = readme[start + len("```python\n") : readme.index("```", start + 9)]
    assert "http://127.0.0.1:8545" in snippet
    published = tmp_path / "published"
    published.mkdir()
    np.savez(published / "their.npz", w=np.ones(3))
    reg = register_artifact(
        org_a.ws,
        org_a.ledger,
        published / "their.npz",
        kind="model",
        signing_key=org_a.ws.signing_key(lambda: PASSPHRASE),
        write_bundle=True,
    )
    assert reg.bundle is not None
    partner = tmp_path / "partner"
    partner.mkdir()
    shutil.copy(published / "their.npz", partner / "their.npz")
    shutil.copy(reg.bundle, partner / reg.bundle.name)
    shutil.copy(org_a.pem, partner / "orgA.pub")
    monkeypatch.chdir(partner)
    scope: dict[str, object] = {}
    exec(snippet.replace("http://127.0.0.1:8545", anvil.url), scope)  # noqa: S102
    model = scope["model"]
    assert isinstance(model, dict) and model["w"].tolist() == [1.0, 1.0, 1.0]
