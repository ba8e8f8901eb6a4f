"""``ailedger train simulate`` in separate OS processes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def test_text_output_goes_to_stdout_progress_to_stderr() -> None:
    done = run(*SMALL, "--model", "mlp", "--partition", "dirichlet:1")
    assert "final accuracy" in done.stdout
    assert "rounds" in done.stdout
    assert "final accuracy" not in done.stderr
    assert "training 6 parties for 2 rounds" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--attack", "poison"), "'poison' is not one of 'none', 'label_flip'"),
        (("--rule", "mean"), "'mean' is not one of 'auto', 'fedavg'"),
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


# --------------------------------------------------------------------------- train join task files


@pytest.fixture(scope="module")
def task_doc() -> dict[str, Any]:
    """A valid task file's document (a classifier task on digits, two parties)."""
    from ailedger.federated._classifier import classifier_spec
    from ailedger.federated.protocol import TaskRef

    spec = classifier_spec(parties=2, rounds=2, quorum=2)
    ref = TaskRef(
        chain_id=1337,
        contract="0x" + "12" * 20,
        task=0,
        spec=spec,
        participants=("0x" + "34" * 20, "0x" + "56" * 20),
    )
    return ref.to_json()


@dataclass
class Done:
    returncode: int
    stderr: str


def join(task_file: Path, *args: str, process: bool = False) -> Done:
    """``ailedger train join TASK_FILE ARGS`` through the CLI's entry point: in this process
    (quick), or in a new one with ``process``."""
    argv = ["train", "join", str(task_file), *args]
    env = {**os.environ, "AILEDGER_WORKSPACE": str(task_file.parent / "no-workspace")}
    if process:
        done = subprocess.run(
            [sys.executable, "-m", "ailedger", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        return Done(done.returncode, done.stderr)
    from ailedger.cli import main

    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(stderr):
        patch.setattr(sys, "argv", ["ailedger", *argv])
        patch.setenv("AILEDGER_WORKSPACE", env["AILEDGER_WORKSPACE"])
        with pytest.raises(SystemExit) as exit_:
            main()
    code = exit_.value.code
    return Done(code if isinstance(code, int) else 1, stderr.getvalue())


def changed(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``doc`` with ``path`` (dotted) set to ``value`` (DELETE removes it)."""
    copy = json.loads(json.dumps(doc))
    *parents, last = path.split(".")
    where = copy
    for key in parents:
        where = where[key]
    if value is DELETE:
        del where[last]
    else:
        where[last] = value
    if not path.startswith("spec_digest"):
        copy.pop("spec_digest", None)
    return copy


DELETE = object()

BAD_TASK_FILES: list[tuple[str, Any, str]] = [
    # (what to change, the value, what the one line says)
    ("task", DELETE, "missing field 'task'"),
    ("spec.rounds", DELETE, "missing field 'rounds'"),
    ("chain_id", "1337", "chain_id must be an integer, not a string"),
    ("task", 1.5, "task must be an integer, not a number"),
    ("task", -1, "task must be in [0,"),
    ("spec.quorum", True, "quorum must be an integer, not a boolean"),
    ("spec.rounds", 2**40, "rounds must be in [1, 4294967296]"),
    ("spec.shape", [0], "shape[0] must be in [1,"),
    ("spec.shape", [2**20, 2**20], "has more than 8388608 values"),
    ("spec.shape", "650", "shape must be a list, not a string"),
    ("spec.max_norm", "big", "max_norm must be a number, not a string"),
    ("spec.exclude_fraction", None, "exclude_fraction must be a number, not null"),
    ("spec.initial_digest", "ab", "initial_digest must be 64 lowercase hex digits"),
    ("spec.extra", [], "extra must be an object, not a list"),
    ("spec.extra.shards", 10**9, "extra.shards must be in [1, 64]"),
    ("spec.extra.model", {"hidden": 3}, "missing extra.model"),
    ("spec.extra.lr", -1, "extra.lr must be a positive finite number"),
    ("spec.format", "other/v9", "not a training task spec"),
    ("spec.surprise", 1, "unknown field 'surprise'"),
    ("participants", ["0x1234"], "participants[0] must be an address"),
    ("participants", [], "participants must list 1 to 64 addresses"),
    ("contract", {"address": "0x00"}, "contract must be a string, not an object"),
    ("spec", None, "spec must be an object, not null"),
    ("spec_digest", "00" * 32, "the spec does not match its spec_digest"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_TASK_FILES)
def test_a_bad_task_file_field_exits_2_with_one_line(
    tmp_path: Path, task_doc: dict[str, Any], path: str, value: Any, message: str
) -> None:
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps(changed(task_doc, path, value)))
    check_one_line(join(task_file), message)


BAD_TASK_BYTES: list[tuple[str, bytes, str]] = [
    ("nested", b"[" * 100_000 + b"]" * 100_000, "JSON nested deeper than"),
    ("nested-object", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "JSON nested deeper than"),
    ("latin-1", b'[[{"contract": "caf\xe9"}]]', "not UTF-8"),
    ("duplicate", b'{"task": 1, "task": 2}', "duplicate key 'task'"),
    ("not-json", b"chain_id = 1337\n", "not JSON"),
    ("empty", b"", "not JSON"),
    ("array", b"[1, 2]", "not a JSON object"),
    ("nan", b'{"task": NaN}', "NaN is not a JSON number"),
    ("huge", b" " * (2 * 1024 * 1024) + b"{}", "larger than 1048576 bytes"),
]


@pytest.mark.parametrize(
    ("content", "message"), [c[1:] for c in BAD_TASK_BYTES], ids=[c[0] for c in BAD_TASK_BYTES]
)
def test_a_malformed_task_file_exits_2_with_one_line(
    tmp_path: Path, content: bytes, message: str
) -> None:
    task_file = tmp_path / "task.json"
    task_file.write_bytes(content)
    check_one_line(join(task_file, process=content.startswith(b"[[")), message)


def test_an_unreadable_task_file_or_announce_exits_2(
    tmp_path: Path, task_doc: dict[str, Any]
) -> None:
    check_one_line(join(tmp_path / "absent.json"), "cannot read the task file")
    check_one_line(join(tmp_path), "cannot read the task file")
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps(task_doc))
    check_one_line(join(task_file, "--announce", "http://[::1"), "malformed blob endpoint")
    check_one_line(join(task_file, "--announce", "http://0.0.0.0:8080"), "no address to fetch")
    done = join(task_file, "--port", "99999")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


def check_one_line(done: Done, message: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert message in lines[0], lines[0]
