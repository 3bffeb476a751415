"""Signing and delivering an approval to a waiting ``GovernedExecution``."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client

from ecp._wire import APPROVE_UPDATE, DECISION_QUERY
from ecp.activities._contracts import DecisionResult
from ecp.authority._approval import execution_ref, sign_approval
from ecp.authority._clock import system_clock
from ecp.authority._keys import Signer
from ecp.authority._policy import Decision
from ecp.errors import EcpError
from ecp.workflows._models import ApprovalAck

__all__ = ["NotAwaitingApprovalError", "approve"]


class NotAwaitingApprovalError(EcpError):
    """The workflow has no decision that asks for approval."""

    code = "not_awaiting_approval"


async def approve(
    client: Client,
    workflow_id: str,
    *,
    signer: Signer,
    approver: str,
    ttl: timedelta = timedelta(minutes=30),
    comment: str = "",
) -> ApprovalAck:
    """Sign an approval of the workflow's decision and deliver it by update.

    The update's validator checks the signature before anything reaches
    history; a rejection surfaces as ``WorkflowUpdateFailedError``.

    Raises:
        NotAwaitingApprovalError: the decision asks for no approval (yet).
    """
    handle = client.get_workflow_handle(workflow_id)
    decision: DecisionResult | None = await handle.query(DECISION_QUERY, result_type=DecisionResult)
    if decision is None or decision.effect != "allow_after_approval":
        raise NotAwaitingApprovalError(f"workflow {workflow_id} is not waiting for an approval")
    desc = await handle.describe()
    envelope = sign_approval(
        Decision.from_json(decision.decision_json),
        execution=execution_ref(client.namespace, workflow_id, desc.run_id or ""),
        approver=approver,
        signer=signer,
        clock=system_clock,
        ttl=ttl,
        comment=comment,
    )
    ack: ApprovalAck = await handle.execute_update(
        APPROVE_UPDATE, envelope.to_json().decode(), result_type=ApprovalAck
    )
    return ack
