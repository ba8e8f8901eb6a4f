"""Data for federated experiments: MNIST from its IDX files, scikit-learn's digits, partitions.

- :func:`load_mnist` reads the four original gzip'd IDX files (LeCun, Cortes and Burges, "The
  MNIST database of handwritten digits"; IDX format: a big-endian header of two zero bytes,
  a type code ``0x08`` for unsigned bytes, the number of axes, then one ``uint32`` size per
  axis, then the data in C order). Magic numbers, sizes and lengths are checked.
- :func:`load_digits` wraps scikit-learn's bundled 8x8 digits (1797 images) with a seeded
  stratified train/test split, for fast tests.
- :func:`partition` splits training examples among clients:

  * ``iid``: a seeded shuffle cut into ``n`` nearly equal shards;
  * ``dirichlet:ALPHA``: label skew after Hsu, Qi and Brown 2019, "Measuring the effects of
    non-identical data distribution for federated visual classification" (arXiv:1909.06335),
    allocated per class as in Yurochkin et al. 2019 (ICML, "Bayesian nonparametric federated
    learning of neural networks") and Wang et al. 2020 (ICLR, FedMA): for each class ``c`` draw
    proportions ``p_c ~ Dir(ALPHA * 1_n)`` over the clients and cut the class's shuffled
    examples at the cumulative proportions. Small ``ALPHA`` gives each client few classes;
    large ``ALPHA`` tends to IID. Draws are repeated (same generator) until every client has
    at least ``min_size`` examples.

Every function is deterministic given its seed. Pixel values are scaled to ``[0, 1]``
(float64); labels are int64.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ailedger.errors import InputError

__all__ = [
    "MNIST_FILES",
    "PARTITIONS",
    "Dataset",
    "Partition",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "parse_partition",
    "partition",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
IndexArray = npt.NDArray[np.intp]

#: the four IDX files of MNIST: (train images, train labels, test images, test labels)
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
#: partition schemes understood by :func:`parse_partition`
PARTITIONS = ("iid", "dirichlet:ALPHA")

_IDX_UBYTE = 0x08
_MAX_DIRICHLET_TRIES = 1000


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification data set split into train and test parts.

    ``x_train`` (float64, ``(n_train, num_features)``, values in ``[0, 1]``), ``y_train``
    (int64, ``(n_train,)``, values in ``[0, num_classes)``), and the same for the test part.
    """

    name: str
    x_train: FloatArray
    y_train: IntArray
    x_test: FloatArray
    y_test: IntArray
    num_classes: int

    @property
    def num_features(self) -> int:
        """Length of one flattened example."""
        return int(self.x_train.shape[1])


@dataclass(frozen=True, eq=False)
class Partition:
    """Disjoint index arrays into a training set, one per client.

    ``spec`` is the normalised scheme string (``"iid"`` or ``"dirichlet:0.5"``); ``indices[i]``
    (intp, ascending) are client ``i``'s examples.
    """

    spec: str
    indices: tuple[IndexArray, ...]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, client: int) -> IndexArray:
        return self.indices[client]

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of examples of each client."""
        return tuple(int(ix.shape[0]) for ix in self.indices)

    def label_counts(self, labels: npt.ArrayLike, num_classes: int) -> IntArray:
        """Per-client class histogram, shape ``(clients, num_classes)``."""
        y = np.asarray(labels)
        return np.stack([np.bincount(y[ix], minlength=num_classes) for ix in self.indices])


# --------------------------------------------------------------------------- MNIST


def _read_idx(path: Path, ndim: int) -> npt.NDArray[np.uint8]:
    """Read one gzip'd IDX file of unsigned bytes with ``ndim`` axes."""
    if not path.is_file():
        raise InputError(f"MNIST file missing: {path}")
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: not a readable gzip file ({exc})") from exc
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero, dtype, axes = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != _IDX_UBYTE or axes != ndim:
        raise InputError(
            f"{path}: bad IDX magic 0x{raw[:4].hex()} "
            f"(expected 0x0000{_IDX_UBYTE:02x}{ndim:02x}: unsigned bytes, {ndim} axes)"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(shape)
    if len(raw) - header != expected:
        raise InputError(
            f"{path}: header promises {expected} bytes of data for shape {shape}, "
            f"found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist(data_dir: str | Path) -> tuple[FloatArray, IntArray, FloatArray, IntArray]:
    """Load MNIST from the four standard gzip'd IDX files in ``data_dir`` (:data:`MNIST_FILES`).

    Returns ``(x_train, y_train, x_test, y_test)``: images flattened to 784 float64 values in
    ``[0, 1]`` (shapes ``(60000, 784)`` and ``(10000, 784)`` for the standard files), labels
    int64 in ``[0, 10)``. Raises :class:`InputError` for a missing folder or file, a corrupt
    gzip stream, a bad magic number, a truncated file, or images and labels that disagree.
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        raise InputError(f"MNIST folder not found: {folder}")
    xs: list[FloatArray] = []
    ys: list[IntArray] = []
    for images_name, labels_name in (MNIST_FILES[:2], MNIST_FILES[2:]):
        images = _read_idx(folder / images_name, 3)
        labels = _read_idx(folder / labels_name, 1)
        if images.shape[0] != labels.shape[0]:
            raise InputError(
                f"{folder}: {images_name} holds {images.shape[0]} images but {labels_name} "
                f"holds {labels.shape[0]} labels"
            )
        if images.shape[0] == 0:
            raise InputError(f"{folder / images_name}: no images")
        if labels.size and int(labels.max()) > 9:
            raise InputError(f"{folder / labels_name}: label {int(labels.max())} is not a digit")
        x: FloatArray = images.reshape(images.shape[0], -1).astype(np.float64) / 255.0
        xs.append(x)
        ys.append(labels.astype(np.int64))
    if xs[0].shape[1] != xs[1].shape[1]:
        raise InputError(f"{folder}: train and test images differ in size")
    return xs[0], ys[0], xs[1], ys[1]


# --------------------------------------------------------------------------- datasets


def load_digits(*, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits (64 features scaled to ``[0, 1]``, 10 classes), split into
    train and test with a seeded stratified split."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise InputError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    bunch = sk_load_digits()
    x = np.asarray(bunch.data, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return Dataset(
        name="digits",
        x_train=np.ascontiguousarray(x_tr),
        y_train=np.asarray(y_tr, dtype=np.int64),
        x_test=np.ascontiguousarray(x_te),
        y_test=np.asarray(y_te, dtype=np.int64),
        num_classes=10,
    )


def load_dataset(name: str, data_dir: str | Path | None = None, *, seed: int = 0) -> Dataset:
    """Load ``"digits"`` or ``"mnist"`` (the latter from ``data_dir``) as a :class:`Dataset`.

    ``seed`` only affects the digits split (MNIST has a fixed test set).
    """
    if name == "digits":
        return load_digits(seed=seed)
    if name == "mnist":
        if data_dir is None:
            raise InputError("mnist needs a data folder (--data-dir) holding the four IDX files")
        x_tr, y_tr, x_te, y_te = load_mnist(data_dir)
        return Dataset("mnist", x_tr, y_tr, x_te, y_te, num_classes=10)
    raise InputError(f"unknown data set {name!r}; use 'digits' or 'mnist'")


# --------------------------------------------------------------------------- partitions


def parse_partition(spec: str) -> tuple[str, float | None]:
    """Parse ``"iid"`` or ``"dirichlet:ALPHA"`` (``ALPHA`` a positive finite number) into
    ``(scheme, alpha)``; raises :class:`InputError` otherwise."""
    text = spec.strip().lower()
    if text == "iid":
        return "iid", None
    scheme, sep, value = text.partition(":")
    if scheme == "dirichlet" and sep:
        try:
            alpha = float(value)
        except ValueError:
            alpha = math.nan
        if math.isfinite(alpha) and alpha > 0:
            return "dirichlet", alpha
        raise InputError(f"dirichlet ALPHA must be a positive number, got {value!r}")
    raise InputError(f"unknown partition {spec!r}; use 'iid' or 'dirichlet:ALPHA' (e.g. 0.5)")


def partition(
    labels: npt.ArrayLike, n_clients: int, spec: str = "iid", *, seed: int = 0, min_size: int = 2
) -> Partition:
    """Split the examples with these ``labels`` among ``n_clients`` by ``spec`` (module
    docstring). Every example goes to exactly one client and every client gets at least
    ``min_size`` examples, or :class:`InputError` is raised. Deterministic given ``seed``."""
    scheme, alpha = parse_partition(spec)
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    if isinstance(n_clients, bool) or not isinstance(n_clients, int) or n_clients < 1:
        raise InputError(f"the number of clients must be a positive int, got {n_clients!r}")
    if y.shape[0] < n_clients * min_size:
        raise InputError(
            f"{y.shape[0]} examples cannot give {n_clients} clients {min_size} examples each"
        )
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        shards = np.array_split(rng.permutation(y.shape[0]), n_clients)
        return Partition("iid", tuple(np.sort(s).astype(np.intp) for s in shards))
    assert alpha is not None
    classes = np.unique(y)
    by_class = [np.flatnonzero(y == c) for c in classes]
    for _ in range(_MAX_DIRICHLET_TRIES):
        buckets: list[list[IndexArray]] = [[] for _ in range(n_clients)]
        for members in by_class:
            shuffled = rng.permutation(members)
            share = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(share)[:-1] * shuffled.shape[0]).astype(np.intp)
            for client, piece in enumerate(np.split(shuffled, cuts)):
                buckets[client].append(piece)
        indices = tuple(np.sort(np.concatenate(b)).astype(np.intp) for b in buckets)
        if min(ix.shape[0] for ix in indices) >= min_size:
            return Partition(f"dirichlet:{alpha:g}", indices)
    raise InputError(
        f"dirichlet:{alpha:g} left a client with fewer than {min_size} examples after "
        f"{_MAX_DIRICHLET_TRIES} draws; use a larger ALPHA or fewer clients"
    )
