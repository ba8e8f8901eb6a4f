"""The witness's HTTP interface (C2SP tlog-witness), on the standard library's HTTP server.

- ``POST <prefix>/add-checkpoint``: :meth:`Witness.add_checkpoint`; the reply's status is the
  spec's (200, 400, 403, 404, 409 with ``text/x.tlog.size``, 422), plus 411 without a
  ``Content-Length``, 413 for a body over the limit and 408 for a body that does not arrive in
  time.
- ``GET <prefix>/<hex SHA-256 of the origin>/checkpoint``: the latest cosigned checkpoint.

Hostile clients cannot stop it: bodies are bounded in size and in time (a whole-request
deadline, not a per-read one), connections are capped, and any unexpected error becomes a 500
for that request only.
"""

from __future__ import annotations

import contextlib
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ailedger.auditlog._witness_state import MAX_BODY, Witness, WitnessReply

__all__ = ["WitnessServer"]

#: A request (headers and body) must arrive within this many seconds.
REQUEST_DEADLINE = 10.0
#: Connections served at once; more are closed at once.
MAX_CONNECTIONS = 64
_ORIGIN_HASH_PATH = re.compile(r"/([0-9a-f]{64})/checkpoint", re.ASCII)


class WitnessServer(ThreadingHTTPServer):
    """Serve ``witness`` on ``(host, port)``; ``serve_forever()`` runs it, ``shutdown()`` stops."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        witness: Witness,
        host: str,
        port: int,
        *,
        prefix: str = "",
        log: Callable[[str], None] | None = None,
        request_deadline: float = REQUEST_DEADLINE,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.witness = witness
        self.request_deadline = request_deadline
        self.prefix = prefix.rstrip("/")
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{self.prefix}"

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        self.log(f"witness: connection from {client_address[0]} failed: {exc!r}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ailedger-witness"
    sys_version = ""
    server: WitnessServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_deadline)

    def handle_one_request(self) -> None:
        # A socket timeout bounds each read only: a client dripping its headers a byte at a
        # time would hold the connection for ever. This bounds the whole request.
        timer = threading.Timer(2 * self.server.request_deadline, self._expire)
        timer.daemon = True
        timer.start()
        try:
            super().handle_one_request()
        finally:
            timer.cancel()

    def _expire(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != self.server.prefix + "/add-checkpoint":
            self._reply(WitnessReply(404, b"not found\n"))
            return
        try:
            body = self._read_body()
        except _BodyError as exc:
            self.close_connection = True
            self._reply(WitnessReply(exc.status, (str(exc) + "\n").encode()))
            return
        try:
            reply = self.server.witness.add_checkpoint(body)
        except Exception as exc:  # never let one request take the server down
            self.server.log(f"witness: internal error on add-checkpoint: {exc!r}")
            reply = WitnessReply(500, b"internal error\n")
        first = reply.body.decode("utf-8", "replace").splitlines()[:1]
        self.server.log(f"witness: add-checkpoint {reply.status} {''.join(first)[:200]}")
        self._reply(reply)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        prefix = self.server.prefix
        match = (
            _ORIGIN_HASH_PATH.fullmatch(path[len(prefix) :]) if path.startswith(prefix) else None
        )
        note = None if match is None else self.server.witness.latest_by_hash(match.group(1))
        if note is None:
            self._reply(WitnessReply(404, b"not found\n"))
        else:
            self._reply(WitnessReply(200, note))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding") is not None:
            raise _BodyError(411, "send the body with a Content-Length, not chunked")
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise _BodyError(411, "a Content-Length is required")
        if not raw.isdigit() or not raw.isascii() or len(raw) > 12:
            raise _BodyError(400, "bad Content-Length")
        length = int(raw)
        if length > MAX_BODY:
            raise _BodyError(413, f"request body larger than {MAX_BODY} bytes")
        deadline = time.monotonic() + self.server.request_deadline
        chunks: list[bytes] = []
        left = length
        while left:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _BodyError(408, "the request body did not arrive in time")
            self.connection.settimeout(remaining)
            try:
                chunk = self.rfile.read1(min(left, 16384))
            except TimeoutError as exc:
                raise _BodyError(408, "the request body did not arrive in time") from exc
            if not chunk:
                raise _BodyError(400, "the request body is shorter than its Content-Length")
            chunks.append(chunk)
            left -= len(chunk)
        self.connection.settimeout(self.server.request_deadline)
        return b"".join(chunks)

    def _reply(self, reply: WitnessReply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are logged by outcome in :meth:`do_POST`; the default access log is off."""


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
