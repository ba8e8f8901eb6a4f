"""The ledger recorder of single-coordinator runs, inline and in the background."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ailedger.errors import TransactionReverted
from ailedger.federated.protocol import LedgerRecorder
from ailedger.ledger.training import TrainingTask
from tests.conftest import Chain, new_signer


@pytest.mark.parametrize("background", [False, True])
def test_rounds_are_recorded_in_order(chain: Chain, background: bool) -> None:
    contract = TrainingTask.deploy(chain.ledger(new_signer()))
    recorder = LedgerRecorder.start(
        contract, spec={"run": "test"}, rounds=4, rule="default", background=background
    )
    digests = [bytes([r + 1]) * 32 for r in range(4)]
    for number, digest in enumerate(digests):
        recorder(SimpleNamespace(round=number, digest=digest.hex(), contributions=None))
    recorder.flush()
    assert len(recorder.receipts) == 4
    assert recorder.gas_used > 4 * 21000
    for number, digest in enumerate(digests):
        outcome = contract.outcome(recorder.task, number)
        assert (outcome.status, outcome.aggregate_digest) == ("finalized", digest)


def test_a_background_failure_surfaces_at_flush(chain: Chain) -> None:
    contract = TrainingTask.deploy(chain.ledger(new_signer()))
    recorder = LedgerRecorder.start(
        contract, spec={"run": "test"}, rounds=2, rule="default", background=True
    )
    recorder(SimpleNamespace(round=0, digest=(b"\x01" * 32).hex(), contributions=None))
    recorder(SimpleNamespace(round=5, digest=(b"\x02" * 32).hex(), contributions=None))
    with pytest.raises(TransactionReverted):
        recorder.flush()
    assert contract.outcome(recorder.task, 0).status == "finalized"
