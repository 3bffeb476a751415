"""GovernedExecution end to end on a real dev server: the four steps, in order."""

from __future__ import annotations

import uuid

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from ecp.activities import examples
from ecp.authority._keys import load_public_key
from ecp.lineage.ledger._evidence import parse_evidence
from ecp.lineage.ledger._receipt import verify_receipt
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest, GovernedResult
from tests.workflows.conftest import Stack


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
    # Every step carries the action's event group, so the UI shows them together.
    scheduled = [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert all(e.event_group_markers for e in scheduled)
    assert {m.label.id for e in scheduled for m in e.event_group_markers} == {"ecp:payout"}


@pytest.mark.parametrize(
    ("action", "args", "initiator", "reason_part"),
    [
        ("launch_missiles", [{"target": "moon"}], "alice", "unknown action 'launch_missiles'"),
        (
            "payout",
            [{"amount": "lots", "currency": "EUR", "recipient": "x"}],
            "alice",
            "arguments do not fit payout",
        ),
        (
            "payout",
            [{"amount": 5, "currency": "EUR", "recipient": "x", "memo": "hi"}],
            "alice",
            "unknown field(s): memo",
        ),
        (
            "payout",
            [{"amount": 5, "currency": "EUR", "recipient": "x"}, 7],
            "alice",
            "payout takes 1 argument(s), got 2",
        ),
        ("payout", [{"amount": 5, "currency": "EUR", "recipient": "x"}], "mallory", "'mallory'"),
    ],
    ids=[
        "unknown-action",
        "malformed-argument",
        "unknown-field",
        "extra-argument",
        "unknown-initiator",
    ],
)
async def test_bad_requests_are_denied_with_a_reason_and_proven(
    stack: Stack, action: str, args: list[object], initiator: str, reason_part: str
) -> None:
    wf_id = f"bad-{uuid.uuid4().hex[:8]}"
    result: GovernedResult = await stack.client.execute_workflow(
        GovernedExecution.run,
        GovernedRequest(action=action, args=args, initiator=initiator, queues=stack.queues),
        id=wf_id,
        task_queue=stack.queues.executor,
    )
    assert result.decision == "deny"
    assert result.outcome == "denied"
    assert reason_part in result.reason
    assert "\n" not in result.reason
    assert [e for e in examples.EXECUTIONS if e[1] == wf_id] == []
    receipt = verify_receipt(
        result.receipt, load_public_key(stack.keys.log), origin=stack.settings.log_origin
    )
    evidence = parse_evidence(receipt.entry)
    assert evidence.predicate.outcome.status.value == "denied"
    assert evidence.predicate.activity.workflow_id == wf_id
