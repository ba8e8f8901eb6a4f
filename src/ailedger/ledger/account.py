"""The workspace's Ethereum account, kept in an encrypted V3 keystore (eth-account).

The keystore's address is readable without the passphrase, so read-only commands never ask for
it; the private key is decrypted only when a transaction is first signed, and never printed.

Besides transactions, an account signs 32-byte digests of data it vouches for (a sealed file's
trailer): as an EIP-191 personal message (version 0x45, ``keccak256("\\x19Ethereum Signed
Message:\\n32" || digest)``), so the signature can never be taken for a transaction's, and any
Ethereum tool can recover the signer (:func:`recover_digest_signer`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature
from eth_utils.address import to_checksum_address

from ailedger._fs import write_atomic
from ailedger.errors import InputError, KeyError_, SignatureError, WrongPassphrase

__all__ = ["DIGEST_SIGNATURE_SIZE", "Keystore", "Signer", "recover_digest_signer"]

#: bytes of a digest signature: r (32) || s (32) || v (1, 27 or 28)
DIGEST_SIGNATURE_SIZE = 65
_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0  # secp256k1 n // 2

_SCRYPT_N = 262144  # eth-account's default: about 0.8 s and 256 MiB per unlock
_UNSAFE_PBKDF2_ITERATIONS = 1024


class Keystore:
    """An encrypted Ethereum key file (Web3 Secret Storage, version 3)."""

    def __init__(self, *, path: Path, document: dict[str, Any]) -> None:
        self.path = path
        self._document = document

    @classmethod
    def create(
        cls,
        path: Path,
        passphrase: str,
        *,
        private_key: bytes | None = None,
        unsafe_fast_kdf: bool = False,
    ) -> Keystore:
        """Write a keystore for a new (or the given) key to ``path``, mode 0600.

        ``unsafe_fast_kdf`` swaps scrypt for a cheap PBKDF2, for tests only: it makes a stolen
        keystore easy to brute-force.
        """
        if not passphrase:
            raise InputError("an empty passphrase would leave the key unprotected")
        key = private_key if private_key is not None else Account.create().key
        if unsafe_fast_kdf:
            document = Account.encrypt(
                key, passphrase, kdf="pbkdf2", iterations=_UNSAFE_PBKDF2_ITERATIONS
            )
        else:
            document = Account.encrypt(key, passphrase, kdf="scrypt", iterations=_SCRYPT_N)
        write_atomic(path, json.dumps(document).encode(), mode=0o600)
        return cls(path=path, document=dict(document))

    @classmethod
    def load(cls, path: Path) -> Keystore:
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise KeyError_(f"no keystore at {path}") from exc
        except (OSError, ValueError) as exc:
            raise KeyError_(f"keystore {path} is unreadable: {exc}") from exc
        if not isinstance(document, dict) or "crypto" not in document or "address" not in document:
            raise KeyError_(f"{path} is not a V3 keystore")
        return cls(path=path, document=document)

    @property
    def address(self) -> str:
        return str(to_checksum_address("0x" + str(self._document["address"]).removeprefix("0x")))

    def unlock(self, passphrase: str) -> LocalAccount:
        """Decrypt the key; raises :class:`WrongPassphrase` and leaves the file untouched."""
        try:
            key = Account.decrypt(self._document, passphrase)
        except ValueError as exc:
            if "MAC mismatch" in str(exc):
                raise WrongPassphrase(f"wrong passphrase for keystore {self.path}") from exc
            raise KeyError_(f"keystore {self.path} cannot be decrypted: {exc}") from exc
        account: LocalAccount = Account.from_key(key)
        return account


class Signer:
    """An account that signs transactions, unlocking its key on first use.

    ``unlock`` is called at most once, the first time a transaction is signed; read-only use of
    a ledger never calls it.
    """

    def __init__(self, *, address: str, unlock: Callable[[], LocalAccount]) -> None:
        self.address = str(to_checksum_address(address))
        self._unlock = unlock
        self._account: LocalAccount | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_key(cls, private_key: bytes | str) -> Signer:
        """A signer for a raw private key already in memory (tests, scripts)."""
        try:
            account: LocalAccount = Account.from_key(private_key)
        except (ValueError, TypeError) as exc:
            raise InputError("not a valid secp256k1 private key") from exc
        return cls(address=account.address, unlock=lambda: account)

    @classmethod
    def from_keystore(cls, keystore: Keystore, passphrase: Callable[[], str]) -> Signer:
        return cls(address=keystore.address, unlock=lambda: keystore.unlock(passphrase()))

    def unlock(self) -> None:
        """Decrypt the key now (so a wrong passphrase fails before a long job, not after)."""
        self._unlocked()

    def sign_transaction(self, transaction: dict[str, Any]) -> bytes:
        signed = self._unlocked().sign_transaction(transaction)
        return bytes(signed.raw_transaction)

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign the 32-byte ``digest`` as an EIP-191 personal message; 65 bytes ``r||s||v``.

        The signature is low-s (EIP-2) with ``v`` 27 or 28, the only form
        :func:`recover_digest_signer` accepts.
        """
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise InputError("a signed digest is 32 bytes")
        signed = self._unlocked().sign_message(encode_defunct(primitive=digest))
        return bytes(signed.signature)

    def _unlocked(self) -> LocalAccount:
        with self._lock:
            if self._account is None:
                account = self._unlock()
                if account.address != self.address:
                    raise KeyError_("the unlocked key does not match the account's address")
                self._account = account
            return self._account

    def __repr__(self) -> str:
        return f"Signer(address={self.address!r})"


def recover_digest_signer(digest: bytes, signature: bytes) -> str:
    """The checksummed address whose key made ``signature`` over ``digest`` (see
    :meth:`Signer.sign_digest`).

    Raises :class:`SignatureError` for a signature that is malformed, not in the canonical
    form (``v`` 27 or 28, low ``s``) or recovers no key. A well-formed signature of another
    digest recovers some other address: compare the result with the signer you expect.
    """
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise InputError("a signed digest is 32 bytes")
    if not isinstance(signature, bytes) or len(signature) != DIGEST_SIGNATURE_SIZE:
        raise SignatureError(f"a digest signature is {DIGEST_SIGNATURE_SIZE} bytes")
    r, s, v = int.from_bytes(signature[:32]), int.from_bytes(signature[32:64]), signature[64]
    if v not in (27, 28) or r == 0 or not 0 < s <= _HALF_N:
        raise SignatureError("the signature is not in canonical form (v 27/28, low s)")
    try:
        address = Account.recover_message(encode_defunct(primitive=digest), signature=signature)
    except (BadSignature, ValueError) as exc:
        raise SignatureError(f"the signature recovers no key: {exc}") from exc
    return str(to_checksum_address(address))
