"""`ecp halt`, `ecp resume`, `ecp revoke-grant`, `ecp halts`: the kill switch.

Each command signs one control statement with a key holding the ``halt``
role and appends it to the control log in the deployment's database, where
every gate reads it within its refresh interval (``ECP_HALT_REFRESH_SECONDS``).
A resume holds for the next governed call: a gate refuses a call as halted
only once a read of the log begun after the call came still shows the halt
(a gate that cannot read the log then refuses retryably, as an outage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ecp._keyring import KeyFiles
from ecp._settings import load_settings
from ecp.authority._clock import system_clock
from ecp.authority._control import ALL_ACTIONS, ControlKind, ControlState, fold
from ecp.authority._control_log import SqlControlLog, issue_control
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._truststore import TrustStore
from ecp.cli._common import CliError, one_line_errors

__all__ = ["register"]

_KeyOpt = Annotated[
    Path | None,
    typer.Option("--key", help="Private key with the halt role (default: KEYS_DIR/halt.key)."),
]
_DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL of the control log (default: ECP_HALT_DATABASE_URL, "
        "else ECP_DATABASE_URL).",
    ),
]


def register(app: typer.Typer) -> None:
    """Add the kill-switch commands to the root app."""
    app.command("halt")(halt)
    app.command("resume")(resume)
    app.command("revoke-grant")(revoke_grant)
    app.command("halts")(halts)


def _target(action: str | None, every: bool, verb: str) -> str:
    if every == (action is not None):
        raise CliError(f"name one action to {verb}, or --all (not both)")
    if action == ALL_ACTIONS:
        raise CliError(f"'*' is not an action name; use --all to {verb} every action")
    return ALL_ACTIONS if every else str(action)


def _issue(kind: ControlKind, target: str, reason: str, key: Path | None, db: str | None) -> None:
    settings = load_settings()
    signer = Ed25519FileSigner.from_file(key or KeyFiles(settings.keys).halt)
    log = SqlControlLog(db or settings.halt_db_url)
    try:
        row, state = issue_control(
            log,
            signer,
            TrustStore.load(settings.trust),
            kind=kind,
            target=target,
            reason=reason,
        )
    finally:
        log.dispose()
    typer.echo(f"{kind} {target}: control statement #{row.seq}, signed by {signer.key_id}")
    # A resume is confirmed by the gate before it refuses anything as halted
    # (see ecp.activities._control_watch); halts and revocations wait for
    # the gate's next read.
    when = (
        "for the next governed call (once they can read the halt list)"
        if kind == "resume"
        else f"within {settings.halt_refresh_seconds:g} s"
    )
    typer.echo(
        f"gates apply it {when}; "
        f"{len(state.halts)} halt(s) and {len(state.revoked)} revocation(s) now in force"
    )


@one_line_errors
def halt(
    action: Annotated[str | None, typer.Argument(help="Governed action to halt.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Halt every governed action.")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why (shown in every denial).")] = (
        "halted by an operator"
    ),
    key: _KeyOpt = None,
    db: _DbOpt = None,
) -> None:
    """Stop new executions of ACTION (or of every action, --all) and interrupt running ones.

    Running bodies that heartbeat are interrupted at their next heartbeat;
    new ones are denied (ecp.halted) until `ecp resume`.
    """
    _issue("halt", _target(action, every, "halt"), reason, key, db)


@one_line_errors
def resume(
    action: Annotated[str | None, typer.Argument(help="Action whose halt to lift.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Lift every halt.")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why.")] = "resumed by an operator",
    key: _KeyOpt = None,
    db: _DbOpt = None,
) -> None:
    """Lift the halt of ACTION (an `ecp halt --all` stays), or every halt with --all."""
    _issue("resume", _target(action, every, "resume"), reason, key, db)


@one_line_errors
def revoke_grant(
    grant_id: Annotated[str, typer.Argument(help="Grant (or scope) id to revoke.")],
    reason: Annotated[str, typer.Option("--reason", help="Why.")] = "revoked by an operator",
    key: _KeyOpt = None,
    db: _DbOpt = None,
) -> None:
    """Revoke one grant for good: its body is refused, or interrupted if running."""
    _issue("revoke_grant", grant_id, reason, key, db)


def _show(state: ControlState) -> None:
    if not state.halts and not state.revoked:
        typer.echo("no halts or revocations in force")
    for target, eff in sorted(state.halts.items()):
        what = "every action" if target == ALL_ACTIONS else target
        typer.echo(f"halted   {what}: {eff.reason} — {eff.describe()}")
    for target, eff in sorted(state.revoked.items()):
        typer.echo(f"revoked  grant {target}: {eff.reason} — {eff.describe()}")
    for seq, why in state.ignored:
        typer.echo(f"ignored  #{seq}: {why}")


@one_line_errors
def halts(db: _DbOpt = None) -> None:
    """Verify the control log and list the halts and grant revocations in force."""
    settings = load_settings()
    log = SqlControlLog(db or settings.halt_db_url)
    try:
        rows = log.rows()
    finally:
        log.dispose()
    state = fold(rows, TrustStore.load(settings.trust), at=system_clock())
    typer.echo(f"control log: {state.head_seq} statement(s), chain verified")
    _show(state)
