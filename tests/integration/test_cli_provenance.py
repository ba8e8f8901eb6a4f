"""``ailedger provenance``, ``share`` and ``keys`` in separate OS processes (embedded chain)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.cli import one_line_error, run


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
    assert m["parents"] == [{"owner": ds["owner"], "digest": ds["digest"]}]
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
    owner = ds["owner"]
    assert graph["edges"] == [
        {"parent": ds["digest"], "parent_owner": owner, "child": m["digest"], "child_owner": owner}
    ]
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
    tree = run("provenance", "lineage", m["digest"], "-w", str(workspace), env=env).stdout
    assert "└── dataset dataset " + ds["digest"][:23] in tree

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
    # (cut from the newest version: an older one would be refused as a replay first)
    latest = into.read_bytes()
    cut = latest[: len(latest) // 2]
    failed = piped("share", "open", "-", "-o", "-", *share, env=env, data=cut, check=1)
    assert "does not authenticate" in failed.stderr.decode()
    target = tmp_path / "never.bin"
    piped("share", "open", "-", "-o", str(target), *share, env=env, data=cut, check=1)
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]

    both = piped("share", "seal", "-", "-o", "-", *share, "--json", env=env, data=data, check=2)
    assert "pick one" in both.stderr.decode()


def squat(workspace: Path, env: dict[str, str], digests: list[bytes]) -> str:
    """Register ``digests`` on the workspace's embedded chain from another, funded account (an
    attacker's), each with a statement the workspace never saw; returns that account."""
    from ailedger.ledger.provenance import ProvenanceRegistry
    from ailedger.workspace import Workspace
    from tests.conftest import new_signer

    ws = Workspace.open(workspace)
    attacker = new_signer()
    with ws.ledger(passphrase=lambda: env["AILEDGER_PASSPHRASE"]) as ledger:
        ledger.transfer(attacker.address, 10**18)
        address = ws.contract_address(ledger.chain_id, ProvenanceRegistry.NAME)
        registry = ProvenanceRegistry(ledger=ledger.with_signer(attacker), address=address)
        for digest in digests:
            registry.register(digest, 2, hashlib.sha256(b"attacker's statement" + digest).digest())
    return attacker.address


def test_a_squatted_digest_is_still_registered_and_verified_by_its_owner(
    workspace: Path, env: dict[str, str], tmp_path: Path
) -> None:
    from ailedger.provenance.digest import digest_artifact

    ws = ["-w", str(workspace)]
    model, trojan = tmp_path / "model.bin", tmp_path / "trojan.bin"
    model.write_bytes(b"weights" * 100)
    trojan.write_bytes(b"backdoor" * 100)
    model_digest = bytes.fromhex(digest_artifact(model).root_digest)
    trojan_digest = bytes.fromhex(digest_artifact(trojan).root_digest)
    attacker = squat(workspace, env, [model_digest, trojan_digest])

    # the attacker registered the model's digest first: the owner registers it all the same
    m = json.loads(
        run("provenance", "register", str(model), "--kind", "model", *ws, "--json", env=env).stdout
    )
    account = m["owner"]
    assert m["digest"] == "sha256:" + model_digest.hex()
    ok = json.loads(run("provenance", "verify", str(model), *ws, "--json", env=env).stdout)
    assert ok["owner"] == account

    refused = run("provenance", "verify", str(trojan), *ws, env=env, check=1)
    error = one_line_error(refused)
    assert attacker in error
    assert account in error
    assert refused.stdout == ""
    pinned = run(
        "provenance", "verify", str(model), "--registrant", attacker, *ws, env=env, check=1
    )
    assert "not in this workspace's blobs" in one_line_error(pinned)
    lineage_refused = run(
        "provenance", "lineage", "0x" + trojan_digest.hex(), *ws, env=env, check=1
    )
    assert attacker in one_line_error(lineage_refused)
    theirs = json.loads(
        run(
            "provenance",
            "lineage",
            "0x" + trojan_digest.hex(),
            "--registrant",
            attacker.lower(),
            *ws,
            "--json",
            env=env,
        ).stdout
    )
    assert theirs["root_owner"] == attacker

    # grants are per registrant: the owner's are its own, the attacker's are empty
    key = X25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    run("share", "grant", m["digest"], key, *ws, env=env)
    mine = json.loads(run("share", "grants", m["digest"], *ws, "--json", env=env).stdout)
    assert (mine["owner"], [g["key"] for g in mine["grants"]]) == (account, [key])
    other = json.loads(
        run("share", "grants", m["digest"], "--registrant", attacker, *ws, "--json", env=env).stdout
    )
    assert other["grants"] == []
    not_ours = run("share", "grant", "0x" + trojan_digest.hex(), key, *ws, env=env, check=2)
    assert "only the owner may grant" in one_line_error(not_ours)

    # a parent registered by another account is named ADDRESS:DIGEST
    derived = tmp_path / "derived.bin"
    derived.write_bytes(b"fine-tuned" * 50)
    parent = f"{attacker}:0x{trojan_digest.hex()}"
    d = json.loads(
        run(
            "provenance",
            "register",
            str(derived),
            "--kind",
            "model",
            "--parent",
            parent,
            "--parent",
            m["digest"],
            *ws,
            "--json",
            env=env,
        ).stdout
    )
    assert d["parents"] == [
        {"owner": attacker, "digest": "sha256:" + trojan_digest.hex()},
        {"owner": account, "digest": m["digest"]},
    ]
    for bad in [f"0x1234:{m['digest']}", f"{account}:0x12"]:
        wrong = run(
            "provenance",
            "register",
            str(derived),
            "--kind",
            "model",
            "--parent",
            bad,
            *ws,
            env=env,
            check=2,
        )
        assert "--parent" in one_line_error(wrong)
    junk = run("provenance", "verify", str(model), "--registrant", "me", *ws, env=env, check=2)
    assert "--registrant must be an Ethereum address" in one_line_error(junk)


def test_verify_a_partners_registration_with_its_statement(
    workspace: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """A statement missing from the blobs (a partner's, in practice) is brought in with
    `verify --statement`, as `provenance statement` printed it."""
    ws = ["-w", str(workspace)]
    data = tmp_path / "shared.csv"
    data.write_text("a,b\n1,2\n")
    reg = json.loads(
        run("provenance", "register", str(data), "--kind", "dataset", *ws, "--json", env=env).stdout
    )
    statement = tmp_path / "statement.json"
    statement.write_text(run("provenance", "statement", reg["digest"], *ws, env=env).stdout)
    blob = workspace / "blobs" / reg["statement_digest"].removeprefix("sha256:")
    blob.unlink()
    (data.parent / (data.name + ".ailedger.json")).unlink()  # without the bundle
    gone = run("provenance", "verify", str(data), *ws, env=env, check=1)
    assert "--statement" in one_line_error(gone)
    ok = json.loads(
        run(
            "provenance",
            "verify",
            str(data),
            "--statement",
            str(statement),
            "--registrant",
            reg["owner"],
            *ws,
            "--json",
            env=env,
        ).stdout
    )
    assert ok["digest"] == reg["digest"]
    assert blob.exists()
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"[" * 100000)
    refused = run("provenance", "verify", str(data), "--statement", str(bad), *ws, env=env, check=2)
    assert "nested deeper" in one_line_error(refused)


# Sealed files are bound to their resource, their sender and a version (issue 11, item 3).


def _register(workspace: Path, path: Path, env: dict[str, str]) -> str:
    done = run(
        "provenance",
        "register",
        str(path),
        "--kind",
        "dataset",
        "-w",
        str(workspace),
        "--json",
        env=env,
    )
    digest: str = json.loads(done.stdout)["digest"]
    return digest


def test_share_open_names_the_version_and_refuses_replays_and_other_resources(
    workspace: Path, env: dict[str, str], tmp_path: Path
) -> None:
    ws = ["-w", str(workspace)]
    data_a, data_b = tmp_path / "a.csv", tmp_path / "b.csv"
    data_a.write_text("id,diagnosis\n1,flu\n")
    data_b.write_text("id,diagnosis\n2,measles\n")
    digest_a, digest_b = _register(workspace, data_a, env), _register(workspace, data_b, env)
    old, new = tmp_path / "old.sealed", tmp_path / "new.sealed"
    sealed = [
        json.loads(
            run(
                "share", "seal", str(data_a), "-r", digest_a, "-o", str(f), *ws, "--json", env=env
            ).stdout
        )
        for f in (old, new)
    ]
    v_old, v_new = (s["version"] for s in sealed)
    assert (v_new["block"], v_new["counter"]) > (v_old["block"], v_old["counter"])
    assert (
        sealed[0]["owner"]
        == json.loads(run("keys", "show", *ws, "--json", env=env).stdout)["account"]
    )

    out = tmp_path / "out.csv"
    opened = run("share", "open", str(new), "-r", digest_a, "-o", str(out), *ws, "--json", env=env)
    doc = json.loads(opened.stdout)
    assert (doc["version"], doc["older"], doc["sender"]) == (v_new, False, sealed[1]["owner"])
    text = run("share", "open", str(new), "-r", digest_a, "-o", str(out), *ws, env=env)
    assert f"opened version {v_new['block']}.{v_new['counter']} of" in text.stdout

    replay = run("share", "open", str(old), "-r", digest_a, "-o", str(out), *ws, env=env, check=1)
    assert "older than version" in one_line_error(replay)
    allowed = run(
        "share",
        "open",
        str(old),
        "-r",
        digest_a,
        "-o",
        str(out),
        "--unsafe-allow-older",
        *ws,
        "--json",
        env=env,
    )
    assert (json.loads(allowed.stdout)["older"], out.read_text()) == (True, data_a.read_text())

    other = run("share", "open", str(new), "-r", digest_b, "-o", str(out), *ws, env=env, check=1)
    assert f"0x{digest_a.removeprefix('sha256:')}, not of" in one_line_error(other)

    raw = bytearray(new.read_bytes())
    raw[-40] ^= 1  # the s of the owner's signature
    flipped = tmp_path / "flipped.sealed"
    flipped.write_bytes(bytes(raw))
    bad = run("share", "open", str(flipped), "-r", digest_a, "-o", str(out), *ws, env=env, check=1)
    assert "sign" in one_line_error(bad)  # not signed by the sender, or not a signature
    piped_bad = piped(
        "share", "open", "-", "-o", "-", "-r", digest_a, *ws, env=env, data=bytes(raw), check=1
    )
    # chunks are written as they authenticate, the last block only once the signature checked
    assert data_a.read_bytes().startswith(piped_bad.stdout)
    assert "sign" in piped_bad.stderr.decode()
    assert out.read_text() == data_a.read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_share_open_refuses_a_forgery_for_its_own_key(
    workspace: Path, env: dict[str, str], tmp_path: Path
) -> None:
    from ailedger.crypto import envelope
    from ailedger.ledger.account import Signer

    ws = ["-w", str(workspace)]
    data = tmp_path / "a.csv"
    data.write_text("id,diagnosis\n1,flu\n")
    digest = _register(workspace, data, env)
    genuine = tmp_path / "genuine.sealed"
    run("share", "seal", str(data), "-r", digest, "-o", str(genuine), *ws, env=env)
    keys = json.loads(run("keys", "show", *ws, "--json", env=env).stdout)
    # Anyone can read the public X25519 key and copy a genuine file's binding.
    fake = tmp_path / "fake.csv"
    fake.write_text("id,diagnosis\n1,none\n")
    forged = tmp_path / "forged.sealed"
    envelope.seal(
        fake,
        forged,
        [bytes.fromhex(keys["x25519"]["hex"])],
        signer=Signer.from_key(os.urandom(32)),
        context=envelope.read_header(genuine).context,
    )
    out = tmp_path / "out.csv"
    refused = run("share", "open", str(forged), "-r", digest, "-o", str(out), *ws, env=env, check=1)
    assert "who may not write" in one_line_error(refused)
    stream = piped(
        "share",
        "open",
        "-",
        "-o",
        "-",
        "-r",
        digest,
        *ws,
        env=env,
        data=forged.read_bytes(),
        check=1,
    )
    assert stream.stdout == b""  # refused on the header, before any plaintext
    assert not out.exists()

    mine = run(
        "share",
        "open",
        str(genuine),
        "-r",
        digest,
        "--owner",
        keys["account"],
        "-o",
        str(out),
        *ws,
        "--json",
        env=env,
    )
    assert json.loads(mine.stdout)["owner"] == keys["account"]
    stranger = "0x" + "12" * 20
    other = run(
        "share",
        "open",
        str(genuine),
        "-r",
        digest,
        "--owner",
        stranger,
        "-o",
        str(out),
        *ws,
        env=env,
        check=1,  # "not registered" is exit 1 everywhere (README)
    )
    assert "not registered by" in one_line_error(other)

    old_format = tmp_path / "v1.sealed"
    old_format.write_bytes(b"AILSEAL\x01" + genuine.read_bytes()[8:])
    v1 = run("share", "open", str(old_format), "-r", digest, "-o", str(out), *ws, env=env, check=1)
    assert "format version 1" in one_line_error(v1)


def test_share_open_killed_midway_leaves_nothing_and_follows_no_planted_link(
    workspace: Path, env: dict[str, str], tmp_path: Path
) -> None:
    # The output used to be written to `.NAME.PID.part`: a symlink planted there was written
    # through, and a SIGKILL left the plaintext behind under that name.
    ws = ["-w", str(workspace)]
    data = tmp_path / "big.bin"
    data.write_bytes(os.urandom(24 * 1024 * 1024))
    digest = _register(workspace, data, env)
    sealed = tmp_path / "big.sealed"
    run("share", "seal", str(data), "-r", digest, "-o", str(sealed), *ws, env=env)
    shared = tmp_path / "shared"
    shared.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"do not touch")
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ailedger",
            "share",
            "open",
            "-",
            "-o",
            str(shared / "out.bin"),
            "-r",
            digest,
            *ws,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    planted = shared / f".out.bin.{child.pid}.part"
    planted.symlink_to(victim)
    assert child.stdin is not None
    blob = sealed.read_bytes()
    child.stdin.write(blob[: len(blob) * 3 // 4])  # returns once the child has read most of it
    child.stdin.flush()
    time.sleep(1.0)
    assert child.poll() is None  # still opening: waiting for the rest of the input
    child.kill()
    child.wait(timeout=30)
    child.stdin.close()
    assert victim.read_bytes() == b"do not touch"
    assert [p.name for p in shared.iterdir()] == [planted.name]
