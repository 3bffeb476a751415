"""Approvals signed in the approver's browser (WebCrypto Ed25519, non-extractable key).

Real Chromium signs with carol's real key file; the console relays to the
real workflow, whose update validator decides. A wrong key and a replayed
approval are refused there and leave nothing in history; the key file's
contents never leave the browser.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.async_api import Browser, Page, Request
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle

from ecp.authority._keys import write_private_key
from ecp.workflows._models import GovernedRequest, GovernedResult, TaskQueues
from ecp.workflows._start import start_governed
from tests.console.conftest import WIDE, Governed


async def _waiting(governed: Governed) -> WorkflowHandle[object, GovernedResult]:
    s = governed.settings
    handle = await start_governed(
        governed.client,
        GovernedRequest(
            action="payout",
            args=[{"amount": 5000, "currency": "EUR", "recipient": "acme"}],
            initiator="alice",
            purpose="browser approval",
            approval_timeout_seconds=3600,
            queues=TaskQueues(s.authority_queue, s.executor_queue),
        ),
        workflow_id=f"browser-{uuid.uuid4().hex[:8]}",
    )
    while (await handle.query("ecp.status", result_type=dict)).get("step") != "approve":
        await asyncio.sleep(0.1)
    return handle


async def _accepted_approvals(handle: WorkflowHandle[object, GovernedResult]) -> int:
    n = 0
    async for e in handle.fetch_history_events():
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            n += 1
    return n


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=WIDE)
    p = await context.new_page()
    yield p
    await context.close()


async def _sign_in_browser(page: Page, governed: Governed, wf_id: str, key: Path) -> list[str]:
    posted: list[str] = []

    def record(request: Request) -> None:
        if request.method == "POST":
            posted.append(request.post_data or "")

    page.on("request", record)
    await page.goto(f"{governed.console.url}/governance/{wf_id}")
    await page.set_input_files("#approve-key", str(key))
    async with page.expect_navigation():
        await page.click("form.browser-approve[data-approver='carol'] button")
    return posted


async def test_carol_approves_in_the_browser(governed: Governed, page: Page) -> None:
    handle = await _waiting(governed)
    key = governed.keys.approver
    posted = await _sign_in_browser(page, governed, handle.id, key)
    assert await page.locator("#approved").count() == 1
    result = await handle.result()
    assert result.outcome == "completed", result.reason
    assert await _accepted_approvals(handle) == 1
    # Only the prepared approval and a signature went out; no key material.
    (body,) = posted
    form = parse_qs(body)
    assert set(form) == {"csrf", "payload", "signature"}
    secret = "".join(key.read_text().splitlines()[1:-1])
    assert secret[:40] not in body
    assert "PRIVATE" not in body
    # The same signed approval, posted again, is refused and not recorded.
    async with httpx.AsyncClient(base_url=governed.console.url, timeout=60) as http:
        replay = await http.post(
            f"/governance/{handle.id}/approve",
            content=body,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert replay.status_code == 400
    assert "has closed" in replay.text
    assert await _accepted_approvals(handle) == 1


async def test_a_key_that_is_not_an_approvers_is_refused(
    governed: Governed, page: Page, tmp_path: Path
) -> None:
    handle = await _waiting(governed)
    stranger = tmp_path / "stranger.key"
    write_private_key(Ed25519PrivateKey.generate(), stranger)
    try:
        await _sign_in_browser(page, governed, handle.id, stranger)
        assert "The workflow refused the approval" in await page.inner_text("#problem")
        assert await _accepted_approvals(handle) == 0
        status = await handle.query("ecp.status", result_type=dict)
        assert status.get("step") == "approve"
        assert not status.get("approvals")
    finally:
        await handle.terminate("test over")


async def test_an_approval_form_without_its_csrf_token_is_refused(governed: Governed) -> None:
    handle = await _waiting(governed)
    try:
        async with httpx.AsyncClient(base_url=governed.console.url, timeout=60) as http:
            resp = await http.post(
                f"/governance/{handle.id}/approve",
                data={"payload": "e30=", "signature": "AA=="},
            )
        assert resp.status_code == 403
        assert await _accepted_approvals(handle) == 0
    finally:
        await handle.terminate("test over")
