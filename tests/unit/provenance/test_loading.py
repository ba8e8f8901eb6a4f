"""Loading only verified files: nothing is unpickled before digest, chain and signature agree."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import struct
from pathlib import Path

import joblib
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.errors import InputError, SignatureError
from ailedger.provenance.digest import ManifestMismatch
from ailedger.provenance.loading import load_safetensors, load_verified
from ailedger.provenance.registry import NotRegistered, register_artifact
from tests.unit.provenance.conftest import Party


class Trap:
    """Unpickling it creates the folder ``marker``: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def register(party: Party, path: Path) -> bytes:
    reg = register_artifact(party.ws, party.ledger, path, kind="model", signing_key=party.key)
    return reg.digest


def load(party: Party, path: Path, **kwargs: object) -> object:
    return load_verified(
        path,
        trusted_keys=[party.key.public_key()],
        workspace=party.ws,
        ledger=party.ledger,
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_registered_model_loads(alice: Party, tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump({"weights": np.arange(6.0).reshape(2, 3), "bias": 0.5}, path)
    register(alice, path)
    loaded = load(alice, path)
    assert isinstance(loaded, dict)
    assert loaded["bias"] == 0.5
    np.testing.assert_array_equal(loaded["weights"], np.arange(6.0).reshape(2, 3))


def test_a_swapped_pickle_is_refused_before_unpickling(alice: Party, tmp_path: Path) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Trap(control)))  # noqa: S301 - shows that the trap works
    assert control.is_dir()

    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    register(alice, path)
    marker = tmp_path / "unpickled"
    path.write_bytes(pickle.dumps(Trap(marker)))
    with pytest.raises(ManifestMismatch, match=r"model\.pkl") as info:
        load(alice, path)
    assert info.value.kind == "digest"
    assert not marker.exists()


def test_a_pickle_signed_by_an_untrusted_key_is_not_unpickled(alice: Party, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "trap.pkl"
    path.write_bytes(pickle.dumps(Trap(marker)))
    register(alice, path)
    with pytest.raises(SignatureError):
        load_verified(
            path,
            trusted_keys=[Ed25519PrivateKey.generate().public_key()],
            workspace=alice.ws,
            ledger=alice.ledger,
        )
    assert not marker.exists()


def test_an_unregistered_file_is_refused(alice: Party, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "never.pkl"
    path.write_bytes(pickle.dumps(Trap(marker)))
    with pytest.raises(NotRegistered, match=r"never\.pkl"):
        load(alice, path)
    assert not marker.exists()


def test_numpy_formats_load_without_pickle(alice: Party, tmp_path: Path) -> None:
    npy = tmp_path / "weights.npy"
    np.save(npy, np.linspace(0, 1, 5))
    npz = tmp_path / "weights.npz"
    np.savez(npz, w=np.eye(2), b=np.zeros(2))
    register(alice, npy)
    register(alice, npz)
    np.testing.assert_array_equal(load(alice, npy), np.linspace(0, 1, 5))
    arrays = load(alice, npz)
    assert isinstance(arrays, dict)
    np.testing.assert_array_equal(arrays["w"], np.eye(2))


def test_safetensors_load_verified(alice: Party, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes())
    register(alice, path)
    tensors = load(alice, path)
    assert isinstance(tensors, dict)
    np.testing.assert_array_equal(tensors["weight"], np.array([[1, 2], [3, 4]], dtype="<f4"))


def test_bad_paths_and_formats(alice: Party, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        load(alice, tmp_path / "missing.pkl")
    real = tmp_path / "real.npy"
    np.save(real, np.zeros(1))
    (tmp_path / "link.npy").symlink_to(real)
    with pytest.raises(InputError, match="symbolic link"):
        load(alice, tmp_path / "link.npy")
    with pytest.raises(InputError, match="cannot tell the format"):
        load(alice, tmp_path / "weights.h5")
    with pytest.raises(InputError, match="format must be one of"):
        load(alice, real, format="onnx")


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_torch_files_need_torch(alice: Party, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"not really torch")
    register(alice, path)
    with pytest.raises(InputError, match="torch is not installed"):
        load(alice, path)


def framed(header: dict[str, object]) -> bytes:
    body = json.dumps(header).encode()
    return struct.pack("<Q", len(body)) + body


def safetensors_bytes() -> bytes:
    """A file laid out as the safetensors README's "Format" section specifies."""
    header = {
        "__metadata__": {"format": "pt"},
        "weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "step": {"dtype": "I64", "shape": [], "data_offsets": [16, 24]},
    }
    return framed(header) + struct.pack("<4f", 1, 2, 3, 4) + struct.pack("<q", 7)


def test_safetensors_parser_follows_the_format() -> None:
    tensors = load_safetensors(safetensors_bytes())
    assert set(tensors) == {"weight", "step"}
    assert tensors["weight"].dtype == np.dtype("<f4")
    assert int(tensors["step"]) == 7
    assert tensors["step"].shape == ()


@pytest.mark.parametrize(
    "data",
    [
        b"\x01\x00",
        struct.pack("<Q", 1000) + b"{}",
        struct.pack("<Q", 2) + b"[]",
        framed({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 9]}}) + bytes(9),
        framed({"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}) + bytes(8),
    ],
)
def test_safetensors_parser_refuses_malformed(data: bytes) -> None:
    with pytest.raises(InputError, match="safetensors"):
        load_safetensors(data)
