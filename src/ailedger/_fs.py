"""Small file-system helpers shared by the capabilities.

Files are created with their final mode in the ``open`` call (``O_CREAT | O_EXCL``), so a file
meant to be private is never readable by others, not even for a moment; and a name that
someone else planted (a symlink, a file) is never written through.

Folders on the way to an output (the symlink policy of :func:`open_dir`): the path is walked
one component at a time from ``/`` (or the current folder), each folder opened relative to the
one before it with ``O_DIRECTORY | O_NOFOLLOW`` (openat), so what is checked is what is used:
replacing a folder by a symlink after it was opened changes nothing. A component that is a
symlink is followed only when the link belongs to the user running ailedger or to root (the
rule of Linux's ``fs.protected_symlinks``, applied everywhere, not only in sticky folders): the
user or the administrator made it, so it goes where they asked. A link owned by anyone else,
planted in a shared folder, is refused with :class:`InputError`, whichever folder it points
to. Missing folders are created with ``mkdirat`` and then opened the same way. The file itself
is then written and renamed relative to that folder's descriptor (``renameat``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ailedger.errors import InputError

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "create_private_file",
    "make_private_dir",
    "open_dir",
    "sync_files",
    "tighten",
    "write_atomic",
]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_PATH = getattr(os, "O_PATH", 0)
#: links followed on one walk at most, as the kernel's own limit (ELOOP past it)
MAX_LINKS = 40


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The folder is opened with :func:`open_dir` (created if missing; a symlink on the way that
    belongs to another user is refused, see the module docstring), and everything after that
    is relative to its descriptor. The bytes go to a new file with an unpredictable name in
    that folder, created exclusively with ``mode`` (``O_CREAT | O_EXCL | O_NOFOLLOW``: a
    planted symlink or file is never opened), flushed to disk, and renamed over the final name
    (``renameat``: a rename replaces a symlink at ``path``, it never writes through it). On any
    error the temporary file is removed and ``path`` is untouched. A failure of the file system
    (a read-only folder, a full disk) or a refused symlink raises :class:`InputError` naming
    ``path``.

    With ``durable=False`` neither the file nor its folder is fsynced: readers still see the
    old file or the whole new one, but after a crash the new name may be missing or hold an
    empty file. For many files written at once (an export), pass ``durable=False`` and then
    call :func:`sync_files` once over all of them.
    """
    try:
        _write_atomic(path, data, mode, durable)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _write_atomic(path: Path, data: bytes, mode: int, durable: bool) -> None:
    if path.name in ("", ".", ".."):
        raise IsADirectoryError(errno.EISDIR, "not a file name")
    dir_fd = open_dir(path.parent, create=True)
    try:
        fd, tmp = _create_temp(dir_fd, path.name, mode)
        try:
            with os.fdopen(fd, "wb") as handle:
                # the umask may have cleared bits of ``mode``; set it exactly, on our own file
                os.fchmod(handle.fileno(), mode)
                handle.write(data)
                handle.flush()
                if durable:
                    os.fsync(handle.fileno())
            os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        if durable:  # the rename itself is durable once the folder is
            with contextlib.suppress(OSError):
                os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def sync_files(paths: Iterable[Path], root: Path, *, threads: int = 32) -> None:
    """Make files written with ``write_atomic(..., durable=False)`` durable, in one pass.

    ``paths`` are files under the folder ``root``. Each is fsynced (opened ``O_NOFOLLOW``
    relative to its folder, each folder opened once with :func:`open_dir`), from ``threads``
    threads at once; then each folder holding one, every folder between those and ``root``,
    and ``root``'s parent, deepest first (so that the renames, and the folders that
    ``write_atomic`` created, are durable too). Returns once all of it is on disk.

    Why concurrent per-file fsync: fsyncing the files one after another costs one journal
    commit each on ext4 (about 3 ms here: 1,572 files took 6.2 s), the same as fsyncing inside
    every write. Fsyncs issued together are committed together (the journal groups the
    transactions of concurrent fsyncs): the same 1,572 files took 0.27 s from 32 threads.
    ``syncfs(2)`` on the folder would be faster still (0.08 s) but flushes every dirty file on
    the file system, other processes' too, so its time depends on unrelated work, and it needs
    a ctypes call outside Python's ``os`` module; ``os.sync`` is the same for every file
    system. A failure raises :class:`InputError` naming the path.
    """
    by_folder: dict[Path, list[str]] = {}
    for path in paths:
        by_folder.setdefault(path.parent, []).append(path.name)
    folders: set[Path] = set()
    for folder in by_folder:
        folders.add(folder)
        folders.update(p for p in folder.parents if p == root or root in p.parents)
    folders.add(root.parent)
    order = sorted(folders, key=lambda p: len(p.parts), reverse=True)  # deepest first
    fds: dict[Path, int] = {}
    try:
        for folder in order:
            try:
                fds[folder] = open_dir(folder)
            except OSError as exc:
                raise InputError(f"cannot sync {folder}: {exc.strerror or exc}") from exc
        jobs = [(fds[f], f, name) for f, names in by_folder.items() for name in names]
        if jobs:
            with ThreadPoolExecutor(max_workers=max(1, min(threads, len(jobs)))) as pool:
                for _ in pool.map(_fsync_file, jobs):  # re-raises the first failure
                    pass
        for folder in order:
            with contextlib.suppress(OSError):  # as in write_atomic: not every fs syncs folders
                os.fsync(fds[folder])
    finally:
        for fd in fds.values():
            os.close(fd)


def _fsync_file(job: tuple[int, Path, str]) -> None:
    """Fsync the file ``name`` of the folder open as ``dir_fd`` (``job``: dir_fd, folder, name)."""
    dir_fd, folder, name = job
    try:
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _CLOEXEC, dir_fd=dir_fd)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise InputError(f"cannot sync {folder / name}: {exc.strerror or exc}") from exc


def open_dir(path: Path, *, create: bool = False, mode: int = 0o777) -> int:
    """A descriptor (``O_RDONLY | O_DIRECTORY``) of the folder ``path``; the caller closes it.

    Walks ``path`` one component at a time as the module docstring says: every folder is
    opened relative to its parent with ``O_NOFOLLOW``; a symlink is followed only when owned by
    this user or root (its target read from the link that was checked, ``readlinkat`` on an
    ``O_PATH`` descriptor, so a swap between the check and the read cannot redirect it); with
    ``create``, missing folders are made with ``mode`` (less the umask). Raises
    :class:`InputError` for a symlink owned by another user, ``OSError`` for the rest (a
    missing folder without ``create``, a file on the way, more than :data:`MAX_LINKS` links).
    """
    path = Path(path)
    parts = list(path.parts[1:] if path.is_absolute() else path.parts)
    # folders on the way are held as O_PATH descriptors (search permission suffices, as for a
    # plain path lookup); only the last one is opened for reading
    walk = _PATH | _DIRECTORY | _CLOEXEC
    fd = os.open("/" if path.is_absolute() else ".", walk)
    links = 0
    trusted = {0, os.geteuid()}
    parts.reverse()  # a stack: a link's target is pushed in front of what is left
    try:
        while parts:
            name = parts.pop()
            if name in ("", "."):
                continue
            if name == "/":  # the start of an absolute link target
                nxt = os.open("/", walk)
                os.close(fd)
                fd = nxt
                continue
            try:
                nxt = os.open(name, walk | _NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create or name == "..":
                    raise
                with contextlib.suppress(FileExistsError):  # made meanwhile: opened as below
                    os.mkdir(name, mode, dir_fd=fd)
                parts.append(name)
                continue
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                target = _trusted_link(fd, name, trusted, path)
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, f"too many symbolic links in {path}") from exc
                parts.extend(reversed(Path(target).parts))  # "/" first: from the root
                continue
            os.close(fd)
            fd = nxt
        return os.open(".", os.O_RDONLY | _DIRECTORY | _CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


def _trusted_link(dir_fd: int, name: str, trusted: set[int], path: Path) -> str:
    """The target of the symlink ``name`` in ``dir_fd`` if it is owned by a uid in ``trusted``.

    The link is opened once (``O_PATH | O_NOFOLLOW``) and both its owner and its target are
    read from that descriptor. Not a link: ``NotADirectoryError``. Owned by someone else:
    :class:`InputError`.
    """
    link = os.open(name, _PATH | _NOFOLLOW | _CLOEXEC, dir_fd=dir_fd)
    try:
        info = os.fstat(link)
        if not stat.S_ISLNK(info.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, f"{name} in {path} is not a folder")
        if info.st_uid not in trusted:
            raise InputError(
                f"refusing to follow the symlink {name!r} on the way to {path}: it belongs to "
                f"user {info.st_uid}, not to you or root (planted in a shared folder?)"
            )
        return os.readlink("", dir_fd=link)
    finally:
        os.close(link)


def _create_temp(dir_fd: int, name: str, mode: int) -> tuple[int, str]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
    for _ in range(100):
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            return os.open(tmp, flags, mode, dir_fd=dir_fd), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name for {name}")  # 2^64 names, 100 taken


def make_private_dir(path: Path) -> None:
    """Create the folder ``path`` (and its missing parents) with mode 0700 from the start.

    An existing folder is left as it is (see :func:`tighten`).
    """
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)


def create_private_file(path: Path) -> bool:
    """Create ``path`` empty with mode 0600, unless it exists; returns whether it was created.

    Used before a library (SQLite) creates the file with its own, looser, default mode: SQLite
    then also gives its ``-wal`` and ``-shm`` files the mode of the database.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def tighten(path: Path, mode: int) -> int | None:
    """Clear the permission bits of ``path`` beyond ``mode``; returns the old mode if it changed.

    A missing path or a symlink is left alone (a link's target is not ours to change).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW | _CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink
            return None
        raise
    try:
        old = stat.S_IMODE(os.fstat(fd).st_mode)
        if old & ~mode == 0:
            return None
        os.fchmod(fd, old & mode)
        return old
    finally:
        os.close(fd)
