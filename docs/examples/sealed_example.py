"""Print the worked example of docs/sealed-format.md: a small file sealed by ailedger.

Run ``python docs/examples/sealed_example.py`` to make a fresh one; the keys are fixed, but the
data key, the nonce prefix and the HPKE ephemeral key are random, so each run prints a
different file that opens the same way. The output is the Markdown between the ``example``
markers of docs/sealed-format.md; tests/unit/crypto/test_sealed_spec.py opens the example that
is there with a reader written from the spec alone.

The keys are published example keys: never use them for anything else.
"""

from __future__ import annotations

import hashlib
import struct
import sys
import tempfile
from pathlib import Path

from Crypto.Hash import keccak
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ailedger.crypto import envelope
from ailedger.ledger.account import Signer

#: secp256k1 key of the example's sender (an Ethereum account); published, never use it
SENDER_KEY = hashlib.sha256(b"ailedger sealed-format example sender").digest()
#: X25519 key of the example's one recipient; published, never use it
RECIPIENT_KEY = hashlib.sha256(b"ailedger sealed-format example recipient").digest()
PLAINTEXT = b"applicant,decision\nA-17,approve\n"
CHUNK_SIZE = 1024
#: the binding provenance.sharing writes as the context (see docs/sealed-format.md)
CHAIN_ID = 31337
REGISTRY = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
BLOCK, COUNTER = 7, 0


def binding(owner: bytes, digest: bytes) -> bytes:
    """The 112-byte share binding: label, chain id, registry, owner, digest, version."""
    return struct.pack(
        ">16sQ20s20s32sQQ", b"ailedger share 1", CHAIN_ID, REGISTRY, owner, digest, BLOCK, COUNTER
    )


def main() -> None:
    signer = Signer.from_key(SENDER_KEY)
    recipient = X25519PrivateKey.from_private_bytes(RECIPIENT_KEY)
    owner = bytes.fromhex(signer.address[2:])
    context = binding(owner, hashlib.sha256(PLAINTEXT).digest())
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "plain", Path(tmp) / "sealed"
        src.write_bytes(PLAINTEXT)
        envelope.seal(
            src,
            dst,
            [recipient.public_key()],
            signer=signer,
            context=context,
            chunk_size=CHUNK_SIZE,
        )
        data = dst.read_bytes()
    pub = envelope.dump_public_key(recipient.public_key(), encoding="raw")
    out = sys.stdout.write
    out(f"- sender account: `{signer.address}` (secp256k1 key `{SENDER_KEY.hex()}`)\n")
    out(f"- recipient X25519 private key: `{RECIPIENT_KEY.hex()}`\n")
    out(f"- recipient X25519 public key: `{pub.hex()}`\n")
    out(f"- plaintext ({len(PLAINTEXT)} bytes): `{PLAINTEXT!r}`\n")
    out(f"- sealed file: {len(data)} bytes\n\n")
    out("Field by field (offset, length, field, bytes in hex):\n\n```text\n")
    ctx_len = len(context)
    fields = [
        ("magic", 7),
        ("version", 1),
        ("suite", 1),
        ("chunk_size", 4),
        ("prefix", 7),
        ("sender", 20),
        ("ctx_len", 2),
        ("context", ctx_len),
        ("count", 2),
        ("key id [0]", 32),
        ("hpke enc [0]", 32),
        ("wrapped key [0]", 48),
    ]
    header_len = sum(n for _, n in fields)
    fields.append(("chunk 0 (last)", len(data) - header_len - 65))
    fields.append(("signature", 65))
    offset = 0
    for name, size in fields:
        value = data[offset : offset + size].hex()
        out(f"{offset:5d} {size:4d}  {name:<16} {value[:64]}\n")
        for i in range(64, len(value), 64):
            out(f"{'':28}{value[i : i + 64]}\n")
        offset += size
    out("```\n\nDerived values (what a reader computes on the way):\n\n```text\n")
    header = data[:header_len]
    kid = data[156:188]
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    data_key = suite.decrypt(data[188:268], recipient, info=b"ailedger seal v1" + kid)
    digest = hashlib.sha256(data[:-65]).digest()
    eip191 = keccak.new(digest_bits=256, data=b"\x19Ethereum Signed Message:\n32" + digest)
    derived = [
        ("SHA-256(header)", hashlib.sha256(header).hexdigest()),
        ("data key", data_key.hex()),
        ("nonce of chunk 0", (data[13:20] + bytes(4) + b"\x01").hex()),
        ("AAD of chunk 0", hashlib.sha256(header).hexdigest() + "01"),
        ("SHA-256(all but sig)", digest.hex()),
        ("EIP-191 hash", eip191.hexdigest()),
    ]
    for name, value in derived:
        out(f"{name:<21} {value}\n")
    out("```\n\nThe whole file in hex:\n\n```hex\n")
    text = data.hex()
    for i in range(0, len(text), 64):
        out(text[i : i + 64] + "\n")
    out("```\n")


if __name__ == "__main__":
    main()
