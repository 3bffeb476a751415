"""The ``ecp`` command line."""

from __future__ import annotations

import typer

from ecp.cli._common import DEBUG

__all__ = ["app", "main"]

app = typer.Typer(
    name="ecp",
    help="ECP, the Execution Control Plane for Temporal: verify → authorize → execute → prove.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    DEBUG["on"] = debug


def _register() -> None:
    # Each area owns its module; they are added here and nowhere else.
    from ecp.cli import grant, keys, ledger, ops, policy, run

    app.add_typer(keys.app, name="keys")
    app.add_typer(policy.app, name="policy")
    app.add_typer(grant.app, name="grant")
    app.add_typer(ledger.app, name="ledger")
    run.register(app)
    ops.register(app)


_register()


def main() -> None:
    """Console-script entry point."""
    app()
