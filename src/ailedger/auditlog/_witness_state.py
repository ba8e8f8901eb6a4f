"""A witness's state and its add-checkpoint rules, after C2SP tlog-witness (no HTTP here).

The witness keeps, for each log it follows, the latest checkpoint it cosigned (in SQLite,
``synchronous=FULL``, so a reply is sent only once the new state is on disk) and cosigns a new
checkpoint only when a consistency proof shows it extends that one. Its Ed25519 key is made on
first use in the state folder (``witness.key``, mode 0600, folder 0700).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog import _merkle
from ailedger.auditlog._cosignature import (
    ALG_COSIGNATURE_V1,
    WitnessVerifier,
    cosign,
    split_note,
    witness_key_id,
)
from ailedger.auditlog.checkpoint import MAX_TREE_SIZE, Checkpoint
from ailedger.auditlog.note import NoteVerifier, check_key_name, open_note, strict_b64decode
from ailedger.errors import (
    InputError,
    SignatureError,
    VerificationError,
    WorkspaceError,
    WorkspaceLocked,
)

__all__ = [
    "MAX_BODY",
    "MAX_PROOF_LINES",
    "SIZE_CONTENT_TYPE",
    "Witness",
    "WitnessReply",
    "load_witness_key",
]

#: Largest add-checkpoint body accepted: 63 proof lines and a note of 100 signatures fit easily.
MAX_BODY = 64 * 1024
#: tlog-witness: a client MUST NOT send more than 63 consistency proof lines.
MAX_PROOF_LINES = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"
KEY_FILE = "witness.key"
STATE_FILE = "witness.sqlite"
#: Refused but validly signed checkpoints kept per log as evidence of misbehaviour.
MAX_EVIDENCE = 100

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latest (
    origin TEXT PRIMARY KEY, size TEXT NOT NULL, root BLOB NOT NULL, note BLOB NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY, origin TEXT NOT NULL, old_size TEXT NOT NULL, note BLOB NOT NULL,
    reason TEXT NOT NULL, at REAL NOT NULL
);
"""
_PRIVATE_PREFIX = "PRIVATE+KEY+"


@dataclass(frozen=True)
class WitnessReply:
    """What the witness answers: an HTTP status, a content type and a body."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"

    @property
    def ok(self) -> bool:
        return self.status == 200


class _Refuse(Exception):
    def __init__(self, status: int, message: str, *, content_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.content_type = content_type


def load_witness_key(
    state_dir: Path, *, name: str | None = None, create: bool = True
) -> tuple[str, Ed25519PrivateKey]:
    """The witness's key name and Ed25519 key from ``state_dir``, made on first use.

    The file holds ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x04 || seed)>``. A ``name``
    that differs from the stored one is refused; the default name is derived from the key.
    """
    path = state_dir / KEY_FILE
    if not path.exists():
        if not create:
            raise WorkspaceError(f"no witness key in {state_dir}: run `ailedger witness serve`")
        _make_state_dir(state_dir)
        key = Ed25519PrivateKey.generate()
        raw = key.public_key().public_bytes_raw()
        chosen = name or f"ailedger.local/witness/{hashlib.sha256(raw).hexdigest()[:16]}"
        check_key_name(chosen)
        seed = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + key.private_bytes_raw()).decode()
        line = f"{_PRIVATE_PREFIX}{chosen}+{witness_key_id(chosen, raw):08x}+{seed}\n"
        _create_exclusive(path, line.encode())
    try:
        text = path.read_bytes()[:4096].decode("ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkspaceError(f"cannot read the witness key {path}: {exc}") from exc
    parts = text.removeprefix(_PRIVATE_PREFIX).split("+", 2)
    if not text.startswith(_PRIVATE_PREFIX) or len(parts) != 3:
        raise WorkspaceError(f"{path} is not a witness key file")
    stored_name, hex_id, encoded = parts
    try:
        seed_bytes = strict_b64decode(encoded, "witness key")
        if len(seed_bytes) != 33 or seed_bytes[0] != ALG_COSIGNATURE_V1:
            raise InputError("not an Ed25519 cosignature key")
        key = Ed25519PrivateKey.from_private_bytes(seed_bytes[1:])
        if witness_key_id(stored_name, key.public_key()) != int(hex_id, 16):
            raise InputError("key ID does not match")
    except (InputError, ValueError) as exc:
        raise WorkspaceError(f"{path} is not a valid witness key: {exc}") from exc
    if name is not None and name != stored_name:
        raise InputError(f"the witness in {state_dir} is named {stored_name!r}, not {name!r}")
    return stored_name, key


class Witness:
    """A tlog-witness for the logs in ``follow`` (origin -> the log's trusted note keys).

    Open it with :meth:`open` (which locks the state folder against a second witness process);
    :meth:`add_checkpoint` implements the add-checkpoint call and never raises for bad input.
    """

    def __init__(
        self,
        *,
        state_dir: Path,
        name: str,
        key: Ed25519PrivateKey,
        follow: Mapping[str, Sequence[NoteVerifier]],
        conn: sqlite3.Connection,
        lock_fd: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state_dir = state_dir
        self.name = name
        self._key = key
        self.verifier = WitnessVerifier.from_public_key(name, key.public_key())
        self.follow = {origin: tuple(keys) for origin, keys in follow.items()}
        self._conn = conn
        self._lock_fd = lock_fd
        self._lock = threading.Lock()
        self._clock = clock

    @classmethod
    def open(
        cls,
        state_dir: Path,
        follow: Mapping[str, Iterable[NoteVerifier]],
        *,
        name: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Witness:
        """Open (making it on first use) the witness whose state lives in ``state_dir``."""
        if not follow:
            raise InputError("a witness must follow at least one log (--follow ORIGIN=KEY)")
        for origin, keys in follow.items():
            Checkpoint(origin=origin, size=0, root_hash=_merkle.EMPTY_ROOT)
            if not list(keys):
                raise InputError(f"no verifier key given for log {origin!r}")
        _make_state_dir(state_dir)
        lock_fd = os.open(state_dir / "witness.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise WorkspaceLocked(f"another witness is serving the state in {state_dir}") from None
        try:
            key_name, key = load_witness_key(state_dir, name=name)
            db = state_dir / STATE_FILE
            if not db.exists():
                _create_exclusive(db, b"")
            conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            os.close(lock_fd)
            raise WorkspaceError(f"{state_dir / STATE_FILE} is not a witness state: {exc}") from exc
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(
            state_dir=state_dir,
            name=key_name,
            key=key,
            follow={origin: tuple(keys) for origin, keys in follow.items()},
            conn=conn,
            lock_fd=lock_fd,
            clock=clock,
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def __enter__(self) -> Witness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def latest(self, origin: str) -> tuple[int, bytes] | None:
        """The latest cosigned checkpoint of ``origin`` (size and cosigned note), if any."""
        with self._lock:
            row = self._conn.execute(
                "SELECT size, note FROM latest WHERE origin = ?", (origin,)
            ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def latest_by_hash(self, origin_hash_hex: str) -> bytes | None:
        """The cosigned note of the followed log whose origin's SHA-256 is ``origin_hash_hex``."""
        for origin in self.follow:
            if hashlib.sha256(origin.encode()).hexdigest() == origin_hash_hex:
                found = self.latest(origin)
                return None if found is None else found[1]
        return None

    def evidence(self, origin: str) -> list[tuple[int, bytes, str]]:
        """Refused, validly signed checkpoints of ``origin``: (old size, note, reason)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT old_size, note, reason FROM evidence WHERE origin = ? ORDER BY id",
                (origin,),
            ).fetchall()
        return [(int(r[0]), bytes(r[1]), str(r[2])) for r in rows]

    def add_checkpoint(self, body: bytes) -> WitnessReply:
        """Answer an add-checkpoint request body; see :meth:`_add` for the steps."""
        try:
            line = self._add(body)
        except _Refuse as refusal:
            return WitnessReply(
                status=refusal.status,
                body=(str(refusal) + "\n").encode(),
                content_type=refusal.content_type or "text/plain; charset=utf-8",
            )
        return WitnessReply(status=200, body=line.encode())

    def _add(self, body: bytes) -> str:
        """Steps of tlog-witness add-checkpoint; each refusal carries the spec's status code.

        1. The body is at most :data:`MAX_BODY` bytes of UTF-8: ``old <size>``, at most 63
           base64 proof hashes, an empty line, then a signed checkpoint (else 400).
        2. The checkpoint's origin is a followed log (else 404).
        3. A trusted key of that log signed it, and every trusted signature verifies (else 403).
        4. The old size is at most the checkpoint's size (else 400).
        5. Atomically with 8.: the old size is the size this witness last cosigned for the log,
           or 0 (else 409, with that size as a ``text/x.tlog.size`` body).
        6. A checkpoint of size 0 has the empty tree's root (else 422).
        7. From old size 0 the proof is empty; otherwise it proves the stored checkpoint is a
           prefix of the new one, and at equal sizes the roots are equal (else 422).
        8. The checkpoint is stored, on disk, before the cosignature is returned.
        """
        # 1.
        if len(body) > MAX_BODY:
            raise _Refuse(413, f"request body larger than {MAX_BODY} bytes")
        old, proof, note = _parse_request(body)
        try:
            text, lines = split_note(note)
            checkpoint = Checkpoint.parse(text)
        except InputError as exc:
            raise _Refuse(400, f"malformed checkpoint: {exc}") from exc
        # 2.
        keys = self.follow.get(checkpoint.origin)
        if keys is None:
            raise _Refuse(404, f"unknown log {checkpoint.origin!r}")
        # 3.
        try:
            open_note(note, keys)
        except SignatureError as exc:
            raise _Refuse(403, f"checkpoint not signed by the log: {exc}") from exc
        except InputError as exc:
            raise _Refuse(400, f"malformed checkpoint: {exc}") from exc
        # 4.
        if old > checkpoint.size:
            raise _Refuse(400, f"old size {old} is larger than the checkpoint size")
        trusted = {(k.name, k.key_id) for k in keys}
        log_lines = "".join(line for name, kid, _, line in lines if (name, kid) in trusted)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    "SELECT size, root FROM latest WHERE origin = ?", (checkpoint.origin,)
                ).fetchone()
                stored_size, stored_root = (
                    (0, _merkle.EMPTY_ROOT) if row is None else (int(row[0]), bytes(row[1]))
                )
                # 5.
                if old != stored_size:
                    raise _Refuse(409, str(stored_size), content_type=SIZE_CONTENT_TYPE)
                try:
                    # 6.
                    if checkpoint.size == 0 and checkpoint.root_hash != _merkle.EMPTY_ROOT:
                        raise VerificationError("a checkpoint of size 0 must have the empty root")
                    # 7.
                    if old == 0 and proof:
                        raise VerificationError("the proof from size 0 must be empty")
                    if old > 0:
                        _merkle.verify_consistency(
                            proof, old, checkpoint.size, stored_root, checkpoint.root_hash
                        )
                except VerificationError as exc:
                    self._keep_evidence(checkpoint.origin, old, note, str(exc))
                    self._conn.execute("COMMIT")
                    raise _Refuse(
                        422, f"not consistent with the checkpoint cosigned at size {old}: {exc}"
                    ) from exc
                # 8.
                timestamp = max(int(self._clock()), 1)
                line = cosign(checkpoint, self.name, self._key, timestamp=timestamp)
                stored_note = (text + "\n" + log_lines + line).encode()
                self._conn.execute(
                    "INSERT INTO latest (origin, size, root, note, updated) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, "
                    "root = excluded.root, note = excluded.note, updated = excluded.updated",
                    (
                        checkpoint.origin,
                        str(checkpoint.size),
                        checkpoint.root_hash,
                        stored_note,
                        time.time(),
                    ),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        return line

    def _keep_evidence(self, origin: str, old: int, note: bytes, reason: str) -> None:
        self._conn.execute(
            "INSERT INTO evidence (origin, old_size, note, reason, at) VALUES (?, ?, ?, ?, ?)",
            (origin, str(old), note, reason[:500], time.time()),
        )
        self._conn.execute(
            "DELETE FROM evidence WHERE origin = ? AND id NOT IN "
            "(SELECT id FROM evidence WHERE origin = ? ORDER BY id DESC LIMIT ?)",
            (origin, origin, MAX_EVIDENCE),
        )


def _parse_request(body: bytes) -> tuple[int, list[bytes], bytes]:
    """Split an add-checkpoint body into the old size, the proof hashes and the note."""
    head, sep, note = body.partition(b"\n\n")
    if not sep:
        raise _Refuse(400, "the body needs an empty line between the proof and the checkpoint")
    lines = head.split(b"\n")
    if len(lines) > 1 + MAX_PROOF_LINES:
        raise _Refuse(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
    first = lines[0]
    digits = first[4:]
    if (
        not first.startswith(b"old ")
        or not digits.isdigit()
        or not digits.isascii()
        or (digits.startswith(b"0") and digits != b"0")
        or len(digits) > 20
    ):
        raise _Refuse(400, "the first line must be `old <size>` in decimal")
    old = int(digits)
    if old > MAX_TREE_SIZE:
        raise _Refuse(400, "old size is beyond 2**64-1")
    proof = []
    for number, line in enumerate(lines[1:], 1):
        try:
            value = strict_b64decode(line.decode("ascii"), f"proof line {number}")
        except (InputError, UnicodeDecodeError) as exc:
            raise _Refuse(400, f"proof line {number} is not base64") from exc
        if len(value) != 32:
            raise _Refuse(400, f"proof line {number} is not a 32-byte hash")
        proof.append(value)
    return old, proof, note


def _make_state_dir(state_dir: Path) -> None:
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if state_dir.stat().st_mode & 0o077:
            os.chmod(state_dir, 0o700)
    except OSError as exc:
        raise WorkspaceError(f"cannot use {state_dir} as the witness state: {exc}") from exc


def _create_exclusive(path: Path, data: bytes) -> None:
    """Create ``path`` (0600) with ``data``, durably; if another process won, keep theirs."""
    tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
