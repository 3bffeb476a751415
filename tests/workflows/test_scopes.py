"""Scoped grants: one authorization, many gated calls, each checked and recorded.

A workflow authorizes a scope of 50 payouts (amount at most 500, EUR only)
once; its 50 calls go straight to the gate. A 51st call, a call outside the
constraints and a call of an action outside the scope are denied, recorded,
and their bodies never run. The constraint check is tested against the
policy's own evaluation: whatever the gate allows, the policy allows.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.api.enums.v1 import EventType

from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp.activities import examples
from ecp.authority._keys import Ed25519FileSigner, load_public_key
from ecp.authority._policy import Effect, PolicyBundle, PolicyRequest
from ecp.authority._scope import ArgConstraint, ScopeConstraintError, ScopeGrant, decide_scoped_call
from ecp.authority._truststore import TrustStore
from ecp.lineage._crosscheck import cross_check
from ecp.lineage.graph._history import fetch_histories
from ecp.lineage.ledger._evidence import parse_evidence
from tests.workflows.conftest import Stack
from tests.workflows.scoped_workflows import ScopedPayouts

N = 50


async def test_fifty_calls_under_one_scope(stack: Stack) -> None:
    plugin, _ = build_plugin(stack.settings, role=Role.EXECUTOR, ledger=stack.ledger)
    queue = f"scoped-{uuid.uuid4().hex[:8]}"
    settings = stack.settings.model_copy(update={"executor_queue": queue})
    wf = f"scoped-{uuid.uuid4().hex[:8]}"
    async with run_workers(
        stack.client, settings, plugin, role=Role.EXECUTOR, extra_workflows=[ScopedPayouts]
    ):
        out = await stack.client.execute_workflow(
            ScopedPayouts.run, N, id=wf, task_queue=queue, memo={}
        )
    assert out["done"] == N
    assert out["too_big"] == "ecp.scope_constraint"
    assert out["wrong_currency"] == "ecp.scope_constraint"
    assert out["one_too_many"] == "ecp.grant_attempts_exhausted"
    assert out["outside"] == "ecp.binding_activity_type"

    history = await stack.client.get_workflow_handle(wf).fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    # One authorization for all of them; no per-call decide/authorize steps.
    assert scheduled.count("ecp.authorize_scope") == 1
    assert "ecp.evaluate" not in scheduled
    assert "ecp.authorize" not in scheduled
    ran = [e for e in examples.EXECUTIONS if e[1] == wf]
    assert len(ran) == N  # only the 50 bodies ran
    records = [
        parse_evidence(stack.ledger.entry(i).envelope).predicate
        for i in range(stack.ledger.head().size)
    ]
    mine = [p for p in records if p.activity.workflow_id == wf]
    assert sum(p.outcome.status.value == "completed" for p in mine) == N
    denied = sorted(p.outcome.reason_code or "" for p in mine if p.outcome.status.value == "denied")
    assert denied == [
        "binding_activity_type",
        "grant_attempts_exhausted",
        "scope_constraint",
        "scope_constraint",
    ]
    assert all(p.grant_id == out["scope_id"] for p in mine if p.outcome.status.value == "completed")
    # Scoped calls have no prove step each: the log's next checkpoint covers
    # them (as `ecp ledger checkpoint` or the authority's next proof would).
    stack.ledger.checkpoint(Ed25519FileSigner.from_file(stack.keys.log), stack.settings.log_origin)
    # And the lineage cross-check agrees: every scoped call verified against its scope.
    report = cross_check(
        await fetch_histories(stack.client, wf),
        ledger=stack.ledger,
        trust=TrustStore.load(stack.settings.trust),
        log_key=load_public_key(stack.keys.log),
        origin=stack.settings.log_origin,
    )
    assert report.ok, [f.violations for f in report.violations]
    assert sum(f.grant == "verified" and f.outcome == "completed" for f in report.findings) == N


BUNDLE = PolicyBundle.load(Settings().policy)
_NOW = datetime(2030, 1, 1, tzinfo=UTC)
SCOPE = ScopeGrant(
    scope_id="s-1",
    namespace="default",
    workflow_id="wf",
    run_id="run",
    actions=("payout",),
    constraints={"payout": {"amount": ArgConstraint(max=2000)}},
    max_uses=10,
    initiator="alice",
    initiator_auth="unauthenticated",
    purpose="",
    policy_digest=BUNDLE.digest,
    environment_digest="sha256:" + "0" * 64,
    issued_at=_NOW,
    not_before=_NOW,
    expires_at=_NOW + timedelta(hours=1),
    issuer="ed25519:" + "0" * 32,
)


@settings(max_examples=150, deadline=None)
@given(
    amount=st.integers(min_value=-10, max_value=5000),
    currency=st.sampled_from(["EUR", "USD", "GBP", "XYZ"]),
    recipient=st.text(max_size=8),
)
def test_a_scope_never_allows_what_the_policy_does_not(
    amount: int, currency: str, recipient: str
) -> None:
    args = {"amount": amount, "currency": currency, "recipient": recipient}
    policy = BUNDLE.evaluate(
        PolicyRequest(action="payout", initiator="alice", arguments=args, environment={})
    )
    try:
        decide_scoped_call(BUNDLE, SCOPE, "payout", args, {})
    except ScopeConstraintError:
        return
    # The gate allowed it: so does the policy, without approvals.
    assert policy.effect is Effect.ALLOW
    assert amount <= 2000
