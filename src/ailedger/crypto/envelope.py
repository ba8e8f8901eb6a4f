"""Envelope encryption of files for a set of recipients: :func:`seal` and :func:`open`.

Each sealed file gets a fresh random 256-bit data key. The data key is wrapped for every
recipient with HPKE (RFC 9180, base mode, suite DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 /
AES-256-GCM, from ``cryptography.hazmat.primitives.hpke``). The content is encrypted with
AES-256-GCM in chunks following the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár,
"Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015): the
nonce of chunk ``i`` is ``prefix(7) || i(4, big-endian) || last(1)``, so dropping, reordering,
truncating, extending or altering chunks fails authentication. Memory stays flat: the file is
read and written in blocks of several chunks (8 MiB), with three such buffers held at a time.

File format, version 1 (integers big-endian)::

    magic       7  b"AILSEAL"
    version     1  0x01
    suite       1  0x01 (the HPKE suite above, AES-256-GCM chunks)
    chunk_size  4  plaintext bytes per chunk, 1 KiB .. 16 MiB
    prefix      7  random nonce prefix
    count       2  number of recipients, >= 1
    count x     32 key id: SHA-256 of the recipient's raw X25519 public key
                80 HPKE enc (32) || HPKE ciphertext of the data key (32 + 16 tag)
    chunks         AES-256-GCM(data key, nonce_i, chunk_i, aad = SHA-256(header) || last)
                   each ``chunk_size + 16`` bytes but the last, which is shorter or equal and
                   is the only one with last = 1; an empty file has one empty last chunk.

The HPKE ``info`` is ``b"ailedger seal v1" || key id``. The whole header, wrapped keys
included, is bound into every chunk through the AAD, so changing any header byte fails
authentication. Sealing gives confidentiality and integrity against anyone who is not a
recipient; it does not say who sealed (sign a statement for that).

Errors: no wrapped key for the given private key -> :class:`AccessDenied`; a tampered or
truncated file -> :class:`VerificationError`; a key of the wrong type or length, or a file that
is not a sealed file at all (bad magic, unknown version) -> :class:`InputError`. Output goes to
a temporary file in the destination folder, fsynced, then renamed: the destination never holds
a partial or unauthenticated result.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ailedger.errors import AccessDenied, InputError, VerificationError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAGIC",
    "VERSION",
    "dump_private_key",
    "dump_public_key",
    "generate_private_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "open",
    "open_sealed",
    "recipients",
    "seal",
]

MAGIC = b"AILSEAL"
VERSION = 1
DEFAULT_CHUNK_SIZE = 1024 * 1024

_SUITE_ID = 1
_MIN_CHUNK = 1024
_MAX_CHUNK = 16 * 1024 * 1024
_TAG = 16
_PREFIX = 7
_KEY_ID = 32
_WRAPPED = 32 + 32 + _TAG
_FIXED = struct.Struct(">7sBBI7sH")
_INFO = b"ailedger seal v1"
_HPKE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_MAX_CHUNKS = 2**32
_IO_BYTES = 8 * 1024 * 1024  # bytes per read or write syscall: several chunks
_FADVISE = hasattr(os, "posix_fadvise")
_DROP_BEHIND = 64 * 1024 * 1024  # output bytes kept in the page cache behind the write


def generate_private_key() -> X25519PrivateKey:
    """Return a new random X25519 private key."""
    return X25519PrivateKey.generate()


def key_id(public_key: X25519PublicKey | bytes) -> str:
    """Return the hex SHA-256 of a recipient's raw 32-byte X25519 public key."""
    return _key_id(_public_key(public_key)).hex()


def load_public_key(data: bytes) -> X25519PublicKey:
    """Load an X25519 public key from its raw 32 bytes or a PEM SubjectPublicKeyInfo."""
    if not isinstance(data, bytes | bytearray):
        raise InputError(f"a public key is read from bytes, got {type(data).__name__}")
    if len(data) == 32:
        return X25519PublicKey.from_public_bytes(bytes(data))
    try:
        key = serialization.load_pem_public_key(bytes(data))
    except ValueError as exc:
        raise InputError("not an X25519 public key (neither 32 raw bytes nor PEM)") from exc
    if not isinstance(key, X25519PublicKey):
        raise InputError(f"the PEM holds a {type(key).__name__}, not an X25519 public key")
    return key


def load_private_key(data: bytes, password: bytes | None = None) -> X25519PrivateKey:
    """Load an X25519 private key from its raw 32 bytes or a PEM PKCS#8 (maybe encrypted)."""
    if not isinstance(data, bytes | bytearray):
        raise InputError(f"a private key is read from bytes, got {type(data).__name__}")
    if len(data) == 32 and password is None:
        return X25519PrivateKey.from_private_bytes(bytes(data))
    try:
        key = serialization.load_pem_private_key(bytes(data), password=password)
    except (ValueError, TypeError) as exc:
        raise InputError(f"not a readable X25519 private key: {exc}") from exc
    if not isinstance(key, X25519PrivateKey):
        raise InputError(f"the PEM holds a {type(key).__name__}, not an X25519 private key")
    return key


def dump_public_key(key: X25519PublicKey, *, encoding: Literal["pem", "raw"] = "pem") -> bytes:
    """Return a public key as PEM SubjectPublicKeyInfo or as its raw 32 bytes."""
    pk = _public_key(key)
    if encoding == "raw":
        return pk.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if encoding == "pem":
        return pk.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    raise InputError(f"encoding must be 'pem' or 'raw', got {encoding!r}")


def dump_private_key(
    key: X25519PrivateKey,
    *,
    encoding: Literal["pem", "raw"] = "pem",
    password: bytes | None = None,
) -> bytes:
    """Return a private key as PEM PKCS#8 (encrypted if ``password``) or its raw 32 bytes."""
    sk = _private_key(key)
    if encoding == "raw":
        if password is not None:
            raise InputError("a raw private key cannot be encrypted; use encoding='pem'")
        return sk.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    if encoding == "pem":
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return sk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    raise InputError(f"encoding must be 'pem' or 'raw', got {encoding!r}")


def seal(
    src_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    recipients: Sequence[X25519PublicKey | bytes],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> None:
    """Encrypt ``src_path`` into ``dst_path`` so that each recipient can :func:`open` it.

    ``recipients`` are X25519 public keys (objects or raw 32 bytes); ``chunk_size`` is in
    plaintext bytes. Raises :class:`InputError` for a bad key, an empty or duplicated recipient
    list, a bad chunk size or an unreadable source.
    """
    if isinstance(chunk_size, bool) or not _MIN_CHUNK <= chunk_size <= _MAX_CHUNK:
        raise InputError(
            f"chunk_size must be between {_MIN_CHUNK} and {_MAX_CHUNK} bytes, got {chunk_size!r}"
        )
    if isinstance(recipients, bytes | str) or not recipients:
        raise InputError("seal needs a non-empty list of recipient X25519 public keys")
    keys = [_public_key(r) for r in recipients]
    ids = [_key_id(k) for k in keys]
    if len(set(ids)) != len(ids):
        raise InputError("a recipient appears twice in the list")
    if len(keys) > 0xFFFF:
        raise InputError("at most 65535 recipients")

    data_key = AESGCM.generate_key(bit_length=256)
    prefix = os.urandom(_PREFIX)
    header = bytearray(_FIXED.pack(MAGIC, VERSION, _SUITE_ID, chunk_size, prefix, len(keys)))
    for kid, pk in zip(ids, keys, strict=True):
        try:
            wrapped = _HPKE.encrypt(data_key, pk, info=_INFO + kid)
        except ValueError as exc:
            raise InputError(f"recipient {kid.hex()} is not a usable X25519 key: {exc}") from exc
        if len(wrapped) != _WRAPPED:
            raise AssertionError("unexpected HPKE output length")
        header += kid + wrapped
    header_hash = hashlib.sha256(header).digest()

    with _open_source(src_path) as src, _atomic_output(dst_path) as dst:
        dst.write(header)
        _seal_chunks(src, dst, AESGCM(data_key), prefix, header_hash, chunk_size)


def open(
    src_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    private_key: X25519PrivateKey | bytes,
) -> None:
    """Decrypt a file sealed by :func:`seal` into ``dst_path`` with a recipient's private key.

    Steps: 1. parse the header (magic, version, suite, chunk size, recipients); 2. find the
    wrapped key for this private key's key id; 3. unwrap the data key with HPKE; 4. decrypt and
    authenticate each chunk, its index and its last flag; 5. require end of file after the last
    chunk; 6. rename the output into place.

    Raises :class:`AccessDenied` if the file was not sealed for this key,
    :class:`VerificationError` if it was tampered with or truncated, and :class:`InputError` for
    a key of the wrong type or a file that is not a sealed file.
    """
    sk = _private_key(private_key)
    my_id = _key_id(sk.public_key())
    with _open_source(src_path) as src:
        header, chunk_size, prefix, entries = _read_header(src)
        wrapped = entries.get(my_id)
        if wrapped is None:
            raise AccessDenied(
                f"{os.fspath(src_path)!r} is not sealed for the key {my_id.hex()} "
                f"(it has {len(entries)} recipient(s): {', '.join(k.hex()[:16] for k in entries)})"
            )
        try:
            data_key = _HPKE.decrypt(wrapped, sk, info=_INFO + my_id)
        except InvalidTag as exc:
            raise VerificationError(
                "the wrapped data key does not authenticate: the header was altered"
            ) from exc
        header_hash = hashlib.sha256(header).digest()
        with _atomic_output(dst_path) as dst:
            _open_chunks(src, dst, AESGCM(data_key), prefix, header_hash, chunk_size)


open_sealed = open


def recipients(src_path: str | os.PathLike[str]) -> list[str]:
    """Return the key ids (hex) a sealed file is wrapped for, reading only its header."""
    with _open_source(src_path) as src:
        return [k.hex() for k in _read_header(src)[3]]


def _read_header(src: io.FileIO) -> tuple[bytes, int, bytes, dict[bytes, bytes]]:
    fixed = _read_exact(src, _FIXED.size)
    if len(fixed) < len(MAGIC) + 1 or fixed[: len(MAGIC)] != MAGIC:
        raise InputError("not an ailedger sealed file (bad magic)")
    if fixed[len(MAGIC)] != VERSION:
        raise InputError(f"unsupported sealed-file version {fixed[len(MAGIC)]}")
    if len(fixed) < _FIXED.size:
        raise VerificationError("the sealed file is truncated inside its header")
    _, _, suite, chunk_size, prefix, count = _FIXED.unpack(fixed)
    if suite != _SUITE_ID or not _MIN_CHUNK <= chunk_size <= _MAX_CHUNK or count == 0:
        raise VerificationError("the sealed file's header is corrupt (suite, chunk size or count)")
    body = _read_exact(src, count * (_KEY_ID + _WRAPPED))
    if len(body) < count * (_KEY_ID + _WRAPPED):
        raise VerificationError("the sealed file is truncated inside its header")
    entries: dict[bytes, bytes] = {}
    step = _KEY_ID + _WRAPPED
    for off in range(0, len(body), step):
        entries.setdefault(body[off : off + _KEY_ID], body[off + _KEY_ID : off + step])
    return fixed + body, chunk_size, prefix, entries


def _nonce(prefix: bytes, i: int, last: bool) -> bytes:
    return prefix + i.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def _aad(header_hash: bytes, last: bool) -> bytes:
    return header_hash + (b"\x01" if last else b"\x00")


def _key_id(pk: X25519PublicKey) -> bytes:
    return hashlib.sha256(
        pk.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).digest()


def _public_key(key: object) -> X25519PublicKey:
    if isinstance(key, X25519PublicKey):
        return key
    if isinstance(key, bytes | bytearray):
        if len(key) != 32:
            raise InputError(f"a raw X25519 public key is 32 bytes, got {len(key)}")
        return X25519PublicKey.from_public_bytes(bytes(key))
    raise InputError(f"a recipient must be an X25519 public key, got {type(key).__name__}")


def _private_key(key: object) -> X25519PrivateKey:
    if isinstance(key, X25519PrivateKey):
        return key
    if isinstance(key, bytes | bytearray):
        if len(key) != 32:
            raise InputError(f"a raw X25519 private key is 32 bytes, got {len(key)}")
        return X25519PrivateKey.from_private_bytes(bytes(key))
    raise InputError(f"the private key must be an X25519 private key, got {type(key).__name__}")


def _seal_chunks(
    src: io.FileIO,
    dst: _Sink,
    aead: AESGCM,
    prefix: bytes,
    header_hash: bytes,
    chunk_size: int,
) -> None:
    # Several chunks per read and write syscall; two input blocks so that the block after
    # the current one is read before its last chunk is encrypted (that is how "last" is known).
    per = max(1, _IO_BYTES // chunk_size)
    block = per * chunk_size
    views = (memoryview(bytearray(block)), memoryview(bytearray(block)))
    out = memoryview(bytearray(per * (chunk_size + _TAG)))
    aads = (_aad(header_hash, False), _aad(header_hash, True))
    cur, n, i = 0, _fill(src, views[0]), 0
    while True:
        more = _fill(src, views[1 - cur]) if n == block else 0
        data, o = views[cur], 0
        for start in range(0, max(n, 1), chunk_size):
            end = min(start + chunk_size, n)
            last = not more and end == n
            if i >= _MAX_CHUNKS:
                raise InputError("the file is too large for this chunk size; use a larger one")
            size = end - start + _TAG
            aead.encrypt_into(
                _nonce(prefix, i, last), data[start:end], aads[last], out[o : o + size]
            )
            o, i = o + size, i + 1
        dst.write(out[:o])
        if not more:
            return
        cur, n = 1 - cur, more


def _open_chunks(
    src: io.FileIO,
    dst: _Sink,
    aead: AESGCM,
    prefix: bytes,
    header_hash: bytes,
    chunk_size: int,
) -> None:
    size = chunk_size + _TAG
    per = max(1, _IO_BYTES // chunk_size)
    block = per * size
    views = (memoryview(bytearray(block)), memoryview(bytearray(block)))
    out = memoryview(bytearray(per * chunk_size))
    aads = (_aad(header_hash, False), _aad(header_hash, True))
    cur, n, i = 0, _fill(src, views[0]), 0
    if n < _TAG:
        raise VerificationError("the sealed file is truncated: no complete chunk")
    while True:
        more = _fill(src, views[1 - cur]) if n == block else 0
        data, o = views[cur], 0
        for start in range(0, n, size):
            end = min(start + size, n)
            if end - start < _TAG:
                raise VerificationError("the sealed file is truncated inside a chunk")
            last = not more and end == n
            if i >= _MAX_CHUNKS:
                raise VerificationError("the sealed file has more chunks than allowed")
            plain = end - start - _TAG
            try:
                aead.decrypt_into(
                    _nonce(prefix, i, last), data[start:end], aads[last], out[o : o + plain]
                )
            except InvalidTag as exc:
                where = "last chunk" if last else f"chunk {i}"
                raise VerificationError(
                    f"{where} does not authenticate: the sealed file was truncated, "
                    "reordered or altered"
                ) from exc
            o, i = o + plain, i + 1
        dst.write(out[:o])
        if not more:
            return
        cur, n = 1 - cur, more


def _fill(src: io.FileIO, buf: memoryview) -> int:
    """Read into ``buf`` until it is full or the file ends; return the bytes read."""
    n = 0
    while n < len(buf):
        got = src.readinto(buf[n:])
        if not got:
            break
        n += got
    return n


def _read_exact(src: io.FileIO, size: int) -> bytes:
    buf = bytearray(size)
    return bytes(buf[: _fill(src, memoryview(buf))])


class _Sink:
    """The temporary output file: unbuffered writes, with writeback started as data arrives.

    Linux starts asynchronous writeback of the dirty pages in a range on POSIX_FADV_DONTNEED
    and drops the pages that are already clean. Each new block is handed to the disk at once
    (so the final fsync has little left to wait for), and the blocks written ``_DROP_BEHIND``
    bytes earlier, clean by then, leave the page cache: the output's cache footprint stays
    flat and the kernel reuses those pages instead of allocating fresh ones for every block.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._written = 0
        self._flushed = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self._written += n
        if _FADVISE and self._written - self._flushed >= _IO_BYTES:
            os.posix_fadvise(
                self.fd, self._flushed, self._written - self._flushed, os.POSIX_FADV_DONTNEED
            )
            self._flushed = self._written
            if self._written > _DROP_BEHIND:
                os.posix_fadvise(self.fd, 0, self._written - _DROP_BEHIND, os.POSIX_FADV_DONTNEED)


@contextmanager
def _open_source(path: str | os.PathLike[str]) -> Iterator[io.FileIO]:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(f"cannot read {os.fspath(path)!r}: {exc.strerror}") from exc
    with io.FileIO(fd, "rb") as fh:
        if _FADVISE:
            with suppress(OSError):  # a pipe or a device: no read-ahead hint
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        yield fh


@contextmanager
def _atomic_output(path: str | os.PathLike[str]) -> Iterator[_Sink]:
    target = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(target)
    try:
        fd, tmp = tempfile.mkstemp(
            dir=folder, prefix="." + os.path.basename(target) + ".", suffix=".part"
        )
    except OSError as exc:
        raise InputError(f"cannot write into {folder!r}: {exc.strerror}") from exc
    try:
        try:
            yield _Sink(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
