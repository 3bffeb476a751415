"""A software passkey (ES256) for tests: the same key can sit in a virtual
authenticator (Chrome DevTools ``WebAuthn.addCredential``) or sign assertions
here, byte for byte as an authenticator does (WebAuthn Level 3, section 6.3.3).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from datetime import datetime

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ecp.authority._truststore import KeyRole
from ecp.authority._webauthn import PasskeyAssertion, PasskeyCredential, b64url_encode

_FLAGS_UP_UV = 0x01 | 0x04


@dataclass
class SoftPasskey:
    """One ES256 credential: private key, credential id, user handle."""

    rp_id: str = "localhost"
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    credential_id: bytes = field(default_factory=lambda: os.urandom(32))
    user_handle: bytes = field(default_factory=lambda: os.urandom(16))
    sign_count: int = 0

    def cose_public_key(self) -> bytes:
        """The credential's COSE_Key (EC2, P-256, ES256), as registration reports it."""
        nums = self.private_key.public_key().public_numbers()
        return cbor2.dumps(
            {1: 2, 3: -7, -1: 1, -2: nums.x.to_bytes(32, "big"), -3: nums.y.to_bytes(32, "big")}
        )

    def credential(
        self,
        name: str,
        origins: tuple[str, ...],
        *,
        revoked_at: datetime | None = None,
    ) -> PasskeyCredential:
        """The trust store entry for this passkey."""
        cred = PasskeyCredential.create(
            self.credential_id,
            self.cose_public_key(),
            rp_id=self.rp_id,
            origins=origins,
            roles={KeyRole.APPROVER},
            name=name,
        )
        if revoked_at is None:
            return cred
        from dataclasses import replace

        return replace(cred, revoked_at=revoked_at)

    def cdp_credential(self) -> dict[str, object]:
        """This credential as ``WebAuthn.addCredential`` takes it (base64 fields)."""
        pkcs8 = self.private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return {
            "credentialId": base64.b64encode(self.credential_id).decode(),
            "isResidentCredential": True,
            "rpId": self.rp_id,
            "privateKey": base64.b64encode(pkcs8).decode(),
            "userHandle": base64.b64encode(self.user_handle).decode(),
            "signCount": self.sign_count,
        }

    def sign_assertion(
        self, challenge: bytes, origin: str, *, flags: int = _FLAGS_UP_UV
    ) -> PasskeyAssertion:
        """Sign an assertion over ``challenge`` as a browser at ``origin`` would ask."""
        self.sign_count += 1
        auth_data = (
            hashlib.sha256(self.rp_id.encode()).digest()
            + bytes([flags])
            + struct.pack(">I", self.sign_count)
        )
        client_data = json.dumps(
            {"type": "webauthn.get", "challenge": b64url_encode(challenge), "origin": origin},
            separators=(",", ":"),
        ).encode()
        signature = self.private_key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return PasskeyAssertion(
            self.credential_id, auth_data, client_data, signature, self.user_handle
        )
