"""A second process that turns batch bodies into log entries, so the service uses two cores.

The service's process is CPU bound on a batch of records: decoding the body, encoding each
record canonically and hashing it cost about two thirds of its CPU per entry, and Python runs
them one thread at a time. :class:`BatchEncoder` hands that part to a process of its own
(a ``spawn``-started :class:`concurrent.futures.ProcessPoolExecutor` of one worker): it runs
:func:`ailedger.service.api.encode_batch` on the body and the RFC 6962 leaf hash of each
entry, and sends both back; the service's process only sequences, writes and commits them
(:meth:`ailedger.auditlog.log.AuditLog.append_encoded`). While one batch is written and its
commit flushed, the next one is being encoded.

The worker writes nothing and holds nothing: the log, its lock and its durability stay with the
service's process, so a 201 still means the entries are on disk. The worker dies with the
service's process (Linux's ``PR_SET_PDEATHSIG``, see prctl(2)), even when that one is killed
with SIGKILL. A body the worker does not take (anything :func:`encode_batch` leaves to the
exact path), and every body once the worker has failed, is handled in the service's process as
before, with the same answers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import threading
from concurrent.futures.process import BrokenProcessPool

__all__ = ["BatchEncoder"]

_log = logging.getLogger("ailedger.service")

#: prctl(2)'s PR_SET_PDEATHSIG: the signal a process gets when its parent thread ends
_PR_SET_PDEATHSIG = 1


def _follow_parent() -> None:
    """In the worker, first: die when the service's process does, and leave Ctrl-C to it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before prctl: follow it
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # import the batch path now, not on the first batch
    from ailedger.service import api  # noqa: F401


def _encode(body: bytes, max_bytes: int) -> tuple[list[bytes], list[bytes]] | None:
    """In the worker: the entries of a batch body and their leaf hashes, or None."""
    from ailedger.auditlog._merkle import leaf_hash
    from ailedger.service.api import encode_batch

    datas = encode_batch(body, max_bytes=max_bytes)
    if datas is None:
        return None
    return datas, list(map(leaf_hash, datas))


def _ready() -> bool:
    return True


class BatchEncoder:
    """One worker process encoding batch bodies (see the module docstring).

    :meth:`start` it on the service's event loop thread (the worker's life is tied to the
    thread that starts it), :meth:`encode` from the event loop, :meth:`stop` at shutdown.
    """

    def __init__(self) -> None:
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        #: batches the worker has encoded so far
        self.encoded = 0

    @property
    def running(self) -> bool:
        """Whether a worker takes bodies now."""
        return self._pool is not None

    async def start(self) -> None:
        """Start the worker and wait until it has imported what it runs (about a second)."""
        pool = None
        try:
            pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_follow_parent,
            )
            # submitted from this thread, which then spawns the worker: it lives as long
            await asyncio.wrap_future(pool.submit(_ready))
        except Exception as exc:  # no worker: the service encodes in its own process
            _log.warning("no batch encoder process (%s): batches are encoded in-process", exc)
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            return
        self._pool = pool

    async def encode(self, body: bytes, max_bytes: int) -> tuple[list[bytes], list[bytes]] | None:
        """The entries of a batch body (each as :func:`.records.encode_record` makes it) and
        their leaf hashes, from the worker; None when the worker does not take the body or
        is not running (then encode it in-process)."""
        pool = self._pool
        if pool is None:
            return None
        try:
            found = await asyncio.wrap_future(pool.submit(_encode, body, max_bytes))
        except BrokenProcessPool as exc:
            self._broken(pool, exc)
        except RuntimeError as exc:  # shut down meanwhile
            _log.debug("the batch encoder is stopping: %s", exc)
        else:
            if found is not None:
                self.encoded += 1
            return found
        return None

    def _broken(self, pool: concurrent.futures.ProcessPoolExecutor, exc: BaseException) -> None:
        with self._lock:
            if self._pool is not pool:
                return
            self._pool = None
        _log.error("the batch encoder process failed (%s): batches are encoded in-process", exc)
        pool.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> None:
        """Stop the worker (waiting for the body it encodes, if any)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
