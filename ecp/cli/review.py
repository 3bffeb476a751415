"""`ecp review list`, `ecp review ack`, `ecp review scan`: unknown outcomes a person checks.

The same list the console's Health page shows under "outcomes to review"
(see :mod:`ecp.console.review_index`): every unknown outcome the gate
recorded stays listed until someone acknowledges it with a signed statement
(a key holding the ``approver`` role), after checking the side effect.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from ecp._keyring import KeyFiles
from ecp._settings import load_settings
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._truststore import TrustStore
from ecp.cli._common import CliError, one_line_errors
from ecp.console.review import unknown_outcomes
from ecp.console.review_index import REVIEW_SCAN_BUDGET, ReviewIndex, sign_acknowledgement
from ecp.lineage.ledger._ledger import Ledger

__all__ = ["app"]

app = typer.Typer(
    help="Unknown outcomes (a body may have run, nobody saw it end): list and acknowledge.",
    no_args_is_help=True,
)

_DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="Ledger and index database URL (default: ECP_DATABASE_URL)."),
]


@app.command("list")
@one_line_errors
def list_(
    db: _DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    acknowledged: Annotated[
        bool, typer.Option("--acknowledged", help="Also list acknowledged outcomes.")
    ] = False,
) -> None:
    """Scan the ledger on from where the last scan stopped, then list the unknown outcomes."""
    settings = load_settings()
    url = db or settings.db_url
    trust = TrustStore.load(settings.trust)
    index = ReviewIndex(url)
    try:
        with Ledger.open(url, create=False) as ledger:
            found = unknown_outcomes(ledger, trust, index)
            # A command line may take its time: read the rest of the ledger too.
            while not found.complete:
                found = unknown_outcomes(ledger, trust, index)
    finally:
        index.dispose()
    if as_json:
        doc = {
            "pending": [u.to_dict() for u in found.pending],
            "acknowledged": [
                {**u.to_dict(), "acknowledgedBy": a.by, "acknowledgedAt": a.at, "note": a.note}
                for u, a in found.acknowledged
            ]
            if acknowledged
            else [],
        }
        typer.echo(json.dumps(doc, sort_keys=True))
        return
    if not found.pending:
        typer.echo("no unacknowledged unknown outcomes")
    for u in found.pending:
        earlier = ", ".join(f"attempt {a} {s}" for a, s in u.earlier) or "none"
        typer.echo(
            f"#{u.ledger_index} {u.workflow_id} {u.activity_type} ({u.activity_id}) "
            f"grant {u.grant_id}: {u.reason} [earlier records: {earlier}]"
        )
    if acknowledged:
        for u, a in found.acknowledged:
            typer.echo(
                f"#{u.ledger_index} {u.workflow_id}: acknowledged by {a.by} at {a.at}: {a.note}"
            )


@app.command("ack")
@one_line_errors
def ack(
    ledger_index: Annotated[
        int, typer.Argument(metavar="LEDGER_INDEX", help="The unknown outcome's ledger index.")
    ],
    note: Annotated[str, typer.Option("--note", help="What you checked, and what you found.")],
    key: Annotated[
        Path | None,
        typer.Option("--key", help="Approver-role private key (default: KEYS_DIR/approver.key)."),
    ] = None,
    db: _DbOpt = None,
) -> None:
    """Acknowledge an unknown outcome (signed): it leaves the list of outcomes to review."""
    if not note.strip():
        raise CliError("--note must say what you checked")
    settings = load_settings()
    url = db or settings.db_url
    trust = TrustStore.load(settings.trust)
    signer = Ed25519FileSigner.from_file(key or KeyFiles(settings.keys).approver)
    index = ReviewIndex(url)
    try:
        with Ledger.open(url, create=False) as ledger:
            found = unknown_outcomes(ledger, trust, index)
            while not found.complete:
                found = unknown_outcomes(ledger, trust, index)
            if all(u.ledger_index != ledger_index for u in found.pending):
                raise CliError(f"#{ledger_index} is not an unacknowledged unknown outcome")
            entry = ledger.entry(ledger_index)
        envelope = sign_acknowledgement(
            signer,
            ledger_index=ledger_index,
            evidence_id=entry.evidence_id,
            note=note,
            at=datetime.now(UTC),
        )
        done = index.acknowledge(envelope, trust)
    finally:
        index.dispose()
    typer.echo(f"#{ledger_index} acknowledged by {done.by} (key {done.key_id}) at {done.at}")


@app.command("scan")
@one_line_errors
def scan(
    db: _DbOpt = None,
    rescan: Annotated[
        bool,
        typer.Option("--rescan", help="Rebuild the index from the ledger's first entry."),
    ] = False,
) -> None:
    """Read the whole ledger into the review index (the console reads a budget per check)."""
    settings = load_settings()
    url = db or settings.db_url
    trust = TrustStore.load(settings.trust)
    index = ReviewIndex(url)
    try:
        if rescan:
            index.rescan()
        with Ledger.open(url, create=False) as ledger:
            while True:
                state = index.scan(ledger, trust, budget=REVIEW_SCAN_BUDGET)
                if state.complete:
                    break
    finally:
        index.dispose()
    typer.echo(f"scanned {state.next_index} of {state.size} entries")
