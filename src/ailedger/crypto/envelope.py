"""Envelope encryption for a set of recipients: files (:func:`seal`, :func:`open`) and streams
(:class:`SealWriter`, :class:`OpenReader`), in one format.

Each sealed file gets a fresh random 256-bit data key. The data key is wrapped for every
recipient with HPKE (RFC 9180, base mode, suite DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 /
AES-256-GCM, from ``cryptography.hazmat.primitives.hpke``). The content is encrypted with
AES-256-GCM in chunks following the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár,
"Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015): the
nonce of chunk ``i`` is ``prefix(7) || i(4, big-endian) || last(1)``, so dropping, reordering,
truncating, extending or altering chunks fails authentication. Memory stays flat: files are
read and written in blocks of several chunks (8 MiB), five such buffers at most; a second
thread writes the output while the next block is read and encrypted.

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
is not a sealed file at all (bad magic, unknown version), or an unwritable destination ->
:class:`InputError`. File output goes to a temporary file in the destination folder, fsynced,
then renamed: the destination never holds a partial or unauthenticated result. A stream cannot
be taken back: :class:`OpenReader` says so at the end (see there).
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import struct
import tempfile
import threading
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Literal, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ailedger.errors import AccessDenied, InputError, VerificationError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAGIC",
    "VERSION",
    "OpenReader",
    "SealWriter",
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
_DEPTH = 3  # output buffers in flight: one being filled, up to two being written


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
    list, a bad chunk size, an unreadable source or an unwritable destination.
    """
    header, stream = _new_stream(recipients, chunk_size)
    per = max(1, _IO_BYTES // chunk_size)
    with _open_source(src_path) as src, _atomic_output(dst_path, per * (chunk_size + _TAG)) as dst:
        dst.write_header(header)
        for data, final in _blocks(src, per * chunk_size):
            dst.submit(stream.seal_into(data, dst.buffer(), final=final))


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
    with _open_source(src_path) as src:
        stream = _unwrap(src, private_key, os.fspath(src_path))
        per = max(1, _IO_BYTES // stream.chunk_size)
        with _atomic_output(dst_path, per * stream.chunk_size) as dst:
            for data, final in _blocks(src, per * (stream.chunk_size + _TAG)):
                dst.submit(stream.open_into(data, dst.buffer(), final=final))


open_sealed = open


class SealWriter:
    """A writable stream that seals what is written to it into ``dst`` (the :func:`seal` format).

    ``dst`` is any object with ``write(bytes-like)`` (a file opened ``"wb"``, a socket file, an
    HTTP upload body); the header goes out at once, then each chunk as soon as the bytes after
    it arrive (STREAM must know which chunk is the last). :meth:`close` writes the last chunk;
    without it the output is truncated and will not open, so a ``with`` block that ends in an
    exception leaves an output that fails authentication rather than a short valid one.
    Memory: one chunk of pending input and one block of output, whatever is written.
    """

    def __init__(
        self,
        dst: _Writable,
        recipients: Sequence[X25519PublicKey | bytes],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        header, self._stream = _new_stream(recipients, chunk_size)
        self._dst = dst
        self._chunk = chunk_size
        self._pending = memoryview(bytearray(chunk_size))
        self._held = 0
        self._per = max(1, _IO_BYTES // chunk_size)
        self._out = memoryview(bytearray(self._per * (chunk_size + _TAG)))
        self._closed = False
        _write_all(dst, header)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Seal ``data`` (after what was written before); return its length."""
        if self._closed:
            raise InputError("write to a closed SealWriter")
        view = memoryview(data).cast("B")
        total = len(view)
        if self._held:
            take = min(self._chunk - self._held, total)
            self._pending[self._held : self._held + take] = view[:take]
            self._held += take
            view = view[take:]
            if not view:
                return total
            self._emit(self._pending, final=False)
            self._held = 0
        # Seal every whole chunk that is known not to be the last; keep the rest (1 chunk at
        # most) until more data or close() says whether it is.
        ready = max(len(view) - 1, 0) // self._chunk * self._chunk
        for start in range(0, ready, self._per * self._chunk):
            self._emit(view[start : min(ready, start + self._per * self._chunk)], final=False)
        self._held = len(view) - ready
        self._pending[: self._held] = view[ready:]
        return total

    def close(self) -> None:
        """Seal the held bytes as the last chunk. Idempotent."""
        if not self._closed:
            self._closed = True
            self._emit(self._pending[: self._held], final=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> SealWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True  # no last chunk: the partial output will not authenticate

    def _emit(self, data: memoryview, *, final: bool) -> None:
        _write_all(self._dst, self._out[: self._stream.seal_into(data, self._out, final=final)])


class OpenReader:
    """A readable stream of the plaintext of a sealed stream ``src`` (the :func:`seal` format).

    ``src`` is any object with ``readinto`` (a file opened ``"rb"``, a socket file), or the
    sealed bytes themselves (``bytes``, ``bytearray``, ``memoryview``: read in place, without a
    copy; they must not change while the reader is in use). The header is read and the data
    key unwrapped on construction (:class:`AccessDenied`, :class:`InputError` as for
    :func:`open`). Each chunk is authenticated before its bytes are returned, but a truncation
    is only known at the end: :meth:`read` raises :class:`VerificationError` there, and a
    caller must then discard what it already read. :func:`open` does that for files (it
    renames the output into place only after the end).
    """

    def __init__(
        self,
        src: _Readable | bytes | bytearray | memoryview,
        private_key: X25519PrivateKey | bytes,
    ) -> None:
        if isinstance(src, bytes | bytearray | memoryview):
            src = _MemorySource(src)
        self._stream = _unwrap(src, private_key, "the sealed stream")
        per = max(1, _IO_BYTES // self._stream.chunk_size)
        self._blocks = _blocks(src, per * (self._stream.chunk_size + _TAG))
        self._out = memoryview(bytearray(per * self._stream.chunk_size))
        self._ready = self._out[:0]
        self._done = False

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Fill ``buffer`` with the next plaintext bytes; return how many (0 at the end)."""
        target = memoryview(buffer).cast("B")
        while not self._ready and not self._done:
            data, final = next(self._blocks)
            self._done = final
            if len(target) >= len(self._out):  # a whole block fits: decrypt in place
                return self._stream.open_into(data, target, final=final)
            self._ready = self._out[: self._stream.open_into(data, self._out, final=final)]
        n = min(len(target), len(self._ready))
        target[:n] = self._ready[:n]
        self._ready = self._ready[n:]
        return n

    def read(self, size: int = -1) -> bytes:
        """Return up to ``size`` plaintext bytes (all the rest if ``size`` < 0); b"" at the end."""
        if size >= 0:
            buf = bytearray(size)
            return bytes(buf[: self.readinto(buf)])
        parts = []
        while piece := self.read(len(self._ready) or len(self._out)):
            parts.append(piece)
        return b"".join(parts)

    def __enter__(self) -> OpenReader:
        return self

    def __exit__(self, *_: object) -> None:
        self._blocks.close()


def recipients(src_path: str | os.PathLike[str]) -> list[str]:
    """Return the key ids (hex) a sealed file is wrapped for, reading only its header."""
    with _open_source(src_path) as src:
        return [k.hex() for k in _read_header(src)[3]]


class _Writable(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> int | None: ...


class _Readable(Protocol):
    def readinto(self, buffer: bytearray | memoryview, /) -> int | None: ...


class _Stream:
    """The STREAM state of one sealed stream: data key, nonce prefix, AADs, next chunk index."""

    def __init__(self, data_key: bytes, prefix: bytes, header: bytes, chunk_size: int) -> None:
        header_hash = hashlib.sha256(header).digest()
        self.chunk_size = chunk_size
        self._aead = AESGCM(data_key)
        self._prefix = prefix
        self._aads = (header_hash + b"\x00", header_hash + b"\x01")
        self._index = 0

    def seal_into(self, data: memoryview, out: memoryview, *, final: bool) -> int:
        """Encrypt ``data`` as the next chunks into ``out``; return the bytes written.

        ``data`` holds whole chunks unless ``final``, when its last (maybe short or empty)
        chunk is the stream's last.
        """
        o, n, size = 0, len(data), self.chunk_size
        for start in range(0, max(n, 1), size):
            end = min(start + size, n)
            last = final and end == n
            step = end - start + _TAG
            self._aead.encrypt_into(
                self._nonce(last), data[start:end], self._aads[last], out[o : o + step]
            )
            o += step
        return o

    def open_into(self, data: memoryview, out: memoryview, *, final: bool) -> int:
        """Decrypt and authenticate ``data`` as the next sealed chunks into ``out``.

        Returns the plaintext bytes written. ``final`` says the input ends after ``data``.
        """
        o, n, size = 0, len(data), self.chunk_size + _TAG
        if final and n == 0 and self._index == 0:
            raise VerificationError("the sealed file is truncated: no complete chunk")
        for start in range(0, n, size):
            end = min(start + size, n)
            if end - start < _TAG:
                raise VerificationError("the sealed file is truncated inside a chunk")
            last = final and end == n
            plain = end - start - _TAG
            try:
                self._aead.decrypt_into(
                    self._nonce(last), data[start:end], self._aads[last], out[o : o + plain]
                )
            except InvalidTag as exc:
                where = "last chunk" if last else f"chunk {self._index - 1}"
                raise VerificationError(
                    f"{where} does not authenticate: the sealed file was truncated, "
                    "reordered or altered"
                ) from exc
            o += plain
        return o

    def _nonce(self, last: bool) -> bytes:
        i = self._index
        if i >= _MAX_CHUNKS:
            raise InputError("too many chunks for this chunk size; seal with a larger one")
        self._index = i + 1
        return self._prefix + i.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def _new_stream(
    recipients: Sequence[X25519PublicKey | bytes], chunk_size: int
) -> tuple[bytes, _Stream]:
    """Check the arguments of a seal; return the header and the stream state."""
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
    return bytes(header), _Stream(data_key, prefix, bytes(header), chunk_size)


def _unwrap(src: _Readable, private_key: X25519PrivateKey | bytes, name: str) -> _Stream:
    """Read a sealed header from ``src`` and unwrap its data key with ``private_key``."""
    sk = _private_key(private_key)
    my_id = _key_id(sk.public_key())
    header, chunk_size, prefix, entries = _read_header(src)
    wrapped = entries.get(my_id)
    if wrapped is None:
        raise AccessDenied(
            f"{name!r} is not sealed for the key {my_id.hex()} "
            f"(it has {len(entries)} recipient(s): {', '.join(k.hex()[:16] for k in entries)})"
        )
    try:
        data_key = _HPKE.decrypt(wrapped, sk, info=_INFO + my_id)
    except InvalidTag as exc:
        raise VerificationError(
            "the wrapped data key does not authenticate: the header was altered"
        ) from exc
    return _Stream(data_key, prefix, header, chunk_size)


def _read_header(src: _Readable) -> tuple[bytes, int, bytes, dict[bytes, bytes]]:
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


def _fill(src: _Readable, buf: memoryview) -> int:
    """Read into ``buf`` until it is full or the input ends; return the bytes read."""
    n = 0
    while n < len(buf):
        got = src.readinto(buf[n:])
        if not got:
            break
        n += got
    return n


def _blocks(src: _Readable, size: int) -> Generator[tuple[memoryview, bool], None, None]:
    """Yield ``(block, final)``: ``src`` in blocks of ``size`` bytes, ``final`` on the last.

    Reads one block ahead (that is how the last is known) into a second buffer; a yielded
    view stays valid until the generator resumes. An empty input yields one empty final block.
    """
    if isinstance(src, _MemorySource):
        while True:
            block = src.take(size)
            final = src.at_end()
            yield block, final
            if final:
                return
    bufs = (memoryview(bytearray(size)), memoryview(bytearray(size)))
    cur, n = 0, _fill(src, bufs[0])
    while True:
        more = _fill(src, bufs[1 - cur]) if n == size else 0
        yield bufs[cur][:n], not more
        if not more:
            return
        cur, n = 1 - cur, more


class _MemorySource:
    """Sealed bytes held in memory, read by copy (``readinto``) or in place (``take``)."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def readinto(self, buffer: bytearray | memoryview) -> int:
        piece = self.take(len(buffer))
        memoryview(buffer).cast("B")[: len(piece)] = piece
        return len(piece)

    def take(self, size: int) -> memoryview:
        piece = self._view[self._pos : self._pos + size]
        self._pos += len(piece)
        return piece

    def at_end(self) -> bool:
        return self._pos >= len(self._view)


def _write_all(dst: _Writable, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = dst.write(view)
        view = view[len(view) if n is None else n :]


def _read_exact(src: _Readable, size: int) -> bytes:
    buf = bytearray(size)
    return bytes(buf[: _fill(src, memoryview(buf))])


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
def _atomic_output(path: str | os.PathLike[str], block: int) -> Iterator[_BackgroundWriter]:
    """A temporary file beside ``path``, written by a :class:`_BackgroundWriter` of ``block``
    bytes per buffer, fsynced and renamed over ``path`` only if the body ends without error."""
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
            writer = _BackgroundWriter(fd, block, target)
            try:
                yield writer
            finally:
                writer.close()
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class _BackgroundWriter:
    """Writes blocks to ``fd`` on a second thread, so disk writes overlap reading and crypto.

    The caller takes a free buffer with :meth:`buffer`, fills it and hands its first ``n``
    bytes over with :meth:`submit`; ``_DEPTH`` buffers circulate, so memory stays flat. A write
    error stops the thread and is raised (as :class:`InputError`) by the next call.

    Linux starts asynchronous writeback of the dirty pages in a range on POSIX_FADV_DONTNEED
    and drops the pages that are already clean. Each block is handed to the disk as soon as it
    is written (so the final fsync has little left to wait for), and the blocks written
    ``_DROP_BEHIND`` bytes earlier, clean by then, leave the page cache: the output's cache
    footprint stays flat and the kernel reuses those pages instead of allocating fresh ones.
    """

    def __init__(self, fd: int, block: int, name: str) -> None:
        self._fd = fd
        self._name = name
        self._bufs = [memoryview(bytearray(block)) for _ in range(_DEPTH)]
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._todo: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        for k in range(_DEPTH):
            self._free.put(k)
        self._current = -1
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="ailedger-writer", daemon=True)
        self._thread.start()

    def write_header(self, data: bytes) -> None:
        """Queue ``data`` (smaller than a block) ahead of the blocks."""
        buf = self.buffer()
        buf[: len(data)] = data
        self.submit(len(data))

    def buffer(self) -> memoryview:
        """Return a free buffer to fill (waits while all are being written)."""
        k = self._free.get()
        self._raise()
        self._current = k
        return self._bufs[k]

    def submit(self, n: int) -> None:
        """Queue the first ``n`` bytes of the buffer last returned by :meth:`buffer`."""
        self._todo.put((self._current, n))
        self._current = -1

    def close(self) -> None:
        """Wait for every queued block; raise the thread's write error, if any."""
        self._todo.put(None)
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        exc = self._error
        if exc is not None:
            why = exc.strerror if isinstance(exc, OSError) else repr(exc)
            raise InputError(f"cannot write {self._name!r}: {why}") from exc

    def _run(self) -> None:
        written = flushed = 0
        while (item := self._todo.get()) is not None:
            k, n = item
            try:
                if self._error is None:
                    view = self._bufs[k][:n]
                    while view:
                        view = view[os.write(self._fd, view) :]
                    written += n
                    if _FADVISE and written - flushed >= _IO_BYTES:
                        os.posix_fadvise(
                            self._fd, flushed, written - flushed, os.POSIX_FADV_DONTNEED
                        )
                        flushed = written
                        if written > _DROP_BEHIND:
                            os.posix_fadvise(
                                self._fd, 0, written - _DROP_BEHIND, os.POSIX_FADV_DONTNEED
                            )
            except Exception as exc:  # reported to the caller by _raise
                self._error = exc
            finally:
                self._free.put(k)
