"""`ecp submit`, `ecp approve`, `ecp status`: what a team and an approver type."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import asdict
from pathlib import Path

import typer

from ecp._approve import approve as deliver_approval
from ecp._connect import connect
from ecp._settings import load_settings
from ecp._wire import STATUS_QUERY
from ecp.authority._canonical import parse_json_strict
from ecp.authority._initiator import OIDC_PREFIX
from ecp.authority._keys import Ed25519FileSigner, load_private_key
from ecp.authority._truststore import TrustStore
from ecp.authority.errors import AuthorityError
from ecp.cli._common import CliError, one_line_errors
from ecp.workflows._models import GovernedRequest, GovernedResult, TaskQueues
from ecp.workflows._start import start_governed

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the operations commands to the root app."""
    app.command("submit")(submit)
    app.command("approve")(approve)
    app.command("status")(status)


def _parse_args(text: str) -> list[object]:
    try:
        value = parse_json_strict(text)
    except AuthorityError as exc:
        raise CliError(f"--args is not valid JSON: {exc}") from exc
    # One object is the usual single request argument; a list is positional.
    return value if isinstance(value, list) else [value]


@one_line_errors
def submit(
    action: str = typer.Argument(..., help="The governed activity type, e.g. payout."),
    args: str = typer.Option("{}", "--args", help="JSON object (one argument) or list."),
    initiator: str = typer.Option(..., "--initiator", help="Who asks (a policy principal)."),
    purpose: str = typer.Option("", "--purpose", help="Why, recorded with the decision."),
    workflow_id: str = typer.Option("", "--id", help="Workflow id (default: generated)."),
    approval_timeout: float = typer.Option(
        3600.0, "--approval-timeout", help="Seconds to wait for approvals before denying."
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait for the result and print it."),
    key: Path | None = typer.Option(
        None, "--key", help="The initiator's private key: signs the request as its proof."
    ),
    id_token: Path | None = typer.Option(
        None, "--id-token", help="A file holding the initiator's OpenID Connect ID token."
    ),
) -> None:
    """Start a GovernedExecution of ACTION and print its workflow id.

    Without --key or --id-token the initiator is unauthenticated, which only
    deployments that allow it accept.
    """
    settings = load_settings()
    if key is not None and id_token is not None:
        raise CliError("give --key or --id-token, not both")
    proof = ""
    if id_token is not None:
        try:
            proof = OIDC_PREFIX + id_token.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CliError(f"cannot read {id_token}: {exc.strerror}") from exc
    signer = Ed25519FileSigner(load_private_key(key)) if key is not None else None
    request = GovernedRequest(
        action=action,
        args=_parse_args(args),
        initiator=initiator,
        purpose=purpose,
        approval_timeout_seconds=approval_timeout,
        queues=TaskQueues(settings.authority_queue, settings.executor_queue),
        initiator_proof=proof,
    )
    wf_id = workflow_id or f"ecp-{action}-{uuid.uuid4().hex[:10]}"

    async def run() -> GovernedResult | None:
        client = await connect(settings)
        handle = await start_governed(client, request, workflow_id=wf_id, signer=signer)
        typer.echo(handle.id)
        return await handle.result() if wait else None

    result = asyncio.run(run())
    if result is not None:
        doc = asdict(result)
        doc["receipt"] = json.loads(result.receipt)
        typer.echo(json.dumps(doc, indent=2, default=str))
        if result.outcome != "completed":
            raise typer.Exit(2)


@one_line_errors
def approve(
    workflow_id: str = typer.Argument(..., help="The waiting GovernedExecution."),
    key: Path = typer.Option(..., "--key", help="The approver's private key file."),
    comment: str = typer.Option("", "--comment", help="Recorded in the signed approval."),
) -> None:
    """Sign the workflow's pending decision with KEY and deliver the approval.

    The approver's identity is the name the trust store gives this key; the
    workflow's validator rejects a signature it cannot verify.
    """
    settings = load_settings()
    signer = Ed25519FileSigner(load_private_key(key))
    entry = TrustStore.load(settings.trust).get(signer.key_id)
    if entry is None:
        raise CliError(f"{key}: key {signer.key_id} is not in the trust store {settings.trust}")

    async def run() -> str:
        client = await connect(settings)
        ack = await deliver_approval(
            client, workflow_id, signer=signer, approver=entry.name, comment=comment
        )
        return f"approved by {ack.approver}: {ack.approvals} of {ack.required}"

    typer.echo(asyncio.run(run()))


@one_line_errors
def status(workflow_id: str = typer.Argument(..., help="A GovernedExecution id.")) -> None:
    """Print where a governed execution is: step, decision, approvals, grant, receipt."""
    settings = load_settings()

    async def run() -> dict[str, object]:
        client = await connect(settings)
        handle = client.get_workflow_handle(workflow_id)
        st: dict[str, object] = await handle.query(STATUS_QUERY, result_type=dict)
        desc = await handle.describe()
        st["workflow_status"] = desc.status.name if desc.status else None
        return st

    typer.echo(json.dumps(asyncio.run(run()), indent=2))
