"""Loading a model or array file only after it is verified against its registration.

:func:`load_verified` reads the file once into memory, hashes those bytes as a single-file
model-signing manifest, checks them against the chain and a trusted signature (from the
bundle beside the file, :func:`ailedger.provenance.bundle.verify_with_bundle`, else from a
workspace's blobs, :func:`ailedger.provenance.registry.resolve`), and only then deserialises
the same bytes, so a file swapped between check and use is never loaded, and no byte of an
unverified pickle reaches the unpickler.

Formats, chosen by ``format`` or the file's suffix:

- ``pickle`` (``.pkl``, ``.pickle``) and ``joblib`` (``.joblib``): ``joblib.load``, which also
  reads plain pickles. Unpickling runs code: verification is what makes it acceptable.
- ``numpy`` (``.npy``) and ``npz`` (``.npz``): ``numpy.load`` with ``allow_pickle=False``.
- ``safetensors`` (``.safetensors``): parsed here after the format's specification
  (huggingface/safetensors README, "Format": an 8-byte little-endian header size N, N bytes of
  JSON header mapping each tensor name to ``dtype``, ``shape`` and ``data_offsets [begin, end)``
  relative to the byte buffer after the header, and an optional ``__metadata__`` of strings)
  into numpy arrays; no package needed.
- ``torch`` (``.pt``, ``.pth``): ``torch.load(weights_only=True)`` if torch is installed.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from ailedger._input import parse_json
from ailedger.errors import InputError, VerificationError
from ailedger.ledger import Ledger
from ailedger.provenance.digest import (
    DEFAULT_SIGNATURE_FILE,
    GIT_PATHS,
    Digest,
    FileChanged,
    Manifest,
    ManifestMismatch,
    Resource,
    Serialization,
)
from ailedger.provenance.dsse import TrustedKey
from ailedger.provenance.registry import Verification, provenance_registry, resolve
from ailedger.workspace import Workspace

__all__ = ["FORMATS", "load_safetensors", "load_verified", "verify_bytes"]

FORMATS = ("pickle", "joblib", "numpy", "npz", "safetensors", "torch")
_SUFFIXES = {
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".joblib": "joblib",
    ".npy": "numpy",
    ".npz": "npz",
    ".safetensors": "safetensors",
    ".pt": "torch",
    ".pth": "torch",
}
_SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
}
# Formats numpy has no native type for; ml_dtypes provides them when it is installed.
_SAFETENSORS_ML_DTYPES = {
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}
_MAX_SAFETENSORS_HEADER = 100_000_000


def _safetensors_dtype(name: object) -> np.dtype[Any]:
    """The numpy dtype of a safetensors dtype name (BF16 and F8 through ``ml_dtypes``)."""
    if not isinstance(name, str):
        raise KeyError(name)
    if name in _SAFETENSORS_DTYPES:
        return np.dtype(_SAFETENSORS_DTYPES[name])
    extra = _SAFETENSORS_ML_DTYPES[name]
    try:
        import ml_dtypes
    except ImportError as exc:
        raise InputError(f"safetensors: {name} tensors need the ml_dtypes package") from exc
    dtype: np.dtype[Any] = np.dtype(getattr(ml_dtypes, extra))
    return dtype


def load_verified(
    path: str | os.PathLike[str],
    *,
    trusted_keys: Sequence[TrustedKey],
    rpc: str | None = None,
    bundle: str | os.PathLike[str] | None = None,
    workspace: Workspace | None = None,
    ledger: Ledger | None = None,
    format: str | None = None,
    expected: bytes | str | None = None,
    registrant: str | None = None,
    registry: str | None = None,
) -> Any:
    """Verify the file at ``path`` against its registration by ``registrant``, then load it.

    With a bundle (``bundle``, or ``PATH.ailedger.json`` beside the file, as ``provenance
    register`` writes it), only a chain is needed: ``ledger``, or the node at ``rpc``, or the
    chain of ``workspace`` (:func:`ailedger.provenance.bundle.verify_with_bundle`; the
    registrant defaults to the bundle's, ``registry`` pins the registry address). Without one,
    the registered statement is read from ``workspace``'s blobs, and the registrant defaults
    to the workspace's own account.

    ``trusted_keys`` are the public keys one of which must have signed the registered
    statement, which must name ``registrant``; a registration of the same digest by any other
    account is never accepted. ``expected`` is the digest the file should have
    (``sha256:<hex>``, ``0x<hex>`` or bytes; default: the bundle's, or the latest this
    workspace registered under the file's name). Raises
    :class:`~ailedger.provenance.digest.ManifestMismatch` naming the file when it differs from
    its registration, :class:`~ailedger.provenance.registry.NotRegistered` when ``registrant``
    registered nothing that matches, :class:`~ailedger.provenance.bundle.BundleMismatch` for a
    bundle of another chain or registrant or an altered one,
    :class:`~ailedger.errors.SignatureError` when no trusted key signed it, and
    :class:`InputError` for a path that is not a regular file, an unknown format, or no way to
    reach a chain.
    """
    kind = _format(path, format)
    data, _ = verify_bytes(
        path,
        trusted_keys=trusted_keys,
        rpc=rpc,
        bundle=bundle,
        workspace=workspace,
        ledger=ledger,
        expected=expected,
        registrant=registrant,
        registry=registry,
    )
    return _deserialise(kind, data, os.fspath(path))


def verify_bytes(
    path: str | os.PathLike[str],
    *,
    trusted_keys: Sequence[TrustedKey],
    rpc: str | None = None,
    bundle: str | os.PathLike[str] | None = None,
    workspace: Workspace | None = None,
    ledger: Ledger | None = None,
    expected: bytes | str | None = None,
    registrant: str | None = None,
    registry: str | None = None,
) -> tuple[bytes, Verification]:
    """Read a single file into memory and verify those bytes (arguments as
    :func:`load_verified`); returns them with the result."""
    from ailedger.provenance.bundle import bundle_path, verify_with_bundle

    p = os.fspath(path)
    data = _read_file(p)
    name = _name(p)
    computed = Manifest(
        name,
        (Resource(".", "sha256", hashlib.sha256(data).hexdigest()),),
        Serialization(ignore_paths=tuple(sorted({DEFAULT_SIGNATURE_FILE, *GIT_PATHS}))),
    )

    def recheck(manifest: Manifest) -> None:
        ser = manifest.serialization
        if ser.method != "files" or [r.name for r in manifest.resources] != ["."]:
            raise VerificationError(
                f"{p!r} is a single file, but its registration lists other files "
                f"({', '.join(r.name for r in manifest.resources[:3])})"
            )
        if manifest.resources != computed.resources:
            raise ManifestMismatch(p, p, "digest")

    want = None if expected is None else Digest.parse(expected, "expected digest").raw
    evidence = bundle if bundle is not None else bundle_path(p)
    if bundle is not None or os.path.isfile(evidence):
        with ExitStack() as stack:
            chain = ledger
            if chain is None and rpc is not None:
                chain = stack.enter_context(Ledger.connect(rpc))
            elif chain is None and workspace is not None:
                chain = stack.enter_context(workspace.ledger())
            if chain is None:
                raise InputError(
                    "give a chain to check the bundle against: rpc=URL, ledger= or workspace="
                )
            verification = verify_with_bundle(
                p,
                chain,
                trusted_keys=trusted_keys,
                bundle=evidence,
                registrant=registrant,
                registry=registry,
                expected=want,
                recheck=recheck,
            )
        return data, verification
    if workspace is None:
        raise InputError(
            f"no bundle {os.fspath(evidence)!r} beside {p!r}: give bundle=, or workspace= "
            "with the registrant's signed statement in its blobs"
        )
    with ExitStack() as stack:
        chain = ledger
        if chain is None:
            chain = stack.enter_context(workspace.ledger(rpc=rpc))
        verification = resolve(
            workspace,
            provenance_registry(workspace, chain),
            computed,
            trusted_keys=trusted_keys,
            expected=want,
            recheck=recheck,
            registrant=registrant,
        )
    return data, verification


def load_safetensors(data: bytes) -> dict[str, np.typing.NDArray[Any]]:
    """Parse safetensors bytes into read-only numpy arrays by tensor name (see module doc)."""
    if len(data) < 8:
        raise InputError("not a safetensors file: shorter than its 8-byte header size")
    n = int.from_bytes(data[:8], "little")
    if n > min(_MAX_SAFETENSORS_HEADER, len(data) - 8):
        raise InputError("not a safetensors file: the header size exceeds the file")
    try:
        header = parse_json(
            data[8 : 8 + n], what="safetensors header", max_bytes=_MAX_SAFETENSORS_HEADER
        )
    except InputError as exc:
        raise InputError(f"not a safetensors file: {exc}") from exc
    if not isinstance(header, dict):
        raise InputError("not a safetensors file: the header is not a JSON object")
    buffer = memoryview(data)[8 + n :]
    out: dict[str, np.typing.NDArray[Any]] = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype = _safetensors_dtype(info["dtype"])
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"safetensors: bad or unsupported entry {key!r}") from exc
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not 0 <= begin <= end <= len(buffer) or end - begin != count * dtype.itemsize:
            raise InputError(f"safetensors: the offsets of {key!r} do not fit its shape")
        out[key] = np.frombuffer(buffer[begin:end], dtype=dtype).reshape(shape)
    return out


def _format(path: str | os.PathLike[str], chosen: str | None) -> str:
    if chosen is not None:
        if chosen not in FORMATS:
            raise InputError(f"format must be one of {', '.join(FORMATS)}, got {chosen!r}")
        return chosen
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise InputError(
            f"cannot tell the format of {os.fspath(path)!r} from its suffix; pass format= "
            f"(one of {', '.join(FORMATS)})"
        )
    return _SUFFIXES[suffix]


def _read_file(p: str) -> bytes:
    try:
        lst = os.lstat(p)
    except OSError as exc:
        raise InputError(f"cannot read {p!r}: {exc.strerror}") from exc
    if stat.S_ISLNK(lst.st_mode):
        raise InputError(f"{p!r} is a symbolic link; load the file it points to")
    if not stat.S_ISREG(lst.st_mode):
        raise InputError(f"{p!r} is not a regular file")
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise InputError(f"cannot read {p!r}: {exc.strerror}") from exc
    try:
        before = os.fstat(fd)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read()
        after = os.fstat(fd)
    except OSError as exc:
        raise InputError(f"cannot read {p!r}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or len(
        data
    ) != before.st_size:
        raise FileChanged(p, "it was written to while it was read")
    return data


def _name(p: str) -> str:
    name = os.path.basename(p)
    return name or os.path.basename(os.path.realpath(p))


def _deserialise(kind: str, data: bytes, where: str) -> Any:
    if kind in ("pickle", "joblib"):
        import joblib  # type: ignore[import-untyped]

        return joblib.load(io.BytesIO(data))
    if kind == "numpy":
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"{where!r} is not a numpy .npy file: {exc}") from exc
    if kind == "npz":
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                return {k: archive[k] for k in archive.files}
        except (ValueError, OSError) as exc:
            raise InputError(f"{where!r} is not a numpy .npz file: {exc}") from exc
    if kind == "safetensors":
        return load_safetensors(data)
    try:
        import torch  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise InputError(
            f"{where!r} is a torch file, but torch is not installed (pip install torch==2.13.0)"
        ) from exc
    return torch.load(io.BytesIO(data), weights_only=True)
