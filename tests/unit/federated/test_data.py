"""Unit tests of ailedger.federated.data: the MNIST IDX reader, digits and partitions."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from ailedger.errors import InputError
from ailedger.federated.data import (
    MNIST_FILES,
    load_dataset,
    load_digits,
    load_mnist,
    parse_partition,
    partition,
)

MNIST_DIR = Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets" / "mnist"


def _idx(values: np.ndarray, *, magic: bytes | None = None) -> bytes:
    header = magic if magic is not None else bytes([0, 0, 0x08, values.ndim])
    return (
        header + struct.pack(f">{values.ndim}I", *values.shape) + values.astype(np.uint8).tobytes()
    )


def _write_mnist(folder: Path, n_train: int = 12, n_test: int = 5) -> None:
    """A tiny but well-formed MNIST folder: 3x3 images whose pixels encode their label."""
    rng = np.random.default_rng(0)
    for (images_name, labels_name), n in zip(
        (MNIST_FILES[:2], MNIST_FILES[2:]), (n_train, n_test), strict=True
    ):
        labels = rng.integers(0, 10, size=n)
        images = np.repeat(labels * 25, 9).reshape(n, 3, 3)
        (folder / images_name).write_bytes(gzip.compress(_idx(images)))
        (folder / labels_name).write_bytes(gzip.compress(_idx(labels)))


def test_reads_well_formed_idx_files(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    x_train, y_train, x_test, y_test = load_mnist(tmp_path)
    assert x_train.shape == (12, 9)
    assert x_test.shape == (5, 9)
    assert x_train.dtype == np.float64
    assert y_train.dtype == np.int64
    np.testing.assert_allclose(x_train[:, 0] * 255, y_train * 25)
    np.testing.assert_allclose(x_test[:, 4] * 255, y_test * 25)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", "MNIST file missing"),
        ("not_gzip", "not a readable gzip file"),
        ("bad_magic", "bad IDX magic"),
        ("truncated", "header promises"),
        ("count_mismatch", "but t10k-labels-idx1-ubyte.gz holds"),
        ("short_header", "too short for an IDX header"),
    ],
)
def test_corrupt_files_raise_input_error(tmp_path: Path, damage: str, message: str) -> None:
    _write_mnist(tmp_path)
    target = tmp_path / MNIST_FILES[3]
    if damage == "missing":
        target.unlink()
    elif damage == "not_gzip":
        target.write_bytes(b"plain bytes, not gzip")
    elif damage == "bad_magic":
        target.write_bytes(gzip.compress(_idx(np.zeros(5), magic=b"\x00\x00\x0d\x01")))
    elif damage == "truncated":
        target.write_bytes(gzip.compress(_idx(np.zeros(5))[:-2]))
    elif damage == "count_mismatch":
        target.write_bytes(gzip.compress(_idx(np.zeros(4))))
    elif damage == "short_header":
        target.write_bytes(gzip.compress(b"\x00\x00"))
    with pytest.raises(InputError, match=message):
        load_mnist(tmp_path)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="MNIST folder not found"):
        load_mnist(tmp_path / "nowhere")
    with pytest.raises(InputError, match="needs a data folder"):
        load_dataset("mnist")
    with pytest.raises(InputError, match="unknown data set"):
        load_dataset("cifar")


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="no MNIST copy beside the repository")
def test_real_mnist() -> None:
    x_train, y_train, x_test, y_test = load_mnist(MNIST_DIR)
    assert x_train.shape == (60000, 784)
    assert x_test.shape == (10000, 784)
    assert y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert y_test[:5].tolist() == [7, 2, 1, 0, 4]
    assert float(x_train.min()) == 0.0
    assert float(x_train.max()) == 1.0
    assert np.bincount(y_train).tolist()[1] == 6742


def test_digits_split_is_stratified_and_scaled() -> None:
    ds = load_digits(seed=3)
    assert ds.num_features == 64
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 1797
    assert float(ds.x_train.min()) >= 0.0
    assert float(ds.x_train.max()) <= 1.0
    shares = np.bincount(ds.y_test, minlength=10) / ds.y_test.shape[0]
    assert np.all(np.abs(shares - 0.1) < 0.02)
    again = load_digits(seed=3)
    np.testing.assert_array_equal(ds.x_train, again.x_train)


def _check_cover(parts: tuple[np.ndarray, ...], n: int) -> None:
    joined = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(joined, np.arange(n))


def test_iid_partition_is_balanced_disjoint_and_seeded() -> None:
    labels = np.repeat(np.arange(10), 100)
    p = partition(labels, 7, "iid", seed=1)
    _check_cover(p.indices, 1000)
    assert max(p.sizes) - min(p.sizes) <= 1
    assert p.spec == "iid"
    q = partition(labels, 7, "iid", seed=1)
    r = partition(labels, 7, "iid", seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(p.indices, q.indices, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(p.indices, r.indices, strict=True))


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    labels = np.repeat(np.arange(10), 300)

    def skew(alpha: float) -> float:
        p = partition(labels, 20, f"dirichlet:{alpha}", seed=0)
        _check_cover(p.indices, 3000)
        counts = p.label_counts(labels, 10)
        return float(np.mean(counts.max(axis=1) / counts.sum(axis=1)))

    low, high = skew(0.1), skew(100.0)
    assert low > 0.5
    assert high < 0.2
    a = partition(labels, 20, "dirichlet:0.5", seed=4)
    b = partition(labels, 20, "Dirichlet:0.50", seed=4)
    assert a.spec == b.spec == "dirichlet:0.5"
    assert all(np.array_equal(x, y) for x, y in zip(a.indices, b.indices, strict=True))
    assert min(a.sizes) >= 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dirichlet:", "positive number"),
        ("dirichlet:0", "positive number"),
        ("dirichlet:-1", "positive number"),
        ("dirichlet:nan", "positive number"),
        ("dirichlet:inf", "positive number"),
        ("shards", "unknown partition"),
        ("iid:2", "unknown partition"),
    ],
)
def test_bad_partition_specs(spec: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_partition(spec)


def test_partition_rejects_impossible_requests() -> None:
    labels = np.repeat(np.arange(2), 5)
    with pytest.raises(InputError, match="cannot give 6 clients"):
        partition(labels, 6, "iid")
    with pytest.raises(InputError, match="positive int"):
        partition(labels, 0, "iid")
    with pytest.raises(InputError, match="fewer than 4 examples"):
        partition(np.repeat(np.arange(2), 10), 5, "dirichlet:0.01", min_size=4)
