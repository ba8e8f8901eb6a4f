"""Verification as an outsider: a log export, the log's public key and a chain.

The auditor trusts only the verifier key and the chain. From a C2SP tlog-tiles export (a
folder or a URL) it:

1. opens the latest ``checkpoint`` with the verifier key (C2SP signed-note), and every older
   signed checkpoint listed under ``ailedger/checkpoints``, plus any the auditor kept itself;
2. recomputes every leaf hash from the entry bundles and every tile from those leaves, and
   compares each with the published tiles (so a modified, deleted, inserted or reordered entry
   is found, with its index);
3. recomputes the root at every checkpoint's size and every on-chain anchor's size from the
   same sequence of entries: equal roots at all of them prove each checkpoint and anchor is a
   prefix of one history (consistency), and a checkpoint or anchor that disagrees names where
   history was rewritten, truncated or forked;
4. optionally checks given entries and tlog-proof receipts against the recomputed tree.

It raises :class:`VerificationError` (or a subclass) naming the first disagreement, and returns
a :class:`VerifyReport` when everything holds. Memory stays flat: one partial tile per level.

The anchors it is given must be those of the log's operator only (see
:func:`ailedger.auditlog.anchoring.chain_anchors`); :func:`read_binding` reads, from the export,
the operator's account and registry as signed by the log's own key. Every file of an export is
read bounded in size by what it is (:func:`limit_for`: a signed note 16 KiB, a tile 8 KiB, the
checkpoint listing 1 MiB and at most :data:`MAX_LISTED_CHECKPOINTS` sizes, an entry bundle 64 MiB),
over HTTP within a per-file deadline and an overall one for the whole export, and its JSON
parsed with limits. Listed checkpoints are fetched and opened one at a time, stopping at the
first missing or bad one, so memory and time do not grow with what a hostile listing claims.

An export older than an anchor of its operator (a mirror not yet updated, or a log rolled back
after anchoring: the two look alike without the newer entries) is checked in full against
everything it covers and then refused with :class:`OlderThanAnchor`, which says so; with
``allow_older`` it passes as a verified prefix, the newer anchors listed as unchecked.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ailedger._input import parse_json, read_bounded
from ailedger.auditlog import _merkle
from ailedger.auditlog.binding import BINDING_PATH, AnchorBinding, open_binding
from ailedger.auditlog.checkpoint import MAX_TREE_SIZE, Checkpoint, open_checkpoint
from ailedger.auditlog.note import NoteVerifier
from ailedger.auditlog.proof import Receipt, verify_receipt
from ailedger.errors import (
    InputError,
    NodeUnavailable,
    RootMismatch,
    SignatureError,
    VerificationError,
)

__all__ = [
    "MAX_LISTED_CHECKPOINTS",
    "AnchorClaim",
    "DirectorySource",
    "HttpSource",
    "LogSource",
    "OlderThanAnchor",
    "Source",
    "VerifyReport",
    "fetch_capped",
    "limit_for",
    "read_binding",
    "verify_export",
    "verify_stored",
]

_W = _merkle.TILE_WIDTH
_H = 32
#: the most bytes one file of an export may hold (an entry bundle of 256 large entries)
MAX_FILE_BYTES = 64 * 1024 * 1024
#: a signed note (checkpoint with cosignatures, binding): a few hundred bytes in practice
MAX_NOTE_BYTES = 16 * 1024
#: ``ailedger/checkpoints.json``: sizes listed, and its bytes
MAX_LISTED_CHECKPOINTS = 10_000
MAX_LISTING_BYTES = 1024 * 1024
#: the default overall deadline for reading an export over HTTP, in seconds
EXPORT_DEADLINE = 600.0


def limit_for(path: str) -> int:
    """The most bytes the export file at ``path`` may hold, by what it is."""
    if path in ("checkpoint", BINDING_PATH) or path.startswith("ailedger/checkpoints/"):
        return MAX_NOTE_BYTES
    if path == "ailedger/checkpoints.json":
        return MAX_LISTING_BYTES
    if path.startswith("tile/") and not path.startswith("tile/entries/"):
        return _W * _H
    return MAX_FILE_BYTES


def fetch_capped(source: Source, path: str) -> bytes | None:
    """``source.fetch(path)``, refusing (:class:`InputError`) more than :func:`limit_for` bytes.

    Our own sources stop reading at the cap; any other source is checked after the fact, but
    for the operator's own stored log (:class:`LogSource`, ``verify --deep``), which is not
    outside input and may hold more checkpoints than an export listing is allowed.
    """
    limit = limit_for(path)
    if isinstance(source, LogSource):
        return source.fetch(path)
    if isinstance(source, (DirectorySource, HttpSource)):
        data = source.fetch(path, limit=limit)
    else:
        data = source.fetch(path)
    if data is not None and len(data) > limit:
        raise InputError(f"{source}: {path} is larger than {limit} bytes")
    return data


class OlderThanAnchor(VerificationError):
    """The export verifies, but its operator has anchored a larger tree than it holds."""


class Source(Protocol):
    """Where an export is read from: ``fetch(path)`` returns the bytes, or None if absent."""

    def fetch(self, path: str) -> bytes | None: ...


class DirectorySource:
    """An export in a local folder; no file is read past ``max_bytes``."""

    def __init__(self, root: Path, *, max_bytes: int = MAX_FILE_BYTES) -> None:
        if not root.is_dir():
            raise InputError(f"no log export at {root}")
        self.root = root
        self.max_bytes = max_bytes

    def fetch(self, path: str, *, limit: int | None = None) -> bytes | None:
        """The file at ``path``, at most ``limit`` (default ``max_bytes``) bytes; None if absent."""
        cap = self.max_bytes if limit is None else min(limit, self.max_bytes)
        try:
            with (self.root / path).open("rb") as file:
                return read_bounded(file, limit=cap, what=f"{self.root / path}")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise InputError(f"cannot read {self.root / path}: {exc.strerror}") from exc

    def __str__(self) -> str:
        return str(self.root)


class HttpSource:
    """An export served by any static web server at ``url``.

    Each file is read in at most ``deadline`` seconds in all (a peer that drips bytes slowly
    cannot hold the verifier), with ``timeout`` seconds per network operation, and no file
    past ``max_bytes`` (or the ``limit`` given to :meth:`fetch`). Every fetch after ``total``
    seconds from the first one fails (:class:`NodeUnavailable`): the whole export is read
    within it.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        deadline: float = 60.0,
        max_bytes: int = MAX_FILE_BYTES,
        total: float = EXPORT_DEADLINE,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise InputError(f"not an http(s) URL: {url!r}")
        if not total > 0:
            raise InputError(f"the deadline must be a positive number of seconds, got {total}")
        self.url = url.rstrip("/") + "/"
        self.timeout = timeout
        self.deadline = deadline
        self.max_bytes = max_bytes
        self.total = total
        self._ends: float | None = None

    def fetch(self, path: str, *, limit: int | None = None) -> bytes | None:
        """The file at ``path``, at most ``limit`` (default ``max_bytes``) bytes; None on 404."""
        what = f"{self.url}{path}"
        now = time.monotonic()
        if self._ends is None:
            self._ends = now + self.total
        if now >= self._ends:
            raise NodeUnavailable(self._late())
        ends = min(now + self.deadline, self._ends)
        limit = self.max_bytes if limit is None else min(limit, self.max_bytes)
        try:
            with urllib.request.urlopen(  # noqa: S310 - http(s) only, checked above
                self.url + path, timeout=max(0.001, min(self.timeout, ends - now))
            ) as response:
                length = response.headers.get("Content-Length")
                if (
                    length is not None
                    and length.isascii()
                    and length.isdigit()
                    and int(length) > limit
                ):
                    raise InputError(f"{what}: larger than {limit} bytes")
                reader = _DeadlineReader(response, ends, what)
                return read_bounded(reader, limit=limit, what=what)  # type: ignore[arg-type]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise NodeUnavailable(f"{what}: HTTP {exc.code}") from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            if time.monotonic() >= self._ends:
                raise NodeUnavailable(self._late()) from exc
            raise NodeUnavailable(f"cannot reach the log at {self.url}: {exc}") from exc
        except (http.client.HTTPException, ValueError) as exc:  # malformed status line, header
            raise NodeUnavailable(f"{what}: not a valid HTTP response ({exc})") from exc

    def _late(self) -> str:
        return f"the export at {self.url} was not read within the deadline of {self.total:g} s"

    def __str__(self) -> str:
        return self.url


class _DeadlineReader:
    """``read(n)`` over an HTTP response, giving up once ``ends`` (monotonic time) passes."""

    def __init__(self, response: Any, ends: float, what: str) -> None:
        self.response = response
        self.ends = ends
        self.what = what

    def read(self, n: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < n:
            if time.monotonic() > self.ends:
                raise NodeUnavailable(f"{self.what}: not received within the deadline")
            chunk = self.response.read1(min(n - got, 1 << 16))
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)


@dataclass(frozen=True)
class AnchorClaim:
    """An on-chain anchor as the verifier sees it."""

    index: int
    size: int
    root: bytes
    block_number: int


@dataclass
class VerifyReport:
    origin: str
    size: int
    root: bytes
    checkpoints: int
    anchors: int
    entries_checked: int
    receipts_checked: int
    #: anchors above the export's size, left unchecked (only with ``allow_older``)
    newer_anchors: tuple[AnchorClaim, ...] = ()


def verify_export(
    source: Source,
    verifier: NoteVerifier,
    *,
    anchors: Sequence[AnchorClaim] = (),
    trusted_checkpoints: Iterable[bytes] = (),
    entries: Sequence[tuple[int, bytes]] = (),
    receipts: Sequence[tuple[bytes, bytes]] = (),
    allow_older: bool = False,
) -> VerifyReport:
    """Verify a whole export; see the module docstring for the steps.

    ``entries`` are (index, exact bytes) the auditor holds; ``receipts`` are (tlog-proof bytes,
    entry bytes) pairs. Raises on the first disagreement. An anchor above the export's size
    raises :class:`OlderThanAnchor` once everything else verified, unless ``allow_older``
    (then it is listed in :attr:`VerifyReport.newer_anchors`).
    """
    # 1. signed checkpoints
    latest_note = fetch_capped(source, "checkpoint")
    if latest_note is None:
        raise VerificationError(f"{source}: the export has no checkpoint")
    latest = _open(latest_note, verifier, "the latest checkpoint")
    origin = latest.origin
    signed: dict[int, tuple[bytes, str]] = {
        latest.size: (latest.root_hash, "the latest checkpoint")
    }
    sizes = _checkpoint_sizes(
        fetch_capped(source, "ailedger/checkpoints.json"),
        most=None if isinstance(source, LogSource) else MAX_LISTED_CHECKPOINTS,
    )

    def notes() -> Iterable[tuple[bytes | None, str]]:
        # one at a time: each is opened before the next is fetched
        for s in sizes:
            what = f"checkpoint {s}"
            yield fetch_capped(source, f"ailedger/checkpoints/{s}"), what
        for note in trusted_checkpoints:
            yield note, "a checkpoint kept by the auditor"

    for note, what in notes():
        if note is None:
            raise VerificationError(f"{what} is listed but missing from the export")
        checkpoint = _open(note, verifier, what, origin=origin)
        if checkpoint.size > latest.size:
            raise VerificationError(
                f"{what} covers {checkpoint.size} entries, more than the latest checkpoint "
                f"({latest.size}): the export was rolled back to an older checkpoint"
            )
        seen = signed.get(checkpoint.size)
        if seen is not None and seen[0] != checkpoint.root_hash:
            raise VerificationError(
                f"{what} and {seen[1]} are both signed for size {checkpoint.size} with "
                "different roots: the log forked"
            )
        signed[checkpoint.size] = (checkpoint.root_hash, what)
    newer = tuple(a for a in anchors if a.size > latest.size)
    anchors = [a for a in anchors if a.size <= latest.size]
    # 4. (gathered) receipts: signatures and inclusion against their own checkpoint first
    receipt_sizes: dict[int, list[tuple[int, bytes, str]]] = {}
    for number, (raw, entry) in enumerate(receipts):
        what = f"receipt #{number}"
        try:
            parsed = Receipt.parse(raw)
            checkpoint = verify_receipt(parsed, [verifier], entry=entry, origin=origin)
        except SignatureError as exc:
            raise SignatureError(f"{what}: {exc}") from exc
        except VerificationError as exc:
            raise VerificationError(f"{what}: {exc}") from exc
        receipt_sizes.setdefault(checkpoint.size, []).append(
            (parsed.index, checkpoint.root_hash, what)
        )
    # 2. + 3. recompute everything from the entries
    targets: dict[int, list[tuple[bytes, str]]] = {}
    for size, (root, what) in signed.items():
        targets.setdefault(size, []).append((root, what))
    for anchor in anchors:
        targets.setdefault(anchor.size, []).append(
            (anchor.root, f"anchor #{anchor.index} on chain (block {anchor.block_number})")
        )
    for size, items in receipt_sizes.items():
        if size > latest.size:
            raise VerificationError(
                f"{items[0][2]} is for size {size}, beyond the latest checkpoint"
            )
        for _, root, what in items:
            targets.setdefault(size, []).append((root, f"the checkpoint of {what}"))
    wanted = {index: data for index, data in entries}
    recomputed = _Recompute(source, latest.size, set(targets), wanted)
    roots = recomputed.run()
    for size in sorted(targets):
        for expected, what in targets[size]:
            if roots[size] != expected:
                raise RootMismatch(
                    expected,
                    roots[size],
                    what=f"{what} at size {size}: the log's entries give another root "
                    "(history rewritten); root",
                )
    if newer and not allow_older:
        top = max(newer, key=lambda a: a.size)
        raise OlderThanAnchor(
            f"this export (size {latest.size}) is consistent in itself and with the "
            f"{len(signed)} checkpoint(s) and {len(anchors)} anchor(s) it covers, but it is "
            f"older than the operator's anchor #{top.index} (size {top.size}, block "
            f"{top.block_number}): without the newer entries it cannot show that it is a "
            "prefix of the anchored history: it is an outdated copy, or the log was truncated "
            "or rolled back after it was anchored; fetch a newer export, or give "
            "--allow-older to accept it as an older version"
        )
    return VerifyReport(
        origin=origin,
        size=latest.size,
        root=latest.root_hash,
        checkpoints=len(signed),
        anchors=len(anchors),
        entries_checked=len(wanted),
        receipts_checked=len(receipts),
        newer_anchors=newer,
    )


class _Recompute:
    """One pass over the entry bundles, checking tiles and collecting roots at chosen sizes."""

    def __init__(
        self, source: Source, size: int, sizes: set[int], wanted: dict[int, bytes]
    ) -> None:
        self.source = source
        self.size = size
        self.sizes = sizes
        self.wanted = wanted
        self.frontier: list[tuple[int, bytes]] = []  # (height, hash) of perfect subtrees
        self.rows: dict[int, list[bytes]] = {}  # tile level -> hashes gathered for its tile
        self.done: dict[int, int] = {}  # tile level -> full tiles checked

    def run(self) -> dict[int, bytes]:
        roots: dict[int, bytes] = {}
        if 0 in self.sizes:
            roots[0] = _merkle.EMPTY_ROOT
        for index in self.wanted:
            if not 0 <= index < self.size:
                raise VerificationError(f"entry {index} is not in the log of {self.size} entries")
        for n in range(-(-self.size // _W)):
            first = n * _W
            width = min(_W, self.size - first)
            leaves = self._bundle_leaves(n, first, width)
            tile = self._tile(0, n, width)
            for offset, leaf in enumerate(leaves):
                if tile[offset * _H : (offset + 1) * _H] != leaf:
                    raise VerificationError(
                        f"entry {first + offset}: its bytes do not hash to the log's tile "
                        "(the entry was modified, or entries reordered)"
                    )
                self._push_leaf(leaf)
                if first + offset + 1 in self.sizes:
                    roots[first + offset + 1] = self._root()
            if width == _W:
                self._add(1, _merkle.root_from_leaf_hashes(leaves))
        for level in sorted(self.rows):
            row = self.rows[level]
            if row:
                self._compare(level, self.done.get(level, 0), row)
        return roots

    def _bundle_leaves(self, n: int, first: int, width: int) -> list[bytes]:
        last = first + width - 1
        raw = fetch_capped(self.source, _merkle.entries_path(n, width))
        if raw is None:
            raise VerificationError(
                f"entries {first}..{last}: the bundle {_merkle.entries_path(n, width)} is missing "
                "(entries deleted or the log truncated)"
            )
        try:
            bundle = _merkle.decode_entry_bundle(raw)
        except InputError as exc:
            raise VerificationError(f"entries {first}..{last}: malformed bundle: {exc}") from exc
        if len(bundle) != width:
            raise VerificationError(
                f"entries {first}..{last}: the bundle holds {len(bundle)} entries, the "
                f"checkpoint needs {width} (entries deleted or inserted)"
            )
        for offset, data in enumerate(bundle):
            expected = self.wanted.get(first + offset)
            if expected is not None and expected != data:
                raise VerificationError(
                    f"entry {first + offset} differs from the copy the auditor holds"
                )
        return [_merkle.leaf_hash(data) for data in bundle]

    def _add(self, level: int, value: bytes) -> None:
        row = self.rows.setdefault(level, [])
        row.append(value)
        if len(row) == _W:
            index = self.done.get(level, 0)
            self._compare(level, index, row)
            self.done[level] = index + 1
            self.rows[level] = []
            self._add(level + 1, _merkle.root_from_leaf_hashes(row))

    def _compare(self, level: int, index: int, row: list[bytes]) -> None:
        if self._tile(level, index, len(row)) != b"".join(row):
            path = _merkle.Tile(level, index, len(row)).path()
            raise VerificationError(f"tile {path} disagrees with the entries below it")

    def _push_leaf(self, leaf: bytes) -> None:
        height, value = 0, leaf
        while self.frontier and self.frontier[-1][0] == height:
            _, left = self.frontier.pop()
            value = _merkle.node_hash(left, value)
            height += 1
        self.frontier.append((height, value))

    def _root(self) -> bytes:
        value = self.frontier[-1][1]
        for _, left in reversed(self.frontier[:-1]):
            value = _merkle.node_hash(left, value)
        return value

    def _tile(self, level: int, index: int, width: int) -> bytes:
        path = _merkle.Tile(level, index, width).path()
        raw = fetch_capped(self.source, path)
        if raw is None and width < _W:
            full = fetch_capped(self.source, _merkle.Tile(level, index).path())
            raw = full[: width * _H] if full is not None else None
        if raw is None:
            raise VerificationError(f"tile {path} is missing from the export")
        if len(raw) != width * _H and not (width < _W and len(raw) == _W * _H):
            raise VerificationError(f"tile {path} has {len(raw)} bytes, not {width * _H}")
        return raw[: width * _H]


def _checkpoint_sizes(listing: bytes | None, *, most: int | None) -> list[int]:
    """The sizes listed in ``ailedger/checkpoints.json`` (a JSON list of tree sizes).

    More than ``most`` sizes (None: no bound) is :class:`InputError`.
    """
    what = "ailedger/checkpoints.json"
    if not listing:
        return []
    try:
        sizes = parse_json(listing, what=what, max_depth=2, max_bytes=max(len(listing), 1))
    except InputError as exc:
        raise VerificationError(f"the export is malformed: {exc}") from exc
    if not isinstance(sizes, list) or not all(
        type(s) is int and 0 <= s <= MAX_TREE_SIZE for s in sizes
    ):
        raise VerificationError(f"{what} is not a list of tree sizes")
    if most is not None and len(sizes) > most:
        raise InputError(
            f"{what} lists {len(sizes)} checkpoints, more than the {most} a verifier fetches"
        )
    if len(set(sizes)) != len(sizes):
        raise VerificationError(f"{what} lists a size twice")
    return sizes


def read_binding(source: Source, verifier: NoteVerifier) -> AnchorBinding | None:
    """The export's anchor binding (who anchors the log, where), opened with the log's key.

    None when the export has none; :class:`VerificationError` when it is there but malformed,
    not signed by the log's key, or about another log. The latest checkpoint is opened first,
    so a wrong key or a missing checkpoint is reported as such.
    """
    latest = fetch_capped(source, "checkpoint")
    if latest is None:
        raise VerificationError(f"{source}: the export has no checkpoint")
    _open(latest, verifier, "the latest checkpoint")
    note = fetch_capped(source, BINDING_PATH)
    return None if note is None else open_binding(note, verifier)


def _open(
    note: bytes, verifier: NoteVerifier, what: str, *, origin: str | None = None
) -> Checkpoint:
    try:
        return open_checkpoint(note, [verifier], origin=origin)
    except SignatureError as exc:
        raise SignatureError(f"{what}: {exc}") from exc
    except InputError as exc:
        raise VerificationError(f"{what} is malformed: {exc}") from exc


class LogSource:
    """A stored log (:class:`ailedger.auditlog.log.AuditLog`) seen as an export."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self._note = log.latest_checkpoint()

    def fetch(self, path: str) -> bytes | None:
        if path == "checkpoint":
            return self._note  # type: ignore[no-any-return]
        if path == "ailedger/checkpoints.json":
            return json.dumps([size for size, _ in self.log.checkpoints()]).encode()
        if path.startswith("ailedger/checkpoints/"):
            wanted = int(path.rsplit("/", 1)[1])
            return next((n for s, n in self.log.checkpoints() if s == wanted), None)
        if path.startswith("tile/entries/"):
            index, width = _merkle.parse_entries_path(path)
            start = index * _W
            data = [d for _, d in self.log.entries(start, start + width)]
            return _merkle.encode_entry_bundle(data)
        tile = _merkle.parse_tile_path(path)
        try:
            return bytes(self.log.tile(tile.level, tile.index, tile.width))
        except VerificationError:
            return None

    def __str__(self) -> str:
        return str(self.log.where)


def verify_stored(
    log: Any,
    verifier: NoteVerifier,
    *,
    anchors: Sequence[AnchorClaim] = (),
    deep: bool = False,
) -> VerifyReport:
    """Verify a log from its own storage, as its operator would.

    Checks every signed checkpoint, that each extends the one before (consistency proofs from
    the stored hashes), that the stored hashes give each checkpoint's and anchor's root, and
    that the stored entry count matches. With ``deep`` it also recomputes every leaf from the
    stored entry bytes, exactly as :func:`verify_export` does for an export.
    """
    if deep:
        return verify_export(LogSource(log), verifier, anchors=anchors)
    checkpoints = [(s, _open(n, verifier, f"checkpoint {s}")) for s, n in log.checkpoints()]
    if not checkpoints:
        raise VerificationError("the log has no signed checkpoint yet")
    stored = log.stored_count()
    if stored != log.size:
        raise VerificationError(f"the log records {log.size} entries but stores {stored}")
    previous: Checkpoint | None = None
    for size, checkpoint in checkpoints:
        if size > log.size:
            raise VerificationError(
                f"checkpoint {size} is signed, but the log holds only {log.size} entries "
                "(entries were removed)"
            )
        if log.root(size) != checkpoint.root_hash:
            raise RootMismatch(
                checkpoint.root_hash, log.root(size), what=f"checkpoint at size {size}: root"
            )
        if previous is not None:
            proof = log.prove_consistency(previous.size, size)
            _merkle.verify_consistency(
                proof, previous.size, size, previous.root_hash, checkpoint.root_hash
            )
        previous = checkpoint
    assert previous is not None
    for anchor in anchors:
        if anchor.size > log.size:
            raise VerificationError(
                f"anchor #{anchor.index} covers {anchor.size} entries, the log holds {log.size}"
            )
        if log.root(anchor.size) != anchor.root:
            raise RootMismatch(
                anchor.root,
                log.root(anchor.size),
                what=f"anchor #{anchor.index} (block {anchor.block_number}) at size {anchor.size}",
            )
    return VerifyReport(
        origin=previous.origin,
        size=previous.size,
        root=previous.root_hash,
        checkpoints=len(checkpoints),
        anchors=len(anchors),
        entries_checked=0,
        receipts_checked=0,
    )
