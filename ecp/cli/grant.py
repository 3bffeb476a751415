"""`ecp grant` commands: verify a grant offline against a trust store and a call."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ecp.authority._clock import FixedClock, system_clock
from ecp.authority._replay import InMemoryReplayGuard, ReplayGuard, SqlReplayGuard
from ecp.authority._truststore import TrustStore
from ecp.authority._verify import ExpectedCall, verify_grant
from ecp.cli._authority_io import read_bytes, read_json_object
from ecp.cli._common import CliError, one_line_errors

__all__ = ["app"]

app = typer.Typer(help="Verify grants.", no_args_is_help=True)


class _CallFile(BaseModel):
    """The ``--call`` file: what the gate would observe about the call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    activity_type: str
    args_digest: str
    namespace: str
    workflow_id: str
    run_id: str
    activity_id: str
    environment_digest: str
    attempt: int = Field(default=1, ge=1)
    initiator: str | None = None
    policy_digest: str | None = None
    decision_id: str | None = None
    accepted_policy_digests: list[str] | None = None


def _parse_at(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CliError(f"--at {text!r} is not an RFC 3339 time") from exc
    if when.tzinfo is None:
        raise CliError("--at needs a time zone, e.g. 2030-01-01T12:00:00Z")
    return when


@app.command("verify")
@one_line_errors
def verify(
    file: Annotated[Path, typer.Argument(help="Grant envelope (DSSE JSON).")],
    trust: Annotated[
        Path,
        typer.Option(
            "--trust", help="Trust store: a directory holding truststore.json, or the file."
        ),
    ],
    call: Annotated[
        Path,
        typer.Option(
            "--call",
            help=(
                "JSON file describing the actual call: activity_type, args_digest, namespace, "
                "workflow_id, run_id, activity_id, environment_digest, attempt (default 1); "
                "optional initiator, policy_digest, decision_id, accepted_policy_digests."
            ),
        ),
    ],
    at: Annotated[
        str | None,
        typer.Option("--at", help="Verify as of this RFC 3339 time (with zone) instead of now."),
    ] = None,
    replay_db: Annotated[
        str | None,
        typer.Option(
            "--replay-db",
            help=(
                "Database URL of the single-use store to consume the grant in. Without it "
                "the grant is checked but not consumed (single use is not established)."
            ),
        ),
    ] = None,
) -> None:
    """Verify a grant for a call: exit 0 with a one-line summary, else one error line."""
    store = TrustStore.load(trust)
    doc = read_json_object(call, "call file")
    try:
        spec = _CallFile.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise CliError(f"{call}: call field {where}: {first['msg']}") from exc
    expected = ExpectedCall(
        **spec.model_dump(exclude={"accepted_policy_digests"}),
        accepted_policy_digests=(
            None
            if spec.accepted_policy_digests is None
            else frozenset(spec.accepted_policy_digests)
        ),
    )
    clock = FixedClock(_parse_at(at)) if at is not None else system_clock
    guard: ReplayGuard = SqlReplayGuard(replay_db) if replay_db else InMemoryReplayGuard()
    envelope = read_bytes(file, "grant")
    vg = verify_grant(envelope, trust=store, expected=expected, clock=clock, replay=guard)
    g = vg.grant
    single_use = "consumed in --replay-db" if replay_db else "not consumed (no --replay-db)"
    typer.echo(
        f"valid: grant {g.grant_id} for {g.call.activity_type} in "
        f"{g.call.namespace}/{g.call.workflow_id}/{g.call.run_id}/{g.call.activity_id} "
        f"initiator={g.initiator} attempt={spec.attempt}/{g.scope.max_attempts} "
        f"issuer={vg.key.key_id} expires={g.expires_at.isoformat()} single-use: {single_use}"
    )
