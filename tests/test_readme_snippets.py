"""The README's Python snippets run as written.

Every ```python block of README.md is run in a fresh interpreter, in a temporary folder
prepared as the README says comes before it: an ``ailedger init`` workspace (``.ailedger/``)
in the current folder, with the passphrase the snippets write (``"..."``). A snippet that
names a node (``rpc="http://127.0.0.1:8545"``) runs as the partner of an organisation on that
node: a real anvil node stands for it (its URL replaces the README's), the organisation's
workspace on it registered the file the snippet loads (``provenance register FILE --kind
model``, which writes the bundle beside it) and its ``keys/ed25519.pub`` was handed over as
``orgA.pub``. A failure names the block's line in README.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli import run
from tests.conftest import AnvilNode

README = Path(__file__).resolve().parents[1] / "README.md"
#: the passphrase the README's snippets unlock the workspace with
SNIPPET_PASSPHRASE = "..."
#: the node URL the README's snippets name; an anvil node of the tests stands in for it
README_NODE = "http://127.0.0.1:8545"


@dataclass(frozen=True)
class Snippet:
    line: int
    """Line of README.md where the code starts (after the opening fence)."""
    code: str


def python_snippets(text: str) -> list[Snippet]:
    """Every ```python fenced block of ``text``, with the line its code starts on."""
    out: list[Snippet] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if re.fullmatch(r"\s*```python\s*", lines[i]):
            start = i + 1
            end = start
            while end < len(lines) and not lines[end].strip().startswith("```"):
                end += 1
            out.append(Snippet(start + 1, "\n".join(lines[start:end]) + "\n"))
            i = end
        i += 1
    return out


SNIPPETS = python_snippets(README.read_text())


def test_the_readme_has_python_snippets() -> None:
    assert len(SNIPPETS) >= 3
    assert python_snippets("a\n```python\nx = 1\n```\n") == [Snippet(3, "x = 1\n")]


def _env(env: dict[str, str], workspace: Path) -> dict[str, str]:
    return {**env, "AILEDGER_PASSPHRASE": SNIPPET_PASSPHRASE, "AILEDGER_WORKSPACE": str(workspace)}


def _partner_setup(code: str, folder: Path, env: dict[str, str], node: AnvilNode) -> str:
    """Org A on ``node`` registers the file the snippet loads; return the code on that node."""
    import numpy as np

    org_a = folder / "org-a"
    env_a = _env(env, org_a)
    refused = run("init", "--rpc", node.url, "--unsafe-fast-kdf", env=env_a, check=1)
    assert "no ether" in refused.stderr
    address = json.loads((org_a / "keys" / "ethereum.json").read_text())["address"]
    node.fund("0x" + address)
    run("init", "--unsafe-fast-kdf", env=env_a)
    for name in re.findall(r"load_verified\(\s*\"([^\"]+)\"", code):
        np.savez(folder / name, weights=np.arange(6, dtype=np.float32).reshape(2, 3))
        run("provenance", "register", str(folder / name), "--kind", "model", env=env_a)
        assert (folder / (name + ".ailedger.json")).is_file()
    (folder / "orgA.pub").write_bytes((org_a / "keys" / "ed25519.pub").read_bytes())
    return code.replace(README_NODE, node.url)


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where `ailedger init` made `.ailedger/` (embedded chain), copied per snippet."""
    folder = tmp_path_factory.mktemp("readme")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AILEDGER_")}
    run("init", "--unsafe-fast-kdf", env=_env(env, folder / ".ailedger"))
    return folder / ".ailedger"


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"README.md:{s.line}" for s in SNIPPETS])
def test_readme_snippet_runs(
    snippet: Snippet,
    tmp_path: Path,
    env: dict[str, str],
    initialised: Path,
    request: pytest.FixtureRequest,
) -> None:
    code = snippet.code
    shutil.copytree(initialised, tmp_path / ".ailedger")
    if README_NODE in code:
        code = _partner_setup(code, tmp_path, env, request.getfixturevalue("anvil"))
    script = tmp_path / f"readme_line_{snippet.line}.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, script.name],
        cwd=tmp_path,
        env={k: v for k, v in env.items() if not k.startswith("AILEDGER_")},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, (
        f"the Python snippet at README.md line {snippet.line} fails:\n{done.stderr[-3000:]}"
    )
