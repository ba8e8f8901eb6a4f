"""The embedded chain: persisted in its folder, locked against a second process."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ailedger.errors import TransactionReverted, WorkspaceLocked
from ailedger.ledger import EMBEDDED_CHAIN_ID, AnchorRegistry, Ledger
from ailedger.ledger._embedded import EmbeddedChain, SQLiteKV
from tests.conftest import FUNDS, new_signer


def test_state_survives_reopening(tmp_path: Path) -> None:
    signer = new_signer()
    origin = hashlib.sha256(b"persist").digest()
    with Ledger.embedded(tmp_path, signer=signer, genesis_balances={signer.address: FUNDS}) as one:
        registry = AnchorRegistry.deploy(one)
        registry.anchor(origin, 4, b"\x04" * 32)
        block, balance = one.block_number(), one.balance()
    with Ledger.embedded(tmp_path, signer=signer) as two:
        assert two.chain_id == EMBEDDED_CHAIN_ID
        assert two.block_number() == block
        assert two.balance() == balance
        again = AnchorRegistry(ledger=two, address=registry.address)
        assert again.latest(signer.address, origin) is not None
        again.anchor(origin, 9, b"\x09" * 32)
        assert [a.size for a in again.anchors(signer.address, origin)] == [4, 9]


def test_genesis_balances_apply_only_to_a_new_chain(tmp_path: Path) -> None:
    a, b = new_signer(), new_signer()
    with Ledger.embedded(tmp_path, genesis_balances={a.address: 5}) as one:
        assert one.balance(a.address) == 5
    with Ledger.embedded(tmp_path, genesis_balances={b.address: 7}) as two:
        assert two.balance(b.address) == 0
        assert two.balance(a.address) == 5


def test_a_failed_transaction_leaves_the_state_unchanged(tmp_path: Path) -> None:
    signer = new_signer()
    with Ledger.embedded(tmp_path, signer=signer, genesis_balances={signer.address: FUNDS}) as led:
        registry = AnchorRegistry.deploy(led)
        origin = b"\x01" * 32
        registry.anchor(origin, 3, b"\x03" * 32)
        block = led.block_number()
        with pytest.raises(TransactionReverted):
            registry.anchor(origin, 2, b"\x02" * 32)
        assert led.block_number() == block
    with Ledger.embedded(tmp_path) as reopened:
        assert reopened.block_number() == block
        assert (
            AnchorRegistry(ledger=reopened, address=registry.address).count(signer.address, origin)
            == 1
        )


def test_second_process_is_refused_while_the_chain_is_open(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from ailedger.errors import WorkspaceLocked
        from ailedger.ledger import Ledger
        try:
            Ledger.embedded(Path({str(tmp_path)!r}), lock_timeout=0.2)
        except WorkspaceLocked as exc:
            print("LOCKED", exc)
        else:
            print("OPENED")
        """
    )
    with Ledger.embedded(tmp_path):
        held = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert held.stdout.startswith("LOCKED"), held.stderr
    assert "in use by another process" in held.stdout
    free = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert free.stdout.startswith("OPENED"), free.stderr


def test_lock_waits_for_the_holder(tmp_path: Path) -> None:
    first = EmbeddedChain(tmp_path)
    started = time.monotonic()
    with pytest.raises(WorkspaceLocked):
        EmbeddedChain(tmp_path, lock_timeout=0.3)
    assert time.monotonic() - started >= 0.3
    first.close()
    EmbeddedChain(tmp_path, lock_timeout=0.3).close()


def test_kv_commit_and_rollback(tmp_path: Path) -> None:
    kv = SQLiteKV(tmp_path / "kv.sqlite")
    kv[b"a"] = b"1"
    kv.commit()
    kv[b"b"] = b"2"
    del kv[b"a"]
    assert not kv.exists(b"a")
    assert kv[b"b"] == b"2"
    kv.rollback()
    assert kv[b"a"] == b"1"
    with pytest.raises(KeyError):
        kv[b"b"]
    del kv[b"a"]
    kv.commit()
    kv.close()
    reopened = SQLiteKV(tmp_path / "kv.sqlite")
    assert not reopened.exists(b"a")
    with pytest.raises(KeyError):
        del reopened[b"missing"]
    reopened.close()
