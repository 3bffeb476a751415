"""`ecp console`: serve the read-only web console."""

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
) -> None:
    """Serve the read-only web console: governance list, proof viewer and health."""
    from datetime import timedelta

    import uvicorn

    from ecp.console import create_app

    settings = load_settings()
    ui = temporal_ui or default_temporal_ui(settings)
    typer.echo(f"ECP console at http://{host}:{port}/ (Temporal UI: {ui or 'not linked'})")
    if not _loopback(host):
        # Browsers only offer WebCrypto to secure contexts, and the console has
        # no login: beyond loopback it belongs behind a TLS proxy with auth.
        typer.echo(
            "note: serve it behind HTTPS (a reverse proxy) so browsers can verify receipts; "
            "the console has no authentication of its own",
            err=True,
        )
    app = create_app(settings, temporal_ui=ui, verify_every=timedelta(minutes=verify_every))
    uvicorn.run(app, host=host, port=port, log_level="warning")
