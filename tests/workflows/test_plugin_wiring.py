"""The plugin in someone else's app: given twice, and on a server without ECP's attributes."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from ecp._connect import SearchAttributesMissingError, ensure_search_attributes
from ecp._devserver import temporal_binary
from ecp._keyring import init_keyring
from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp.workflows._models import GovernedRequest, GovernedResult, TaskQueues
from ecp.workflows._start import start_governed

ARGS = [{"amount": 10, "currency": "EUR", "recipient": "acme"}]


def _settings(tmp_path: Path) -> Settings:
    init_keyring(tmp_path / "keys")
    q = uuid.uuid4().hex[:8]
    return Settings(
        home=tmp_path,
        authority_queue=f"a-{q}",
        executor_queue=f"e-{q}",
        database_url=f"sqlite:///{tmp_path / 'ecp.db'}",
        allow_unauthenticated=True,
    )


async def _payout(client: Client, settings: Settings) -> GovernedResult:
    queues = TaskQueues(settings.authority_queue, settings.executor_queue)
    handle = await start_governed(
        client,
        GovernedRequest("payout", ARGS, "alice", queues=queues),
        workflow_id=f"wire-{uuid.uuid4().hex[:8]}",
    )
    return await handle.result()


async def test_the_plugin_on_client_and_worker_says_so_and_works(
    temporal_env: WorkflowEnvironment, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path)
    plugin, ledger = build_plugin(settings, role=Role.ALL)
    config = temporal_env.client.config()
    config["plugins"] = [plugin]
    client = Client(**config)
    try:
        with caplog.at_level(logging.WARNING, logger="ecp.plugin"):
            # run_workers gives the plugin to each Worker as well.
            async with run_workers(client, settings, plugin, role=Role.ALL):
                result = await _payout(client, settings)
    finally:
        ledger.close()
    assert result.outcome == "completed", result.reason
    warned = [r.getMessage() for r in caplog.records if r.name == "ecp.plugin"]
    assert warned
    assert all("given to both the client and the worker" in m for m in warned)
    assert all("\n" not in m for m in warned)


async def test_a_server_without_ecps_search_attributes_gets_them(tmp_path: Path) -> None:
    # A dev server not started by ``ecp dev``: no ECP search attributes.
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()), dev_server_log_level="error"
    )
    async with env:
        settings = _settings(tmp_path)
        plugin, ledger = build_plugin(settings, role=Role.ALL)
        try:
            async with run_workers(env.client, settings, plugin, role=Role.ALL):
                result = await _payout(env.client, settings)
        finally:
            ledger.close()
    assert result.outcome == "completed", result.reason


async def test_attributes_that_cannot_be_added_are_one_line_with_the_commands(
    temporal_env: WorkflowEnvironment,
) -> None:
    with pytest.raises(SearchAttributesMissingError) as info:
        await ensure_search_attributes(temporal_env.client, "no-such-namespace")
    msg = str(info.value)
    assert "\n" not in msg
    assert "temporal operator search-attribute create --namespace no-such-namespace" in msg
    assert "--name ECPDecision --type Keyword" in msg


async def test_workers_take_the_configured_number_of_activity_slots(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    # ECP_MAX_CONCURRENT_ACTIVITIES reaches both of ECP's workers; unset, the
    # SDK's default applies (None in the worker's config).
    for slots in (None, 7):
        home = tmp_path / f"slots-{slots}"
        settings = _settings(home).model_copy(update={"max_concurrent_activities": slots})
        plugin, ledger = build_plugin(settings, role=Role.ALL)
        try:
            async with run_workers(temporal_env.client, settings, plugin, role=Role.ALL) as ws:
                assert len(ws) == 2
                assert [w.config().get("max_concurrent_activities") for w in ws] == [slots] * 2
                if slots is not None:
                    result = await _payout(temporal_env.client, settings)
                    assert result.outcome == "completed", result.reason
        finally:
            ledger.close()
