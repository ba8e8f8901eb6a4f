"""Ed25519 keys for signing log checkpoints and attestations.

The private key is stored as PKCS #8 PEM encrypted under the workspace passphrase (mode 0600);
the public key beside it in the clear, so verifier keys can be handed out without unlocking.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ailedger._fs import write_atomic
from ailedger.errors import InputError, KeyError_, WrongPassphrase

__all__ = [
    "generate_signing_key",
    "load_public_key",
    "load_signing_key",
    "load_verification_key",
    "public_key_path",
]


def public_key_path(private_path: Path) -> Path:
    return private_path.with_suffix(".pub")


def generate_signing_key(path: Path, passphrase: str) -> Ed25519PublicKey:
    """Create a new Ed25519 key at ``path`` (encrypted) and its public key at ``path.pub``."""
    if not passphrase:
        raise InputError("an empty passphrase would leave the key unprotected")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase.encode()),
    )
    public = key.public_key()
    write_atomic(path, pem, mode=0o600)
    write_atomic(
        public_key_path(path),
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return public


def load_signing_key(path: Path, passphrase: str) -> Ed25519PrivateKey:
    """Decrypt the Ed25519 key at ``path``; a wrong passphrase raises :class:`WrongPassphrase`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"cannot read the signing key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=passphrase.encode())
    except ValueError as exc:
        raise WrongPassphrase(f"wrong passphrase for the signing key {path}") from exc
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise KeyError_(f"{path} is not an encrypted Ed25519 key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key (PEM) from ``path``."""
    key = _load_pem_public(path)
    if not isinstance(key, Ed25519PublicKey):
        raise KeyError_(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def load_verification_key(path: Path) -> Ed25519PublicKey | ec.EllipticCurvePublicKey:
    """Read a key that checks signatures on statements: Ed25519, or ECDSA (model-signing's)."""
    key = _load_pem_public(path)
    if not isinstance(key, Ed25519PublicKey | ec.EllipticCurvePublicKey):
        raise KeyError_(f"{path} holds a {type(key).__name__}, not an Ed25519 or ECDSA key")
    return key


def _load_pem_public(path: Path) -> PublicKeyTypes:
    try:
        return serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise KeyError_(f"cannot read the public key {path}: {exc.strerror}") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyError_(f"{path} is not a PEM public key: {exc}") from exc
