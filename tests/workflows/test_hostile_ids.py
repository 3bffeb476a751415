"""No accepted id can suppress evidence.

Temporal accepts workflow ids with trailing spaces and tabs, newlines, any
Unicode and up to 1,000 characters. A plain client chooses the workflow id of
a governed request; whatever it chooses, a body that runs is recorded under
exactly that id, its receipt verifies and the cross-check agrees.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio import activity

from ecp.activities import examples
from ecp.activities._gate import _unrecordable
from ecp.authority._keys import load_public_key
from ecp.authority._truststore import TrustStore
from ecp.lineage._crosscheck import cross_check
from ecp.lineage.graph._history import fetch_histories
from ecp.lineage.ledger._evidence import parse_evidence
from ecp.lineage.ledger._receipt import verify_receipt
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest, GovernedResult
from tests.workflows.conftest import Stack

ARGS: list[object] = [{"amount": 25, "currency": "EUR", "recipient": "acme"}]
HOSTILE = {
    "trailing-space": "pay ",
    "trailing-tab": "pay\t",
    "newline": "pay\nfor real",
    "control": "pay\x07\x1b[31m",
    "unicode": "päy ✓ 付款 \u202e",
    "max-length": "w",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_a_hostile_workflow_id_is_recorded_faithfully(stack: Stack, name: str) -> None:
    # Unique prefix, so the hostile part stays at the end (trailing blanks).
    wf_id = f"{uuid.uuid4().hex[:8]}-" + HOSTILE[name]
    if name == "max-length":
        wf_id = wf_id[:9] + "w" * 991
        assert len(wf_id) == 1000
    result: GovernedResult = await stack.client.execute_workflow(
        GovernedExecution.run,
        GovernedRequest(action="payout", args=ARGS, initiator="alice", queues=stack.queues),
        id=wf_id,
        task_queue=stack.queues.executor,
    )
    assert result.outcome == "completed", result.reason
    assert [e[1] for e in examples.EXECUTIONS if e[1] == wf_id] == [wf_id]

    # The gate's own record names exactly this execution.
    idx = stack.ledger.find_activity(stack.client.namespace, wf_id, None, "execute:payout")
    assert idx is not None
    pred = parse_evidence(stack.ledger.entry(idx).envelope).predicate
    assert pred.activity.workflow_id == wf_id
    assert pred.outcome.status.value == "completed"
    log_key = load_public_key(stack.keys.log)
    verify_receipt(result.receipt, log_key, origin=stack.settings.log_origin)

    histories = await fetch_histories(stack.client, wf_id)
    report = cross_check(
        histories,
        ledger=stack.ledger,
        trust=TrustStore.load(stack.settings.trust),
        log_key=log_key,
        origin=stack.settings.log_origin,
    )
    assert report.ok, [f.violations for f in report.findings]
    assert any(
        f.workflow_id == wf_id and f.activity_id == "execute:payout" for f in report.findings
    )


def _info(**ids: str) -> activity.Info:
    base = {
        "namespace": "default",
        "workflow_id": "wf",
        "workflow_run_id": "run",
        "activity_id": "execute:payout",
        "activity_type": "payout",
    }
    base.update(ids)
    return activity.Info(
        activity_id=base["activity_id"],
        activity_type=base["activity_type"],
        attempt=1,
        current_attempt_scheduled_time=None,  # type: ignore[arg-type]
        heartbeat_details=[],
        heartbeat_timeout=None,
        is_local=False,
        namespace=base["namespace"],
        schedule_to_close_timeout=None,
        scheduled_time=None,  # type: ignore[arg-type]
        start_to_close_timeout=timedelta(seconds=1),
        started_time=None,  # type: ignore[arg-type]
        task_queue="q",
        task_token=b"",
        workflow_id=base["workflow_id"],
        workflow_namespace=base["namespace"],
        workflow_run_id=base["workflow_run_id"],
        workflow_type="W",
        priority=None,  # type: ignore[arg-type]
        retry_policy=None,
        activity_run_id=None,
    )


def test_the_gate_refuses_what_evidence_could_not_record() -> None:
    assert _unrecordable(_info()) is None
    assert _unrecordable(_info(workflow_id=HOSTILE["newline"])) is None
    assert "workflow_id has 1001 characters" in (_unrecordable(_info(workflow_id="w" * 1001)) or "")
    assert "namespace" in (_unrecordable(_info(namespace="n" * 256)) or "")
    assert "activity_id" in (_unrecordable(_info(activity_id="")) or "")
    # A NUL would make PostgreSQL refuse the record (and, in a batch, its neighbours').
    assert "activity_id contains a NUL" in (_unrecordable(_info(activity_id="x\x00y")) or "")
