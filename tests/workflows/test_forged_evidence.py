"""Evidence nobody can forge or suppress, from the attacker's position.

- A workflow of the attacker's own schedules ``ecp.prove`` on the real
  authority queue, claiming a payout of 1,000,000 EUR that never ran.
- The same, claiming a denial for somebody else's workflow id.
- A rogue poller on the authority queue answers ``ecp.evaluate`` and
  ``ecp.prove`` itself: the workflow ends "denied" with a receipt that is not
  in the log (garbage, or a real receipt of another entry).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp.activities._contracts import DecisionResult, EvaluateInput, ProveInput, ProveResult
from ecp.authority._keys import load_public_key
from ecp.authority._truststore import TrustStore
from ecp.lineage._crosscheck import Violation, cross_check
from ecp.lineage.graph._history import fetch_histories
from ecp.lineage.ledger._evidence import parse_evidence
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest, GovernedResult, TaskQueues
from ecp.workflows._plugin import sandbox_runner
from tests.workflows.conftest import Stack

BIG = [{"amount": 1_000_000, "currency": "EUR", "recipient": "bob"}]


def _claim(outcome: str, workflow_id: str) -> ProveInput:
    return ProveInput(
        namespace="default",
        workflow_id=workflow_id,
        run_id="made-up-run",
        activity_id="execute:payout",
        action="payout",
        initiator="bob",
        decision_id="",
        policy_digest="",
        outcome=outcome,
        reason="forged" if outcome == "denied" else "",
        reason_code="ecp.forged" if outcome == "denied" else "",
        args=list(BIG),
    )


@workflow.defn(name="Forger")
class Forger:
    """Any workflow can schedule any activity type on any task queue."""

    @workflow.run
    async def run(self, inp: tuple[ProveInput, str]) -> ProveResult:
        claim, queue = inp
        return await workflow.execute_activity(
            "ecp.prove",
            claim,
            task_queue=queue,
            result_type=ProveResult,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


async def _forge(stack: Stack, claim: ProveInput) -> tuple[str, ProveResult | ApplicationError]:
    wf_id = f"forger-{uuid.uuid4().hex[:8]}"
    queue = f"attacker-{uuid.uuid4().hex[:8]}"
    async with Worker(
        stack.client, task_queue=queue, workflows=[Forger], workflow_runner=sandbox_runner(None)
    ):
        try:
            got = await stack.client.execute_workflow(
                Forger.run, (claim, stack.queues.authority), id=wf_id, task_queue=queue
            )
        except WorkflowFailureError as err:
            cause = err.cause.cause if isinstance(err.cause, ActivityError) else err.cause
            if not isinstance(cause, ApplicationError):
                raise
            return wf_id, cause
    return wf_id, got


def _entries(stack: Stack) -> list[tuple[str, str, str]]:
    out = []
    for i in range(stack.ledger.head().size):
        p = parse_evidence(stack.ledger.entry(i).envelope).predicate
        out.append((p.activity.workflow_id, p.outcome.status.value, p.initiator or ""))
    return out


async def test_nobody_can_prove_an_outcome_that_no_gate_recorded(stack: Stack) -> None:
    before = _entries(stack)
    _, got = await _forge(stack, _claim("completed", "never-existed"))
    assert isinstance(got, ApplicationError), got
    assert got.type == "ecp.outcome_unrecorded"
    assert got.non_retryable
    assert _entries(stack) == before  # nothing was written, under any id


async def test_a_denial_is_recorded_under_the_callers_own_ids(stack: Stack) -> None:
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    wf_id, got = await _forge(stack, _claim("denied", victim))
    assert isinstance(got, ProveResult), got
    rec = parse_evidence(stack.ledger.entry(got.index).envelope).predicate
    # Temporal says who called: the forger's workflow, not the victim's.
    assert rec.activity.workflow_id == wf_id
    assert rec.activity.run_id != "made-up-run"
    assert all(e[0] != victim for e in _entries(stack))


# --- a rogue poller on the authority queue -----------------------------------


@activity.defn(name="ecp.evaluate")
async def rogue_evaluate(inp: EvaluateInput) -> DecisionResult:
    return DecisionResult(
        decision_json="{}",
        decision_id="sha256:" + "0" * 64,
        effect="deny",
        policy_digest="sha256:" + "0" * 64,
        request_digest="sha256:" + "0" * 64,
        reasons=["rogue says no"],
        determining_policies=[],
    )


STOLEN: dict[str, str] = {}


@activity.defn(name="ecp.prove")
async def rogue_prove(inp: ProveInput) -> ProveResult:
    # Swallows the denial; hands back a receipt that is not this record's.
    return ProveResult(index=0, receipt=STOLEN.get("receipt", "{}"), tree_size=1)


@pytest.mark.parametrize("receipt", ["garbage", "stolen"])
async def test_a_rogue_authority_poller_cannot_pass_the_cross_check(
    temporal_env: WorkflowEnvironment, settings: Settings, receipt: str
) -> None:
    queues = TaskQueues(settings.authority_queue, settings.executor_queue)
    plugin, ledger = build_plugin(settings, role=Role.ALL)
    client = temporal_env.client
    try:
        if receipt == "stolen":
            # A real, valid receipt of an earlier entry of this very log.
            async with run_workers(client, settings, plugin, role=Role.ALL):
                ok: GovernedResult = await client.execute_workflow(
                    GovernedExecution.run,
                    GovernedRequest(
                        "payout",
                        [{"amount": 5, "currency": "EUR", "recipient": "a"}],
                        "alice",
                        queues=queues,
                    ),
                    id=f"legit-{uuid.uuid4().hex[:8]}",
                    task_queue=queues.executor,
                )
            STOLEN["receipt"] = ok.receipt
        else:
            STOLEN.pop("receipt", None)
        wf_id = f"rogue-{uuid.uuid4().hex[:8]}"
        rogue = Worker(
            client, task_queue=settings.authority_queue, activities=[rogue_evaluate, rogue_prove]
        )
        async with rogue, run_workers(client, settings, plugin, role=Role.EXECUTOR):
            result: GovernedResult = await client.execute_workflow(
                GovernedExecution.run,
                GovernedRequest("payout", BIG, "bob", queues=queues),
                id=wf_id,
                task_queue=queues.executor,
            )
        assert result.outcome == "denied"
        report = cross_check(
            await fetch_histories(client, wf_id),
            ledger=ledger,
            trust=TrustStore.load(settings.trust),
            log_key=load_public_key(settings.keys / "log.pub"),
            origin=settings.log_origin,
        )
    finally:
        ledger.close()
    assert not report.ok
    codes = {v.split(":")[0] for f in report.violations for v in f.violations}
    assert Violation.PROOF_NOT_IN_LOG in codes, report
