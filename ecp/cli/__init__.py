"""The ``ecp`` command line."""

from __future__ import annotations

import os
import sys

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
    from ecp.cli import (
        config,
        console,
        grant,
        halt,
        keys,
        ledger,
        lineage,
        ops,
        policy,
        review,
        run,
        witness,
    )

    app.add_typer(keys.app, name="keys")
    app.add_typer(policy.app, name="policy")
    app.add_typer(grant.app, name="grant")
    app.add_typer(ledger.app, name="ledger")
    app.add_typer(lineage.app, name="lineage")
    app.add_typer(config.app, name="config")
    app.add_typer(witness.app, name="witness")
    app.add_typer(review.app, name="review")
    run.register(app)
    console.register(app)
    ops.register(app)
    halt.register(app)


_register()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    # Leave without interpreter finalisation: the Temporal client's native
    # runtime threads can still be winding down then, and CPython aborts
    # ("PyGILState_Release ... finalizing", exit -6) after the command has
    # already done its work and printed its output. Seen intermittently with
    # `ecp submit --wait`.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
