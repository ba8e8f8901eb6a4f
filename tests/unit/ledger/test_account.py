"""The keystore: encrypted, private, untouched by a wrong passphrase."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from ailedger.errors import InputError, KeyError_, WrongPassphrase
from ailedger.ledger import Keystore, Signer


def test_keystore_round_trip_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "eth.json"
    made = Keystore.create(path, "s3cret", unsafe_fast_kdf=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = Keystore.load(path)
    assert loaded.address == made.address
    assert loaded.unlock("s3cret").address == made.address
    assert "s3cret" not in path.read_text()


def test_wrong_passphrase_leaves_the_keystore_untouched(tmp_path: Path) -> None:
    path = tmp_path / "eth.json"
    Keystore.create(path, "right", unsafe_fast_kdf=True)
    before = hashlib.sha256(path.read_bytes()).digest()
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        Keystore.load(path).unlock("wrong")
    assert hashlib.sha256(path.read_bytes()).digest() == before


def test_default_kdf_is_scrypt(tmp_path: Path) -> None:
    path = tmp_path / "eth.json"
    Keystore.create(path, "pw")
    assert '"kdf": "scrypt"' in path.read_text()


def test_bad_keystores(tmp_path: Path) -> None:
    with pytest.raises(KeyError_, match="no keystore"):
        Keystore.load(tmp_path / "missing.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(KeyError_, match="unreadable"):
        Keystore.load(tmp_path / "junk.json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(KeyError_, match="not a V3 keystore"):
        Keystore.load(tmp_path / "other.json")
    with pytest.raises(InputError, match="empty passphrase"):
        Keystore.create(tmp_path / "x.json", "")


def test_signer_unlocks_lazily_and_once(tmp_path: Path) -> None:
    path = tmp_path / "eth.json"
    keystore = Keystore.create(path, "pw", unsafe_fast_kdf=True)
    asked: list[int] = []

    def passphrase() -> str:
        asked.append(1)
        return "pw"

    signer = Signer.from_keystore(keystore, passphrase)
    assert signer.address == keystore.address
    assert asked == []
    tx = {
        "to": signer.address,
        "value": 0,
        "gas": 21000,
        "nonce": 0,
        "chainId": 1,
        "maxFeePerGas": 2,
        "maxPriorityFeePerGas": 1,
        "type": 2,
    }
    raw_one = signer.sign_transaction(tx)
    raw_two = signer.sign_transaction(tx)
    assert raw_one == raw_two
    assert asked == [1]
    assert "pw" not in repr(signer)


def test_signer_from_bad_key() -> None:
    with pytest.raises(InputError):
        Signer.from_key(b"\x00" * 32)
