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
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from ecp._keyring import KeyFiles, init_keyring
from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp._wire import OUTCOME_UNKNOWN_TYPE
from ecp.authority._keys import load_public_key
from ecp.authority._truststore import TrustStore
from ecp.console.review import check_unknown_outcomes, unknown_outcomes
from ecp.console.review_index import ReviewIndex
from ecp.lineage._crosscheck import GovernanceStatus, cross_check
from ecp.lineage.graph._history import fetch_histories
from ecp.lineage.ledger._evidence import OutcomeStatus, parse_evidence
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger._receipt import verify_receipt
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest, GovernedResult, TaskQueues

CHANGE = {"target": "db-7", "environment": "staging", "change": "resize", "duration_seconds": 2}


@pytest.fixture
def staging_uses() -> int:
    """Uses the policy gives a staging change (the example's 2; parametrize to change)."""
    return 2


@pytest.fixture
def crash_settings(
    tmp_path: Path, temporal_env: WorkflowEnvironment, staging_uses: int
) -> Settings:
    init_keyring(tmp_path / "keys")
    q = uuid.uuid4().hex[:8]
    # The example bundle, with a 6 s execute timeout on staging changes: the
    # lost attempt's lease (and Temporal's start-to-close) expire that soon.
    policy = tmp_path / "policy"
    shutil.copytree(Settings().policy, policy)
    cedar = policy / "policies.cedar"
    staging = '@id("infra-staging-by-operator")\n'
    text_ = cedar.read_text()
    assert staging in text_
    text_ = text_.replace(staging, staging + '@execute_timeout("6")\n')
    head, sep, tail = text_.partition(staging)
    assert '@max_attempts("2")' in tail.split("permit", 1)[0]
    tail = tail.replace('@max_attempts("2")', f'@max_attempts("{staging_uses}")', 1)
    text_ = head + sep + tail
    cedar.write_text(text_, encoding="utf-8")
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


async def _start_change(
    temporal_env: WorkflowEnvironment, s: Settings, executors: list[subprocess.Popen[bytes]]
) -> tuple[str, WorkflowHandle[GovernedExecution, GovernedResult]]:
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
    return wf_id, handle


async def _kill_inside_body(
    s: Settings, wf_id: str, attempt: int, executors: list[subprocess.Popen[bytes]]
) -> None:
    """Wait until ``attempt``'s side effect happened (its ``run`` line), then SIGKILL."""
    for _ in range(900):
        if any(r["phase"] == "run" and r["attempt"] == attempt for r in _journal(s, wf_id)):
            break
        await asyncio.sleep(0.1)
    else:
        log = (s.home / "executor.log").read_text()[-2000:]
        raise AssertionError(f"attempt {attempt}'s body never started; executor log:\n{log}")
    executors[-1].send_signal(signal.SIGKILL)
    executors[-1].wait()
    executors.append(_spawn_executor(s))


def _uses(s: Settings, grant_id: str) -> list[int]:
    engine = create_engine(s.db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT attempt FROM ecp_grant_uses WHERE grant_id = :g ORDER BY attempt"),
            {"g": grant_id},
        )
        out = [int(a) for a in rows.scalars().all()]
    engine.dispose()
    return out


def _check_unknown(s: Settings, wf_id: str, result: GovernedResult, ran: list[int]) -> None:
    """The unknown outcome as a person finds it: receipt, ledger record, console list."""
    assert result.outcome == "unknown", result.reason
    assert result.result is None
    last = ran[-1]
    assert f"the body of attempt {last} may have run; check the side effect" in result.reason
    # The body ran exactly as often as the grant allows, and never again.
    starts = [r["attempt"] for r in _journal(s, wf_id) if r["phase"] == "run"]
    assert starts == ran
    assert _uses(s, result.grant_id) == ran
    log_key = load_public_key(KeyFiles(s.keys).log)
    receipt = verify_receipt(result.receipt, log_key, origin=s.log_origin)
    ledger = Ledger.open(s.db_url)
    try:
        ledger.verify_all(log_key)
        assert receipt.log_index == result.ledger_index
        p = parse_evidence(ledger.entry(result.ledger_index).envelope).predicate
        assert p.outcome.status is OutcomeStatus.UNKNOWN
        assert p.outcome.reason_code == "outcome_unknown"
        assert p.grant_id == result.grant_id
        assert p.activity.attempt > last  # the refused attempt records it
        trust = TrustStore.load(s.trust)
        index = ReviewIndex(s.db_url)
        listed = unknown_outcomes(ledger, trust, index)
        assert listed.complete
        assert [u.ledger_index for u in listed.pending] == [result.ledger_index]
        # Killed inside the body: no attempt's record was written before it.
        assert listed.pending[0].earlier == ()
        item = check_unknown_outcomes(ledger, trust, index)
        assert item.status == "amber"
        assert "1 governed action(s) with an unknown outcome" in item.reason
        index.dispose()
    finally:
        ledger.close()


@pytest.mark.parametrize("staging_uses", [1])
async def test_one_use_action_killed_after_its_side_effect_is_unknown(
    temporal_env: WorkflowEnvironment,
    crash_settings: Settings,
    authority_only: None,
    executors: list[subprocess.Popen[bytes]],
) -> None:
    """At-most-once: the body ran once, nobody saw it end, it is never run again."""
    s = crash_settings
    wf_id, handle = await _start_change(temporal_env, s, executors)
    await _kill_inside_body(s, wf_id, 1, executors)
    # The fresh worker gets attempt 2 once attempt 1's lease (6 s) expired:
    # the one use is taken by an attempt that never ended, so it is refused.
    result = await handle.result()
    _check_unknown(s, wf_id, result, ran=[1])
    # The gate's refusal is final in Temporal too: non-retryable, typed.
    failures = [
        e.activity_task_failed_event_attributes.failure
        async for e in handle.fetch_history_events()
        if e.HasField("activity_task_failed_event_attributes")
    ]
    assert [f.application_failure_info.type for f in failures] == [OUTCOME_UNKNOWN_TYPE]
    assert failures[0].application_failure_info.non_retryable
    # The cross-check flags it for review and finds nothing wrong.
    ledger = Ledger.open(s.db_url)
    try:
        report = cross_check(
            await fetch_histories(temporal_env.client, wf_id),
            ledger=ledger,
            trust=TrustStore.load(s.trust),
            log_key=load_public_key(KeyFiles(s.keys).log),
            origin=s.log_origin,
        )
    finally:
        ledger.close()
    assert report.ok, report.violations
    (f,) = [f for f in report.findings if f.activity_type == "change_infrastructure"]
    assert (f.outcome, f.status, f.grant, f.evidence) == (
        "unknown",
        GovernanceStatus.UNKNOWN,
        "verified",
        "verified",
    )


async def test_two_use_action_runs_again_then_is_unknown(
    temporal_env: WorkflowEnvironment,
    crash_settings: Settings,
    authority_only: None,
    executors: list[subprocess.Popen[bytes]],
) -> None:
    """At-least-once within the uses: killed twice, the body ran twice, then unknown."""
    s = crash_settings
    wf_id, handle = await _start_change(temporal_env, s, executors)
    await _kill_inside_body(s, wf_id, 1, executors)
    await _kill_inside_body(s, wf_id, 2, executors)
    result = await handle.result()
    _check_unknown(s, wf_id, result, ran=[1, 2])
