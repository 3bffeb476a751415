"""OpenID Connect ID-token verification for authenticated initiators.

A governed request names who asked for it. A bare name is a claim anyone can
type, so before the policy sees it the authority verifies an OpenID Connect ID
token for it: signed by a configured issuer's published key, minted for ECP's
audience, inside its validity window. Only the result, a
:class:`VerifiedIdentity`, carries a principal the policy may trust.

The JOSE work (base64url, the signature algorithms, the registered claims) is
PyJWT's; this module decides *which* key and *which* algorithms PyJWT may use,
and maps every failure onto the authority's error family, because the classic
JWT attacks live in exactly those choices:

* ``alg: none`` and HMAC algorithms are refused when an issuer is configured,
  not only when a token arrives, so no configuration can re-enable them.
* A key is used only with algorithms of its own type (an RSA key only with
  ``RS*``/``PS*``), so a token cannot reinterpret a public key as an HMAC
  secret or as a key of another curve.
* Keys come only from the issuer's JWKS (a pinned file or the document its
  discovery names); ``jku``, ``x5u`` and embedded ``jwk`` headers are ignored,
  since honouring them would let the token choose its own verifier.
* Time is checked here against the caller's ``now`` (the system clock only
  when none is given), not by PyJWT's own clock, so a workflow replay that
  passes its time sees the same answer.

Nothing a token can contain escapes as anything but an :class:`IdTokenError`
subclass; an issuer that cannot be reached raises the retryable
:class:`OidcDiscoveryError`; a configuration that could never verify safely
raises :class:`OidcConfigError` when it is built.
"""

from __future__ import annotations

import http.client
import ipaddress
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.exceptions import InvalidSubjectError

from ecp.authority._canonical import parse_json_strict
from ecp.authority.errors import (
    AuthorityError,
    CanonicalizationError,
    ClockError,
    VerificationError,
)

if TYPE_CHECKING:
    # Only for the type checker: the TypedDict is newer than some PyJWT 2.x releases.
    from jwt.types import Options

__all__ = [
    "DEFAULT_ALGORITHMS",
    "MAX_DOCUMENT_BYTES",
    "MAX_TOKEN_BYTES",
    "IdTokenAlgorithmError",
    "IdTokenAudienceError",
    "IdTokenError",
    "IdTokenExpiredError",
    "IdTokenIssuerError",
    "IdTokenNotYetValidError",
    "IdTokenSignatureError",
    "JsonWebKey",
    "JwksSource",
    "OidcConfigError",
    "OidcDiscoveryError",
    "OidcIssuer",
    "PublicKey",
    "RemoteJwks",
    "StaticJwks",
    "VerifiedIdentity",
    "discover",
    "from_jwks_file",
    "verify_id_token",
]

#: Asymmetric algorithms only: the issuer signs, ECP holds nothing secret.
DEFAULT_ALGORITHMS: Final[tuple[str, ...]] = ("RS256", "ES256", "EdDSA")
#: Refused before parsing: real ID tokens are a few KiB; a huge one is an attack on the parser.
MAX_TOKEN_BYTES: Final = 16 * 1024
#: Upper bound on a discovery document or JWKS read from the network.
MAX_DOCUMENT_BYTES: Final = 512 * 1024
#: A JWKS with more keys than this is not an issuer's key set; it bounds the work per token.
_MAX_KEYS: Final = 64
#: RSA keys shorter than this are refused (NIST SP 800-131A).
_MIN_RSA_BITS: Final = 2048
#: Leeway beyond five minutes would turn expiry into a suggestion.
_MAX_LEEWAY_SECONDS: Final = 300
#: JOSE header ``typ`` values an ID token may carry (absent is fine too). Refusing
#: the rest keeps an access token (``at+jwt``) or logout token from passing as one.
_ID_TOKEN_TYPES: Final = frozenset({"jwt", "application/jwt"})
#: JWK members that only a private key has: a JWKS holding them has leaked its keys.
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

#: The key each allowed algorithm must be used with: (JWK ``kty``, acceptable ``crv``).
#: ``None`` means the key type has no curve. Anything missing here is not accepted.
_KEY_TYPES: Final[Mapping[str, tuple[str, frozenset[str] | None]]] = MappingProxyType(
    {
        **{alg: ("RSA", None) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
        "ES256": ("EC", frozenset({"P-256"})),
        "ES384": ("EC", frozenset({"P-384"})),
        "ES512": ("EC", frozenset({"P-521"})),
        "ES256K": ("EC", frozenset({"secp256k1"})),
        "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
    }
)

#: The public-key objects a JWKS entry can become.
PublicKey = RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey


# --- errors -------------------------------------------------------------------


class IdTokenError(VerificationError):
    """An ID token is malformed or does not verify; the initiator is not authenticated."""

    code = "id_token_invalid"


class IdTokenExpiredError(IdTokenError):
    """The ID token's ``exp`` has passed (beyond the leeway)."""

    code = "id_token_expired"


class IdTokenNotYetValidError(IdTokenError):
    """The ID token's ``nbf`` or ``iat`` lies in the future (beyond the leeway)."""

    code = "id_token_not_yet_valid"


class IdTokenAudienceError(IdTokenError):
    """The ID token was minted for another audience (client)."""

    code = "id_token_audience"


class IdTokenIssuerError(IdTokenError):
    """The ID token's ``iss`` is not exactly the configured issuer."""

    code = "id_token_issuer"


class IdTokenAlgorithmError(IdTokenError):
    """The token's ``alg`` is not allowed, or does not fit the key it names."""

    code = "id_token_algorithm"


class IdTokenSignatureError(IdTokenError):
    """No published key of the issuer verifies the token's signature."""

    code = "id_token_signature"


class OidcDiscoveryError(VerificationError):
    """The issuer's discovery document or JWKS could not be fetched or trusted.

    Retryable: an issuer that is briefly unreachable may answer later; until
    then nothing it signed can be verified, so the request is refused.
    """

    code = "oidc_discovery_failed"
    retryable = True


class OidcConfigError(AuthorityError):
    """An OIDC issuer configuration is unsafe or unusable (fix the configuration)."""

    code = "oidc_config_invalid"


def _show(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: token content goes into one-line messages.

    ``repr`` escapes newlines and lone surrogates, so attacker-chosen text
    cannot break the line or the log it is written to.
    """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- keys ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JsonWebKey:
    """One usable public signing key from a JWKS.

    Attributes:
        kid: The key id (``kid``), or ``None`` when the JWK has none.
        kty: The JWK key type: ``RSA``, ``EC`` or ``OKP``.
        crv: The curve for ``EC``/``OKP`` keys, ``None`` for RSA.
        alg: The algorithm the JWK is restricted to, or ``None`` when it names none.
        public_key: The key itself.
    """

    kid: str | None
    kty: str
    crv: str | None
    alg: str | None
    public_key: PublicKey

    def accepts(self, algorithm: str) -> bool:
        """Whether this key may verify a signature made with ``algorithm``.

        The key's type (and curve) must be the one ``algorithm`` is defined
        for, and a JWK that names its ``alg`` may be used with that one only.
        """
        expected = _KEY_TYPES.get(algorithm)
        if expected is None:
            return False
        kty, curves = expected
        if self.kty != kty or (curves is not None and self.crv not in curves):
            return False
        return self.alg is None or self.alg == algorithm


def _parse_jwk(entry: object) -> JsonWebKey | None:
    """One JWKS entry as a :class:`JsonWebKey`, or ``None`` when it cannot sign ID tokens.

    Entries that are not for signing, of a type or curve ECP does not use, or
    ill-formed are skipped, not refused: a JWKS may publish encryption keys
    and keys for other verifiers, and skipped keys simply never verify a token.

    Raises:
        ValueError: the entry publishes private key material.
    """
    if not isinstance(entry, dict):
        return None
    leaked = sorted(_PRIVATE_MEMBERS & entry.keys())
    if leaked:
        # Anyone who read this JWKS can sign as the issuer: trusting any of it is meaningless.
        raise ValueError(
            f"JWK {_show(entry.get('kid'))} publishes private key material "
            f"({', '.join(leaked)}); an issuer must publish public keys only"
        )
    names = ("kty", "kid", "crv", "alg", "use")
    members: dict[str, str | None] = {}
    for name in names:
        value = entry.get(name)
        if value is not None and not isinstance(value, str):
            return None
        members[name] = value
    kty, kid, crv, alg, use = (members[name] for name in names)
    key_ops = entry.get("key_ops")
    if key_ops is not None and not (isinstance(key_ops, list) and "verify" in key_ops):
        return None
    if kty not in {"RSA", "EC", "OKP"}:
        return None
    if (use is not None and use != "sig") or (alg is not None and alg not in _KEY_TYPES):
        return None
    try:
        key = jwt.PyJWK(entry).key
    except (jwt.PyJWTError, ValueError, TypeError):
        # An unsupported curve, or numbers that do not form a key.
        return None
    if not isinstance(key, PublicKey):
        return None
    return JsonWebKey(kid=kid, kty=kty, crv=crv, alg=alg, public_key=key)


def _parse_jwks(document: object, where: str) -> tuple[JsonWebKey, ...]:
    """The usable signing keys of a JWKS document.

    Raises:
        ValueError: the document is not a JWKS, is too large, publishes
            private keys, or has no key that could verify an ID token.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError(f"{where} is not a JWKS: it has no 'keys' list")
    entries: list[object] = document["keys"]
    if len(entries) > _MAX_KEYS:
        raise ValueError(f"{where} lists {len(entries)} keys; ECP accepts at most {_MAX_KEYS}")
    keys = tuple(key for key in map(_parse_jwk, entries) if key is not None)
    if not keys:
        raise ValueError(f"{where} has no RSA, EC or OKP signing key that ECP can use")
    return keys


class JwksSource(Protocol):
    """Where an issuer's public signing keys come from."""

    def signing_keys(self) -> tuple[JsonWebKey, ...]:
        """The keys currently trusted for the issuer.

        Raises:
            OidcDiscoveryError: the keys are due for a fetch that failed.
        """
        ...

    def refresh(self) -> bool:
        """Fetch the keys again because a token named an unknown ``kid``.

        Returns:
            ``True`` when the keys were fetched anew; ``False`` when the
            source cannot or may not refetch now (a pinned file, or a
            refetch happened too recently).

        Raises:
            OidcDiscoveryError: the refetch failed.
        """
        ...


class StaticJwks:
    """A pinned set of keys (an offline JWKS file): never fetched, never refreshed."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[JsonWebKey]) -> None:
        """Trust exactly ``keys``.

        Raises:
            OidcConfigError: ``keys`` is empty.
        """
        self._keys = tuple(keys)
        if not self._keys:
            raise OidcConfigError("a static JWKS needs at least one key")

    @classmethod
    def from_document(cls, document: object, *, where: str = "JWKS") -> StaticJwks:
        """Keys from a parsed JWKS document (``{"keys": [...]}``).

        Raises:
            OidcConfigError: the document is not a usable JWKS.
        """
        try:
            return cls(_parse_jwks(document, where))
        except ValueError as exc:
            raise OidcConfigError(str(exc)) from exc

    @classmethod
    def from_file(cls, path: str | Path) -> StaticJwks:
        """Keys from a JWKS JSON file.

        Raises:
            OidcConfigError: the file is unreadable, not strict JSON, or not a usable JWKS.
        """
        where = f"JWKS file {str(path)!r}"
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise OidcConfigError(f"cannot read {where}: {exc.strerror or exc}") from exc
        try:
            document = parse_json_strict(data)
        except CanonicalizationError as exc:
            raise OidcConfigError(f"{where} is not strict JSON: {exc}") from exc
        return cls.from_document(document, where=where)

    def signing_keys(self) -> tuple[JsonWebKey, ...]:
        """The pinned keys."""
        return self._keys

    def refresh(self) -> bool:
        """A pinned set has nowhere to refetch from: always ``False``."""
        return False


class RemoteJwks:
    """An issuer's ``jwks_uri``, fetched on first use and cached.

    The cache is refetched when it is older than ``max_age_seconds`` (so a key
    the issuer withdraws stops being trusted) and when a token names a ``kid``
    the cache lacks (key rotation). The unknown-kid refetch happens at most
    once per ``refetch_cooldown_seconds``: otherwise every forged token with a
    random ``kid`` would make ECP hammer the issuer. Thread-safe.
    """

    def __init__(
        self,
        uri: str,
        *,
        timeout: float = 5.0,
        max_bytes: int = MAX_DOCUMENT_BYTES,
        max_age_seconds: float = 3600.0,
        refetch_cooldown_seconds: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Fetch keys from ``uri`` when first asked.

        Raises:
            OidcDiscoveryError: ``uri`` is not an https URL (or http on loopback).
        """
        _check_url(uri, "jwks_uri")
        self._uri = uri
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._max_age = max_age_seconds
        self._cooldown = refetch_cooldown_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._keys: tuple[JsonWebKey, ...] = ()
        self._fetched_at: float | None = None
        self._refreshed_at: float | None = None

    @property
    def uri(self) -> str:
        """The JWKS URL."""
        return self._uri

    def _fetch(self) -> None:
        # Called with the lock held: concurrent verifications wait for one fetch.
        document = _fetch_json(
            self._uri, timeout=self._timeout, max_bytes=self._max_bytes, what="JWKS"
        )
        try:
            keys = _parse_jwks(document, f"JWKS at {self._uri}")
        except ValueError as exc:
            raise OidcDiscoveryError(str(exc)) from exc
        self._keys = keys
        self._fetched_at = self._monotonic()

    def signing_keys(self) -> tuple[JsonWebKey, ...]:
        """The cached keys, fetched first if never fetched or older than ``max_age_seconds``.

        Raises:
            OidcDiscoveryError: a due fetch failed. The stale keys are not used
                instead: a key the issuer withdrew must stop verifying.
        """
        with self._lock:
            if self._fetched_at is None or self._monotonic() - self._fetched_at >= self._max_age:
                self._fetch()
            return self._keys

    def refresh(self) -> bool:
        """Refetch now, unless an unknown-kid refetch happened within the cooldown.

        Raises:
            OidcDiscoveryError: the refetch failed.
        """
        with self._lock:
            now = self._monotonic()
            if self._refreshed_at is not None and now - self._refreshed_at < self._cooldown:
                return False
            self._refreshed_at = now
            self._fetch()
            return True


# --- fetching -----------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(url: str, what: str) -> urllib.parse.SplitResult:
    """``url`` split, if ECP may fetch keys from it.

    https only, except plain http to a loopback address (a local test issuer
    or a sidecar): over plain http on a network anyone in the path could
    substitute their own keys and sign as the issuer.

    Raises:
        OidcDiscoveryError: any other scheme, no host, or credentials in the URL.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
    except ValueError as exc:
        raise OidcDiscoveryError(f"{what} {_show(url)} is not a URL: {exc}") from exc
    if parts.scheme == "http" and not _is_loopback(host):
        raise OidcDiscoveryError(
            f"{what} {_show(url)} uses plain http; use https (http is allowed only on loopback)"
        )
    if parts.scheme not in {"https", "http"}:
        raise OidcDiscoveryError(f"{what} {_show(url)} is not an https URL")
    if not host:
        raise OidcDiscoveryError(f"{what} {_show(url)} has no host")
    if parts.username is not None or parts.password is not None:
        raise OidcDiscoveryError(f"{what} {_show(url)} carries credentials; remove them")
    return parts


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are refused: the issuer must serve its documents where it says.

    Following one could downgrade https to http or leave the issuer's host.
    """

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> None:
        return None


def _fetch_json(url: str, *, timeout: float, max_bytes: int, what: str) -> object:
    """GET ``url`` and parse it as strict JSON, within ``timeout`` and ``max_bytes``.

    Raises:
        OidcDiscoveryError: the URL is not allowed, the fetch failed or was too
            large, or the body is not strict JSON.
    """
    parts = _check_url(url, what)
    handlers: list[urllib.request.BaseHandler] = [_RefuseRedirects()]
    if _is_loopback(parts.hostname or ""):
        # A proxy cannot reach this machine's loopback; bypass any configured one.
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
        url, headers={"Accept": "application/json", "User-Agent": "ecp-oidc"}
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            body: bytes = response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        hint = "; ECP does not follow redirects" if 300 <= exc.code < 400 else ""
        raise OidcDiscoveryError(f"{what} {url} answered HTTP {exc.code}{hint}") from exc
    except urllib.error.URLError as exc:
        raise OidcDiscoveryError(f"cannot fetch {what} {url}: {exc.reason}") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # Timeouts and resets mid-body surface here rather than as URLError.
        raise OidcDiscoveryError(
            f"cannot fetch {what} {url}: {type(exc).__name__}: {_show(str(exc))}"
        ) from exc
    if len(body) > max_bytes:
        raise OidcDiscoveryError(f"{what} {url} is larger than {max_bytes} bytes")
    try:
        return parse_json_strict(body)
    except CanonicalizationError as exc:
        raise OidcDiscoveryError(f"{what} {url} is not strict JSON: {exc}") from exc


# --- issuers ------------------------------------------------------------------


@dataclass(frozen=True)
class OidcIssuer:
    """One trusted OpenID Connect issuer, and what ECP accepts from it.

    Attributes:
        issuer: The exact ``iss`` value its tokens carry (no normalisation).
        audience: The exact ``aud`` value (ECP's client id) a token must name;
            a token whose ``aud`` is a list passes when the list contains it.
        jwks: Where the issuer's public keys come from.
        algorithms: The allow-list of signature algorithms. Asymmetric only:
            ``none`` and ``HS*`` are refused at construction.
        principal_claim: The claim whose string value becomes the policy
            principal. ``email`` additionally requires ``email_verified`` to
            be ``true``.
        leeway_seconds: Clock skew tolerated on ``exp``, ``nbf`` and ``iat`` (0 to 300).
    """

    issuer: str
    audience: str
    jwks: JwksSource
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    principal_claim: str = "sub"
    leeway_seconds: int = 30

    def __post_init__(self) -> None:
        """Refuse a configuration that could accept a forged token.

        Raises:
            OidcConfigError: an empty issuer, audience or principal claim; an
                algorithm list that is empty, names ``none``/``HS*`` or an
                algorithm ECP does not support; a leeway outside 0..300 s.
        """
        for name in ("issuer", "audience", "principal_claim"):
            value: object = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise OidcConfigError(f"OIDC issuer needs a non-empty {name}, got {_show(value)}")
        # A list or other iterable is accepted but stored as a tuple, so the
        # frozen issuer cannot have its allow-list changed under it.
        algorithms = tuple(self.algorithms)
        object.__setattr__(self, "algorithms", algorithms)
        if not algorithms:
            raise OidcConfigError(f"OIDC issuer {self.issuer!r} allows no algorithm")
        for alg in algorithms:
            if not isinstance(alg, str):
                raise OidcConfigError(f"algorithm {_show(alg)} is not a string")
            if alg.lower() == "none":
                raise OidcConfigError(
                    f"OIDC issuer {self.issuer!r}: algorithm 'none' accepts unsigned tokens; "
                    "remove it"
                )
            if alg.upper().startswith("HS"):
                raise OidcConfigError(
                    f"OIDC issuer {self.issuer!r}: {alg} is a shared-secret algorithm; ID tokens "
                    "must be verified with the issuer's public keys (use RS256, ES256 or EdDSA)"
                )
            if alg not in _KEY_TYPES:
                raise OidcConfigError(
                    f"OIDC issuer {self.issuer!r}: algorithm {alg!r} is not supported; "
                    f"choose from {', '.join(_KEY_TYPES)}"
                )
        leeway: object = self.leeway_seconds
        if (
            not isinstance(leeway, int)
            or isinstance(leeway, bool)
            or not 0 <= leeway <= _MAX_LEEWAY_SECONDS
        ):
            raise OidcConfigError(
                f"OIDC issuer {self.issuer!r}: leeway_seconds must be an integer "
                f"from 0 to {_MAX_LEEWAY_SECONDS}, got {_show(leeway)}"
            )

    @classmethod
    def from_jwks_file(
        cls,
        path: str | Path,
        *,
        issuer: str,
        audience: str,
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        principal_claim: str = "sub",
        leeway_seconds: int = 30,
    ) -> OidcIssuer:
        """The same as the module's :func:`from_jwks_file`."""
        return from_jwks_file(
            path,
            issuer=issuer,
            audience=audience,
            algorithms=algorithms,
            principal_claim=principal_claim,
            leeway_seconds=leeway_seconds,
        )

    @classmethod
    def discover(
        cls,
        issuer_url: str,
        *,
        audience: str,
        timeout: float = 5,
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        principal_claim: str = "sub",
        leeway_seconds: int = 30,
        max_age_seconds: float = 3600.0,
        refetch_cooldown_seconds: float = 30.0,
    ) -> OidcIssuer:
        """The same as the module's :func:`discover`."""
        return discover(
            issuer_url,
            audience=audience,
            timeout=timeout,
            algorithms=algorithms,
            principal_claim=principal_claim,
            leeway_seconds=leeway_seconds,
            max_age_seconds=max_age_seconds,
            refetch_cooldown_seconds=refetch_cooldown_seconds,
        )


def from_jwks_file(
    path: str | Path,
    *,
    issuer: str,
    audience: str,
    algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
    principal_claim: str = "sub",
    leeway_seconds: int = 30,
) -> OidcIssuer:
    """An issuer whose keys are pinned in a JWKS file: no network, no rotation.

    Args:
        path: A JWKS JSON file (``{"keys": [...]}``), e.g. saved from the issuer's ``jwks_uri``.
        issuer: The exact ``iss`` its tokens carry.
        audience: The ``aud`` a token must name.
        algorithms: The allowed signature algorithms.
        principal_claim: The claim naming the policy principal.
        leeway_seconds: Clock skew tolerated on the token's times.

    Raises:
        OidcConfigError: the file is not a usable JWKS, or the configuration is unsafe.
    """
    return OidcIssuer(
        issuer=issuer,
        audience=audience,
        jwks=StaticJwks.from_file(path),
        algorithms=tuple(algorithms),
        principal_claim=principal_claim,
        leeway_seconds=leeway_seconds,
    )


def discover(
    issuer_url: str,
    *,
    audience: str,
    timeout: float = 5,
    algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
    principal_claim: str = "sub",
    leeway_seconds: int = 30,
    max_age_seconds: float = 3600.0,
    refetch_cooldown_seconds: float = 30.0,
) -> OidcIssuer:
    """An issuer configured by OpenID Connect Discovery.

    Fetches ``<issuer_url>/.well-known/openid-configuration``, requires its
    ``issuer`` to equal ``issuer_url`` exactly (OIDC Discovery §4.3: a
    document that names another issuer could hand over another issuer's
    keys), then fetches its ``jwks_uri`` so a broken issuer fails here rather
    than on the first request.

    Args:
        issuer_url: The issuer identifier, exactly as its tokens' ``iss``.
        audience: The ``aud`` a token must name.
        timeout: Seconds allowed for each network operation.
        algorithms: The allowed signature algorithms.
        principal_claim: The claim naming the policy principal.
        leeway_seconds: Clock skew tolerated on the token's times.
        max_age_seconds: How long fetched keys are trusted before a refetch.
        refetch_cooldown_seconds: Minimum time between refetches for unknown ``kid`` values.

    Raises:
        OidcDiscoveryError: a document could not be fetched, is not what it
            must be, or names another issuer.
        OidcConfigError: the configuration is unsafe.
    """
    parts = _check_url(issuer_url, "issuer")
    if parts.query or parts.fragment:
        raise OidcDiscoveryError(
            f"issuer {_show(issuer_url)} has a query or fragment; an issuer identifier has neither"
        )
    # Discovery §4: a trailing "/" of the issuer is dropped before the well-known path.
    config_url = issuer_url.rstrip("/") + "/.well-known/openid-configuration"
    document = _fetch_json(
        config_url, timeout=timeout, max_bytes=MAX_DOCUMENT_BYTES, what="discovery document"
    )
    if not isinstance(document, dict):
        raise OidcDiscoveryError(f"discovery document {config_url} is not a JSON object")
    named = document.get("issuer")
    if named != issuer_url:
        raise OidcDiscoveryError(
            f"discovery document {config_url} names issuer {_show(named)}, "
            f"not {issuer_url!r}; refusing its keys"
        )
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise OidcDiscoveryError(f"discovery document {config_url} has no string jwks_uri")
    jwks = RemoteJwks(
        jwks_uri,
        timeout=timeout,
        max_age_seconds=max_age_seconds,
        refetch_cooldown_seconds=refetch_cooldown_seconds,
    )
    jwks.signing_keys()
    return OidcIssuer(
        issuer=issuer_url,
        audience=audience,
        jwks=jwks,
        algorithms=tuple(algorithms),
        principal_claim=principal_claim,
        leeway_seconds=leeway_seconds,
    )


# --- verification ---------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedIdentity:
    """An initiator whose ID token verified. Only this may name a policy principal.

    Attributes:
        issuer: The token's ``iss`` (equal to the configured issuer).
        subject: The token's ``sub``: unique only within ``issuer``.
        principal: The value of the issuer's ``principal_claim``.
        expires_at: The token's ``exp``, in UTC: the identity is not to be
            relied on after it.
        claims: Every claim of the token, read-only.
    """

    issuer: str
    subject: str
    principal: str
    expires_at: datetime
    claims: Mapping[str, object] = field(hash=False)


class _StrictPyJWT(jwt.PyJWT):
    """PyJWT with the payload parsed as strict JSON.

    A payload naming a claim twice means different things to parsers that
    keep the first or the last value; ECP refuses such documents everywhere.
    """

    def _decode_payload(self, decoded: dict[str, Any]) -> dict[str, Any]:
        # CanonicalizationError passes through PyJWT untouched; verify_id_token maps it.
        payload = parse_json_strict(decoded["payload"])
        if not isinstance(payload, dict):
            raise jwt.DecodeError("the payload is not a JSON object")
        return payload


_DECODER: Final = _StrictPyJWT()

# Time claims are checked here against the caller's ``now``, not PyJWT's OS clock.
_DECODE_OPTIONS: Final[Options] = {
    "verify_signature": True,
    "verify_aud": True,
    "verify_iss": True,
    "verify_sub": True,
    "verify_jti": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "strict_aud": False,
    "require": ["iss", "aud", "exp", "iat", "sub"],
    "enforce_minimum_key_length": True,
}


def _translate(exc: jwt.PyJWTError, issuer: OidcIssuer) -> IdTokenError:
    """One PyJWT failure as the matching :class:`IdTokenError`, with a message to act on."""
    who = f"ID token for issuer {issuer.issuer!r}"
    match exc:
        case jwt.InvalidAlgorithmError():
            return IdTokenAlgorithmError(
                f"{who}: its algorithm is not allowed for the key it names "
                f"(allowed: {', '.join(issuer.algorithms)})"
            )
        case jwt.InvalidSignatureError():
            return IdTokenSignatureError(
                f"{who}: the signature does not verify with the issuer's published key; "
                "the token was altered or signed by someone else"
            )
        case jwt.InvalidKeyError():
            return IdTokenSignatureError(f"{who}: the issuer's key is unusable: {_show(str(exc))}")
        case jwt.InvalidIssuerError():
            return IdTokenIssuerError(
                f"{who}: its iss is not exactly {issuer.issuer!r}; "
                "it was minted by another issuer or the configuration names the wrong one"
            )
        case jwt.InvalidAudienceError():
            return IdTokenAudienceError(
                f"{who}: its aud does not name {issuer.audience!r}; "
                "it was minted for another client (request a token for this audience)"
            )
        case jwt.MissingRequiredClaimError():
            return IdTokenError(
                f"{who}: the claim {exc.claim!r} is missing; an OIDC ID token carries "
                "iss, sub, aud, exp and iat"
            )
        case jwt.ExpiredSignatureError():
            return IdTokenExpiredError(f"{who}: it has expired; obtain a fresh token")
        case jwt.ImmatureSignatureError():
            return IdTokenNotYetValidError(f"{who}: it is not valid yet; check the clocks")
        case InvalidSubjectError():
            return IdTokenError(f"{who}: its sub is not a string")
        case jwt.DecodeError():
            return IdTokenError(f"{who} is not a well-formed JWT: {_show(str(exc), 120)}")
        case _:
            return IdTokenError(f"{who} is malformed: {_show(str(exc), 120)}")


def _resolve_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ClockError("verify_id_token needs a time-zone aware 'now'")
    return now.astimezone(UTC)


def _check_shape(token: object) -> str:
    """``token`` if it can be a compact JWS at all; refused cheaply before any parsing."""
    if not isinstance(token, str):
        raise IdTokenError(f"an ID token is text, not {type(token).__name__}")
    if len(token) > MAX_TOKEN_BYTES:
        raise IdTokenError(
            f"ID token is {len(token)} characters; ECP refuses more than {MAX_TOKEN_BYTES}"
        )
    if not token.isascii():
        raise IdTokenError("ID token contains non-ASCII characters; a JWT is base64url text")
    if token.count(".") != 2:
        raise IdTokenError(
            "not a JWT: an ID token is header.payload.signature "
            "(encrypted JWE ID tokens are not supported)"
        )
    return token


def _select_keys(issuer: OidcIssuer, kid: str | None, alg: str) -> list[JsonWebKey]:
    """The issuer's keys that may verify a token naming ``kid`` and ``alg``."""
    who = f"ID token for issuer {issuer.issuer!r}"
    keys = issuer.jwks.signing_keys()
    if kid is None:
        # Without a kid the choice must be unambiguous: guessing among several
        # keys would let any of them vouch for the token.
        usable = [key for key in keys if key.accepts(alg)]
        if len(usable) != 1:
            raise IdTokenSignatureError(
                f"{who} names no key id (kid) and the issuer publishes {len(usable)} "
                f"keys for {alg}; the issuer must put a kid in its tokens"
            )
        return usable
    named = [key for key in keys if key.kid == kid]
    # An unknown kid may be a freshly rotated key: look once more, never in a loop.
    if not named and issuer.jwks.refresh():
        named = [key for key in issuer.jwks.signing_keys() if key.kid == kid]
    if not named:
        raise IdTokenSignatureError(
            f"{who} names key {_show(kid)}, which the issuer does not publish; "
            "it was signed by another issuer or with a retired key"
        )
    usable = [key for key in named if key.accepts(alg)]
    if not usable:
        kinds = ", ".join(sorted({f"{key.kty} {key.alg or ''}".strip() for key in named}))
        raise IdTokenAlgorithmError(
            f"{who} says alg {alg} but its key {_show(kid)} is {kinds}; "
            "a key is used only with its own algorithm"
        )
    return usable


def _numeric_date(claims: Mapping[str, object], name: str, issuer: OidcIssuer) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int in Python, but "exp": true is not a time.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise IdTokenError(
            f"ID token for issuer {issuer.issuer!r}: {name} must be a number of seconds, "
            f"not {_show(value)}"
        )
    return float(value)


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _identity(claims: dict[str, Any], issuer: OidcIssuer, at: datetime) -> VerifiedIdentity:
    """Check what PyJWT left to us (times, types, the principal) and build the identity."""
    who = f"ID token for issuer {issuer.issuer!r}"
    leeway = issuer.leeway_seconds
    now = at.timestamp()
    exp = _numeric_date(claims, "exp", issuer)
    iat = _numeric_date(claims, "iat", issuer)
    nbf = _numeric_date(claims, "nbf", issuer)
    # PyJWT's "require" has seen both.
    assert exp is not None
    assert iat is not None
    if exp <= now - leeway:
        raise IdTokenExpiredError(
            f"{who} expired {now - exp:.0f} s ago (leeway {leeway} s); obtain a fresh token"
        )
    if nbf is not None and nbf > now + leeway:
        raise IdTokenNotYetValidError(
            f"{who} is not valid for another {nbf - now:.0f} s (nbf; leeway {leeway} s); "
            "check the clocks of the issuer and this host"
        )
    if iat > now + leeway:
        raise IdTokenNotYetValidError(
            f"{who} was issued {iat - now:.0f} s in the future (iat; leeway {leeway} s); "
            "check the clocks of the issuer and this host"
        )
    try:
        expires_at = _utc(exp)
    except (OverflowError, ValueError, OSError) as exc:
        raise IdTokenError(
            f"{who}: exp {_show(claims['exp'])} is not a representable time"
        ) from exc
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise IdTokenError(f"{who}: sub must be a non-empty string, not {_show(subject)}")
    principal = claims.get(issuer.principal_claim)
    if not isinstance(principal, str) or not principal:
        raise IdTokenError(
            f"{who} has no non-empty string claim {issuer.principal_claim!r} to name the "
            f"principal (got {_show(principal)})"
        )
    if issuer.principal_claim == "email" and claims.get("email_verified") is not True:
        # Some issuers let users set an unverified address: it names nobody.
        raise IdTokenError(
            f"{who}: email {_show(principal)} is not verified (email_verified is not true); "
            "use a verified address or principal_claim='sub'"
        )
    return VerifiedIdentity(
        issuer=issuer.issuer,  # PyJWT compared iss with it exactly
        subject=subject,
        principal=principal,
        expires_at=expires_at,
        claims=MappingProxyType(dict(claims)),
    )


def verify_id_token(
    token: str, issuer: OidcIssuer, *, now: datetime | None = None
) -> VerifiedIdentity:
    """Verify an OpenID Connect ID token from ``issuer``.

    Requires ``iss`` (exactly the issuer), ``aud`` (naming the audience),
    ``exp``, ``iat`` and ``sub``; a signature by the issuer's key whose
    ``kid`` the token names (with no ``kid``, the issuer's only key of the
    right type) using an allowed algorithm of that key's type; and ``exp``,
    ``nbf`` and ``iat`` consistent with ``now`` within the issuer's leeway.

    Args:
        token: The compact JWT, as the initiator presented it.
        issuer: The issuer the token must come from.
        now: The time to check against (aware); the system clock when ``None``.

    Returns:
        The verified identity, whose ``principal`` is the issuer's
        ``principal_claim``.

    Raises:
        IdTokenError: or a subclass naming the failure: the token does not
            verify. Every malformed input lands here.
        OidcDiscoveryError: the issuer's keys were due for a fetch that failed.
        ClockError: ``now`` has no time zone.
    """
    at = _resolve_now(now)
    text = _check_shape(token)
    try:
        # Read unverified, only to choose a key; PyJWT checks it all again below.
        header = jwt.get_unverified_header(text)
    except jwt.PyJWTError as exc:
        raise _translate(exc, issuer) from exc
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in issuer.algorithms:
        said = "names no alg" if alg is None else f"uses alg {_show(alg)}"
        raise IdTokenAlgorithmError(
            f"ID token for issuer {issuer.issuer!r} {said}; "
            f"the issuer is configured for {', '.join(issuer.algorithms)} only"
        )
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ID_TOKEN_TYPES):
        raise IdTokenError(
            f"ID token for issuer {issuer.issuer!r} has typ {_show(typ)}: it is another kind "
            "of token (an access or logout token?), not an ID token"
        )
    if "crit" in header or "b64" in header:
        # No OIDC ID token uses critical extensions or an unencoded payload; PyJWT
        # before 2.12 ignored "crit", so it is refused here whatever the version.
        raise IdTokenError(
            f"ID token for issuer {issuer.issuer!r} uses JOSE header extensions "
            "(crit/b64) that ID tokens never carry"
        )
    kid = header.get("kid")  # PyJWT has refused a kid that is not a string
    failure: IdTokenError | None = None
    for key in _select_keys(issuer, kid, alg):
        if isinstance(key.public_key, RSAPublicKey) and key.public_key.key_size < _MIN_RSA_BITS:
            # Checked here too, not only by PyJWT's option, which older 2.x releases lack.
            raise IdTokenSignatureError(
                f"ID token for issuer {issuer.issuer!r}: the issuer's key {_show(key.kid)} is "
                f"unusable: {key.public_key.key_size}-bit RSA (at least {_MIN_RSA_BITS} needed)"
            )
        # The algorithms the key may be used with, from configuration, never from the token.
        allowed = [name for name in issuer.algorithms if key.accepts(name)]
        try:
            claims = _DECODER.decode(
                text,
                key=key.public_key,
                algorithms=allowed,
                options=_DECODE_OPTIONS,
                audience=issuer.audience,
                issuer=issuer.issuer,
            )
        except jwt.InvalidSignatureError as exc:
            # Several keys may share a kid (a botched rotation): try the next one.
            failure = _translate(exc, issuer)
            continue
        except jwt.PyJWTError as exc:
            raise _translate(exc, issuer) from exc
        except CanonicalizationError as exc:
            raise IdTokenError(
                f"ID token for issuer {issuer.issuer!r}: the payload is not strict JSON: {exc}"
            ) from exc
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            # Not expected from PyJWT, but a token must never escape as a bare error.
            raise IdTokenError(
                f"ID token for issuer {issuer.issuer!r} is malformed: "
                f"{type(exc).__name__}: {_show(str(exc))}"
            ) from exc
        return _identity(claims, issuer, at)
    # Every candidate key refused the signature (_select_keys never returns none).
    raise failure or IdTokenSignatureError(
        f"ID token for issuer {issuer.issuer!r}: no published key verifies it"
    )
