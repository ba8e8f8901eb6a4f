"""Training sends under a scheduled fee policy: a party waits for a cheaper block only while
the phase still waits for someone else; the action that completes a phase goes at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ailedger.federated.protocol import Party
from ailedger.ledger import FeeHook
from ailedger.ledger.training import PartyState, Phase
from tests.conftest import Chain
from tests.unit.federated.test_adaptive_rounds import federation
from tests.unit.ledger.test_fee_hook import WaitFor


@pytest.fixture
def backend() -> str:
    """The embedded chain: its fee hook asks the advisor once and never waits."""
    return "embedded"


def _until(party: Party, done: Callable[[], bool]) -> None:
    for _ in range(50):
        if done():
            return
        party.step()
    raise AssertionError("the party did not act")


def test_the_last_party_of_a_phase_sends_at_once(chain: Chain, tmp_path: Path) -> None:
    _, contract, task, _, parties = federation(
        chain, tmp_path, [Party, Party], rounds=1, quorum=2, blocks=12, timing="fixed"
    )
    first, last = parties
    asked: dict[str, WaitFor] = {}
    for party in parties:
        advisor = WaitFor(None)
        party.contract.ledger.fee_hook = FeeHook(advisor=advisor, within=30)
        asked[party.address] = advisor

    def state(party: Party) -> PartyState:
        return contract.party_state(task, party.address)

    # commit: the first committer may wait (for the phase's end, not the 30 blocks); the
    # second completes the phase, so nobody else waits on it
    _until(first, lambda: state(first).committed_round == 0)
    waited, within = asked[first.address].asked[-1]
    commit_end = contract.round_state(task).commit_end
    assert waited == 0 and 1 < within < 30 and within <= commit_end
    _until(last, lambda: state(last).committed_round == 0)
    assert asked[last.address].asked[-1] == (0, 1)
    assert contract.round_state(task).phase == Phase.REVEAL

    # reveal, the other way round
    _until(last, lambda: state(last).revealed_round == 0)
    assert asked[last.address].asked[-1][1] > 1
    _until(first, lambda: state(first).revealed_round == 0)
    assert asked[first.address].asked[-1] == (0, 1)
    assert contract.round_state(task).phase == Phase.ATTEST

    # attest, and the round is final
    _until(first, lambda: state(first).attested_round == 0)
    assert asked[first.address].asked[-1][1] > 1
    _until(last, lambda: state(last).attested_round == 0)
    assert asked[last.address].asked[-1] == (0, 1)
    assert contract.outcome(task, 0).status == "finalized"
