"""A small OpenID Connect provider for the console's sign-in tests.

Real enough to fail the console where a real one would: a discovery
document, a JWKS with a real RSA key, an authorization endpoint that signs
in whichever user the test chose, and a token endpoint that checks the code,
the client, the redirect URI and the PKCE verifier (S256 only) before it
issues an RS256 ID token carrying the nonce it was given. Its knobs make it
misbehave the ways a console must catch: a wrong nonce, claims overridden or
removed (another issuer or audience, an expired token), a token signed by
another key under the provider's ``kid``, a discovery document that names
another issuer or plain-http endpoints.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_ID = "ecp-console"
CLIENT_SECRET = "test-client-secret"


def _b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass
class Provider:
    """The running provider; ``user`` is whom the next authorization signs in."""

    url: str = ""
    user: dict[str, Any] = field(default_factory=lambda: {"sub": "u-1", "name": "alice"})
    wrong_nonce: bool = False
    #: Claims the next ID tokens carry instead (None: leave the claim out).
    overrides: dict[str, Any] = field(default_factory=dict)
    #: Signs ID tokens instead of ``key``, under the same ``kid`` (a forger's key).
    signer: rsa.RSAPrivateKey | None = None
    #: Entries the discovery document carries instead of its own (another issuer...).
    discovery_overrides: dict[str, object] = field(default_factory=dict)
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def discovery(self) -> dict[str, object]:
        return {
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "jwks_uri": f"{self.url}/jwks",
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"],
        } | self.discovery_overrides

    def jwks(self) -> dict[str, object]:
        pub = self.key.public_key().public_numbers()
        return {
            "keys": [
                {"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256"}
                | {"n": _b64(pub.n), "e": _b64(pub.e)}
            ]
        }

    def authorize(self, q: dict[str, str]) -> str:
        """The redirect back to the client, with a fresh code bound to this request."""
        code = secrets.token_urlsafe(16)
        self.codes[code] = q
        return q["redirect_uri"] + "?" + urlencode({"code": code, "state": q.get("state", "")})

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, object]]:
        self.token_requests.append(form)
        asked = self.codes.pop(form.get("code", ""), None)  # a code works once
        problem = None
        if asked is None:
            problem = "unknown or used code"
        elif form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            problem = "wrong client"
        elif form.get("redirect_uri") != asked.get("redirect_uri"):
            problem = "wrong redirect_uri"
        elif asked.get("code_challenge_method") != "S256":
            problem = "PKCE S256 required"
        else:
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            if base64.urlsafe_b64encode(digest).decode().rstrip("=") != asked.get("code_challenge"):
                problem = "PKCE verifier does not match"
        if problem is not None or asked is None:
            self.refused.append(problem or "")
            return 400, {"error": "invalid_grant", "error_description": problem}
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": "not-yours" if self.wrong_nonce else asked.get("nonce", ""),
            **self.user,
        }
        for name, value in self.overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        key = self.signer or self.key
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
        return 200, {"access_token": "unused", "token_type": "Bearer", "id_token": token}


class _Handler(BaseHTTPRequestHandler):
    provider: Provider

    def _json(self, status: int, doc: object) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/.well-known/openid-configuration":
            self._json(200, self.provider.discovery())
        elif parts.path == "/jwks":
            self._json(200, self.provider.jwks())
        elif parts.path == "/authorize":
            self.send_response(302)
            self.send_header("location", self.provider.authorize(q))
            self.send_header("content-length", "0")
            self.end_headers()
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        if urlsplit(self.path).path == "/token":
            self._json(*self.provider.token(form))
        else:
            self._json(404, {"error": "not found"})

    def log_message(self, format: str, *args: object) -> None:
        return


class RunningProvider:
    """The provider on a loopback port, in a thread, for a ``with`` block."""

    def __init__(self) -> None:
        self.provider = Provider()
        handler = type("Handler", (_Handler,), {"provider": self.provider})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.provider.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Provider:
        self.thread.start()
        return self.provider

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
