"""Vyper sources of ailedger's contracts and their committed compiled artifacts.

The artifacts (``<Name>.json``: ABI, creation and runtime bytecode, compiler version, source
digest) are committed beside the sources, so the Vyper compiler is needed only to change a
contract: ``python -m ailedger.ledger.contracts`` recompiles them all, and a test checks that
the committed artifacts are exactly what the pinned compiler produces from the sources.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ailedger.errors import ContractNotFound

__all__ = [
    "CONTRACT_NAMES",
    "VYPER_VERSION",
    "WORKSPACE_CONTRACTS",
    "Artifact",
    "compile_source",
    "load_artifact",
]

#: the compiler the committed artifacts were built with (a development dependency only)
VYPER_VERSION = "0.4.3"
_HERE = Path(__file__).parent
#: every contract whose source lies here; each is a singleton a workspace deploys at init
CONTRACT_NAMES = tuple(sorted(path.stem for path in _HERE.glob("*.vy")))

#: the contracts every workspace deploys (DemoToken is for the demo and tests only)
WORKSPACE_CONTRACTS = ("AnchorRegistry", "ProvenanceRegistry", "TrainingTask")


@dataclass(frozen=True, kw_only=True)
class Artifact:
    """A compiled contract: what is needed to deploy it and to talk to it."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes
    bytecode_runtime: bytes
    compiler: str
    source_sha256: str

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "name": self.name,
                    "compiler": self.compiler,
                    "source_sha256": self.source_sha256,
                    "abi": self.abi,
                    "bytecode": "0x" + self.bytecode.hex(),
                    "bytecode_runtime": "0x" + self.bytecode_runtime.hex(),
                },
                indent=1,
                sort_keys=True,
            )
            + "\n"
        )


def source_path(name: str) -> Path:
    return _HERE / f"{name}.vy"


@cache
def load_artifact(name: str) -> Artifact:
    """Load the committed artifact of contract ``name``."""
    path = _HERE / f"{name}.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ContractNotFound(f"no compiled artifact for contract {name!r}") from exc
    return Artifact(
        name=doc["name"],
        abi=doc["abi"],
        bytecode=bytes.fromhex(doc["bytecode"][2:]),
        bytecode_runtime=bytes.fromhex(doc["bytecode_runtime"][2:]),
        compiler=doc["compiler"],
        source_sha256=doc["source_sha256"],
    )


def compile_source(name: str) -> Artifact:
    """Compile ``<name>.vy`` with the installed Vyper (development only)."""
    import vyper

    source = source_path(name).read_text()
    out = vyper.compile_code(source, output_formats=["abi", "bytecode", "bytecode_runtime"])
    return Artifact(
        name=name,
        abi=out["abi"],
        bytecode=bytes.fromhex(out["bytecode"].removeprefix("0x")),
        bytecode_runtime=bytes.fromhex(out["bytecode_runtime"].removeprefix("0x")),
        compiler=f"vyper {vyper.__version__}",
        source_sha256=hashlib.sha256(source.encode()).hexdigest(),
    )
