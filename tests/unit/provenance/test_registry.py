"""Registering artifacts on chain, lineage and verification, on both backends."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from matplotlib.colors import to_rgb
from matplotlib.image import imread
from numpy.typing import NDArray

from ailedger.crypto.canonical import canonical_json
from ailedger.errors import (
    ContractNotFound,
    InputError,
    SignatureError,
    VerificationError,
    WorkspaceError,
    WrongChain,
)
from ailedger.ledger import AnchorRegistry
from ailedger.ledger.provenance import AlreadyRegistered, ProvenanceRegistry, UnknownParent
from ailedger.provenance import digest as digest_module
from ailedger.provenance.digest import FileChanged, ManifestMismatch, digest_artifact
from ailedger.provenance.dsse import sign_statement, verify_envelope
from ailedger.provenance.lineage import lineage, render_tree, write_graph
from ailedger.provenance.registry import (
    REGISTRANT_ANNOTATION,
    NotRegistered,
    load_statement,
    lookup,
    parse_digest,
    register_artifact,
    statement_registrant,
    verify_artifact,
)
from tests.unit.provenance.conftest import Party


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    folder = tmp_path / "census"
    (folder / "part").mkdir(parents=True)
    (folder / "part" / "a.csv").write_text("age,income\n31,40\n")
    (folder / "part" / "b.csv").write_text("age,income\n52,75\n")
    (folder / "README").write_text("census extract")
    return folder


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.bin"
    path.write_bytes(bytes(range(256)) * 8)
    return path


def blobs(party: Party) -> list[str]:
    return sorted(p.name for p in party.ws.blobs_dir.iterdir())


def test_register_dataset_and_model_with_lineage(alice: Party, dataset: Path, model: Path) -> None:
    ds = register_artifact(alice.ws, alice.ledger, dataset, kind="dataset", signing_key=alice.key)
    assert ds.digest.hex() == digest_artifact(dataset).root_digest
    assert (ds.kind, ds.owner, ds.parents) == ("dataset", alice.ledger.account, ())
    assert ds.receipt is not None
    assert ds.receipt.gas_used > 21000
    m = register_artifact(
        alice.ws, alice.ledger, model, kind="model", signing_key=alice.key, parents=[ds.digest]
    )
    assert m.parents == ((alice.ledger.account, ds.digest),) == (ds.ref,)
    assert m.block_number > ds.block_number
    assert lookup(alice.ws, alice.ledger, m.digest) == m

    envelope = load_statement(alice.ws, m)
    assert hashlib.sha256(canonical_json(envelope)).digest() == m.statement_digest
    assert blobs(alice) == sorted([ds.statement_digest.hex(), m.statement_digest.hex()])
    signed = verify_envelope(envelope, [alice.key.public_key()])
    assert statement_registrant(signed) == alice.ledger.account

    graph = lineage(alice.ws, alice.ledger, m.digest)
    assert set(graph.nodes) == {m.ref, ds.ref}
    assert graph.edges() == [(ds.ref, m.ref)]
    assert graph.names == {m.ref: "model.bin", ds.ref: "census"}
    assert lineage(alice.ws, alice.ledger, ds.digest).children == (m.ref,)
    tree = render_tree(graph).splitlines()
    assert tree[0].startswith("model model.bin sha256:" + m.digest.hex()[:16])
    assert tree[1].startswith("└── dataset census sha256:" + ds.digest.hex()[:16])
    account = alice.ledger.account
    assert graph.to_json()["edges"] == [
        {
            "parent": "sha256:" + ds.digest.hex(),
            "parent_owner": account,
            "child": "sha256:" + m.digest.hex(),
            "child_owner": account,
        }
    ]


def test_lineage_picture_is_svg_naming_every_artifact(
    alice: Party, dataset: Path, model: Path, tmp_path: Path
) -> None:
    ds = register_artifact(alice.ws, alice.ledger, dataset, kind="dataset", signing_key=alice.key)
    m = register_artifact(
        alice.ws, alice.ledger, model, kind="model", signing_key=alice.key, parents=[ds.digest]
    )
    picture = tmp_path / "lineage.svg"
    write_graph(lineage(alice.ws, alice.ledger, m.digest), picture)
    root = ElementTree.parse(picture).getroot()  # noqa: S314 - our own output
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "census" in text
    assert "model.bin" in text
    assert len(list(root.iter("{http://www.w3.org/2000/svg}line"))) == 1


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def has_colour(pixels: NDArray[np.float32], colour: str) -> bool:
    """Whether some pixel of an RGB(A) image (floats in [0, 1]) is ``colour``, to 8 bits."""
    want = np.array(to_rgb(colour), dtype=np.float32)
    return bool((np.abs(pixels[..., :3] - want) < 0.5 / 255).all(axis=-1).any())


@pytest.mark.parametrize("backend", ["embedded"])
def test_lineage_picture_as_png_draws_every_generation(
    alice: Party, dataset: Path, model: Path, tmp_path: Path
) -> None:
    ds = register_artifact(alice.ws, alice.ledger, dataset, kind="dataset", signing_key=alice.key)
    m = register_artifact(
        alice.ws, alice.ledger, model, kind="model", signing_key=alice.key, parents=[ds.digest]
    )
    tuned = tmp_path / "tuned.bin"
    tuned.write_bytes(b"tuned weights" * 64)
    t = register_artifact(
        alice.ws, alice.ledger, tuned, kind="model", signing_key=alice.key, parents=[m.digest]
    )
    single, generations = tmp_path / "dataset.png", tmp_path / "tuned.PNG"
    write_graph(lineage(alice.ws, alice.ledger, ds.digest), single)
    write_graph(lineage(alice.ws, alice.ledger, t.digest), generations)
    write_graph(lineage(alice.ws, alice.ledger, t.digest), tmp_path / "tuned.svg")

    for picture in (single, generations):
        assert picture.read_bytes()[:8] == PNG_SIGNATURE
    one, three = imread(single), imread(generations)
    assert three.shape[0] == one.shape[0]  # one row of boxes in both
    assert three.shape[1] > 2 * one.shape[1]  # three columns against one
    for pixels in (one, three):
        assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 2
    assert has_colour(one, "#dbeafe")
    assert not has_colour(one, "#dcfce7")
    assert has_colour(three, "#dbeafe")
    assert has_colour(three, "#dcfce7")
    # the same layout as the SVG, at two PNG pixels per SVG pixel
    svg = ElementTree.parse(tmp_path / "tuned.svg").getroot()  # noqa: S314 - our own output
    assert three.shape[:2] == (2 * int(svg.attrib["height"]), 2 * int(svg.attrib["width"]))
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("backend", ["embedded"])
@pytest.mark.parametrize("name", ["lineage.gif", "lineage.svg.txt", "lineage"])
def test_lineage_picture_refuses_other_formats(
    alice: Party, dataset: Path, tmp_path: Path, name: str
) -> None:
    ds = register_artifact(alice.ws, alice.ledger, dataset, kind="dataset", signing_key=alice.key)
    with pytest.raises(InputError, match=r"name the file \*\.svg or \*\.png") as info:
        write_graph(lineage(alice.ws, alice.ledger, ds.digest), tmp_path / name)
    assert "\n" not in str(info.value)
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("backend", ["embedded"])
def test_png_without_matplotlib_says_how_to_install_it(
    alice: Party, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = register_artifact(alice.ws, alice.ledger, dataset, kind="dataset", signing_key=alice.key)
    graph = lineage(alice.ws, alice.ledger, ds.digest)
    # None in sys.modules makes an import fail, as when matplotlib is not installed
    for module in [*sys.modules, "matplotlib.backends.backend_agg", "matplotlib.figure"]:
        if module == "matplotlib" or module.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(InputError, match=r"pip install 'ailedger\[graph\]'"):
        write_graph(graph, tmp_path / "lineage.png")
    assert not (tmp_path / "lineage.png").exists()
    write_graph(graph, tmp_path / "lineage.svg")  # SVG needs nothing more
    assert (tmp_path / "lineage.svg").exists()


def test_the_same_digest_twice_by_one_account_is_refused_with_a_reason(
    make_party: Callable[[str], Party], dataset: Path
) -> None:
    alice, bob = make_party("alice"), make_party("bob")
    first = register_artifact(
        alice.ws, alice.ledger, dataset, kind="dataset", signing_key=alice.key
    )
    count = alice.registry.count()
    before = blobs(alice)
    with pytest.raises(AlreadyRegistered, match="already registered") as info:
        register_artifact(alice.ws, alice.ledger, dataset, kind="model", signing_key=alice.key)
    assert alice.ledger.account in str(info.value)
    assert f"block {first.block_number}" in str(info.value)
    assert blobs(alice) == before
    assert alice.registry.count() == count
    # another account registers the same digest under its own name, leaving alice's alone
    theirs = register_artifact(bob.ws, bob.ledger, dataset, kind="dataset", signing_key=bob.key)
    assert (theirs.digest, theirs.owner) == (first.digest, bob.ledger.account)
    assert alice.registry.count() == count + 1
    assert lookup(alice.ws, alice.ledger, first.digest) == first
    assert lookup(alice.ws, alice.ledger, first.digest, owner=bob.ledger.account) == theirs


def test_the_contract_itself_refuses_a_second_registration(alice: Party) -> None:
    registry = alice.registry
    digest, statement = hashlib.sha256(b"d").digest(), hashlib.sha256(b"s").digest()
    registry.register(digest, 1, statement)
    call = registry._contract.functions.register(digest, 2, statement, [])
    from ailedger.errors import TransactionReverted

    with pytest.raises(TransactionReverted, match="digest already registered"):
        alice.ledger.transact(call)
    record = registry.registration(alice.ledger.account, digest)
    assert record is not None
    assert record.kind == 1


def test_unknown_parent_is_refused_and_nothing_is_written(alice: Party, model: Path) -> None:
    missing = hashlib.sha256(b"never registered").digest()
    with pytest.raises(UnknownParent, match=missing.hex()):
        register_artifact(
            alice.ws, alice.ledger, model, kind="model", signing_key=alice.key, parents=[missing]
        )
    assert blobs(alice) == []
    assert alice.registry.count() == 0


@pytest.mark.parametrize("kind", ["weights", "", "Dataset"])
def test_unknown_kind_is_refused(alice: Party, model: Path, kind: str) -> None:
    with pytest.raises(InputError, match="kind must be one of dataset, model"):
        register_artifact(alice.ws, alice.ledger, model, kind=kind, signing_key=alice.key)
    assert alice.registry.count() == 0


def test_missing_path_and_symlink_loop(alice: Party, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        register_artifact(
            alice.ws, alice.ledger, tmp_path / "nope", kind="dataset", signing_key=alice.key
        )
    looped = tmp_path / "looped"
    looped.mkdir()
    (looped / "data.csv").write_text("x\n")
    (looped / "again").symlink_to(looped, target_is_directory=True)
    with pytest.raises(InputError, match="symbolic link loop"):
        register_artifact(
            alice.ws,
            alice.ledger,
            looped,
            kind="dataset",
            signing_key=alice.key,
            allow_symlinks=True,
        )
    assert blobs(alice) == []
    assert alice.registry.count() == 0


def test_a_file_changed_while_hashed_is_not_registered(
    alice: Party, dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = dataset / "part" / "a.csv"
    inode = target.stat().st_ino
    real_fstat = os.fstat
    appended: list[bool] = []

    def fstat_then_append(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        if st.st_ino == inode and not appended:
            appended.append(True)
            with target.open("ab") as fh:
                fh.write(b"99,1\n")
        return st

    monkeypatch.setattr(digest_module.os, "fstat", fstat_then_append)
    with pytest.raises(FileChanged, match=r"a\.csv"):
        register_artifact(alice.ws, alice.ledger, dataset, kind="dataset", signing_key=alice.key)
    assert appended == [True]
    assert blobs(alice) == []
    assert alice.registry.count() == 0


def test_a_registry_call_on_the_wrong_chain(alice: Party, model: Path) -> None:
    chain_id = alice.ledger.chain_id
    other = chain_id + 1
    with pytest.raises(WrongChain, match=f"serves chain id {chain_id}"):
        ProvenanceRegistry(
            ledger=alice.ledger,
            address=alice.ws.contract_address(chain_id, "ProvenanceRegistry"),
            chain_id=other,
        )
    alice.ws.config["contracts"] = {str(other): alice.ws.config["contracts"][str(chain_id)]}
    with pytest.raises(WorkspaceError, match=f"no ProvenanceRegistry on chain {chain_id}"):
        register_artifact(alice.ws, alice.ledger, model, kind="model", signing_key=alice.key)
    assert blobs(alice) == []


def test_a_registry_address_with_other_code_is_refused(alice: Party, model: Path) -> None:
    anchors = AnchorRegistry.deploy(alice.ledger)
    alice.ws.config["contracts"] = {
        str(alice.ledger.chain_id): {"ProvenanceRegistry": anchors.address}
    }
    with pytest.raises(ContractNotFound, match="is not ProvenanceRegistry"):
        register_artifact(alice.ws, alice.ledger, model, kind="model", signing_key=alice.key)
    assert blobs(alice) == []


def test_verify_names_the_changed_file(alice: Party, dataset: Path) -> None:
    reg = register_artifact(alice.ws, alice.ledger, dataset, kind="dataset", signing_key=alice.key)
    trusted = [alice.key.public_key()]
    ok = verify_artifact(alice.ws, alice.ledger, dataset, trusted_keys=trusted)
    assert ok.registration == reg
    assert ok.manifest.model_name == "census"
    (dataset / "part" / "b.csv").write_text("age,income\n52,76\n")
    with pytest.raises(ManifestMismatch, match=r"'part/b\.csv'") as info:
        verify_artifact(alice.ws, alice.ledger, dataset, trusted_keys=trusted)
    assert info.value.kind == "digest"
    (dataset / "part" / "b.csv").unlink()
    with pytest.raises(ManifestMismatch, match=r"'part/b\.csv'") as info:
        verify_artifact(alice.ws, alice.ledger, dataset, trusted_keys=trusted, expected=reg.digest)
    assert info.value.kind == "missing"


def test_a_pinned_expected_digest_is_not_replaced_by_another_registered_version(
    alice: Party, model: Path
) -> None:
    # attack round 2, PR07: version 1 and version 2 both registered by the same account; a
    # caller pinning version 1 must not accept the file of version 2
    trusted = [alice.key.public_key()]
    v1 = register_artifact(alice.ws, alice.ledger, model, kind="model", signing_key=alice.key)
    model.write_bytes(b"weights, version 2")
    register_artifact(alice.ws, alice.ledger, model, kind="model", signing_key=alice.key)
    with pytest.raises(ManifestMismatch):
        verify_artifact(alice.ws, alice.ledger, model, trusted_keys=trusted, expected=v1.digest)
    with pytest.raises(NotRegistered, match="expected digest"):
        verify_artifact(alice.ws, alice.ledger, model, trusted_keys=trusted, expected=b"\x33" * 32)


def test_verify_refuses_unregistered_and_untrusted(
    alice: Party, dataset: Path, model: Path
) -> None:
    trusted = [alice.key.public_key()]
    with pytest.raises(NotRegistered, match=r"'model\.bin'"):
        verify_artifact(alice.ws, alice.ledger, model, trusted_keys=trusted)
    register_artifact(alice.ws, alice.ledger, dataset, kind="dataset", signing_key=alice.key)
    stranger = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(SignatureError):
        verify_artifact(alice.ws, alice.ledger, dataset, trusted_keys=[stranger])


def test_a_manifest_from_another_tool_with_unknown_fields_verifies(
    alice: Party, model: Path
) -> None:
    statement = digest_artifact(model).to_statement()
    statement["predicate"]["x-other-tool"] = {"version": "9.9", "notes": ["kept", "ignored"]}
    statement["predicate"]["serialization"]["x-chunking"] = "fastcdc"
    statement["predicate"]["resources"][0]["x-size"] = 2048
    statement["subject"][0]["annotations"] = {
        "origin": "another tool",
        REGISTRANT_ANNOTATION: alice.ledger.account.lower(),
    }
    blob = canonical_json(sign_statement(statement, alice.key))
    statement_digest = hashlib.sha256(blob).digest()
    (alice.ws.blobs_dir / statement_digest.hex()).write_bytes(blob)
    digest = parse_digest(digest_artifact(model).root_digest)
    alice.registry.register(digest, 2, statement_digest)
    result = verify_artifact(alice.ws, alice.ledger, model, trusted_keys=[alice.key.public_key()])
    assert result.registration.digest == digest
    assert json.loads(blob)["payload"] == result.envelope["payload"]


def test_a_registered_statement_of_an_unknown_method_is_a_clear_error(
    alice: Party, model: Path
) -> None:
    statement = digest_artifact(model).to_statement()
    statement["predicate"]["serialization"]["method"] = "merkle-tree"
    statement["subject"][0]["annotations"] = {REGISTRANT_ANNOTATION: alice.ledger.account}
    blob = canonical_json(sign_statement(statement, alice.key))
    statement_digest = hashlib.sha256(blob).digest()
    (alice.ws.blobs_dir / statement_digest.hex()).write_bytes(blob)
    alice.registry.register(parse_digest(digest_artifact(model).root_digest), 2, statement_digest)
    with pytest.raises(VerificationError, match="unknown serialization method 'merkle-tree'"):
        verify_artifact(alice.ws, alice.ledger, model, trusted_keys=[alice.key.public_key()])


def test_an_altered_statement_blob_is_detected(alice: Party, model: Path) -> None:
    reg = register_artifact(alice.ws, alice.ledger, model, kind="model", signing_key=alice.key)
    blob = alice.ws.blobs_dir / reg.statement_digest.hex()
    blob.write_bytes(blob.read_bytes().replace(b'"payload"', b'"payload" '))
    with pytest.raises(VerificationError, match="altered"):
        verify_artifact(alice.ws, alice.ledger, model, trusted_keys=[alice.key.public_key()])


@pytest.mark.parametrize("text", ["12", "0x" + "g" * 64, "ab" * 33])
def test_parse_digest_refuses_malformed(text: str) -> None:
    with pytest.raises(InputError, match="64 hex digits"):
        parse_digest(text)
