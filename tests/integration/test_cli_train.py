"""``ailedger train simulate`` in separate OS processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run(*args: str, check: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "ailedger", "train", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == check, (done.returncode, done.stdout, done.stderr)
    return done


SMALL = ("--clients", "6", "--rounds", "2", "--lr", "0.5")


def test_json_document_and_determinism_across_processes() -> None:
    args = (*SMALL, "--malicious", "1", "--attack", "sign_flip", "--seed", "3", "--json")
    first = json.loads(run(*args).stdout)
    assert 0.5 < first["final_accuracy"] <= 1.0
    assert [r["round"] for r in first["rounds"]] == [0, 1]
    assert first["rounds"][-1]["test_accuracy"] == first["final_accuracy"]
    assert all(0 in r["flagged"] for r in first["rounds"])
    assert first["config"]["attack"] == "sign_flip"
    second = json.loads(run(*args).stdout)
    assert second["model_digest"] == first["model_digest"]
    other = json.loads(run(*args[:-3], "--seed", "4", "--json").stdout)
    assert other["model_digest"] != first["model_digest"]


def test_text_output_goes_to_stderr() -> None:
    done = run(*SMALL, "--model", "mlp", "--partition", "dirichlet:1")
    assert done.stdout == ""
    assert "final accuracy" in done.stderr
    assert "rounds" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--attack", "poison"), "unknown attack 'poison'"),
        (("--rule", "mean"), "unknown rule 'mean'"),
        (("--clients", "4", "--malicious", "4"), "must be fewer than the clients"),
        (("--partition", "dirichlet:zero"), "dirichlet ALPHA must be a positive number"),
        (("--data", "mnist", "--data-dir", "/nonexistent/mnist"), "MNIST folder not found"),
    ],
)
def test_bad_options_exit_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    done = run(*args, check=2)
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert message in lines[0]
