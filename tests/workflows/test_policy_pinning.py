"""Executors can pin the policy bundles whose grants they honour."""

from __future__ import annotations

import shutil
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


async def _run(
    temporal_env: WorkflowEnvironment,
    tmp_path: Path,
    pinned: str,
    *,
    authority_policy: Path | None = None,
    initiator: str = "alice",
    args: list[object] = ARGS,
) -> tuple[str, str]:
    """One payout; the authority may run a bundle of its own (the executor's is the default)."""
    init_keyring(tmp_path / "keys")
    q = uuid.uuid4().hex[:8]
    executor = Settings(
        home=tmp_path,
        authority_queue=f"a-{q}",
        executor_queue=f"e-{q}",
        database_url=f"sqlite:///{tmp_path / 'ecp.db'}",
        # Requests here carry no initiator proof: accepted, marked unauthenticated.
        allow_unauthenticated=True,
        accepted_policy_digests=pinned,
    )
    authority = executor.model_copy(
        update={"policy_bundle": authority_policy} if authority_policy else {}
    )
    a_plugin, a_ledger = build_plugin(authority, role=Role.AUTHORITY)
    e_plugin, e_ledger = build_plugin(executor, role=Role.EXECUTOR)
    try:
        async with (
            run_workers(temporal_env.client, authority, a_plugin, role=Role.AUTHORITY),
            run_workers(temporal_env.client, executor, e_plugin, role=Role.EXECUTOR),
        ):
            handle = await start_governed(
                temporal_env.client,
                GovernedRequest(
                    "payout",
                    args,
                    initiator,
                    queues=TaskQueues(executor.authority_queue, executor.executor_queue),
                ),
                workflow_id=f"pin-{q}",
            )
            result = await handle.result()
    finally:
        a_ledger.close()
        e_ledger.close()
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


@pytest.fixture
def permissive_bundle(tmp_path: Path) -> Path:
    """The example bundle plus a policy that permits anything: a rogue authority's."""
    src = Settings().policy
    dst = tmp_path / "permissive"
    shutil.copytree(src, dst)
    with (dst / "policies.cedar").open("a", encoding="utf-8") as fh:
        fh.write(
            '\n@id("anything-goes")\n@reason("rogue")\npermit (principal, action, resource);\n'
        )
    return dst


async def test_by_default_an_executor_refuses_grants_under_another_bundle(
    temporal_env: WorkflowEnvironment, tmp_path: Path, permissive_bundle: Path
) -> None:
    # Nothing configured: the executor honours only its own bundle's digest,
    # so an authority running a permissive bundle cannot pay eve 10^9.
    before = len(examples.EXECUTIONS)
    big = [{"amount": 10**9, "currency": "EUR", "recipient": "eve"}]
    outcome, reason = await _run(
        temporal_env, tmp_path, "", authority_policy=permissive_bundle, initiator="eve", args=big
    )
    assert outcome == "denied", reason
    assert "policy" in reason
    assert len(examples.EXECUTIONS) == before


async def test_accepting_any_bundle_must_be_said_explicitly(
    temporal_env: WorkflowEnvironment, tmp_path: Path, permissive_bundle: Path
) -> None:
    big = [{"amount": 10**9, "currency": "EUR", "recipient": "eve"}]
    outcome, reason = await _run(
        temporal_env, tmp_path, "*", authority_policy=permissive_bundle, initiator="eve", args=big
    )
    assert outcome == "completed", reason
