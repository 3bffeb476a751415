"""No two attempts of one grant run at the same time.

The caller chooses Temporal's start-to-close timeout. One shorter than the
body makes Temporal start attempt 2 while attempt 1 is still running; the
gate's lease (as long as the policy's execute timeout, signed into the grant)
makes attempt 2 wait until attempt 1 has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import timedelta

from temporalio.converter import default as default_converter

from ecp._runtime import GOVERNED_MODULES
from ecp.activities import examples
from ecp.authority._attestation import measure_environment
from ecp.authority._calldigest import digest_values
from ecp.authority._clock import system_clock
from ecp.authority._grant import CallBinding, issue_grant
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._policy import PolicyBundle, PolicyRequest
from ecp.workflows.examples import DIRECT_CALL_ACTIVITY_ID, DirectCall, DirectCallInput
from tests.workflows.conftest import Stack

CHANGE = {"target": "db-1", "environment": "staging", "change": "resize", "duration_seconds": 3}


def _grant(stack: Stack, workflow_id: str, run_id: str) -> str:
    decision = PolicyBundle.load(stack.settings.policy).evaluate(
        PolicyRequest(action="change_infrastructure", initiator="alice", arguments=CHANGE)
    )
    assert decision.scope is not None
    assert decision.scope.max_attempts == 2
    call = CallBinding(
        activity_type="change_infrastructure",
        args_digest=digest_values([CHANGE], default_converter().payload_converter),
        namespace=stack.client.namespace,
        workflow_id=workflow_id,
        run_id=run_id,
        activity_id=DIRECT_CALL_ACTIVITY_ID,
    )
    envelope = issue_grant(
        decision,
        call,
        initiator="alice",
        environment_digest=measure_environment(GOVERNED_MODULES).digest,  # type: ignore[arg-type]
        signer=Ed25519FileSigner.from_file(stack.keys.authority),
        clock=system_clock,
        ttl=timedelta(minutes=5),
    )
    return envelope.to_json().decode()


def _journal(stack: Stack, wf_id: str) -> list[tuple[str, int]]:
    path = examples.journal_path()
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [(r["phase"], r["attempt"]) for r in rows if r["workflow_id"] == wf_id]


async def test_a_short_caller_timeout_does_not_make_attempts_overlap(stack: Stack) -> None:
    wf_id = f"overlap-{uuid.uuid4().hex[:8]}"
    handle = await stack.client.start_workflow(
        DirectCall.run,
        DirectCallInput(
            "change_infrastructure",
            [CHANGE],
            stack.queues.executor,
            wait_for_grant=True,
            max_attempts=6,
            start_to_close_seconds=1,  # shorter than the 3 s body
        ),
        id=wf_id,
        task_queue=stack.queues.executor,
    )
    desc = await handle.describe()
    await handle.signal(DirectCall.grant, _grant(stack, wf_id, desc.run_id or ""))
    with contextlib.suppress(Exception):  # how the call ends is not the point here
        await handle.result()
    await asyncio.sleep(0.5)  # let a cancelled attempt's journal line land
    events = _journal(stack, wf_id)
    assert events, "the body never ran"
    # Every start is followed by its own end before any other start.
    running: int | None = None
    for phase, attempt in events:
        if phase == "run":
            assert running is None, f"attempt {attempt} started while {running} ran: {events}"
            running = attempt
        else:
            assert running == attempt, events
            running = None
