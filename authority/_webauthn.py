"""WebAuthn (passkey) approver credentials and the check of one assertion.

A passkey approver is known to the trust store by a :class:`PasskeyCredential`:
the credential id, its COSE public key, the relying party id and origins it
was registered for, a name, roles, a validity period and a revocation time,
like any other trusted key. :func:`verify_assertion` checks one WebAuthn
assertion made by such a credential over an expected challenge, with
py_webauthn (``webauthn`` on PyPI). It is pure and reads no clock, so the
workflow's update validator can run it inside the sandbox.

Sign counters are not tracked: the trust store is read-only to the authority
and the validator is stateless. A replayed assertion is refused instead by
what the challenge binds (one decision, one execution, one approver, whom an
execution takes once); see docs/threat-model.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from urllib.parse import urlsplit

from webauthn import verify_authentication_response
from webauthn.helpers import decode_credential_public_key, parse_attestation_object
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import (
    InvalidAttestationObjectStructure,
    InvalidAuthenticationResponse,
    InvalidAuthenticatorDataStructure,
    InvalidCBORData,
)
from webauthn.helpers.structs import AuthenticationCredential, AuthenticatorAssertionResponse

from ecp.authority._canonical import printable
from ecp.authority.errors import PasskeyAssertionError, TrustStoreError

__all__ = [
    "PASSKEY_ALGORITHMS",
    "PasskeyAssertion",
    "PasskeyCredential",
    "b64url_decode",
    "b64url_encode",
    "credential_from_attestation",
    "passkey_key_id",
    "verify_assertion",
]

#: COSE algorithms a passkey approver may use: ES256, EdDSA, RS256.
PASSKEY_ALGORITHMS: Final = frozenset(
    {
        COSEAlgorithmIdentifier.ECDSA_SHA_256,
        COSEAlgorithmIdentifier.EDDSA,
        COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
    }
)
_MAX_CREDENTIAL_ID: Final = 1023  # WebAuthn Level 3: credential ids are at most 1023 bytes
_MAX_FIELD: Final = 16 * 1024
#: A relying party id is a domain name (never an IP address, which browsers refuse).
_DOMAIN: Final = re.compile(
    r"(?=.{1,253}\Z)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*"
)


def b64url_encode(raw: bytes) -> str:
    """Unpadded base64url, as WebAuthn writes binary fields."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, what: str, *, limit: int = _MAX_FIELD) -> bytes:
    """Decode (padded or unpadded) base64url.

    Raises:
        ValueError: not base64url, empty, or longer than ``limit`` bytes.
    """
    if not isinstance(text, str) or not text or len(text) > limit * 2:
        raise ValueError(f"{what} must be a non-empty base64url string")
    try:
        raw = base64.urlsafe_b64decode(text.encode("ascii") + b"=" * (-len(text) % 4))
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"{what} is not base64url") from exc
    if not raw or len(raw) > limit or b64url_encode(raw) != text.rstrip("="):
        # One encoding per value: a second spelling of a credential id would
        # be a second trust store entry for the same credential.
        raise ValueError(f"{what} is not canonical base64url")
    return raw


def credential_from_attestation(attestation_object: bytes, rp_id: str) -> tuple[bytes, bytes]:
    """The credential id and COSE public key a registration's attestation object holds.

    For registering an approver's passkey from the ``attestationObject`` of
    their ``navigator.credentials.create()`` response. The attestation
    statement is not verified: whoever adds the entry to the trust store
    vouches for the approver, as for an Ed25519 approver key.

    Raises:
        TrustStoreError: not an attestation object with attested credential
            data, or made for another relying party.
    """
    try:
        parsed = parse_attestation_object(attestation_object)
    except (InvalidAttestationObjectStructure, InvalidAuthenticatorDataStructure) as exc:
        raise TrustStoreError(f"not a WebAuthn attestation object: {exc}") from exc
    except (InvalidCBORData, ValueError, KeyError, TypeError) as exc:
        raise TrustStoreError(f"not a WebAuthn attestation object: {exc}") from exc
    data = parsed.auth_data.attested_credential_data
    if data is None:
        raise TrustStoreError("the attestation object holds no credential")
    if parsed.auth_data.rp_id_hash != hashlib.sha256(rp_id.encode()).digest():
        raise TrustStoreError(f"the credential was not made for relying party {rp_id!r}")
    return data.credential_id, data.credential_public_key


def passkey_key_id(credential_id: bytes) -> str:
    """The trust store key id of a passkey credential (derived, never chosen)."""
    return "webauthn:" + hashlib.sha256(credential_id).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class PasskeyCredential:
    """A WebAuthn credential the trust store holds for an approver.

    ``roles`` holds :class:`~ecp.authority._truststore.KeyRole` values; it is
    typed as strings here so this module does not depend on the trust store.
    """

    key_id: str
    credential_id: bytes
    public_key: bytes  # COSE_Key, as the authenticator reported it at registration
    rp_id: str
    origins: tuple[str, ...]
    roles: frozenset[str]
    name: str = ""
    not_before: datetime | None = None
    not_after: datetime | None = None
    revoked_at: datetime | None = None

    @classmethod
    def create(
        cls,
        credential_id: bytes,
        public_key: bytes,
        *,
        rp_id: str,
        origins: Iterable[str],
        roles: Iterable[str],
        name: str,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> PasskeyCredential:
        """Build an entry, checking the key and the relying party.

        Raises:
            TrustStoreError: an unusable credential id, public key, rp id or origin.
        """
        cred = cls(
            passkey_key_id(credential_id),
            credential_id,
            public_key,
            rp_id,
            tuple(origins),
            frozenset(roles),
            name,
            not_before,
            not_after,
        )
        cred.check("passkey")
        return cred

    def check(self, where: str) -> None:
        """Refuse an entry that could never verify, or could verify too much.

        Raises:
            TrustStoreError: what is wrong with it.
        """
        if not 16 <= len(self.credential_id) <= _MAX_CREDENTIAL_ID:
            raise TrustStoreError(f"{where}: credential_id must be 16 to 1023 bytes")
        if self.key_id != passkey_key_id(self.credential_id):
            raise TrustStoreError(f"{where}: key_id does not match the credential id")
        try:
            decoded = decode_credential_public_key(self.public_key)
        except (InvalidCBORData, ValueError, KeyError, TypeError) as exc:
            raise TrustStoreError(f"{where}: public_key is not a COSE key: {exc}") from exc
        alg = getattr(decoded, "alg", None)
        if alg not in PASSKEY_ALGORITHMS:
            raise TrustStoreError(
                f"{where}: COSE algorithm {alg!r} is not one of ES256, EdDSA, RS256"
            )
        if not _DOMAIN.fullmatch(self.rp_id) or self.rp_id.rsplit(".", 1)[-1].isdigit():
            raise TrustStoreError(f"{where}: rp_id must be a domain name")
        if not self.origins:
            raise TrustStoreError(f"{where}: origins must name at least one origin")
        for origin in self.origins:
            if not _is_secure_origin(origin):
                # WebAuthn runs only in secure contexts: https, or localhost.
                raise TrustStoreError(f"{where}: origin {origin[:80]!r} is not https or localhost")

    def to_dict(self, fmt_time: Callable[[datetime | None], str | None]) -> dict[str, object]:
        """JSON form of the entry; ``fmt_time`` writes an optional time."""
        return {
            "key_id": self.key_id,
            "credential_id": b64url_encode(self.credential_id),
            "public_key": b64url_encode(self.public_key),
            "rp_id": self.rp_id,
            "origins": list(self.origins),
            "roles": sorted(self.roles),
            "name": self.name,
            "not_before": fmt_time(self.not_before),
            "not_after": fmt_time(self.not_after),
            "revoked_at": fmt_time(self.revoked_at),
        }

    @staticmethod
    def fields_from_dict(
        doc: Mapping[str, object], where: str
    ) -> tuple[bytes, bytes, str, tuple[str, ...]]:
        """The credential id, public key, rp id and origins of a JSON entry.

        Raises:
            TrustStoreError: a field is missing or malformed.
        """
        try:
            cred_id = b64url_decode(_text(doc, "credential_id", where), "credential_id")
            public_key = b64url_decode(_text(doc, "public_key", where), "public_key")
        except ValueError as exc:
            raise TrustStoreError(f"{where}: {exc}") from exc
        rp_id = _text(doc, "rp_id", where)
        origins = doc.get("origins")
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            raise TrustStoreError(f"{where}: origins must be a list of strings")
        return cred_id, public_key, rp_id, tuple(str(o) for o in origins)


def _is_secure_origin(origin: str) -> bool:
    """``https://host[:port]``, or ``http://localhost[:port]``: an origin, nothing more."""
    if len(origin) > 512:
        return False
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 (raises on a malformed port)
    except ValueError:
        return False
    if parts.path or parts.query or parts.fragment or parts.username or not parts.hostname:
        return False
    if origin != f"{parts.scheme}://{parts.netloc}":
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname == "localhost")


def _text(doc: Mapping[str, object], name: str, where: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise TrustStoreError(f"{where}: missing or non-string field {name!r}")
    return value


@dataclass(frozen=True, slots=True)
class PasskeyAssertion:
    """The parts of a ``navigator.credentials.get()`` response an approval carries."""

    credential_id: bytes
    authenticator_data: bytes
    client_data_json: bytes
    signature: bytes
    user_handle: bytes | None = None


def verify_assertion(
    assertion: PasskeyAssertion,
    credential: PasskeyCredential,
    *,
    challenge: bytes,
) -> None:
    """Verify ``assertion`` was made by ``credential`` over ``challenge``.

    Checks (py_webauthn): the client data type is ``webauthn.get``, its
    challenge is ``challenge``, its origin one of the credential's origins,
    the authenticator data's rp id hash the credential's rp id, the user was
    present AND verified (a PIN or biometric, not a touch alone), and the
    signature over ``authenticatorData || SHA-256(clientDataJSON)``.

    Raises:
        PasskeyAssertionError: any of those fails.
    """
    if assertion.credential_id != credential.credential_id:
        raise PasskeyAssertionError("the assertion was made by another credential")
    raw_id = b64url_encode(assertion.credential_id)
    try:
        verify_authentication_response(
            credential=AuthenticationCredential(
                id=raw_id,
                raw_id=assertion.credential_id,
                response=AuthenticatorAssertionResponse(
                    client_data_json=assertion.client_data_json,
                    authenticator_data=assertion.authenticator_data,
                    signature=assertion.signature,
                    user_handle=assertion.user_handle,
                ),
            ),
            expected_challenge=challenge,
            expected_rp_id=credential.rp_id,
            expected_origin=list(credential.origins),
            credential_public_key=credential.public_key,
            # 0: do not compare counters (there is no stored counter to
            # compare with; replay is refused by the challenge's binding).
            credential_current_sign_count=0,
            require_user_verification=True,
        )
    except InvalidAuthenticationResponse as exc:
        raise PasskeyAssertionError(f"passkey assertion refused: {printable(str(exc))}") from exc
    except (InvalidCBORData, ValueError, KeyError, TypeError) as exc:
        # Malformed authenticator data or client data JSON.
        raise PasskeyAssertionError(
            f"passkey assertion is malformed: {printable(str(exc))}"
        ) from exc
