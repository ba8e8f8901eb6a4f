"""Envelope encryption: seal/open round trips, tampering, access and key-type errors, and the
sender's signature that binds a sealed file to who sealed it."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ailedger.crypto import envelope
from ailedger.errors import AccessDenied, InputError, SignatureError, VerificationError
from ailedger.ledger.account import Signer, recover_digest_signer

CHUNK = 1024
SIG = 65
HEADER_FIXED = 7 + 1 + 1 + 4 + 7 + 20 + 2 + 2  # with an empty context and the count
ENTRY = 32 + 80
SIGNER = Signer.from_key(bytes(range(1, 33)))
RECOVER = recover_digest_signer


def _sealed(
    tmp_path: Path, data: bytes, *recipients: X25519PrivateKey, signer: Signer = SIGNER
) -> Path:
    src, dst = tmp_path / "plain.bin", tmp_path / "sealed.bin"
    src.write_bytes(data)
    envelope.seal(src, dst, [k.public_key() for k in recipients], signer=signer, chunk_size=CHUNK)
    return dst


def _open_bytes(tmp_path: Path, sealed: Path, key: X25519PrivateKey) -> bytes:
    out = tmp_path / "opened.bin"
    envelope.open(sealed, out, key, recover=RECOVER)
    return out.read_bytes()


def _chunks_offset(n_recipients: int) -> int:
    return HEADER_FIXED + n_recipients * ENTRY


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 7, 4 * CHUNK])
def test_round_trip(tmp_path: Path, size: int) -> None:
    key = X25519PrivateKey.generate()
    data = os.urandom(size)
    sealed = _sealed(tmp_path, data, key)
    n_chunks = max(1, -(-size // CHUNK))
    assert sealed.stat().st_size == _chunks_offset(1) + size + 16 * n_chunks + SIG
    assert _open_bytes(tmp_path, sealed, key) == data


def test_round_trip_default_chunk_size(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    data = os.urandom(envelope.DEFAULT_CHUNK_SIZE * 2 + 3)
    src, dst = tmp_path / "p", tmp_path / "s"
    src.write_bytes(data)
    envelope.seal(src, dst, [key.public_key()], signer=SIGNER)
    assert _open_bytes(tmp_path, dst, key) == data


def test_every_recipient_can_open(tmp_path: Path) -> None:
    keys = [X25519PrivateKey.generate() for _ in range(3)]
    data = os.urandom(3000)
    sealed = _sealed(tmp_path, data, *keys)
    assert envelope.recipients(sealed) == [envelope.key_id(k.public_key()) for k in keys]
    for k in keys:
        assert _open_bytes(tmp_path, sealed, k) == data


def test_wrong_recipient_is_access_denied(tmp_path: Path) -> None:
    sealed = _sealed(tmp_path, b"secret", X25519PrivateKey.generate())
    with pytest.raises(AccessDenied, match="not sealed for the key"):
        _open_bytes(tmp_path, sealed, X25519PrivateKey.generate())
    assert not (tmp_path / "opened.bin").exists()


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_bit_flip_in_a_chunk_fails(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    sealed = _sealed(tmp_path, os.urandom(3 * CHUNK), key)
    _flip(sealed, _chunks_offset(1) + CHUNK + 16 + 5)
    with pytest.raises(VerificationError, match="chunk 1"):
        _open_bytes(tmp_path, sealed, key)
    assert not (tmp_path / "opened.bin").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


@pytest.mark.parametrize(
    ("name", "offset"),
    [
        ("suite", 8),
        ("chunk_size", 12),
        ("nonce prefix", 13),
        ("sender", 20 + 5),
        ("other recipient's wrapped key", HEADER_FIXED + ENTRY + 40),
        ("own wrapped key", HEADER_FIXED + 40),
    ],
)
def test_header_tampering_fails(tmp_path: Path, name: str, offset: int) -> None:
    me, other = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    sealed = _sealed(tmp_path, os.urandom(2 * CHUNK + 1), me, other)
    _flip(sealed, offset)
    with pytest.raises(VerificationError):
        _open_bytes(tmp_path, sealed, me)


def test_chunk_size_out_of_range_is_rejected_before_reading(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    sealed = _sealed(tmp_path, b"x" * 10, key)
    data = bytearray(sealed.read_bytes())
    data[9:13] = struct.pack(">I", 2**31)
    sealed.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="corrupt"):
        _open_bytes(tmp_path, sealed, key)


def test_bad_magic_is_input_error(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    sealed = _sealed(tmp_path, b"x", key)
    _flip(sealed, 0)
    with pytest.raises(InputError, match="magic"):
        _open_bytes(tmp_path, sealed, key)


@pytest.mark.parametrize("keep", ["header", "one chunk", "mid chunk", "all but one byte"])
def test_truncation_fails(tmp_path: Path, keep: str) -> None:
    key = X25519PrivateKey.generate()
    sealed = _sealed(tmp_path, os.urandom(3 * CHUNK), key)
    data = sealed.read_bytes()
    cut = {
        "header": _chunks_offset(1) - 3,
        "one chunk": _chunks_offset(1) + CHUNK + 16,
        "mid chunk": _chunks_offset(1) + CHUNK + 100,
        "all but one byte": len(data) - 1,
    }[keep]
    sealed.write_bytes(data[:cut])
    with pytest.raises(VerificationError):
        _open_bytes(tmp_path, sealed, key)


def test_dropping_the_whole_last_chunk_fails(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    sealed = _sealed(tmp_path, os.urandom(3 * CHUNK), key)
    data = sealed.read_bytes()
    sealed.write_bytes(data[: _chunks_offset(1) + 2 * (CHUNK + 16)] + data[-SIG:])
    with pytest.raises(VerificationError, match="last chunk"):
        _open_bytes(tmp_path, sealed, key)


def test_reordered_chunks_fail(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    sealed = _sealed(tmp_path, os.urandom(3 * CHUNK), key)
    data = sealed.read_bytes()
    h, c = _chunks_offset(1), CHUNK + 16
    swapped = data[:h] + data[h + c : h + 2 * c] + data[h : h + c] + data[h + 2 * c :]
    sealed.write_bytes(swapped)
    with pytest.raises(VerificationError, match="chunk 0"):
        _open_bytes(tmp_path, sealed, key)


def test_appended_data_fails(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    sealed = _sealed(tmp_path, os.urandom(CHUNK), key)
    sealed.write_bytes(sealed.read_bytes() + os.urandom(CHUNK + 16))
    with pytest.raises(VerificationError):
        _open_bytes(tmp_path, sealed, key)


def test_existing_destination_survives_a_failed_open(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    sealed = _sealed(tmp_path, os.urandom(2 * CHUNK), key)
    _flip(sealed, len(sealed.read_bytes()) - 1)
    out = tmp_path / "opened.bin"
    out.write_bytes(b"previous content")
    with pytest.raises(VerificationError):
        envelope.open(sealed, out, key, recover=RECOVER)
    assert out.read_bytes() == b"previous content"


@pytest.mark.parametrize(
    "bad",
    [
        Ed25519PrivateKey.generate().public_key(),
        rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(),
        b"\x01" * 31,
        "not a key",
    ],
    ids=["ed25519", "rsa", "31-bytes", "str"],
)
def test_wrong_recipient_key_type_is_input_error(tmp_path: Path, bad: object) -> None:
    src = tmp_path / "p"
    src.write_bytes(b"x")
    with pytest.raises(InputError):
        envelope.seal(src, tmp_path / "s", [bad], signer=SIGNER)  # type: ignore[list-item]
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "bad", [Ed25519PrivateKey.generate(), b"\x01" * 33], ids=["ed25519", "33-bytes"]
)
def test_wrong_private_key_type_is_input_error(tmp_path: Path, bad: object) -> None:
    sealed = _sealed(tmp_path, b"x", X25519PrivateKey.generate())
    with pytest.raises(InputError):
        envelope.open(sealed, tmp_path / "o", bad, recover=RECOVER)  # type: ignore[arg-type]


def test_empty_or_duplicate_recipients_are_input_errors(tmp_path: Path) -> None:
    src = tmp_path / "p"
    src.write_bytes(b"x")
    pk = X25519PrivateKey.generate().public_key()
    with pytest.raises(InputError):
        envelope.seal(src, tmp_path / "s", [], signer=SIGNER)
    with pytest.raises(InputError):
        envelope.seal(src, tmp_path / "s", [pk, pk], signer=SIGNER)


def test_raw_key_bytes_work_as_keys(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    src, dst = tmp_path / "p", tmp_path / "s"
    src.write_bytes(b"hello")
    envelope.seal(
        src, dst, [envelope.dump_public_key(key.public_key(), encoding="raw")], signer=SIGNER
    )
    out = tmp_path / "o"
    envelope.open(dst, out, envelope.dump_private_key(key, encoding="raw"), recover=RECOVER)
    assert out.read_bytes() == b"hello"


def test_key_helpers_round_trip() -> None:
    key = X25519PrivateKey.generate()
    raw = envelope.dump_private_key(key, encoding="raw")
    assert envelope.dump_private_key(envelope.load_private_key(raw), encoding="raw") == raw
    pem = envelope.dump_private_key(key, password=b"pw")
    assert b"ENCRYPTED" in pem
    assert envelope.dump_private_key(envelope.load_private_key(pem, b"pw"), encoding="raw") == raw
    pub_pem = envelope.dump_public_key(key.public_key())
    pub_raw = envelope.dump_public_key(key.public_key(), encoding="raw")
    assert envelope.dump_public_key(envelope.load_public_key(pub_pem), encoding="raw") == pub_raw
    assert envelope.key_id(pub_raw) == envelope.key_id(key.public_key())


def test_key_helpers_reject_other_key_types() -> None:
    from cryptography.hazmat.primitives import serialization

    ed = Ed25519PrivateKey.generate()
    ed_pem = ed.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(InputError, match="not an X25519"):
        envelope.load_public_key(ed_pem)
    with pytest.raises(InputError):
        envelope.load_public_key(b"\x00" * 5)
    with pytest.raises(InputError):
        envelope.load_private_key(
            envelope.dump_private_key(X25519PrivateKey.generate(), password=b"a"), b"b"
        )


# Sealed in format version 1 (no sender, no signature): private key bytes 0..31, chunk size
# 1024, plaintext SHA-256(b"ailedger kat") repeated 40 times. It authenticates under its data
# key, but nothing says who sealed it: version 2 refuses it, with a message saying why.
_SEALED_BY_V1 = base64.b64decode(
    "QUlMU0VBTAEBAAAEAC/h0xJ7ypkAAe7diD2gqUUVk9wKOOWD+3cPon277SCcIEBOB15oxPDJ6aeJFLtUICQHNZFj"
    "CYmDvTvmCq85b5JXg4WwfQsssEh9NBXAzCBODLFCxBj6uj+nKoS+bEXWMUTstLmLFvdW1O9cuCdgMeBHPrTkYUW/"
    "BIP8/v9UJ5DYYpa4nEGl0x6gscMG81dbweP/BnUqfbgjnQSTZqOXTlsusf/hZegyAvIQEEfSRVHxf+fgyQm4EV02"
    "wCEoK8XKy/xZGlktGO9ReqE0ICceeOXZgmAfASahbXHN0eMt96ecYD6e9iFQLSjABcfLNzn1ZBl+6DogWH5vRxNH"
    "NsX1KkWMcMqtPBFVLMazwJQUsrawRcoht31KQMw/89LWxyjHWi2Lh1WatIkEFGoOoxEDWD4wkKrCw0UQRvoKoC8m"
    "YcZSEJ4GGmtM/J/Qd7h4bN+/BXuyvXr0jo8ygo+404SSEALFyU+mMU2pXEAilbQqd/sp+oUvWXJZqXNMd1Zspaax"
    "nfUbR6AJw9aXEZvTDBIt54m6hYKXhEZu1UT3JVx3ynULPU/WM6pwNBdUTz5FnIa2HgWC12x+IKYIzj+6DVSSN3ox"
    "0vdJwAo72B4Yc6fbjxHI6TwpHCeIgPaQQ0UjGrsrATcoe0QrCp4K+gjIb2ZRRBjhabPgKo2m35187xGH4dzrYdhh"
    "Ljv2GQ54MwwSnIlBNjJXCSo8qmTUl7cVsvXk3GEfSAnoMlKs9/LpzzE6VSHO0Vvoy2ZDF3+bLQNRUumJO+KIBm9x"
    "+oDzYpJwI15jzHuo+CFGX4I3XgkAArodWXioGzTkebHddSXb5Zsl//BFG9jCuTd2SKQiOW/mnZ0GCJR3/3utunrj"
    "+Av/V7rZ1Adyq+LFTxyDYfogQJKSIsoPiBNIqdYy+yLPr4hUW5NF627VDsP4AcASReKhibomjIcgvgl/sNjO6Onc"
    "Oa91oi0JL5zLCjMXY9qVuoSAcSJu4qGUDDuDVp1m4Vs7GDXI6svn4GNf+Wh1c/FuE0Dm/hm8ZkDQJF9/fiBSM/sr"
    "37QCtOGpbZC451HNwDBPXfZ8RJbY0R3EqHaBkETm5I2IgUpe7vuRBNqkkxAgvmHEyP8dsRpdzmPIQLKRgEL3ImH0"
    "vAzeuGatVio6UIWLvKhuV2Y69cuXnOZP4oowwPe8YFx3ExssLIhAhsmd0631rZZsAERIaHIqBjqUt/VxVfWVxK+Y"
    "DIhLAypZFwn6rvJEQStnpSvxcGxcPvKtSiiZj+HCqf40yQ5Ls88K1DWwNrPj9JTS9AALcf8s11+/iULTtqRr1DC3"
    "bxDCZxpDodEudnvHj57hss8KlrrvWE++TiFzdJG9sQpH5nKoBWVlkBtViFqByaIaGgFn6IYqox6AHJ8tnGMkztXm"
    "diFoDmSy07UrWO7b4J/zPG1JpKnS3NPhSvVimpMmG/ponrA4raJlvw2/i7ikBJhX6zay4b+7Wg+mMeE7zcQn7pgn"
    "bbn6bf3WuOfWN6IviQ2Rc1qi/KHjA7q75Fags8sDOFN8d8HaiF7OK1a6gQKHY5XmVOMoORww6ZcetqtLXtpYaRbo"
    "hDrtJoDI6B5C6iZNi/2fgA5AQCA1xbGtEkeiEL54w+nr1IIvtFX0mxDtui7IjmRm4/p3bvfOYFqJCC663wEkUF1w"
    "NS5heNZvSGJtn/AKqD5MPGJroCM7Pohqq2Nf0GIALnlW/CkfWWasUlQh0kejSZCzK9F+aZrydDBBThiHwD7iTIHu"
    "25arLkxA3WTcTbgLEdcFUgHj8n4HO0Ra20AITZ3ZzZPoPP3H+coGaLBPwO6rUxSp6Xmj+by+fygzmqcmDLVFq6F4"
    "dsd0/fXFd5n7yjoSPYYaPNFwlT0rkXKKocnvDbzb6vBe1KKpI2JISiEZqYdZjwd1NbyGrn6Y9BPe9Rbi"
)


def test_a_version_1_file_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    sealed = tmp_path / "kat.sealed"
    sealed.write_bytes(_SEALED_BY_V1)
    key = envelope.load_private_key(bytes(range(32)))
    with pytest.raises(SignatureError, match=r"format version 1.*not signed.*seal it again"):
        _open_bytes(tmp_path, sealed, key)
    with pytest.raises(SignatureError, match="format version 1"):
        envelope.OpenReader(_SEALED_BY_V1, key, recover=RECOVER)
    with pytest.raises(SignatureError, match="format version 1"):
        envelope.recipients(sealed)
    assert not (tmp_path / "opened.bin").exists()
    assert _SEALED_BY_V1[:8] == b"AILSEAL\x01"
    assert hashlib.sha256(b"ailedger kat").digest()  # the plaintext, for the record


# The I/O block is 8 MiB: 8192 chunks of 1 KiB. Sizes around one and two blocks exercise the
# "is this the last chunk" look-ahead across block boundaries.
_BLOCK = 8 * 1024 * 1024


@pytest.mark.parametrize("size", [_BLOCK - 1, _BLOCK, _BLOCK + 1, 2 * _BLOCK, 2 * _BLOCK + CHUNK])
def test_round_trip_across_io_blocks(tmp_path: Path, size: int) -> None:
    key = X25519PrivateKey.generate()
    data = os.urandom(size)
    sealed = _sealed(tmp_path, data, key)
    n_chunks = max(1, -(-size // CHUNK))
    assert sealed.stat().st_size == _chunks_offset(1) + size + 16 * n_chunks + SIG
    assert _open_bytes(tmp_path, sealed, key) == data


# ``extra`` counts past a block boundary including the 65 bytes then taken as the signature.
@pytest.mark.parametrize(
    ("blocks", "extra", "match"),
    [
        (1, SIG, "last chunk"),
        (1, SIG + 5, "truncated inside a chunk"),
        (1, SIG + CHUNK + 16 - 1, "last chunk"),
        (2, SIG, "last chunk"),
        (1, 0, "last chunk"),
    ],
)
def test_truncation_at_an_io_block_boundary_fails(
    tmp_path: Path, blocks: int, extra: int, match: str
) -> None:
    key = X25519PrivateKey.generate()
    sealed = _sealed(tmp_path, os.urandom(2 * _BLOCK + 3 * CHUNK), key)
    block = (_BLOCK // CHUNK) * (CHUNK + 16)
    with sealed.open("r+b") as fh:
        fh.truncate(_chunks_offset(1) + blocks * block + extra)
    with pytest.raises(VerificationError, match=match):
        _open_bytes(tmp_path, sealed, key)
    assert not (tmp_path / "opened.bin").exists()


# Streams: SealWriter and OpenReader write and read the same format as the file functions.


def _seal_stream(data: bytes, splits: list[int], *keys: X25519PrivateKey) -> bytes:
    out = io.BytesIO()
    with envelope.SealWriter(
        out, [k.public_key() for k in keys], signer=SIGNER, chunk_size=CHUNK
    ) as w:
        view, pos = memoryview(data), 0
        for n in splits:
            assert w.write(view[pos : pos + n]) == len(view[pos : pos + n])
            pos += n
        w.write(view[pos:])
    return out.getvalue()


@pytest.mark.parametrize(
    ("size", "splits"),
    [
        (0, []),
        (0, [0, 0]),
        (CHUNK, [CHUNK]),
        (CHUNK, [1, CHUNK - 1]),
        (3 * CHUNK, [CHUNK, 0, CHUNK]),
        (5 * CHUNK + 7, [7, CHUNK, 3 * CHUNK]),
        (2 * _BLOCK + 3, [1, _BLOCK, 5]),
    ],
)
def test_seal_writer_output_opens_as_a_file(tmp_path: Path, size: int, splits: list[int]) -> None:
    key = X25519PrivateKey.generate()
    data = os.urandom(size)
    sealed = tmp_path / "stream.sealed"
    sealed.write_bytes(_seal_stream(data, splits, key))
    n_chunks = max(1, -(-size // CHUNK))
    assert sealed.stat().st_size == _chunks_offset(1) + size + 16 * n_chunks + SIG
    assert _open_bytes(tmp_path, sealed, key) == data


@settings(max_examples=40, deadline=None)
@given(
    data=st.binary(max_size=6 * CHUNK),
    cuts=st.lists(st.integers(min_value=0, max_value=6 * CHUNK), max_size=6),
    reads=st.integers(min_value=1, max_value=3 * CHUNK),
)
def test_streams_round_trip_whatever_the_pieces(data: bytes, cuts: list[int], reads: int) -> None:
    key = _STREAM_KEY
    bounds = sorted(min(c, len(data)) for c in cuts)
    splits = [b - a for a, b in zip([0, *bounds], bounds, strict=False)]
    sealed = _seal_stream(data, splits, key)
    with envelope.OpenReader(io.BytesIO(sealed), key, recover=RECOVER) as r:
        got = b"".join(iter(lambda: r.read(reads), b""))
    assert got == data
    assert envelope.OpenReader(io.BytesIO(sealed), key, recover=RECOVER).read() == data
    assert envelope.OpenReader(sealed, key, recover=RECOVER).read() == data


_STREAM_KEY = X25519PrivateKey.generate()


def test_open_reader_reads_a_sealed_file(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    data = os.urandom(_BLOCK + 3 * CHUNK + 1)
    sealed = _sealed(tmp_path, data, key)
    with sealed.open("rb") as fh, envelope.OpenReader(fh, key, recover=RECOVER) as r:
        buf = bytearray(CHUNK // 3)
        parts = []
        while n := r.readinto(buf):
            parts.append(bytes(buf[:n]))
    assert b"".join(parts) == data


def test_seal_writer_left_by_an_exception_does_not_open() -> None:
    key = X25519PrivateKey.generate()
    out = io.BytesIO()
    w = envelope.SealWriter(out, [key.public_key()], signer=SIGNER, chunk_size=CHUNK)

    def produce() -> None:
        with w:
            w.write(os.urandom(3 * CHUNK))
            raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError):
        produce()
    with pytest.raises(VerificationError, match="last chunk"):
        envelope.OpenReader(io.BytesIO(out.getvalue()), key, recover=RECOVER).read()
    with pytest.raises(InputError, match="closed"):
        w.write(b"more")


def test_open_reader_refuses_truncation_and_other_keys() -> None:
    key = X25519PrivateKey.generate()
    sealed = _seal_stream(os.urandom(4 * CHUNK), [], key)
    with pytest.raises(AccessDenied):
        envelope.OpenReader(io.BytesIO(sealed), X25519PrivateKey.generate(), recover=RECOVER)
    reader = envelope.OpenReader(io.BytesIO(sealed[: -(CHUNK + 16)]), key, recover=RECOVER)
    with pytest.raises(VerificationError, match="last chunk"):
        reader.read()
    with pytest.raises(InputError, match="bad magic"):
        envelope.OpenReader(io.BytesIO(b"not sealed at all"), key, recover=RECOVER)


_WRITE_LIMITED = """
import os, resource, signal, sys
from ailedger.crypto import envelope
from ailedger.errors import AiledgerError
from ailedger.ledger.account import Signer
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
key = envelope.generate_private_key()
signer = Signer.from_key(b"\\1" * 32)
try:
    envelope.seal(sys.argv[1], sys.argv[2], [key.public_key()], signer=signer)
except AiledgerError as exc:
    print(type(exc).__name__, exc)
"""


def test_a_failing_disk_write_is_a_clear_error_and_keeps_the_destination(tmp_path: Path) -> None:
    # The file-size limit makes the writer thread's write fail (EFBIG) as a full disk would.
    src, dst = tmp_path / "big.bin", tmp_path / "out.sealed"
    src.write_bytes(os.urandom(4 * 1024 * 1024))
    dst.write_bytes(b"previous content")
    run = subprocess.run(
        [sys.executable, "-c", _WRITE_LIMITED, str(src), str(dst)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert run.stdout.startswith("InputError cannot write"), run.stdout + run.stderr
    assert "File too large" in run.stdout
    assert dst.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin", "out.sealed"]


# The sender's signature. Every recipient knows the data key, and recipients' public keys are
# public: the AEAD cannot tell who sealed. The signature by the named sender can.


def _forge(data: bytes, recipient: X25519PrivateKey, *, name: Signer, sign: Signer) -> bytes:
    """A stream naming ``name`` as its sender, signed by ``sign`` (an attacker's key)."""

    class Impostor:
        address = name.address

        def sign_digest(self, digest: bytes) -> bytes:
            return sign.sign_digest(digest)

    out = io.BytesIO()
    with envelope.SealWriter(
        out, [recipient.public_key()], signer=Impostor(), context=b"ctx", chunk_size=CHUNK
    ) as w:
        w.write(data)
    return out.getvalue()


def test_the_header_names_the_sender_and_the_context(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    src, dst = tmp_path / "p", tmp_path / "s"
    src.write_bytes(b"x" * 3000)
    made = envelope.seal(src, dst, [key.public_key()], signer=SIGNER, context=b"resource A")
    seen: list[envelope.SealedHeader] = []
    opened = envelope.open(dst, tmp_path / "o", key, recover=RECOVER, accept=seen.append)
    assert made == opened == seen[0] == envelope.read_header(dst)
    assert opened.sender_address == SIGNER.address.lower()
    assert opened.context == b"resource A"
    assert opened.recipients == (envelope.key_id(key.public_key()),)


def test_a_recipient_cannot_seal_in_the_senders_name(tmp_path: Path) -> None:
    victim = X25519PrivateKey.generate()
    attacker = Signer.from_key(os.urandom(32))
    forged = _forge(b"attacker's content", victim, name=SIGNER, sign=attacker)
    with pytest.raises(SignatureError, match="not signed by its sender"):
        envelope.OpenReader(forged, victim, recover=RECOVER).read()
    path = tmp_path / "forged.sealed"
    path.write_bytes(forged)
    with pytest.raises(SignatureError, match="not signed by its sender"):
        _open_bytes(tmp_path, path, victim)
    assert not (tmp_path / "opened.bin").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["forged.sealed"]


def test_accept_refuses_a_sender_before_anything_is_decrypted(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    attacker = Signer.from_key(os.urandom(32))
    sealed = _sealed(tmp_path, os.urandom(3 * CHUNK), key, signer=attacker)

    def only_signer(header: envelope.SealedHeader) -> None:
        if header.sender_address != SIGNER.address.lower():
            raise VerificationError(f"not entitled: {header.sender_address}")

    with pytest.raises(VerificationError, match="not entitled"):
        envelope.open(sealed, tmp_path / "o", key, recover=RECOVER, accept=only_signer)
    assert not (tmp_path / "o").exists()
    with pytest.raises(VerificationError, match="not entitled"):
        envelope.OpenReader(sealed.read_bytes(), key, recover=RECOVER, accept=only_signer)


def test_a_signature_from_another_file_of_the_same_sender_fails(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    first = _sealed(tmp_path, b"version 1", key).read_bytes()
    second = _sealed(tmp_path, b"version 2", key).read_bytes()
    spliced = tmp_path / "spliced.sealed"
    spliced.write_bytes(second[:-SIG] + first[-SIG:])
    with pytest.raises(SignatureError, match="not signed by its sender"):
        _open_bytes(tmp_path, spliced, key)


@pytest.mark.parametrize("offset", [0, 31, 32, 63, 64], ids=["r0", "r31", "s0", "s31", "v"])
def test_a_bit_flip_in_the_signature_fails(tmp_path: Path, offset: int) -> None:
    key = X25519PrivateKey.generate()
    sealed = _sealed(tmp_path, os.urandom(2 * CHUNK), key)
    data = sealed.read_bytes()
    _flip(sealed, len(data) - SIG + offset)
    with pytest.raises(SignatureError):
        _open_bytes(tmp_path, sealed, key)
    with pytest.raises(SignatureError):
        envelope.OpenReader(sealed.read_bytes(), key, recover=RECOVER).read()
    assert not (tmp_path / "opened.bin").exists()


@pytest.mark.parametrize("cut", [1, 30, SIG - 1, SIG])
def test_a_truncated_signature_fails(tmp_path: Path, cut: int) -> None:
    key = X25519PrivateKey.generate()
    sealed = _sealed(tmp_path, os.urandom(2 * CHUNK + 100), key)
    data = sealed.read_bytes()
    sealed.write_bytes(data[:-cut])
    with pytest.raises(VerificationError):
        _open_bytes(tmp_path, sealed, key)
    with pytest.raises(VerificationError):
        envelope.OpenReader(data[:-cut], key, recover=RECOVER).read()
    assert not (tmp_path / "opened.bin").exists()


def test_a_high_s_signature_is_refused(tmp_path: Path) -> None:
    # (r, n - s, v ^ 1) is the same signature in its other form; only the low-s form counts,
    # so a file has exactly one valid trailer.
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    key = X25519PrivateKey.generate()
    sealed = _sealed(tmp_path, b"content", key)
    data = sealed.read_bytes()
    sig = data[-SIG:]
    other = sig[:32] + (n - int.from_bytes(sig[32:64])).to_bytes(32) + bytes([sig[64] ^ 1])
    sealed.write_bytes(data[:-SIG] + other)
    with pytest.raises(SignatureError, match="canonical"):
        _open_bytes(tmp_path, sealed, key)


def test_the_context_is_authenticated(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    src, dst = tmp_path / "p", tmp_path / "s"
    src.write_bytes(b"x" * 100)
    envelope.seal(src, dst, [key.public_key()], signer=SIGNER, context=b"resource A")
    data = bytearray(dst.read_bytes())
    at = data.index(b"resource A")
    data[at + 9 : at + 10] = b"B"
    dst.write_bytes(bytes(data))
    assert envelope.read_header(dst).context == b"resource B"  # a claim, until checked
    with pytest.raises(VerificationError):
        envelope.open(dst, tmp_path / "o", key, recover=RECOVER)


def test_a_context_too_long_or_a_signer_without_an_address_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "p"
    src.write_bytes(b"x")
    pk = X25519PrivateKey.generate().public_key()
    with pytest.raises(InputError, match="context"):
        envelope.seal(
            src, tmp_path / "s", [pk], signer=SIGNER, context=b"x" * (envelope.MAX_CONTEXT + 1)
        )

    class NoAddress:
        address = "nobody"

        def sign_digest(self, digest: bytes) -> bytes:
            return b"\0" * SIG

    with pytest.raises(InputError, match="Ethereum address"):
        envelope.seal(src, tmp_path / "s", [pk], signer=NoAddress())
    assert not (tmp_path / "s").exists()


def test_the_signature_is_ethereum_personal_sign_over_sha256_of_the_rest(tmp_path: Path) -> None:
    # Outside tools can check a sealed file: recover the EIP-191 signer of SHA-256(file[:-65]).
    from eth_account import Account
    from eth_account.messages import encode_defunct

    key = X25519PrivateKey.generate()
    data = _sealed(tmp_path, os.urandom(5 * CHUNK), key).read_bytes()
    digest = hashlib.sha256(data[:-SIG]).digest()
    signer = Account.recover_message(encode_defunct(primitive=digest), signature=data[-SIG:])
    assert signer == SIGNER.address
    assert data[HEADER_FIXED - 24 : HEADER_FIXED - 4].hex() == SIGNER.address[2:].lower()


@pytest.mark.parametrize("unnamed", [True, False], ids=["O_TMPFILE", "mkstemp"])
def test_the_temporary_output_never_follows_a_planted_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    # An attacker who can write the destination folder plants symlinks at the temporary names
    # (made predictable here on purpose): they are skipped, never written through or removed.
    import secrets
    import tempfile

    key = X25519PrivateKey.generate()
    sealed = _sealed(tmp_path, b"secret plaintext", key)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"do not touch")
    shared = tmp_path / "shared"
    shared.mkdir()
    planted = shared / ".opened.bin.guess.part"
    planted.symlink_to(victim)
    names = iter(["guess", "other"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    monkeypatch.setattr(secrets, "token_hex", lambda _: next(names))
    if not unnamed:
        monkeypatch.setattr(envelope, "_TMPFILE", 0)
    envelope.open(sealed, shared / "opened.bin", key, recover=RECOVER)
    assert (shared / "opened.bin").read_bytes() == b"secret plaintext"
    assert victim.read_bytes() == b"do not touch"
    assert planted.is_symlink()
    assert (shared / "opened.bin").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in shared.iterdir()) == [".opened.bin.guess.part", "opened.bin"]


def test_output_file_is_renamed_into_place_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    out.write_bytes(b"previous")

    def interrupted() -> None:
        with envelope.output_file(out) as fh:
            fh.write(b"half")
            raise RuntimeError("the input failed")

    with pytest.raises(RuntimeError):
        interrupted()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    assert out.read_bytes() == b"previous"
    with envelope.output_file(out) as fh:
        fh.write(b"new")
    assert (out.read_bytes(), out.stat().st_mode & 0o777) == (b"new", 0o600)
    with pytest.raises(InputError, match="cannot write into"):
        envelope.output_file(tmp_path / "missing" / "x").__enter__()


_FLIP_KEY = X25519PrivateKey.generate()
_FLIP_SEALED = _seal_stream(os.urandom(3 * CHUNK + 10), [], _FLIP_KEY)


@settings(max_examples=60, deadline=None)
@given(
    at=st.integers(min_value=0, max_value=len(_FLIP_SEALED) - 1),
    bit=st.integers(min_value=0, max_value=7),
)
def test_any_bit_flip_anywhere_is_refused(at: int, bit: int) -> None:
    # Header, chunks or signature: a flip is a clear refusal, never a plaintext.
    data = bytearray(_FLIP_SEALED)
    data[at] ^= 1 << bit
    with pytest.raises((VerificationError, InputError, AccessDenied)):
        envelope.OpenReader(bytes(data), _FLIP_KEY, recover=RECOVER).read()
