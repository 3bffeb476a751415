"""`ecp submit`, `ecp approve`, `ecp status`: what a team and an approver type."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

import typer
from temporalio.api.common.v1 import Payloads
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.service import RPCError

from ecp._approve import approve as deliver_approval
from ecp._connect import connect
from ecp._settings import load_settings
from ecp._wire import (
    ACTIVITY_AUTHORIZE,
    ACTIVITY_EVALUATE,
    ACTIVITY_PROVE,
    APPROVE_UPDATE,
    EXECUTE_ACTIVITY_ID_PREFIX,
    STATUS_QUERY,
)
from ecp.authority._canonical import parse_json_strict
from ecp.authority._initiator import OIDC_PREFIX
from ecp.authority._keys import Ed25519FileSigner, load_private_key
from ecp.authority._truststore import TrustStore
from ecp.authority.errors import AuthorityError
from ecp.cli._common import CliError, one_line_errors
from ecp.workflows._models import GovernedRequest, GovernedResult, TaskQueues
from ecp.workflows._start import start_governed

__all__ = ["register"]

T = TypeVar("T")
#: The workflow type `ecp status` reports on.
GOVERNED_WORKFLOW = "GovernedExecution"


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


def _parse_artifacts(specs: list[str], attestations: list[str]) -> list[object]:
    """``NAME=PATH`` (a file or directory, digested now) or ``NAME=oci:REF@sha256:...``."""
    from ecp.authority._artifact import describe_directory, describe_file, describe_image

    out: dict[str, dict[str, object]] = {}
    atts: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, where = spec.partition("=")
        if not sep or not name or not where:
            raise CliError(f"--artifact {spec!r}: give NAME=PATH or NAME=oci:REPO@sha256:<hex>")
        if where.startswith("oci:"):
            ref = describe_image(name, where.removeprefix("oci:"))
        elif Path(where).is_dir():
            ref = describe_directory(name, where)
        else:
            ref = describe_file(name, where)
        out[name] = dict(ref.model_dump(mode="json"))
    for spec in attestations:
        name, sep, file = spec.partition("=")
        if name not in out or not sep:
            raise CliError(f"--attestation {spec!r}: give NAME=FILE for an --artifact NAME")
        try:
            envelope = Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CliError(f"cannot read {file}: {exc.strerror}") from exc
        atts.setdefault(name, []).append(envelope)
    return [{**doc, "attestations": atts[n]} if n in atts else doc for n, doc in out.items()]


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
    artifact: list[str] = typer.Option(
        [],
        "--artifact",
        help="An artifact the action uses: NAME=PATH (file or directory, digested now) "
        "or NAME=oci:REGISTRY/REPO@sha256:<hex>. Repeatable.",
    ),
    attestation: list[str] = typer.Option(
        [],
        "--attestation",
        help="NAME=FILE: a DSSE in-toto attestation (JSON) about artifact NAME. Repeatable.",
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
        artifacts=_parse_artifacts(artifact, attestation),
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


async def _decode(
    client: Client, payloads: Payloads, type_hint: type[T], what: str, workflow_id: str
) -> T | None:
    """The first value of ``payloads`` as ``type_hint`` (``None`` when empty)."""
    if not payloads.payloads:
        return None
    try:
        values = await client.data_converter.decode(payloads.payloads, [type_hint])
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise CliError(f"cannot decode {what} in the history of {workflow_id}: {exc}") from exc
    value = values[0]
    if not isinstance(value, type_hint):
        raise CliError(f"{what} in the history of {workflow_id} is not a {type_hint.__name__}")
    return value


async def _status_from_history(client: Client, workflow_id: str, run_id: str) -> dict[str, object]:
    """What the ``ecp.status`` query would answer, read from the run's history.

    For executions no worker serves any more: the GovernedResult (when the
    run completed), and the results of ``ecp.evaluate`` (the decision),
    ``ecp.authorize`` (the grant), ``ecp.prove`` (the ledger index) and of
    the accepted approval updates.
    """
    from ecp.activities._contracts import DecisionResult, GrantResult, ProveInput, ProveResult
    from ecp.workflows._models import ApprovalAck

    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    history = await handle.fetch_history()
    scheduled: dict[int, str] = {}
    started: set[str] = set()
    approve_updates: set[int] = set()
    approvers: set[str] = set()
    decision: DecisionResult | None = None
    grant: GrantResult | None = None
    proven: ProveResult | None = None
    prove_input: ProveInput | None = None
    final: GovernedResult | None = None
    for ev in history.events:
        kind = ev.WhichOneof("attributes")
        if kind == "activity_task_scheduled_event_attributes":
            sa = ev.activity_task_scheduled_event_attributes
            name = sa.activity_type.name
            if sa.activity_id.startswith(EXECUTE_ACTIVITY_ID_PREFIX):
                name = "execute"
            scheduled[ev.event_id] = name
            started.add(name)
            if name == ACTIVITY_PROVE:
                prove_input = await _decode(
                    client, sa.input, ProveInput, "the ecp.prove input", workflow_id
                )
        elif kind == "activity_task_completed_event_attributes":
            ca = ev.activity_task_completed_event_attributes
            name = scheduled.get(ca.scheduled_event_id, "")
            what = f"the {name} result"
            if name == ACTIVITY_EVALUATE:
                decision = await _decode(client, ca.result, DecisionResult, what, workflow_id)
            elif name == ACTIVITY_AUTHORIZE:
                grant = await _decode(client, ca.result, GrantResult, what, workflow_id)
            elif name == ACTIVITY_PROVE:
                proven = await _decode(client, ca.result, ProveResult, what, workflow_id)
        elif kind == "workflow_execution_update_accepted_event_attributes":
            ua = ev.workflow_execution_update_accepted_event_attributes
            if ua.accepted_request.input.name == APPROVE_UPDATE:
                approve_updates.add(ev.event_id)
        elif kind == "workflow_execution_update_completed_event_attributes":
            uc = ev.workflow_execution_update_completed_event_attributes
            if uc.accepted_event_id in approve_updates and uc.outcome.HasField("success"):
                ack = await _decode(
                    client, uc.outcome.success, ApprovalAck, "an approval", workflow_id
                )
                if ack is not None:
                    approvers.add(ack.approver)
        elif kind == "workflow_execution_completed_event_attributes":
            final = await _decode(
                client,
                ev.workflow_execution_completed_event_attributes.result,
                GovernedResult,
                "the result",
                workflow_id,
            )
    # The step the workflow had reached, as GovernedExecution sets it.
    if final is not None or proven is not None:
        step = "done"
    elif ACTIVITY_PROVE in started:
        step = "prove"
    elif "execute" in started:
        step = "execute"
    elif ACTIVITY_AUTHORIZE in started:
        step = "authorize"
    elif decision is not None and decision.effect == "allow_after_approval":
        step = "approve"
    else:
        step = "verify"
    effect: str | None = decision.effect if decision else None
    decision_id: str | None = decision.decision_id if decision else None
    reasons: list[str] = list(decision.reasons) if decision else []
    if final is not None:
        effect, decision_id, reasons = final.decision, final.decision_id, list(final.reasons)
    elif decision is None and prove_input is not None:
        # Refused before any policy decision (the executor could not prepare
        # the call, or the authority refused the request): an empty denial.
        effect, decision_id, reasons = "deny", prove_input.decision_id, [prove_input.reason]
    if final is not None:
        outcome: str | None = final.outcome
        ledger_index: int | None = final.ledger_index
    else:
        outcome = prove_input.outcome if prove_input else None
        ledger_index = proven.index if proven else None
    return {
        "step": step,
        "decision": effect,
        "decision_id": decision_id,
        "reasons": reasons,
        "approvals": sorted(approvers),
        "approvals_required": decision.approvals_required if decision else 0,
        "grant_id": grant.grant_id if grant else None,
        "grant_expires_at": grant.expires_at if grant else None,
        "outcome": outcome or None,
        "ledger_index": ledger_index,
    }


@one_line_errors
def status(workflow_id: str = typer.Argument(..., help="A GovernedExecution id.")) -> None:
    """Print where a governed execution is: step, decision, approvals, grant, receipt.

    A running execution answers the live ecp.status query (a worker must serve
    it); a closed one is read from its history, so it answers after the
    workers are gone.
    """
    settings = load_settings()

    async def run() -> dict[str, object]:
        client = await connect(settings)
        handle = client.get_workflow_handle(workflow_id)
        desc = await handle.describe()
        if desc.workflow_type != GOVERNED_WORKFLOW:
            raise CliError(f"{workflow_id} is a {desc.workflow_type}, not a {GOVERNED_WORKFLOW}")
        st: dict[str, object] | None = None
        if desc.status is WorkflowExecutionStatus.RUNNING:
            try:
                st = await handle.query(STATUS_QUERY, result_type=dict)
            except (RPCError, WorkflowQueryFailedError):
                # Closed meanwhile? Then the history answers; else the failure stands.
                desc = await handle.describe()
                if desc.status is WorkflowExecutionStatus.RUNNING:
                    raise
        if st is None:
            st = await _status_from_history(client, workflow_id, desc.run_id)
        st["workflow_status"] = desc.status.name if desc.status else None
        return st

    typer.echo(json.dumps(asyncio.run(run()), indent=2))
