"""Anchor throughput and gas, on the embedded chain and on a real anvil node, side by side.

Measures, for each backend: anchors per second sent one at a time (each waits for its
receipt), anchors per second with all transactions in flight before waiting, gas per anchor,
and for the embedded chain the time to open it as it grows (it must not grow with length).

    python benchmarks/ledger.py [--anchors N] [--out benchmarks/results/ledger.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from _anvil import spawn_anvil
from ailedger.ledger import AnchorRegistry, Ledger, LedgerSettings, Signer

ROOT = Path(__file__).resolve().parent.parent


def measure(ledger: Ledger, anchors: int) -> dict[str, Any]:
    registry = AnchorRegistry.deploy(ledger)
    origin = hashlib.sha256(secrets.token_bytes(8)).digest()
    gas: list[int] = []
    started = time.perf_counter()
    for size in range(1, anchors + 1):
        gas.append(
            registry.anchor(origin, size, hashlib.sha256(str(size).encode()).digest()).gas_used
        )
    sequential = anchors / (time.perf_counter() - started)
    started = time.perf_counter()
    pending = [
        registry.send_anchor(origin, size, b"\x01" * 32)
        for size in range(anchors + 1, 2 * anchors + 1)
    ]
    for p in pending:
        ledger.wait(p)
    in_flight = anchors / (time.perf_counter() - started)
    return {
        "anchors": anchors,
        "anchors_per_s_sequential": round(sequential, 1),
        "anchors_per_s_in_flight": round(in_flight, 1),
        "gas_first_anchor_of_origin": gas[0],
        "gas_per_anchor_median": int(statistics.median(gas[1:])),
    }


def open_times(directory: Path, signer: Signer, steps: int, per_step: int) -> list[dict[str, Any]]:
    """Time to open the embedded chain after it has grown by ``per_step`` blocks, repeatedly."""
    rows = []
    for _ in range(steps):
        started = time.perf_counter()
        ledger = Ledger.embedded(
            directory, signer=signer, genesis_balances={signer.address: 10**27}
        )
        opened = time.perf_counter() - started
        rows.append({"blocks": ledger.block_number(), "open_s": round(opened, 4)})
        pending = [ledger.send({"to": signer.address, "gas": 21000}) for _ in range(per_step)]
        for p in pending:
            ledger.wait(p)
        ledger.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchors", type=int, default=200)
    parser.add_argument("--port", type=int, default=18645)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ledger.json")
    args = parser.parse_args()
    signer = Signer.from_key(secrets.token_bytes(32))
    results: dict[str, Any] = {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        with Ledger.embedded(
            Path(tmp) / "chain", signer=signer, genesis_balances={signer.address: 10**27}
        ) as ledger:
            results["embedded"] = measure(ledger, args.anchors)
        results["embedded_open"] = open_times(Path(tmp) / "growth", signer, 6, 100)
    anvil = spawn_anvil(args.port)
    try:
        url = f"http://127.0.0.1:{args.port}"
        requests.post(
            url,
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "anvil_setBalance",
                "params": [signer.address, hex(10**24)],
            },
            timeout=5,
        )
        ledger = Ledger.connect(url, signer=signer, settings=LedgerSettings(poll_interval=0.005))
        results["anvil"] = measure(ledger, args.anchors)
    finally:
        anvil.terminate()
        anvil.wait()
    emb, anv = results["embedded"], results["anvil"]
    results["ratio_embedded_to_anvil_sequential"] = round(
        emb["anchors_per_s_sequential"] / anv["anchors_per_s_sequential"], 3
    )
    header = ("backend", "seq anchors/s", "in-flight/s", "gas/anchor", "gas first")
    print(f"{header[0]:<10}{header[1]:>15}{header[2]:>13}{header[3]:>12}{header[4]:>11}")
    for name in ("embedded", "anvil"):
        r = results[name]
        print(
            f"{name:<10}{r['anchors_per_s_sequential']:>15}{r['anchors_per_s_in_flight']:>13}"
            f"{r['gas_per_anchor_median']:>12}{r['gas_first_anchor_of_origin']:>11}"
        )
    ratio = results["ratio_embedded_to_anvil_sequential"]
    print(f"embedded/anvil sequential throughput ratio: {ratio}")
    print("embedded chain open time as it grows:")
    for row in results["embedded_open"]:
        print(f"  {row['blocks']:>5} blocks: {row['open_s'] * 1000:.1f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
