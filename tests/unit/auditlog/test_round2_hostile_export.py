"""Round-2 probes X02, X03, X04, P07s: a hostile export over HTTP, an export older than an anchor.

X02: a 1.3 MB ``checkpoints.json`` listing 200,000 sizes (each answered 404) kept ``verify``
fetching for over 200 s. X03: 40 listed sizes, each note 20 MiB, took 961 MB and 19 s before
the first was checked. Now the listing is capped, notes are capped at 16 KiB and checked as they
arrive, tiles are capped at one full tile, and the whole export must arrive within a deadline.

P07s: an honest export of size 5, verified after its operator anchored size 6, was called
"truncated or rolled back"; now it is checked in full and refused as older (or accepted as an
older version with ``allow_older``).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ailedger.auditlog.log import AuditLog
from ailedger.auditlog.note import NoteVerifier
from ailedger.auditlog.verify import (
    AnchorClaim,
    DirectorySource,
    HttpSource,
    OlderThanAnchor,
    verify_export,
)
from ailedger.errors import InputError, NodeUnavailable, VerificationError

ORIGIN = "round2.example/log"
#: path (after the mode) -> a function writing the reply, or None to serve the export's file
Override = Callable[[http.server.BaseHTTPRequestHandler], None]


class _Export:
    """An honest export on disk, served at ``/<mode>/`` with a mode's hostile overrides."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.key = Ed25519PrivateKey.generate()
        with AuditLog.open(folder.with_suffix(".sqlite"), origin=ORIGIN) as log:
            for i in range(3):
                log.append_many([{"i": i, "n": n} for n in range(100)])
                log.checkpoint(self.key)
            log.export(folder)
            self.verifier: NoteVerifier = log.verifier(self.key.public_key())
        self.modes: dict[str, dict[str, Override]] = {}
        self.hits: Counter[str] = Counter()
        self.sent = 0
        self.delay = 0.0


def _send(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    with contextlib.suppress(OSError):  # the verifier hangs up on a body it refuses
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


@pytest.fixture
def export(tmp_path: Path) -> Iterator[tuple[_Export, str]]:
    made = _Export(tmp_path / "export")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            mode, _, rest = self.path.lstrip("/").partition("/")
            made.hits[rest] += 1
            time.sleep(made.delay)
            for prefix, override in made.modes.get(mode, {}).items():
                if rest.startswith(prefix):
                    override(self)
                    return
            file = made.folder / rest
            if file.is_file():
                _send(self, 200, file.read_bytes())
            else:
                _send(self, 404, b"not found\n")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield made, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _listing(sizes: list[int]) -> Override:
    body = json.dumps(sizes).encode()
    return lambda handler: _send(handler, 200, body)


def _streamed(total: int, made: _Export) -> Override:
    """A body of ``total`` bytes with no Content-Length, counting what was actually sent."""

    def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Connection", "close")
        handler.end_headers()
        chunk = b"x" * 65536
        try:
            for _ in range(total // len(chunk)):
                handler.wfile.write(chunk)
                made.sent += len(chunk)
        except OSError:
            pass

    return reply


def test_the_honest_export_verifies_over_http(export: tuple[_Export, str]) -> None:
    made, url = export
    report = verify_export(HttpSource(f"{url}/honest", total=30), made.verifier)
    assert (report.size, report.checkpoints) == (300, 3)


def test_x02_a_huge_listing_is_refused_before_any_checkpoint_is_fetched(
    export: tuple[_Export, str],
) -> None:
    made, url = export
    made.modes["many"] = {
        "ailedger/checkpoints.json": _listing(list(range(1, 200_001))),
        "ailedger/checkpoints/": lambda h: _send(h, 404, b"no\n"),
    }
    started = time.monotonic()
    with pytest.raises(InputError, match="larger than 1048576 bytes"):
        verify_export(HttpSource(f"{url}/many", total=30), made.verifier)
    assert time.monotonic() - started < 5
    assert sum(n for p, n in made.hits.items() if p.startswith("ailedger/checkpoints/")) == 0
    # under the byte cap, over the count cap
    made.modes["count"] = {"ailedger/checkpoints.json": _listing(list(range(1, 20_001)))}
    with pytest.raises(InputError, match="lists 20000 checkpoints, more than the 10000"):
        verify_export(HttpSource(f"{url}/count", total=30), made.verifier)


def test_x02_listed_checkpoints_stop_at_the_first_missing_one(export: tuple[_Export, str]) -> None:
    made, url = export
    made.modes["missing"] = {
        "ailedger/checkpoints.json": _listing(list(range(1, 5_001))),
        "ailedger/checkpoints/": lambda h: _send(h, 404, b"no\n"),
    }
    with pytest.raises(VerificationError, match="checkpoint 1 is listed but missing"):
        verify_export(HttpSource(f"{url}/missing", total=30), made.verifier)
    assert sum(n for p, n in made.hits.items() if p.startswith("ailedger/checkpoints/")) == 1


def test_x03_an_oversized_note_is_refused_at_the_first_one(export: tuple[_Export, str]) -> None:
    made, url = export
    big = b"x" * (20 * 1024 * 1024)
    made.modes["fat"] = {
        "ailedger/checkpoints.json": _listing(list(range(1, 41))),
        "ailedger/checkpoints/": lambda h: _send(h, 200, big),
    }
    with pytest.raises(InputError, match="larger than 16384 bytes"):
        verify_export(HttpSource(f"{url}/fat", total=30), made.verifier)
    assert sum(n for p, n in made.hits.items() if p.startswith("ailedger/checkpoints/")) == 1
    # streamed without a Content-Length: read no further than the cap
    made.modes["stream"] = {
        "ailedger/checkpoints.json": _listing(list(range(1, 41))),
        "ailedger/checkpoints/": _streamed(20 * 1024 * 1024, made),
    }
    with pytest.raises(InputError, match="larger than 16384 bytes"):
        verify_export(HttpSource(f"{url}/stream", total=30), made.verifier)
    assert made.hits["ailedger/checkpoints/1"] == 2  # once per mode, never checkpoint 2
    assert made.hits["ailedger/checkpoints/2"] == 0


def test_x03_the_latest_checkpoint_and_tiles_are_capped(export: tuple[_Export, str]) -> None:
    made, url = export
    made.modes["fatlatest"] = {"checkpoint": lambda h: _send(h, 200, b"x" * 100_000)}
    with pytest.raises(InputError, match="larger than 16384 bytes"):
        verify_export(HttpSource(f"{url}/fatlatest", total=30), made.verifier)
    made.modes["fattile"] = {"tile/0/": lambda h: _send(h, 200, b"x" * 1_000_000)}
    with pytest.raises(InputError, match="larger than 8192 bytes"):
        verify_export(HttpSource(f"{url}/fattile", total=30), made.verifier)


def test_x02_the_whole_export_must_arrive_within_the_deadline(
    export: tuple[_Export, str],
) -> None:
    made, url = export
    made.delay = 0.3  # every file answered slowly, each well within its own deadline
    started = time.monotonic()
    with pytest.raises(NodeUnavailable, match="not read within the deadline of 1 s"):
        verify_export(HttpSource(f"{url}/honest", total=1.0), made.verifier)
    assert time.monotonic() - started < 3
    with pytest.raises(InputError, match="positive"):
        HttpSource(url, total=0)


# --- P07s: an export older than an anchor ----------------------------------------------------


@pytest.fixture
def older(tmp_path: Path) -> tuple[Path, NoteVerifier, list[AnchorClaim]]:
    """An export of size 5 and the operator's anchors at sizes 5 and 6 (made later)."""
    key = Ed25519PrivateKey.generate()
    with AuditLog.open(tmp_path / "log.sqlite", origin=ORIGIN) as log:
        log.append_many([{"i": i} for i in range(5)])
        log.checkpoint(key)
        log.export(tmp_path / "old")
        log.append_many([{"i": 5}])
        anchors = [
            AnchorClaim(index=0, size=5, root=log.root(5), block_number=7),
            AnchorClaim(index=1, size=6, root=log.root(6), block_number=9),
        ]
        return tmp_path / "old", log.verifier(key.public_key()), anchors


def test_p07s_an_older_export_is_called_older_not_truncated(
    older: tuple[Path, NoteVerifier, list[AnchorClaim]],
) -> None:
    folder, verifier, anchors = older
    with pytest.raises(OlderThanAnchor) as caught:
        verify_export(DirectorySource(folder), verifier, anchors=anchors)
    message = str(caught.value)
    assert message.startswith("this export (size 5) is consistent in itself")
    assert "older than the operator's anchor #1 (size 6, block 9)" in message
    assert caught.value.exit_code == 1
    report = verify_export(DirectorySource(folder), verifier, anchors=anchors, allow_older=True)
    assert report.size == 5 and report.anchors == 1
    assert [a.index for a in report.newer_anchors] == [1]


def test_p07s_the_anchors_an_older_export_covers_are_still_checked(
    older: tuple[Path, NoteVerifier, list[AnchorClaim]],
) -> None:
    folder, verifier, anchors = older
    wrong = [AnchorClaim(index=0, size=5, root=b"\x01" * 32, block_number=7), anchors[1]]
    with pytest.raises(VerificationError, match="anchor #0"):
        verify_export(DirectorySource(folder), verifier, anchors=wrong, allow_older=True)
