"""Fail-closed when a governance dependency cannot answer, and recovery after.

The ledger (and single-use store) run on the real PostgreSQL behind a TCP
proxy the test can cut; the trust store is a real file the test moves away.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from ecp._keyring import KeyFiles, init_keyring
from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp.activities import examples
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest, GovernedResult, TaskQueues
from ecp.workflows.examples import DirectCall
from tests.workflows.conftest import Stack
from tests.workflows.tcp_proxy import TcpProxy

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=5"
ARGS = [{"amount": 300, "currency": "EUR", "recipient": "initech"}]


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    name = f"ecp_faults_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is required and not reachable: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def proxied_stack(
    temporal_env: WorkflowEnvironment, tmp_path: Path, pg_database: str
) -> AsyncIterator[tuple[Stack, TcpProxy]]:
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    init_keyring(tmp_path / "keys")
    q = uuid.uuid4().hex[:8]
    settings = Settings(
        home=tmp_path,
        authority_queue=f"auth-{q}",
        executor_queue=f"exec-{q}",
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{pg_database}",
        # Requests here carry no initiator proof: accepted, marked unauthenticated.
        allow_unauthenticated=True,
    )
    # Off the event loop: the proxy serving these connections runs on it.
    plugin, ledger = await asyncio.to_thread(build_plugin, settings, role=Role.ALL)
    async with run_workers(
        temporal_env.client, settings, plugin, role=Role.ALL, extra_workflows=[DirectCall]
    ):
        yield (
            Stack(
                temporal_env.client,
                settings,
                ledger,
                TaskQueues(settings.authority_queue, settings.executor_queue),
                KeyFiles(settings.keys),
            ),
            proxy,
        )
    await proxy.cut()
    ledger.close()


async def _start(stack: Stack) -> WorkflowHandle[GovernedExecution, GovernedResult]:
    return await stack.client.start_workflow(
        GovernedExecution.run,
        GovernedRequest("payout", ARGS, "alice", "faults", queues=stack.queues),
        id=f"fault-{uuid.uuid4().hex[:8]}",
        task_queue=stack.queues.executor,
    )


async def _wait_for_failed_attempt(
    handle: WorkflowHandle[GovernedExecution, GovernedResult], activity_type: str
) -> str:
    """Wait until ``activity_type`` has failed at least once; return the failure."""
    for _ in range(300):
        desc = await handle.describe()
        for pending in desc.raw_description.pending_activities:
            if pending.activity_type.name == activity_type and pending.HasField("last_failure"):
                return pending.last_failure.message
        await asyncio.sleep(0.1)
    raise AssertionError(f"{activity_type} never failed")


def _ran(handle_id: str) -> list[tuple[str, str, dict[str, object]]]:
    return [e for e in examples.EXECUTIONS if e[1] == handle_id]


async def test_ledger_unreachable_blocks_the_body_until_it_returns(
    proxied_stack: tuple[Stack, TcpProxy],
) -> None:
    stack, proxy = proxied_stack
    await proxy.cut()
    handle = await _start(stack)
    message = await _wait_for_failed_attempt(handle, "payout")
    assert "governance dependency unavailable" in message
    assert _ran(handle.id) == []
    await proxy.start()
    result = await handle.result()
    assert result.outcome == "completed", result.reason
    assert _ran(handle.id) == [("payout", handle.id, ARGS[0])]
    await asyncio.to_thread(stack.ledger.verify_all)


async def test_unreadable_trust_store_blocks_everything_until_restored(stack: Stack) -> None:
    store = KeyFiles(stack.settings.keys).trust_store
    hidden = store.with_suffix(".hidden")
    store.rename(hidden)
    try:
        handle = await _start(stack)
        message = await _wait_for_failed_attempt(handle, "ecp.evaluate")
        assert "TrustStoreError" in message
        assert _ran(handle.id) == []
    finally:
        hidden.rename(store)
    result = await handle.result()
    assert result.outcome == "completed", result.reason
    assert _ran(handle.id) == [("payout", handle.id, ARGS[0])]
