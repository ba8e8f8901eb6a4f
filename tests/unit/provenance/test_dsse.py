"""DSSE envelopes, in-toto statements and SLSA training provenance."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ailedger.errors import InputError, SignatureError
from ailedger.provenance import dsse

KAT = Path(__file__).resolve().parents[2] / "kat" / "dsse_pae.json"


@pytest.fixture(scope="module")
def kat() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(KAT.read_text())
    return data


def _kat_key(kat: dict[str, Any]) -> ec.EllipticCurvePublicKey:
    numbers = ec.EllipticCurvePublicNumbers(
        int(kat["key"]["x"]), int(kat["key"]["y"]), ec.SECP256R1()
    )
    return numbers.public_key()


def _statement() -> dict[str, Any]:
    return dsse.build_statement(
        [{"name": "model", "digest": {"sha256": "ab" * 32}}],
        "https://example.com/predicate/v1",
        {"note": "ok", "n": 3},
    )


def test_pae_matches_spec_vector(kat: dict[str, Any]) -> None:
    got = dsse.pae(kat["payload_type"], kat["payload_utf8"].encode())
    assert got == kat["pae_utf8"].encode()


def test_spec_envelope_verifies_with_spec_key(kat: dict[str, Any]) -> None:
    ptype, body = dsse.verify_payload(kat["envelope"], [_kat_key(kat)])
    assert ptype == kat["payload_type"]
    assert body == kat["payload_utf8"].encode()


def test_spec_envelope_rejects_other_key(kat: dict[str, Any]) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(SignatureError):
        dsse.verify_payload(kat["envelope"], [other])


def test_spec_envelope_is_not_a_statement(kat: dict[str, Any]) -> None:
    with pytest.raises(SignatureError, match="payload type"):
        dsse.verify_envelope(kat["envelope"], [_kat_key(kat)])


def test_sign_verify_round_trip() -> None:
    key = Ed25519PrivateKey.generate()
    env = dsse.sign_statement(_statement(), key)
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert env["signatures"][0]["keyid"] == dsse.key_id(key.public_key())
    assert dsse.verify_envelope(env, [key.public_key()]) == _statement()


def test_payload_is_canonical_json() -> None:
    env = dsse.sign_statement(_statement(), Ed25519PrivateKey.generate())
    body = base64.b64decode(env["payload"])
    assert body == json.dumps(_statement(), sort_keys=True, separators=(",", ":")).encode()


def test_url_safe_base64_is_accepted() -> None:
    key = Ed25519PrivateKey.generate()
    env = dsse.sign_statement(_statement(), key)
    for field in ("payload",):
        env[field] = base64.urlsafe_b64encode(base64.b64decode(env[field])).decode().rstrip("=")
    sig = base64.b64decode(env["signatures"][0]["sig"])
    env["signatures"][0]["sig"] = base64.urlsafe_b64encode(sig).decode()
    assert dsse.verify_envelope(env, [key.public_key()])["predicateType"].startswith("https://")


def test_tampered_payload_fails() -> None:
    key = Ed25519PrivateKey.generate()
    env = dsse.sign_statement(_statement(), key)
    body = bytearray(base64.b64decode(env["payload"]))
    body[10] ^= 1
    env["payload"] = base64.b64encode(bytes(body)).decode()
    with pytest.raises(SignatureError):
        dsse.verify_envelope(env, [key.public_key()])


def test_changed_payload_type_fails() -> None:
    key = Ed25519PrivateKey.generate()
    env = dsse.sign_statement(_statement(), key)
    env["payloadType"] = "application/vnd.other+json"
    with pytest.raises(SignatureError):
        dsse.verify_envelope(env, [key.public_key()])


def test_untrusted_key_fails_even_with_matching_keyid_hint() -> None:
    signer, trusted = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    env = dsse.sign_statement(_statement(), signer)
    env["signatures"][0]["keyid"] = dsse.key_id(trusted.public_key())
    with pytest.raises(SignatureError, match="0 of the required 1"):
        dsse.verify_envelope(env, [trusted.public_key()])


def test_threshold_counts_distinct_keys() -> None:
    a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    env = dsse.sign_statement(_statement(), a)
    env_b = dsse.sign_statement(_statement(), b)
    duplicated = {**env, "signatures": env["signatures"] * 2}
    with pytest.raises(SignatureError):
        dsse.verify_envelope(duplicated, [a.public_key(), b.public_key()], threshold=2)
    both = {**env, "signatures": env["signatures"] + env_b["signatures"]}
    stmt = dsse.verify_envelope(both, [a.public_key(), b.public_key()], threshold=2)
    assert stmt == _statement()


@pytest.mark.parametrize(
    "envelope",
    [
        {},
        {"payloadType": "x", "payload": "!!!", "signatures": [{"sig": "AA=="}]},
        {"payloadType": "x", "payload": "aGk=", "signatures": []},
        {"payloadType": "x", "payload": "aGk=", "signatures": [{"sig": 5}]},
    ],
)
def test_malformed_envelopes_fail(envelope: dict[str, Any]) -> None:
    with pytest.raises(SignatureError):
        dsse.verify_envelope(envelope, [Ed25519PrivateKey.generate().public_key()])


def test_wrong_trusted_key_type_is_input_error() -> None:
    env = dsse.sign_statement(_statement(), Ed25519PrivateKey.generate())
    with pytest.raises(InputError):
        dsse.verify_envelope(env, [X25519PrivateKey.generate().public_key()])  # type: ignore[list-item]


def test_sign_needs_ed25519() -> None:
    with pytest.raises(InputError):
        dsse.sign_statement(_statement(), ec.generate_private_key(ec.SECP256R1()))  # type: ignore[arg-type]


def test_training_provenance_shape() -> None:
    stmt = dsse.build_training_provenance(
        model={"name": "mnist-cnn", "digest": {"sha256": "cd" * 32}},
        datasets=[dsse.resource_descriptor(name="mnist", digest={"sha256": "ef" * 32})],
        base_model=dsse.resource_descriptor(name="base", digest={"sha256": "01" * 32}),
        code=dsse.code_dependency("git+https://example.com/repo", "a" * 40, dirty=True),
        hyperparameters={"lr": 0.01, "epochs": 2},
        builder_id="https://ailedger.dev/builders/local",
        invocation_id="run-1",
        started_on="2026-11-26T00:00:00Z",
    )
    assert stmt["_type"] == "https://in-toto.io/Statement/v1"
    assert stmt["predicateType"] == "https://slsa.dev/provenance/v1"
    bd = stmt["predicate"]["buildDefinition"]
    assert bd["buildType"].startswith("https://ailedger.dev/")
    assert bd["externalParameters"] == {"lr": 0.01, "epochs": 2}
    names = [d.get("name") or d.get("uri") for d in bd["resolvedDependencies"]]
    assert names == ["mnist", "base", "git+https://example.com/repo"]
    code = bd["resolvedDependencies"][-1]
    assert code["digest"] == {"gitCommit": "a" * 40}
    assert code["annotations"] == {"dirty": True}
    assert stmt["predicate"]["runDetails"]["builder"]["id"] == "https://ailedger.dev/builders/local"
    assert stmt["predicate"]["runDetails"]["metadata"]["invocationId"] == "run-1"
    key = Ed25519PrivateKey.generate()
    assert dsse.verify_envelope(dsse.sign_statement(stmt, key), [key.public_key()]) == stmt


@pytest.mark.parametrize("commit", ["abc", "A" * 40, "g" * 40])
def test_code_dependency_rejects_bad_commits(commit: str) -> None:
    with pytest.raises(InputError):
        dsse.code_dependency("git+https://example.com/repo", commit, dirty=False)


def test_statement_rejects_nan_and_empty_subjects() -> None:
    with pytest.raises(InputError):
        dsse.build_statement([], "https://example.com/p", {})
    with pytest.raises(InputError):
        dsse.build_statement(
            [{"name": "m", "digest": {"sha256": "00"}}],
            "https://example.com/p",
            {"x": float("nan")},
        )
