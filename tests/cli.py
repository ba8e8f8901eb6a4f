"""Running the ``ailedger`` CLI in its own OS process from tests, and reading its errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run(
    *args: str,
    env: dict[str, str],
    check: int | None = 0,
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``ailedger ARGS`` in a new process with no stdin; asserts its exit code (``check``)
    unless None. A CLI start costs seconds on a loaded machine: use it sparingly."""
    done = subprocess.run(
        [sys.executable, "-m", "ailedger", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check is not None:
        assert done.returncode == check, (done.returncode, done.stdout, done.stderr[-4000:])
    return done


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The single ``error: ...`` line a failed command printed (and nothing else, no traceback)."""
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    return lines[0]
