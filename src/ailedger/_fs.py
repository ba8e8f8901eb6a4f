"""Small file-system helpers shared by the capabilities.

Files are created with their final mode in the ``open`` call (``O_CREAT | O_EXCL``), so a file
meant to be private is never readable by others, not even for a moment; and a name that
someone else planted (a symlink, a file) is never written through.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

from ailedger.errors import InputError

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "create_private_file",
    "make_private_dir",
    "tighten",
    "write_atomic",
]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The bytes go to a new file with an unpredictable name in the same folder, created
    exclusively with ``mode`` (``O_CREAT | O_EXCL | O_NOFOLLOW``: a planted symlink or file is
    never opened), flushed to disk, and renamed over ``path`` (a rename replaces a symlink at
    ``path``, it never writes through it). On any error the temporary file is removed and
    ``path`` is untouched. A failure of the file system (a missing or read-only folder, a full
    disk) raises :class:`InputError` naming ``path``.
    """
    try:
        _write_atomic(path, data, mode)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        fd, tmp = _create_temp(dir_fd, path.name, mode)
        try:
            with os.fdopen(fd, "wb") as handle:
                # the umask may have cleared bits of ``mode``; set it exactly, on our own file
                os.fchmod(handle.fileno(), mode)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        # the rename itself is durable once the folder is
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
