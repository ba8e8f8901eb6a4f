"""Fuzzing campaign: every parser of outside data, many inputs each, failures classified.

Each parser (the targets of ``tests/property/fuzz_targets.py``: JSON, JSON lines, checkpoints,
signed notes, tlog-proof, tiles, the sealed format, task files, config, JSON-RPC replies) runs
in its own child process, fed by a mutation-based generator from valid seeds: bit flips, byte
sets, inserted dictionary tokens (line ends, U+2028, bad UTF-8, huge numbers, deep nesting),
deletions, truncations, duplications, repeats, splices of two inputs, and a few random byte
strings. Inputs that parse are kept (up to 256) and mutated further. Every outcome is
classified:

- accepted, or rejected with an ``AiledgerError``: fine (a witness answers every request with
  a status, so all its inputs count as accepted: it must never raise nor cosign a forgery);
- internal error: any other exception (the user would see a traceback);
- crash: the process would die or hang (a signal such as SIGSEGV, ``RecursionError``,
  ``MemoryError``, an input slower than ``--slow`` seconds);
- forgery: a mutated signed or sealed document verified with another meaning.

Failures are grouped by signature (exception type and innermost ``ailedger`` frame); the first
input of each is saved in ``fuzz-failures/`` beside the results file. The target is 0 crashes,
0 internal errors and 0 forgeries.

    python benchmarks/fuzz.py [--inputs 1000000] [--seconds S] [--targets json,sealed]
                              [--seed 0] [--out benchmarks/results/fuzz.json] [--merge]
"""

from __future__ import annotations

import argparse
import base64
import faulthandler
import json
import mmap
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MAX_INPUT = 512 * 1024  # generated inputs stay below this (the crash buffer holds one)
POOL = 256
KINDS = ("crash", "internal", "forgery")


# --------------------------------------------------------------------------- the generator


class Mutator:
    """Random mutations of a pool of inputs that starts with the valid seeds."""

    def __init__(self, seeds: tuple[bytes, ...], tokens: tuple[bytes, ...], seed: str) -> None:
        from tests.property.fuzz_targets import OPS

        self.rng = random.Random(seed)
        self.seeds = list(seeds)
        self.pool: list[bytes] = []
        self.tokens = tokens
        self.ops = OPS

    def keep(self, data: bytes) -> None:
        """Remember an accepted mutant: mutating it reaches deeper into the parser."""
        if len(self.pool) < POOL:
            self.pool.append(data)
        else:
            self.pool[self.rng.randrange(POOL)] = data

    def next(self) -> bytes:
        from tests.property.fuzz_targets import apply_ops

        rng = self.rng
        roll = rng.random()
        if roll < 0.03:
            return rng.randbytes(rng.choice((0, 1, 2, 8, 64, 512)))
        base = rng.choice(self.pool) if self.pool and roll < 0.35 else rng.choice(self.seeds)
        if roll > 0.95:
            other = rng.choice(self.seeds + self.pool)
            cut, at = rng.randrange(len(base) + 1), rng.randrange(len(other) + 1)
            base = base[:cut] + other[at:]
        ops = []
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
            kind = rng.choice(self.ops)
            amount = rng.choice((rng.randrange(8), rng.randrange(256), rng.randrange(20_000)))
            if kind == "repeat" and rng.random() < 0.9:
                amount = rng.randrange(64)
            payload = rng.randbytes(rng.randrange(1, 9))
            if kind == "token":
                amount = rng.randrange(len(self.tokens))
            ops.append((kind, rng.randrange(len(base) + 1), amount, payload))
        data = apply_ops(base, ops, self.tokens)
        return data[:MAX_INPUT]


# --------------------------------------------------------------------------- one parser (child)


def _signature(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/ailedger/" in f.filename] or frames
    where = ""
    if ours:
        frame = ours[-1]
        path = frame.filename.split("/src/")[-1] if "/src/" in frame.filename else frame.filename
        where = f" at {path}:{frame.lineno} ({frame.name})"
    return f"{type(exc).__name__}{where}"


def run_child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    trace = Path(args.crash_dir) / "trace.txt"
    with trace.open("w") as trace_file:
        faulthandler.enable(file=trace_file)
        result = fuzz_one(args, Path(args.crash_dir) / "input.bin")
    sys.stdout.write(json.dumps(result) + "\n")


def fuzz_one(args: argparse.Namespace, crash_file: Path) -> dict[str, Any]:
    from tests.property.fuzz_targets import TARGETS, classify

    target = TARGETS[args.child]
    mutator = Mutator(target.seeds, target.all_tokens, f"{args.seed}:{target.name}")
    with crash_file.open("w+b") as handle:
        handle.truncate(4 + MAX_INPUT)
        current = mmap.mmap(handle.fileno(), 4 + MAX_INPUT)
    counts = dict.fromkeys(("accepted", "rejected", *KINDS), 0)
    failures: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    deadline = started + args.seconds if args.seconds else None
    progress_at = started + 10
    tried = 0
    while tried < args.inputs:
        data = mutator.next()
        current[:4] = len(data).to_bytes(4, "big")
        current[4 : 4 + len(data)] = data
        tried += 1
        t0 = time.perf_counter()
        try:
            target.run(data)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a parser's SystemExit is a failure like any other
            kind = classify(exc) if isinstance(exc, Exception) else "crash"
            counts[kind] += 1
            if kind in KINDS:
                _record(failures, kind, _signature(exc), str(exc), data)
        else:
            counts["accepted"] += 1
            if data not in target.seeds:
                mutator.keep(data)
        now = time.perf_counter()
        if now - t0 > args.slow:
            counts["crash"] += 1
            _record(
                failures, "crash", f"slow input (over {args.slow:g} s)", f"{now - t0:.1f} s", data
            )
        if tried % 256 == 0:
            if deadline is not None and now > deadline:
                break
            if now > progress_at:
                rate = tried / (now - started)
                print(f"  {target.name}: {tried:,} inputs, {rate:,.0f}/s", file=sys.stderr)
                progress_at = now + 10
    elapsed = time.perf_counter() - started
    current.close()
    return {
        "parser": target.name,
        "inputs": tried,
        "seconds": round(elapsed, 2),
        "inputs_per_s": round(tried / elapsed) if elapsed else 0,
        **counts,
        "signatures": list(failures.values()),
    }


def _record(
    failures: dict[str, dict[str, Any]], kind: str, sig: str, msg: str, data: bytes
) -> None:
    entry = failures.get(sig)
    if entry is None:
        failures[sig] = {
            "kind": kind,
            "signature": sig,
            "count": 1,
            "message": msg[:300],
            "example_len": len(data),
            "example_b64": base64.b64encode(data[:4096]).decode(),
            "_example": base64.b64encode(data).decode(),
        }
    else:
        entry["count"] += 1


# --------------------------------------------------------------------------- the campaign


def run_target(name: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ailedger-fuzz-") as tmp:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            name,
            "--inputs",
            str(args.inputs),
            "--seconds",
            str(args.seconds),
            "--seed",
            str(args.seed),
            "--slow",
            str(args.slow),
            "--crash-dir",
            tmp,
        ]
        limit = (args.seconds or 24 * 3600) * 2 + 120
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        try:
            proc = subprocess.run(
                command, stdout=subprocess.PIPE, timeout=limit, env=env, check=False
            )
            code, out = proc.returncode, proc.stdout
        except subprocess.TimeoutExpired as exc:
            code, out = -signal.SIGKILL, exc.stdout or b""
        if code == 0:
            result: dict[str, Any] = json.loads(out)
        else:
            buffer, trace_file = Path(tmp, "input.bin"), Path(tmp, "trace.txt")
            raw = buffer.read_bytes() if buffer.exists() else b""
            data = raw[4 : 4 + int.from_bytes(raw[:4], "big")] if len(raw) >= 4 else b""
            trace = trace_file.read_text(errors="replace")[-2000:] if trace_file.exists() else ""
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            result = {"parser": name, "inputs": None, "seconds": None, "inputs_per_s": None}
            result.update(dict.fromkeys(("accepted", "rejected", *KINDS), 0))
            result["crash"] = 1
            failures: dict[str, dict[str, Any]] = {}
            _record(failures, "crash", f"child process died ({how})", trace, data)
            result["signatures"] = list(failures.values())
    failures_dir = args.out.parent / "fuzz-failures"
    for stale in failures_dir.glob(f"{name}-*.bin"):
        stale.unlink()
    for number, entry in enumerate(result["signatures"]):
        example = base64.b64decode(entry.pop("_example"))
        failures_dir.mkdir(parents=True, exist_ok=True)
        path = failures_dir / f"{name}-{number}.bin"
        path.write_bytes(example)
        entry["example_file"] = str(path)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per parser")
    parser.add_argument("--seconds", type=float, default=0, help="time cap per parser (0: none)")
    parser.add_argument("--targets", default="", help="comma-separated parser names (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slow", type=float, default=5.0, help="an input slower than this crashes")
    parser.add_argument("--out", type=Path, default=RESULTS / "fuzz.json")
    parser.add_argument(
        "--merge", action="store_true", help="replace only these parsers' rows in --out"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--crash-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return

    sys.path.insert(0, str(ROOT))
    from tests.property.fuzz_targets import TARGETS

    names = [n for n in args.targets.split(",") if n] or list(TARGETS)
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    rows = []
    for name in names:
        print(f"fuzzing {name} ...", file=sys.stderr)
        rows.append(run_target(name, args))
    header = (
        "parser",
        "inputs",
        "inputs/s",
        "accepted",
        "crashes",
        "internal",
        "forgeries",
        "sigs",
    )
    print(f"{header[0]:<18}" + "".join(f"{h:>11}" for h in header[1:]))
    for r in rows:
        cells = (
            r["inputs"],
            r["inputs_per_s"],
            r["accepted"],
            r["crash"],
            r["internal"],
            r["forgery"],
            len(r["signatures"]),
        )
        print(
            f"{r['parser']:<18}"
            + "".join(f"{'-':>11}" if c is None else f"{c:>11,}" for c in cells)
        )
        for e in r["signatures"]:
            message = " ".join(e["message"].split())[:120]
            print(f"    {e['kind']}: {e['signature']} x{e['count']}: {message}")
    settings = {
        "inputs_per_parser": args.inputs,
        "seconds_cap_per_parser": args.seconds or None,
        "seed": args.seed,
        "slow_input_s": args.slow,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for row in rows:
        row["settings"] = settings
    if args.merge and args.out.exists():
        fresh = {r["parser"] for r in rows}
        kept = [r for r in json.loads(args.out.read_text())["parsers"] if r["parser"] not in fresh]
        order = {name: i for i, name in enumerate(TARGETS)}
        rows = sorted(kept + rows, key=lambda r: order.get(r["parser"], len(order)))
    totals = {k: sum(r[k] for r in rows) for k in ("crash", "internal", "forgery")}
    totals["inputs"] = sum(r["inputs"] or 0 for r in rows)
    results = {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform()},
        "parsers": rows,
        "totals": totals,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"total: {totals['inputs']:,} inputs, {totals['crash']} crashes, "
        f"{totals['internal']} internal errors, {totals['forgery']} forgeries -> {args.out}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
