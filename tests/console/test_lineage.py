"""Lineage Explorer against a real governed workflow: graph, details, highlight, downloads."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page

from ecp.authority._keys import load_public_key
from ecp.authority._truststore import TrustStore
from ecp.cli.lineage import governed_activity_types
from ecp.lineage._crosscheck import annotate_graph, cross_check
from ecp.lineage.graph._build import build_graph
from ecp.lineage.graph._export import ExportFormat
from ecp.lineage.graph._history import fetch_histories
from ecp.lineage.ledger._ledger import Ledger
from tests.console.conftest import NARROW, WIDE, Governed


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=WIDE, accept_downloads=True)
    p = await context.new_page()
    yield p
    await context.close()


async def _expected_nodes(governed: Governed, workflow_id: str) -> int:
    """The node count the lineage module itself gives, cross-check included."""
    histories = await fetch_histories(governed.client, workflow_id)
    g = build_graph(histories)
    with Ledger.open(governed.settings.db_url, create=False) as ledger:
        report = cross_check(
            histories,
            ledger=ledger,
            trust=TrustStore.load(governed.settings.trust),
            log_key=load_public_key(governed.keys.log),
            origin=governed.settings.log_origin,
            governed_types=governed_activity_types(),
        )
    annotate_graph(g, report)
    assert not [f for f in report.findings if f.status == "violation"]
    return int(g.number_of_nodes())


async def test_lineage_graph_details_and_download(
    governed: Governed, page: Page, screenshots: Path
) -> None:
    expected = await _expected_nodes(governed, governed.allowed_id)
    await page.goto(f"{governed.console.url}/governance/{governed.allowed_id}")
    await page.click("#lineage-link")
    await page.wait_for_url(f"**/lineage/{governed.allowed_id}")
    await page.wait_for_selector("#viewport[data-ready='1']")
    assert int(await page.get_attribute("#node-count", "data-count") or -1) == expected
    assert await page.locator("#viewport g.node[data-node]").count() == expected
    assert await page.locator("#check-ok").count() == 1

    # Click the ledger entry: details name the entry and its verification status.
    ledger_node = page.locator("#viewport g.node.gov-ok").filter(has_text="ledger entry")
    await ledger_node.first.click()
    await page.wait_for_selector("#viewport[data-selected]")
    facts = page.locator("#details-facts")
    assert "ledger_entry" in await facts.inner_text()
    assert "✓ ok" in await facts.locator("dd[data-key='governance']").inner_text()
    assert (
        await page.get_attribute("#details-ledger-link", "href")
        == f"/proofs?index={governed.allowed.ledger_index}"
    )
    # Ancestors are highlighted (the decision and grant lead to the entry).
    assert int(await page.get_attribute("#viewport", "data-ancestors") or 0) > 0
    assert await page.locator("#viewport g.node.ancestor").count() > 0
    await page.screenshot(path=str(screenshots / "lineage-wide.png"), full_page=True)

    # Zoom and pan change the view box, not the page.
    before = await page.get_attribute("#lineage-svg", "viewBox")
    await page.click("#zoom-in")
    await page.wait_for_function(
        "b => document.getElementById('lineage-svg').getAttribute('viewBox') !== b", arg=before
    )
    box = await page.locator("#viewport").bounding_box()
    assert box is not None
    zoomed = await page.get_attribute("#lineage-svg", "viewBox")
    await page.mouse.move(box["x"] + 20, box["y"] + 20)
    await page.mouse.down()
    await page.mouse.move(box["x"] + 120, box["y"] + 90, steps=5)
    await page.mouse.up()
    await page.wait_for_function(
        "b => document.getElementById('lineage-svg').getAttribute('viewBox') !== b", arg=zoomed
    )

    # Every format is offered; PROV-JSON downloads as a PROV document.
    formats = await page.locator("#exports a").evaluate_all("as => as.map(a => a.dataset.format)")
    assert sorted(formats) == sorted(f.value for f in ExportFormat)
    async with page.expect_download() as info:
        await page.click("#exports a[data-format='prov-json']")
    download = await info.value
    doc = json.loads(Path(await download.path()).read_text())
    assert {"prefix", "activity", "entity"} <= set(doc)
    assert download.suggested_filename == f"{governed.allowed_id}.prov.json"


async def test_every_export_format_serves(governed: Governed) -> None:
    async with httpx.AsyncClient(base_url=governed.console.url, timeout=60) as http:
        for fmt in ExportFormat:
            resp = await http.get(f"/lineage/{governed.allowed_id}/export/{fmt.value}")
            assert resp.status_code == 200, (fmt, resp.text)
            assert "attachment" in resp.headers["content-disposition"]
            assert resp.text.strip()
        bad = await http.get(f"/lineage/{governed.allowed_id}/export/pdf")
        assert bad.status_code == 400
        assert "There is no export format" in bad.text
        missing = await http.get("/lineage/no-such-workflow-xyz")
        assert missing.status_code == 404
        assert "No workflow with id" in missing.text


async def test_lineage_denied_and_narrow(
    governed: Governed, browser: Browser, screenshots: Path
) -> None:
    context = await browser.new_context(viewport=NARROW)
    page = await context.new_page()
    await page.goto(f"{governed.console.url}/lineage/{governed.denied_id}?children=1")
    await page.wait_for_selector("#viewport[data-ready='1']")
    assert await page.locator("#viewport g.node[data-node]").count() > 0
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await page.screenshot(path=str(screenshots / "lineage-narrow.png"), full_page=True)
    await context.close()
