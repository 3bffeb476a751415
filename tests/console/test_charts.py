"""Charts on the Governance and Health pages, against the real stack's runs and ledger.

This module's stack holds exactly: one allowed payout, one denied action,
one payout approved by carol and one still waiting for approval. Each
chart's numbers (its JSON, and the table beside its picture) are checked
against those runs and against the ledger itself.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser

from ecp._approve import approve
from ecp._keyring import DEMO_APPROVER
from ecp.authority._keys import Ed25519FileSigner, load_private_key
from ecp.lineage.ledger._evidence import OutcomeStatus, parse_evidence
from ecp.lineage.ledger._ledger import Ledger
from ecp.workflows._models import GovernedRequest, TaskQueues
from ecp.workflows._start import start_governed
from tests.console.conftest import WIDE, Governed


@dataclass
class Approvals:
    approved_id: str
    waiting_id: str


async def _start_large(governed: Governed, wf_id: str) -> None:
    s = governed.settings
    handle = await start_governed(
        governed.client,
        GovernedRequest(
            action="payout",
            args=[{"amount": 5000, "currency": "EUR", "recipient": "acme"}],
            initiator="alice",
            approval_timeout_seconds=3600,
            queues=TaskQueues(s.authority_queue, s.executor_queue),
        ),
        workflow_id=wf_id,
    )
    # Wait on the workflow's own state, not on a clock.
    while (await handle.query("ecp.status", result_type=dict)).get("step") != "approve":
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def approvals(governed: Governed) -> AsyncIterator[Approvals]:
    tag = uuid.uuid4().hex[:8]
    approved_id, waiting_id = f"approved-{tag}", f"waiting-{tag}"
    await _start_large(governed, approved_id)
    await _start_large(governed, waiting_id)
    signer = Ed25519FileSigner(load_private_key(governed.keys.approver))
    await approve(governed.client, approved_id, signer=signer, approver=DEMO_APPROVER)
    result = await governed.client.get_workflow_handle(approved_id).result()
    assert result["outcome"] == "completed"
    queue = governed.settings.executor_queue
    while (
        await governed.client.count_workflows(f"TaskQueue = '{queue}' AND ECPOutcome = 'completed'")
    ).count < 2:
        await asyncio.sleep(0.1)  # visibility trails the close
    try:
        yield Approvals(approved_id, waiting_id)
    finally:
        await governed.client.get_workflow_handle(waiting_id).terminate("test over")


def _totals(doc: dict[str, object]) -> dict[str, float]:
    series = doc["series"]
    assert isinstance(series, list)
    return {s["name"]: sum(v or 0 for v in s["values"]) for s in series}


async def _json(governed: Governed, name: str, window: str = "1h") -> dict[str, object]:
    async with httpx.AsyncClient(base_url=governed.console.url, timeout=60) as http:
        resp = await http.get(f"/api/charts/{name}", params={"window": window})
    assert resp.status_code == 200, resp.text
    doc: dict[str, object] = resp.json()
    return doc


async def test_decisions_and_outcomes_count_this_stacks_runs(
    governed: Governed, approvals: Approvals
) -> None:
    for window, bars in (("1h", 12), ("24h", 24)):
        doc = await _json(governed, "governed-decisions", window)
        assert doc["kind"] == "stacked"
        labels = doc["labels"]
        assert isinstance(labels, list)
        assert len(labels) == bars
        # Other test modules' runs (other queues) are unverified here: left out.
        assert _totals(doc) == {"allow": 1, "deny": 1, "allow_after_approval": 2}
    outcomes = _totals(await _json(governed, "governed-outcomes"))
    assert outcomes == {"completed": 2, "denied": 1, "running": 1}


async def test_approval_waits_name_each_execution(governed: Governed, approvals: Approvals) -> None:
    doc = await _json(governed, "approval-waits")
    labels = doc["labels"]
    assert isinstance(labels, list)
    assert set(labels) == {approvals.approved_id, approvals.waiting_id}
    series = {s["name"]: s["values"] for s in doc["series"]}  # type: ignore[attr-defined]
    done = series["approved after"][labels.index(approvals.approved_id)]
    assert done is not None
    assert done >= 0
    assert series["still waiting"][labels.index(approvals.approved_id)] is None
    assert series["still waiting"][labels.index(approvals.waiting_id)] is not None


async def test_ledger_charts_match_the_ledger(governed: Governed, approvals: Approvals) -> None:
    with Ledger.open(governed.settings.db_url, create=False) as ledger:
        size = ledger.head().size
        checkpoints = ledger.stored_checkpoints(limit=1)
    denials = await _json(governed, "denial-reasons")
    assert denials["labels"] == ["unknown_action"]
    assert _totals(denials) == {"denials": 1}
    sizes = (await _json(governed, "ledger-size"))["series"][0]["values"]  # type: ignore[index]
    assert sizes[-1] == size
    assert sizes == sorted(sizes)
    ages = (await _json(governed, "checkpoint-age"))["series"][0]["values"]  # type: ignore[index]
    assert checkpoints, "the stack signs checkpoints"
    assert ages[-1] is not None
    assert ages[-1] >= 0
    latency = await _json(governed, "attempt-duration")
    p50, p95 = (s["values"] for s in latency["series"])  # type: ignore[attr-defined]
    measured = [(a, b) for a, b in zip(p50, p95, strict=True) if a is not None]
    assert measured
    assert all(a <= b for a, b in measured)
    # Gate latency is the gate's own time, from its signed evidence: the two
    # completed payouts record when their bodies were admitted.
    samples = []
    with Ledger.open(governed.settings.db_url, create=False) as ledger:
        for i in range(ledger.head().size):
            p = parse_evidence(ledger.entry(i).envelope).predicate
            if p.outcome.status is OutcomeStatus.COMPLETED:
                assert p.admitted_at is not None
                assert p.started_at <= p.admitted_at <= p.finished_at
                samples.append(_ms(p.admitted_at) - _ms(p.started_at))
    assert len(samples) == 2
    assert f"{len(samples)} attempts timed" in str(latency["note"])
    for a, b in measured:
        assert min(samples) - 0.1 <= a <= b <= max(samples) + 0.1


def _ms(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000


async def test_a_bad_window_is_refused(governed: Governed) -> None:
    async with httpx.AsyncClient(base_url=governed.console.url) as http:
        bad = await http.get("/api/charts/ledger-size", params={"window": "7y"})
        assert bad.status_code == 400
        assert (await http.get("/api/charts/nope")).status_code == 404


@pytest.mark.parametrize(
    ("path", "names"),
    [
        ("/governance", ["governed-decisions", "governed-outcomes", "approval-waits"]),
        ("/health", ["denial-reasons", "attempt-duration", "ledger-size", "checkpoint-age"]),
    ],
)
async def test_charts_on_the_pages_carry_their_numbers(
    governed: Governed,
    approvals: Approvals,
    browser: Browser,
    screenshots: Path,
    path: str,
    names: list[str],
) -> None:
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    resp = await page.goto(governed.console.url + path)
    assert resp is not None
    # Drawn on the server: the CSP stays strict, no inline style or script.
    csp = resp.headers["content-security-policy"]
    assert "unsafe-inline" not in csp
    html = await page.content()
    assert "style=" not in html
    figures = page.locator("#charts figure[data-chart]")
    assert await figures.evaluate_all("fs => fs.map(f => f.dataset.chart)") == names
    for name in names:
        fig = page.locator(f"#chart-{name}")
        svg = fig.locator("svg[role=img]")
        assert await svg.count() == 1, name
        assert await svg.get_attribute("aria-labelledby") == f"chart-{name}-title"
        doc = await _json(governed, name)
        # The table beside the picture holds the JSON's numbers.
        rows = await fig.locator("table.chart-table tbody tr").count()
        assert rows == len(doc["labels"])  # type: ignore[arg-type]
        assert await fig.locator("a.chart-json").get_attribute("href") == (
            f"/api/charts/{name}?window=1h"
        )
    await page.locator("#charts").screenshot(
        path=str(screenshots / f"charts-{path.strip('/')}.png")
    )
    await page.click("#charts a[data-window='24h']")
    await page.wait_for_url("**window=24h")
    assert await page.locator("#charts a[aria-current='true']").get_attribute("data-window") == (
        "24h"
    )
    await context.close()
