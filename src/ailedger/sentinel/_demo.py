"""The sentinel's part of ``ailedger demo``: an approval-drain attack on the embedded chain.

Two token holders approve a phishing contract's owner for their whole balance (the
"exploitation" stage of Forta's attack stages), the drainer pulls their tokens with
``transferFrom`` and scatters them over fresh addresses (laundering). The sentinel reads the
blocks back from the chain, its rules flag the drain with their reasons, and each alert is
appended to the audit log that the outside auditor verifies later in the demo.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from ailedger.ledger import Ledger, Signer, load_artifact
from ailedger.ledger.reader import ChainReader
from ailedger.sentinel.actions import AuditAction
from ailedger.sentinel.pipeline import Sentinel

__all__ = ["demo_sentinel"]

_TOKEN = 10**18
_UNLIMITED = 2**256 - 1
_GAS_MONEY = 10**17


def _account() -> Signer:
    return Signer.from_key(secrets.token_bytes(32))


def demo_sentinel(ledger: Ledger, audit: AuditAction, say: Callable[[str], None]) -> dict[str, Any]:
    """Run the attack through ``ledger`` (signing as its account), scan it, audit the alerts."""
    artifact = load_artifact("DemoToken")
    first = ledger.block_number() + 1
    address, _ = ledger.deploy(artifact, "Demo Token", "DEMO", 10_000 * _TOKEN)
    token = ledger.contract(artifact, address)
    victims = [_account() for _ in range(2)]
    friend, drainer = _account(), _account()
    for holder in (*victims, drainer):
        ledger.transfer(holder.address, _GAS_MONEY)
    for victim in victims:
        ledger.transact(token.functions.transfer(victim.address, 1_000 * _TOKEN))
    # ordinary use first: each victim pays a friend
    for victim in victims:
        ledger.with_signer(victim).transact(token.functions.transfer(friend.address, 5 * _TOKEN))
    # the phishing approvals, the drain, and the fan-out to fresh addresses
    for victim in victims:
        ledger.with_signer(victim).transact(token.functions.approve(drainer.address, _UNLIMITED))
    as_drainer = ledger.with_signer(drainer)
    for victim in victims:
        as_drainer.transact(
            token.functions.transferFrom(victim.address, drainer.address, 995 * _TOKEN)
        )
    for _ in range(6):
        as_drainer.transact(token.functions.transfer(_account().address, 300 * _TOKEN))
    last = ledger.block_number()
    with ChainReader.from_ledger(ledger) as reader:
        _, alerts = Sentinel().run(reader.blocks(first, last + 1))
    flagged = [a for a in alerts if a.flagged]
    for alert in flagged:
        audit(alert)
    classes = sorted({a.attack_class for a in flagged})
    say(
        f"   blocks {first}-{last}: {len(flagged)} alerts ({', '.join(classes) or 'none'}), "
        "each appended to the audit log"
    )
    if flagged:
        top = flagged[0]
        why = "; ".join(f"{r.feature}={r.value}" for r in top.reasons[:2])
        say(f"   e.g. {top.tx[:12]}… {top.attack_class}: {why}")
    return {
        "blocks": [first, last],
        "alerts": len(flagged),
        "classes": classes,
        "drainer": drainer.address,
        "drainer_flagged": any(drainer.address.lower() in a.accounts for a in flagged),
    }
