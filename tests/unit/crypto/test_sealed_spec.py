"""docs/sealed-format.md is complete: a reader and a writer written from it alone interoperate
with ailedger.

The reader and the writer below use only the spec and the ``cryptography`` package's primitives
(X25519, HMAC-SHA256, HKDF-Expand, AES-GCM, ECDSA on secp256k1), plus Keccak-256 from
pycryptodome and the textbook secp256k1 point arithmetic (SEC 1 v2 §4.1.6, public key
recovery). HPKE is RFC 9180's base mode, written out here (§4 LabeledExtract/LabeledExpand,
§4.1 DHKEM, §5.1 key schedule), not taken from ``cryptography.hazmat.primitives.hpke``, which
ailedger uses. Nothing here imports ailedger's envelope code to read or write; ailedger only
seals the files the reader opens and opens the files the writer seals.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import runpy
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from Crypto.Hash import keccak
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SPEC = Path(__file__).resolve().parents[3] / "docs" / "sealed-format.md"


class SpecError(Exception):
    """The independent reader refuses the file."""


# -- RFC 9180 HPKE, base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM ---------

KEM_SUITE = b"KEM" + (0x0020).to_bytes(2, "big")
HPKE_SUITE = b"HPKE" + (0x0020).to_bytes(2, "big") + (1).to_bytes(2, "big") + (2).to_bytes(2, "big")


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def _labeled_extract(suite: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + suite + label + ikm)


def _labeled_expand(suite: bytes, prk: bytes, label: bytes, info: bytes, size: int) -> bytes:
    labeled = size.to_bytes(2, "big") + b"HPKE-v1" + suite + label + info
    return HKDFExpand(hashes.SHA256(), size, labeled).derive(prk)


def _raw(pk: X25519PublicKey) -> bytes:
    return pk.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _key_schedule(shared_secret: bytes, info: bytes) -> tuple[bytes, bytes]:
    psk_id_hash = _labeled_extract(HPKE_SUITE, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(HPKE_SUITE, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash  # mode_base
    secret = _labeled_extract(HPKE_SUITE, shared_secret, b"secret", b"")
    key = _labeled_expand(HPKE_SUITE, secret, b"key", context, 32)
    base_nonce = _labeled_expand(HPKE_SUITE, secret, b"base_nonce", context, 12)
    return key, base_nonce


def _shared_secret(dh: bytes, enc: bytes, pk_r: bytes) -> bytes:
    eae_prk = _labeled_extract(KEM_SUITE, b"", b"eae_prk", dh)
    return _labeled_expand(KEM_SUITE, eae_prk, b"shared_secret", enc + pk_r, 32)


def hpke_open(enc: bytes, ct: bytes, sk_r: X25519PrivateKey, info: bytes) -> bytes:
    dh = sk_r.exchange(X25519PublicKey.from_public_bytes(enc))
    key, nonce = _key_schedule(_shared_secret(dh, enc, _raw(sk_r.public_key())), info)
    return AESGCM(key).decrypt(nonce, ct, b"")  # sequence number 0: the base nonce itself


def hpke_seal(pk_r: bytes, info: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    sk_e = X25519PrivateKey.generate()
    enc = _raw(sk_e.public_key())
    dh = sk_e.exchange(X25519PublicKey.from_public_bytes(pk_r))
    key, nonce = _key_schedule(_shared_secret(dh, enc, pk_r), info)
    return enc, AESGCM(key).encrypt(nonce, plaintext, b"")


# -- secp256k1 and EIP-191 -------------------------------------------------------------------

P = 2**256 - 2**32 - 977
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
G = (
    0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
    0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8,
)
Point = tuple[int, int] | None


def _add(a: Point, b: Point) -> Point:
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0] and (a[1] + b[1]) % P == 0:
        return None
    if a == b:
        slope = 3 * a[0] * a[0] * pow(2 * a[1], -1, P) % P
    else:
        slope = (b[1] - a[1]) * pow(b[0] - a[0], -1, P) % P
    x = (slope * slope - a[0] - b[0]) % P
    return x, (slope * (a[0] - x) - a[1]) % P


def _mul(k: int, point: Point) -> Point:
    out: Point = None
    while k:
        if k & 1:
            out = _add(out, point)
        point = _add(point, point)
        k >>= 1
    return out


def keccak256(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


def eip191_hash(digest: bytes) -> bytes:
    return keccak256(b"\x19Ethereum Signed Message:\n32" + digest)


def _address(point: tuple[int, int]) -> bytes:
    return keccak256(point[0].to_bytes(32, "big") + point[1].to_bytes(32, "big"))[12:]


def _verify(point: tuple[int, int], r: int, s: int, msg_hash: bytes) -> bool:
    sec1 = b"\x04" + point[0].to_bytes(32, "big") + point[1].to_bytes(32, "big")
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), sec1)
    try:
        key.verify(encode_dss_signature(r, s), msg_hash, ec.ECDSA(Prehashed(hashes.SHA256())))
    except InvalidSignature:
        return False
    return True


def recover(msg_hash: bytes, signature: bytes) -> bytes:
    """The 20-byte address that made ``signature`` (r ‖ s ‖ v) over ``msg_hash``."""
    if len(signature) != 65:
        raise SpecError("the signature is not 65 bytes")
    r, s, v = (
        int.from_bytes(signature[:32], "big"),
        int.from_bytes(signature[32:64], "big"),
        signature[64],
    )
    if v not in (27, 28) or not 0 < r < N or not 0 < s <= N // 2:
        raise SpecError("the signature is not canonical")
    y2 = (pow(r, 3, P) + 7) % P
    y = pow(y2, (P + 1) // 4, P)
    if y * y % P != y2:
        raise SpecError("r is not on the curve")
    if y % 2 != v - 27:
        y = P - y
    e = int.from_bytes(msg_hash, "big") % N
    q = _mul(pow(r, -1, N), _add(_mul(s, (r, y)), _mul(N - e, G)))
    if q is None or not _verify(q, r, s, msg_hash):
        raise SpecError("the signature recovers no key")
    return _address(q)


def sign(key: ec.EllipticCurvePrivateKey, msg_hash: bytes) -> bytes:
    """r ‖ s ‖ v, low s, v = 27 + recovery id."""
    r, s = decode_dss_signature(key.sign(msg_hash, ec.ECDSA(Prehashed(hashes.SHA256()))))
    s = min(s, N - s)
    numbers = key.public_key().public_numbers()
    mine = _address((numbers.x, numbers.y))
    for v in (27, 28):
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])
        if recover(msg_hash, sig) == mine:
            return sig
    raise AssertionError("no recovery id recovers the key")


def eth_address(key: ec.EllipticCurvePrivateKey) -> bytes:
    numbers = key.public_key().public_numbers()
    return _address((numbers.x, numbers.y))


# -- the format, from docs/sealed-format.md --------------------------------------------------

INFO = b"ailedger seal v1"
FIXED = struct.Struct(">7sBBI7s20sH")


@dataclass
class Opened:
    sender: bytes
    context: bytes
    chunk_size: int
    key_ids: list[bytes]
    plaintext: bytes
    header_hash: bytes
    data_key: bytes
    signed_digest: bytes


def spec_open(data: bytes, sk: X25519PrivateKey) -> Opened:
    """Steps 1-6 of "What a reader checks, in order"."""
    # 1. parse the header
    if data[:7] != b"AILSEAL":
        raise SpecError("bad magic")
    if len(data) < FIXED.size or data[7] != 2:
        raise SpecError("not version 2, or truncated")
    _, _, suite, chunk_size, prefix, sender, ctx_len = FIXED.unpack_from(data)
    if suite != 1 or not 1024 <= chunk_size <= 16 * 2**20 or ctx_len > 4096:
        raise SpecError("corrupt header")
    context = data[42 : 42 + ctx_len]
    (count,) = struct.unpack_from(">H", data, 42 + ctx_len)
    header_len = 44 + ctx_len + 112 * count
    if count == 0 or len(data) < header_len:
        raise SpecError("corrupt or truncated header")
    header = data[:header_len]
    entries = [header[o : o + 112] for o in range(44 + ctx_len, header_len, 112)]
    key_ids = [e[:32] for e in entries]
    # 2. (the caller's checks of sender and context happen in the tests)
    # 3. unwrap the data key
    my_id = hashlib.sha256(_raw(sk.public_key())).digest()
    if my_id not in key_ids:
        raise SpecError("not sealed for this key")
    entry = entries[key_ids.index(my_id)]
    try:
        data_key = hpke_open(entry[32:64], entry[64:112], sk, INFO + my_id)
    except InvalidTag as exc:
        raise SpecError("the wrapped key does not authenticate") from exc
    if len(data_key) != 32:
        raise SpecError("the data key is not 32 bytes")
    # 4. decrypt and authenticate each chunk
    if len(data) < header_len + 65:
        raise SpecError("no signature")
    body = data[header_len:-65]
    if not body:
        raise SpecError("truncated: no chunk")
    header_hash = hashlib.sha256(header).digest()
    aead = AESGCM(data_key)
    step = chunk_size + 16
    pieces = [body[o : o + step] for o in range(0, len(body), step)]
    if len(pieces) > 2**32 or len(pieces[-1]) < 16:
        raise SpecError("truncated chunk")
    plain = []
    for i, piece in enumerate(pieces):
        last = b"\x01" if i == len(pieces) - 1 else b"\x00"
        try:
            plain.append(
                aead.decrypt(prefix + i.to_bytes(4, "big") + last, piece, header_hash + last)
            )
        except InvalidTag as exc:
            raise SpecError(f"chunk {i} does not authenticate") from exc
    # 5. the signature
    digest = hashlib.sha256(data[:-65]).digest()
    if recover(eip191_hash(digest), data[-65:]) != sender:
        raise SpecError("not signed by the sender")
    # 6. release
    return Opened(
        sender=sender,
        context=context,
        chunk_size=chunk_size,
        key_ids=key_ids,
        plaintext=b"".join(plain),
        header_hash=header_hash,
        data_key=data_key,
        signed_digest=digest,
    )


def spec_seal(
    plaintext: bytes,
    recipients: list[bytes],
    signer: ec.EllipticCurvePrivateKey,
    *,
    context: bytes = b"",
    chunk_size: int = 1024,
) -> bytes:
    """A version 2 sealed file, written from the spec."""
    data_key, prefix = os.urandom(32), os.urandom(7)
    header = FIXED.pack(b"AILSEAL", 2, 1, chunk_size, prefix, eth_address(signer), len(context))
    header += context + struct.pack(">H", len(recipients))
    for pk in recipients:
        kid = hashlib.sha256(pk).digest()
        enc, ct = hpke_seal(pk, INFO + kid, data_key)
        header += kid + enc + ct
    aad = hashlib.sha256(header).digest()
    chunks = [plaintext[o : o + chunk_size] for o in range(0, len(plaintext), chunk_size)] or [b""]
    out = bytearray(header)
    for i, chunk in enumerate(chunks):
        last = b"\x01" if i == len(chunks) - 1 else b"\x00"
        out += AESGCM(data_key).encrypt(prefix + i.to_bytes(4, "big") + last, chunk, aad + last)
    return bytes(out + sign(signer, eip191_hash(hashlib.sha256(out).digest())))


# -- the worked example in the spec ----------------------------------------------------------


def _example(part: str | None = None) -> dict[str, str]:
    """The worked example's values: from the spec, or from the example script's output."""
    if part is None:
        text = SPEC.read_text()
        part = text.split("<!-- example:begin -->")[1].split("<!-- example:end -->")[0]
    values = {
        "sender": re.search(r"sender account: `(0x[0-9a-fA-F]{40})`", part),
        "private": re.search(r"recipient X25519 private key: `([0-9a-f]{64})`", part),
        "public": re.search(r"recipient X25519 public key: `([0-9a-f]{64})`", part),
        "plaintext": re.search(r"plaintext \(\d+ bytes\): `b'(.*)'`", part),
        "hex": re.search(r"```hex\n([0-9a-f\n]+)```", part),
        "derived": re.search(r"Derived values.*?```text\n(.*?)```", part, re.S),
    }
    assert all(values.values()), "the worked example's layout changed"
    return {k: m.group(1) for k, m in values.items() if m is not None}


@pytest.mark.parametrize("source", ["spec", "script"])
def test_worked_example_opens_with_the_spec_reader(
    source: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if source == "script":  # a fresh example from docs/examples/sealed_example.py
        runpy.run_path(str(SPEC.parent / "examples" / "sealed_example.py"), run_name="__main__")
        ex = _example(capsys.readouterr().out)
    else:
        ex = _example()
    sk = X25519PrivateKey.from_private_bytes(bytes.fromhex(ex["private"]))
    assert _raw(sk.public_key()).hex() == ex["public"]
    data = bytes.fromhex(ex["hex"].replace("\n", ""))
    opened = spec_open(data, sk)
    assert opened.plaintext == ex["plaintext"].encode().decode("unicode_escape").encode()
    assert "0x" + opened.sender.hex() == ex["sender"].lower()
    # the context is a share binding naming the sender as the owner of the plaintext's digest
    label, chain_id, _registry, owner, digest, block, counter = struct.unpack(
        ">16sQ20s20s32sQQ", opened.context
    )
    assert (label, chain_id, owner, block, counter) == (
        b"ailedger share 1",
        31337,
        opened.sender,
        7,
        0,
    )
    assert digest == hashlib.sha256(opened.plaintext).digest()
    derived = dict(
        re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in ex["derived"].splitlines()
    )
    assert derived["SHA-256(header)"] == opened.header_hash.hex()
    assert derived["data key"] == opened.data_key.hex()
    assert derived["SHA-256(all but sig)"] == opened.signed_digest.hex()
    assert derived["EIP-191 hash"] == eip191_hash(opened.signed_digest).hex()
    assert derived["nonce of chunk 0"] == (data[13:20] + bytes(4) + b"\x01").hex()


def test_worked_example_opens_with_ailedger(tmp_path: Path) -> None:
    from ailedger.crypto import envelope
    from ailedger.ledger.account import recover_digest_signer

    ex = _example()
    src = tmp_path / "example.sealed"
    src.write_bytes(bytes.fromhex(ex["hex"].replace("\n", "")))
    header = envelope.open(
        src, tmp_path / "out", bytes.fromhex(ex["private"]), recover=recover_digest_signer
    )
    assert header.sender_address == ex["sender"].lower()
    assert (tmp_path / "out").read_bytes() == spec_open(
        src.read_bytes(), X25519PrivateKey.from_private_bytes(bytes.fromhex(ex["private"]))
    ).plaintext


# -- files sealed by ailedger, opened from the spec ------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 3 * 1024 + 5])
def test_spec_reader_opens_what_ailedger_seals(tmp_path: Path, size: int) -> None:
    from ailedger.crypto import envelope
    from ailedger.ledger.account import Signer

    signer = Signer.from_key(os.urandom(32))
    keys = [X25519PrivateKey.generate() for _ in range(3)]
    plaintext, context = os.urandom(size), os.urandom(size % 97)
    src, dst = tmp_path / "plain", tmp_path / "sealed"
    src.write_bytes(plaintext)
    envelope.seal(
        src, dst, [k.public_key() for k in keys], signer=signer, context=context, chunk_size=1024
    )
    data = dst.read_bytes()
    assert len(data) == 44 + len(context) + 3 * 112 + size + 16 * max(1, -(-size // 1024)) + 65
    for key in keys:
        opened = spec_open(data, key)
        assert opened.plaintext == plaintext
        assert opened.context == context
        assert "0x" + opened.sender.hex() == signer.address.lower()
    assert [k.hex() for k in opened.key_ids] == [envelope.key_id(k.public_key()) for k in keys]
    with pytest.raises(SpecError, match="not sealed for this key"):
        spec_open(data, X25519PrivateKey.generate())


def test_spec_reader_refuses_what_the_spec_says_to_refuse(tmp_path: Path) -> None:
    from ailedger.crypto import envelope
    from ailedger.ledger.account import Signer

    key = X25519PrivateKey.generate()
    src, dst = tmp_path / "plain", tmp_path / "sealed"
    src.write_bytes(os.urandom(2500))
    envelope.seal(src, dst, [key.public_key()], signer=Signer.from_key(os.urandom(32)))
    data = dst.read_bytes()
    header_len = 44 + 112
    for where in (20, 60, 200, header_len + 5, len(data) - 70):  # sender, entry, chunk
        bad = bytearray(data)
        bad[where] ^= 1
        with pytest.raises(SpecError):
            spec_open(bytes(bad), key)
    with pytest.raises(SpecError):
        spec_open(data[:-1], key)  # the signature cut short
    resigned = data[:-65] + sign(
        ec.generate_private_key(ec.SECP256K1()), eip191_hash(hashlib.sha256(data[:-65]).digest())
    )
    with pytest.raises(SpecError, match="not signed by the sender"):
        spec_open(resigned, key)


# -- files sealed from the spec, opened by ailedger ------------------------------------------


@pytest.mark.parametrize("size", [0, 1024, 2049])
def test_ailedger_opens_what_the_spec_writer_seals(tmp_path: Path, size: int) -> None:
    from ailedger.crypto import envelope
    from ailedger.errors import SignatureError
    from ailedger.ledger.account import recover_digest_signer

    signer = ec.generate_private_key(ec.SECP256K1())
    keys = [X25519PrivateKey.generate() for _ in range(2)]
    plaintext, context = os.urandom(size), b"bound to something"
    data = spec_seal(plaintext, [_raw(k.public_key()) for k in keys], signer, context=context)
    src = tmp_path / "spec.sealed"
    src.write_bytes(data)
    for key in keys:
        header = envelope.open(src, tmp_path / "out", key, recover=recover_digest_signer)
        assert (tmp_path / "out").read_bytes() == plaintext
        assert header.context == context
        assert header.sender == eth_address(signer)
    other = ec.generate_private_key(ec.SECP256K1())
    src.write_bytes(data[:-65] + sign(other, eip191_hash(hashlib.sha256(data[:-65]).digest())))
    with pytest.raises(SignatureError):
        envelope.open(src, tmp_path / "out2", keys[0], recover=recover_digest_signer)
    assert not (tmp_path / "out2").exists()
