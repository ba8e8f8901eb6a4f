"""`ailedger log append FILE` as a user runs it: peak memory and throughput of one invocation.

The input is N JSON lines of decision records (about 250 bytes each, as in auditlog.py). The
command runs in its own process under GNU time, which reports its peak resident memory. The
input is streamed and the whole invocation is one transaction, so memory must stay flat as N
grows (it was 573 MB for 200k lines when the file was read whole).

    python benchmarks/cli_append.py [--lines 200000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.auditlog import records

ROOT = Path(__file__).resolve().parent.parent


def peak_rss_mb(argv: list[str], env: dict[str, str], tmp: Path) -> tuple[int, float, float, bytes]:
    """Run ``argv`` under GNU time; return its exit code, seconds, peak RSS in MB and stderr.

    (GNU time, a small process, forks the command: the rusage of a child forked from this
    larger Python process would count the parent's pages it started with.)
    """
    report = tmp / "time.txt"
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", str(report), *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    seconds = time.perf_counter() - started
    kib = int(report.read_text().split()[-1])
    return done.returncode, seconds, kib / 1024, done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cli_append.json")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AILEDGER_")}
    env["AILEDGER_PASSPHRASE"] = "benchmark passphrase, not a secret"  # noqa: S105
    result: dict[str, Any] = {"lines": args.lines}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "records.jsonl"
        with source.open("w") as out:
            for record in records(args.lines):
                out.write(json.dumps(record) + "\n")
        result["input_mb"] = round(source.stat().st_size / 1e6, 1)
        for label, count in (("small", 1_000), ("full", args.lines)):
            workspace = tmp / f"ws-{label}"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "ailedger",
                    "init",
                    "-w",
                    str(workspace),
                    "--unsafe-fast-kdf",
                ],
                env=env,
                check=True,
                capture_output=True,
            )
            part = source if count == args.lines else tmp / "small.jsonl"
            if part != source:
                with source.open() as full, part.open("w") as small:
                    for _ in range(count):
                        small.write(full.readline())
            argv = [
                sys.executable,
                "-m",
                "ailedger",
                "log",
                "append",
                str(part),
                "-w",
                str(workspace),
            ]
            code, seconds, rss, stderr = peak_rss_mb(argv, env, tmp)
            if code != 0:
                raise SystemExit(f"log append failed: {stderr.decode(errors='replace')}")
            result[label] = {
                "lines": count,
                "seconds": round(seconds, 2),
                "lines_per_s": round(count / seconds),
                "peak_rss_mb": round(rss, 1),
            }
            print(f"{count:>9} lines: {seconds:6.2f} s, peak RSS {rss:6.1f} MB", flush=True)
    result["rss_growth_mb"] = round(result["full"]["peak_rss_mb"] - result["small"]["peak_rss_mb"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
