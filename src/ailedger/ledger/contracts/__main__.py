"""Recompile every contract and rewrite its committed artifact (needs the dev dependencies)."""

from __future__ import annotations

from ailedger.ledger.contracts import _HERE, CONTRACT_NAMES, compile_source

for contract in CONTRACT_NAMES:
    artifact = compile_source(contract)
    (_HERE / f"{contract}.json").write_text(artifact.to_json())
    print(f"{contract}: {len(artifact.bytecode)} bytes ({artifact.compiler})")
