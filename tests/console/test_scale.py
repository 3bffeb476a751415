"""The governance list at scale and its policy-digest and time filters.

1,000 governed-looking executions are started with the ECP search attributes
set at start, on a task queue no worker polls: cheap to make, and visibility
(SQLite in the dev server) holds them like any other.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from playwright.async_api import Browser
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment

from ecp._keyring import init_keyring
from ecp._settings import Settings
from ecp.workflows._search_attributes import SA_ACTION, SA_DECISION, SA_INITIATOR, SA_POLICY_DIGEST
from tests.console.conftest import WIDE, ConsoleServer
from tests.workflows.conftest import temporal_env  # noqa: F401 (the session dev server)

COUNT = 1000


async def _count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def _start_many(client: Client, tag: str, policy: str) -> None:
    attrs = TypedSearchAttributes(
        [
            SearchAttributePair(SA_ACTION, "payout"),
            SearchAttributePair(SA_DECISION, "allow"),
            SearchAttributePair(SA_INITIATOR, tag),
            SearchAttributePair(SA_POLICY_DIGEST, policy),
        ]
    )
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with sem:
            await client.start_workflow(
                "NoWorkerHere",
                id=f"{tag}-{i:04d}",
                task_queue=f"none-{tag}",
                search_attributes=attrs,
                execution_timeout=timedelta(minutes=10),
            )

    await asyncio.gather(*(one(i) for i in range(COUNT)))
    query = f"{SA_INITIATOR.name} = '{tag}'"
    while await _count(client, query) < COUNT:
        await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
async def bulk(
    temporal_env: WorkflowEnvironment,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[ConsoleServer, str, str, datetime]]:
    home = tmp_path_factory.mktemp("console-scale")
    init_keyring(home / "keys")
    client = temporal_env.client
    settings = Settings(
        home=home,
        temporal_address=client.service_client.config.target_host,
        namespace=client.namespace,
        database_url=f"sqlite:///{home / 'ecp.db'}",
        # Requests here carry no initiator proof: accepted, marked unauthenticated.
        allow_unauthenticated=True,
    )
    tag = f"bulk-{uuid.uuid4().hex[:8]}"
    policy = f"sha256:{uuid.uuid4().hex}"
    before = datetime.now(UTC) - timedelta(seconds=1)
    await _start_many(client, tag, policy)
    with ConsoleServer(settings) as console:
        yield console, tag, policy, before


async def test_a_thousand_executions_page(
    bulk: tuple[ConsoleServer, str, str, datetime], browser: Browser, screenshots: Path
) -> None:
    console, tag, policy, before = bulk
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    query = urlencode({"initiator": tag, "policy": policy, "from": before.isoformat()})
    await page.goto(f"{console.url}/governance?{query}", wait_until="load")
    rows = page.locator("#executions tbody tr[data-workflow-id]")
    assert await rows.count() == 50
    assert await page.locator("#next-page").count() == 1
    await page.screenshot(path=str(screenshots / "governance-1000.png"))
    await page.click("#next-page")
    await page.wait_for_url("**page=*", wait_until="load")
    assert await rows.count() == 50
    await context.close()


async def test_policy_and_time_filters_select(
    bulk: tuple[ConsoleServer, str, str, datetime],
) -> None:
    console, tag, _, before = bulk
    async with httpx.AsyncClient(base_url=console.url) as http:
        other = await http.get("/governance", params={"initiator": tag, "policy": "sha256:00"})
        assert other.status_code == 200
        assert 'id="empty"' in other.text
        # A window that closes before the runs started holds none of them.
        early = (before - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
        gone = await http.get("/governance", params={"initiator": tag, "to": early})
        assert 'id="empty"' in gone.text
        hit = await http.get("/governance", params={"initiator": tag, "from": early})
        assert hit.text.count("data-workflow-id=") == 50


@pytest.mark.parametrize(
    ("params", "sentence"),
    [
        (
            {"from": "yesterday"},
            "The started from time must be a date and time such as 2026-01-31T13:45 (UTC).",
        ),
        (
            {"to": "2026-13-01T00:00"},
            "The started to time must be a date and time such as 2026-01-31T13:45 (UTC).",
        ),
        (
            {"from": "2026-02-01T00:00", "to": "2026-01-01T00:00"},
            "The started-from time is after the started-to time.",
        ),
        (
            {"policy": "sha256:' OR 1=1"},
            "The ECPPolicyDigest filter may only hold letters, digits and . _ : @ / + -.",
        ),
    ],
)
async def test_bad_filters_are_one_sentence(
    bulk: tuple[ConsoleServer, str, str, datetime], params: dict[str, str], sentence: str
) -> None:
    async with httpx.AsyncClient(base_url=bulk[0].url) as http:
        resp = await http.get("/governance", params=params)
    assert resp.status_code == 400
    assert sentence in resp.text
