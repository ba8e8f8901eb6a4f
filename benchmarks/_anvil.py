"""Start an anvil node for a benchmark: the one installed by ``make`` (npm), on loopback.

Every benchmark's anvil runs with the same flags: the Prague hardfork and a bounded on-disk
state cache (anvil keeps old states under ``~/.foundry/anvil/tmp`` and a killed node never
clears them; long runs once filled the disk).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANVIL = ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def spawn_anvil(port: int, *extra: str, timeout: float = 20.0) -> subprocess.Popen[bytes]:
    """Start anvil on ``127.0.0.1:port`` (``extra``: more flags) and wait until it accepts
    connections; the caller stops it by its PID. Raises RuntimeError if it does not start."""
    if not ANVIL.exists():
        raise RuntimeError(f"anvil is not installed at {ANVIL}: run `make dev`")
    flags = ["--host", "127.0.0.1", "--port", str(port), "--hardfork", "prague", "--silent"]
    flags += ["--max-persisted-states", "256", *extra]
    proc = subprocess.Popen(
        [str(ANVIL), *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                proc.wait()
                raise RuntimeError("anvil did not start") from None
            time.sleep(0.05)
