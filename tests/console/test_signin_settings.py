"""The console's sign-in from ``ECP_CONSOLE_*`` settings, failing closed when half configured.

A misconfigured sign-in must never mean an open console: every half
configuration stops ``ecp console`` before it serves anything (and
``create_app`` refuses it), naming what is missing. A full configuration
in the environment alone signs a visitor in against the test's provider.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ecp._settings import Settings
from ecp.cli import app as cli
from ecp.console import create_app
from ecp.console.errors import SignInConfigError
from ecp.console.signin import signin_from_settings
from tests.console.conftest import ConsoleServer, Governed, free_port
from tests.console.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, RunningProvider

_KEY = secrets.token_hex(32)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("ECP_CONSOLE_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize(
    ("env", "named"),
    [
        # An issuer with no client id: the example the issue names.
        (
            {"ECP_CONSOLE_OIDC_ISSUER": "https://idp.example", "ECP_CONSOLE_ROLES": "v=viewer"},
            "ECP_CONSOLE_OIDC_CLIENT_ID",
        ),
        # Public mode, a secret, a session key or roles, but no issuer: that
        # would have been a console open to everyone.
        ({"ECP_CONSOLE_PUBLIC_MODE": "true"}, "ECP_CONSOLE_PUBLIC_MODE"),
        ({"ECP_CONSOLE_OIDC_CLIENT_SECRET": "s3cret"}, "ECP_CONSOLE_OIDC_CLIENT_SECRET"),
        ({"ECP_CONSOLE_SESSION_KEY": _KEY}, "ECP_CONSOLE_SESSION_KEY"),
        ({"ECP_CONSOLE_ROLES": "ops=approver"}, "ECP_CONSOLE_ROLES"),
        ({"ECP_CONSOLE_OIDC_CLIENT_ID": "ecp-console"}, "ECP_CONSOLE_OIDC_CLIENT_ID"),
        # An issuer whose roles give nobody anything.
        (
            {"ECP_CONSOLE_OIDC_ISSUER": "https://idp.example", "ECP_CONSOLE_OIDC_CLIENT_ID": "c"},
            "ECP_CONSOLE_ROLES",
        ),
    ],
)
def test_half_a_sign_in_stops_the_console(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], named: str
) -> None:
    for k, v in env.items():
        clean_env.setenv(k, v)
    clean_env.setenv("ECP_HOME", str(tmp_path))
    out = CliRunner().invoke(cli, ["console", "--port", str(free_port())])
    assert out.exit_code == 1, out.output
    assert named in out.output
    assert "ECP console at" not in out.output  # it never got to serving
    # The library path refuses the same settings: no open app is ever built.
    with pytest.raises(SignInConfigError, match=named):
        create_app(Settings())


def test_options_complete_or_break_the_settings(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ECP_CONSOLE_OIDC_ISSUER", "https://idp.example")
    out = CliRunner().invoke(cli, ["console", "--role", "ops=superuser"])
    assert out.exit_code == 1
    assert "ECP_CONSOLE_ROLES" in out.output
    assert "superuser" in out.output
    # Options fill what the environment leaves out.
    settings = Settings(
        console_oidc_issuer="https://idp.example",
        console_oidc_client_id="ecp-console",
        console_roles="ops=approver,staff=viewer",
    )
    cfg = signin_from_settings(settings, default_base_url="http://127.0.0.1:8280")
    assert cfg is not None
    assert cfg.redirect_uri == "http://127.0.0.1:8280/auth/callback"
    assert dict(cfg.role_values) == {"ops": "approver", "staff": "viewer"}
    assert not cfg.public


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("ECP_CONSOLE_SESSION_KEY", "not-hex", "must be hex"),
        ("ECP_CONSOLE_SESSION_KEY", "ab" * 16, "32 bytes or more"),
        ("ECP_CONSOLE_OIDC_ISSUER", "idp.example", "http(s)://"),
        ("ECP_CONSOLE_ROLES", "viewer", "CLAIM_VALUE=ROLE"),
    ],
)
def test_bad_values_name_their_setting(
    clean_env: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    clean_env.setenv(name, value)
    out = CliRunner().invoke(cli, ["config", "show"])
    assert out.exit_code == 1
    assert f"invalid setting {name}" in out.output
    assert says in out.output


def test_console_help_names_the_settings() -> None:
    out = CliRunner().invoke(cli, ["console", "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0
    for name in (
        "ECP_CONSOLE_OIDC_ISSUER",
        "ECP_CONSOLE_OIDC_CLIENT_ID",
        "ECP_CONSOLE_PUBLIC_URL",
        "ECP_CONSOLE_ROLES",
        "ECP_CONSOLE_OIDC_CLIENT_SECRET",
        "ECP_CONSOLE_SESSION_KEY",
    ):
        assert name in out.output, name


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with RunningProvider() as p:
        yield p


async def test_sign_in_configured_by_the_environment_alone(
    governed: Governed, provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    for k, v in {
        "ECP_CONSOLE_OIDC_ISSUER": provider.url,
        "ECP_CONSOLE_OIDC_CLIENT_ID": CLIENT_ID,
        "ECP_CONSOLE_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "ECP_CONSOLE_SESSION_KEY": _KEY,
        "ECP_CONSOLE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "ECP_CONSOLE_ROLES": "ecp-viewers=viewer",
    }.items():
        monkeypatch.setenv(k, v)
    # The stack's own settings, with the console's read from the environment.
    base = {k: v for k, v in governed.settings.model_dump().items() if not k.startswith("console_")}
    settings = Settings(**base)
    with ConsoleServer(settings, port=port) as console:
        async with httpx.AsyncClient(base_url=console.url, timeout=60) as http:
            # Signed out: sent to sign in, never shown the list.
            resp = await http.get("/governance")
            assert resp.status_code == 303
            assert resp.headers["location"].startswith("/login")
        async with httpx.AsyncClient(
            base_url=console.url, timeout=60, follow_redirects=True
        ) as http:
            provider.user = {"sub": "u-env", "name": "alice", "groups": ["ecp-viewers"]}
            resp = await http.get("/governance")
            assert resp.status_code == 200, resp.text[:300]
            assert 'id="signed-in"' in resp.text
            # The provider was sent the secret from ECP_CONSOLE_OIDC_CLIENT_SECRET.
            assert provider.token_requests[-1].get("client_secret") == CLIENT_SECRET


def test_config_show_masks_the_console_secrets(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ECP_CONSOLE_SESSION_KEY", _KEY)
    clean_env.setenv("ECP_CONSOLE_OIDC_CLIENT_SECRET", "s3cret-value")
    out = CliRunner().invoke(cli, ["config", "show"])
    assert out.exit_code == 0, out.output
    assert "ECP_CONSOLE_SESSION_KEY" in out.output
    assert _KEY not in out.output
    assert "s3cret-value" not in out.output
