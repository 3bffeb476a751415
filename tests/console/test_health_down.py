"""A stopped executor worker turns the health item red at the next refresh, not minutes later."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import httpx
from playwright.async_api import Browser
from temporalio.testing import WorkflowEnvironment

from ecp._keyring import init_keyring
from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp.console.app import HEALTH_REFRESH_SECONDS
from ecp.workflows._models import GovernedRequest, TaskQueues
from ecp.workflows._start import start_governed
from tests.console.conftest import WIDE, ConsoleServer
from tests.workflows.conftest import temporal_env  # noqa: F401 (the session dev server)


async def test_stopped_executor_turns_red(
    temporal_env: WorkflowEnvironment,  # noqa: F811
    tmp_path: Path,
    browser: Browser,
    screenshots: Path,
) -> None:
    init_keyring(tmp_path / "keys")
    q = uuid.uuid4().hex[:8]
    client = temporal_env.client
    settings = Settings(
        home=tmp_path,
        temporal_address=client.service_client.config.target_host,
        namespace=client.namespace,
        authority_queue=f"auth-{q}",
        executor_queue=f"exec-{q}",
        database_url=f"sqlite:///{tmp_path / 'ecp.db'}",
        # Requests here carry no initiator proof: accepted, marked unauthenticated.
        allow_unauthenticated=True,
    )
    auth_plugin, auth_ledger = build_plugin(settings, role=Role.AUTHORITY)
    exec_plugin, exec_ledger = build_plugin(settings, role=Role.EXECUTOR)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(
            run_workers(client, settings, auth_plugin, role=Role.AUTHORITY)
        )
        executor = contextlib.AsyncExitStack()
        await executor.enter_async_context(
            run_workers(client, settings, exec_plugin, role=Role.EXECUTOR)
        )
        handle = await start_governed(
            client,
            GovernedRequest(
                action="payout",
                args=[{"amount": 10, "currency": "EUR", "recipient": "acme"}],
                initiator="alice",
                queues=TaskQueues(settings.authority_queue, settings.executor_queue),
            ),
            workflow_id=f"pay-{q}",
        )
        assert (await handle.result()).outcome == "completed"
        console = stack.enter_context(ConsoleServer(settings))
        async with httpx.AsyncClient(base_url=console.url, timeout=30) as http:
            # Visibility trails the close: wait until the probe has a run to ask.
            while True:
                items = {i["name"]: i for i in (await http.get("/api/health")).json()["items"]}
                if "answered" in str(items["executor workers"]["details"].get("probe")):
                    break
                await asyncio.sleep(0.1)
            assert items["executor workers"]["status"] == "green"

            await executor.aclose()  # the executor worker stops
            # The very next check is red: well within one page refresh, while
            # Temporal still lists the stopped worker's pollers.
            resp = await http.get("/api/health")
            assert resp.status_code == 503
            item = {i["name"]: i for i in resp.json()["items"]}["executor workers"]
            assert item["status"] == "red", item
            assert "down" in item["reason"]

        context = await browser.new_context(viewport=WIDE)
        page = await context.new_page()
        await page.goto(console.url + "/health")
        assert await page.get_attribute("meta[http-equiv=refresh]", "content") == str(
            HEALTH_REFRESH_SECONDS
        )
        row = page.locator("tr[data-item='executor workers']")
        assert await row.get_attribute("data-status") == "red"
        assert "red" in await row.inner_text()
        assert await page.get_attribute("#overall", "data-status") == "red"
        await page.screenshot(path=str(screenshots / "health-executor-down.png"), full_page=True)
        await context.close()
    auth_ledger.close()
    exec_ledger.close()
