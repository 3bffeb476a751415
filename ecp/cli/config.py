"""`ecp config show`: the effective settings, secrets masked."""

from __future__ import annotations

import json

import typer
from pydantic import SecretStr

from ecp._dburl import display_url
from ecp._settings import Settings, env_name, load_settings
from ecp.cli._common import one_line_errors

__all__ = ["app", "effective_settings"]

app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)

MASK = "********"


def effective_settings(settings: Settings) -> dict[str, str | None]:
    """Each setting's environment variable and effective value, secrets masked.

    Derived values (key directory, trust store, policy bundle, database URL)
    are shown as the process will use them.
    """
    out: dict[str, str | None] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            out[env_name(name)] = MASK
        else:
            out[env_name(name)] = None if value is None else str(value)
    out[env_name("keys_dir")] = str(settings.keys)
    out[env_name("trust_store")] = str(settings.trust)
    out[env_name("policy_bundle")] = str(settings.policy)
    # A PostgreSQL URL may carry a password (as user:password@ or ?password=).
    out[env_name("database_url")] = display_url(settings.db_url)
    if settings.halt_database_url is not None:
        out[env_name("halt_database_url")] = display_url(settings.halt_database_url)
    return out


@app.command("show")
@one_line_errors
def show(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Print the effective settings, with secrets masked.

    Order: environment, then ECP_CONFIG_FILE, then defaults. Fails in one line on
    an invalid setting.
    """
    values = effective_settings(load_settings())
    if as_json:
        typer.echo(json.dumps(values, indent=2))
        return
    width = max(len(k) for k in values)
    for key, value in values.items():
        typer.echo(f"{key.ljust(width)}  {'-' if value is None else value}")
