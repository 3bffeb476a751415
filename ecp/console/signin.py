"""Sign-in to the console with OpenID Connect: authorization code flow with PKCE.

The OAuth 2.0 / OpenID Connect client is Authlib's Starlette integration
(:class:`authlib.integrations.starlette_client.StarletteOAuth2App`, on its
httpx-based ``AsyncOAuth2Client``): it reads the issuer's discovery
document, builds the authorization URL with state, nonce and an S256 PKCE
challenge, exchanges the code at the token endpoint and validates the ID
token (a signature by a key from the issuer's JWKS, chosen by ``kid``;
``iss``, ``aud``, ``exp``, ``iat``, ``nonce``). The console adds only what is
its own: that the discovery document names exactly the configured issuer,
that what it fetches is served over https (plain http on loopback only),
which signature algorithms it accepts, roles from one claim (*viewer*:
lists, details, proofs, lineage; *auditor*: also exports; *approver*: also
approvals), and its cookies.

The session is a short JWT signed with the console's own HMAC key, in an
HttpOnly, SameSite=Lax cookie (Secure when the console is served over
HTTPS). Authlib keeps its login state (state, nonce, PKCE verifier) in
``request.session``; the console fills that from, and writes it back to, a
login cookie signed and flagged the same way and valid for ten minutes, so
no other session store or cookie is involved. Every form that changes
anything carries the session's CSRF token. A public mode, off by default,
serves signed-out visitors the Proof Viewer and a redacted list only.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from time import monotonic
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import jwt
from authlib.integrations.starlette_client import OAuth, OAuthError, StarletteOAuth2App
from joserfc.errors import ClaimError, JoseError
from starlette.requests import Request

from ecp._settings import CONSOLE_ROLES, Settings
from ecp.authority._oidc import OidcDiscoveryError, _check_url, _is_loopback
from ecp.console.errors import ConsoleError, SignInConfigError

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
    "set_cookie",
    "signin_from_settings",
]

SESSION_COOKIE: Final = "ecp_session"
LOGIN_COOKIE: Final = "ecp_login"
#: Roles, each with what it adds: viewer reads, auditor exports, approver approves.
ROLES: Final = CONSOLE_ROLES
_LOGIN_SECONDS: Final = 600
#: Seconds allowed for each request to the issuer (discovery, keys, token).
_ISSUER_TIMEOUT: Final = 5.0
#: How long the discovery document and keys are used before they are fetched
#: again (the authority's default too): a key the issuer dropped from its JWKS
#: stops signing anyone in within this time, not at the next restart.
_METADATA_MAX_AGE: Final = 3600.0
#: Clock skew tolerated on the ID token's times (the authority's default too).
_LEEWAY_SECONDS: Final = 30
#: The ID-token signature algorithms the console accepts, whatever the issuer
#: lists: asymmetric only (an HMAC "signature" keyed with the client secret
#: would be forgeable by anyone holding it; "none" by anyone at all).
_ALGORITHMS: Final = ("RS256", "ES256", "EdDSA")
#: The name Authlib files the login state under in ``request.session``.
_CLIENT_NAME: Final = "ecp"


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


def _oauth_client(config: SignInConfig) -> StarletteOAuth2App:
    """Authlib's client for the configured issuer (nothing is fetched yet)."""
    oauth = OAuth()
    client: StarletteOAuth2App = oauth.register(
        _CLIENT_NAME,
        client_id=config.client_id,
        client_secret=config.client_secret,
        server_metadata_url=(config.issuer_url.rstrip("/") + "/.well-known/openid-configuration"),
        client_kwargs={
            "scope": "openid profile email",
            "code_challenge_method": "S256",
            # The secret in the form, as the console always sent it; a public
            # client (no secret) names itself only.
            "token_endpoint_auth_method": (
                "client_secret_post" if config.client_secret else "none"
            ),
            "timeout": _ISSUER_TIMEOUT,
            # Authlib opens an httpx client per step; one TLS context for all of
            # them saves building one (tens of ms) each time. The system's CA
            # store, as the console's fetches always used.
            "verify": ssl.create_default_context(),
            # A proxy from the environment cannot reach this machine's loopback
            # (a local issuer or a sidecar): bypass it there, as the authority does.
            "trust_env": not _is_loopback(urlsplit(config.issuer_url).hostname or ""),
        },
    )
    return client


def _fetchable(url: str, what: str) -> None:
    """Refuse a URL the console would fetch from or send secrets to over plain http.

    The authority's rule: https, or plain http on loopback only (anyone on
    the path of plain http could swap the keys or read the client secret).

    Raises:
        SignInError: the URL is not one the console may use.
    """
    try:
        _check_url(url, what)
    except OidcDiscoveryError as exc:
        raise SignInError(f"The identity provider cannot be used: {exc}") from exc


@dataclass
class SignIn:
    """The running sign-in: the configuration and Authlib's client for its issuer."""

    config: SignInConfig
    #: Set once the issuer's discovery document has loaded and passed :meth:`_check`.
    _client: StarletteOAuth2App | None = None
    #: When (``time.monotonic``) the client's document and keys are due for a fetch.
    _due: float = 0.0
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

    async def _issuer(self) -> StarletteOAuth2App:
        """Authlib's client, its discovery document loaded and checked.

        Authlib keeps the document and the issuer's JWKS for as long as the
        client lives (fetching the keys again only for an unknown ``kid``), so
        a fresh client replaces it every :data:`_METADATA_MAX_AGE` seconds. A
        document that fails the check is not kept; while the issuer cannot be
        reached or fails it, sign-in fails.

        Raises:
            SignInError: the issuer cannot be reached or its document is not usable.
        """
        async with self._lock:
            if self._client is None or monotonic() >= self._due:
                self._client = None
                _fetchable(self.config.issuer_url, "issuer")
                client = _oauth_client(self.config)
                try:
                    metadata: dict[str, Any] = await client.load_server_metadata()
                except (httpx.HTTPError, ValueError) as exc:
                    raise SignInError(f"The identity provider cannot be reached: {exc}") from exc
                self._check(metadata)
                self._client, self._due = client, monotonic() + _METADATA_MAX_AGE
            return self._client

    def _check(self, metadata: dict[str, Any]) -> None:
        """What Authlib takes on trust from the discovery document, checked here.

        Authlib validates a token's ``iss`` against the document's ``issuer``:
        a document naming another issuer would hand over that issuer's tokens
        (OIDC Discovery §4.3), so it must be exactly the configured one. The
        algorithms Authlib accepts also come from the document; they are cut
        down to :data:`_ALGORITHMS`.
        """
        if metadata.get("issuer") != self.config.issuer_url:
            raise SignInError(
                f"The identity provider's discovery document names issuer "
                f"{str(metadata.get('issuer'))[:80]!r}, not {self.config.issuer_url!r}."
            )
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = metadata.get(key)
            if not isinstance(value, str) or not value.startswith(("https://", "http://")):
                raise SignInError(f"The identity provider names no {key}.")
        _fetchable(metadata["jwks_uri"], "jwks_uri")
        _fetchable(metadata["token_endpoint"], "token_endpoint")
        listed = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = [a for a in _ALGORITHMS if isinstance(listed, list) and a in listed]
        if not algorithms:
            raise SignInError(
                f"The identity provider signs ID tokens with none of {', '.join(_ALGORITHMS)}."
            )
        metadata["id_token_signing_alg_values_supported"] = algorithms

    async def start(self, request: Request, next_path: str) -> tuple[str, str]:
        """The issuer URL to send the visitor to, and the login-state cookie to set."""
        client = await self._issuer()
        request.scope["session"] = {}
        try:
            redirect = await client.authorize_redirect(request, self.config.redirect_uri)
        except (httpx.HTTPError, OAuthError) as exc:
            raise SignInError(f"The sign-in cannot start: {exc}") from exc
        login = _sign(
            self.config,
            {"typ": "login", "oauth": dict(request.session), "next": next_path},
            _LOGIN_SECONDS,
        )
        return redirect.headers["location"], login

    async def finish(self, request: Request, cookies: Mapping[str, str]) -> tuple[str, str]:
        """The session cookie value for a completed sign-in, and where to go next.

        Raises:
            SignInError: the state does not match, the exchange failed, the
                token does not verify or names no role.
        """
        login = _read(self.config, cookies.get(LOGIN_COOKIE))
        if login is None or login.get("typ") != "login" or not isinstance(login.get("oauth"), dict):
            raise SignInError("The sign-in expired or was not started here; sign in again.")
        client = await self._issuer()
        # Authlib finds the state it saved, or refuses the answer.
        request.scope["session"] = login["oauth"]
        try:
            token = await client.authorize_access_token(
                request,
                # Options are consumed per call: a fresh dict each time.
                claims_options={
                    "iss": {"essential": True, "value": self.config.issuer_url},
                    "aud": {"essential": True, "value": self.config.client_id},
                },
                leeway=_LEEWAY_SECONDS,
            )
        except OAuthError as exc:
            if exc.error == "mismatching_state":
                raise SignInError("The sign-in answer does not belong to this sign-in.") from exc
            raise SignInError(
                f"The identity provider refused the code ({str(exc)[:120]})."
            ) from exc
        except ClaimError as exc:
            if exc.claim == "nonce":
                raise SignInError("The ID token was not issued for this sign-in (nonce).") from exc
            raise SignInError(f"The ID token does not verify: {exc}") from exc
        except JoseError as exc:
            raise SignInError(f"The ID token does not verify: {exc}") from exc
        except (httpx.HTTPError, ValueError) as exc:
            raise SignInError(
                "The identity provider's token endpoint did not answer usably."
            ) from exc
        claims = token.get("userinfo")
        if not isinstance(claims, dict):
            raise SignInError("The identity provider returned no ID token.")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise SignInError("The ID token names no subject (sub).")
        raw = claims.get(self.config.role_claim)
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
                f"{subject} signed in, but holds no console role "
                f"(claim {self.config.role_claim!r})."
            )
        session = _sign(
            self.config,
            {
                "typ": "session",
                "name": subject,
                "iss_sub": f"{self.config.issuer_url} {subject}",
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
