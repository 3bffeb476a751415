"""Sign-in to the console with OpenID Connect: authorization code flow with PKCE.

The console redirects a visitor to the configured issuer, exchanges the code
it gets back (with the PKCE verifier) for an ID token at the issuer's token
endpoint, and verifies that token with the authority's own verifier
(:func:`ecp.authority._oidc.verify_id_token`: issuer, audience, times, an
asymmetric signature by a key from the issuer's JWKS) plus the nonce it
sent. Roles come from one claim: *viewer* (lists, details, proofs, lineage),
*auditor* (also exports), *approver* (also approvals).

The session is a short JWT signed with the console's own HMAC key, in an
HttpOnly, SameSite=Lax cookie (Secure when the console is served over
HTTPS); the login state (state, nonce, PKCE verifier) travels the same way
for ten minutes. Every form that changes anything (only sign-out, so far)
carries the session's CSRF token. A public mode, off by default, serves
signed-out visitors the Proof Viewer and a redacted list only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Final

import jwt

from ecp._settings import CONSOLE_ROLES, Settings
from ecp.authority._oidc import (
    OidcIssuer,
    discover,
    verify_id_token,
)
from ecp.console.errors import ConsoleError, SignInConfigError
from ecp.errors import EcpError

__all__ = [
    "LOGIN_COOKIE",
    "ROLES",
    "SESSION_COOKIE",
    "SignIn",
    "SignInConfig",
    "SignInConfigError",
    "SignInError",
    "SignInForbiddenError",
    "Visitor",
    "cookies_of",
    "pkce_challenge",
    "set_cookie",
    "signin_from_settings",
]

SESSION_COOKIE: Final = "ecp_session"
LOGIN_COOKIE: Final = "ecp_login"
#: Roles, each with what it adds: viewer reads, auditor exports, approver approves.
ROLES: Final = CONSOLE_ROLES
_LOGIN_SECONDS: Final = 600
_TOKEN_TIMEOUT: Final = 5.0
_MAX_TOKEN_RESPONSE: Final = 256 * 1024


class SignInError(ConsoleError):
    """Sign-in failed: the issuer refused, or its answer did not verify."""

    status = 400
    code = "sign_in_failed"


@dataclass(frozen=True)
class SignInConfig:
    """How the console signs visitors in.

    Attributes:
        issuer_url: the OpenID Connect issuer, exactly as its tokens' ``iss``.
        client_id: the console's client id at the issuer (the tokens' audience).
        redirect_uri: this console's ``/auth/callback`` URL, as registered at the issuer.
        session_key: the HMAC key sessions are signed with (32 bytes or more).
        client_secret: the client secret, for a confidential client.
        role_claim: the claim whose values (a string or a list) map to roles.
        role_values: claim value -> role (``viewer``, ``auditor`` or ``approver``).
        session_seconds: how long a session lasts.
        public: serve signed-out visitors the Proof Viewer and a redacted list.
    """

    issuer_url: str
    client_id: str
    redirect_uri: str
    session_key: bytes
    client_secret: str | None = None
    role_claim: str = "groups"
    role_values: Mapping[str, str] = field(default_factory=dict)
    session_seconds: int = 8 * 3600
    public: bool = False

    def __post_init__(self) -> None:
        """Refuse a configuration that cannot be safe.

        Raises:
            ValueError: a short session key or an unknown role.
        """
        if len(self.session_key) < 32:
            raise ValueError("the console's session key must be at least 32 bytes")
        for value, role in self.role_values.items():
            if role not in ROLES:
                raise ValueError(f"claim value {value!r} maps to unknown role {role!r}")

    @property
    def secure_cookies(self) -> bool:
        """Whether cookies carry ``Secure`` (the console is served over HTTPS)."""
        return self.redirect_uri.startswith("https://")


#: Settings that mean something only with sign-in, and their variables.
_NEEDS_ISSUER: Final = (
    ("console_oidc_client_id", "ECP_CONSOLE_OIDC_CLIENT_ID"),
    ("console_oidc_client_secret", "ECP_CONSOLE_OIDC_CLIENT_SECRET"),
    ("console_session_key", "ECP_CONSOLE_SESSION_KEY"),
    ("console_roles", "ECP_CONSOLE_ROLES"),
    ("console_public_mode", "ECP_CONSOLE_PUBLIC_MODE"),
)


def signin_from_settings(
    settings: Settings, *, default_base_url: str | None = None
) -> SignInConfig | None:
    """The console's sign-in as ``settings`` configure it; None when none of it is set.

    Fails closed: a sign-in setting without an issuer, or an issuer without
    what sign-in needs, is an error, never a console open to everyone.

    Args:
        settings: the ``ECP_CONSOLE_*`` settings.
        default_base_url: the console's URL when ``ECP_CONSOLE_PUBLIC_URL`` is unset.

    Raises:
        SignInConfigError: sign-in is half configured (the message names what is missing).
    """
    issuer = settings.console_oidc_issuer
    if issuer is None:
        stray = [env for name, env in _NEEDS_ISSUER if getattr(settings, name)]
        if stray:
            raise SignInConfigError(
                f"{', '.join(stray)} {'is' if len(stray) == 1 else 'are'} set but "
                "ECP_CONSOLE_OIDC_ISSUER is not: the console would serve every page to "
                "everyone; name the issuer (--oidc-issuer) or unset them."
            )
        return None
    if not settings.console_oidc_client_id:
        raise SignInConfigError(
            "ECP_CONSOLE_OIDC_ISSUER is set but ECP_CONSOLE_OIDC_CLIENT_ID is not: "
            "name the console's client id at the issuer (--oidc-client-id)."
        )
    roles = settings.console_role_values
    if not roles:
        raise SignInConfigError(
            "ECP_CONSOLE_ROLES maps no claim value to a console role: nobody could sign in; "
            "set e.g. ecp-viewers=viewer,ecp-approvers=approver (--role)."
        )
    base = settings.console_public_url or default_base_url
    if not base:
        raise SignInConfigError(
            "ECP_CONSOLE_PUBLIC_URL is not set: sign-in needs the console's URL as browsers "
            "reach it (--public-url), for the redirect URI."
        )
    key = settings.console_session_key
    secret = settings.console_oidc_client_secret
    return SignInConfig(
        issuer_url=issuer,
        client_id=settings.console_oidc_client_id,
        client_secret=secret.get_secret_value() if secret else None,
        redirect_uri=f"{base.rstrip('/')}/auth/callback",
        # Without a configured key, sessions last until the console restarts.
        session_key=bytes.fromhex(key.get_secret_value()) if key else secrets.token_bytes(32),
        role_claim=settings.console_role_claim,
        role_values=roles,
        session_seconds=settings.console_session_seconds,
        public=settings.console_public_mode,
    )


@dataclass(frozen=True, slots=True)
class Visitor:
    """Who is looking at a page: signed in with roles, or signed out."""

    name: str = ""
    roles: frozenset[str] = frozenset()
    csrf: str = ""

    @property
    def signed_in(self) -> bool:
        """Whether a session names this visitor."""
        return bool(self.name)

    def may(self, role: str) -> bool:
        """Whether the visitor holds ``role`` (``viewer`` is implied by every role)."""
        return role in self.roles or (role == "viewer" and bool(self.roles))


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of ``verifier`` (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _sign(config: SignInConfig, claims: dict[str, object], seconds: int) -> str:
    now = int(time.time())
    return jwt.encode({**claims, "iat": now, "exp": now + seconds}, config.session_key, "HS256")


def _read(config: SignInConfig, token: str | None) -> dict[str, object] | None:
    if not token:
        return None
    try:
        claims: dict[str, object] = jwt.decode(token, config.session_key, algorithms=["HS256"])
    except jwt.PyJWTError:
        return None
    return claims


def cookies_of(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request's cookies by name (the first of each)."""
    jar: SimpleCookie = SimpleCookie()
    for k, v in headers:
        if k == b"cookie":
            try:
                jar.load(v.decode("latin-1"))
            except Exception:  # noqa: BLE001, S112 - a malformed cookie header is no cookie
                continue
    return {k: m.value for k, m in jar.items()}


def set_cookie(config: SignInConfig, name: str, value: str, max_age: int) -> str:
    """A ``Set-Cookie`` value: HttpOnly, SameSite=Lax, Secure over HTTPS, whole site."""
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Lax", f"Max-Age={max_age}"]
    if config.secure_cookies:
        parts.append("Secure")
    return "; ".join(parts)


@dataclass
class SignIn:
    """The running sign-in: the configuration and the issuer, discovered on first use."""

    config: SignInConfig
    _issuer: OidcIssuer | None = None
    _endpoints: dict[str, str] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def visitor(self, cookies: Mapping[str, str]) -> Visitor:
        """The visitor the session cookie names, or a signed-out one."""
        claims = _read(self.config, cookies.get(SESSION_COOKIE))
        if claims is None or claims.get("typ") != "session":
            return Visitor()
        roles = claims.get("roles")
        return Visitor(
            str(claims.get("name", "")),
            frozenset(r for r in roles if r in ROLES) if isinstance(roles, list) else frozenset(),
            str(claims.get("csrf", "")),
        )

    async def _discover(self) -> tuple[OidcIssuer, dict[str, str]]:
        async with self._lock:
            if self._issuer is None:
                try:
                    issuer = await asyncio.to_thread(
                        discover, self.config.issuer_url, audience=self.config.client_id
                    )
                    doc = await asyncio.to_thread(_get_json, self._config_url())
                except EcpError as exc:
                    raise SignInError(f"The identity provider cannot be reached: {exc}") from exc
                ends = {}
                for key in ("authorization_endpoint", "token_endpoint"):
                    value = doc.get(key) if isinstance(doc, dict) else None
                    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
                        raise SignInError(f"The identity provider names no {key}.")
                    ends[key] = value
                self._issuer, self._endpoints = issuer, ends
            return self._issuer, self._endpoints

    def _config_url(self) -> str:
        return self.config.issuer_url.rstrip("/") + "/.well-known/openid-configuration"

    async def start(self, next_path: str) -> tuple[str, str]:
        """The issuer URL to send the visitor to, and the login-state cookie to set."""
        _, ends = await self._discover()
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": self.config.client_id,
                "redirect_uri": self.config.redirect_uri,
                "scope": "openid profile email",
                "state": state,
                "nonce": nonce,
                "code_challenge": pkce_challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        login = _sign(
            self.config,
            {
                "typ": "login",
                "state": state,
                "nonce": nonce,
                "verifier": verifier,
                "next": next_path,
            },
            _LOGIN_SECONDS,
        )
        sep = "&" if "?" in ends["authorization_endpoint"] else "?"
        return f"{ends['authorization_endpoint']}{sep}{query}", login

    async def finish(self, cookies: Mapping[str, str], code: str, state: str) -> tuple[str, str]:
        """The session cookie value for a completed sign-in, and where to go next.

        Raises:
            SignInError: the state does not match, the exchange failed, the
                token does not verify or names no role.
        """
        login = _read(self.config, cookies.get(LOGIN_COOKIE))
        if login is None or login.get("typ") != "login":
            raise SignInError("The sign-in expired or was not started here; sign in again.")
        if not state or not hmac.compare_digest(str(login.get("state", "")), state):
            raise SignInError("The sign-in answer does not belong to this sign-in.")
        issuer, ends = await self._discover()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.config.redirect_uri,
            "client_id": self.config.client_id,
            "code_verifier": str(login.get("verifier", "")),
        }
        if self.config.client_secret:
            form["client_secret"] = self.config.client_secret
        answer = await asyncio.to_thread(_post_form, ends["token_endpoint"], form)
        token = answer.get("id_token")
        if not isinstance(token, str):
            raise SignInError("The identity provider returned no ID token.")
        try:
            identity = verify_id_token(token, issuer)
        except EcpError as exc:
            raise SignInError(f"The ID token does not verify: {exc}") from exc
        nonce = identity.claims.get("nonce")
        if not isinstance(nonce, str) or not hmac.compare_digest(nonce, str(login.get("nonce"))):
            raise SignInError("The ID token was not issued for this sign-in (nonce).")
        raw = identity.claims.get(self.config.role_claim)
        values = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
        roles = sorted(
            {
                self.config.role_values[v]
                for v in values
                if isinstance(v, str) and v in self.config.role_values
            }
        )
        if not roles:
            raise SignInForbiddenError(
                f"{identity.principal} signed in, but holds no console role "
                f"(claim {self.config.role_claim!r})."
            )
        session = _sign(
            self.config,
            {
                "typ": "session",
                "name": identity.principal,
                "iss_sub": f"{identity.issuer} {identity.subject}",
                "roles": roles,
                "csrf": secrets.token_urlsafe(24),
            },
            self.config.session_seconds,
        )
        nxt = str(login.get("next", "/"))
        return session, nxt if nxt.startswith("/") and not nxt.startswith("//") else "/"


class SignInForbiddenError(SignInError):
    """The visitor signed in but holds no role the console knows."""

    status = 403
    code = "sign_in_no_role"


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=_TOKEN_TIMEOUT) as resp:  # noqa: S310 - configured URL
        return json.loads(resp.read(_MAX_TOKEN_RESPONSE))


def _post_form(url: str, form: dict[str, str]) -> dict[str, object]:
    """POST ``form`` to the token endpoint; its JSON answer.

    Raises:
        SignInError: the endpoint refused or answered something else than JSON.
    """
    req = urllib.request.Request(  # noqa: S310 - the discovered token endpoint
        url,
        data=urllib.parse.urlencode(form).encode(),
        headers={"content-type": "application/x-www-form-urlencoded", "accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=_TOKEN_TIMEOUT) as resp:  # noqa: S310
            doc = json.loads(resp.read(_MAX_TOKEN_RESPONSE))
    except urllib.error.HTTPError as exc:
        raise SignInError(f"The identity provider refused the code ({exc.code}).") from exc
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        raise SignInError("The identity provider's token endpoint did not answer.") from exc
    if not isinstance(doc, dict):
        raise SignInError("The identity provider's token answer is not a JSON object.")
    return doc
