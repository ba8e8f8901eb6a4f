"""Envelope encryption for a set of recipients, signed by its sender: files (:func:`seal`,
:func:`open`) and streams (:class:`SealWriter`, :class:`OpenReader`), in one format.

Each sealed file gets a fresh random 256-bit data key. The data key is wrapped for every
recipient with HPKE (RFC 9180, base mode, suite DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 /
AES-256-GCM, from ``cryptography.hazmat.primitives.hpke``). The content is encrypted with
AES-256-GCM in chunks following the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár,
"Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015): the
nonce of chunk ``i`` is ``prefix(7) || i(4, big-endian) || last(1)``, so dropping, reordering,
truncating, extending or altering chunks fails authentication. Memory stays flat: files are
read and written in blocks of several chunks (8 MiB), five such buffers at most; a second
thread writes the output (and, when sealing a file, hashes it for the signature) while the
next block is read and encrypted; elsewhere a hashing thread hashes each block while it is
decrypted or the next one encrypted.

Every recipient knows the data key, so the AEAD alone cannot tell the sender from another
recipient: any recipient (indeed anyone, since recipients' public keys are public) could seal
other content for the same keys. The file therefore names its sender, an Ethereum account, and
ends with that account's signature over everything before it; the caller decides whether the
sender is entitled to write what the file says it is (the ``context``, opaque here).

File format, version 2 (integers big-endian)::

    magic       7  b"AILSEAL"
    version     1  0x02
    suite       1  0x01 (the HPKE suite above, AES-256-GCM chunks, secp256k1 EIP-191 signature)
    chunk_size  4  plaintext bytes per chunk, 1 KiB .. 16 MiB
    prefix      7  random nonce prefix
    sender     20  Ethereum address of the sealing account
    ctx_len     2  length of the context, 0 .. 4096
    context     n  what the file is bound to, defined by the caller (see provenance.sharing)
    count       2  number of recipients, >= 1
    count x     32 key id: SHA-256 of the recipient's raw X25519 public key
                80 HPKE enc (32) || HPKE ciphertext of the data key (32 + 16 tag)
    chunks         AES-256-GCM(data key, nonce_i, chunk_i, aad = SHA-256(header) || last)
                   each ``chunk_size + 16`` bytes but the last, which is shorter or equal and
                   is the only one with last = 1; an empty file has one empty last chunk.
    signature  65  r || s || v (27 or 28, low s) by ``sender`` over the EIP-191 personal
                   message of SHA-256(every byte above, header and chunks)

The HPKE ``info`` is ``b"ailedger seal v1" || key id``. The whole header (sender, context and
wrapped keys included) is bound into every chunk through the AAD, and the signature covers the
header and every chunk. Version 1 files (no sender, no signature) are refused.

Opening, numbered as in the code: 1. parse the header (magic, version, suite, chunk size,
sender, context, recipients); 2. let the caller check the sender and the context (``accept``);
3. find the wrapped key for this private key's key id and unwrap the data key with HPKE;
4. decrypt and authenticate each chunk, its index and its last flag, hashing the ciphertext;
5. require exactly the signature after the last chunk and recover its signer, which must be the
sender; 6. rename the output into place.

Errors: no wrapped key for the given private key -> :class:`AccessDenied`; a tampered or
truncated file -> :class:`VerificationError`; a signature that is missing, malformed or not by
the named sender, or a version 1 file -> :class:`SignatureError`; a key of the wrong type or
length, or a file that is not a sealed file at all (bad magic, unknown version), or an
unwritable destination -> :class:`InputError`. File output goes to a temporary file with an
unpredictable name, created exclusively (0600, never through a symbolic link) in the
destination folder, fsynced, then renamed: the destination never holds a partial or
unauthenticated result. A stream cannot be taken back: :class:`OpenReader` says so at the end
(see there).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import queue
import secrets
import struct
import tempfile
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ailedger.errors import AccessDenied, InputError, SignatureError, VerificationError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAGIC",
    "MAX_CONTEXT",
    "SIGNATURE_SIZE",
    "VERSION",
    "OpenReader",
    "Recover",
    "SealSigner",
    "SealWriter",
    "SealedHeader",
    "dump_private_key",
    "dump_public_key",
    "generate_private_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "open",
    "open_sealed",
    "output_file",
    "read_header",
    "recipients",
    "seal",
]

MAGIC = b"AILSEAL"
VERSION = 2
DEFAULT_CHUNK_SIZE = 1024 * 1024
#: bytes of the trailing signature: r (32) || s (32) || v (1)
SIGNATURE_SIZE = 65
#: longest context, in bytes
MAX_CONTEXT = 4096

_SUITE_ID = 1
_MIN_CHUNK = 1024
_MAX_CHUNK = 16 * 1024 * 1024
_TAG = 16
_PREFIX = 7
_KEY_ID = 32
_WRAPPED = 32 + 32 + _TAG
_ADDRESS = 20
_FIXED = struct.Struct(">7sBBI7s20sH")  # magic .. sender, context length
_COUNT = struct.Struct(">H")
_SIG = SIGNATURE_SIZE
_INFO = b"ailedger seal v1"
_HPKE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_MAX_CHUNKS = 2**32
_IO_BYTES = 8 * 1024 * 1024  # bytes per read or write syscall: several chunks
_FADVISE = hasattr(os, "posix_fadvise")
_DROP_BEHIND = 64 * 1024 * 1024  # output bytes kept in the page cache behind the write
_DEPTH = 3  # output buffers in flight: one being filled, up to two being written
_TMPFILE = getattr(os, "O_TMPFILE", 0)
_PROC_FDS = "/proc/self/fd"


class SealSigner(Protocol):
    """Who seals: an Ethereum account (``0x`` + 40 hex digits) that signs 32-byte digests.

    ``sign_digest`` returns 65 bytes ``r || s || v``, an EIP-191 personal-message signature
    (``ailedger.ledger.Signer`` is one).
    """

    @property
    def address(self) -> str: ...

    def sign_digest(self, digest: bytes, /) -> bytes: ...


#: ``recover(digest, signature)`` -> the ``0x`` address that signed, or raises
#: :class:`SignatureError` (``ailedger.ledger.account.recover_digest_signer`` is one).
Recover = Callable[[bytes, bytes], str]


@dataclass(frozen=True, kw_only=True)
class SealedHeader:
    """What a sealed file says about itself: who sealed it, for what, for whom.

    Until the whole file is read and its signature checked, this is only a claim.
    """

    sender: bytes
    """The sealing account's 20-byte Ethereum address."""
    context: bytes
    """What the file is bound to, as the sealer's caller defined it."""
    recipients: tuple[str, ...]
    """Key ids (hex SHA-256 of the raw X25519 public keys) the data key is wrapped for."""
    chunk_size: int
    """Plaintext bytes per chunk."""

    @property
    def sender_address(self) -> str:
        """The sender as ``0x`` and 40 lowercase hex digits."""
        return "0x" + self.sender.hex()


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
    signer: SealSigner,
    context: bytes = b"",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> SealedHeader:
    """Encrypt ``src_path`` into ``dst_path`` so that each recipient can :func:`open` it.

    ``recipients`` are X25519 public keys (objects or raw 32 bytes); ``signer`` is the sender,
    named in the header and signing the file; ``context`` (at most :data:`MAX_CONTEXT` bytes)
    says what the file is bound to; ``chunk_size`` is in plaintext bytes. Raises
    :class:`InputError` for a bad key, an empty or duplicated recipient list, a bad chunk size or
    context, an unreadable source or an unwritable destination.
    """
    header, stream = _new_stream(recipients, chunk_size, _sender(signer), context)
    per = max(1, _IO_BYTES // chunk_size)
    with (
        _open_source(src_path) as src,
        _atomic_output(dst_path, per * (chunk_size + _TAG), hashed=True) as dst,
    ):
        dst.write_header(header)
        for data, final in _blocks(src, per * chunk_size):
            dst.submit(stream.seal_into(data, dst.buffer(), final=final))
        dst.write_direct(_sign(signer, dst.finish()))
    return _parse_header(header).public()


def open(
    src_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    private_key: X25519PrivateKey | bytes,
    *,
    recover: Recover,
    accept: Callable[[SealedHeader], None] | None = None,
) -> SealedHeader:
    """Decrypt a file sealed by :func:`seal` into ``dst_path`` with a recipient's private key.

    Steps as in the module docstring. ``accept`` sees the header before anything is decrypted
    and raises to refuse it (a sender not entitled to write, a context for something else);
    ``recover`` recovers the signer of the trailing signature. Returns the header, whose
    sender made the signature.

    Raises :class:`AccessDenied` if the file was not sealed for this key,
    :class:`VerificationError` if it was tampered with or truncated (:class:`SignatureError`
    for its signature), and :class:`InputError` for a key of the wrong type or a file that is
    not a sealed file.
    """
    with _open_source(src_path) as src:
        parsed = _read_header(src)
        header = parsed.public()
        if accept is not None:
            accept(header)
        stream = _unwrap(parsed, private_key, os.fspath(src_path))
        per = max(1, _IO_BYTES // stream.chunk_size)
        with (
            _Hasher(parsed.raw) as hasher,
            _atomic_output(dst_path, per * stream.chunk_size) as dst,
        ):
            body = _Body(src, per * (stream.chunk_size + _TAG), hasher)
            for data, final in body:
                dst.submit(stream.open_into(data, dst.buffer(), final=final))
            _check_signature(hasher.digest(), body.tail, parsed.sender, recover)
    return header


open_sealed = open


class SealWriter:
    """A writable stream that seals what is written to it into ``dst`` (the :func:`seal` format).

    ``dst`` is any object with ``write(bytes-like)`` (a file opened ``"wb"``, a socket file, an
    HTTP upload body); the header goes out at once, then each chunk as soon as the bytes after
    it arrive (STREAM must know which chunk is the last). :meth:`close` writes the last chunk
    and the signature; without it the output is truncated and will not open, so a ``with``
    block that ends in an exception leaves an output that fails authentication rather than a
    short valid one. Memory: one chunk of pending input and one block of output, whatever is
    written.
    """

    def __init__(
        self,
        dst: _Writable,
        recipients: Sequence[X25519PublicKey | bytes],
        *,
        signer: SealSigner,
        context: bytes = b"",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        header, self._stream = _new_stream(recipients, chunk_size, _sender(signer), context)
        self.header = _parse_header(header).public()
        self._signer = signer
        self._hasher = _Hasher(header)
        self._dst = dst
        self._chunk = chunk_size
        self._pending = memoryview(bytearray(chunk_size))
        self._held = 0
        self._per = max(1, _IO_BYTES // chunk_size)
        self._outs = [memoryview(bytearray(self._per * (chunk_size + _TAG))) for _ in range(2)]
        self._turn = 0
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
        """Seal the held bytes as the last chunk, then sign. Idempotent."""
        if not self._closed:
            self._closed = True
            try:
                self._emit(self._pending[: self._held], final=True)
                _write_all(self._dst, _sign(self._signer, self._hasher.digest()))
            finally:
                self._hasher.close()

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
            self._hasher.close()

    def __del__(self) -> None:
        hasher = getattr(self, "_hasher", None)
        if hasher is not None:
            hasher.stop()

    def _emit(self, data: memoryview, *, final: bool) -> None:
        # The hasher thread hashes one buffer while the next is encrypted into the other.
        self._hasher.wait(keep=1)
        buf = self._outs[self._turn]
        self._turn = 1 - self._turn
        out = buf[: self._stream.seal_into(data, buf, final=final)]
        self._hasher.submit(out)
        _write_all(self._dst, out)


class OpenReader:
    """A readable stream of the plaintext of a sealed stream ``src`` (the :func:`seal` format).

    ``src`` is any object with ``readinto`` (a file opened ``"rb"``, a socket file), or the
    sealed bytes themselves (``bytes``, ``bytearray``, ``memoryview``: read in place, without a
    copy; they must not change while the reader is in use). The header is read, handed to
    ``accept`` and the data key unwrapped on construction (:class:`AccessDenied`,
    :class:`InputError` as for :func:`open`); :attr:`header` holds it. Each chunk is
    authenticated before its bytes are returned, but a truncation, and whether the sender
    signed, is only known at the end: :meth:`read` raises :class:`VerificationError` (or
    :class:`SignatureError`) there, and a caller must then discard what it already read.
    :func:`open` does that for files (it renames the output into place only after the end).
    """

    def __init__(
        self,
        src: _Readable | bytes | bytearray | memoryview,
        private_key: X25519PrivateKey | bytes,
        *,
        recover: Recover,
        accept: Callable[[SealedHeader], None] | None = None,
    ) -> None:
        if isinstance(src, bytes | bytearray | memoryview):
            src = _MemorySource(src)
        parsed = _read_header(src)
        self.header = parsed.public()
        if accept is not None:
            accept(self.header)
        self._stream = _unwrap(parsed, private_key, "the sealed stream")
        self._sender = parsed.sender
        self._recover = recover
        self._hasher = _Hasher(parsed.raw)
        per = max(1, _IO_BYTES // self._stream.chunk_size)
        self._body = _Body(src, per * (self._stream.chunk_size + _TAG), self._hasher)
        self._blocks = iter(self._body)
        self._out = memoryview(bytearray(per * self._stream.chunk_size))
        self._ready = self._out[:0]
        self._done = False

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Fill ``buffer`` with the next plaintext bytes; return how many (0 at the end)."""
        try:
            return self._readinto(memoryview(buffer).cast("B"))
        except BaseException:
            self._hasher.close()
            raise

    def _readinto(self, target: memoryview) -> int:
        while not self._ready and not self._done:
            data, final = next(self._blocks)
            self._done = final
            if len(target) >= len(self._out):  # a whole block fits: decrypt in place
                n = self._stream.open_into(data, target, final=final)
                self._check_end()
                return n
            self._ready = self._out[: self._stream.open_into(data, self._out, final=final)]
            self._check_end()
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
        self._hasher.close()

    def __del__(self) -> None:
        hasher = getattr(self, "_hasher", None)
        if hasher is not None:
            hasher.stop()

    def _check_end(self) -> None:
        if self._done:
            try:
                digest = self._hasher.digest()
            finally:
                self._hasher.close()
            _check_signature(digest, self._body.tail, self._sender, self._recover)


def recipients(src_path: str | os.PathLike[str]) -> list[str]:
    """Return the key ids (hex) a sealed file is wrapped for, reading only its header."""
    with _open_source(src_path) as src:
        return list(_read_header(src).public().recipients)


def read_header(src_path: str | os.PathLike[str]) -> SealedHeader:
    """Return what a sealed file's header claims (unchecked: :func:`open` checks it)."""
    with _open_source(src_path) as src:
        return _read_header(src).public()


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
    recipients: Sequence[X25519PublicKey | bytes], chunk_size: int, sender: bytes, context: bytes
) -> tuple[bytes, _Stream]:
    """Check the arguments of a seal; return the header and the stream state."""
    if isinstance(chunk_size, bool) or not _MIN_CHUNK <= chunk_size <= _MAX_CHUNK:
        raise InputError(
            f"chunk_size must be between {_MIN_CHUNK} and {_MAX_CHUNK} bytes, got {chunk_size!r}"
        )
    if not isinstance(context, bytes) or len(context) > MAX_CONTEXT:
        raise InputError(f"the context must be at most {MAX_CONTEXT} bytes")
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
    header = bytearray(
        _FIXED.pack(MAGIC, VERSION, _SUITE_ID, chunk_size, prefix, sender, len(context))
    )
    header += context + _COUNT.pack(len(keys))
    for kid, pk in zip(ids, keys, strict=True):
        try:
            wrapped = _HPKE.encrypt(data_key, pk, info=_INFO + kid)
        except ValueError as exc:
            raise InputError(f"recipient {kid.hex()} is not a usable X25519 key: {exc}") from exc
        if len(wrapped) != _WRAPPED:
            raise AssertionError("unexpected HPKE output length")
        header += kid + wrapped
    return bytes(header), _Stream(data_key, prefix, bytes(header), chunk_size)


def _sender(signer: SealSigner) -> bytes:
    """The signer's address as 20 bytes."""
    address = getattr(signer, "address", None)
    if not isinstance(address, str) or len(address) != 42 or not address.startswith("0x"):
        raise InputError("the signer needs an Ethereum address (0x and 40 hex digits)")
    try:
        return bytes.fromhex(address[2:])
    except ValueError as exc:
        raise InputError(f"the signer's address {address!r} is not hex") from exc


def _sign(signer: SealSigner, digest: bytes) -> bytes:
    signature = signer.sign_digest(digest)
    if not isinstance(signature, bytes) or len(signature) != _SIG:
        raise InputError(f"the signer returned no {_SIG}-byte signature")
    return signature


def _check_signature(digest: bytes, tail: bytes, sender: bytes, recover: Recover) -> None:
    """Step 5: the trailer is a signature of ``digest`` by ``sender``."""
    if len(tail) != _SIG:
        raise SignatureError("the sealed file ends without its sender's signature")
    signer = recover(digest, tail)
    if signer.lower() != "0x" + sender.hex():
        raise SignatureError(
            f"the sealed file is not signed by its sender 0x{sender.hex()}: altered, or sealed "
            "by someone else"
        )


class _Parsed(NamedTuple):
    raw: bytes
    chunk_size: int
    prefix: bytes
    sender: bytes
    context: bytes
    entries: dict[bytes, bytes]

    def public(self) -> SealedHeader:
        return SealedHeader(
            sender=self.sender,
            context=self.context,
            recipients=tuple(k.hex() for k in self.entries),
            chunk_size=self.chunk_size,
        )


def _unwrap(parsed: _Parsed, private_key: X25519PrivateKey | bytes, name: str) -> _Stream:
    """Unwrap the data key of a parsed header with ``private_key`` (step 3)."""
    sk = _private_key(private_key)
    my_id = _key_id(sk.public_key())
    entries = parsed.entries
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
    return _Stream(data_key, parsed.prefix, parsed.raw, parsed.chunk_size)


def _read_header(src: _Readable) -> _Parsed:
    """Step 1: read and parse a sealed header from ``src``."""
    fixed = _read_exact(src, _FIXED.size)
    if len(fixed) < len(MAGIC) + 1 or fixed[: len(MAGIC)] != MAGIC:
        raise InputError("not an ailedger sealed file (bad magic)")
    version = fixed[len(MAGIC)]
    if version == 1:
        raise SignatureError(
            "this sealed file has format version 1, which names no resource and no sender and "
            "is not signed: it is no longer opened; ask its sender to seal it again"
        )
    if version != VERSION:
        raise InputError(f"unsupported sealed-file version {version}")
    if len(fixed) < _FIXED.size:
        raise VerificationError("the sealed file is truncated inside its header")
    context_len = _FIXED.unpack(fixed)[-1]
    if context_len > MAX_CONTEXT:
        raise VerificationError("the sealed file's header is corrupt (context length)")
    middle = _read_exact(src, context_len + _COUNT.size)
    if len(middle) < context_len + _COUNT.size:
        raise VerificationError("the sealed file is truncated inside its header")
    (count,) = _COUNT.unpack(middle[context_len:])
    body = _read_exact(src, count * (_KEY_ID + _WRAPPED))
    if len(body) < count * (_KEY_ID + _WRAPPED):
        raise VerificationError("the sealed file is truncated inside its header")
    return _parse_header(fixed + middle + body)


def _parse_header(raw: bytes) -> _Parsed:
    """Parse a complete header (its length already checked by the caller)."""
    _, _, suite, chunk_size, prefix, sender, context_len = _FIXED.unpack_from(raw)
    context = raw[_FIXED.size : _FIXED.size + context_len]
    (count,) = _COUNT.unpack_from(raw, _FIXED.size + context_len)
    if suite != _SUITE_ID or not _MIN_CHUNK <= chunk_size <= _MAX_CHUNK or count == 0:
        raise VerificationError("the sealed file's header is corrupt (suite, chunk size or count)")
    entries: dict[bytes, bytes] = {}
    step = _KEY_ID + _WRAPPED
    start = _FIXED.size + context_len + _COUNT.size
    for off in range(start, len(raw), step):
        entries.setdefault(raw[off : off + _KEY_ID], raw[off + _KEY_ID : off + step])
    return _Parsed(raw, chunk_size, prefix, sender, context, entries)


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
    bufs = (memoryview(bytearray(size)), memoryview(bytearray(size)))
    cur, n = 0, _fill(src, bufs[0])
    while True:
        more = _fill(src, bufs[1 - cur]) if n == size else 0
        yield bufs[cur][:n], not more
        if not more:
            return
        cur, n = 1 - cur, more


class _Body:
    """The chunks of a sealed input in blocks of ``size`` bytes, the signature held back.

    Iterating yields ``(block, final)`` like :func:`_blocks`, over everything but the last
    :data:`SIGNATURE_SIZE` bytes of the input, which are in :attr:`tail` once ``final`` was
    yielded (shorter if the input is). Each buffer holds ``size`` bytes and the signature's
    worth more, so the end is known one block ahead without a copy of the block. Each block
    goes to ``hasher`` as it is yielded (hashed while the caller decrypts it), and a buffer is
    refilled only once the hasher is done with it.
    """

    def __init__(self, src: _Readable, size: int, hasher: _Hasher) -> None:
        self.size = size
        self.tail = b""
        self._src = src
        self._hasher = hasher

    def __iter__(self) -> Generator[tuple[memoryview, bool], None, None]:
        src, size, hasher = self._src, self.size, self._hasher
        if isinstance(src, _MemorySource):
            view = src.take(len(src))
            end = max(len(view) - _SIG, 0)
            self.tail = bytes(view[end:])
            hasher.submit(view[:end])  # the bytes stay put: hash them all at once
            for start in range(0, max(end, 1), size):
                yield view[start : min(start + size, end)], start + size >= end
            return
        bufs = (memoryview(bytearray(size + _SIG)), memoryview(bytearray(size + _SIG)))
        cur, n = 0, _fill(src, bufs[0])
        while True:
            if n < size + _SIG:  # the input ends in this buffer
                cut = max(n - _SIG, 0)
                self.tail = bytes(bufs[cur][cut:n])
                hasher.submit(bufs[cur][:cut])
                yield bufs[cur][:cut], True
                return
            nxt = bufs[1 - cur]
            hasher.wait()  # done with the block in ``nxt``, yielded last time
            nxt[:_SIG] = bufs[cur][size:]
            more = _fill(src, nxt[_SIG:])
            hasher.submit(bufs[cur][:size])
            if not more:
                self.tail = bytes(nxt[:_SIG])
                yield bufs[cur][:size], True
                return
            yield bufs[cur][:size], False
            cur, n = 1 - cur, _SIG + more


class _Hasher:
    """SHA-256 of ``first`` and then of the blocks submitted, in order, on a second thread.

    ``hashlib`` releases the GIL while it hashes a large buffer, so hashing a block overlaps
    decrypting or encrypting the next one. A submitted view must stay unchanged until
    :meth:`wait` says the hasher is done with it. :meth:`close` stops the thread (idempotent).
    """

    def __init__(self, first: bytes) -> None:
        self._hash = hashlib.sha256(first)
        self._todo: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._pending = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ailedger-hasher", daemon=True)
        self._thread.start()

    def submit(self, view: memoryview) -> None:
        self._pending += 1
        self._todo.put(view)

    def wait(self, *, keep: int = 0) -> None:
        """Return once at most ``keep`` submitted blocks are still to be hashed."""
        while self._pending > keep:
            self._done.get()
            self._pending -= 1

    def digest(self) -> bytes:
        """The SHA-256 of everything submitted (waits for it)."""
        self.wait()
        return self._hash.digest()

    def close(self) -> None:
        """Stop the thread and wait for it."""
        self.stop()
        self._thread.join()

    def stop(self) -> None:
        """Tell the thread to stop once it has hashed what was submitted."""
        if not self._closed:
            self._closed = True
            self._todo.put(None)

    def __enter__(self) -> _Hasher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _run(self) -> None:
        while (view := self._todo.get()) is not None:
            self._hash.update(view)
            self._done.put(True)


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

    def __len__(self) -> int:
        """Bytes left to read."""
        return len(self._view) - self._pos


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
def output_file(path: str | os.PathLike[str]) -> Iterator[io.BufferedWriter]:
    """A new binary file that becomes ``path`` only if the ``with`` body ends without error.

    Where the OS allows (Linux ``O_TMPFILE``), the file has no name until then: a process
    killed midway (SIGKILL) leaves nothing behind. Elsewhere it is ``.NAME.RANDOM.part`` beside
    ``path``, from ``mkstemp``. Either way it is created exclusively with mode 0600 (never
    through a planted file or symbolic link), fsynced, given an unpredictable name created
    exclusively and renamed over ``path``; it is removed on every failure. Raises
    :class:`InputError` when the folder is not writable.
    """
    target = os.path.abspath(os.fspath(path))
    with _output_fd(target) as fd, io.open(fd, "wb", closefd=False) as fh:  # noqa: UP020
        yield fh


@contextmanager
def _output_fd(target: str) -> Iterator[int]:
    """The file descriptor behind :func:`output_file` (``target`` absolute)."""
    folder, name = os.path.split(target)
    fd, tmp = _new_output(folder, name)
    try:
        try:
            yield fd
            os.fsync(fd)
            if tmp is None:
                tmp = _name_output(fd, folder, name)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        if tmp is not None:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


def _new_output(folder: str, name: str) -> tuple[int, str | None]:
    """An unnamed file in ``folder`` (``O_TMPFILE``, name None), else a ``mkstemp`` one."""
    if _TMPFILE and os.path.isdir(_PROC_FDS):
        try:
            return os.open(folder, _TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600), None
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise InputError(f"cannot write into {folder!r}: {exc.strerror}") from exc
    try:
        return tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    except OSError as exc:
        raise InputError(f"cannot write into {folder!r}: {exc.strerror}") from exc


def _name_output(fd: int, folder: str, name: str) -> str:
    """Give the unnamed file ``fd`` a fresh unpredictable name in ``folder`` (``linkat`` of
    ``/proc/self/fd/N``, which fails rather than replace or follow anything there)."""
    proc = os.open(_PROC_FDS, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for _ in range(100):
            tmp = os.path.join(folder, f".{name}.{secrets.token_hex(8)}.part")
            try:
                os.link(str(fd), tmp, src_dir_fd=proc, follow_symlinks=True)
                return tmp
            except FileExistsError:
                continue
    finally:
        os.close(proc)
    raise InputError(f"no free temporary name in {folder!r}")


@contextmanager
def _atomic_output(
    path: str | os.PathLike[str], block: int, *, hashed: bool = False
) -> Iterator[_BackgroundWriter]:
    """:func:`output_file` for ``path``, written by a :class:`_BackgroundWriter` of ``block``
    bytes per buffer (hashing what it writes if ``hashed``)."""
    target = os.path.abspath(os.fspath(path))
    with _output_fd(target) as fd:
        writer = _BackgroundWriter(fd, block, target, hashed=hashed)
        try:
            yield writer
        finally:
            writer.close()


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

    def __init__(self, fd: int, block: int, name: str, *, hashed: bool = False) -> None:
        self._fd = fd
        self._name = name
        self._hasher = hashlib.sha256() if hashed else None
        self._closed = False
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
        """Wait for every queued block; raise the thread's write error, if any. Idempotent."""
        if not self._closed:
            self._closed = True
            self._todo.put(None)
            self._thread.join()
        self._raise()

    def finish(self) -> bytes:
        """:meth:`close`, then return the SHA-256 of everything written (if ``hashed``)."""
        self.close()
        if self._hasher is None:
            raise AssertionError("finish() on a writer that does not hash")
        return self._hasher.digest()

    def write_direct(self, data: bytes) -> None:
        """Write ``data`` after the queued blocks, from this thread (after :meth:`finish`)."""
        try:
            _write_all(_FdWriter(self._fd), data)
        except OSError as exc:
            raise InputError(f"cannot write {self._name!r}: {exc.strerror}") from exc

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
                    if self._hasher is not None:
                        self._hasher.update(view)
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


class _FdWriter:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return os.write(self._fd, data)
