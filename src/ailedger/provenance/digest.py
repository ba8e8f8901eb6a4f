"""Content digests of models and datasets, as sigstore model-signing manifests.

A manifest lists every file of an artifact (a single file, a folder, or a model whose large files
are split into shards) with its SHA-256 digest. It is written as the in-toto Statement v1 that
sigstore's model-signing library signs (``sigstore/model-transparency``, predicate
``https://model_signing/signature/v1.0``, ``model_signing/_signing/signing.py`` ``Payload``)::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": MODEL_NAME, "digest": {"sha256": ROOT}}],
     "predicateType": "https://model_signing/signature/v1.0",
     "predicate": {"serialization": {"method": "files" | "shards", "hash_type": "sha256",
                                     "allow_symlinks": BOOL, ["shard_size": N,]
                                     ["ignore_paths": [...]]},
                   "resources": [{"name": NAME, "algorithm": ALG, "digest": HEX}, ...]}}

Facts carried over from model-signing 1.1.1 so that both tools produce equal statements:

1. A resource name is the file's path relative to the root in POSIX form; a single-file
   artifact has the one resource ``"."``. With shards, a name is ``PATH:START:END`` (bytes
   ``[START, END)``, shards of ``shard_size`` bytes, empty files have no shard) and the algorithm
   is ``sha256-sharded-SHARD_SIZE``.
2. Resources are sorted by path components (``PurePosixPath`` order: ``a/b`` sorts before
   ``a-c``), then by shard start and end.
3. ROOT is SHA-256 over the concatenated raw digests of the resources, in that order.
4. The model name is the last component of the path (of the resolved path for ``.``/``..``).
5. ``.git``, ``.gitattributes``, ``.github`` and ``.gitignore`` at the root are ignored unless
   asked otherwise, and listed in ``ignore_paths``. model-signing lists ``ignore_paths`` in set
   order; this module sorts them. The list is informative: the root digest does not cover it.

Choices of this module (model-signing makes other ones):

- Ignore patterns are gitignore-like globs: ``*`` and ``?`` stay within one path component,
  ``**`` crosses components, a pattern with a ``/`` (other than a trailing one) is anchored at
  the root, one without matches a name at any depth, a trailing ``/`` matches directories only,
  and an ignored directory is not entered. Negation (``!``) is not supported. model-signing
  reads each ``ignore_paths`` entry as a literal root-relative path; both readings agree on
  literal paths.
- The signature file (``model.sig`` by default) at the root is always ignored.
- With ``allow_symlinks=True`` links are followed only while they stay inside the root; a link
  that escapes it, a dangling link and a link loop are refused with :class:`InputError`.
- A file whose size or modification time changes while it is read raises :class:`FileChanged`.
- Manifests are parsed tolerantly, as model-signing's v1.0 predicate asks: unknown fields at
  any level are ignored; an unknown serialization method or hash type is refused with
  :class:`InputError`, since the digests could not be recomputed.

Files are read in chunks (``chunk_size``, 4 MiB by default) so memory stays flat in file size;
files and shards are hashed in parallel threads (``hashlib`` releases the GIL while hashing).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ailedger.errors import InputError, VerificationError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_SHARD_SIZE",
    "DEFAULT_SIGNATURE_FILE",
    "GIT_PATHS",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "Digest",
    "FileChanged",
    "Manifest",
    "ManifestMismatch",
    "Resource",
    "Serialization",
    "digest_artifact",
    "digest_file",
    "verify_manifest",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
DEFAULT_SHARD_SIZE = 1_000_000_000
DEFAULT_SIGNATURE_FILE = "model.sig"
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")

_MIN_CHUNK = 64 * 1024
_MAX_CHUNK = 64 * 1024 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class Digest:
    """A SHA-256 digest (32 bytes) with one text form, ``sha256:<64 lowercase hex>``.

    ``str(d)`` is that form, used wherever a digest is printed; :meth:`parse` also reads the
    ``0x<hex>`` form the chain and older outputs use, and bare 64 hex digits. ``raw`` holds the
    bytes, ``hex`` the bare lowercase hex and ``hex0x`` the ``0x`` form.
    """

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != 32:
            raise InputError("a SHA-256 digest is 32 bytes")

    @classmethod
    def parse(cls, text: str | bytes | Digest, what: str = "digest") -> Digest:
        """Read ``sha256:<hex>``, ``0x<hex>`` or 64 bare hex digits (any case), or take a
        :class:`Digest` or 32 raw bytes as they are; anything else raises :class:`InputError`."""
        if isinstance(text, Digest):
            return text
        if isinstance(text, bytes):
            if len(text) != 32:
                raise InputError(f"{what} must be 32 bytes, got {len(text)}")
            return cls(text)
        form = f"{what} must be sha256:<64 hex digits> (or 0x<64 hex digits>)"
        if not isinstance(text, str):
            raise InputError(form)
        body = text.strip()
        lower = body.lower()
        if lower.startswith("sha256:"):
            body = body[7:]
        elif lower.startswith("0x"):
            body = body[2:]
        if not _HEX64.match(body.lower()):
            raise InputError(f"{form}, got {text!r}")
        return cls(bytes.fromhex(body))

    @classmethod
    def of(cls, data: bytes) -> Digest:
        """The SHA-256 of ``data``."""
        return cls(hashlib.sha256(data).digest())

    @property
    def hex(self) -> str:
        """The 64 lowercase hex digits, without a prefix."""
        return self.raw.hex()

    @property
    def hex0x(self) -> str:
        """The ``0x<hex>`` form (as the chain's tools write a bytes32)."""
        return "0x" + self.raw.hex()

    def __str__(self) -> str:
        return "sha256:" + self.raw.hex()


class FileChanged(InputError):
    """A file changed (size or modification time) while it was being hashed."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        super().__init__(f"{path} changed while it was being hashed ({detail}); hash it again")


class ManifestMismatch(VerificationError):
    """The files on disk differ from a manifest.

    ``name`` is the first differing resource in manifest order, ``path`` its file, and
    ``kind`` one of ``"missing"`` (in the manifest, not on disk), ``"extra"`` (on disk, not in
    the manifest) or ``"digest"`` (on both, different content).
    """

    def __init__(self, name: str, path: str, kind: Literal["missing", "extra", "digest"]) -> None:
        self.name = name
        self.path = path
        self.kind = kind
        what = {
            "missing": "is in the manifest but not on disk",
            "extra": "is on disk but not in the manifest",
            "digest": "has a digest that differs from the manifest",
        }[kind]
        shard = "" if name == path else f" (resource {name})"
        super().__init__(f"file {path!r}{shard} {what}")


@dataclass(frozen=True)
class Resource:
    """One file or shard of an artifact: its name, hash algorithm and lowercase hex digest."""

    name: str
    algorithm: str
    digest: str


@dataclass(frozen=True)
class Serialization:
    """How a manifest was computed (model-signing's ``serialization`` block)."""

    method: Literal["files", "shards"] = "files"
    hash_type: Literal["sha256"] = "sha256"
    allow_symlinks: bool = False
    shard_size: int | None = None
    ignore_paths: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return the block as model-signing writes it (``ignore_paths`` only if non-empty)."""
        out: dict[str, Any] = {
            "method": self.method,
            "hash_type": self.hash_type,
            "allow_symlinks": self.allow_symlinks,
        }
        if self.method == "shards":
            out["shard_size"] = self.shard_size
        if self.ignore_paths:
            out["ignore_paths"] = list(self.ignore_paths)
        return out


@dataclass(frozen=True)
class Manifest:
    """The digests of an artifact's files, sorted as model-signing sorts them."""

    model_name: str
    resources: tuple[Resource, ...]
    serialization: Serialization = field(default_factory=Serialization)

    @property
    def root_digest(self) -> str:
        """SHA-256 (hex) over the concatenated raw resource digests, in manifest order."""
        h = hashlib.sha256()
        for r in self.resources:
            h.update(bytes.fromhex(r.digest))
        return h.hexdigest()

    def to_statement(self) -> dict[str, Any]:
        """Return the manifest as an in-toto Statement v1 with the model-signing predicate."""
        return {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": self.model_name, "digest": {"sha256": self.root_digest}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "serialization": self.serialization.to_json(),
                "resources": [
                    {"name": r.name, "algorithm": r.algorithm, "digest": r.digest}
                    for r in self.resources
                ],
            },
        }

    @classmethod
    def from_statement(cls, statement: Mapping[str, Any]) -> Manifest:
        """Parse a model-signing statement (from any tool), ignoring unknown fields.

        Raises :class:`InputError` if a required field is missing or malformed, or the method or
        hash type is unknown, and :class:`VerificationError` if the subject's digest does not
        match the resources.
        """
        return _parse_statement(statement)


def digest_file(path: str | os.PathLike[str], *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> str:
    """Return the SHA-256 (hex) of one regular file, read in chunks of ``chunk_size`` bytes.

    Raises :class:`InputError` if the path is not a readable regular file and
    :class:`FileChanged` if it changes while it is read.
    """
    _check_chunk_size(chunk_size)
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        raise InputError(f"cannot read {p!r}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{p!r} is not a regular file")
    return _hash_range(p, p, 0, None, (st.st_size, st.st_mtime_ns), chunk_size)


def digest_artifact(
    path: str | os.PathLike[str],
    *,
    ignore: Iterable[str] = (),
    shard_size: int | None = None,
    allow_symlinks: bool = False,
    ignore_git_paths: bool = True,
    signature_file: str = DEFAULT_SIGNATURE_FILE,
    max_workers: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Manifest:
    """Hash a file or a folder into a :class:`Manifest`.

    ``ignore`` holds gitignore-like patterns (see the module docstring); ``shard_size`` (bytes)
    switches to the ``shards`` method; ``allow_symlinks`` follows links that stay inside the
    root. Files are hashed in ``max_workers`` threads (default: ``min(8, cpu_count)``).

    Raises :class:`InputError` for a missing path, a special file, a refused link, a link loop
    or a bad pattern, and :class:`FileChanged` if a file changes while it is read.
    """
    _check_chunk_size(chunk_size)
    if shard_size is not None and (isinstance(shard_size, bool) or shard_size <= 0):
        raise InputError(f"shard_size must be a positive number of bytes, got {shard_size!r}")
    patterns = list(ignore)
    for p in patterns:
        _compile_pattern(p)
    recorded = list(patterns)
    if signature_file:
        _check_relative_name(signature_file, "signature_file")
        recorded.append(signature_file)
    if ignore_git_paths:
        recorded.extend(GIT_PATHS)
    serialization = Serialization(
        method="files" if shard_size is None else "shards",
        allow_symlinks=allow_symlinks,
        shard_size=shard_size,
        ignore_paths=tuple(sorted(set(recorded))),
    )
    matcher = _Matcher(
        patterns,
        anchored=[signature_file] if signature_file else [],
        git=ignore_git_paths,
    )
    root = Path(path)
    files = _collect(root, matcher, allow_symlinks=allow_symlinks)
    resources = _hash_files(files, serialization, max_workers, chunk_size)
    return Manifest(_model_name(root), tuple(resources), serialization)


def verify_manifest(
    path: str | os.PathLike[str],
    manifest: Manifest | Mapping[str, Any],
    *,
    ignore: Iterable[str] = (),
    signature_file: str = DEFAULT_SIGNATURE_FILE,
    max_workers: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> None:
    """Check that the files under ``path`` are exactly those the manifest lists.

    ``manifest`` is a :class:`Manifest` or a statement (parsed with
    :meth:`Manifest.from_statement`). The manifest's ``ignore_paths``, ``ignore`` and the
    signature file only excuse files that are on disk and absent from the manifest; a file the
    manifest lists is always checked.

    Steps: 1. parse the statement and check its subject digest; 2. walk ``path`` with the
    manifest's serialization; 3. hash every file found and every file the manifest names;
    4. compare resources in manifest order.

    Raises :class:`ManifestMismatch` (a :class:`VerificationError`) naming the first file that
    is missing, extra or different; :class:`InputError` for bad input.
    """
    _check_chunk_size(chunk_size)
    m = manifest if isinstance(manifest, Manifest) else Manifest.from_statement(manifest)
    ser = m.serialization
    expected = {r.name: r for r in m.resources}
    keep: set[str] = set()
    for r in m.resources:
        rel = _resource_path(r.name, ser.method)
        _check_relative_name(rel, "resource name")
        parts = rel.split("/")
        keep.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    patterns = [*ser.ignore_paths, *ignore]
    for p in patterns:
        _compile_pattern(p)
    matcher = _Matcher(
        patterns,
        anchored=[signature_file] if signature_file else [],
        git=False,
        keep=frozenset(keep),
    )
    root = Path(path)
    files = _collect(root, matcher, allow_symlinks=ser.allow_symlinks)
    actual = {r.name: r for r in _hash_files(files, ser, max_workers, chunk_size)}
    for name in sorted(expected.keys() | actual.keys(), key=lambda n: _sort_key(n, ser.method)):
        file_path = _resource_path(name, ser.method)
        exp, act = expected.get(name), actual.get(name)
        if act is None:
            raise ManifestMismatch(name, file_path, "missing")
        if exp is None:
            raise ManifestMismatch(name, file_path, "extra")
        if exp.algorithm != act.algorithm or exp.digest != act.digest:
            raise ManifestMismatch(name, file_path, "digest")


@dataclass(frozen=True)
class _File:
    rel: str
    abspath: str
    size: int
    mtime_ns: int


class _Matcher:
    """Decides whether a root-relative path is ignored."""

    def __init__(
        self,
        patterns: Sequence[str],
        *,
        anchored: Sequence[str],
        git: bool,
        keep: frozenset[str] = frozenset(),
    ) -> None:
        self._compiled = [_compile_pattern(p) for p in patterns]
        self._literal = frozenset([*anchored, *(GIT_PATHS if git else ())])
        self._keep = keep

    def __call__(self, rel: str, is_dir: bool) -> bool:
        if rel in self._keep:
            return False
        if rel in self._literal:
            return True
        return any(rx.match(rel) and (is_dir or not dir_only) for rx, dir_only in self._compiled)


def _compile_pattern(pattern: str) -> tuple[re.Pattern[str], bool]:
    """Translate a gitignore-like glob into (regex over the relative path, directories only)."""
    if not isinstance(pattern, str) or not pattern or pattern.startswith(("!", "#")):
        raise InputError(
            f"bad ignore pattern {pattern!r}: give a non-empty glob (negation '!' and comments "
            "'#' are not supported)"
        )
    dir_only = pattern.endswith("/")
    body = pattern.rstrip("/")
    anchored = "/" in body
    body = body.lstrip("/")
    if not body:
        raise InputError(f"bad ignore pattern {pattern!r}: it matches nothing")
    out: list[str] = []
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c == "*":
            if body.startswith("**", i):
                at_start = i == 0 or body[i - 1] == "/"
                if at_start and body.startswith("**/", i):
                    out.append("(?:.*/)?")
                    i += 3
                    continue
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = body.find("]", i + 2 if body.startswith(("[!", "[^"), i) else i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                inner = body[i + 1 : j]
                if inner[:1] in ("!", "^"):
                    inner = "^" + inner[1:]
                out.append("[" + inner.replace("\\", "\\\\") + "]")
                i = j
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(body[i]))
        else:
            out.append(re.escape(c))
        i += 1
    regex = "".join(out)
    if not anchored:
        regex = "(?:.*/)?" + regex
    try:
        return re.compile(regex + r"\Z"), dir_only
    except re.error as exc:
        raise InputError(f"bad ignore pattern {pattern!r}: {exc}") from exc


def _check_chunk_size(chunk_size: int) -> None:
    if isinstance(chunk_size, bool) or not _MIN_CHUNK <= chunk_size <= _MAX_CHUNK:
        raise InputError(
            f"chunk_size must be between {_MIN_CHUNK} and {_MAX_CHUNK} bytes, got {chunk_size!r}"
        )


def _check_relative_name(name: str, what: str) -> None:
    if name == ".":
        return
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in name:
        raise InputError(f"{what} {name!r} is not a plain path relative to the root")


def _model_name(root: Path) -> str:
    name = root.name
    if not name or name == "..":
        name = os.path.basename(os.path.realpath(root))
    return name


def _collect(root: Path, ignored: _Matcher, *, allow_symlinks: bool) -> list[_File]:
    """List the regular files under ``root`` that are not ignored, refusing unsafe links."""
    top = os.fspath(root)
    try:
        lst = os.lstat(top)
    except OSError as exc:
        raise InputError(f"cannot read {top!r}: {exc.strerror}") from exc
    if stat.S_ISLNK(lst.st_mode) and not allow_symlinks:
        raise InputError(
            f"{top!r} is a symbolic link; pass allow_symlinks=True to follow links inside the root"
        )
    try:
        root_real = os.path.realpath(top, strict=True)
        st = os.stat(root_real)
    except OSError as exc:
        raise InputError(_link_error(top, exc)) from exc
    if stat.S_ISREG(st.st_mode):
        return [_File(".", root_real, st.st_size, st.st_mtime_ns)]
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{top!r} is neither a regular file nor a folder")

    files: list[_File] = []
    stack: list[tuple[str, str, frozenset[str]]] = [(root_real, "", frozenset([root_real]))]
    while stack:
        directory, prefix, ancestors = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise InputError(f"cannot list {prefix or top!r}: {exc.strerror}") from exc
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_symlink():
                if not allow_symlinks:
                    raise InputError(
                        f"{rel!r} is a symbolic link; pass allow_symlinks=True to follow links "
                        "that stay inside the root"
                    )
                try:
                    real = os.path.realpath(entry.path, strict=True)
                    est = os.stat(real)
                except OSError as exc:
                    raise InputError(_link_error(rel, exc)) from exc
                if real != root_real and not real.startswith(root_real.rstrip("/") + "/"):
                    raise InputError(
                        f"symbolic link {rel!r} points to {real!r}, outside the root {top!r}"
                    )
            else:
                real = os.path.join(directory, entry.name)
                try:
                    est = entry.stat(follow_symlinks=False)
                except OSError as exc:
                    raise InputError(f"cannot read {rel!r}: {exc.strerror}") from exc
            is_dir = stat.S_ISDIR(est.st_mode)
            if ignored(rel, is_dir):
                continue
            if is_dir:
                if real in ancestors:
                    raise InputError(
                        f"symbolic link loop: {rel!r} leads back to its ancestor {real!r}"
                    )
                stack.append((real, rel + "/", ancestors | {real}))
            elif stat.S_ISREG(est.st_mode):
                files.append(_File(rel, real, est.st_size, est.st_mtime_ns))
            else:
                raise InputError(f"{rel!r} is a special file (not a regular file or a folder)")
    return files


def _link_error(rel: str, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return f"symbolic link loop at {rel!r}"
    if exc.errno == errno.ENOENT:
        return f"{rel!r} does not exist (or is a dangling symbolic link)"
    return f"cannot read {rel!r}: {exc.strerror}"


def _hash_files(
    files: list[_File], ser: Serialization, max_workers: int | None, chunk_size: int
) -> list[Resource]:
    tasks: list[Callable[[], Resource]] = []
    for f in files:
        if ser.method == "files":
            tasks.append(_file_task(f, chunk_size))
        else:
            assert ser.shard_size is not None
            for start in range(0, f.size, ser.shard_size):
                end = min(start + ser.shard_size, f.size)
                tasks.append(_shard_task(f, start, end, ser.shard_size, chunk_size))
    workers = max_workers if max_workers is not None else min(8, os.cpu_count() or 1)
    if workers < 1:
        raise InputError(f"max_workers must be at least 1, got {max_workers!r}")
    if workers == 1 or len(tasks) <= 1:
        resources = [t() for t in tasks]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(t) for t in tasks]
            try:
                resources = [fut.result() for fut in futures]
            finally:
                for fut in futures:
                    fut.cancel()
    resources.sort(key=lambda r: _sort_key(r.name, ser.method))
    return resources


def _file_task(f: _File, chunk_size: int) -> Callable[[], Resource]:
    def run() -> Resource:
        h = _hash_range(f.rel, f.abspath, 0, None, (f.size, f.mtime_ns), chunk_size)
        return Resource(f.rel, "sha256", h)

    return run


def _shard_task(
    f: _File, start: int, end: int, shard_size: int, chunk_size: int
) -> Callable[[], Resource]:
    def run() -> Resource:
        h = _hash_range(f.rel, f.abspath, start, end, (f.size, f.mtime_ns), chunk_size)
        return Resource(f"{f.rel}:{start}:{end}", f"sha256-sharded-{shard_size}", h)

    return run


def _hash_range(
    rel: str,
    abspath: str,
    start: int,
    end: int | None,
    seen: tuple[int, int],
    chunk_size: int,
) -> str:
    """SHA-256 (hex) of bytes ``[start, end)`` (``end=None``: to the end), checking for changes."""
    h = hashlib.sha256()
    try:
        fd = os.open(abspath, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(f"cannot read {rel!r}: {exc.strerror}") from exc
    try:
        before = os.fstat(fd)
        if (before.st_size, before.st_mtime_ns) != seen:
            raise FileChanged(rel, "it changed between listing and reading")
        stop = before.st_size if end is None else end
        buf = bytearray(min(chunk_size, max(stop - start, 1)))
        view = memoryview(buf)
        with os.fdopen(fd, "rb", buffering=0, closefd=False) as fh:
            fh.seek(start)
            pos = start
            while pos < stop:
                n = fh.readinto(view[: min(len(buf), stop - pos)])
                if not n:
                    raise FileChanged(rel, f"it ended at byte {pos}, expected {stop}")
                h.update(view[:n])
                pos += n
        after = os.fstat(fd)
    except OSError as exc:
        raise InputError(f"cannot read {rel!r}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise FileChanged(
            rel,
            f"size {before.st_size} -> {after.st_size}, "
            f"mtime_ns {before.st_mtime_ns} -> {after.st_mtime_ns}",
        )
    return h.hexdigest()


def _resource_path(name: str, method: str) -> str:
    if method == "shards":
        return name.rsplit(":", 2)[0]
    return name


def _sort_key(name: str, method: str) -> tuple[list[str], int, int]:
    if method == "shards":
        path, start, end = name.rsplit(":", 2)
        return path.split("/"), int(start), int(end)
    return name.split("/"), 0, 0


def _parse_statement(statement: Mapping[str, Any]) -> Manifest:
    def need(obj: Any, key: str, typ: type | tuple[type, ...], where: str) -> Any:
        if not isinstance(obj, Mapping) or key not in obj:
            raise InputError(f"manifest: {where} has no {key!r}")
        value = obj[key]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise InputError(f"manifest: {where}.{key} has the wrong type")
        return value

    if not isinstance(statement, Mapping):
        raise InputError("manifest: a statement must be a JSON object")
    if need(statement, "_type", str, "statement") != STATEMENT_TYPE:
        raise InputError(f"manifest: _type is not {STATEMENT_TYPE}: {statement['_type']!r}")
    ptype = need(statement, "predicateType", str, "statement")
    if ptype != PREDICATE_TYPE:
        raise InputError(f"manifest: predicateType {ptype!r} is not {PREDICATE_TYPE}")
    subjects = need(statement, "subject", list, "statement")
    if len(subjects) != 1:
        raise InputError(f"manifest: expected one subject, got {len(subjects)}")
    model_name = need(subjects[0], "name", str, "subject")
    digests = need(subjects[0], "digest", Mapping, "subject")
    root = need(digests, "sha256", str, "subject.digest").lower()
    predicate = need(statement, "predicate", Mapping, "statement")
    ser_json = need(predicate, "serialization", Mapping, "predicate")
    method = need(ser_json, "method", str, "serialization")
    if method not in ("files", "shards"):
        raise InputError(f"manifest: unknown serialization method {method!r}")
    hash_type = need(ser_json, "hash_type", str, "serialization")
    if hash_type != "sha256":
        raise InputError(f"manifest: unsupported hash_type {hash_type!r} (only sha256)")
    allow = ser_json.get("allow_symlinks", False)
    if isinstance(allow, str):
        allow = allow.lower() == "true"
    shard_size: int | None = None
    if method == "shards":
        raw = need(ser_json, "shard_size", (int, float), "serialization")
        if isinstance(raw, bool) or raw != int(raw) or raw <= 0:
            raise InputError(f"manifest: bad shard_size {raw!r}")
        shard_size = int(raw)
    ignore_json = ser_json.get("ignore_paths", [])
    if not isinstance(ignore_json, list) or not all(isinstance(p, str) for p in ignore_json):
        raise InputError("manifest: serialization.ignore_paths must be a list of strings")
    serialization = Serialization(
        method=method,
        allow_symlinks=bool(allow),
        shard_size=shard_size,
        ignore_paths=tuple(sorted(set(ignore_json))),
    )
    algorithm = "sha256" if shard_size is None else f"sha256-sharded-{shard_size}"
    resources: list[Resource] = []
    for i, item in enumerate(need(predicate, "resources", list, "predicate")):
        where = f"resources[{i}]"
        name = need(item, "name", str, where)
        alg = need(item, "algorithm", str, where)
        digest = need(item, "digest", str, where).lower()
        if alg != algorithm:
            raise InputError(f"manifest: {where} uses algorithm {alg!r}, expected {algorithm!r}")
        if not _HEX64.match(digest):
            raise InputError(f"manifest: {where}.digest is not a hex SHA-256")
        if method == "shards" and not re.fullmatch(r".+:\d+:\d+", name):
            raise InputError(f"manifest: {where}.name {name!r} is not PATH:START:END")
        _check_relative_name(_resource_path(name, method), f"{where}.name")
        resources.append(Resource(name, alg, digest))
    names = [r.name for r in resources]
    if len(set(names)) != len(names):
        raise InputError("manifest: a resource name appears twice")
    manifest = Manifest(model_name, tuple(resources), serialization)
    if manifest.root_digest != root:
        raise VerificationError(
            f"manifest: the subject digest {root} does not match its resources "
            f"(they hash to {manifest.root_digest})"
        )
    return manifest
