"""Anchoring checkpoints on both backends: receipts, outages, reorgs, batching."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog.anchoring import Anchorer, AnchorService, chain_anchors
from ailedger.auditlog.log import AuditLog
from ailedger.auditlog.verify import DirectorySource, verify_export
from ailedger.errors import NodeUnavailable, VerificationError
from ailedger.ledger import AnchorRegistry, Ledger
from tests.conftest import FAST, AnvilNode, Chain, new_signer


@pytest.fixture
def log(tmp_path: Path):  # type: ignore[no-untyped-def]
    opened = AuditLog.open(tmp_path / "log.sqlite", origin="anchor.example/log")
    yield opened
    opened.close()


def test_anchor_covers_the_log_and_verifies(chain: Chain, log: AuditLog, tmp_path: Path) -> None:
    registry = AnchorRegistry.deploy(chain.ledger(new_signer()))
    key = Ed25519PrivateKey.generate()
    anchorer = Anchorer(log=log, registry=registry, key=key)
    assert anchorer.anchor() is None  # an empty log has nothing to anchor
    log.append_many({"i": i} for i in range(1000))
    first = anchorer.anchor()
    assert first is not None
    assert (first.size, first.status) == (1000, "final")
    assert first.tx_hash is not None and first.block_number is not None
    assert anchorer.anchor() is None  # nothing new
    log.append_many({"i": i} for i in range(1000, 1500))
    second = anchorer.anchor()
    assert second is not None and second.size == 1500
    claims = chain_anchors(registry, log.origin_hash, operator=anchorer.operator)
    assert [(c.size, c.root) for c in claims] == [(1000, log.root(1000)), (1500, log.root())]
    log.export(tmp_path / "export")
    report = verify_export(
        DirectorySource(tmp_path / "export"), log.verifier(key.public_key()), anchors=claims
    )
    assert report.anchors == 2


def test_gas_per_entry_falls_with_batch_size(chain: Chain, log: AuditLog) -> None:
    registry = AnchorRegistry.deploy(chain.ledger(new_signer()))
    anchorer = Anchorer(log=log, registry=registry, key=Ed25519PrivateKey.generate())
    gas = []
    for batch in (1, 100, 1000):
        log.append_many({"b": batch, "i": i} for i in range(batch))
        record = anchorer.anchor()
        assert record is not None and record.tx_hash is not None
        gas.append(registry.ledger.w3.eth.get_transaction_receipt(record.tx_hash)["gasUsed"])
    assert abs(gas[1] - gas[2]) < 200  # one anchor per batch, whatever its size (calldata aside)
    assert gas[2] / 1000 < gas[0] / 10


def test_service_anchors_every_n_entries(chain: Chain, log: AuditLog) -> None:
    registry = AnchorRegistry.deploy(chain.ledger(new_signer()))
    anchorer = Anchorer(log=log, registry=registry, key=Ed25519PrivateKey.generate())
    service = AnchorService(anchorer, every_entries=50, every_seconds=3600)
    log.append_many({"i": i} for i in range(49))
    assert service.step() is None
    log.append({"i": 49})
    made = service.step()
    assert made is not None and made.size == 50
    assert service.step() is None


def test_outage_delays_anchoring_and_loses_nothing(own_anvil: AnvilNode, log: AuditLog) -> None:
    signer = new_signer()
    own_anvil.fund(signer.address)
    ledger = Ledger.connect(own_anvil.url, signer=signer, settings=FAST)
    registry = AnchorRegistry.deploy(ledger)
    anchorer = Anchorer(log=log, registry=registry, key=Ed25519PrivateKey.generate())
    service = AnchorService(anchorer, every_entries=10, every_seconds=3600)
    log.append_many({"i": i} for i in range(10))
    assert service.step() is not None
    own_anvil.stop()
    log.append_many({"i": i} for i in range(10, 30))
    assert service.step() is None
    assert isinstance(service.last_error, NodeUnavailable)
    assert log.size == 30
    own_anvil.start()
    made = service.step()
    assert made is not None and made.size == 30
    assert service.last_error is None
    claims = chain_anchors(registry, log.origin_hash, operator=anchorer.operator)
    assert [c.size for c in claims] == [10, 30]


def test_reorg_that_drops_an_anchor_is_resent(anvil: AnvilNode, log: AuditLog) -> None:
    signer = new_signer()
    anvil.fund(signer.address)
    ledger = Ledger.connect(anvil.url, signer=signer, settings=FAST)
    registry = AnchorRegistry.deploy(ledger)
    anchorer = Anchorer(
        log=log, registry=registry, key=Ed25519PrivateKey.generate(), confirmations=3
    )
    log.append_many({"i": i} for i in range(20))
    snapshot = anvil.rpc("evm_snapshot")
    made = anchorer.anchor()
    assert made is not None and made.status == "anchored"  # one block deep, 3 needed
    anvil.rpc("evm_revert", snapshot)
    assert registry.latest(signer.address, log.origin_hash) is None
    records = anchorer.refresh()
    assert records[-1].status in ("anchored", "final")
    assert records[-1].block_number is not None
    latest = registry.latest(signer.address, log.origin_hash)
    assert latest is not None and (latest.size, latest.root) == (20, log.root())
    anvil.rpc("evm_mine")
    anvil.rpc("evm_mine")
    assert anchorer.refresh()[-1].status == "final"


def test_anchor_of_a_rewritten_log_is_caught(chain: Chain, log: AuditLog, tmp_path: Path) -> None:
    registry = AnchorRegistry.deploy(chain.ledger(new_signer()))
    key = Ed25519PrivateKey.generate()
    log.append_many({"i": i} for i in range(30))
    anchorer = Anchorer(log=log, registry=registry, key=key)
    anchorer.anchor()
    rewritten = AuditLog.open(tmp_path / "rewritten.sqlite", origin=log.origin)
    rewritten.append_many({"i": i if i != 3 else -3} for i in range(40))
    rewritten.checkpoint(key)
    rewritten.export(tmp_path / "rewritten")
    rewritten.close()
    with pytest.raises(VerificationError, match=r"anchor #0 on chain"):
        verify_export(
            DirectorySource(tmp_path / "rewritten"),
            log.verifier(key.public_key()),
            anchors=chain_anchors(registry, log.origin_hash, operator=anchorer.operator),
        )


def test_a_squatter_cannot_claim_or_block_the_origin(
    chain: Chain, log: AuditLog, tmp_path: Path
) -> None:
    """Issue 11, item 1: another account anchors the log's origin first, at size 2**64-1."""
    operator, squatter = new_signer(), new_signer()
    registry = AnchorRegistry.deploy(chain.ledger(operator))
    squatting = AnchorRegistry(ledger=chain.ledger(squatter), address=registry.address)
    squatting.anchor(log.origin_hash, 2**64 - 1, b"\x66" * 32)
    key = Ed25519PrivateKey.generate()
    anchorer = Anchorer(log=log, registry=registry, key=key)
    log.append_many({"i": i} for i in range(12))
    made = anchorer.anchor()
    assert made is not None and made.size == 12
    claims = chain_anchors(registry, log.origin_hash, operator=operator.address)
    assert [(c.size, c.root) for c in claims] == [(12, log.root())]
    log.export(tmp_path / "export")
    report = verify_export(
        DirectorySource(tmp_path / "export"), log.verifier(key.public_key()), anchors=claims
    )
    assert report.anchors == 1
    # what the squatter anchored is its own claim, and a verifier reading it would refuse
    squatted = chain_anchors(registry, log.origin_hash, operator=squatter.address)
    with pytest.raises(VerificationError, match="truncated or rolled back"):
        verify_export(
            DirectorySource(tmp_path / "export"), log.verifier(key.public_key()), anchors=squatted
        )


def _restore_and_fork(log_path: Path, backup: Path, origin: str, records: list[dict[str, int]]):  # type: ignore[no-untyped-def]
    for suffix in ("", "-wal", "-shm"):
        Path(str(log_path) + suffix).unlink(missing_ok=True)
    shutil.copy(backup, log_path)
    restored = AuditLog.open(log_path, origin=origin)
    restored.append_many(records)
    return restored


def test_a_restored_backup_that_forks_is_not_anchored(chain: Chain, tmp_path: Path) -> None:
    """Issue 11, item 7: restore an older log.sqlite, append other entries, anchor: refused."""
    path, backup = tmp_path / "log.sqlite", tmp_path / "backup.sqlite"
    registry = AnchorRegistry.deploy(chain.ledger(new_signer()))
    key = Ed25519PrivateKey.generate()
    with AuditLog.open(path, origin="fork.example/log") as log:
        log.append_many({"i": i} for i in range(5))
        Anchorer(log=log, registry=registry, key=key).anchor()
    shutil.copy(path, backup)  # the backup holds 5 entries, anchored
    with AuditLog.open(path, origin="fork.example/log") as log:
        log.append_many({"i": i} for i in range(5, 10))
        Anchorer(log=log, registry=registry, key=key).anchor()
        published = log.root(10)
    block = registry.ledger.block_number()
    forked = _restore_and_fork(path, backup, "fork.example/log", [{"other": i} for i in range(7)])
    with forked:
        assert forked.size == 12
        checkpoints = forked.checkpoints()
        with pytest.raises(VerificationError) as info:
            Anchorer(log=forked, registry=registry, key=key).anchor()
        message = str(info.value)
        assert "anchor #1" in message and "size 10" in message
        assert published.hex() in message and forked.root(10).hex() in message
        assert "restore the newest backup" in message.lower()
        assert forked.checkpoints() == checkpoints  # nothing signed
    assert registry.ledger.block_number() == block  # nothing anchored
    claims = chain_anchors(registry, forked.origin_hash, operator=registry.ledger.account)
    assert [c.size for c in claims] == [5, 10]


def test_a_restored_backup_smaller_than_an_anchor_is_refused(chain: Chain, tmp_path: Path) -> None:
    path, backup = tmp_path / "log.sqlite", tmp_path / "backup.sqlite"
    registry = AnchorRegistry.deploy(chain.ledger(new_signer()))
    key = Ed25519PrivateKey.generate()
    with AuditLog.open(path, origin="old.example/log") as log:
        log.append_many({"i": i} for i in range(3))
    shutil.copy(path, backup)
    with AuditLog.open(path, origin="old.example/log") as log:
        log.append_many({"i": i} for i in range(3, 8))
        Anchorer(log=log, registry=registry, key=key).anchor()
    forked = _restore_and_fork(path, backup, "old.example/log", [{"x": 1}])
    with forked, pytest.raises(VerificationError, match=r"anchor #0 .* covers 8 entries.*only 4"):
        Anchorer(log=forked, registry=registry, key=key).anchor()


def test_the_same_history_restored_and_replayed_still_anchors(chain: Chain, tmp_path: Path) -> None:
    """Restoring a backup and appending the very entries that were lost is no fork."""
    path, backup = tmp_path / "log.sqlite", tmp_path / "backup.sqlite"
    registry = AnchorRegistry.deploy(chain.ledger(new_signer()))
    key = Ed25519PrivateKey.generate()
    with AuditLog.open(path, origin="same.example/log") as log:
        log.append_many({"i": i} for i in range(3))
    shutil.copy(path, backup)
    with AuditLog.open(path, origin="same.example/log") as log:
        log.append_many({"i": i} for i in range(3, 6))
        Anchorer(log=log, registry=registry, key=key).anchor()
    replayed = _restore_and_fork(path, backup, "same.example/log", [{"i": i} for i in range(3, 9)])
    with replayed:
        made = Anchorer(log=replayed, registry=registry, key=key).anchor()
        assert made is not None and made.size == 9


def test_a_service_checks_only_new_anchors_but_catches_a_conflict(
    chain: Chain, log: AuditLog
) -> None:
    registry = AnchorRegistry.deploy(chain.ledger(new_signer()))
    anchorer = Anchorer(log=log, registry=registry, key=Ed25519PrivateKey.generate())
    for n in range(3):
        log.append({"n": n})
        assert anchorer.anchor() is not None
    assert anchorer.check() is not None and anchorer.check().size == 3  # type: ignore[union-attr]
    # an anchor this account sent by other means, for a history the log does not have
    registry.anchor(log.origin_hash, 4, b"\x44" * 32)
    log.append({"n": 3})
    with pytest.raises(VerificationError, match="anchor #3"):
        anchorer.anchor()
    service = AnchorService(anchorer, every_entries=1, every_seconds=3600)
    assert service.step() is None  # the service never raises into the application
    assert isinstance(service.last_error, VerificationError)


@pytest.mark.parametrize("backend", ["embedded"])
def test_checkpoint_given_the_registry_refuses_to_sign_over_published_anchors(
    chain: Chain, log: AuditLog, tmp_path: Path
) -> None:
    """The library, not only the CLI, refuses to sign a fork of what its account anchored."""
    operator = chain.ledger(new_signer())
    registry = AnchorRegistry.deploy(operator)
    key = Ed25519PrivateKey.generate()
    log.append_many({"i": i} for i in range(20))
    assert Anchorer(log=log, registry=registry, key=key).anchor() is not None  # size 20
    # an honest extension still signs, with the check
    log.append_many([{"i": 20}])
    assert b"\n21\n" in log.checkpoint(key, registry=registry)

    # an older copy of the log (its first 10 entries), as a restored backup would be
    with AuditLog.open(tmp_path / "restored.sqlite", origin=log.origin) as restored:
        restored.append_many({"i": i} for i in range(10))
        with pytest.raises(VerificationError, match="older than what was published"):
            restored.checkpoint(key, registry=registry, operator=operator.account)
        # appended to after the restore: a fork of the anchored size 20
        restored.append_many({"other": i} for i in range(15))
        with pytest.raises(VerificationError, match="fork"):
            restored.checkpoint(key, registry=registry)
        assert restored.checkpoints() == []  # nothing was signed
        # anchors by another account are not the operator's claims, and are not read
        stranger = chain.ledger(new_signer()).account
        assert b"\n25\n" in restored.checkpoint(key, registry=registry, operator=stranger)
    with AuditLog.open(tmp_path / "no-chain.sqlite", origin=log.origin) as other:
        other.append_many({"x": i} for i in range(3))
        # without a registry, the old behaviour (no chain read) is kept
        assert b"\n3\n" in other.checkpoint(key)
