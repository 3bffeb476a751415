"""Approvals: delivered by update, checked by its validator before history."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError

from ecp._approve import approve
from ecp._keyring import DEMO_APPROVER
from ecp.activities import examples
from ecp.authority._approval import execution_ref, sign_approval
from ecp.authority._clock import system_clock
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._policy import Decision
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest, GovernedResult
from tests.workflows.conftest import Stack

LARGE = [{"amount": 5000, "currency": "EUR", "recipient": "globex"}]


async def _start_large(
    stack: Stack, timeout: float = 3600.0
) -> WorkflowHandle[GovernedExecution, GovernedResult]:
    handle = await stack.client.start_workflow(
        GovernedExecution.run,
        GovernedRequest(
            "payout",
            LARGE,
            "alice",
            "contract",
            approval_timeout_seconds=timeout,
            queues=stack.queues,
        ),
        id=f"large-{uuid.uuid4().hex[:8]}",
        task_queue=stack.queues.executor,
    )
    for _ in range(200):
        status = await handle.query("ecp.status", result_type=dict)
        if status["step"] == "approve":
            return handle
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached the approval step: {status}")


async def _signed_for(
    stack: Stack, handle: WorkflowHandle[GovernedExecution, GovernedResult]
) -> str:
    """The demo approver's approval of ``handle``'s pending decision (envelope JSON)."""
    decision = Decision.from_json((await handle.query("ecp.decision"))["decision_json"])
    desc = await handle.describe()
    envelope = sign_approval(
        decision,
        execution=execution_ref("default", handle.id, desc.run_id or ""),
        approver=DEMO_APPROVER,
        signer=Ed25519FileSigner.from_file(stack.keys.approver),
        clock=system_clock,
        ttl=timedelta(minutes=5),
    )
    return envelope.to_json().decode()


async def _update_events(handle: WorkflowHandle[GovernedExecution, GovernedResult]) -> int:
    history = await handle.fetch_history()
    return sum(
        1
        for e in history.events
        if e.event_type
        in (
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED,
        )
    )


async def test_valid_approval_lets_the_large_payout_run(stack: Stack) -> None:
    handle = await _start_large(stack)
    ack = await approve(
        stack.client,
        handle.id,
        signer=Ed25519FileSigner.from_file(stack.keys.approver),
        approver=DEMO_APPROVER,
    )
    assert (ack.approver, ack.approvals, ack.required) == (DEMO_APPROVER, 1, 1)
    result = await handle.result()
    assert result.decision == "allow_after_approval"
    assert result.outcome == "completed"
    assert [e for e in examples.EXECUTIONS if e[1] == handle.id] == [
        ("payout", handle.id, LARGE[0])
    ]


async def test_bad_signature_is_rejected_and_absent_from_history(stack: Stack) -> None:
    handle = await _start_large(stack)
    # Signed by a key the trust store does not hold, naming the real approver.
    impostor = Ed25519FileSigner.generate()
    with pytest.raises(WorkflowUpdateFailedError):
        await approve(stack.client, handle.id, signer=impostor, approver=DEMO_APPROVER)
    # A tampered envelope from the real approver is rejected too.
    good = await _signed_for(stack, handle)
    tampered = good.replace('"payload":"', '"payload":"A', 1)
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update("ecp.approve", tampered)
    assert await _update_events(handle) == 0
    status = await handle.query("ecp.status", result_type=dict)
    assert status["step"] == "approve"
    assert status["approvals"] == []
    # A valid approval still goes through afterwards.
    await handle.execute_update("ecp.approve", good)
    assert (await handle.result()).outcome == "completed"
    assert await _update_events(handle) == 2  # accepted + completed, once


async def test_approval_deadline_denies_and_is_proven(stack: Stack) -> None:
    handle = await _start_large(stack, timeout=1.0)
    result = await handle.result()
    assert result.decision == "allow_after_approval"
    assert result.outcome == "denied"
    assert "approval deadline" in result.reason
    assert result.grant_id == ""
    assert [e for e in examples.EXECUTIONS if e[1] == handle.id] == []
    entry = stack.ledger.find_activity("default", handle.id, None, "execute:payout")
    assert entry == result.ledger_index


async def test_an_approval_cannot_be_replayed_to_an_identical_request(stack: Stack) -> None:
    first = await _start_large(stack)
    second = await _start_large(stack)  # same request: same decision id
    for_first = await _signed_for(stack, first)
    with pytest.raises(WorkflowUpdateFailedError):
        await second.execute_update("ecp.approve", for_first)
    assert await _update_events(second) == 0
    await first.execute_update("ecp.approve", for_first)
    assert (await first.result()).outcome == "completed"
    assert [e for e in examples.EXECUTIONS if e[1] == second.id] == []
    await second.terminate("test done")
