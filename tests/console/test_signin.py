"""Sign-in with OpenID Connect against a provider started by the test.

The provider (tests/console/oidc_provider.py) checks PKCE, the client and the
redirect URI and signs RS256 ID tokens with a real key; the console must
complete the code flow, verify the token and its nonce, map roles from the
``groups`` claim, keep the session in a signed HttpOnly SameSite cookie and
refuse a sign-out or approval form without the session's CSRF token. ID
tokens that must not sign anyone in (forged, expired, from another issuer or
for another client, without the nonce) and a discovery document naming
another issuer are each refused.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from ecp.console import signin as signin_module
from ecp.console.signin import SESSION_COOKIE, SignInConfig
from tests.console.conftest import ConsoleServer, Governed, free_port
from tests.console.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, RunningProvider

_ROLES = {"ecp-viewers": "viewer", "ecp-auditors": "auditor", "ecp-approvers": "approver"}


@dataclass
class Site:
    provider: Provider
    console: ConsoleServer
    public: ConsoleServer


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with RunningProvider() as p:
        yield p


def _config(provider: Provider, port: int, *, public: bool) -> SignInConfig:
    return SignInConfig(
        issuer_url=provider.url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=f"http://127.0.0.1:{port}/auth/callback",
        session_key=secrets.token_bytes(32),
        role_values=_ROLES,
        public=public,
    )


@pytest.fixture(scope="module")
async def site(governed: Governed, provider: Provider) -> AsyncIterator[Site]:
    port, public_port = free_port(), free_port()
    with (
        ConsoleServer(
            governed.settings, port=port, signin=_config(provider, port, public=False)
        ) as console,
        ConsoleServer(
            governed.settings,
            port=public_port,
            signin=_config(provider, public_port, public=True),
        ) as public,
    ):
        yield Site(provider, console, public)


def _client(server: ConsoleServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=60, follow_redirects=True)


async def _sign_in(site: Site, http: httpx.AsyncClient, groups: list[str]) -> httpx.Response:
    site.provider.user = {"sub": f"u-{secrets.token_hex(4)}", "name": "alice", "groups": groups}
    return await http.get("/governance")


async def test_signed_out_visitors_are_sent_to_the_issuer(site: Site, governed: Governed) -> None:
    async with httpx.AsyncClient(base_url=site.console.url, timeout=60) as http:
        for path in ("/governance", f"/governance/{governed.allowed_id}", "/health", "/proofs"):
            resp = await http.get(path)
            assert resp.status_code == 303, path
            assert resp.headers["location"].startswith("/login?next=")
        assert (await http.get("/api/health")).status_code == 401
        login = await http.get("/login", params={"next": "/health"})
        assert login.status_code == 303
        where = urlsplit(login.headers["location"])
        assert f"{where.scheme}://{where.netloc}" == site.provider.url
        q = {k: v[0] for k, v in parse_qs(where.query).items()}
        assert q["response_type"] == "code"
        assert q["code_challenge_method"] == "S256"
        assert len(q["code_challenge"]) == 43
        assert q["state"]
        assert q["nonce"]
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Lax" in cookie


async def test_code_flow_with_pkce_signs_a_viewer_in(site: Site, governed: Governed) -> None:
    async with _client(site.console) as http:
        resp = await _sign_in(site, http, ["ecp-viewers"])
        assert resp.status_code == 200, resp.text[:300]
        assert str(resp.url).endswith("/governance")
        assert 'id="signed-in"' in resp.text
        assert "alice" in resp.text
        # The provider saw the verifier and accepted it (it checks S256).
        assert site.provider.token_requests[-1]["code_verifier"]
        session = [c for c in resp.history if SESSION_COOKIE in c.headers.get("set-cookie", "")]
        assert session
        flags = session[0].headers["set-cookie"]
        assert "HttpOnly" in flags
        assert "SameSite=Lax" in flags
        assert (await http.get(f"/governance/{governed.allowed_id}")).status_code == 200
        # A viewer may not export; an auditor may.
        export = await http.get(f"/lineage/{governed.allowed_id}/export/json")
        assert export.status_code == 403
    async with _client(site.console) as http:
        assert (await _sign_in(site, http, ["ecp-auditors"])).status_code == 200
        export = await http.get(f"/lineage/{governed.allowed_id}/export/json")
        assert export.status_code == 200


async def test_no_role_wrong_nonce_and_forged_state_are_refused(site: Site) -> None:
    async with _client(site.console) as http:
        resp = await _sign_in(site, http, ["somebody-else"])
        assert resp.status_code == 403
        assert "holds no console role" in resp.text
        assert SESSION_COOKIE not in http.cookies
    site.provider.wrong_nonce = True
    try:
        async with _client(site.console) as http:
            resp = await _sign_in(site, http, ["ecp-viewers"])
            assert resp.status_code == 400
            assert "nonce" in resp.text
            assert SESSION_COOKIE not in http.cookies
    finally:
        site.provider.wrong_nonce = False
    async with httpx.AsyncClient(base_url=site.console.url, timeout=60) as http:
        login = await http.get("/login")
        authorize = await http.get(login.headers["location"])
        callback = urlsplit(authorize.headers["location"])
        code = parse_qs(callback.query)["code"][0]
        forged = await http.get("/auth/callback", params={"code": code, "state": "forged"})
        assert forged.status_code == 400
        assert SESSION_COOKIE not in http.cookies


def _bad_tokens() -> list[tuple[str, dict[str, Any], bool, str]]:
    """(what, claim overrides, signed by a forger's key, what the refusal says)."""
    now = int(time.time())
    return [
        ("forged", {}, True, "does not verify: bad_signature"),
        ("expired", {"iat": now - 7200, "exp": now - 3600}, False, "The token is expired"),
        ("another issuer", {"iss": "http://127.0.0.1:9/"}, False, "Invalid claim: &#39;iss&#39;"),
        # Authlib alone accepts any aud when azp names this client: the
        # console requires its own client id in aud.
        (
            "another audience",
            {"aud": "another-client", "azp": CLIENT_ID},
            False,
            "Invalid claim: &#39;aud&#39;",
        ),
        ("no nonce", {"nonce": None}, False, "not issued for this sign-in (nonce)"),
        ("no exp", {"exp": None}, False, "Missing claim: &#39;exp&#39;"),
    ]


@pytest.mark.parametrize(
    ("what", "overrides", "forged", "says"), _bad_tokens(), ids=[t[0] for t in _bad_tokens()]
)
async def test_id_tokens_that_must_not_sign_anyone_in(
    site: Site, what: str, overrides: dict[str, Any], forged: bool, says: str
) -> None:
    site.provider.overrides = overrides
    site.provider.signer = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048) if forged else None
    )
    try:
        async with _client(site.console) as http:
            resp = await _sign_in(site, http, ["ecp-approvers"])
            assert resp.status_code == 400, what
            problem = resp.text.split('id="problem">', 1)[1].split("</p>", 1)[0]
            assert says in problem, problem
            assert SESSION_COOKIE not in http.cookies
            assert (await http.get("/health", follow_redirects=False)).status_code == 303
    finally:
        site.provider.overrides, site.provider.signer = {}, None
    # The same provider, behaving again, signs the visitor in.
    async with _client(site.console) as http:
        assert (await _sign_in(site, http, ["ecp-viewers"])).status_code == 200


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"issuer": "https://idp.example"}, "names issuer &#39;https://idp.example&#39;"),
        # Keys, or the client secret, over plain http off loopback.
        (
            {"jwks_uri": "http://idp.example/jwks"},
            "jwks_uri &#39;http://idp.example/jwks&#39; uses plain http",
        ),
        ({"token_endpoint": "http://idp.example/token"}, "uses plain http"),
        # HMAC keyed with the client secret, or no signature: never accepted.
        (
            {"id_token_signing_alg_values_supported": ["HS256", "none"]},
            "signs ID tokens with none of RS256, ES256, EdDSA",
        ),
    ],
    ids=["another issuer", "plain-http jwks_uri", "plain-http token_endpoint", "symmetric alg"],
)
async def test_a_discovery_document_the_console_must_not_use_is_refused(
    governed: Governed, entry: dict[str, object], says: str
) -> None:
    with RunningProvider() as liar:
        liar.discovery_overrides = entry
        port = free_port()
        with ConsoleServer(
            governed.settings, port=port, signin=_config(liar, port, public=False)
        ) as console:
            async with httpx.AsyncClient(base_url=console.url, timeout=60) as http:
                resp = await http.get("/login")
                assert resp.status_code == 400
                problem = resp.text.split('id="problem">', 1)[1].split("</p>", 1)[0]
                assert says in problem, problem
                assert "location" not in resp.headers
                # Not kept: once the document is right, sign-in starts.
                liar.discovery_overrides = {}
                assert (await http.get("/login")).status_code == 303


async def test_a_key_the_issuer_dropped_stops_signing_anyone_in(
    governed: Governed, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RunningProvider() as provider:
        port = free_port()
        config = _config(provider, port, public=False)
        with ConsoleServer(governed.settings, port=port, signin=config) as console:
            site = Site(provider, console, console)
            async with _client(console) as http:
                assert (await _sign_in(site, http, ["ecp-viewers"])).status_code == 200
            # The issuer rotates: its JWKS now holds only a new key, under the
            # same kid, and someone still holds the dropped one.
            dropped = provider.key
            provider.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            provider.signer = dropped
            # Past the keys' max age (the console's clock, not the test's, moves).
            later = time.monotonic() + 2 * 3600
            monkeypatch.setattr(signin_module, "monotonic", lambda: later)
            async with _client(console) as http:
                resp = await _sign_in(site, http, ["ecp-viewers"])
                assert resp.status_code == 400
                assert "bad_signature" in resp.text
                assert SESSION_COOKIE not in http.cookies
            provider.signer = None
            async with _client(console) as http:
                assert (await _sign_in(site, http, ["ecp-viewers"])).status_code == 200


async def test_a_plain_http_issuer_off_loopback_is_never_asked(governed: Governed) -> None:
    port = free_port()
    config = SignInConfig(
        issuer_url="http://idp.example",
        client_id=CLIENT_ID,
        redirect_uri=f"http://127.0.0.1:{port}/auth/callback",
        session_key=secrets.token_bytes(32),
        role_values=_ROLES,
    )
    with ConsoleServer(governed.settings, port=port, signin=config) as console:
        async with httpx.AsyncClient(base_url=console.url, timeout=60) as http:
            resp = await http.get("/login")
            assert resp.status_code == 400
            assert "issuer &#39;http://idp.example&#39; uses plain http" in resp.text


async def test_a_tampered_session_is_no_session(site: Site) -> None:
    async with _client(site.console) as http:
        assert (await _sign_in(site, http, ["ecp-viewers"])).status_code == 200
        value = http.cookies[SESSION_COOKIE]
        head, body, sig = value.split(".")
        forged = f"{head}.{body}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}"
    async with httpx.AsyncClient(base_url=site.console.url, timeout=60) as http:
        http.cookies.set(SESSION_COOKIE, forged)
        resp = await http.get("/governance")
        assert resp.status_code == 303


async def test_sign_out_needs_the_sessions_csrf_token(site: Site) -> None:
    async with _client(site.console) as http:
        page = await _sign_in(site, http, ["ecp-viewers"])
        token = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        refused = await http.post("/logout", data={"csrf": "not-the-token"})
        assert refused.status_code == 403
        assert (await http.get("/health")).status_code == 200  # still signed in
        out = await http.post("/logout", data={"csrf": token}, follow_redirects=False)
        assert out.status_code == 303
        assert f"{SESSION_COOKIE}=;" in out.headers["set-cookie"]
        http.cookies.delete(SESSION_COOKIE)
        assert (await http.get("/health", follow_redirects=False)).status_code == 303


async def test_public_mode_serves_proofs_and_a_redacted_list(
    site: Site, governed: Governed
) -> None:
    async with httpx.AsyncClient(base_url=site.public.url, timeout=60) as http:
        assert (await http.get("/proofs")).status_code == 200
        listing = await http.get("/governance")
        assert listing.status_code == 200
        assert governed.allowed_id in listing.text
        assert "alice" not in listing.text  # no initiators
        assert f'href="/governance/{governed.allowed_id}"' not in listing.text
        assert 'id="charts"' not in listing.text
        filtered = await http.get("/governance", params={"initiator": "alice"})
        assert governed.allowed_id in filtered.text  # the initiator filter is ignored
        for path in (f"/governance/{governed.allowed_id}", f"/lineage/{governed.allowed_id}"):
            assert (await http.get(path)).status_code == 303


async def test_only_an_approver_may_post_an_approval(site: Site, governed: Governed) -> None:
    path = f"/governance/{governed.allowed_id}/approve"
    async with _client(site.console) as http:
        page = await _sign_in(site, http, ["ecp-viewers"])
        token = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        refused = await http.post(
            path, data={"csrf": token, "payload": "e30=", "signature": "AA=="}
        )
        assert refused.status_code == 403
        assert "approver" in refused.text
        viewers_token = token
    async with _client(site.console) as http:
        page = await _sign_in(site, http, ["ecp-approvers"])
        token = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        # Another session's token, or none, is not this session's form.
        for sent in ({"csrf": viewers_token}, {}):
            resp = await http.post(path, data={**sent, "payload": "e30=", "signature": "AA=="})
            assert resp.status_code == 403
            assert "not from this console session" in resp.text
        # Past the role check: the console itself refuses a closed execution.
        resp = await http.post(
            path, data={"csrf": token, "payload": "e30=", "signature": "A" * 86 + "=="}
        )
        assert resp.status_code == 400
        assert "has closed" in resp.text


async def test_only_an_approver_may_register_a_passkey_and_under_their_own_name(
    site: Site,
) -> None:
    async with _client(site.console) as http:
        await _sign_in(site, http, ["ecp-viewers"])
        refused = await http.get("/passkeys/register")
        assert refused.status_code == 403
        assert "approver" in refused.text
    async with _client(site.console) as http:
        await _sign_in(site, http, ["ecp-approvers"])
        page = await http.get("/passkeys/register")
        assert page.status_code == 200
        # The name a signed-in approver registers under is their session's.
        field = page.text.split('id="register-name"', 1)[1].split(">", 1)[0]
        assert "readonly" in field
        assert 'value=""' not in field
