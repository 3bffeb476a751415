"""One body per governed request, from the position of whoever may start or reset workflows.

A Temporal reset of a finished run to before authorize asks the authority
again and gets a fresh, valid grant; so does a re-submission under the same
workflow id. Neither may run the body a second time.
"""

from __future__ import annotations

import uuid

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest

from ecp.activities import examples
from ecp.lineage.ledger._evidence import parse_evidence
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest, GovernedResult
from tests.workflows.conftest import Stack

ARGS: list[object] = [{"amount": 250, "currency": "EUR", "recipient": "acme"}]


def _request(stack: Stack) -> GovernedRequest:
    return GovernedRequest(action="payout", args=ARGS, initiator="alice", queues=stack.queues)


async def _payout(stack: Stack, wf_id: str) -> GovernedResult:
    return await stack.client.execute_workflow(
        GovernedExecution.run, _request(stack), id=wf_id, task_queue=stack.queues.executor
    )


def _ran(wf_id: str) -> int:
    return sum(1 for e in examples.EXECUTIONS if e[1] == wf_id)


def _denials(stack: Stack, wf_id: str) -> list[str]:
    out = []
    for i in range(stack.ledger.head().size):
        p = parse_evidence(stack.ledger.entry(i).envelope).predicate
        if p.activity.workflow_id == wf_id and p.outcome.status.value == "denied":
            out.append(p.outcome.reason_code)
    return out


async def test_a_reset_to_before_authorize_cannot_run_the_body_again(stack: Stack) -> None:
    wf_id = f"reset-{uuid.uuid4().hex[:8]}"
    first = await _payout(stack, wf_id)
    assert first.outcome == "completed", first.reason
    handle = stack.client.get_workflow_handle(wf_id)
    history = await handle.fetch_history()
    run_id = history.run_id
    # The first workflow task: before prepare, evaluate and authorize.
    first_task = next(
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    )
    reset = await stack.client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=stack.client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=wf_id, run_id=run_id),
            reason="attacker: pay again",
            workflow_task_finish_event_id=first_task,
            request_id=str(uuid.uuid4()),
        )
    )
    again: GovernedResult = await stack.client.get_workflow_handle(
        wf_id, run_id=reset.run_id, result_type=GovernedResult
    ).result()
    # A new grant was issued for the new run, and refused at the gate.
    assert again.grant_id
    assert again.grant_id != first.grant_id
    assert again.outcome == "denied", again.reason
    assert "already ran" in again.reason
    assert _ran(wf_id) == 1
    assert "request_replayed" in _denials(stack, wf_id)


async def test_a_resubmission_under_the_same_workflow_id_cannot_run_it_again(
    stack: Stack,
) -> None:
    wf_id = f"again-{uuid.uuid4().hex[:8]}"
    assert (await _payout(stack, wf_id)).outcome == "completed"
    second = await _payout(stack, wf_id)
    assert second.outcome == "denied", second.reason
    assert "already ran" in second.reason
    assert _ran(wf_id) == 1
