"""DSSE envelopes: pre-authentication encoding, parsing, signing and verifying.

Signatures are made and checked over PAE(payloadType, payload) of the *exact*
payload bytes carried in the envelope; nothing is ever re-serialised to check
a signature.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ecp.authority._canonical import parse_json_strict, printable
from ecp.authority._keys import ED25519_SIGNATURE_SIZE, Signer, verify_ed25519
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority.errors import (
    AuthorityError,
    CanonicalizationError,
    DuplicateKeyEnvelopeError,
    DuplicateKeyJSONError,
    EnvelopeTooLargeError,
    MalformedBase64Error,
    MalformedEnvelopeError,
    MalformedSignatureError,
    PayloadTypeError,
    SignatureInvalidError,
    VerificationError,
)

__all__ = [
    "DEFAULT_MAX_ENVELOPE_BYTES",
    "Envelope",
    "EnvelopeSignature",
    "VerifiedEnvelope",
    "b64decode_any",
    "pae",
    "sign_envelope",
    "verify_envelope",
]

#: Grants and evidence are small; a large envelope is an attack, not a grant.
DEFAULT_MAX_ENVELOPE_BYTES = 64 * 1024


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding. Lengths are byte lengths.

    Raises:
        MalformedEnvelopeError: the payloadType is not encodable as UTF-8
            (it holds a lone surrogate).
    """
    try:
        t = payload_type.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MalformedEnvelopeError("payloadType is not valid Unicode text") from exc
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def _utf8_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def b64decode_any(text: str, *, what: str) -> bytes:
    """Decode standard or URL-safe base64, padded or not, strictly.

    Raises:
        MalformedBase64Error: the text is not base64 in either alphabet.
    """
    if not isinstance(text, str):
        raise MalformedBase64Error(f"{what} must be a base64 string")
    s = text.strip()
    if "-" in s or "_" in s:
        s = s.replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedBase64Error(f"{what} is not valid base64") from exc


@dataclass(frozen=True, slots=True)
class EnvelopeSignature:
    """One signature of an envelope."""

    keyid: str
    sig: bytes


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed DSSE envelope; ``payload`` holds the exact signed bytes."""

    payload_type: str
    payload: bytes
    signatures: tuple[EnvelopeSignature, ...]

    @classmethod
    def from_json(
        cls, data: bytes | str, *, max_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES
    ) -> Envelope:
        """Parse a DSSE JSON envelope strictly.

        Raises:
            EnvelopeTooLargeError: the document exceeds ``max_bytes``.
            DuplicateKeyEnvelopeError: the JSON repeats an object key.
            MalformedEnvelopeError: not JSON, missing or mistyped fields,
                no signatures.
            MalformedBase64Error: payload or a signature is not base64.
        """
        if isinstance(data, str):
            try:
                raw = data.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise MalformedEnvelopeError("envelope text holds a lone surrogate") from exc
        elif isinstance(data, bytes | bytearray | memoryview):
            raw = bytes(data)
        else:
            raise MalformedEnvelopeError(
                f"envelope must be bytes or text, not {type(data).__name__}"
            )
        if len(raw) > max_bytes:
            raise EnvelopeTooLargeError(f"envelope is {len(raw)} bytes, limit is {max_bytes}")
        try:
            doc = parse_json_strict(raw)
        except DuplicateKeyJSONError as exc:
            raise DuplicateKeyEnvelopeError(f"envelope JSON is ambiguous: {exc}") from exc
        except CanonicalizationError as exc:
            raise MalformedEnvelopeError(f"envelope is not valid JSON: {exc}") from exc
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: object) -> Envelope:
        """Build an envelope from its decoded JSON object.

        Raises:
            MalformedEnvelopeError: missing or mistyped fields.
            MalformedBase64Error: payload or a signature is not base64.
        """
        if not isinstance(doc, dict):
            raise MalformedEnvelopeError("envelope must be a JSON object")
        extra = set(doc) - {"payload", "payloadType", "signatures"}
        if extra:
            raise MalformedEnvelopeError(f"unknown envelope fields: {sorted(extra)}")
        payload_type = doc.get("payloadType")
        if not isinstance(payload_type, str) or not _utf8_text(payload_type):
            raise MalformedEnvelopeError("envelope payloadType must be a string")
        payload_b64 = doc.get("payload")
        if not isinstance(payload_b64, str):
            raise MalformedEnvelopeError("envelope payload must be a base64 string")
        payload = b64decode_any(payload_b64, what="envelope payload")
        sigs_doc = doc.get("signatures")
        if not isinstance(sigs_doc, list) or not sigs_doc:
            raise MalformedEnvelopeError("envelope must carry at least one signature")
        sigs: list[EnvelopeSignature] = []
        for i, s in enumerate(sigs_doc):
            if not isinstance(s, dict) or not isinstance(s.get("sig"), str):
                raise MalformedEnvelopeError(f"signature {i} must be an object with 'sig'")
            keyid = s.get("keyid", "")
            if not isinstance(keyid, str) or not _utf8_text(keyid):
                raise MalformedEnvelopeError(f"signature {i} keyid must be a string")
            sigs.append(EnvelopeSignature(keyid, b64decode_any(s["sig"], what=f"signature {i}")))
        return cls(payload_type, payload, tuple(sigs))

    def to_dict(self) -> dict[str, object]:
        """The envelope as a JSON-ready dict (standard base64)."""
        return {
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "payloadType": self.payload_type,
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                for s in self.signatures
            ],
        }

    def to_json(self) -> bytes:
        """Serialise the envelope as compact JSON bytes."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class VerifiedEnvelope:
    """An envelope whose signature verified under a trusted key."""

    envelope: Envelope
    key: TrustedKey

    @property
    def payload(self) -> bytes:
        """The exact signed payload bytes."""
        return self.envelope.payload


def sign_envelope(payload_type: str, payload: bytes, signer: Signer) -> Envelope:
    """Sign ``payload`` and wrap it in a one-signature envelope."""
    sig = signer.sign(pae(payload_type, payload))
    return Envelope(payload_type, payload, (EnvelopeSignature(signer.key_id, sig),))


def verify_with_key(envelope: Envelope, key: Ed25519PublicKey) -> bool:
    """Return whether any signature of ``envelope`` verifies under ``key``."""
    message = pae(envelope.payload_type, envelope.payload)
    return any(verify_ed25519(key, s.sig, message) for s in envelope.signatures)


def verify_envelope(
    envelope: Envelope,
    *,
    payload_type: str | Sequence[str],
    trust: TrustStore,
    role: KeyRole,
    at: datetime,
) -> VerifiedEnvelope:
    """Verify ``envelope`` against the trust store, in the house order.

    Order: payloadType → key lookup (unknown, revoked, out of validity or
    wrong role fails) → signature shape → signature over PAE.

    Raises:
        PayloadTypeError: the payloadType is not one of ``payload_type``.
        UnknownKeyError, RevokedKeyError, KeyExpiredError, KeyRoleError:
            no signature names a usable key (the error of the first one).
        MalformedSignatureError: a signature is not 64 bytes.
        SignatureInvalidError: no signature verifies.
    """
    allowed = (payload_type,) if isinstance(payload_type, str) else tuple(payload_type)
    if envelope.payload_type not in allowed:
        raise PayloadTypeError(
            f"payloadType {envelope.payload_type!r} is not {' or '.join(map(repr, allowed))}"
        )
    first_error: AuthorityError | None = None
    message = pae(envelope.payload_type, envelope.payload)
    for s in envelope.signatures:
        try:
            key = trust.require(s.keyid, role=role, at=at)
        except VerificationError as exc:
            first_error = first_error or exc
            continue
        if len(s.sig) != ED25519_SIGNATURE_SIZE:
            first_error = first_error or MalformedSignatureError(
                f"signature by {printable(s.keyid)} is {len(s.sig)} bytes, Ed25519 needs 64"
            )
            continue
        if verify_ed25519(key.public_key, s.sig, message):
            return VerifiedEnvelope(envelope, key)
        first_error = first_error or SignatureInvalidError(
            f"signature by {printable(s.keyid)} does not verify over the payload"
        )
    assert first_error is not None  # envelopes always carry >= 1 signature
    raise first_error
