"""The governance table never breaks a word inside a cell, from laptop to phone width.

It once wrapped "complete / d" and "launch_missil / es" at 1280 px. Every
word in every cell is measured in the browser: a word drawn on two lines
has client rectangles at two heights.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, ViewportSize

from ecp.workflows._models import GovernedRequest, TaskQueues
from ecp.workflows._start import start_governed
from tests.console.conftest import Governed

# Each word of each cell, and the line tops it is drawn on.
_BROKEN_WORDS = """
() => {
  const broken = [];
  for (const td of document.querySelectorAll('#executions td')) {
    const walker = document.createTreeWalker(td, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const re = /\\S+/g;
      for (let m = re.exec(n.data); m; m = re.exec(n.data)) {
        const r = document.createRange();
        r.setStart(n, m.index);
        r.setEnd(n, m.index + m[0].length);
        const tops = new Set(
          [...r.getClientRects()].filter(x => x.width > 0).map(x => Math.round(x.top)));
        if (tops.size > 1) broken.push(m[0]);
      }
    }
  }
  return broken;
}
"""
_WIDTHS: list[tuple[str, ViewportSize]] = [
    ("list", {"width": 1280, "height": 800}),
    ("1024", {"width": 1024, "height": 768}),
    ("narrow", {"width": 390, "height": 844}),
]


@pytest.fixture(scope="module")
async def long_id(governed: Governed) -> AsyncIterator[str]:
    """A governed run whose workflow id is far longer than a cell, and one awaiting approval."""
    s = governed.settings
    waiting = await start_governed(
        governed.client,
        GovernedRequest(
            action="payout",
            args=[{"amount": 5000, "currency": "EUR", "recipient": "acme"}],
            initiator="alice",
            approval_timeout_seconds=3600,
            queues=TaskQueues(s.authority_queue, s.executor_queue),
        ),
        workflow_id=f"waiting-{uuid.uuid4().hex[:8]}",
    )
    while (await waiting.query("ecp.status", result_type=dict)).get("step") != "approve":
        await asyncio.sleep(0.1)
    wf_id = f"quarterly-settlement-batch-{uuid.uuid4().hex}-eu-west-retry-0001"
    handle = await start_governed(
        governed.client,
        GovernedRequest(
            action="payout",
            args=[{"amount": 10, "currency": "EUR", "recipient": "acme"}],
            initiator="alice",
            queues=TaskQueues(s.authority_queue, s.executor_queue),
        ),
        workflow_id=wf_id,
    )
    await handle.result()
    while (await governed.client.count_workflows(f"WorkflowId = '{wf_id}'")).count < 1:
        await asyncio.sleep(0.1)  # visibility trails the close
    yield wf_id
    await waiting.terminate("test over")


async def _open(browser: Browser, viewport: ViewportSize, url: str) -> Page:
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    await page.goto(url)
    return page


@pytest.mark.parametrize(("name", "viewport"), _WIDTHS, ids=[n for n, _ in _WIDTHS])
async def test_no_word_breaks_inside_a_cell(
    governed: Governed,
    browser: Browser,
    screenshots: Path,
    long_id: str,
    name: str,
    viewport: ViewportSize,
) -> None:
    page = await _open(browser, viewport, governed.console.url + "/governance")
    rows = page.locator("#executions tbody tr[data-workflow-id]")
    assert await rows.count() >= 4
    assert await page.locator("#executions .tag-allow_after_approval").count() >= 1
    assert await page.evaluate(_BROKEN_WORDS) == []
    # Nothing scrolls sideways: neither the page nor the table's own region.
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    region = page.locator(".scroll:has(#executions)")
    assert await region.evaluate("e => e.scrollWidth <= e.clientWidth")
    # The long id is shortened on screen; its link holds the full value to
    # copy, and shows it on hover.
    link = page.locator(f"tr[data-workflow-id='{long_id}'] a.wf-id")
    assert await link.get_attribute("title") == long_id
    assert await link.text_content() == long_id
    assert await link.evaluate("a => a.scrollWidth > a.clientWidth")  # cut by the ellipsis
    for wf_id, words in ((governed.allowed_id, "completed"), (governed.denied_id, "denied")):
        assert words in await page.locator(f"tr[data-workflow-id='{wf_id}']").inner_text()
    await page.screenshot(path=str(screenshots / f"governance-{name}.png"), full_page=True)
    await page.context.close()
