"""A real large payout waiting for approval: the page shows what is asked and how to approve."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from playwright.async_api import Browser

from ecp.workflows._models import GovernedRequest, TaskQueues
from ecp.workflows._start import start_governed
from tests.console.conftest import WIDE, Governed


async def test_pending_approval_shows_the_request_and_the_command(
    governed: Governed, browser: Browser, screenshots: Path
) -> None:
    s = governed.settings
    wf_id = f"big-{uuid.uuid4().hex[:8]}"
    handle = await start_governed(
        governed.client,
        GovernedRequest(
            action="payout",
            args=[{"amount": 5000, "currency": "EUR", "recipient": "acme"}],
            initiator="alice",
            purpose="annual licence",
            approval_timeout_seconds=3600,
            queues=TaskQueues(s.authority_queue, s.executor_queue),
        ),
        workflow_id=wf_id,
    )
    try:
        # Wait on the workflow's own state, not on a clock.
        while (await handle.query("ecp.status", result_type=dict)).get("step") != "approve":
            await asyncio.sleep(0.1)
        context = await browser.new_context(viewport=WIDE)
        page = await context.new_page()
        await page.goto(f"{governed.console.url}/governance/{wf_id}")
        pending = page.locator("#pending")
        assert await pending.count() == 1
        assert (await page.inner_text("#pending-action")).strip() == "payout"
        args = json.loads(await page.inner_text("#pending-args"))
        assert args == {"amount": 5000, "currency": "EUR", "recipient": "acme"}
        assert "payouts above 1000 need one finance approval" in await page.inner_text(
            "#pending-reasons"
        )
        assert (await page.inner_text("#pending-count")).strip() == "0 of 1"
        assert (await page.inner_text("#pending-role")).strip() == "finance"
        assert "carol" in await page.inner_text("#pending-eligible")
        assert (await page.inner_text("#approve-command")).strip() == (
            f"ecp approve {wf_id} --key FILE"
        )
        # The console holds no key: nothing on the page is key material, and
        # the key file input (for signing in the browser) is never submitted.
        html = await page.content()
        assert "PRIVATE KEY" not in html
        assert await page.locator("input[type=file][name]").count() == 0
        assert await page.locator("form input[type=file]").count() == 0
        await page.screenshot(path=str(screenshots / "execution-pending.png"), full_page=True)
        await context.close()
    finally:
        await handle.terminate("test over")
