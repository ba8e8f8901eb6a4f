"""``ailedger provenance``, ``share`` and ``keys`` in separate OS processes (embedded chain)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.integration.test_cli import one_line_error, run


@pytest.fixture
def workspace(tmp_path: Path, env: dict[str, str]) -> Path:
    path = tmp_path / "ws"
    run("init", "-w", str(path), "--unsafe-fast-kdf", env=env)
    return path


def test_register_verify_lineage(workspace: Path, env: dict[str, str], tmp_path: Path) -> None:
    ws = ["-w", str(workspace), "--json"]
    data = tmp_path / "dataset"
    data.mkdir()
    (data / "train.csv").write_text("x,y\n1,2\n")
    (data / "test.csv").write_text("x,y\n3,4\n")
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights" * 100)

    ds = json.loads(
        run("provenance", "register", str(data), "--kind", "dataset", *ws, env=env).stdout
    )
    assert ds["kind"] == "dataset"
    m = json.loads(
        run(
            "provenance",
            "register",
            str(model),
            "--kind",
            "model",
            "--parent",
            ds["digest"],
            *ws,
            env=env,
        ).stdout
    )
    assert m["parents"] == [ds["digest"]]
    assert m["gas_used"] > 21000

    again = run("provenance", "register", str(data), "--kind", "dataset", *ws, env=env, check=2)
    assert "already registered" in one_line_error(again)

    ok = json.loads(run("provenance", "verify", str(data), *ws, env=env).stdout)
    assert (ok["digest"], ok["files"]) == (ds["digest"], 2)
    (data / "test.csv").write_text("x,y\n3,5\n")
    bad = run("provenance", "verify", str(data), *ws, env=env, check=1)
    assert "'test.csv'" in one_line_error(bad)
    assert bad.stdout == ""

    picture = tmp_path / "lineage.svg"
    graph = json.loads(
        run("provenance", "lineage", m["digest"], "--graph", str(picture), *ws, env=env).stdout
    )
    assert {n["digest"] for n in graph["nodes"]} == {m["digest"], ds["digest"]}
    assert graph["edges"] == [{"parent": ds["digest"], "child": m["digest"]}]
    svg = ElementTree.parse(picture).getroot()  # noqa: S314 - our own output
    assert svg.tag.endswith("svg")
    png = tmp_path / "out.png"
    drawn = json.loads(
        run("provenance", "lineage", m["digest"], "--graph", str(png), *ws, env=env).stdout
    )
    assert drawn["graph"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gif = tmp_path / "out.gif"
    refused = run("provenance", "lineage", m["digest"], "--graph", str(gif), *ws, env=env, check=2)
    assert "*.svg or *.png" in one_line_error(refused)
    assert refused.stdout == ""
    assert not gif.exists()
    tree = run("provenance", "lineage", m["digest"], "-w", str(workspace), env=env).stderr
    assert "└── dataset dataset 0x" + ds["digest"][2:18] in tree

    envelope = json.loads(run("provenance", "statement", m["digest"], *ws, env=env).stdout)
    assert envelope["payloadType"] == "application/vnd.in-toto+json"

    missing = run(
        "provenance", "register", str(tmp_path / "nope"), "--kind", "dataset", *ws, env=env, check=2
    )
    assert "cannot read" in one_line_error(missing)


def test_keys_and_sharing(workspace: Path, env: dict[str, str], tmp_path: Path) -> None:
    ws = ["-w", str(workspace), "--json"]
    keys = json.loads(run("keys", "show", *ws, env=env).stdout)
    assert len(bytes.fromhex(keys["x25519"]["hex"])) == 32
    assert keys["account"].startswith("0x")
    pem = workspace / "keys" / "x25519.pem"
    assert pem.stat().st_mode & 0o777 == 0o600

    secret = tmp_path / "records.csv"
    secret.write_text("id,diagnosis\n1,flu\n")
    reg = json.loads(
        run("provenance", "register", str(secret), "--kind", "dataset", *ws, env=env).stdout
    )
    other = X25519PrivateKey.generate().public_key().public_bytes_raw().hex()

    ed_pem = tmp_path / "ed25519.pub"
    ed_pem.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    wrong = run("share", "grant", reg["digest"], str(ed_pem), *ws, env=env, check=2)
    assert "not an X25519 public key" in one_line_error(wrong)

    granted = json.loads(run("share", "grant", reg["digest"], other, *ws, env=env).stdout)
    assert granted["key"] == other
    sealed = tmp_path / "records.sealed"
    out = json.loads(
        run(
            "share", "seal", str(secret), "-r", reg["digest"], "-o", str(sealed), *ws, env=env
        ).stdout
    )
    assert len(out["recipients"]) == 2
    opened = tmp_path / "opened.csv"
    run("share", "open", str(sealed), "-r", reg["digest"], "-o", str(opened), *ws, env=env)
    assert opened.read_text() == secret.read_text()

    run("share", "revoke", reg["digest"], other, *ws, env=env)
    listed = json.loads(run("share", "grants", reg["digest"], *ws, env=env).stdout)
    assert [(g["key"], g["live"]) for g in listed["grants"]] == [(other, False)]
    resealed = json.loads(
        run(
            "share", "seal", str(secret), "-r", reg["digest"], "-o", str(sealed), *ws, env=env
        ).stdout
    )
    assert resealed["recipients"] == [keys["x25519"]["keyid"]]


def test_verify_with_extra_trusted_keys(
    workspace: Path, env: dict[str, str], tmp_path: Path
) -> None:
    ws = ["-w", str(workspace)]
    data = tmp_path / "weights.bin"
    data.write_bytes(b"\x01" * 1000)
    run("provenance", "register", str(data), "--kind", "model", *ws, env=env)
    other = tmp_path / "other.pub"
    other.write_bytes((workspace / "keys" / "ed25519.pub").read_bytes())
    ok = run("provenance", "verify", str(data), "--trust", str(other), *ws, "--json", env=env)
    assert json.loads(ok.stdout)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    bad = run("provenance", "verify", str(data), "--trust", str(junk), *ws, env=env, check=2)
    assert "not a PEM public key" in bad.stderr
    assert "Traceback" not in bad.stderr


def piped(
    *args: str, env: dict[str, str], data: bytes, check: int = 0
) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(
        [sys.executable, "-m", "ailedger", *args],
        input=data,
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == check, (done.returncode, done.stderr.decode())
    return done


def test_share_through_pipes(workspace: Path, env: dict[str, str], tmp_path: Path) -> None:
    ws = ["-w", str(workspace)]
    data = os.urandom(3 * 1024 * 1024 + 5)
    dataset = tmp_path / "dataset.bin"
    dataset.write_bytes(data)
    reg = json.loads(
        run(
            "provenance", "register", str(dataset), "--kind", "dataset", *ws, "--json", env=env
        ).stdout
    )
    share = ["-r", reg["digest"], *ws]

    sealed = piped("share", "seal", "-", "-o", "-", *share, env=env, data=data).stdout
    assert sealed.startswith(b"AILSEAL")
    assert piped("share", "open", "-", "-o", "-", *share, env=env, data=sealed).stdout == data
    sealed_file = tmp_path / "dataset.sealed"
    sealed_file.write_bytes(sealed)
    opened = piped("share", "open", str(sealed_file), "-o", "-", *share, env=env, data=b"")
    assert opened.stdout == data

    # from a pipe into a file, which then opens like any sealed file
    into = tmp_path / "piped.sealed"
    done = piped("share", "seal", "-", "-o", str(into), *share, "--json", env=env, data=data)
    assert json.loads(done.stdout)["path"] == str(into)
    out = tmp_path / "opened.bin"
    run("share", "open", str(into), "-o", str(out), *share, env=env)
    assert out.read_bytes() == data

    # a truncated stream fails with one line and exit 1; a file output is then not created
    cut = sealed[: len(sealed) // 2]
    failed = piped("share", "open", "-", "-o", "-", *share, env=env, data=cut, check=1)
    assert "does not authenticate" in failed.stderr.decode()
    target = tmp_path / "never.bin"
    piped("share", "open", "-", "-o", str(target), *share, env=env, data=cut, check=1)
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]

    both = piped("share", "seal", "-", "-o", "-", *share, "--json", env=env, data=data, check=2)
    assert "pick one" in both.stderr.decode()
