"""`ecp witness`: run a C2SP tlog-witness that cosigns the log's consistent checkpoints."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated

import typer

from ecp._paths import data_dir
from ecp.cli._common import one_line_errors

__all__ = ["app"]

app = typer.Typer(
    help="A witness: its own key and state; cosigns a log's checkpoints only when each "
    "extends the last one it cosigned (C2SP tlog-witness, tlog-cosignature).",
    no_args_is_help=True,
)

_STATE_HELP = (
    "The witness's directory: key and state (default: $ECP_WITNESS_DIR, else <data dir>/witness)."
)


def _dir(path: Path | None) -> Path:
    return path or Path(os.environ.get("ECP_WITNESS_DIR") or data_dir() / "witness")


@app.command("init")
@one_line_errors
def init(
    name: Annotated[
        str, typer.Option("--name", help="The witness's key name, e.g. witness.example/w1.")
    ],
    state: Annotated[Path | None, typer.Option("--state", help=_STATE_HELP)] = None,
) -> None:
    """Create a witness: a new Ed25519 key and an empty state. Prints its verifier key."""
    from ecp.lineage.witness._state import WitnessState

    ws = WitnessState.init(_dir(state), name)
    typer.echo(ws.verifier.vkey())


@app.command("add-log")
@one_line_errors
def add_log(
    log_vkey: Annotated[
        str, typer.Argument(help="The log's verifier key, as `ecp ledger key` prints it.")
    ],
    state: Annotated[Path | None, typer.Option("--state", help=_STATE_HELP)] = None,
) -> None:
    """Accept checkpoints of a log (its origin is the key's name)."""
    from ecp.lineage.witness._state import WitnessState

    v = WitnessState(_dir(state)).add_log(log_vkey)
    typer.echo(f"ok: witnessing {v.name}")


@app.command("key")
@one_line_errors
def key(state: Annotated[Path | None, typer.Option("--state", help=_STATE_HELP)] = None) -> None:
    """Print the witness's cosignature/v1 verifier key (give it to verifiers and the log)."""
    from ecp.lineage.witness._state import WitnessState

    typer.echo(WitnessState(_dir(state)).verifier.vkey())


@app.command("status")
@one_line_errors
def status(
    state: Annotated[Path | None, typer.Option("--state", help=_STATE_HELP)] = None,
) -> None:
    """Print each log's latest cosigned size and when."""
    from ecp.lineage.witness._state import WitnessState

    ws = WitnessState(_dir(state))
    typer.echo(f"witness {ws.name}")
    heads = {h.origin: h for h in ws.heads()}
    for origin in ws.logs():
        h = heads.get(origin)
        typer.echo(
            f"  {origin}: "
            + (f"size {h.size}, cosigned at {h.updated_at}" if h else "nothing cosigned yet")
        )


@app.command("serve")
@one_line_errors
def serve(
    state: Annotated[Path | None, typer.Option("--state", help=_STATE_HELP)] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port.")] = 7380,
    prefix: Annotated[
        str, typer.Option("--prefix", help="Submission prefix path (e.g. /witness).")
    ] = "",
) -> None:
    """Serve POST <prefix>/add-checkpoint (and GET <prefix>/status) until interrupted."""
    import logging

    from ecp.lineage.witness._server import WitnessServer
    from ecp.lineage.witness._state import WitnessState
    from ecp.lineage.witness._witness import Witness

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    witness = Witness(WitnessState(_dir(state)))
    with WitnessServer((host, port), witness, prefix) as server:
        # One line tests and scripts can wait for (the port may have been 0).
        typer.echo(f"listening on {server.url}", err=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
