"""The gate attack matrix, against a real worker on a real dev server.

Every case asserts three things: the governed body never ran (observable
side effect), the workflow saw a non-retryable failure of the right type,
and the ledger holds a denial entry for the call.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.converter import default as default_converter
from temporalio.exceptions import ActivityError, ApplicationError

from ecp._runtime import GOVERNED_MODULES
from ecp.activities import examples
from ecp.authority import errors as E
from ecp.authority._attestation import measure_environment
from ecp.authority._calldigest import digest_values
from ecp.authority._clock import FixedClock, system_clock
from ecp.authority._grant import CallBinding, issue_grant
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._policy import PolicyBundle, PolicyRequest
from ecp.authority._replay import SqlReplayGuard
from ecp.authority._truststore import TrustStore
from ecp.lineage.ledger._evidence import parse_evidence
from ecp.workflows._plugin import sandbox_runner
from ecp.workflows.examples import DIRECT_CALL_ACTIVITY_ID, DirectCall, DirectCallInput
from tests.workflows.conftest import Stack

ARGS: list[object] = [{"amount": 120, "currency": "EUR", "recipient": "acme"}]


def _bundle(stack: Stack) -> PolicyBundle:
    return PolicyBundle.load(stack.settings.policy)


def _grant(
    stack: Stack,
    run_id: str,
    workflow_id: str,
    *,
    signer: Ed25519FileSigner | None = None,
    args: list[object] = ARGS,
    activity_id: str = DIRECT_CALL_ACTIVITY_ID,
    env_digest: str | None = None,
    clock: Callable[[], datetime] = system_clock,
    ttl: timedelta = timedelta(minutes=5),
) -> tuple[str, str]:
    """A grant as the authority would issue it for the direct call (or varied)."""
    decision = _bundle(stack).evaluate(
        PolicyRequest(action="payout", initiator="alice", arguments=args[0])  # type: ignore[arg-type]
    )
    call = CallBinding(
        activity_type="payout",
        args_digest=digest_values(args, default_converter().payload_converter),
        namespace="default",
        workflow_id=workflow_id,
        run_id=run_id,
        activity_id=activity_id,
    )
    env = env_digest or measure_environment(GOVERNED_MODULES).digest
    envelope = issue_grant(
        decision,
        call,
        initiator="alice",
        environment_digest=env,  # type: ignore[arg-type]
        signer=signer or Ed25519FileSigner.from_file(stack.keys.authority),
        clock=clock,
        ttl=ttl,
    )
    return envelope.to_json().decode(), json.loads(envelope.payload)["grant_id"]


async def _start(
    stack: Stack, wait: bool = True, grant: str = ""
) -> WorkflowHandle[DirectCall, object]:
    return await stack.client.start_workflow(
        DirectCall.run,
        DirectCallInput("payout", ARGS, stack.queues.executor, grant=grant, wait_for_grant=wait),
        id=f"direct-{uuid.uuid4().hex[:8]}",
        task_queue=stack.queues.executor,
    )


async def _expect_denied(
    stack: Stack, handle: WorkflowHandle[DirectCall, object], code: str
) -> None:
    before = [e for e in examples.EXECUTIONS if e[1] == handle.id]
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    cause = info.value.cause
    assert isinstance(cause, ActivityError)
    app = cause.cause
    assert isinstance(app, ApplicationError)
    assert app.type == "ecp." + code, app.message
    assert app.non_retryable
    # The body never ran.
    assert [e for e in examples.EXECUTIONS if e[1] == handle.id] == before == []
    # And the denial is in the ledger.
    head = stack.ledger.head()
    denials = []
    for i in range(head.size):
        ev = parse_evidence(stack.ledger.entry(i).envelope)
        pred = ev.predicate
        if pred.activity.workflow_id == handle.id:
            denials.append(pred.outcome)
    assert denials
    assert all(o.status.value == "denied" for o in denials)
    assert denials[0].reason_code == code


async def _run_with(stack: Stack, make: Callable[[str, str], str], code: str) -> None:
    handle = await _start(stack)
    desc = await handle.describe()
    await handle.signal(DirectCall.grant, make(desc.run_id or "", handle.id))
    await _expect_denied(stack, handle, code)


async def test_no_grant(stack: Stack) -> None:
    handle = await _start(stack, wait=False)
    await _expect_denied(stack, handle, "grant_missing")


async def test_forged_grant_by_unknown_key(stack: Stack) -> None:
    rogue = Ed25519FileSigner.generate()
    await _run_with(
        stack, lambda run, wf: _grant(stack, run, wf, signer=rogue)[0], E.UnknownKeyError.code
    )


async def test_grant_for_other_arguments(stack: Stack) -> None:
    other = [{"amount": 121, "currency": "EUR", "recipient": "acme"}]
    await _run_with(
        stack, lambda run, wf: _grant(stack, run, wf, args=other)[0], E.ArgumentsMismatchError.code
    )


async def test_grant_for_another_workflow(stack: Stack) -> None:
    await _run_with(
        stack, lambda run, wf: _grant(stack, run, wf + "-x")[0], E.WorkflowMismatchError.code
    )


async def test_grant_for_another_run(stack: Stack) -> None:
    await _run_with(
        stack, lambda run, wf: _grant(stack, str(uuid.uuid4()), wf)[0], E.RunMismatchError.code
    )


async def test_grant_for_another_activity_id(stack: Stack) -> None:
    await _run_with(
        stack,
        lambda run, wf: _grant(stack, run, wf, activity_id="other")[0],
        E.ActivityMismatchError.code,
    )


async def test_expired_grant(stack: Stack) -> None:
    past = FixedClock(datetime.now(UTC) - timedelta(hours=2))
    await _run_with(
        stack, lambda run, wf: _grant(stack, run, wf, clock=past)[0], E.GrantExpiredError.code
    )


async def test_environment_mismatch(stack: Stack) -> None:
    other_env = "sha256:" + "ab" * 32
    await _run_with(
        stack,
        lambda run, wf: _grant(stack, run, wf, env_digest=other_env)[0],
        E.EnvironmentMismatchError.code,
    )


async def test_grant_signed_by_executor_key(stack: Stack) -> None:
    worker = Ed25519FileSigner.from_file(stack.keys.worker)
    await _run_with(
        stack, lambda run, wf: _grant(stack, run, wf, signer=worker)[0], E.KeyRoleError.code
    )


async def test_revoked_authority_key(stack: Stack) -> None:
    authority = Ed25519FileSigner.from_file(stack.keys.authority)
    store = TrustStore.load(stack.settings.trust)
    store.revoked(authority.key_id, datetime.now(UTC)).save(stack.settings.trust)
    await _run_with(stack, lambda run, wf: _grant(stack, run, wf)[0], E.RevokedKeyError.code)


async def test_replayed_grant_id(stack: Stack) -> None:
    guard = SqlReplayGuard(stack.settings.db_url)

    def make(run: str, wf: str) -> str:
        envelope, grant_id = _grant(stack, run, wf)
        guard.consume(grant_id, 1, 3)  # an earlier use of the same attempt
        return envelope

    await _run_with(stack, make, E.GrantReplayedError.code)


async def test_valid_grant_runs_exactly_once(stack: Stack) -> None:
    handle = await _start(stack)
    desc = await handle.describe()
    envelope, grant_id = _grant(stack, desc.run_id or "", handle.id)
    await handle.signal(DirectCall.grant, envelope)
    result = await handle.result()
    assert isinstance(result, dict)
    assert result["status"] == "paid"
    assert [e for e in examples.EXECUTIONS if e[1] == handle.id] == [("payout", handle.id, ARGS[0])]
    # The completed body spent the grant: its unused attempts are gone too.
    with pytest.raises(E.GrantAttemptsExhaustedError):
        SqlReplayGuard(stack.settings.db_url).consume(grant_id, 2, 3)


async def test_the_grant_is_spent_before_its_completion_is_recorded(stack: Stack) -> None:
    # A worker killed between recording the completion and spending the grant
    # would leave uses for a retry that runs the body again. The ledger here
    # refuses this run's records until the store holds the completed end.
    handle = await _start(stack)
    desc = await handle.describe()
    envelope, grant_id = _grant(stack, desc.run_id or "", handle.id)
    SqlReplayGuard(stack.settings.db_url).unfinished(grant_id)  # creates its tables
    with sqlite3.connect(stack.settings.db_url.removeprefix("sqlite:///")) as db:
        db.execute(
            f"""CREATE TRIGGER spent_first BEFORE INSERT ON ledger_entry
            WHEN NEW.workflow_id = '{handle.id}'
            BEGIN SELECT RAISE(ABORT, 'the grant is still open') WHERE NOT EXISTS (
                SELECT 1 FROM ecp_grant_attempt_ends
                WHERE grant_id = '{grant_id}' AND completed = 1);
            END"""
        )
    await handle.signal(DirectCall.grant, envelope)
    result = await handle.result()
    assert isinstance(result, dict)
    assert result["status"] == "paid"
    outcomes = [
        parse_evidence(stack.ledger.entry(i).envelope).predicate
        for i in range(stack.ledger.head().size)
    ]
    mine = [p.outcome.status.value for p in outcomes if p.activity.workflow_id == handle.id]
    assert mine == ["completed"]


async def test_worker_without_a_gate_refuses_to_start(stack: Stack) -> None:
    """A governed activity registered on a worker whose plugin has no gate
    (an authority worker, say): the worker refuses to start, in one line."""
    from temporalio.worker import Worker

    from ecp.activities._governed import GateMissingError
    from ecp.workflows._plugin import EcpPlugin

    with pytest.raises(GateMissingError, match="registers governed activities") as info:
        Worker(
            stack.client,
            task_queue=f"no-gate-{uuid.uuid4().hex[:6]}",
            activities=[examples.payout],
            plugins=[EcpPlugin()],
        )
    assert "\n" not in str(info.value)
    # Governed by name: an unmarked function under a governed activity type.
    from tests.workflows.test_fail_closed import unmarked_payout

    with pytest.raises(GateMissingError, match="payout"):
        Worker(
            stack.client,
            task_queue=f"no-gate-{uuid.uuid4().hex[:6]}",
            activities=[unmarked_payout],
            plugins=[EcpPlugin(governed_names=["payout"])],
        )


async def test_a_gateless_interceptor_still_refuses_at_run_time(stack: Stack) -> None:
    """Defence in depth: the refusing gate, without the start-up check."""
    from temporalio.worker import Worker

    from ecp.activities._gate import RefusingGate

    queue = f"no-gate-{uuid.uuid4().hex[:6]}"
    async with Worker(
        stack.client,
        task_queue=queue,
        activities=[examples.payout],
        workflows=[DirectCall],
        interceptors=[RefusingGate()],
        workflow_runner=sandbox_runner(None),
    ):
        handle = await stack.client.start_workflow(
            DirectCall.run,
            DirectCallInput("payout", ARGS, queue),
            id=f"no-gate-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    cause = info.value.cause
    assert isinstance(cause, ActivityError)
    assert isinstance(cause.cause, ApplicationError)
    assert cause.cause.type == "ecp.gate_missing"
    assert cause.cause.non_retryable
    assert [e for e in examples.EXECUTIONS if e[1] == handle.id] == []
