"""The main job, end to end on the embedded chain, in a fresh temporary workspace.

So far it shows the ledger: a workspace is created with its keys and contracts, checkpoints are
anchored on the embedded chain, the chain is closed, and a second process reads the anchors
back from the workspace, as an auditor would. Each capability adds its part as it lands.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ailedger.errors import VerificationError
from ailedger.workspace import Workspace

__all__ = ["run_demo"]


def run_demo(say: Callable[[str], None], *, keep: Path | None = None) -> dict[str, Any]:
    """Run the demo and return its report; ``say`` receives one line per step.

    With ``keep`` the workspace is created there and left behind; otherwise in a temporary
    folder that is removed at the end.
    """
    if keep is not None:
        return _run(keep, say)
    with tempfile.TemporaryDirectory(prefix="ailedger-demo-") as tmp:
        return _run(Path(tmp) / "workspace", say)


def _run(path: Path, say: Callable[[str], None]) -> dict[str, Any]:
    passphrase = secrets.token_urlsafe(24)
    say(f"1. init: a workspace with fresh keys at {path}")
    workspace = Workspace.init(path, passphrase=lambda: passphrase)
    origin_name = "demo.ailedger.local/decisions"
    origin = hashlib.sha256(origin_name.encode()).digest()
    roots: list[tuple[int, bytes]] = []
    with workspace.ledger(passphrase=lambda: passphrase) as ledger:
        registry = workspace.anchor_registry(ledger)
        say(
            f"   chain {ledger.chain_id} (embedded), account {ledger.account}, "
            f"AnchorRegistry at {registry.address}"
        )
        say(f"2. anchor: three checkpoints of the log {origin_name!r}")
        for size in (1, 5, 12):
            root = hashlib.sha256(f"{origin_name} root at size {size}".encode()).digest()
            receipt = registry.anchor(origin, size, root)
            roots.append((size, root))
            say(f"   size {size:>2}  root {root.hex()[:16]}…  block {receipt.block_number}")
    say("3. restart: the chain is closed; a new process opens the workspace and reads it back")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "ailedger",
            "chain",
            "anchors",
            "0x" + origin.hex(),
            "--workspace",
            str(path),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise VerificationError(f"reading the anchors back failed: {completed.stderr.strip()}")
    read_back = json.loads(completed.stdout)["anchors"]
    found = [(a["size"], bytes.fromhex(a["root"][2:])) for a in read_back]
    if found != roots:
        raise VerificationError("the anchors read back differ from those written")
    say(f"4. verified: the other process read all {len(found)} anchors, identical")
    return {
        "workspace": str(path),
        "origin": "0x" + origin.hex(),
        "anchors_written": len(roots),
        "anchors_read_back": len(found),
        "ok": True,
    }
