"""`ecp console`: serve the web console."""

from __future__ import annotations

import ipaddress

import typer
from pydantic import ValidationError

from ecp._settings import Settings, SettingsError, env_name, load_settings
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
        None,
        "--oidc-issuer",
        help="Sign visitors in with this OpenID Connect issuer (env ECP_CONSOLE_OIDC_ISSUER).",
    ),
    oidc_client_id: str | None = typer.Option(
        None,
        "--oidc-client-id",
        help="The console's client id at the issuer, required with it "
        "(env ECP_CONSOLE_OIDC_CLIENT_ID).",
    ),
    public_url: str | None = typer.Option(
        None,
        "--public-url",
        help="The console's own base URL as browsers reach it, the redirect URI's base "
        "(env ECP_CONSOLE_PUBLIC_URL; default http://HOST:PORT).",
    ),
    role: list[str] = typer.Option(
        [],
        "--role",
        help="CLAIM_VALUE=viewer|auditor|approver, repeatable (values of --role-claim); "
        "replaces ECP_CONSOLE_ROLES (comma-separated).",
    ),
    role_claim: str | None = typer.Option(
        None,
        "--role-claim",
        help="The claim roles come from (env ECP_CONSOLE_ROLE_CLAIM; default groups).",
    ),
    public_mode: bool = typer.Option(
        False,
        "--public-mode",
        help="Serve signed-out visitors the Proof Viewer and a redacted list; needs sign-in "
        "(env ECP_CONSOLE_PUBLIC_MODE).",
    ),
) -> None:
    """Serve the web console: governance list, proof viewer, lineage and health.

    Sign-in (OpenID Connect, authorization code flow with PKCE) is on when an
    issuer is named, by --oidc-issuer or ECP_CONSOLE_OIDC_ISSUER; options
    override the ECP_CONSOLE_* settings. The client secret comes from
    ECP_CONSOLE_OIDC_CLIENT_SECRET, the session key (hex, 32 bytes or more)
    from ECP_CONSOLE_SESSION_KEY (unset: a random key, sessions end when the
    console restarts), the session length from ECP_CONSOLE_SESSION_SECONDS.
    Half a sign-in configuration (an issuer without a client id or roles, or
    a sign-in setting without an issuer) stops the console before it serves
    anything.
    """
    from datetime import timedelta

    import uvicorn

    from ecp.console import create_app
    from ecp.console.signin import signin_from_settings

    settings = load_settings()
    overrides: dict[str, object] = {}
    if oidc_issuer is not None:
        overrides["console_oidc_issuer"] = oidc_issuer
    if oidc_client_id is not None:
        overrides["console_oidc_client_id"] = oidc_client_id
    if public_url is not None:
        overrides["console_public_url"] = public_url
    if role:
        overrides["console_roles"] = ",".join(role)
    if role_claim is not None:
        overrides["console_role_claim"] = role_claim
    if public_mode:
        overrides["console_public_mode"] = True
    if overrides:
        # Validated like the environment (a bad --role names itself).
        try:
            settings = Settings.model_validate({**settings.model_dump(), **overrides})
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else "option"
            msg = str(err["msg"]).removeprefix("Value error, ")
            raise SettingsError(f"invalid console option ({env_name(field)}): {msg}") from None
    signin = signin_from_settings(settings, default_base_url=f"http://{host}:{port}")
    ui = temporal_ui or default_temporal_ui(settings)
    typer.echo(f"ECP console at http://{host}:{port}/ (Temporal UI: {ui or 'not linked'})")
    if not _loopback(host):
        # Browsers only offer WebCrypto to secure contexts; without sign-in
        # the console shows everything to whoever reaches the port.
        typer.echo(
            "note: serve it behind HTTPS (a reverse proxy) so browsers can verify receipts"
            + ("" if signin else "; without --oidc-issuer it has no sign-in"),
            err=True,
        )
    app = create_app(
        settings,
        temporal_ui=ui,
        verify_every=timedelta(minutes=verify_every),
        signin=signin,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
