"""OIDC ID-token verification against a real local issuer.

The issuer is an http.server on 127.0.0.1 (an ephemeral port) serving a
discovery document and a JWKS for freshly generated RSA, Ed25519 and P-256
keys; tokens are minted with PyJWT. Forged tokens (``alg: none``, HMAC with
the RSA public key as secret) are built by hand, since no library will mint
them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from ecp.authority._oidc import (
    MAX_TOKEN_BYTES,
    IdTokenAlgorithmError,
    IdTokenAudienceError,
    IdTokenError,
    IdTokenExpiredError,
    IdTokenIssuerError,
    IdTokenNotYetValidError,
    IdTokenSignatureError,
    OidcConfigError,
    OidcDiscoveryError,
    OidcIssuer,
    RemoteJwks,
    StaticJwks,
    VerifiedIdentity,
    discover,
    from_jwks_file,
    verify_id_token,
)
from ecp.authority.errors import ClockError, VerificationError

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
AUDIENCE = "ecp-authority"
DELETE = object()


# --- keys and tokens ------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    rsa: rsa.RSAPrivateKey
    rsa_other: rsa.RSAPrivateKey
    ed: ed25519.Ed25519PrivateKey
    ec: ec.EllipticCurvePrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa_other=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ed=ed25519.Ed25519PrivateKey.generate(),
        ec=ec.generate_private_key(ec.SECP256R1()),
    )


def jwk(private_key: Any, kid: str | None, *, alg: str | None = None) -> dict[str, Any]:
    """The public JWK of ``private_key``, as an issuer publishes it."""
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        doc = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        doc = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        doc = OKPAlgorithm.to_jwk(public, as_dict=True)
    doc["use"] = "sig"
    if kid is not None:
        doc["kid"] = kid
    if alg is not None:
        doc["alg"] = alg
    return doc


def standard_jwks(keys: Keys) -> dict[str, Any]:
    return {
        "keys": [
            jwk(keys.rsa, "rsa-1", alg="RS256"),
            jwk(keys.ed, "ed-1"),
            jwk(keys.ec, "ec-1"),
        ]
    }


def claims(issuer: str, **changes: object) -> dict[str, Any]:
    body: dict[str, Any] = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "user-123",
        "iat": T,
        "exp": T + 600,
        "email": "ada@example.com",
        "email_verified": True,
    }
    for name, value in changes.items():
        if value is DELETE:
            body.pop(name, None)
        else:
            body[name] = value
    return body


def mint(
    key: Any, issuer: str, *, alg: str = "RS256", kid: str | None = "rsa-1", **changes: object
) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims(issuer, **changes), key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64_json(value: object) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def sign_rs256(header: bytes, payload: bytes, key: rsa.RSAPrivateKey) -> str:
    """A compact JWS over arbitrary header and payload bytes, genuinely RS256-signed."""
    signing_input = f"{b64(header)}.{b64(payload)}".encode()
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode()}.{b64(signature)}"


# --- the local issuer -----------------------------------------------------------------


@dataclass
class LocalIdp:
    """An OIDC issuer on 127.0.0.1: routes are mutable, GETs are counted."""

    url: str = ""
    routes: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self, path: str, document: object, status: int = 200) -> None:
        self.routes[path] = (status, json.dumps(document).encode())

    def serve_discovery(self, *, issuer: str | None = None, jwks_uri: str | None = None) -> None:
        self.serve(
            "/.well-known/openid-configuration",
            {
                "issuer": self.url if issuer is None else issuer,
                "jwks_uri": f"{self.url}/jwks" if jwks_uri is None else jwks_uri,
                "id_token_signing_alg_values_supported": ["RS256", "EdDSA", "ES256"],
            },
        )


@pytest.fixture
def idp(keys: Keys) -> Iterator[LocalIdp]:
    state = LocalIdp()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                state.hits[self.path] += 1
                status, body = state.routes.get(self.path, (404, b'{"error":"not found"}'))
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", f"{state.url}/jwks")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep pytest output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    state.serve_discovery()
    state.serve("/jwks", standard_jwks(keys))
    # A short poll keeps shutdown() (once per test) from waiting half a second.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="local-oidc-issuer"
    )
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def issuer(idp: LocalIdp) -> OidcIssuer:
    return discover(idp.url, audience=AUDIENCE, timeout=5)


# --- valid tokens ---------------------------------------------------------------------


def test_valid_rs256_token_verifies(idp: LocalIdp, issuer: OidcIssuer, keys: Keys) -> None:
    identity = verify_id_token(mint(keys.rsa, idp.url), issuer, now=NOW)
    assert isinstance(identity, VerifiedIdentity)
    assert identity.issuer == idp.url
    assert identity.subject == "user-123"
    assert identity.principal == "user-123"  # principal_claim defaults to sub
    assert identity.expires_at == NOW + timedelta(seconds=600)
    assert identity.claims["email"] == "ada@example.com"
    with pytest.raises(TypeError):
        identity.claims["sub"] = "mallory"  # type: ignore[index]


def test_valid_eddsa_token_with_principal_from_email(idp: LocalIdp, keys: Keys) -> None:
    issuer = OidcIssuer.discover(idp.url, audience=AUDIENCE, principal_claim="email")
    token = mint(keys.ed, idp.url, alg="EdDSA", kid="ed-1")
    identity = verify_id_token(token, issuer, now=NOW)
    assert identity.principal == "ada@example.com"
    assert identity.subject == "user-123"


def test_valid_es256_token_with_audience_list(
    idp: LocalIdp, issuer: OidcIssuer, keys: Keys
) -> None:
    token = mint(keys.ec, idp.url, alg="ES256", kid="ec-1", aud=["other-client", AUDIENCE])
    assert verify_id_token(token, issuer, now=NOW).principal == "user-123"


def test_default_now_is_the_system_clock(idp: LocalIdp, issuer: OidcIssuer, keys: Keys) -> None:
    real_now = int(datetime.now(UTC).timestamp())
    token = mint(keys.rsa, idp.url, iat=real_now, exp=real_now + 60)
    assert verify_id_token(token, issuer).subject == "user-123"
    stale = mint(keys.rsa, idp.url, iat=real_now - 900, exp=real_now - 300)
    with pytest.raises(IdTokenExpiredError):
        verify_id_token(stale, issuer)
    with pytest.raises(IdTokenNotYetValidError):
        verify_id_token(mint(keys.rsa, idp.url), issuer)  # issued in 2030
    with pytest.raises(ClockError):
        verify_id_token(token, issuer, now=datetime(2030, 1, 1))  # naive: refused, not guessed


# --- time -----------------------------------------------------------------------------


def test_expired_token_is_refused(idp: LocalIdp, issuer: OidcIssuer, keys: Keys) -> None:
    token = mint(keys.rsa, idp.url, iat=T - 3600, exp=T - 31)
    with pytest.raises(IdTokenExpiredError, match="expired 31 s ago"):
        verify_id_token(token, issuer, now=NOW)
    # Within the 30 s leeway it still verifies.
    assert verify_id_token(mint(keys.rsa, idp.url, exp=T - 29), issuer, now=NOW)


def test_not_yet_valid_token_is_refused(idp: LocalIdp, issuer: OidcIssuer, keys: Keys) -> None:
    with pytest.raises(IdTokenNotYetValidError, match="nbf"):
        verify_id_token(mint(keys.rsa, idp.url, nbf=T + 120), issuer, now=NOW)
    with pytest.raises(IdTokenNotYetValidError, match="iat"):
        verify_id_token(mint(keys.rsa, idp.url, iat=T + 120, exp=T + 900), issuer, now=NOW)
    assert verify_id_token(mint(keys.rsa, idp.url, nbf=T + 20), issuer, now=NOW)


# --- audience and issuer --------------------------------------------------------------


def test_wrong_audience_is_refused(idp: LocalIdp, issuer: OidcIssuer, keys: Keys) -> None:
    with pytest.raises(IdTokenAudienceError):
        verify_id_token(mint(keys.rsa, idp.url, aud="another-client"), issuer, now=NOW)
    with pytest.raises(IdTokenAudienceError):
        verify_id_token(mint(keys.rsa, idp.url, aud=["a", "b"]), issuer, now=NOW)


def test_wrong_issuer_is_refused(idp: LocalIdp, issuer: OidcIssuer, keys: Keys) -> None:
    # Signed with the issuer's own key, but claiming another issuer: iss is compared exactly.
    for iss in ("https://evil.example", f"{idp.url}/", idp.url.upper()):
        with pytest.raises(IdTokenIssuerError):
            verify_id_token(mint(keys.rsa, iss), issuer, now=NOW)


# --- algorithms and keys --------------------------------------------------------------


def test_alg_none_is_refused(idp: LocalIdp, issuer: OidcIssuer) -> None:
    for alg in ("none", "None", "NONE"):
        token = f"{b64_json({'alg': alg, 'kid': 'rsa-1'})}.{b64_json(claims(idp.url))}."
        with pytest.raises(IdTokenAlgorithmError):
            verify_id_token(token, issuer, now=NOW)
    bare = f"{b64_json({'alg': 'none'})}.{b64_json(claims(idp.url))}."
    with pytest.raises(IdTokenAlgorithmError):
        verify_id_token(bare, issuer, now=NOW)


def test_key_confusion_hs256_with_rsa_public_pem_is_refused(
    idp: LocalIdp, issuer: OidcIssuer, keys: Keys
) -> None:
    pem = keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64_json({'alg': 'HS256', 'kid': 'rsa-1', 'typ': 'JWT'})}."
    signing_input += b64_json(claims(idp.url))
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{b64(mac)}"
    with pytest.raises(IdTokenAlgorithmError):
        verify_id_token(forged, issuer, now=NOW)
    # The layer beneath holds too: PyJWT given the RSA key object and an
    # asymmetric allow-list refuses the HS256 header before using the key.
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(forged, key=keys.rsa.public_key(), algorithms=["RS256"], audience=AUDIENCE)


def test_alg_of_another_key_type_is_refused(idp: LocalIdp, issuer: OidcIssuer, keys: Keys) -> None:
    # An allowed alg, but not the named key's: the Ed25519 key never verifies RS256.
    with pytest.raises(IdTokenAlgorithmError, match="key 'ed-1'"):
        verify_id_token(mint(keys.rsa, idp.url, kid="ed-1"), issuer, now=NOW)
    with pytest.raises(IdTokenAlgorithmError):
        verify_id_token(mint(keys.ec, idp.url, alg="ES256", kid="rsa-1"), issuer, now=NOW)


def test_unknown_kid_refetches_once_then_refuses(
    idp: LocalIdp, issuer: OidcIssuer, keys: Keys
) -> None:
    assert idp.hits["/jwks"] == 1  # discovery fetched the JWKS eagerly
    with pytest.raises(IdTokenSignatureError, match="does not publish"):
        verify_id_token(mint(keys.rsa_other, idp.url, kid="rotated"), issuer, now=NOW)
    assert idp.hits["/jwks"] == 2  # exactly one refetch
    # A burst of random kids inside the cooldown costs the issuer nothing more.
    for kid in ("x1", "x2", "x3"):
        with pytest.raises(IdTokenSignatureError):
            verify_id_token(mint(keys.rsa_other, idp.url, kid=kid), issuer, now=NOW)
    assert idp.hits["/jwks"] == 2


def test_unknown_kid_refetch_finds_a_rotated_key(idp: LocalIdp, keys: Keys) -> None:
    issuer = discover(idp.url, audience=AUDIENCE)
    jwks = standard_jwks(keys)
    jwks["keys"].append(jwk(keys.rsa_other, "rsa-2"))
    idp.serve("/jwks", jwks)  # the issuer rotates after ECP cached its keys
    identity = verify_id_token(mint(keys.rsa_other, idp.url, kid="rsa-2"), issuer, now=NOW)
    assert identity.subject == "user-123"
    assert idp.hits["/jwks"] == 2


def test_other_key_with_same_kid_is_refused(idp: LocalIdp, issuer: OidcIssuer, keys: Keys) -> None:
    with pytest.raises(IdTokenSignatureError, match="does not verify"):
        verify_id_token(mint(keys.rsa_other, idp.url, kid="rsa-1"), issuer, now=NOW)


def test_short_rsa_key_is_refused(keys: Keys) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    iss = "https://issuer.example"
    issuer = OidcIssuer(
        issuer=iss, audience=AUDIENCE, jwks=StaticJwks.from_document({"keys": [jwk(weak, "w")]})
    )
    with warnings.catch_warnings():  # PyJWT warns about the short key when minting
        warnings.simplefilter("ignore")
        token = mint(weak, iss, kid="w")
    with pytest.raises(IdTokenSignatureError, match="unusable"):
        verify_id_token(token, issuer, now=NOW)


def test_header_without_alg_is_refused(offline: OidcIssuer, keys: Keys) -> None:
    with pytest.raises(IdTokenAlgorithmError, match="names no alg"):
        verify_id_token(resigned(keys, claims("https://issuer.example"), {"kid": "rsa-1"}), offline)


def test_tampered_payload_is_refused(idp: LocalIdp, issuer: OidcIssuer, keys: Keys) -> None:
    header, _, signature = mint(keys.rsa, idp.url).split(".")
    tampered = f"{header}.{b64_json(claims(idp.url, sub='admin'))}.{signature}"
    with pytest.raises(IdTokenSignatureError):
        verify_id_token(tampered, issuer, now=NOW)


def test_token_without_kid(idp: LocalIdp, keys: Keys, tmp_path: Path) -> None:
    iss = "https://issuer.example"
    one_rsa = tmp_path / "one.json"
    one_rsa.write_text(json.dumps({"keys": [jwk(keys.rsa, None), jwk(keys.ed, None)]}))
    issuer = from_jwks_file(one_rsa, issuer=iss, audience=AUDIENCE)
    # Exactly one key of the token's type: it is the one.
    assert verify_id_token(mint(keys.rsa, iss, kid=None), issuer, now=NOW)
    assert verify_id_token(mint(keys.ed, iss, alg="EdDSA", kid=None), issuer, now=NOW)
    two_rsa = tmp_path / "two.json"
    two_rsa.write_text(json.dumps({"keys": [jwk(keys.rsa, "a"), jwk(keys.rsa_other, "b")]}))
    issuer = from_jwks_file(two_rsa, issuer=iss, audience=AUDIENCE)
    with pytest.raises(IdTokenSignatureError, match="no key id"):
        verify_id_token(mint(keys.rsa, iss, kid=None), issuer, now=NOW)


# --- discovery ------------------------------------------------------------------------


def test_discovery_naming_another_issuer_is_refused(idp: LocalIdp) -> None:
    idp.serve_discovery(issuer="https://accounts.example.com")
    with pytest.raises(OidcDiscoveryError, match="names issuer") as caught:
        discover(idp.url, audience=AUDIENCE)
    assert caught.value.retryable is True
    assert caught.value.code == "oidc_discovery_failed"
    assert isinstance(caught.value, VerificationError)
    assert idp.hits["/jwks"] == 0  # its keys were never fetched


def test_discovery_trailing_slash_issuer(idp: LocalIdp, keys: Keys) -> None:
    # Discovery drops a trailing "/" before the well-known path; iss must still match exactly.
    idp.serve_discovery(issuer=f"{idp.url}/")
    issuer = discover(f"{idp.url}/", audience=AUDIENCE)
    assert verify_id_token(mint(keys.rsa, f"{idp.url}/"), issuer, now=NOW)
    with pytest.raises(IdTokenIssuerError):
        verify_id_token(mint(keys.rsa, idp.url), issuer, now=NOW)


@pytest.mark.parametrize(
    "jwks_uri",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/jwks",
        "http://issuer.example/jwks",  # plain http off loopback
        "https://user:secret@issuer.example/jwks",
    ],
)
def test_discovery_jwks_uri_must_be_https(idp: LocalIdp, jwks_uri: str) -> None:
    idp.serve_discovery(jwks_uri=jwks_uri)
    with pytest.raises(OidcDiscoveryError):
        discover(idp.url, audience=AUDIENCE)


def test_discovery_failures_are_discovery_errors(idp: LocalIdp, keys: Keys) -> None:
    idp.serve("/jwks", {"keys": []})
    with pytest.raises(OidcDiscoveryError, match="no RSA, EC or OKP"):
        discover(idp.url, audience=AUDIENCE)
    idp.routes["/jwks"] = (200, b"{" + b" " * (600 * 1024) + b"}")
    with pytest.raises(OidcDiscoveryError, match="larger than"):
        discover(idp.url, audience=AUDIENCE)
    idp.routes["/jwks"] = (200, b'{"keys": [], "keys": []}')
    with pytest.raises(OidcDiscoveryError, match="strict JSON"):
        discover(idp.url, audience=AUDIENCE)
    idp.serve("/jwks", {"keys": [{**jwk(keys.rsa, "rsa-1"), "d": "AAAA"}]})
    with pytest.raises(OidcDiscoveryError, match="private key"):
        discover(idp.url, audience=AUDIENCE)
    idp.serve("/jwks", {}, status=302)
    with pytest.raises(OidcDiscoveryError, match="redirects"):
        discover(idp.url, audience=AUDIENCE)
    idp.serve("/jwks", {}, status=503)
    with pytest.raises(OidcDiscoveryError, match="HTTP 503"):
        discover(idp.url, audience=AUDIENCE)
    with pytest.raises(OidcDiscoveryError, match="HTTP 404"):
        discover(f"{idp.url}/tenant", audience=AUDIENCE)
    with pytest.raises(OidcDiscoveryError, match="plain http"):
        discover("http://issuer.example", audience=AUDIENCE)


def test_unreachable_issuer_is_a_retryable_discovery_error() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago, now closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OidcDiscoveryError, match="cannot fetch") as caught:
        discover(f"http://127.0.0.1:{port}", audience=AUDIENCE, timeout=2)
    assert caught.value.retryable


def test_cached_keys_expire_so_withdrawn_keys_stop_verifying(idp: LocalIdp, keys: Keys) -> None:
    clock = [0.0]
    jwks = RemoteJwks(f"{idp.url}/jwks", max_age_seconds=60, monotonic=lambda: clock[0])
    issuer = OidcIssuer(issuer=idp.url, audience=AUDIENCE, jwks=jwks)
    token = mint(keys.ed, idp.url, alg="EdDSA", kid="ed-1")
    assert verify_id_token(token, issuer, now=NOW)
    idp.serve("/jwks", {"keys": [jwk(keys.rsa, "rsa-1")]})  # the issuer withdraws ed-1
    clock[0] = 59.0
    assert verify_id_token(token, issuer, now=NOW)  # still cached
    clock[0] = 61.0
    with pytest.raises(IdTokenSignatureError):
        verify_id_token(token, issuer, now=NOW)
    idp.serve("/jwks", {}, status=500)
    clock[0] = 200.0
    with pytest.raises(OidcDiscoveryError):  # stale keys are not used in an outage
        verify_id_token(mint(keys.rsa, idp.url), issuer, now=NOW)


# --- the offline JWKS file ------------------------------------------------------------


def test_jwks_file_verifies_offline(keys: Keys, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(standard_jwks(keys)))
    iss = "https://issuer.example"
    issuer = from_jwks_file(path, issuer=iss, audience=AUDIENCE)
    assert verify_id_token(mint(keys.rsa, iss), issuer, now=NOW).subject == "user-123"
    assert verify_id_token(mint(keys.ed, iss, alg="EdDSA", kid="ed-1"), issuer, now=NOW)
    same = OidcIssuer.from_jwks_file(path, issuer=iss, audience=AUDIENCE, algorithms=["EdDSA"])
    assert same.algorithms == ("EdDSA",)
    with pytest.raises(IdTokenAlgorithmError):
        verify_id_token(mint(keys.rsa, iss), same, now=NOW)
    # A pinned set has nowhere to refetch from: an unknown kid is refused outright.
    with pytest.raises(IdTokenSignatureError):
        verify_id_token(mint(keys.rsa_other, iss, kid="rotated"), issuer, now=NOW)


def test_bad_jwks_files_are_config_errors(keys: Keys, tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"issuer": "https://issuer.example", "audience": AUDIENCE}
    with pytest.raises(OidcConfigError, match="cannot read"):
        from_jwks_file(tmp_path / "missing.json", **kwargs)
    leaked = tmp_path / "leaked.json"
    private = RSAAlgorithm.to_jwk(keys.rsa, as_dict=True)
    leaked.write_text(json.dumps({"keys": [private]}))
    with pytest.raises(OidcConfigError, match="private key material"):
        from_jwks_file(leaked, **kwargs)
    hmac_only = tmp_path / "oct.json"
    hmac_only.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}))
    with pytest.raises(OidcConfigError, match="private key material"):
        from_jwks_file(hmac_only, **kwargs)  # a shared secret, published
    no_signing_key = tmp_path / "enc.json"
    no_signing_key.write_text(json.dumps({"keys": [{**jwk(keys.rsa, "e"), "use": "enc"}]}))
    with pytest.raises(OidcConfigError, match="no RSA, EC or OKP signing key"):
        from_jwks_file(no_signing_key, **kwargs)
    not_json = tmp_path / "junk.json"
    not_json.write_text("{'keys': []}")
    with pytest.raises(OidcConfigError, match="strict JSON"):
        from_jwks_file(not_json, **kwargs)


# --- configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    "algorithms",
    [
        ("none",),
        ("RS256", "none"),
        ("RS256", "NONE"),
        ("HS256",),
        ("RS256", "HS256"),
        ("EdDSA", "hs512"),
        (),
        ("RS1",),
    ],
)
def test_unsafe_algorithm_lists_are_refused_at_construction(
    keys: Keys, algorithms: tuple[str, ...]
) -> None:
    jwks = StaticJwks.from_document(standard_jwks(keys))
    with pytest.raises(OidcConfigError):
        OidcIssuer(issuer="https://i.example", audience=AUDIENCE, jwks=jwks, algorithms=algorithms)


@pytest.mark.parametrize(
    "changes",
    [
        {"leeway_seconds": -1},
        {"leeway_seconds": 3600},
        {"issuer": ""},
        {"audience": ""},
        {"principal_claim": ""},
    ],
)
def test_bad_issuer_settings_are_refused(keys: Keys, changes: dict[str, Any]) -> None:
    settings_: dict[str, Any] = {
        "issuer": "https://i.example",
        "audience": AUDIENCE,
        "jwks": StaticJwks.from_document(standard_jwks(keys)),
        **changes,
    }
    with pytest.raises(OidcConfigError):
        OidcIssuer(**settings_)


# --- malformed tokens -----------------------------------------------------------------


@pytest.fixture(scope="module")
def offline(keys: Keys) -> OidcIssuer:
    return OidcIssuer(
        issuer="https://issuer.example",
        audience=AUDIENCE,
        jwks=StaticJwks.from_document(standard_jwks(keys)),
    )


def resigned(keys: Keys, payload: object, header: object = None) -> str:
    header = {"alg": "RS256", "kid": "rsa-1"} if header is None else header
    return sign_rs256(json.dumps(header).encode(), json.dumps(payload).encode(), keys.rsa)


@pytest.mark.parametrize(
    ("token", "error", "match"),
    [
        ("", IdTokenError, "not a JWT"),
        ("not a jwt", IdTokenError, "not a JWT"),
        ("a.b.c.d.e", IdTokenError, "JWE"),
        ("é.é.é", IdTokenError, "non-ASCII"),
        ("x" * (MAX_TOKEN_BYTES + 1), IdTokenError, "refuses more than"),
        ("!!!.!!!.!!!", IdTokenError, "not a well-formed JWT"),
        (f"{b64(b'[1]')}.e30.", IdTokenError, "well-formed"),
    ],
)
def test_malformed_tokens(
    offline: OidcIssuer, token: str, error: type[IdTokenError], match: str
) -> None:
    with pytest.raises(error, match=match):
        verify_id_token(token, offline, now=NOW)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"sub": 42}, "sub"),
        ({"sub": ""}, "sub"),
        ({"sub": DELETE}, "'sub' is missing"),
        ({"iat": DELETE}, "'iat' is missing"),
        ({"exp": DELETE}, "'exp' is missing"),
        ({"aud": DELETE}, "'aud' is missing"),
        ({"exp": "tomorrow"}, "exp must be a number"),
        ({"exp": True}, "exp must be a number"),
        ({"exp": 10**30}, "representable"),
        ({"nbf": [1]}, "nbf must be a number"),
        ({"iss": 7}, "iss"),
        ({"aud": {"x": 1}}, "aud"),
    ],
)
def test_ill_typed_claims_are_refused(
    offline: OidcIssuer, keys: Keys, changes: dict[str, object], match: str
) -> None:
    token = resigned(keys, claims("https://issuer.example", **changes))
    with pytest.raises(IdTokenError, match=match):
        verify_id_token(token, offline, now=NOW)


def test_missing_or_unverified_principal_claim(keys: Keys) -> None:
    iss = "https://issuer.example"
    jwks = StaticJwks.from_document(standard_jwks(keys))
    by_email = OidcIssuer(issuer=iss, audience=AUDIENCE, jwks=jwks, principal_claim="email")
    with pytest.raises(IdTokenError, match="no non-empty string claim 'email'"):
        verify_id_token(mint(keys.rsa, iss, email=DELETE), by_email, now=NOW)
    with pytest.raises(IdTokenError, match="not verified"):
        verify_id_token(mint(keys.rsa, iss, email_verified=False), by_email, now=NOW)
    by_team = OidcIssuer(issuer=iss, audience=AUDIENCE, jwks=jwks, principal_claim="team")
    with pytest.raises(IdTokenError, match="'team'"):
        verify_id_token(mint(keys.rsa, iss, team=["a"]), by_team, now=NOW)
    assert verify_id_token(mint(keys.rsa, iss, team="ops"), by_team, now=NOW).principal == "ops"


def test_other_token_kinds_and_ambiguous_payloads(offline: OidcIssuer, keys: Keys) -> None:
    iss = "https://issuer.example"
    for header in ({"crit": ["exp"], "exp": 1}, {"b64": True}):
        extended = resigned(keys, claims(iss), {"alg": "RS256", "kid": "rsa-1", **header})
        with pytest.raises(IdTokenError, match="crit"):  # PyJWT or ECP, by version
            verify_id_token(extended, offline, now=NOW)
    access = resigned(keys, claims(iss), {"alg": "RS256", "kid": "rsa-1", "typ": "at+jwt"})
    with pytest.raises(IdTokenError, match="not an ID token"):
        verify_id_token(access, offline, now=NOW)
    body = json.dumps(claims(iss))[:-1] + ', "sub": "admin"}'  # sub twice, validly signed
    duplicated = sign_rs256(b'{"alg":"RS256","kid":"rsa-1"}', body.encode(), keys.rsa)
    with pytest.raises(IdTokenError, match="strict JSON"):
        verify_id_token(duplicated, offline, now=NOW)
    with pytest.raises(IdTokenError, match="not a JSON object"):
        verify_id_token(resigned(keys, [claims(iss)]), offline, now=NOW)
    with pytest.raises(IdTokenError):
        verify_id_token(b"bytes.are.refused", offline, now=NOW)  # type: ignore[arg-type]


# --- fuzz -----------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
CLAIM_NAMES = st.sampled_from(
    ["iss", "aud", "sub", "exp", "iat", "nbf", "email", "email_verified", "jti", "azp"]
)
HEADER_VALUES = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["RS256", "EdDSA", "ES256", "PS256", "none", "HS256", ""]) | JSON,
        "kid": st.sampled_from(["rsa-1", "ed-1", "ec-1", "unknown"]) | JSON,
        "typ": st.sampled_from(["JWT", "at+jwt"]) | JSON,
        "crit": JSON,
        "b64": JSON,
        "jku": st.just("https://attacker.example/jwks"),
    },
)
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@st.composite
def hostile_tokens(draw: st.DrawFn, keys: Keys) -> str:
    iss = "https://issuer.example"
    valid = mint(keys.rsa, iss)
    kind = draw(st.sampled_from(["text", "b64", "claims", "header", "payload", "segments"]))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "b64":
        return draw(st.text(alphabet=BASE64URL + ".=", max_size=200))
    if kind == "claims":
        # Genuinely signed, so the claim checks behind the signature are reached.
        body = claims(iss)
        for name in draw(st.lists(CLAIM_NAMES | st.text(max_size=6), max_size=4)):
            if draw(st.booleans()):
                body.pop(name, None)
            else:
                body[name] = draw(JSON | st.integers(T - 10**6, T + 10**6))
        return resigned(keys, body)
    if kind == "header":
        return resigned(keys, claims(iss), draw(HEADER_VALUES | JSON))
    if kind == "payload":
        raw = draw(st.binary(max_size=64) | JSON.map(lambda v: json.dumps(v).encode()))
        return sign_rs256(b'{"alg":"RS256","kid":"rsa-1"}', raw, keys.rsa)
    # Structure-aware edits of a valid token's text.
    parts = valid.split(".")
    edit = draw(st.sampled_from(["truncate", "insert", "delete", "swap", "extra", "resig"]))
    if edit == "truncate":
        return valid[: draw(st.integers(0, len(valid)))]
    if edit == "insert":
        at = draw(st.integers(0, len(valid)))
        return valid[:at] + draw(st.text(min_size=1, max_size=3)) + valid[at:]
    if edit == "delete":
        at = draw(st.integers(0, len(valid) - 1))
        return valid[:at] + valid[at + 1 :]
    if edit == "swap":
        order = draw(st.permutations([0, 1, 2]))
        return ".".join(parts[i] for i in order)
    if edit == "extra":
        return ".".join([*parts, draw(st.text(alphabet=BASE64URL, max_size=20))])
    return f"{parts[0]}.{parts[1]}.{draw(st.text(alphabet=BASE64URL, max_size=400))}"


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_fuzz_only_id_token_errors_escape(
    offline: OidcIssuer, keys: Keys, data: st.DataObject
) -> None:
    token = data.draw(hostile_tokens(keys))
    refusal: IdTokenError | None = None
    try:
        identity = verify_id_token(token, offline, now=NOW)
    except IdTokenError as exc:  # anything else escaping fails the test
        refusal = exc
    if refusal is None:
        assert identity.issuer == "https://issuer.example"
        assert isinstance(identity.principal, str)
        assert identity.principal
    else:
        assert str(refusal)
        assert "\n" not in str(refusal)
        assert refusal.code.startswith("id_token_")
