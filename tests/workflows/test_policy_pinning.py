"""Executors can pin the policy bundles whose grants they honour."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from ecp._keyring import init_keyring
from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp.activities import examples
from ecp.authority._policy import PolicyBundle
from ecp.workflows._models import GovernedRequest, TaskQueues
from ecp.workflows._start import start_governed

ARGS = [{"amount": 75, "currency": "EUR", "recipient": "acme"}]


async def _run(temporal_env: WorkflowEnvironment, tmp_path: Path, pinned: str) -> tuple[str, str]:
    init_keyring(tmp_path / "keys")
    q = uuid.uuid4().hex[:8]
    settings = Settings(
        home=tmp_path,
        authority_queue=f"a-{q}",
        executor_queue=f"e-{q}",
        database_url=f"sqlite:///{tmp_path / 'ecp.db'}",
        accepted_policy_digests=pinned,
    )
    plugin, ledger = build_plugin(settings, role=Role.ALL)
    try:
        async with run_workers(temporal_env.client, settings, plugin, role=Role.ALL):
            handle = await start_governed(
                temporal_env.client,
                GovernedRequest(
                    "payout",
                    ARGS,
                    "alice",
                    queues=TaskQueues(settings.authority_queue, settings.executor_queue),
                ),
                workflow_id=f"pin-{q}",
            )
            result = await handle.result()
    finally:
        ledger.close()
    return result.outcome, result.reason


@pytest.fixture
def bundle_digest() -> str:
    return PolicyBundle.load(Settings().policy).digest


async def test_grant_under_a_pinned_bundle_runs(
    temporal_env: WorkflowEnvironment, tmp_path: Path, bundle_digest: str
) -> None:
    outcome, reason = await _run(temporal_env, tmp_path, f"sha256:{'0' * 64}, {bundle_digest}")
    assert outcome == "completed", reason


async def test_grant_under_another_bundle_is_refused(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    before = len(examples.EXECUTIONS)
    outcome, reason = await _run(temporal_env, tmp_path, f"sha256:{'0' * 64}")
    assert outcome == "denied"
    assert "policy" in reason
    assert len(examples.EXECUTIONS) == before
