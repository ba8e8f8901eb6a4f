"""AnchorLoop's minimum gap: attempts at least ``min_gap`` seconds apart, however many entries.

The attempts go to a real closed port (nothing listens on 127.0.0.1:9), so each one fails fast
the way an unreachable node fails; the backoff is kept shorter than the gap so that only the
gap can hold an attempt back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog import AuditLog
from ailedger.auditlog.anchoring import Anchorer
from ailedger.errors import InputError
from ailedger.ledger import AnchorRegistry, Ledger, LedgerSettings
from ailedger.service.background import AnchorLoop

ORIGIN = "gap.example/log"


def _loop(log: AuditLog, **options: float) -> AnchorLoop:
    settings = LedgerSettings(retries=1, backoff=0.01, backoff_max=0.01)

    @contextmanager
    def unreachable() -> Iterator[Anchorer]:
        with Ledger.connect("http://127.0.0.1:9", settings=settings) as ledger:
            registry = AnchorRegistry(ledger=ledger, address="0x" + "11" * 20)
            yield Anchorer(log=log, registry=registry, key=Ed25519PrivateKey.generate())

    return AnchorLoop(log, unreachable, every_entries=1, tick=0.01, max_backoff=0.01, **options)


def test_attempts_are_at_least_the_gap_apart(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN) as log:
        log.append_many([{"n": i} for i in range(3)])
        loop = _loop(log, min_gap=0.6)
        assert loop.due()  # nothing tried yet: the gap does not hold the first attempt
        tried = time.monotonic()  # the gap runs from the attempt's start
        assert loop.step() is False
        log.append_many([{"n": i} for i in range(3, 2000)])  # far past every_entries
        time.sleep(0.05)  # past the backoff (0.01 s), well inside the gap
        assert not loop.due()
        while not loop.due():
            assert time.monotonic() - tried < 5
            time.sleep(0.01)
        assert time.monotonic() - tried >= 0.6


def test_the_gap_is_never_longer_than_the_period(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN) as log:
        assert _loop(log, min_gap=30.0, every_seconds=0.5).min_gap == 0.5
        assert _loop(log).min_gap == 5.0
        for bad in (0.0, -1.0, float("nan")):
            with pytest.raises(InputError, match="gap between anchors"):
                _loop(log, min_gap=bad)
