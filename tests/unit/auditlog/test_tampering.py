"""Tampering with a log in every way the issue names: each is found and named by verify."""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog import _merkle
from ailedger.auditlog.log import AuditLog
from ailedger.auditlog.verify import AnchorClaim, DirectorySource, verify_export, verify_stored
from ailedger.errors import VerificationError

ORIGIN = "tamper.example/log"
W = _merkle.TILE_WIDTH


class Fixture:
    """A log with three checkpoints and 'anchors' at two of them, exported to a folder."""

    def __init__(self, root: Path, size: int, rng: random.Random) -> None:
        self.root = root
        self.key = Ed25519PrivateKey.generate()
        self.log = AuditLog.open(root / "log.sqlite", origin=ORIGIN)
        cuts = [*sorted(rng.sample(range(1, size), 2)), size]
        start = 0
        self.anchors: list[AnchorClaim] = []
        for number, cut in enumerate(cuts):
            self.log.append_many({"i": i, "pad": "x" * (i % 7)} for i in range(start, cut))
            self.log.checkpoint(self.key)
            if number < 2:
                self.anchors.append(
                    AnchorClaim(index=number, size=cut, root=self.log.root(cut), block_number=9)
                )
            start = cut
        self.size = size
        self.export = root / "export"
        self.log.export(self.export)
        self.verifier = self.log.verifier(self.key.public_key())

    def verify(self, export: Path | None = None) -> None:
        verify_export(DirectorySource(export or self.export), self.verifier, anchors=self.anchors)

    def bundle(self, n: int) -> Path:
        width = min(W, self.size - n * W)
        return self.export / _merkle.entries_path(n, width)

    def read_bundle(self, n: int) -> list[bytes]:
        return _merkle.decode_entry_bundle(self.bundle(n).read_bytes())

    def write_bundle(self, n: int, entries: list[bytes]) -> None:
        self.bundle(n).write_bytes(_merkle.encode_entry_bundle(entries))


@pytest.fixture
def small(tmp_path: Path):  # type: ignore[no-untyped-def]
    fixture = Fixture(tmp_path, 600, random.Random(1))
    yield fixture
    fixture.log.close()


def test_untampered_passes(small: Fixture) -> None:
    small.verify()


def test_modified_entry(small: Fixture) -> None:
    entries = small.read_bundle(1)
    entries[3] = entries[3].replace(b'"i":259', b'"i":999')
    small.write_bundle(1, entries)
    with pytest.raises(VerificationError, match=r"entry 259: its bytes do not hash"):
        small.verify()


def test_deleted_entry(small: Fixture) -> None:
    entries = small.read_bundle(0)
    del entries[10]
    small.write_bundle(0, entries)
    with pytest.raises(VerificationError, match=r"entries 0\.\.255: the bundle holds 255"):
        small.verify()


def test_reordered_entries(small: Fixture) -> None:
    entries = small.read_bundle(2)
    entries[5], entries[6] = entries[6], entries[5]
    small.write_bundle(2, entries)
    with pytest.raises(VerificationError, match=r"entry 517: its bytes do not hash"):
        small.verify()


def test_truncated_log(small: Fixture, tmp_path: Path) -> None:
    """Drop the last entries and serve the export of an older checkpoint: anchors catch it."""
    older = AuditLog.open(tmp_path / "older.sqlite", origin=ORIGIN)
    older.append_many({"i": i, "pad": "x" * (i % 7)} for i in range(small.anchors[0].size))
    older.checkpoint(small.key)
    shutil.rmtree(small.export)
    older.export(small.export)
    older.close()
    with pytest.raises(VerificationError, match="truncated or rolled back after it was anchored"):
        small.verify()


def test_swap_checkpoint_for_an_older_one(small: Fixture) -> None:
    older = sorted((small.export / "ailedger" / "checkpoints").iterdir(), key=lambda p: int(p.name))
    (small.export / "checkpoint").write_bytes(older[0].read_bytes())
    with pytest.raises(VerificationError, match="rolled back"):
        small.verify()


def test_fork_rewritten_history_resigned_with_the_same_key(small: Fixture, tmp_path: Path) -> None:
    forked = AuditLog.open(tmp_path / "fork.sqlite", origin=ORIGIN)
    forked.append_many({"i": i, "pad": "forged" if i == 7 else "x" * (i % 7)} for i in range(600))
    forked.checkpoint(small.key)
    fork_export = tmp_path / "fork-export"
    forked.export(fork_export)
    forked.close()
    # The fork is internally consistent and correctly signed...
    verify_export(DirectorySource(fork_export), small.verifier)
    # ...but the anchors on chain, and a checkpoint an auditor kept, expose it.
    with pytest.raises(VerificationError, match=r"anchor #0 on chain .*history rewritten"):
        small.verify(fork_export)
    kept = (small.export / "checkpoint").read_bytes()
    with pytest.raises(VerificationError, match="forked"):
        verify_export(DirectorySource(fork_export), small.verifier, trusted_checkpoints=[kept])


def test_forged_signature(small: Fixture) -> None:
    note = bytearray((small.export / "checkpoint").read_bytes())
    note[len(ORIGIN) + 2] ^= 1  # a digit of the size line
    (small.export / "checkpoint").write_bytes(bytes(note))
    with pytest.raises(VerificationError):
        small.verify()


def test_edit_sqlite_directly(small: Fixture) -> None:
    small.log.close()
    db = sqlite3.connect(small.root / "log.sqlite")
    db.execute("UPDATE entries SET data = ? WHERE idx = 42", (b'{"i":42,"pad":"evil"}',))
    db.commit()
    db.close()
    with AuditLog.open(small.root / "log.sqlite") as log:
        verify_stored(log, small.verifier, anchors=small.anchors)  # hashes untouched: shallow ok
        with pytest.raises(VerificationError, match="entry 42: its bytes do not hash"):
            verify_stored(log, small.verifier, anchors=small.anchors, deep=True)
    db = sqlite3.connect(small.root / "log.sqlite")
    db.execute("DELETE FROM entries WHERE idx = 599")
    db.commit()
    db.close()
    with (
        AuditLog.open(small.root / "log.sqlite") as log,
        pytest.raises(VerificationError, match="stores 599"),
    ):
        verify_stored(log, small.verifier)


TAMPERS = ("modify", "delete", "insert", "reorder", "truncate", "swap", "tile", "bitflip")


def tamper(fixture: Fixture, kind: str, rng: random.Random) -> None:
    bundles = -(-fixture.size // W)
    n = rng.randrange(bundles)
    entries = fixture.read_bundle(n)
    if kind == "modify":
        i = rng.randrange(len(entries))
        entries[i] = entries[i][:-1] + b',"x":1}'
        fixture.write_bundle(n, entries)
    elif kind == "delete":
        del entries[rng.randrange(len(entries))]
        fixture.write_bundle(n, entries)
    elif kind == "insert":
        entries.insert(rng.randrange(len(entries) + 1), b'{"i":-1}')
        fixture.write_bundle(n, entries)
    elif kind == "reorder":
        if len(entries) < 2:
            entries.append(entries[0])
        i = rng.randrange(len(entries) - 1)
        entries[i], entries[i + 1] = entries[i + 1], entries[i]
        if entries[i] == entries[i + 1]:
            entries[i] = b'{"i":-2}'
        fixture.write_bundle(n, entries)
    elif kind == "truncate":
        last = fixture.bundle(bundles - 1)
        last.unlink()
    elif kind == "swap":
        older = sorted(
            (fixture.export / "ailedger" / "checkpoints").iterdir(), key=lambda p: int(p.name)
        )[:-1]
        (fixture.export / "checkpoint").write_bytes(rng.choice(older).read_bytes())
    elif kind == "tile":
        tiles = [t for t in _merkle.tiles_for_size(fixture.size)]
        path = fixture.export / rng.choice(tiles).path()
        data = bytearray(path.read_bytes())
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
    elif kind == "bitflip":
        path = fixture.bundle(n)
        data = bytearray(path.read_bytes())
        position = rng.randrange(2, len(data))
        data[position] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("seed", range(25))
def test_randomized_tampering_is_always_detected(tmp_path: Path, seed: int) -> None:
    """25 logs x 8 kinds of tampering = 200 trials; each untampered export passes first."""
    rng = random.Random(seed)
    fixture = Fixture(tmp_path, rng.randrange(3, 700), rng)
    try:
        clean = tmp_path / "clean"
        shutil.copytree(fixture.export, clean)
        for kind in TAMPERS:
            fixture.verify()
            tamper(fixture, kind, rng)
            with pytest.raises(VerificationError):
                fixture.verify()
            shutil.rmtree(fixture.export)
            shutil.copytree(clean, fixture.export)
    finally:
        fixture.log.close()
