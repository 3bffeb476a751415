"""`ecp console`: serve the web console."""

from __future__ import annotations

import ipaddress

import typer

from ecp._settings import Settings, load_settings
from ecp.cli._common import one_line_errors

__all__ = ["DEFAULT_PORT", "default_temporal_ui", "register"]

#: Beside the Temporal UI's 8233.
DEFAULT_PORT = 8280


def register(app: typer.Typer) -> None:
    """Add ``ecp console`` to the root app."""
    app.command("console")(console)


def default_temporal_ui(settings: Settings) -> str | None:
    """The Temporal UI beside a local dev server (``ecp dev``'s port rule), else None."""
    host, _, port = settings.temporal_address.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        return None
    ui = 8233 if port == "7233" else int(port) + 1000
    return f"http://{host}:{ui}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@one_line_errors
def console(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535, help="Port to listen on."),
    temporal_ui: str | None = typer.Option(
        None,
        "--temporal-ui",
        help="Temporal Web UI base URL for links (default: beside a local dev server).",
    ),
    verify_every: int = typer.Option(
        10,
        "--verify-every",
        min=1,
        max=1440,
        help="Minutes between full ledger verifications shown on the health page.",
    ),
    oidc_issuer: str | None = typer.Option(
        None, "--oidc-issuer", help="Sign visitors in with this OpenID Connect issuer."
    ),
    oidc_client_id: str = typer.Option(
        "ecp-console", "--oidc-client-id", help="The console's client id at the issuer."
    ),
    public_url: str | None = typer.Option(
        None,
        "--public-url",
        help="The console's own base URL as browsers reach it (the redirect URI's base).",
    ),
    role: list[str] = typer.Option(
        [],
        "--role",
        help="CLAIM_VALUE=viewer|auditor|approver, repeatable (values of --role-claim).",
    ),
    role_claim: str = typer.Option("groups", "--role-claim", help="The claim roles come from."),
    public_mode: bool = typer.Option(
        False,
        "--public-mode",
        help="Serve signed-out visitors the Proof Viewer and a redacted list.",
    ),
) -> None:
    """Serve the web console: governance list, proof viewer, lineage and health.

    With ``--oidc-issuer`` visitors sign in (authorization code flow with
    PKCE); the client secret is read from ``ECP_CONSOLE_OIDC_CLIENT_SECRET``
    and the session key (hex, 32 bytes or more) from
    ``ECP_CONSOLE_SESSION_KEY``; without one, a random key is made and
    sessions end when the console restarts.
    """
    import os
    import secrets
    from datetime import timedelta

    import uvicorn

    from ecp.console import create_app
    from ecp.console.signin import SignInConfig

    settings = load_settings()
    ui = temporal_ui or default_temporal_ui(settings)
    typer.echo(f"ECP console at http://{host}:{port}/ (Temporal UI: {ui or 'not linked'})")
    if not _loopback(host):
        # Browsers only offer WebCrypto to secure contexts; without sign-in
        # the console shows everything to whoever reaches the port.
        typer.echo(
            "note: serve it behind HTTPS (a reverse proxy) so browsers can verify receipts"
            + ("" if oidc_issuer else "; without --oidc-issuer it has no sign-in"),
            err=True,
        )
    signin = None
    if oidc_issuer:
        values = {}
        for item in role:
            value, sep, name = item.rpartition("=")
            if not sep or not value:
                raise typer.BadParameter(f"--role {item!r} is not CLAIM_VALUE=ROLE")
            values[value] = name
        key_hex = os.environ.get("ECP_CONSOLE_SESSION_KEY", "")
        base = (public_url or f"http://{host}:{port}").rstrip("/")
        signin = SignInConfig(
            issuer_url=oidc_issuer,
            client_id=oidc_client_id,
            client_secret=os.environ.get("ECP_CONSOLE_OIDC_CLIENT_SECRET") or None,
            redirect_uri=f"{base}/auth/callback",
            session_key=bytes.fromhex(key_hex) if key_hex else secrets.token_bytes(32),
            role_claim=role_claim,
            role_values=values,
            public=public_mode,
        )
    app = create_app(
        settings,
        temporal_ui=ui,
        verify_every=timedelta(minutes=verify_every),
        signin=signin,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
