"""A hostile JSON-RPC node for tests: an HTTP server on 127.0.0.1 whose every path answers in
one hostile way (deeply nested JSON, a 200 MB body, text, HTML, wrong types, ...)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator

import pytest

MB = 1024 * 1024
NESTED = b"[" * 100_000 + b"]" * 100_000


def _reply(result: object, request_id: object = 0) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}).encode()


class _Hostile(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _send(self, body: bytes, *, status: int = 200, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        request = json.loads(self.rfile.read(length))
        request_id = request["id"]
        path = self.path.strip("/")
        try:
            if path == "nested":
                self._send(NESTED)
            elif path == "nested-result":
                wrapped = b'{"jsonrpc": "2.0", "id": %d, "result": ' % request_id
                self._send(wrapped + NESTED + b"}")
            elif path == "huge":
                # 200 MB, announced by no Content-Length and sent in 1 MB writes
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"jsonrpc": "2.0", "id": 0, "result": "0x' + b"0" * MB)
                for _ in range(200):
                    self.wfile.write(b"0" * MB)
            elif path == "huge-announced":
                self.send_response(200)
                self.send_header("Content-Length", str(200 * MB))
                self.end_headers()
                self.wfile.write(b"{" + b" " * MB)
            elif path == "text":
                self._send(b"hello, I am not a node", kind="text/plain")
            elif path == "html":
                self._send(b"<html><body><h1>502 Bad Gateway</h1></body></html>", status=502)
            elif path == "not-utf8":
                self._send(b'{"jsonrpc": "2.0", "id": 0, "result": "\xff\xfe"}')
            elif path == "wrong-type":
                self._send(_reply({"chain": [1, 2, 3]}, request_id))
            elif path == "bad-hex":
                self._send(_reply("0xzz", request_id))
            elif path == "list":
                self._send(json.dumps([_reply("0x1", request_id).decode()]).encode())
            elif path == "wrong-id":
                self._send(_reply("0x1", request_id + 1000))
            elif path == "duplicate-keys":
                self._send(
                    b'{"jsonrpc": "2.0", "id": %d, "result": "0x1", "result": "0x2"}' % request_id
                )
            elif path == "redirect":
                self.send_response(307)
                self.send_header("Location", "http://127.0.0.1:1/")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "drip":
                self.send_response(200)
                self.send_header("Content-Length", str(MB))
                self.end_headers()
                for _ in range(200):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.05)
            elif path == "garbage-logs":
                if request["method"] == "eth_getLogs":
                    self._send(
                        _reply([{"address": 5, "topics": "not a list", "data": []}], request_id)
                    )
                else:
                    self._send(_reply("0x7a69", request_id))
            elif path == "error-object":
                self._send(
                    json.dumps({"jsonrpc": "2.0", "id": request_id, "error": "boom"}).encode()
                )
            else:
                self._send(b"", status=404)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading, as it should


@pytest.fixture(scope="module")
def hostile() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
