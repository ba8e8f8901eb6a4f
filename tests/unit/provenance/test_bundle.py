"""Bundles beside artifacts: where they go, what they hold, how each field is checked."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from ailedger.errors import InputError
from ailedger.provenance.bundle import (
    MEDIA_TYPE,
    BundleMismatch,
    bundle_path,
    read_bundle,
    verify_with_bundle,
    write_bundle,
)
from ailedger.provenance.digest import Digest, ManifestMismatch
from ailedger.provenance.loading import load_verified
from ailedger.provenance.registry import Registration, register_artifact
from tests.unit.provenance.conftest import Party


@pytest.fixture
def backend() -> str:
    """The embedded chain only: the shared-anvil case is in tests/integration."""
    return "embedded"


@pytest.fixture
def folder(make_party: Callable[[str], Party], tmp_path: Path) -> tuple[Party, Path, Registration]:
    alice = make_party("alice")
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "train.csv").write_text("x,y\n1,2\n")
    (data / "sub" / "test.csv").write_text("x,y\n3,4\n")
    reg = register_artifact(
        alice.ws, alice.ledger, data, kind="dataset", signing_key=alice.key, write_bundle=True
    )
    return alice, data, reg


def test_bundle_paths_sit_beside_files_and_folders(tmp_path: Path) -> None:
    assert bundle_path(tmp_path / "m.npz") == tmp_path / "m.npz.ailedger.json"
    assert bundle_path(str(tmp_path / "data") + "/") == tmp_path / "data.ailedger.json"


def test_folder_bundle_verifies_and_names_the_changed_file(
    folder: tuple[Party, Path, Registration],
) -> None:
    alice, data, reg = folder
    assert reg.bundle == data.parent / "data.ailedger.json"
    assert sorted(p.name for p in data.rglob("*")) == ["sub", "test.csv", "train.csv"]
    doc = json.loads(reg.bundle.read_text())
    assert doc["mediaType"] == MEDIA_TYPE and doc["kind"] == "dataset"
    assert doc["digest"] == str(Digest(reg.digest))
    ok = verify_with_bundle(data, alice.ledger, trusted_keys=[alice.ws.public_key()])
    assert ok.registration == reg
    (data / "sub" / "test.csv").write_text("x,y\n3,5\n")
    with pytest.raises(ManifestMismatch, match=r"sub/test\.csv"):
        verify_with_bundle(data, alice.ledger, trusted_keys=[alice.ws.public_key()])


def test_pinned_registry_and_expected_digest_are_checked(
    folder: tuple[Party, Path, Registration],
) -> None:
    alice, data, reg = folder
    keys = [alice.ws.public_key()]
    other = "0x" + "11" * 20
    with pytest.raises(BundleMismatch, match="not the trusted registry"):
        verify_with_bundle(data, alice.ledger, trusted_keys=keys, registry=other)
    with pytest.raises(BundleMismatch, match="not for the expected digest"):
        verify_with_bundle(data, alice.ledger, trusted_keys=keys, expected=b"\x01" * 32)
    done = verify_with_bundle(
        data, alice.ledger, trusted_keys=keys, expected=str(Digest(reg.digest))
    )
    assert done.registration.digest == reg.digest
    with pytest.raises(InputError, match="trusted public key"):
        verify_with_bundle(data, alice.ledger, trusted_keys=[])


def test_malformed_bundles_are_refused(folder: tuple[Party, Path, Registration]) -> None:
    reg = folder[2]
    assert reg.bundle is not None
    doc = json.loads(reg.bundle.read_text())
    cases = {
        "mediaType": {**doc, "mediaType": "application/json"},
        "base64": {**doc, "dsse_envelope": "***"},
        "chain_id": {**doc, "chain_id": True},
        "digest must be sha256": {**doc, "digest": "sha1:00"},
    }
    for message, broken in cases.items():
        reg.bundle.write_text(json.dumps(broken))
        with pytest.raises(BundleMismatch, match=message):
            read_bundle(reg.bundle)
    reg.bundle.unlink()
    with pytest.raises(InputError, match="cannot read the bundle"):
        read_bundle(reg.bundle)


def test_write_bundle_refuses_bytes_that_were_not_registered(
    folder: tuple[Party, Path, Registration],
) -> None:
    alice, data, reg = folder
    assert reg.bundle is not None
    envelope = base64.b64decode(json.loads(reg.bundle.read_text())["dsse_envelope"])
    with pytest.raises(InputError, match="not the registered statement"):
        write_bundle(
            data, envelope + b" ", reg, chain_id=alice.ledger.chain_id, registry="0x" + "11" * 20
        )


def test_load_verified_needs_a_bundle_or_a_workspace(tmp_path: Path, alice: Party) -> None:
    model = tmp_path / "m.npy"
    model.write_bytes(b"\x93NUMPY")
    with pytest.raises(InputError, match="no bundle"):
        load_verified(model, trusted_keys=[alice.ws.public_key()])
    bundle = bundle_path(model)
    bundle.write_text("{}")
    with pytest.raises(InputError, match="give a chain"):
        load_verified(model, trusted_keys=[alice.ws.public_key()])
