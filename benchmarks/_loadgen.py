"""Load generator for ``benchmarks/service.py``: HTTP/1.1 keep-alive appends from one process.

Each of ``--clients`` connections sends ``POST /v1/entries`` one request at a time (a closed
loop: the next request leaves when the answer to the last one is in) until ``--seconds`` have
passed, then waits for its last answer. A request carries one decision record (``--batch 1``,
a JSON object) or a JSON array of ``--batch`` records. Every record is unique and can be
rebuilt from ``(generator, client, seq)`` (:func:`record`), so the benchmark can check that
each acknowledged index holds exactly what was sent.

The client speaks HTTP/1.1 over raw asyncio streams (uvloop when installed): no HTTP library
sits between the socket and the clock, so the generator costs little CPU beside the server.

    python benchmarks/_loadgen.py --url http://127.0.0.1:8080 [--url ...] --token T --out FILE

Writes one JSON document to ``--out``: requests and entries acknowledged, answers by status,
every latency in milliseconds, the acknowledgements ``[index or first, count, client, seq]``,
elapsed wall time and the process's CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: one model digest for every record (a realistic field, the same bytes each time)
MODEL = "sha256:" + "5e" * 32


def record(generator: int, client: int, seq: int) -> dict[str, Any]:
    """The decision record number ``seq`` of ``client`` in load generator ``generator``.

    About 170 bytes as JSON; keys sorted, so its compact JSON is also its RFC 8785 form.
    """
    return {
        "actor": f"loadgen-{generator}-{client}",
        "input": [seq & 255, (seq >> 8) & 255, generator, client],
        "model": MODEL,
        "output": seq & 1,
        "seq": seq,
        "type": "decision",
    }


#: :func:`record`'s compact JSON with the numbers left out: a batch of 1,000 built with
#: ``json.dumps`` cost the generator about a third of the server's CPU per entry, on the same
#: two cores; :func:`main` checks the template against ``json.dumps`` before any load
_TEMPLATE = (
    b'{"actor":"loadgen-%d-%d","input":[%d,%d,%d,%d],"model":"'
    + MODEL.encode()
    + b'","output":%d,"seq":%d,"type":"decision"}'
)


def _encode(generator: int, client: int, seq: int) -> bytes:
    """The compact JSON of ``record(generator, client, seq)``."""
    return _TEMPLATE % (
        generator,
        client,
        seq & 255,
        (seq >> 8) & 255,
        generator,
        client,
        seq & 1,
        seq,
    )


def _check_template() -> None:
    for args in ((0, 0, 0), (3, 17, 1), (100, 63, 70_001), (7, 2, 2**40 + 5)):
        want = json.dumps(record(*args), separators=(",", ":")).encode()
        if _encode(*args) != want:
            raise SystemExit(f"the record template is wrong: {_encode(*args)!r} != {want!r}")


class HttpError(Exception):
    """The server answered something this client cannot read."""


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """One HTTP/1.1 response: (status, body, whether the server closes the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise HttpError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    length: int | None = None
    chunked = False
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif name == "connection" and value.lower() == "close":
            close = True
    if chunked:
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return status, bytes(body), close
    if length is None:
        raise HttpError("a response without Content-Length")
    return status, await reader.readexactly(length), close


async def _client(args: argparse.Namespace, number: int, ends: float, out: dict[str, Any]) -> None:
    url = urlsplit(args.url[number % len(args.url)])  # clients take the replicas in turn
    host, port = url.hostname or "127.0.0.1", url.port or 80
    head = (
        f"POST /v1/entries HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {args.token}\r\nContent-Type: application/json\r\n"
        "Content-Length: "
    ).encode()
    reader, writer = await asyncio.open_connection(host, port)
    seq = 0
    try:
        while time.monotonic() < ends:
            if args.batch == 1:
                body = _encode(args.generator, number, seq)
            else:
                first = seq * args.batch
                body = (
                    b"["
                    + b",".join(
                        _encode(args.generator, number, s) for s in range(first, first + args.batch)
                    )
                    + b"]"
                )
            writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
            started = time.perf_counter()
            status, payload, close = await _read_response(reader)
            out["latencies_ms"].append(round((time.perf_counter() - started) * 1000, 3))
            out["statuses"][str(status)] = out["statuses"].get(str(status), 0) + 1
            if status == 201:
                answer = json.loads(payload)
                if args.batch == 1:
                    out["acks"].append([int(answer["index"]), 1, number, seq])
                    out["entries"] += 1
                else:
                    count = int(answer["count"])
                    out["acks"].append([int(answer["first"]), count, number, seq])
                    out["entries"] += count
            elif len(out["errors"]) < 10:
                out["errors"].append(f"{status}: {payload[:200].decode('utf-8', 'replace')}")
            seq += 1
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    except (OSError, asyncio.IncompleteReadError, HttpError) as exc:
        out["failures"].append(f"client {number}: {type(exc).__name__}: {exc}")
    finally:
        writer.close()


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "generator": args.generator,
        "clients": args.clients,
        "batch": args.batch,
        "entries": 0,
        "statuses": {},
        "errors": [],
        "failures": [],
        "latencies_ms": [],
        "acks": [],
    }
    if args.start_at:  # several generators start together
        await asyncio.sleep(max(0.0, args.start_at - time.time()))
    started = time.monotonic()
    ends = started + args.seconds
    await asyncio.gather(*(_client(args, n, ends, out) for n in range(args.clients)))
    out["elapsed_s"] = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = usage.ru_utime + usage.ru_stime
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", action="append", required=True, help="a server (repeatable)")
    parser.add_argument("--token", required=True)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--generator", type=int, default=0, help="this generator's number")
    parser.add_argument("--start-at", type=float, default=0.0, help="wall-clock start (epoch s)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    _check_template()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(_run(args))
    else:
        result = uvloop.run(_run(args))
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
