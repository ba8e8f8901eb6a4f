"""Envelope encryption: seal/open round trips, tampering, access and key-type errors."""

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
from ailedger.errors import AccessDenied, InputError, VerificationError

CHUNK = 1024
HEADER_FIXED = 7 + 1 + 1 + 4 + 7 + 2
ENTRY = 32 + 80


def _sealed(tmp_path: Path, data: bytes, *recipients: X25519PrivateKey) -> Path:
    src, dst = tmp_path / "plain.bin", tmp_path / "sealed.bin"
    src.write_bytes(data)
    envelope.seal(src, dst, [k.public_key() for k in recipients], chunk_size=CHUNK)
    return dst


def _open_bytes(tmp_path: Path, sealed: Path, key: X25519PrivateKey) -> bytes:
    out = tmp_path / "opened.bin"
    envelope.open(sealed, out, key)
    return out.read_bytes()


def _chunks_offset(n_recipients: int) -> int:
    return HEADER_FIXED + n_recipients * ENTRY


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 7, 4 * CHUNK])
def test_round_trip(tmp_path: Path, size: int) -> None:
    key = X25519PrivateKey.generate()
    data = os.urandom(size)
    sealed = _sealed(tmp_path, data, key)
    n_chunks = max(1, -(-size // CHUNK))
    assert sealed.stat().st_size == _chunks_offset(1) + size + 16 * n_chunks
    assert _open_bytes(tmp_path, sealed, key) == data


def test_round_trip_default_chunk_size(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    data = os.urandom(envelope.DEFAULT_CHUNK_SIZE * 2 + 3)
    src, dst = tmp_path / "p", tmp_path / "s"
    src.write_bytes(data)
    envelope.seal(src, dst, [key.public_key()])
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
    sealed.write_bytes(data[: _chunks_offset(1) + 2 * (CHUNK + 16)])
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
        envelope.open(sealed, out, key)
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
        envelope.seal(src, tmp_path / "s", [bad])  # type: ignore[list-item]
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "bad", [Ed25519PrivateKey.generate(), b"\x01" * 33], ids=["ed25519", "33-bytes"]
)
def test_wrong_private_key_type_is_input_error(tmp_path: Path, bad: object) -> None:
    sealed = _sealed(tmp_path, b"x", X25519PrivateKey.generate())
    with pytest.raises(InputError):
        envelope.open(sealed, tmp_path / "o", bad)  # type: ignore[arg-type]


def test_empty_or_duplicate_recipients_are_input_errors(tmp_path: Path) -> None:
    src = tmp_path / "p"
    src.write_bytes(b"x")
    pk = X25519PrivateKey.generate().public_key()
    with pytest.raises(InputError):
        envelope.seal(src, tmp_path / "s", [])
    with pytest.raises(InputError):
        envelope.seal(src, tmp_path / "s", [pk, pk])


def test_raw_key_bytes_work_as_keys(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    src, dst = tmp_path / "p", tmp_path / "s"
    src.write_bytes(b"hello")
    envelope.seal(src, dst, [envelope.dump_public_key(key.public_key(), encoding="raw")])
    out = tmp_path / "o"
    envelope.open(dst, out, envelope.dump_private_key(key, encoding="raw"))
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


# Sealed by the first (chunk-at-a-time) implementation: private key bytes 0..31, chunk size
# 1024, plaintext SHA-256(b"ailedger kat") repeated 40 times. Files sealed before the block I/O
# rewrite must still open.
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


def test_file_sealed_by_the_first_implementation_opens(tmp_path: Path) -> None:
    sealed = tmp_path / "kat.sealed"
    sealed.write_bytes(_SEALED_BY_V1)
    key = envelope.load_private_key(bytes(range(32)))
    assert _open_bytes(tmp_path, sealed, key) == hashlib.sha256(b"ailedger kat").digest() * 40
    assert envelope.recipients(sealed) == [envelope.key_id(key.public_key())]


# The I/O block is 8 MiB: 8192 chunks of 1 KiB. Sizes around one and two blocks exercise the
# "is this the last chunk" look-ahead across block boundaries.
_BLOCK = 8 * 1024 * 1024


@pytest.mark.parametrize("size", [_BLOCK - 1, _BLOCK, _BLOCK + 1, 2 * _BLOCK, 2 * _BLOCK + CHUNK])
def test_round_trip_across_io_blocks(tmp_path: Path, size: int) -> None:
    key = X25519PrivateKey.generate()
    data = os.urandom(size)
    sealed = _sealed(tmp_path, data, key)
    n_chunks = max(1, -(-size // CHUNK))
    assert sealed.stat().st_size == _chunks_offset(1) + size + 16 * n_chunks
    assert _open_bytes(tmp_path, sealed, key) == data


@pytest.mark.parametrize(
    ("blocks", "extra", "match"),
    [
        (1, 0, "last chunk"),
        (1, 5, "truncated inside a chunk"),
        (1, CHUNK + 16 - 1, "last chunk"),
        (2, 0, "last chunk"),
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
    with envelope.SealWriter(out, [k.public_key() for k in keys], chunk_size=CHUNK) as w:
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
    assert sealed.stat().st_size == _chunks_offset(1) + size + 16 * n_chunks
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
    with envelope.OpenReader(io.BytesIO(sealed), key) as r:
        got = b"".join(iter(lambda: r.read(reads), b""))
    assert got == data
    assert envelope.OpenReader(io.BytesIO(sealed), key).read() == data


_STREAM_KEY = X25519PrivateKey.generate()


def test_open_reader_reads_a_sealed_file(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    data = os.urandom(_BLOCK + 3 * CHUNK + 1)
    sealed = _sealed(tmp_path, data, key)
    with sealed.open("rb") as fh, envelope.OpenReader(fh, key) as r:
        buf = bytearray(CHUNK // 3)
        parts = []
        while n := r.readinto(buf):
            parts.append(bytes(buf[:n]))
    assert b"".join(parts) == data


def test_seal_writer_left_by_an_exception_does_not_open() -> None:
    key = X25519PrivateKey.generate()
    out = io.BytesIO()
    w = envelope.SealWriter(out, [key.public_key()], chunk_size=CHUNK)

    def produce() -> None:
        with w:
            w.write(os.urandom(3 * CHUNK))
            raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError):
        produce()
    with pytest.raises(VerificationError, match="last chunk"):
        envelope.OpenReader(io.BytesIO(out.getvalue()), key).read()
    with pytest.raises(InputError, match="closed"):
        w.write(b"more")


def test_open_reader_refuses_truncation_and_other_keys() -> None:
    key = X25519PrivateKey.generate()
    sealed = _seal_stream(os.urandom(4 * CHUNK), [], key)
    with pytest.raises(AccessDenied):
        envelope.OpenReader(io.BytesIO(sealed), X25519PrivateKey.generate())
    reader = envelope.OpenReader(io.BytesIO(sealed[: -(CHUNK + 16)]), key)
    with pytest.raises(VerificationError, match="last chunk"):
        reader.read()
    with pytest.raises(InputError, match="bad magic"):
        envelope.OpenReader(io.BytesIO(b"not sealed at all"), key)


_WRITE_LIMITED = """
import os, resource, signal, sys
from ailedger.crypto import envelope
from ailedger.errors import AiledgerError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
key = envelope.generate_private_key()
try:
    envelope.seal(sys.argv[1], sys.argv[2], [key.public_key()])
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
