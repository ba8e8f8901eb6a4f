"""Signed statements: in-toto Statement v1 in DSSE envelopes, and SLSA v1 training provenance.

Specifications followed:

- DSSE v1.0.0 (``secure-systems-lab/dsse``, ``protocol.md`` and ``envelope.md``): the signature
  covers ``PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`` where LEN is
  the decimal byte length without leading zeros; the envelope is
  ``{"payloadType", "payload": base64(body), "signatures": [{"keyid", "sig"}]}``; verifiers
  accept standard and URL-safe base64; the keyid is an unauthenticated hint that only narrows
  the keys tried; a ``(t, n)`` envelope is valid if signatures verify under at least ``t``
  distinct trusted keys.
- in-toto Attestation Framework v1 (``in-toto/attestation``, ``spec/v1``): a Statement is
  ``{"_type": "https://in-toto.io/Statement/v1", "subject": [ResourceDescriptor],
  "predicateType": URI, "predicate": {...}}``, carried with payload type
  ``application/vnd.in-toto+json``; a git commit digest uses the key ``gitCommit``.
- SLSA Provenance v1 (``https://slsa.dev/provenance/v1``): ``buildDefinition`` (``buildType``,
  ``externalParameters``, ``internalParameters``, ``resolvedDependencies``) and ``runDetails``
  (``builder.id``, ``metadata.invocationId/startedOn/finishedOn``).

Choices: the payload is the RFC 8785 canonical JSON of the statement; envelopes are signed with
Ed25519. Verification accepts Ed25519 keys and ECDSA P-256/SHA-256 keys (signatures in DER, as
sigstore bundles carry them, or raw ``r || s``, as in the DSSE test vector), so envelopes
written by sigstore's model-signing with an elliptic key verify here too. A keyid is the hex
SHA-256 of the raw public key: the 32 key bytes for Ed25519, the uncompressed SEC1 point for
ECDSA.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ailedger._input import parse_json
from ailedger.crypto.canonical import canonical_json
from ailedger.errors import InputError, SignatureError

__all__ = [
    "BUILD_TYPE_TRAINING",
    "IN_TOTO_PAYLOAD_TYPE",
    "SLSA_PROVENANCE_V1",
    "STATEMENT_TYPE",
    "TrustedKey",
    "build_statement",
    "build_training_provenance",
    "code_dependency",
    "key_id",
    "pae",
    "resource_descriptor",
    "sign_statement",
    "verify_envelope",
    "verify_payload",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
BUILD_TYPE_TRAINING = "https://ailedger.dev/buildtypes/training/v1"

TrustedKey: TypeAlias = Ed25519PublicKey | ec.EllipticCurvePublicKey


def pae(payload_type: str, payload: bytes) -> bytes:
    """Return DSSE's Pre-Authentication Encoding of ``payload_type`` and ``payload``."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def key_id(public_key: TrustedKey) -> str:
    """Return the hex SHA-256 of a public key's raw bytes (the keyid this module writes)."""
    if isinstance(public_key, Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        raw = public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    else:
        raise InputError(
            f"a trusted key must be an Ed25519 or ECDSA P-256 public key, got "
            f"{type(public_key).__name__}"
        )
    return hashlib.sha256(raw).hexdigest()


def resource_descriptor(
    *,
    name: str | None = None,
    uri: str | None = None,
    digest: Mapping[str, str] | None = None,
    download_location: str | None = None,
    media_type: str | None = None,
    annotations: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return an in-toto ResourceDescriptor; at least one of ``uri`` or ``digest`` is needed."""
    if not uri and not digest:
        raise InputError("a resource descriptor needs a uri or a digest")
    if digest is not None:
        for alg, value in digest.items():
            if not isinstance(alg, str) or not isinstance(value, str) or not value:
                raise InputError(f"digest {alg!r} must map to a non-empty hex string")
            try:
                bytes.fromhex(value)
            except ValueError as exc:
                raise InputError(f"digest {alg!r} is not hex: {value!r}") from exc
    out: dict[str, Any] = {}
    fields: tuple[tuple[str, Any], ...] = (
        ("name", name),
        ("uri", uri),
        ("digest", dict(digest) if digest else None),
        ("downloadLocation", download_location),
        ("mediaType", media_type),
        ("annotations", dict(annotations) if annotations else None),
    )
    for key, value in fields:
        if value is not None:
            out[key] = value
    return out


def code_dependency(uri: str, commit: str, *, dirty: bool) -> dict[str, Any]:
    """Describe source code at a git commit; ``dirty`` records uncommitted changes.

    ``commit`` is the 40-hex (SHA-1) or 64-hex (SHA-256) object name.
    """
    if len(commit) not in (40, 64) or any(c not in "0123456789abcdef" for c in commit):
        raise InputError(f"commit must be a lowercase 40- or 64-hex git object name: {commit!r}")
    return resource_descriptor(uri=uri, digest={"gitCommit": commit}, annotations={"dirty": dirty})


def build_statement(
    subjects: Sequence[Mapping[str, Any]], predicate_type: str, predicate: Mapping[str, Any]
) -> dict[str, Any]:
    """Return an in-toto Statement v1; every subject needs a ``name`` and a ``digest``."""
    if not subjects:
        raise InputError("a statement needs at least one subject")
    for s in subjects:
        if not isinstance(s.get("name"), str) or not isinstance(s.get("digest"), Mapping):
            raise InputError("each subject needs a 'name' and a 'digest'")
        if not s["digest"]:
            raise InputError(f"subject {s['name']!r} has an empty digest")
    if not predicate_type:
        raise InputError("a statement needs a predicateType")
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [dict(s) for s in subjects],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }
    canonical_json(statement)
    return statement


def build_training_provenance(
    *,
    model: Mapping[str, Any],
    datasets: Sequence[Mapping[str, Any]],
    code: Mapping[str, Any],
    hyperparameters: Mapping[str, Any],
    builder_id: str,
    base_model: Mapping[str, Any] | None = None,
    internal_parameters: Mapping[str, Any] | None = None,
    invocation_id: str | None = None,
    started_on: str | None = None,
    finished_on: str | None = None,
    build_type: str = BUILD_TYPE_TRAINING,
) -> dict[str, Any]:
    """Return a Statement whose predicate is SLSA v1 provenance of a training run.

    ``model`` is the subject (name and digest, e.g. a manifest's subject); ``datasets``,
    ``base_model`` and ``code`` (see :func:`code_dependency`) become ``resolvedDependencies``;
    ``hyperparameters`` become ``externalParameters``. Timestamps are RFC 3339 strings.
    """
    deps = [dict(d) for d in datasets]
    if base_model is not None:
        deps.append(dict(base_model))
    deps.append(dict(code))
    for d in deps:
        if not d.get("uri") and not d.get("digest"):
            raise InputError("each dependency needs a uri or a digest")
    metadata = {
        k: v
        for k, v in (
            ("invocationId", invocation_id),
            ("startedOn", started_on),
            ("finishedOn", finished_on),
        )
        if v is not None
    }
    build_definition: dict[str, Any] = {
        "buildType": build_type,
        "externalParameters": dict(hyperparameters),
        "resolvedDependencies": deps,
    }
    if internal_parameters:
        build_definition["internalParameters"] = dict(internal_parameters)
    run_details: dict[str, Any] = {"builder": {"id": builder_id}}
    if metadata:
        run_details["metadata"] = metadata
    predicate = {"buildDefinition": build_definition, "runDetails": run_details}
    return build_statement([model], SLSA_PROVENANCE_V1, predicate)


def sign_statement(statement: Mapping[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """Sign a statement's canonical JSON into a DSSE envelope (one Ed25519 signature)."""
    if not isinstance(private_key, Ed25519PrivateKey):
        raise InputError(f"signing needs an Ed25519 private key, got {type(private_key).__name__}")
    if statement.get("_type") != STATEMENT_TYPE:
        raise InputError(f"not an in-toto Statement v1 (_type must be {STATEMENT_TYPE})")
    body = canonical_json(dict(statement))
    sig = private_key.sign(pae(IN_TOTO_PAYLOAD_TYPE, body))
    return {
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "payload": base64.b64encode(body).decode("ascii"),
        "signatures": [
            {"keyid": key_id(private_key.public_key()), "sig": base64.b64encode(sig).decode()}
        ],
    }


def verify_payload(
    envelope: Mapping[str, Any],
    trusted_keys: Sequence[TrustedKey],
    *,
    threshold: int = 1,
) -> tuple[str, bytes]:
    """Verify a DSSE envelope's signatures and return its ``(payloadType, payload bytes)``.

    Steps (DSSE protocol.md, multi-signature verification): 1. decode payload, type and
    signatures; 2. for each signature, try the trusted keys its keyid names (all of them if the
    keyid is absent or unknown) and collect the keys that verify it over PAE; 3. reject if fewer
    than ``threshold`` distinct keys verified. The payload is not parsed.

    Raises :class:`SignatureError` on any failure; :class:`InputError` for bad trusted keys.
    """
    if isinstance(threshold, bool) or threshold < 1:
        raise InputError(f"threshold must be at least 1, got {threshold!r}")
    keys: dict[str, TrustedKey] = {}
    for k in trusted_keys:
        if isinstance(k, ec.EllipticCurvePublicKey) and not isinstance(k.curve, ec.SECP256R1):
            raise InputError(f"ECDSA trusted keys must be on P-256, got {k.curve.name}")
        keys[key_id(k)] = k
    if len(keys) < threshold:
        raise InputError(f"threshold {threshold} exceeds the {len(keys)} distinct trusted keys")

    if not isinstance(envelope, Mapping):
        raise SignatureError("DSSE envelope: not a JSON object")
    ptype = envelope.get("payloadType")
    sigs = envelope.get("signatures")
    if not isinstance(ptype, str) or not isinstance(sigs, list) or not sigs:
        raise SignatureError("DSSE envelope: payloadType or signatures missing")
    body = _b64decode(envelope.get("payload"), "payload")
    message = pae(ptype, body)

    accepted: set[str] = set()
    for i, entry in enumerate(sigs):
        if not isinstance(entry, Mapping):
            raise SignatureError(f"DSSE envelope: signatures[{i}] is not an object")
        sig = _b64decode(entry.get("sig"), f"signatures[{i}].sig")
        hint = entry.get("keyid")
        candidates = [hint] if isinstance(hint, str) and hint in keys else list(keys)
        for kid in candidates:
            if kid not in accepted and _verify_one(keys[kid], sig, message):
                accepted.add(kid)
                break
        if len(accepted) >= threshold:
            break
    if len(accepted) < threshold:
        raise SignatureError(
            f"DSSE envelope: {len(accepted)} of the required {threshold} signatures verify "
            "under the trusted keys"
        )
    return ptype, body


def verify_envelope(
    envelope: Mapping[str, Any],
    trusted_keys: Sequence[TrustedKey],
    *,
    threshold: int = 1,
) -> dict[str, Any]:
    """Verify a DSSE envelope carrying an in-toto statement and return the statement.

    Steps 1-3 are those of :func:`verify_payload`; then (DSSE protocol.md) 4. reject a payload
    type other than ``application/vnd.in-toto+json``; 5. parse the payload as an in-toto
    Statement v1 (``_type``, ``subject`` list, ``predicateType``).

    Raises :class:`SignatureError` on any failure; :class:`InputError` for bad trusted keys.
    """
    ptype, body = verify_payload(envelope, trusted_keys, threshold=threshold)
    if ptype != IN_TOTO_PAYLOAD_TYPE:
        raise SignatureError(
            f"DSSE envelope: payload type {ptype!r} is not {IN_TOTO_PAYLOAD_TYPE!r}"
        )
    try:
        statement = parse_json(body, what="DSSE payload")
    except InputError as exc:
        raise SignatureError(f"DSSE envelope: the payload is not usable JSON: {exc}") from exc
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise SignatureError(f"DSSE envelope: the payload is not an in-toto {STATEMENT_TYPE}")
    if not isinstance(statement.get("subject"), list) or "predicateType" not in statement:
        raise SignatureError("DSSE envelope: the statement lacks subject or predicateType")
    return statement


def _b64decode(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureError(f"DSSE envelope: {what} is missing or not a string")
    text = value.strip()
    alt = b"-_" if ("-" in text or "_" in text) else None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=alt, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"DSSE envelope: {what} is not base64") from exc


def _verify_one(key: TrustedKey, sig: bytes, message: bytes) -> bool:
    try:
        if isinstance(key, Ed25519PublicKey):
            key.verify(sig, message)
            return True
        if len(sig) == 64:
            r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
            try:
                key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
                return True
            except InvalidSignature:
                pass
        key.verify(sig, message, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError):
        return False
