"""DSSE envelopes cross-checked with an independent implementation: securesystemslib 1.6.

Both directions: an envelope ailedger signs verifies with securesystemslib's ``dsse.Envelope``
and an ``SSlibKey``, and an envelope securesystemslib's ``CryptoSigner`` signs verifies with
``ailedger.provenance.dsse``. securesystemslib matches signatures to keys by keyid (its
``Envelope.verify`` notes this is stricter than the DSSE spec), so its keys are given the keyid
ailedger writes; ailedger treats a keyid only as a hint, so securesystemslib's default keyids
need no help.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError as SslibVerificationError
from securesystemslib.signer import CryptoSigner, SSlibKey

from ailedger.crypto.canonical import canonical_json
from ailedger.errors import SignatureError
from ailedger.provenance import dsse

STATEMENT: dict[str, Any] = {
    "_type": dsse.STATEMENT_TYPE,
    "subject": [{"name": "model.npz", "digest": {"sha256": "ab" * 32}}],
    "predicateType": "https://model_signing/signature/v1.0",
    "predicate": {"note": "interop", "files": 1},
}


def _sslib_key(public: Any, keyid: str | None = None) -> SSlibKey:
    return SSlibKey.from_crypto(public, keyid=keyid)


def test_ailedger_envelope_verifies_with_securesystemslib() -> None:
    sk = Ed25519PrivateKey.generate()
    signed = dsse.sign_statement(STATEMENT, sk)
    envelope = Envelope.from_dict(copy.deepcopy(signed))
    assert envelope.payload_type == dsse.IN_TOTO_PAYLOAD_TYPE
    assert envelope.payload == canonical_json(STATEMENT)
    assert envelope.pae() == dsse.pae(dsse.IN_TOTO_PAYLOAD_TYPE, envelope.payload)

    key = _sslib_key(sk.public_key(), keyid=dsse.key_id(sk.public_key()))
    accepted = envelope.verify([key], 1)
    assert list(accepted) == [dsse.key_id(sk.public_key())]
    # securesystemslib writes back the same JSON object ailedger wrote
    assert envelope.to_dict() == signed


def test_securesystemslib_refuses_an_altered_ailedger_envelope() -> None:
    sk = Ed25519PrivateKey.generate()
    signed = dsse.sign_statement(STATEMENT, sk)
    altered = dict(STATEMENT, predicate={"note": "altered", "files": 1})
    signed["payload"] = base64.b64encode(canonical_json(altered)).decode()
    key = _sslib_key(sk.public_key(), keyid=dsse.key_id(sk.public_key()))
    with pytest.raises(SslibVerificationError):
        Envelope.from_dict(signed).verify([key], 1)
    other = Ed25519PrivateKey.generate().public_key()
    good = dsse.sign_statement(STATEMENT, sk)
    with pytest.raises(SslibVerificationError):
        Envelope.from_dict(good).verify([_sslib_key(other, keyid=dsse.key_id(sk.public_key()))], 1)


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa-p256"])
def test_securesystemslib_envelope_verifies_with_ailedger(kind: str) -> None:
    private: Ed25519PrivateKey | ec.EllipticCurvePrivateKey = (
        Ed25519PrivateKey.generate()
        if kind == "ed25519"
        else ec.generate_private_key(ec.SECP256R1())  # ecdsa-sha2-nistp256, DER signatures
    )
    envelope = Envelope(canonical_json(STATEMENT), dsse.IN_TOTO_PAYLOAD_TYPE, {})
    envelope.sign(CryptoSigner(private))
    document = json.loads(json.dumps(envelope.to_dict()))  # through JSON text, as on disk
    trusted = private.public_key()
    statement = dsse.verify_envelope(document, [trusted])
    assert statement == STATEMENT
    # securesystemslib's keyid is its own, not ailedger's: ailedger takes it only as a hint
    assert document["signatures"][0]["keyid"] != dsse.key_id(trusted)


def test_ailedger_refuses_an_altered_securesystemslib_envelope() -> None:
    private = Ed25519PrivateKey.generate()
    envelope = Envelope(canonical_json(STATEMENT), dsse.IN_TOTO_PAYLOAD_TYPE, {})
    envelope.sign(CryptoSigner(private))
    document = envelope.to_dict()
    document["payloadType"] = "application/json"  # the type is covered by PAE
    with pytest.raises(SignatureError):
        dsse.verify_envelope(document, [private.public_key()])
    with pytest.raises(SignatureError):
        dsse.verify_envelope(envelope.to_dict(), [Ed25519PrivateKey.generate().public_key()])


def test_two_signatures_threshold_both_ways() -> None:
    ours = Ed25519PrivateKey.generate()
    theirs = ec.generate_private_key(ec.SECP256R1())
    envelope = Envelope(canonical_json(STATEMENT), dsse.IN_TOTO_PAYLOAD_TYPE, {})
    envelope.sign(CryptoSigner(ours))
    envelope.sign(CryptoSigner(theirs))
    document = envelope.to_dict()
    keys = [ours.public_key(), theirs.public_key()]
    assert dsse.verify_envelope(document, keys, threshold=2) == STATEMENT
    with pytest.raises(SignatureError):
        dsse.verify_envelope(
            document, [keys[0], Ed25519PrivateKey.generate().public_key()], threshold=2
        )
    sslib_keys = [SSlibKey.from_crypto(k) for k in keys]
    assert len(Envelope.from_dict(copy.deepcopy(document)).verify(sslib_keys, 2)) == 2
