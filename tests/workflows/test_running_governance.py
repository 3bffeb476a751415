"""Governed while it runs: halts, revocations and lifetimes reach bodies already running.

A user's app (``longrun_app``: its own policy, a 30-step rollout that
heartbeats every second) on a real dev server. Each interruption must come
within one heartbeat interval (at most one more side effect), end the call
refused with the cause, and leave an ``interrupted`` evidence entry naming it.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import text
from temporalio.api.sdk.v1 import workflow_metadata_pb2
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner

from ecp import _runtime as runtime
from ecp._keyring import KeyFiles, init_keyring
from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp.authority._clock import system_clock
from ecp.authority._control import ControlRow, envelope_digest, fold, sign_control
from ecp.authority._control_log import SqlControlLog, issue_control
from ecp.authority._dsse import Envelope
from ecp.authority._keys import Ed25519FileSigner, load_public_key
from ecp.authority._replay import SqlReplayGuard
from ecp.authority._truststore import TrustStore
from ecp.cli import app as ecp_cli
from ecp.lineage._crosscheck import cross_check
from ecp.lineage.graph._build import build_graph
from ecp.lineage.graph._history import fetch_histories
from ecp.lineage.ledger._evidence import OutcomeStatus, parse_evidence
from ecp.lineage.ledger._receipt import verify_receipt
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest, GovernedResult, TaskQueues
from ecp.workflows._search_attributes import SA_GRANT_ID
from tests.lineage.private_pg import (
    PrivatePostgres,
    cancel_sync_wait,
    name_standby,
    private_cluster,
    require_sync_standby,
)
from tests.workflows.conftest import Stack
from tests.workflows.longrun_app import activities as app
from tests.workflows.tcp_proxy import TcpProxy

POLICY = Path(app.__file__).parent / "policy"
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=5"


def _settings(tmp_path: Path, **extra: object) -> Settings:
    init_keyring(tmp_path / "keys")
    q = uuid.uuid4().hex[:8]
    return Settings(
        home=tmp_path,
        policy_bundle=POLICY,
        authority_queue=f"auth-{q}",
        executor_queue=f"exec-{q}",
        database_url=f"sqlite:///{tmp_path / 'ecp.db'}",
        allow_unauthenticated=True,
        **{
            # Read the halt list often here, so a test waits little for it.
            "halt_refresh_seconds": 0.2,
            "halt_bound_seconds": 1.0,
            **extra,
        },  # type: ignore[arg-type]
    )


async def _stack(env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[Stack]:
    # build_plugin opens every store before it returns (blocking I/O), so
    # async code calls it in a thread, as the README says: here the halt
    # list may sit behind a proxy that runs on this very event loop.
    plugin, ledger = await asyncio.to_thread(
        build_plugin,
        settings,
        role=Role.ALL,
        governed_activities=[app.rollout],
        governed_modules=[app.__name__],
    )
    async with run_workers(env.client, settings, plugin, role=Role.ALL):
        yield Stack(
            env.client,
            settings,
            ledger,
            TaskQueues(settings.authority_queue, settings.executor_queue),
            KeyFiles(settings.keys),
        )
    ledger.close()


@pytest.fixture
async def longrun(temporal_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Stack]:
    async for stack in _stack(temporal_env, _settings(tmp_path)):
        yield stack


async def _start(
    stack: Stack, rollout: app.Rollout, action: str = "rollout"
) -> tuple[WorkflowHandle[GovernedExecution, GovernedResult], str]:
    wf_id = f"rollout-{uuid.uuid4().hex[:8]}"
    handle = await stack.client.start_workflow(
        GovernedExecution.run,
        GovernedRequest(action, [asdict(rollout)], "alice", "release 7", queues=stack.queues),
        id=wf_id,
        task_queue=stack.queues.executor,
    )
    return handle, wf_id


def _steps(wf_id: str) -> list[int]:
    return [step for wf, step in app.STEPS if wf == wf_id]


async def _wait_steps(wf_id: str, n: int) -> None:
    for _ in range(300):
        if len(_steps(wf_id)) >= n:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the body of {wf_id} did not reach step {n}")


async def _grant_id(handle: WorkflowHandle[GovernedExecution, GovernedResult]) -> str:
    desc = await handle.describe()
    values = desc.typed_search_attributes.get(SA_GRANT_ID)
    assert values, "the workflow names no grant"
    return values


def _control(stack: Stack, kind: str, target: str, reason: str) -> None:
    issue_control(
        SqlControlLog(stack.settings.db_url),
        Ed25519FileSigner.from_file(stack.keys.halt),
        TrustStore.load(stack.settings.trust),
        kind=kind,  # type: ignore[arg-type]
        target=target,
        reason=reason,
    )


def _execute_evidence(
    stack: Stack, wf_id: str, run_id: str, action: str = "rollout"
) -> tuple[str, str | None, str | None]:
    idx = stack.ledger.find_activity(stack.client.namespace, wf_id, run_id, f"execute:{action}")
    assert idx is not None, "no evidence for the execute step"
    outcome = parse_evidence(stack.ledger.entry(idx).envelope).predicate.outcome
    return outcome.status.value, outcome.reason_code, outcome.reason


async def _interrupted(
    stack: Stack,
    handle: WorkflowHandle[GovernedExecution, GovernedResult],
    wf_id: str,
    cause: str,
    *,
    steps_before: int,
) -> GovernedResult:
    """The call ended interrupted by ``cause``, proven, with at most one more side effect."""
    result = await handle.result()
    assert result.outcome == "interrupted", result.reason
    assert cause in result.reason
    # Within one heartbeat interval: the step in flight may finish, no more.
    assert len(_steps(wf_id)) <= steps_before + 1, _steps(wf_id)
    assert len(_steps(wf_id)) < 30
    desc = await handle.describe()
    status, code, reason = _execute_evidence(stack, wf_id, desc.run_id or "")
    assert (status, code) == (OutcomeStatus.INTERRUPTED.value, cause)
    assert reason
    # The interruption is proven like any outcome, and the cross-check agrees.
    receipt = verify_receipt(
        result.receipt, load_public_key(stack.keys.log), origin=stack.settings.log_origin
    )
    assert receipt.log_index == result.ledger_index
    report = cross_check(
        await fetch_histories(stack.client, wf_id),
        ledger=stack.ledger,
        trust=TrustStore.load(stack.settings.trust),
        log_key=load_public_key(stack.keys.log),
        origin=stack.settings.log_origin,
    )
    body = [f for f in report.findings if f.activity_type == "rollout"]
    assert [f.outcome for f in body] == ["interrupted"]
    if cause == "key_revoked":
        # An auditor re-verifying later sees a body that ran under a key now
        # revoked: flagged for a person, as it should be.
        assert body[0].status == "violation"
        assert "key_revoked" in body[0].violations[0]
    else:
        assert (body[0].status, body[0].violations) == ("ok", ())
    return result


async def test_revoking_its_grant_interrupts_a_running_body(longrun: Stack) -> None:
    handle, wf_id = await _start(longrun, app.Rollout("api"))
    await _wait_steps(wf_id, 2)
    grant_id = await _grant_id(handle)
    before = len(_steps(wf_id))
    _control(longrun, "revoke_grant", grant_id, "leaked in a ticket")
    result = await _interrupted(longrun, handle, wf_id, "grant_revoked", steps_before=before)
    assert "leaked in a ticket" in result.reason


async def test_revoking_the_authority_key_interrupts_a_running_body(longrun: Stack) -> None:
    handle, wf_id = await _start(longrun, app.Rollout("api"))
    await _wait_steps(wf_id, 2)
    before = len(_steps(wf_id))
    path = longrun.settings.trust
    store = TrustStore.load(path)
    authority = Ed25519FileSigner.from_file(longrun.keys.authority).key_id
    store.revoked(authority, system_clock()).save(path)
    await _interrupted(longrun, handle, wf_id, "key_revoked", steps_before=before)


async def test_a_halt_interrupts_running_bodies_and_denies_new_ones_until_resumed(
    longrun: Stack,
) -> None:
    handle, wf_id = await _start(longrun, app.Rollout("api"))
    await _wait_steps(wf_id, 2)
    before = len(_steps(wf_id))
    _control(longrun, "halt", "rollout", "incident 4711")
    result = await _interrupted(longrun, handle, wf_id, "halted", steps_before=before)
    assert "incident 4711" in result.reason
    # Lineage marks the interrupted body and names the halt behind it.
    graph = build_graph(await fetch_histories(longrun.client, wf_id))
    body = [d for _, d in graph.nodes(data=True) if d.get("activity_type") == "rollout"]
    assert [(d["status"], d["interrupted_by"], d["control_statement"]) for d in body] == [
        ("interrupted", "halted", 1)
    ]

    # New executions are denied while the halt stands: the body never starts.
    handle2, wf2 = await _start(longrun, app.Rollout("api", steps=1))
    denied = await handle2.result()
    assert denied.outcome == "denied"
    assert "halted" in denied.reason
    assert "signed by operator" in denied.reason
    assert _steps(wf2) == []
    desc = await handle2.describe()
    status, code, _ = _execute_evidence(longrun, wf2, desc.run_id or "")
    assert (status, code) == ("denied", "halted")
    # Ops watching the Temporal UI see why, in the workflow's current details.
    meta = await handle2.query(
        "__temporal_workflow_metadata", result_type=workflow_metadata_pb2.WorkflowMetadata
    )
    assert "- why: " in meta.current_details
    assert "incident 4711" in meta.current_details

    _control(longrun, "resume", "rollout", "incident closed")
    handle3, wf3 = await _start(longrun, app.Rollout("api", steps=1))
    done = await handle3.result()
    assert done.outcome == "completed", done.reason
    assert _steps(wf3) == [0]


@pytest.fixture
async def seldom_read(temporal_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Stack]:
    # The gate reads the halt list at most once a minute: whatever it read
    # for one call is certainly still cached for the next.
    settings = _settings(tmp_path, halt_refresh_seconds=60, halt_bound_seconds=600)
    async for stack in _stack(temporal_env, settings):
        yield stack


async def test_a_resume_takes_effect_for_the_next_call_however_seldom_the_gate_reads(
    seldom_read: Stack,
) -> None:
    _control(seldom_read, "halt", "rollout", "incident 4712")
    handle, _ = await _start(seldom_read, app.Rollout("api", steps=1))
    denied = await handle.result()
    assert denied.outcome == "denied"
    assert "halted" in denied.reason
    # `ecp resume` returned: the very next call runs, although the gate's
    # cached view (read for the denial) still shows the halt.
    _control(seldom_read, "resume", "rollout", "incident closed")
    handle2, wf2 = await _start(seldom_read, app.Rollout("api", steps=1))
    done = await handle2.result()
    assert done.outcome == "completed", done.reason
    assert _steps(wf2) == [0]


async def test_a_halt_the_gate_cannot_re_confirm_is_refused_retryably_not_as_halted(
    seldom_read: Stack,
) -> None:
    stack = seldom_read
    _control(stack, "halt", "rollout", "incident 4713")
    first, _ = await _start(stack, app.Rollout("api", steps=1))
    denied = await first.result()
    assert denied.outcome == "denied"
    assert "halted" in denied.reason
    # The database operator deletes the halt the gate verified: its confirming
    # read no longer verifies, so the halt is not lifted, but neither is it
    # confirmed (the operator may have resumed): refused retryably.
    log = SqlControlLog(stack.settings.db_url)
    saved = await asyncio.to_thread(log.rows)
    with log.engine.begin() as conn:
        conn.execute(text("DELETE FROM ecp_control_log"))
    handle, wf_id = await _start(stack, app.Rollout("api", steps=1))
    refused = ""
    for _ in range(200):
        desc = await handle.describe()
        pending = [p for p in desc.raw_description.pending_activities if p.attempt >= 2]
        if pending and pending[0].activity_type.name == "rollout":
            refused = pending[0].last_failure.message
            break
        await asyncio.sleep(0.1)
    assert "governance dependency unavailable" in refused, refused
    assert "not re-confirmed" in refused
    assert _steps(wf_id) == []
    # Repaired and resumed: the same call runs (a final `halted` would have
    # ended it). The halt and its resume go back in one transaction, so no
    # retry can read the repaired halt before the resume stands.
    assert len(saved) == 1
    resume = sign_control(
        Ed25519FileSigner.from_file(stack.keys.halt),
        seq=2,
        prev=envelope_digest(saved[0].envelope),
        kind="resume",
        target="rollout",
        reason="incident closed",
        issued_at=datetime.now(UTC),
    )
    with log.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO ecp_control_log (seq, envelope) VALUES (:seq, :envelope)"),
            [{"seq": 1, "envelope": saved[0].envelope}, {"seq": 2, "envelope": resume}],
        )
    done = await handle.result()
    assert done.outcome == "completed", done.reason
    assert _steps(wf_id) == [0]
    log.dispose()


async def test_a_body_that_swallows_the_interruption_has_its_result_withheld(
    longrun: Stack,
) -> None:
    handle, wf_id = await _start(longrun, app.Rollout("api", stubborn=True))
    await _wait_steps(wf_id, 2)
    _control(longrun, "halt", "rollout", "stop means stop")
    result = await handle.result()
    assert result.outcome == "interrupted", result.reason
    assert result.result is None
    assert "returned after the interruption" in result.reason
    desc = await handle.describe()
    status, code, reason = _execute_evidence(longrun, wf_id, desc.run_id or "")
    assert (status, code) == ("interrupted", "halted")
    assert reason is not None
    assert "returned after it was interrupted" in reason


async def test_a_body_that_never_heartbeats_is_still_rechecked(longrun: Stack) -> None:
    # Not long-running (no @heartbeat), never heartbeats: the periodic
    # re-check still reaches it.
    handle, wf_id = await _start(longrun, app.Rollout("quiet", heartbeat=False))
    await _wait_steps(wf_id, 2)
    before = len(_steps(wf_id))
    _control(longrun, "halt", "rollout", "quiet incident")
    await _interrupted(longrun, handle, wf_id, "halted", steps_before=before)


async def test_a_halt_of_everything_stops_every_action(longrun: Stack) -> None:
    _control(longrun, "halt", "*", "freeze")
    handle, wf_id = await _start(longrun, app.Rollout("api", steps=1))
    result = await handle.result()
    assert result.outcome == "denied"
    assert "every governed action is halted (freeze)" in result.reason
    assert _steps(wf_id) == []


async def test_the_execution_lifetime_interrupts_a_body_that_runs_too_long(
    longrun: Stack,
) -> None:
    # The policy gives the short-lived service 4 s of execution; it asks for 30.
    handle, wf_id = await _start(longrun, app.Rollout("short-lived"))
    await _wait_steps(wf_id, 1)
    result = await handle.result()
    assert result.outcome == "interrupted", result.reason
    assert "lifetime_exceeded" in result.reason
    assert 3 <= len(_steps(wf_id)) <= 6, _steps(wf_id)


class _SlowAdmission(SqlReplayGuard):
    """A store that answers admissions late (a busy database, a long batch)."""

    admitted = 0
    #: Seconds each admission is answered late, in order (then on time).
    delays: ClassVar[list[float]] = []

    def admit(self, *args: Any, **kwargs: Any) -> datetime:
        until = super().admit(*args, **kwargs)
        type(self).admitted += 1
        if self.delays:
            time.sleep(self.delays.pop(0))  # after the store ran it: the lease ticks
        return until


@pytest.fixture
async def slow_admission(
    temporal_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Stack]:
    monkeypatch.setattr(runtime, "SqlReplayGuard", _SlowAdmission)
    monkeypatch.setattr(_SlowAdmission, "admitted", 0)
    monkeypatch.setattr(_SlowAdmission, "delays", [])
    async for stack in _stack(temporal_env, _settings(tmp_path)):
        yield stack


async def test_the_body_stops_when_its_lease_ends_however_late_it_was_admitted(
    slow_admission: Stack,
) -> None:
    # The lease (4 s) runs from before the admission; the store took 2 s to
    # answer. The body gets what is left of the lease less the gate's margin
    # (1 s), not 4 s from its start: a retry taking the lapsed lease never
    # runs beside it.
    _SlowAdmission.delays = [2.0]
    handle, _ = await _start(slow_admission, app.Rollout("short-lived"))
    result = await handle.result()
    assert _SlowAdmission.admitted == 1
    assert result.outcome == "interrupted", result.reason
    assert "lifetime_exceeded" in result.reason
    allowed = re.search(r"allows ([0-9.]+) s of execution", result.reason)
    assert allowed is not None, result.reason
    assert float(allowed.group(1)) <= 4 - 2.0 - 1.0


async def test_a_body_whose_lease_lapsed_before_it_started_never_starts(
    slow_admission: Stack,
) -> None:
    # The first admission is answered after 3.5 s of the 4 s lease: less than
    # the margin is left, so that attempt's body must not start at all (one
    # cancelled at once would still have begun). The retry runs it, once.
    _SlowAdmission.delays = [3.5]
    handle, wf_id = await _start(slow_admission, app.Rollout("short-lived", steps=1))
    result = await handle.result()
    assert result.outcome == "completed", result.reason
    assert _SlowAdmission.admitted == 2
    assert len(_steps(wf_id)) == 1, _steps(wf_id)
    ledger = slow_admission.ledger
    records = [
        parse_evidence(Envelope.from_json(leaf)).predicate
        for leaf in ledger.leaves(0, ledger.head().size)
    ]
    lapsed = [
        r
        for r in records
        if r.activity.workflow_id == wf_id and r.outcome.reason_code == "lease_lapsed"
    ]
    assert len(lapsed) == 1, [r.outcome for r in records if r.activity.workflow_id == wf_id]
    assert lapsed[0].outcome.status == OutcomeStatus.DENIED
    assert "did not run" in (lapsed[0].outcome.reason or "")


@pytest.fixture
def sync_cluster(tmp_path: Path) -> Iterator[PrivatePostgres]:
    """A private PostgreSQL for the single-use store, to name a standby that never comes."""
    with private_cluster(tmp_path / "pg") as pg:
        yield pg


async def test_an_admission_its_standby_never_confirmed_runs_no_body(
    temporal_env: WorkflowEnvironment,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sync_cluster: PrivatePostgres,
) -> None:
    # The single-use store on a cluster with a synchronous standby that
    # never connects: the admission's COMMIT waits for it until we cancel
    # the wait, and PostgreSQL then answers success ("committed locally").
    # A failover could lose that use, so the gate must not run the body.
    url = sync_cluster.url

    class _OnSyncCluster(SqlReplayGuard):
        def __init__(self, _url: str, **kwargs: Any) -> None:
            super().__init__(url, **kwargs)

    monkeypatch.setattr(runtime, "SqlReplayGuard", _OnSyncCluster)
    tables = SqlReplayGuard(url)
    tables.unfinished("-")  # its tables, before commits wait for the standby
    tables.dispose()
    settings = _settings(tmp_path, halt_database_url=f"sqlite:///{tmp_path / 'halts.db'}")
    with sync_cluster.admin() as admin:
        async for stack in _stack(temporal_env, settings):
            await asyncio.to_thread(require_sync_standby, sync_cluster, admin)
            handle, wf_id = await _start(stack, app.Rollout("short-lived", steps=1))
            assert await asyncio.to_thread(cancel_sync_wait, admin, None)
            name_standby(admin, None)  # the standby is back for the retries
            result = await handle.result()
            # One use (max_attempts 1), taken by the refused attempt on this
            # server: the retry waits out its lease, then is refused as an
            # unknown outcome. Fewer runs, never more: the body never ran.
            assert result.outcome == "unknown", result.reason
            assert _steps(wf_id) == []
            ledger = stack.ledger
            records = [
                parse_evidence(Envelope.from_json(leaf)).predicate
                for leaf in ledger.leaves(0, ledger.head().size)
            ]
            mine = [r for r in records if r.activity.workflow_id == wf_id]
            first = [r for r in mine if r.activity.attempt == 1 and r.activity.activity_id]
            refused = [r for r in first if r.outcome.reason_code == "replay_store_unavailable"]
            assert len(refused) == 1, [r.outcome for r in mine]
            assert refused[0].outcome.status == OutcomeStatus.DENIED
            assert "not confirmed by its synchronous standby" in (refused[0].outcome.reason or "")


async def test_a_long_running_body_that_never_heartbeats_is_interrupted(
    longrun: Stack,
) -> None:
    handle, wf_id = await _start(longrun, app.Rollout("api", heartbeat=False))
    result = await handle.result()
    assert result.outcome == "interrupted", result.reason
    assert "heartbeat_missing" in result.reason
    # @heartbeat("3"): silent for more than 3 s, so at most ~4 steps ran.
    assert len(_steps(wf_id)) <= 5, _steps(wf_id)


async def test_a_halt_signed_without_the_halt_role_has_no_effect(longrun: Stack) -> None:
    log = SqlControlLog(longrun.settings.db_url)
    approver = Ed25519FileSigner.from_file(longrun.keys.approver)
    forged = sign_control(
        approver,
        seq=1,
        prev="",
        kind="halt",
        target="*",
        reason="an approver playing operator",
        issued_at=system_clock(),
    )
    log.append(ControlRow(1, forged))
    state = fold(log.rows(), TrustStore.load(longrun.settings.trust))
    assert state.halts == {}
    assert [seq for seq, _ in state.ignored] == [1]
    assert "key_wrong_role" in state.ignored[0][1]
    handle, wf_id = await _start(longrun, app.Rollout("api", steps=1))
    assert (await handle.result()).outcome == "completed"
    assert _steps(wf_id) == [0]


@pytest.fixture
async def proxied_halts(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> AsyncIterator[tuple[Stack, TcpProxy]]:
    """The halt list on PostgreSQL behind a proxy the test can cut."""
    name = f"ecp_halts_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    settings = _settings(
        tmp_path,
        halt_database_url=f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{name}",
    )
    try:
        async for stack in _stack(temporal_env, settings):
            yield stack, proxy
    finally:
        await proxy.cut()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


async def test_a_gate_cut_off_from_the_halt_list_refuses_new_bodies(
    proxied_halts: tuple[Stack, TcpProxy],
) -> None:
    stack, proxy = proxied_halts
    first, _wf1 = await _start(stack, app.Rollout("api", steps=1))
    assert (await first.result()).outcome == "completed"
    await proxy.cut()
    await asyncio.sleep(1.5)  # past the 1 s bound: the gate no longer knows
    handle, wf_id = await _start(stack, app.Rollout("api", steps=1))
    refused = ""
    for _ in range(200):
        desc = await handle.describe()
        pending = [p for p in desc.raw_description.pending_activities if p.attempt >= 2]
        if pending and pending[0].activity_type.name == "rollout":
            refused = pending[0].last_failure.message
            break
        await asyncio.sleep(0.1)
    assert "halt state unknown" in refused, refused
    assert _steps(wf_id) == []
    # The control log is back: the same call goes through (refusals were retryable).
    await proxy.start()
    done = await handle.result()
    assert done.outcome == "completed", done.reason
    assert _steps(wf_id) == [0]

    # The operator's `ecp halt` writes where these gates read (the halt list's
    # own database), so the next call is denied.
    env = {
        "ECP_HOME": str(stack.settings.home),
        "ECP_DATABASE_URL": stack.settings.db_url,
        "ECP_HALT_DATABASE_URL": str(stack.settings.halt_database_url),
    }
    cli = await asyncio.to_thread(
        CliRunner().invoke, ecp_cli, ["halt", "rollout", "--reason", "from the CLI"], env=env
    )
    assert cli.exit_code == 0, cli.stderr
    again, wf3 = await _start(stack, app.Rollout("api", steps=1))
    denied = await again.result()
    assert denied.outcome == "denied"
    assert "from the CLI" in denied.reason
    assert _steps(wf3) == []


async def test_an_unreadable_halt_list_does_not_shield_a_revoked_key(
    proxied_halts: tuple[Stack, TcpProxy],
) -> None:
    stack, proxy = proxied_halts
    handle, wf_id = await _start(stack, app.Rollout("api"))
    await _wait_steps(wf_id, 2)
    await proxy.cut()
    before = len(_steps(wf_id))
    path = stack.settings.trust
    authority = Ed25519FileSigner.from_file(stack.keys.authority).key_id
    TrustStore.load(path).revoked(authority, system_clock()).save(path)
    result = await handle.result()
    assert result.outcome == "interrupted", result.reason
    assert "key_revoked" in result.reason
    assert len(_steps(wf_id)) <= before + 1


@pytest.fixture
async def sync_stack(temporal_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Stack]:
    """The app's own workers, as a user builds them: a thread pool for sync activities."""
    settings = _settings(tmp_path)
    plugin, ledger = build_plugin(
        settings,
        role=Role.ALL,
        governed_activities=[app.rollout_sync],
        governed_modules=[app.__name__],
    )
    client = temporal_env.client
    with ThreadPoolExecutor(max_workers=4) as pool:
        executor = Worker(
            client,
            task_queue=settings.executor_queue,
            activity_executor=pool,
            plugins=[plugin],
        )
        authority = Worker(client, task_queue=settings.authority_queue, plugins=[plugin])
        async with executor, authority:
            yield Stack(
                client,
                settings,
                ledger,
                TaskQueues(settings.authority_queue, settings.executor_queue),
                KeyFiles(settings.keys),
            )
    ledger.close()


async def test_a_sync_body_is_interrupted_at_its_next_heartbeat(sync_stack: Stack) -> None:
    handle, wf_id = await _start(sync_stack, app.Rollout("api"), action="rollout_sync")
    await _wait_steps(wf_id, 2)
    before = len(_steps(wf_id))
    _control(sync_stack, "halt", "rollout_sync", "sync incident")
    result = await handle.result()
    assert result.outcome == "interrupted", result.reason
    assert "halted" in result.reason
    # The thread cannot be stopped from outside: it stops at the heartbeat
    # after the verdict, so at most two more steps than when the halt landed.
    assert len(_steps(wf_id)) <= before + 2, _steps(wf_id)
    desc = await handle.describe()
    status, code, _ = _execute_evidence(sync_stack, wf_id, desc.run_id or "", "rollout_sync")
    assert (status, code) == ("interrupted", "halted")
