"""`ecp policy` commands: validate bundles and evaluate requests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from ecp.authority._policy import PolicyBundle, PolicyRequest
from ecp.cli._authority_io import read_json_object
from ecp.cli._common import CliError, one_line_errors

__all__ = ["app"]

app = typer.Typer(
    help="Validate Cedar policy bundles and evaluate requests against them.",
    no_args_is_help=True,
)

_BUNDLE_HELP = "Bundle directory: policies.cedar, schema.cedarschema(.json), entities.json."
_Bundle = Annotated[Path, typer.Argument(help=_BUNDLE_HELP)]


@app.command("validate")
@one_line_errors
def validate(bundle: _Bundle) -> None:
    """Parse a bundle and type-check its policies against its schema."""
    b = PolicyBundle.load(bundle)
    b.validate()
    typer.echo(f"ok: {bundle} policies={len(b.policy_ids)} digest={b.digest}")


@app.command("eval")
@one_line_errors
def evaluate(
    bundle: _Bundle,
    request: Annotated[
        Path,
        typer.Option(
            "--request", help="JSON file: {action, initiator, arguments, purpose, environment}."
        ),
    ],
) -> None:
    """Evaluate a request and print the decision as canonical JSON.

    Exit 0 whenever a decision was made, whatever its effect; read ``effect``.
    """
    b = PolicyBundle.load(bundle)
    doc = read_json_object(request, "request")
    try:
        req = PolicyRequest.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise CliError(f"{request}: request field {where}: {first['msg']}") from exc
    typer.echo(b.evaluate(req).to_json().decode())
