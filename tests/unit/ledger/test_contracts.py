"""The committed artifacts are exactly what the pinned Vyper compiles from the sources."""

from __future__ import annotations

import hashlib

import pytest

from ailedger.ledger.contracts import (
    CONTRACT_NAMES,
    VYPER_VERSION,
    compile_source,
    load_artifact,
    source_path,
)


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_artifact_matches_a_fresh_compile(name: str) -> None:
    vyper = pytest.importorskip("vyper")
    assert vyper.__version__ == VYPER_VERSION
    committed = load_artifact(name)
    fresh = compile_source(name)
    assert committed.source_sha256 == hashlib.sha256(source_path(name).read_bytes()).hexdigest()
    assert committed.bytecode == fresh.bytecode
    assert committed.bytecode_runtime == fresh.bytecode_runtime
    assert committed.abi == fresh.abi
    assert committed.to_json() == fresh.to_json()
