"""A worker killed in the middle of a governed activity.

The executor runs as a separate ``ecp worker --role executor`` process (with
no authority key); the test kills it with SIGKILL while the body runs,
starts a fresh one, and checks that the workflow completes, the ledger
verifies, and the grant was honoured no more often than its scope allows.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from temporalio.testing import WorkflowEnvironment

from ecp._keyring import KeyFiles, init_keyring
from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp.authority._keys import load_public_key
from ecp.lineage.ledger._ledger import Ledger
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest, TaskQueues

CHANGE = {"target": "db-7", "environment": "staging", "change": "resize", "duration_seconds": 2}


@pytest.fixture
def crash_settings(tmp_path: Path, temporal_env: WorkflowEnvironment) -> Settings:
    init_keyring(tmp_path / "keys")
    q = uuid.uuid4().hex[:8]
    # The example bundle, with a 6 s execute timeout on staging changes: the
    # lost attempt's lease (and Temporal's start-to-close) expire that soon.
    policy = tmp_path / "policy"
    shutil.copytree(Settings().policy, policy)
    cedar = policy / "policies.cedar"
    staging = '@id("infra-staging-by-operator")\n'
    assert staging in cedar.read_text()
    cedar.write_text(
        cedar.read_text().replace(staging, staging + '@execute_timeout("6")\n'), encoding="utf-8"
    )
    return Settings(
        home=tmp_path,
        policy_bundle=policy,
        temporal_address=temporal_env.client.service_client.config.target_host,
        authority_queue=f"auth-{q}",
        executor_queue=f"exec-{q}",
        database_url=f"sqlite:///{tmp_path / 'ecp.db'}",
        # Requests here carry no initiator proof: accepted, marked unauthenticated.
        allow_unauthenticated=True,
    )


def _spawn_executor(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ECP_HOME": str(settings.home),
        "ECP_TEMPORAL_ADDRESS": settings.temporal_address,
        "ECP_AUTHORITY_QUEUE": settings.authority_queue,
        "ECP_EXECUTOR_QUEUE": settings.executor_queue,
        "ECP_DATABASE_URL": settings.db_url,
        "ECP_POLICY_BUNDLE": str(settings.policy),
    }
    log = (settings.home / "executor.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "ecp", "worker", "--role", "executor"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _journal(settings: Settings, wf_id: str) -> list[dict[str, object]]:
    path = settings.home / "side_effects.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["workflow_id"] == wf_id]


@pytest.fixture
async def authority_only(
    temporal_env: WorkflowEnvironment, crash_settings: Settings
) -> AsyncIterator[None]:
    plugin, ledger = build_plugin(crash_settings, role=Role.AUTHORITY)
    async with run_workers(temporal_env.client, crash_settings, plugin, role=Role.AUTHORITY):
        yield
    ledger.close()


@pytest.fixture
def executors(crash_settings: Settings) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


async def test_worker_killed_mid_activity(
    temporal_env: WorkflowEnvironment,
    crash_settings: Settings,
    authority_only: None,
    executors: list[subprocess.Popen[bytes]],
) -> None:
    s = crash_settings
    # The executor process holds no authority private key at all.
    executors.append(_spawn_executor(s))
    wf_id = f"crash-{uuid.uuid4().hex[:8]}"
    handle = await temporal_env.client.start_workflow(
        GovernedExecution.run,
        GovernedRequest(
            "change_infrastructure",
            [CHANGE],
            "alice",
            "crash test",
            queues=TaskQueues(s.authority_queue, s.executor_queue),
        ),
        id=wf_id,
        task_queue=s.executor_queue,
    )
    for _ in range(600):
        if _journal(s, wf_id):
            break
        await asyncio.sleep(0.1)
    else:
        log = (s.home / "executor.log").read_text()[-2000:]
        raise AssertionError(f"the body never started; executor log:\n{log}")
    executors[0].send_signal(signal.SIGKILL)
    executors[0].wait()
    # A fresh worker gets attempt 2 once the 6 s start-to-close timeout of
    # the lost attempt expires; the 2 s change then completes.
    executors.append(_spawn_executor(s))
    result = await handle.result()
    assert result.outcome == "completed", result.reason

    starts = [r for r in _journal(s, wf_id) if r["phase"] == "run"]
    assert [r["attempt"] for r in starts] == [1, 2]  # grant scope: max_attempts 2
    # The single-use store saw exactly those two uses of the grant.
    engine = create_engine(s.db_url)
    with engine.connect() as conn:
        uses = (
            conn.execute(
                text("SELECT attempt FROM ecp_grant_uses WHERE grant_id = :g ORDER BY attempt"),
                {"g": result.grant_id},
            )
            .scalars()
            .all()
        )
    engine.dispose()
    assert uses == [1, 2]
    ledger = Ledger.open(s.db_url)
    try:
        ledger.verify_all(load_public_key(KeyFiles(s.keys).log))
    finally:
        ledger.close()
