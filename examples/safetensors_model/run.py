"""A Hugging Face safetensors model registered on chain, then opened only once it is verified.

Steps (README.md beside this file explains each one):

1. a throwaway workspace on the embedded chain (keys, contracts), in ``--dir``;
2. a small model saved with the ``safetensors`` package: BF16, F8_E4M3, F8_E5M2 and F32
   tensors (numpy arrays of ``ml_dtypes``' ``bfloat16``, ``float8_e4m3fn``, ``float8_e5m2``);
3. ``register_artifact(..., write_bundle=True)``: per-file digest, signed statement, on chain,
   and ``model.safetensors.ailedger.json`` beside the file;
4. ``load_verified(path, trusted_keys=..., workspace=...)``: checked against the bundle, the
   chain and the trusted key, then parsed; every tensor must come back bit for bit;
5. one byte of the file changed: the load is refused and names the file; the file restored
   loads again.

``load_verified`` decodes BF16 and F8 through ``ml_dtypes`` (needed only for those types).

Usage::

    python examples/safetensors_model/run.py [--dir DIR] [--summary FILE]

Exit code 0 when every step gave its promised outcome, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

from ailedger.errors import AiledgerError, VerificationError
from ailedger.provenance import load_verified, register_artifact
from ailedger.workspace import Workspace


def make_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny two-layer model in low-precision formats, as a language model would ship."""
    rng = np.random.default_rng(seed)
    return {
        "embed.weight": rng.normal(size=(16, 8)).astype(ml_dtypes.bfloat16),
        "layer0.weight": rng.normal(size=(8, 8)).astype(ml_dtypes.float8_e4m3fn),
        "layer0.scale": np.array([0.5, 2.0], dtype=np.float32),
        "layer1.weight": rng.normal(size=(8, 4)).astype(ml_dtypes.float8_e5m2),
        "layer1.bias": np.zeros(4, dtype=ml_dtypes.bfloat16),
    }


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape and bytes (NaN-safe, unlike ==)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def open_verified(path: Path, workspace: Workspace) -> tuple[dict[str, np.ndarray], str]:
    """Step 4: the tensors of ``path``, verified before they are parsed."""
    keys = [workspace.public_key()]
    return load_verified(path, trusted_keys=keys, workspace=workspace), "load_verified"


def run(root: Path) -> dict[str, Any]:
    passphrase = os.environ.get("AILEDGER_PASSPHRASE") or secrets.token_urlsafe(16)

    def secret() -> str:
        return passphrase

    summary: dict[str, Any] = {}
    # 1. a throwaway workspace: unsafe_fast_kdf keeps the example fast; never for real keys
    workspace = Workspace.init(root / ".ailedger", passphrase=secret, unsafe_fast_kdf=True)
    print(f"1. workspace {workspace.path} on the embedded chain")

    # 2. the model, saved by the safetensors package
    model = root / "model.safetensors"
    tensors = make_tensors()
    save_file(tensors, str(model), metadata={"format": "np"})
    header = json.loads(
        model.read_bytes()[8 : 8 + int.from_bytes(model.read_bytes()[:8], "little")]
    )
    dtypes = sorted({v["dtype"] for k, v in header.items() if k != "__metadata__"})
    summary["dtypes"] = dtypes
    print(f"2. saved {model.name}: {len(tensors)} tensors, dtypes {', '.join(dtypes)}")

    # 3. register it, with its bundle beside it
    with workspace.ledger(passphrase=secret) as ledger:
        registration = register_artifact(
            workspace,
            ledger,
            model,
            kind="model",
            signing_key=workspace.signing_key(secret),
            write_bundle=True,
        )
    assert registration.bundle is not None
    summary["digest"] = f"sha256:{registration.digest.hex()}"
    summary["bundle"] = str(registration.bundle)
    print(f"3. registered {summary['digest']} in block {registration.block_number}")
    print(f"   bundle {registration.bundle.name}")

    # 4. open it verified; every tensor must come back bit for bit
    loaded, how = open_verified(model, workspace)
    summary["opened_with"] = how
    summary["tensors_match"] = sorted(loaded) == sorted(tensors) and all(
        same_bits(np.asarray(loaded[k]), tensors[k]) for k in tensors
    )
    print(
        f"4. opened through {how}: {len(loaded)} tensors, bit for bit: {summary['tensors_match']}"
    )

    # 5. tampering is refused before anything is parsed
    original = model.read_bytes()
    tampered = bytearray(original)
    tampered[-1] ^= 0x01  # the last byte of the last tensor's data
    model.write_bytes(bytes(tampered))
    try:
        open_verified(model, workspace)
        summary["tamper_refused"] = False
        print("5. tampered file was loaded: FAILED")
    except VerificationError as exc:
        summary["tamper_refused"] = True
        summary["tamper_error"] = str(exc)
        print(f"5. tampered file refused: {exc}")
    model.write_bytes(original)
    restored, _ = open_verified(model, workspace)
    summary["restored_loads"] = all(same_bits(np.asarray(restored[k]), tensors[k]) for k in tensors)
    print(f"   restored file loads again: {summary['restored_loads']}")
    summary["ok"] = bool(
        summary["tensors_match"] and summary["tamper_refused"] and summary["restored_loads"]
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="Work here (default: a temporary folder).")
    parser.add_argument("--summary", type=Path, help="Write the outcomes here as JSON.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ailedger-safetensors-") as tmp:
        root = Path(args.dir or tmp).resolve()
        root.mkdir(parents=True, exist_ok=True)
        try:
            summary = run(root)
        except AiledgerError as exc:
            summary = {"ok": False, "error": str(exc)}
            print(f"error: {exc}", file=sys.stderr)
    if args.summary is not None:
        args.summary.write_text(json.dumps(summary, indent=1) + "\n")
    print("ok" if summary["ok"] else "FAILED")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
