"""DSSE and in-toto conformance: every case of ``tests/vectors/dsse.json``."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ecp.authority._dsse import Envelope, pae, sign_envelope, verify_envelope
from ecp.authority._intoto import INTOTO_PAYLOAD_TYPE, STATEMENT_TYPE_V1, parse_statement
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority.errors import (
    AuthorityError,
    PayloadTypeError,
    SignatureInvalidError,
    StatementError,
)
from tests.vectors import load_vector_file

VECTORS: dict[str, Any] = load_vector_file("dsse.json")  # type: ignore[assignment]
AT = datetime(2030, 1, 1, tzinfo=UTC)


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c.get("id") or c.get("payloadType") or "empty" for c in cases]


def test_vector_counts_match_manifest() -> None:
    manifest: dict[str, Any] = load_vector_file("MANIFEST.json")  # type: ignore[assignment]
    want = manifest["dsse.json"]
    assert len(VECTORS["pae"]) == want["pae"]
    derived = [e for e in VECTORS["envelopes"] if e.get("derived")]
    assert len(derived) == want["derived_envelopes"]
    assert len(VECTORS["intoto_statements"]) == want["intoto_statements"]


@pytest.mark.parametrize("case", VECTORS["pae"], ids=_ids(VECTORS["pae"]))
def test_pae(case: dict[str, Any]) -> None:
    out = pae(case["payloadType"], bytes.fromhex(case["payload_hex"]))
    assert out.hex() == case["pae_hex"]


def _verify_foreign(env: Envelope, key: dict[str, Any]) -> bool:
    """Verify a non-Ed25519 vector envelope with `cryptography` over our PAE."""
    message = pae(env.payload_type, env.payload)
    sig = env.signatures[0].sig
    kind = key["type"]
    try:
        if kind == "ecdsa-p256-sha256":
            if "public_pem" in key:
                pub = serialization.load_pem_public_key(key["public_pem"].encode())
            else:
                pub = ec.EllipticCurvePublicNumbers(
                    int(key["x"]), int(key["y"]), ec.SECP256R1()
                ).public_key()
            assert isinstance(pub, ec.EllipticCurvePublicKey)
            if key.get("sig_encoding", "").startswith("raw"):
                sig = encode_dss_signature(
                    int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
                )
            pub.verify(sig, message, ec.ECDSA(hashes.SHA256()))
        elif kind == "rsassa-pss-sha256":
            rsa_pub = serialization.load_pem_public_key(key["public_pem"].encode())
            assert isinstance(rsa_pub, rsa.RSAPublicKey)
            rsa_pub.verify(
                sig,
                message,
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
                hashes.SHA256(),
            )
        else:  # pragma: no cover - the vector file only has these kinds
            raise AssertionError(f"unexpected key type {kind}")
    except InvalidSignature:
        return False
    return True


FOREIGN = [e for e in VECTORS["envelopes"] if e["key"]["type"] != "ed25519"]
ED25519 = [e for e in VECTORS["envelopes"] if e["key"]["type"] == "ed25519"]


@pytest.mark.parametrize("case", FOREIGN, ids=_ids(FOREIGN))
def test_foreign_envelopes_verify_over_our_pae(case: dict[str, Any]) -> None:
    env = Envelope.from_dict(case["envelope"])
    ok = _verify_foreign(env, case["key"])
    assert ok is (case["expect"] == "valid")
    # A flipped payload byte must break it: PAE really covers the payload.
    tampered = Envelope(env.payload_type, env.payload + b" ", env.signatures)
    assert not _verify_foreign(tampered, case["key"])
    if case.get("payload_is_intoto_statement_v1"):
        assert parse_statement(env.payload).type == STATEMENT_TYPE_V1


def _ed_signer(case: dict[str, Any]) -> Ed25519FileSigner:
    signer = Ed25519FileSigner(
        Ed25519PrivateKey.from_private_bytes(bytes.fromhex(case["key"]["seed_hex"]))
    )
    assert signer.public_key.public_bytes_raw().hex() == case["key"]["public_raw_hex"]
    return signer


@pytest.mark.parametrize("case", ED25519, ids=_ids(ED25519))
def test_ed25519_envelopes(case: dict[str, Any]) -> None:
    signer = _ed_signer(case)
    trust = TrustStore([TrustedKey.create(signer.public_key, [KeyRole.WORKER])])
    doc = json.loads(json.dumps(case["envelope"]))
    # The vectors' keyid is empty or absent; our verifier looks keys up by id,
    # so name the key the way our trust store knows it.
    for s in doc["signatures"]:
        s["keyid"] = signer.key_id
    env = Envelope.from_json(json.dumps(doc))

    def verify() -> object:
        return verify_envelope(
            env, payload_type=INTOTO_PAYLOAD_TYPE, trust=trust, role=KeyRole.WORKER, at=AT
        )

    if case["expect"] == "valid":
        assert verify().payload == env.payload  # type: ignore[attr-defined]
        # Ed25519 is deterministic: our signer reproduces the vector's signature.
        ours = sign_envelope(env.payload_type, env.payload, signer)
        assert ours.signatures[0].sig == env.signatures[0].sig
        parse_statement(env.payload)
    elif env.payload_type != INTOTO_PAYLOAD_TYPE:
        with pytest.raises(PayloadTypeError):
            verify()
        # Even when the verifier accepts the forged type, PAE authenticates it.
        with pytest.raises(SignatureInvalidError):
            verify_envelope(
                env, payload_type=env.payload_type, trust=trust, role=KeyRole.WORKER, at=AT
            )
    else:
        with pytest.raises(SignatureInvalidError):
            verify()


def test_urlsafe_vector_really_uses_urlsafe_alphabet() -> None:
    case = next(e for e in ED25519 if e["id"] == "derived-ed25519-urlsafe-b64")
    text = case["envelope"]["payload"] + case["envelope"]["signatures"][0]["sig"]
    assert "-" in text or "_" in text
    env = Envelope.from_dict(case["envelope"])
    standard = base64.b64encode(env.payload).decode()
    assert Envelope.from_dict({**case["envelope"], "payload": standard}).payload == env.payload


STATEMENTS = VECTORS["intoto_statements"]


@pytest.mark.parametrize("case", STATEMENTS, ids=_ids(STATEMENTS))
def test_intoto_statements(case: dict[str, Any]) -> None:
    if case["expect"] == "valid":
        stmt = parse_statement(case["json"])
        assert stmt.subject
        assert stmt.predicate_type
    else:
        with pytest.raises(StatementError):
            parse_statement(case["json"])


@pytest.mark.parametrize(
    "text",
    [
        b"not json",
        b"[]",
        b'{"_type":"https://in-toto.io/Statement/v1","_type":"x"}',
        b'{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"ab"}}],'
        b'"predicateType":"p","predicate":{}}',
        b'{"_type":"https://in-toto.io/Statement/v1","subject":"x","predicateType":"p",'
        b'"predicate":{}}',
    ],
)
def test_statement_rejects_malformed(text: bytes) -> None:
    with pytest.raises(StatementError) as info:
        parse_statement(text)
    assert isinstance(info.value, AuthorityError)


def test_statement_round_trip() -> None:
    case = next(c for c in STATEMENTS if c["id"] == "valid-full")
    stmt = parse_statement(case["json"])
    again = parse_statement(json.dumps(stmt.to_dict()))
    assert again == stmt
