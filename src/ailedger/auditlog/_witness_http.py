"""The witness's HTTP interface (C2SP tlog-witness), on the standard library's HTTP server.

- ``POST <prefix>/add-checkpoint``: :meth:`Witness.add_checkpoint`; the reply's status is the
  spec's (200, 400, 403, 404, 409 with ``text/x.tlog.size``, 422), plus 411 without a
  ``Content-Length``, 413 for a body over the limit and 408 for a body that does not arrive in
  time.
- ``GET <prefix>/<hex SHA-256 of the origin>/checkpoint``: the latest cosigned checkpoint.

Hostile clients cannot stop it: bodies are bounded in size and in time (a whole-request
deadline, not a per-read one), the request line and headers must arrive within a short deadline
(slowloris), connections are capped in all and per client address (so one address holding idle
connections cannot lock others out), and any unexpected error becomes a 500 for that request
only.
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
#: The request line and headers must arrive within this many seconds (also between requests
#: on a kept-alive connection): an idle connection holds its slot no longer.
HEADER_DEADLINE = 3.0
#: Connections served at once; more are closed at once.
MAX_CONNECTIONS = 64
#: Connections served at once from one client address; more from it are closed at once.
MAX_PER_CLIENT = 8
_ORIGIN_HASH_PATH = re.compile(r"/([0-9a-f]{64})/checkpoint", re.ASCII)


class WitnessServer(ThreadingHTTPServer):
    """Serve ``witness`` on ``(host, port)``; ``serve_forever()`` runs it, ``shutdown()`` stops."""

    daemon_threads = True
    block_on_close = False
    # a burst of connections waits in the kernel's queue rather than in SYN retransmits
    request_queue_size = 128

    def __init__(
        self,
        witness: Witness,
        host: str,
        port: int,
        *,
        prefix: str = "",
        log: Callable[[str], None] | None = None,
        request_deadline: float = REQUEST_DEADLINE,
        header_deadline: float = HEADER_DEADLINE,
        max_connections: int = MAX_CONNECTIONS,
        max_per_client: int = MAX_PER_CLIENT,
    ) -> None:
        self.witness = witness
        self.request_deadline = request_deadline
        self.header_deadline = min(header_deadline, request_deadline)
        self.prefix = prefix.rstrip("/")
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._slots = threading.BoundedSemaphore(max_connections)
        self.max_per_client = max_per_client
        self._per_client: dict[str, int] = {}
        self._per_client_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{self.prefix}"

    def process_request(self, request: Any, client_address: Any) -> None:
        host = str(client_address[0])
        with self._per_client_lock:
            taken = self._per_client.get(host, 0)
            if taken >= self.max_per_client or not self._slots.acquire(blocking=False):
                self.shutdown_request(request)
                return
            self._per_client[host] = taken + 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(host)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(str(client_address[0]))

    def _release(self, host: str) -> None:
        with self._per_client_lock:
            left = self._per_client.get(host, 1) - 1
            if left > 0:
                self._per_client[host] = left
            else:
                self._per_client.pop(host, None)
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
        # time would hold the connection for ever. These bound the headers (short) and the
        # whole request.
        self.connection.settimeout(self.server.header_deadline)
        self._headers_timer = threading.Timer(self.server.header_deadline, self._expire)
        self._headers_timer.daemon = True
        timer = threading.Timer(2 * self.server.request_deadline, self._expire)
        timer.daemon = True
        self._headers_timer.start()
        timer.start()
        try:
            super().handle_one_request()
        finally:
            timer.cancel()
            self._headers_timer.cancel()

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        # the headers are in: the body gets the request deadline (see _read_body)
        self._headers_timer.cancel()
        with contextlib.suppress(OSError):
            self.connection.settimeout(self.server.request_deadline)
        return parsed

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
