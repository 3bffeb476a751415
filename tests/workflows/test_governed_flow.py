"""GovernedExecution end to end on a real dev server: the four steps, in order."""

from __future__ import annotations

import uuid

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from activities import examples
from authority.keys import load_public_key
from lineage.receipt import verify_receipt
from tests.workflows.conftest import Stack
from workflows.governed import GovernedExecution
from workflows.models import GovernedRequest, GovernedResult


def _activity_types(history: WorkflowHistory) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


async def test_small_payout_runs_as_four_steps_and_is_proven(stack: Stack) -> None:
    wf_id = f"payout-{uuid.uuid4().hex[:8]}"
    before = len(examples.EXECUTIONS)
    handle = await stack.client.start_workflow(
        GovernedExecution.run,
        GovernedRequest(
            action="payout",
            args=[{"amount": 250, "currency": "EUR", "recipient": "acme"}],
            initiator="alice",
            purpose="invoice 42",
            queues=stack.queues,
        ),
        id=wf_id,
        task_queue=stack.queues.executor,
    )
    result: GovernedResult = await handle.result()
    assert result.decision == "allow"
    assert result.outcome == "completed", result.reason
    assert result.grant_id
    assert examples.EXECUTIONS[before:] == [
        ("payout", wf_id, {"amount": 250, "currency": "EUR", "recipient": "acme"})
    ]
    history = await handle.fetch_history()
    assert _activity_types(history) == [
        "ecp.prepare",
        "ecp.evaluate",
        "ecp.authorize",
        "payout",
        "ecp.prove",
    ]
    receipt = verify_receipt(
        result.receipt, load_public_key(stack.keys.log), origin=stack.settings.log_origin
    )
    assert receipt.log_index == result.ledger_index
