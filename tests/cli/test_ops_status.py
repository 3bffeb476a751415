"""`ecp status` on a real dev server: live by query while running, from history
once closed (so it still answers after the workers are gone)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import timedelta

from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from ecp._approve import approve
from ecp._keyring import DEMO_APPROVER
from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp.authority._keys import Ed25519FileSigner
from ecp.cli.ops import _status_from_history
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest, GovernedResult, TaskQueues
from ecp.workflows.examples import DirectCallInput

# The dev server and per-test settings of the workflow tests (pytest finds
# fixtures imported into a test module).
from tests.workflows.conftest import Stack, settings, stack, temporal_env

__all__ = ["settings", "stack", "temporal_env"]

SMALL = [{"amount": 10, "currency": "USD", "recipient": "acme"}]
LARGE = [{"amount": 2500, "currency": "EUR", "recipient": "acme"}]


def _env(client: Client, s: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "ECP_HOME": str(s.home),
        "ECP_TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "ECP_NAMESPACE": client.namespace,
        "ECP_AUTHORITY_QUEUE": s.authority_queue,
        "ECP_EXECUTOR_QUEUE": s.executor_queue,
        "ECP_DATABASE_URL": s.db_url,
    }


async def _ecp(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    # A subprocess, so the workers in this process keep serving while it runs.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ecp",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


def _request(s: Settings, action: str, args: list[object], initiator: str) -> GovernedRequest:
    return GovernedRequest(
        action, args, initiator, queues=TaskQueues(s.authority_queue, s.executor_queue)
    )


async def _start(
    client: Client, s: Settings, args: list[object], *, action: str = "payout", who: str = "bob"
) -> WorkflowHandle[GovernedExecution, GovernedResult]:
    return await client.start_workflow(
        GovernedExecution.run,
        _request(s, action, args, who),
        id=f"status-{uuid.uuid4().hex[:8]}",
        task_queue=s.executor_queue,
    )


async def _wait_for_step(
    handle: WorkflowHandle[GovernedExecution, GovernedResult], step: str
) -> None:
    status: dict[str, object] = {}
    for _ in range(200):
        status = await handle.query("ecp.status", result_type=dict)
        if status["step"] == step:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached step {step}: {status}")


async def _history_status(
    client: Client, handle: WorkflowHandle[GovernedExecution, GovernedResult]
) -> dict[str, object]:
    desc = await handle.describe()
    return await _status_from_history(client, handle.id, desc.run_id)


async def test_status_answers_from_history_after_the_workers_stop(
    temporal_env: WorkflowEnvironment, settings: Settings
) -> None:
    client = temporal_env.client
    env = _env(client, settings)
    plugin, ledger = build_plugin(settings, role=Role.ALL)
    try:
        async with run_workers(client, settings, plugin, role=Role.ALL):
            handle = await _start(client, settings, SMALL)
            result = await handle.result()
            assert result.outcome == "completed"
            # While a worker serves it, the query and the history say the same.
            live = await handle.query("ecp.status", result_type=dict)
        # The workers are gone: a query has nobody to answer it.
        code, out, err = await _ecp(env, "status", handle.id)
    finally:
        ledger.close()
    assert code == 0, err
    status = json.loads(out)
    assert status == {**live, "workflow_status": "COMPLETED"}
    assert status["step"] == "done"
    assert status["decision"] == "allow" == result.decision
    assert status["decision_id"] == result.decision_id
    assert status["outcome"] == "completed"
    assert status["grant_id"] == result.grant_id != ""
    assert status["grant_expires_at"]
    assert status["ledger_index"] == result.ledger_index >= 0
    assert status["approvals"] == []


async def test_history_gives_what_the_query_gives(stack: Stack) -> None:
    """Approved, denied, refused and terminated runs: field for field the same."""
    client, s = stack.client, stack.settings
    approved = await _start(client, s, LARGE, who="alice")
    await _wait_for_step(approved, "approve")
    signer = Ed25519FileSigner.from_file(stack.keys.approver)
    ack = await approve(client, approved.id, signer=signer, approver=DEMO_APPROVER)
    assert (ack.approvals, ack.required) == (1, 1)
    assert (await approved.result()).outcome == "completed"
    refused = await _start(client, s, [{"target": "moon"}], action="launch_missiles")
    assert (await refused.result()).outcome == "denied"
    unknown = await _start(client, s, SMALL, who="mallory")
    assert (await unknown.result()).outcome == "denied"
    waiting = await _start(client, s, LARGE, who="alice")
    await _wait_for_step(waiting, "approve")
    await waiting.terminate("status test")

    for handle in (approved, refused, unknown, waiting):
        live = await handle.query("ecp.status", result_type=dict)
        assert await _history_status(client, handle) == live, handle.id

    first = await _history_status(client, approved)
    assert first["approvals"] == ["carol"]
    assert first["approvals_required"] == 1
    assert first["step"] == "done"
    stopped = await _history_status(client, waiting)
    assert stopped["step"] == "approve"
    assert stopped["decision"] == "allow_after_approval"
    assert stopped["outcome"] is None
    assert stopped["grant_id"] is None
    assert stopped["ledger_index"] is None
    # Closed, so the CLI reads the history too, and says how it ended.
    code, out, err = await _ecp(_env(client, s), "status", waiting.id)
    assert code == 0, err
    assert json.loads(out) == {**stopped, "workflow_status": "TERMINATED"}
    refusal = await _history_status(client, refused)
    assert refusal["decision"] == "deny"
    assert refusal["outcome"] == "denied"
    assert "launch_missiles" in str(refusal["reasons"])


async def test_running_execution_answers_by_query(stack: Stack) -> None:
    env = _env(stack.client, stack.settings)
    handle = await _start(stack.client, stack.settings, LARGE, who="alice")
    await _wait_for_step(handle, "approve")
    code, out, err = await _ecp(env, "status", handle.id)
    assert code == 0, err
    status = json.loads(out)
    assert status["step"] == "approve"
    assert status["workflow_status"] == "RUNNING"
    assert status["approvals"] == []
    assert status["approvals_required"] == 1
    await handle.terminate("done with the test")


async def test_status_of_other_workflows_is_one_line(stack: Stack) -> None:
    env = _env(stack.client, stack.settings)
    # No worker listens on this queue: the type alone is enough to refuse it.
    handle = await stack.client.start_workflow(
        "DirectCall",
        DirectCallInput("payout", SMALL, stack.queues.executor),
        id=f"direct-{uuid.uuid4().hex[:8]}",
        task_queue=f"nobody-{uuid.uuid4().hex[:8]}",
        execution_timeout=timedelta(seconds=60),
    )
    await handle.terminate("not governed")
    code, _out, err = await _ecp(env, "status", handle.id)
    assert code == 1
    assert err.strip().splitlines() == [
        f"error: CliError: {handle.id} is a DirectCall, not a GovernedExecution"
    ]
    code, _out, err = await _ecp(env, "status", f"missing-{uuid.uuid4().hex[:6]}")
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: ")
