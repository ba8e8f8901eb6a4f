"""The examples of examples/ (other than the consortium), each run as a user would: a separate
process, then its JSON summary checked against what its README promises."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run_example(
    name: str, tmp_path: Path, env: dict[str, str], *args: str, timeout: float = 300
) -> tuple[dict[str, Any], str]:
    """Run ``examples/NAME/run.py`` in ``tmp_path``; its summary and stdout."""
    summary = tmp_path / "summary.json"
    work = tmp_path / "work"
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / name / "run.py"),
            "--dir",
            str(work),
            "--summary",
            str(summary),
            *args,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    return json.loads(summary.read_text()), done.stdout


def test_sklearn_pipeline(tmp_path: Path, env: dict[str, str]) -> None:
    doc, out = run_example("sklearn_pipeline", tmp_path, env)
    assert doc["ok"] is True
    # breast cancer, 80 % for cross-validation: 455 rows, each held out once
    assert doc["cv_decisions"] == 455
    assert doc["cv_scores_match_unaudited"] is True
    assert doc["actors"] == ["frontdesk", "second-opinion"]
    assert doc["model_digest"].startswith("sha256:") and len(doc["model_digest"]) == 71
    assert doc["verified_size"] == 455 + 12
    assert doc["export_entries_checked"] == 12
    assert (tmp_path / "work" / "export" / "checkpoint").is_file()
    assert out.rstrip().endswith("ok")


def test_safetensors_model(tmp_path: Path, env: dict[str, str]) -> None:
    doc, _ = run_example("safetensors_model", tmp_path, env)
    assert doc["ok"] is True
    assert doc["dtypes"] == ["BF16", "F32", "F8_E4M3", "F8_E5M2"]
    assert doc["tensors_match"] is True
    assert doc["opened_with"] == "load_verified"
    assert doc["tamper_refused"] is True
    assert "model.safetensors" in doc["tamper_error"]
    assert doc["restored_loads"] is True
    bundle = json.loads(Path(doc["bundle"]).read_text())
    assert bundle["digest"] == doc["digest"]
    assert bundle["name"] == "model.safetensors"


@pytest.mark.slow
def test_flower_app(tmp_path: Path, env: dict[str, str]) -> None:
    scratch = Path("/tmp") / f"ray-{tmp_path.name[-12:]}"  # Ray's socket paths stay short
    scratch.mkdir(exist_ok=True)
    env = {
        **env,
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": str(scratch),
        "FLWR_HOME": str(scratch),
    }
    try:
        doc, _ = run_example("flower_app", tmp_path, env, timeout=600)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert doc["ok"] is True
    assert [r["round"] for r in doc["rounds"]] == [1, 2, 3]
    assert [r["nodes"] for r in doc["rounds"]] == [4, 4, 3]
    assert doc["rounds"][0]["flagged"] == [1]  # the booster, and only it
    assert doc["digests_on_chain"] is True
    assert doc["replayed_digests_match"] is True
    assert doc["booster_excluded"] is True
    assert doc["accuracy"]["final"] > doc["accuracy"]["initial"]
