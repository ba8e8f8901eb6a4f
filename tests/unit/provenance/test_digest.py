"""Artifact digests and model-signing manifests."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from ailedger.errors import InputError, VerificationError
from ailedger.provenance import digest
from ailedger.provenance.digest import FileChanged, ManifestMismatch


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "my-model"
    (root / "sub").mkdir(parents=True)
    (root / "a").mkdir()
    (root / "weights.bin").write_bytes(os.urandom(300_000))
    (root / "config.json").write_text('{"layers": 2}')
    (root / "a" / "b").write_bytes(b"ab")
    (root / "a-c").write_bytes(b"a-c")
    (root / "sub" / "empty").write_bytes(b"")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "model.sig").write_text("signature")
    return root


def test_manifest_matches_hashlib_and_order(model: Path) -> None:
    m = digest.digest_artifact(model)
    names = [r.name for r in m.resources]
    assert names == ["a/b", "a-c", "config.json", "sub/empty", "weights.bin"]
    for r in m.resources:
        assert r.digest == hashlib.sha256((model / r.name).read_bytes()).hexdigest()
    root = hashlib.sha256(b"".join(bytes.fromhex(r.digest) for r in m.resources)).hexdigest()
    st = m.to_statement()
    assert st["subject"] == [{"name": "my-model", "digest": {"sha256": root}}]
    assert st["predicateType"] == "https://model_signing/signature/v1.0"
    assert st["predicate"]["serialization"]["ignore_paths"] == [
        ".git",
        ".gitattributes",
        ".github",
        ".gitignore",
        "model.sig",
    ]


def test_single_file(model: Path) -> None:
    m = digest.digest_artifact(model / "weights.bin")
    assert m.model_name == "weights.bin"
    assert [r.name for r in m.resources] == ["."]
    assert m.resources[0].digest == digest.digest_file(model / "weights.bin")


def test_shards(model: Path) -> None:
    m = digest.digest_artifact(model, shard_size=100_000)
    weights = [r for r in m.resources if r.name.startswith("weights.bin:")]
    assert [r.name for r in weights] == [
        "weights.bin:0:100000",
        "weights.bin:100000:200000",
        "weights.bin:200000:300000",
    ]
    data = (model / "weights.bin").read_bytes()
    assert weights[1].digest == hashlib.sha256(data[100_000:200_000]).hexdigest()
    assert weights[1].algorithm == "sha256-sharded-100000"
    assert not any(r.name.startswith("sub/empty") for r in m.resources)
    digest.verify_manifest(model, m.to_statement())


def test_ignore_patterns(model: Path) -> None:
    (model / "sub" / "x.tmp").write_bytes(b"t")
    (model / "cache").mkdir()
    (model / "cache" / "big").write_bytes(b"c")
    m = digest.digest_artifact(model, ignore=["*.tmp", "cache/", "/config.json", "a/**"])
    assert [r.name for r in m.resources] == ["a-c", "sub/empty", "weights.bin"]


@pytest.mark.parametrize("pattern", ["", "!keep", "#c", "/"])
def test_bad_patterns(model: Path, pattern: str) -> None:
    with pytest.raises(InputError):
        digest.digest_artifact(model, ignore=[pattern])


def test_verify_passes_and_names_changed_file(model: Path) -> None:
    m = digest.digest_artifact(model)
    digest.verify_manifest(model, m)
    (model / "a" / "b").write_bytes(b"AB")
    with pytest.raises(ManifestMismatch, match="'a/b'") as info:
        digest.verify_manifest(model, m.to_statement())
    assert info.value.kind == "digest"


def test_verify_missing_and_extra(model: Path) -> None:
    m = digest.digest_artifact(model)
    (model / "config.json").unlink()
    with pytest.raises(ManifestMismatch, match=r"config\.json") as info:
        digest.verify_manifest(model, m)
    assert info.value.kind == "missing"
    (model / "config.json").write_text('{"layers": 2}')
    (model / "zz-new").write_text("new")
    with pytest.raises(ManifestMismatch, match="zz-new") as info:
        digest.verify_manifest(model, m)
    assert info.value.kind == "extra"
    digest.verify_manifest(model, m, ignore=["zz-*"])


def test_signature_file_is_always_ignored(model: Path) -> None:
    m = digest.digest_artifact(model, ignore_git_paths=False)
    names = [r.name for r in m.resources]
    assert "model.sig" not in names
    assert ".git/HEAD" in names


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        digest.digest_artifact(tmp_path / "nope")


def test_symlinks_refused_by_default(model: Path) -> None:
    (model / "link").symlink_to(model / "config.json")
    with pytest.raises(InputError, match="symbolic link"):
        digest.digest_artifact(model)


def test_symlink_inside_root_is_followed(model: Path) -> None:
    (model / "link").symlink_to("config.json")
    m = digest.digest_artifact(model, allow_symlinks=True)
    by_name = {r.name: r.digest for r in m.resources}
    assert by_name["link"] == by_name["config.json"]
    assert m.to_statement()["predicate"]["serialization"]["allow_symlinks"] is True


def test_symlink_escaping_root_is_refused(model: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    (model / "escape").symlink_to(outside)
    with pytest.raises(InputError, match="outside the root"):
        digest.digest_artifact(model, allow_symlinks=True)


def test_directory_symlink_loop(model: Path) -> None:
    (model / "a" / "loop").symlink_to("..")
    with pytest.raises(InputError, match="loop"):
        digest.digest_artifact(model, allow_symlinks=True)


def test_self_referencing_symlink_loop(model: Path) -> None:
    (model / "self").symlink_to("self")
    with pytest.raises(InputError, match="loop"):
        digest.digest_artifact(model, allow_symlinks=True)


def test_file_changed_during_hashing(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = model / "weights.bin"
    real_fstat = os.fstat
    target_ino = target.stat().st_ino
    calls = {"n": 0}

    def fstat_then_append(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        if st.st_ino == target_ino:
            calls["n"] += 1
            if calls["n"] == 1:
                with open(target, "ab") as fh:
                    fh.write(b"appended while hashing")
        return st

    monkeypatch.setattr(os, "fstat", fstat_then_append)
    with pytest.raises(FileChanged, match=r"weights\.bin"):
        digest.digest_artifact(model, max_workers=1)
    assert calls["n"] >= 2


def test_file_changed_between_listing_and_reading(model: Path) -> None:
    listed = digest._collect(
        model, digest._Matcher([], anchored=[], git=True), allow_symlinks=False
    )
    (model / "config.json").write_text('{"layers": 3, "more": true}')
    with pytest.raises(FileChanged):
        digest._hash_files(listed, digest.Serialization(), 1, digest.DEFAULT_CHUNK_SIZE)


def _statement(model: Path) -> dict[str, Any]:
    return digest.digest_artifact(model).to_statement()


def test_unknown_fields_are_ignored(model: Path) -> None:
    st = _statement(model)
    st["extraTop"] = {"x": 1}
    st["subject"][0]["annotations"] = {"tool": "other"}
    st["predicate"]["model_card"] = "https://example.com/card"
    st["predicate"]["serialization"]["future_option"] = [1, 2]
    for r in st["predicate"]["resources"]:
        r["size"] = 123
    m = digest.Manifest.from_statement(st)
    assert m == digest.digest_artifact(model)
    digest.verify_manifest(model, st)


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda s: s.update(predicateType="https://model_signing/Digests/v0.1"), InputError),
        (lambda s: s["predicate"]["serialization"].update(method="tensors"), InputError),
        (lambda s: s["predicate"]["serialization"].update(hash_type="blake3"), InputError),
        (lambda s: s["predicate"].pop("resources"), InputError),
        (lambda s: s["predicate"]["resources"][0].update(name="../etc/passwd"), InputError),
        (lambda s: s["subject"][0]["digest"].update(sha256="00" * 32), VerificationError),
    ],
    ids=["old-predicate", "method", "hash", "no-resources", "escape", "root-digest"],
)
def test_bad_manifests(model: Path, mutate: Any, error: type[Exception]) -> None:
    st = copy.deepcopy(_statement(model))
    mutate(st)
    with pytest.raises(error):
        digest.verify_manifest(model, st)


def test_statement_is_json_serialisable(model: Path) -> None:
    st = _statement(model)
    assert json.loads(json.dumps(st)) == st


# Interoperability with sigstore's model-signing (a development dependency only).


def _model_signing_statement(path: Path, **shards: int) -> dict[str, Any]:
    ms_hashing = pytest.importorskip("model_signing.hashing")
    ms_signing = pytest.importorskip("model_signing._signing.signing")
    json_format = pytest.importorskip("google.protobuf.json_format")
    cfg = ms_hashing.Config().set_ignored_paths(paths=["model.sig"])
    if shards:
        cfg.use_shard_serialization(shard_size=shards["shard_size"])
    payload = ms_signing.Payload(cfg.hash(path))
    st: dict[str, Any] = json.loads(json_format.MessageToJson(payload.statement.pb))
    st["predicate"]["serialization"]["ignore_paths"].sort()
    return st


@pytest.mark.parametrize("shard_size", [None, 100_000])
def test_equal_to_model_signing_statement(model: Path, shard_size: int | None) -> None:
    (model / "model.sig").unlink()
    kwargs = {} if shard_size is None else {"shard_size": shard_size}
    theirs = _model_signing_statement(model, **kwargs)
    ours = digest.digest_artifact(model, shard_size=shard_size).to_statement()
    assert ours == theirs
    digest.verify_manifest(model, theirs)


def test_model_signing_accepts_our_statement(model: Path) -> None:
    ms_signing = pytest.importorskip("model_signing._signing.signing")
    ms_hashing = pytest.importorskip("model_signing.hashing")
    ours = digest.digest_artifact(model).to_statement()
    parsed = ms_signing.dsse_payload_to_manifest(ours)
    theirs = ms_hashing.Config().set_ignored_paths(paths=["model.sig"]).hash(model)
    assert parsed == theirs
    assert parsed.model_name == "my-model"
