"""Fail-closed by construction: a governed body runs only when the gate admitted it.

Attacks from the position of whoever builds a worker: no plugin at all, a
wrapper activity that calls the governed function, a ``functools.partial`` of
it, a dynamic activity that dispatches to it, and an unmarked function
registered under a governed activity name. Each runs on a real dev server,
started by a plain client; in each the body never runs.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

from ecp import governed
from ecp._runtime import build_plugin
from ecp._settings import Role
from ecp.activities import examples
from ecp.workflows._plugin import sandbox_runner
from ecp.workflows.examples import DirectCall, DirectCallInput
from tests.workflows.conftest import Stack

ARGS: list[object] = [{"amount": 120, "currency": "EUR", "recipient": "mallory"}]


@activity.defn(name="wrapped_payout")
async def wrapped_payout(req: examples.Payout) -> dict[str, object]:
    # An innocent-looking activity that calls the governed function itself.
    return await examples.payout(req)


partial_payout = activity.defn(name="partial_payout")(functools.partial(examples.payout))


@activity.defn(dynamic=True)
async def dynamic_dispatch(args: Sequence[RawValue]) -> dict[str, object]:
    req = activity.payload_converter().from_payload(args[0].payload, examples.Payout)
    return await examples.payout(req)


@activity.defn(name="payout")
async def unmarked_payout(req: examples.Payout) -> dict[str, object]:
    # Serves the governed *name* without the @governed mark.
    examples.EXECUTIONS.append(("payout-unmarked", activity.info().workflow_id or "", {}))
    return {"status": "paid"}


async def _run(stack: Stack, worker: Worker, action: str) -> ApplicationError:
    wf_id = f"fail-closed-{uuid.uuid4().hex[:8]}"
    async with worker:
        with pytest.raises(WorkflowFailureError) as info:
            await stack.client.execute_workflow(
                DirectCall.run,
                DirectCallInput(action=action, args=ARGS, task_queue=worker.task_queue),
                id=wf_id,
                task_queue=worker.task_queue,
            )
    cause = info.value.cause
    assert isinstance(cause, ActivityError)
    app = cause.cause
    assert isinstance(app, ApplicationError)
    assert app.non_retryable, app.message
    # No body ran: neither the governed one nor the unmarked stand-in.
    assert [e for e in examples.EXECUTIONS if e[1] == wf_id] == []
    return app


def _plain_worker(stack: Stack, *activities: object) -> Worker:
    # Built without EcpPlugin: no gate at all. The sandbox runner is the
    # plugin's only so that DirectCall (an ECP module) can load.
    return Worker(
        stack.client,
        task_queue=f"rogue-{uuid.uuid4().hex[:8]}",
        workflows=[DirectCall],
        activities=list(activities),  # type: ignore[arg-type]
        workflow_runner=sandbox_runner(None),
    )


async def test_a_worker_without_the_plugin_cannot_run_a_governed_body(stack: Stack) -> None:
    app = await _run(stack, _plain_worker(stack, examples.payout), "payout")
    assert app.type == "ecp.gate_missing"
    assert "no gate admitted it" in app.message


@pytest.mark.parametrize(
    ("fn", "action"),
    [
        (wrapped_payout, "wrapped_payout"),
        (partial_payout, "partial_payout"),
        (dynamic_dispatch, "anything_at_all"),
    ],
    ids=["wrapper", "partial", "dynamic"],
)
async def test_indirect_calls_reach_no_body_even_behind_the_gate(
    stack: Stack, fn: object, action: str
) -> None:
    # A worker WITH the gate: the indirection is not governed, so the gate
    # lets it through, and the governed body refuses to run unadmitted.
    plugin, _ = build_plugin(stack.settings, role=Role.EXECUTOR, ledger=stack.ledger)
    worker = Worker(
        stack.client,
        task_queue=f"indirect-{uuid.uuid4().hex[:8]}",
        workflows=[DirectCall],
        activities=[fn],  # type: ignore[list-item]
        plugins=[plugin],
    )
    app = await _run(stack, worker, action)
    assert app.type == "ecp.gate_missing"


async def test_the_gate_governs_by_name_whichever_function_serves_it(stack: Stack) -> None:
    # "payout" is governed by the deployment's configuration; this worker
    # registers an unmarked function under that name.
    settings = stack.settings.model_copy(update={"governed_actions": "payout"})
    plugin, _ = build_plugin(
        settings, role=Role.EXECUTOR, ledger=stack.ledger, governed_activities=[]
    )
    worker = Worker(
        stack.client,
        task_queue=f"byname-{uuid.uuid4().hex[:8]}",
        workflows=[DirectCall],
        activities=[unmarked_payout],
        plugins=[plugin],
    )
    app = await _run(stack, worker, "payout")
    assert app.type == "ecp.grant_missing"


def test_governed_over_activity_defn_is_refused_at_import() -> None:
    async def body() -> None:
        return None

    with pytest.raises(TypeError, match=r"apply @governed under @activity\.defn"):
        governed(activity.defn(name="x")(body))


async def test_a_direct_python_call_outside_any_activity_refuses() -> None:
    with pytest.raises(ApplicationError) as info:
        await examples.payout(examples.Payout(amount=1, currency="EUR", recipient="x"))
    assert info.value.type == "ecp.gate_missing"
    assert examples.EXECUTIONS == [] or all(
        e[2].get("recipient") != "x" for e in examples.EXECUTIONS
    )


def test_the_wrapper_hands_out_no_body_to_call_around_the_check() -> None:
    # Nothing on the governed function reaches the raw body: no __wrapped__,
    # no attribute naming it; Temporal still sees the typed signature.
    assert not hasattr(examples.payout, "__wrapped__")
    for name in dir(examples.payout):
        value = getattr(examples.payout, name)
        assert not (callable(value) and getattr(value, "__qualname__", "") == "payout"), name
    defn = activity._Definition.from_callable(examples.payout)
    assert defn is not None
    assert defn.arg_types == [examples.Payout]
