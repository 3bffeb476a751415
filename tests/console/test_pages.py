"""Governance, execution, health and error pages against a real governed stack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page

from ecp.lineage.ledger._ledger import Ledger
from tests.console.conftest import NARROW, WIDE, Governed


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=WIDE)
    p = await context.new_page()
    yield p
    await context.close()


async def _no_sideways_scroll(page: Page) -> bool:
    return bool(await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


async def test_health_json_reflects_the_real_stack(governed: Governed) -> None:
    async with httpx.AsyncClient(base_url=governed.console.url) as http:
        resp = await http.get("/api/health")
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    items = {i["name"]: i for i in doc["items"]}
    assert set(items) == {
        "temporal",
        "authority workers",
        "executor workers",
        "ledger",
        "ledger verification",
        "gate denials",
        "outcomes to review",
        "halts",
        "trust store",
        "policy",
    }
    assert items["temporal"]["status"] == "green"
    assert items["halts"]["status"] == "green", items["halts"]["reason"]
    for name in ("authority workers", "executor workers"):
        assert items[name]["status"] == "green", items[name]["reason"]
    assert items["authority workers"]["details"]["queue"] == governed.settings.authority_queue
    assert items["executor workers"]["details"]["workflow"]["pollers"] >= 1
    with Ledger.open(governed.settings.db_url, create=False) as ledger:
        size = ledger.head().size
    assert items["ledger"]["details"]["size"] == size
    assert items["ledger"]["status"] == "green", items["ledger"]["reason"]
    assert items["trust store"]["details"]["roles"]["log"] == {"active": 1, "total": 1}
    assert items["policy"]["details"]["digest"] == governed.allowed.policy_digest
    # The full verification ran (in the background, cached) and passed.
    verified = items["ledger verification"]
    assert verified["status"] == "green", verified["reason"]
    assert verified["details"]["ok"] is True
    assert verified["details"]["ageSeconds"] >= 0
    assert f"all {size} entries" in verified["reason"]
    # The denied run is counted by its reason code over the last hour.
    denials = items["gate denials"]
    assert denials["status"] == "green", denials["reason"]
    assert denials["details"]["total"] >= 1, denials
    assert denials["details"]["complete"] is True
    assert denials["details"]["byReason"].get("unknown_action", 0) >= 1, denials
    assert "unknown_action × " in denials["reason"]
    # No executor died inside a body here: nothing for a person to review.
    review = items["outcomes to review"]
    assert review["status"] == "green", review["reason"]
    assert review["details"]["total"] == 0
    assert doc["status"] == "green"
    # Public material only: no private key, no key file contents, no database URL.
    assert "PRIVATE" not in resp.text
    assert "sqlite" not in resp.text


async def test_health_page_at_both_widths(
    governed: Governed, browser: Browser, screenshots: Path
) -> None:
    for name, viewport in (("wide", WIDE), ("narrow", NARROW)):
        context = await browser.new_context(viewport=viewport)
        page = await context.new_page()
        await page.goto(governed.console.url + "/health")
        assert await page.get_attribute("#overall", "data-status") == "green"
        row = page.locator("tr[data-item='executor workers']")
        assert await row.get_attribute("data-status") == "green"
        # Status is spelled out, not only coloured.
        assert "✓ green" in await row.inner_text()
        assert await _no_sideways_scroll(page)
        await page.screenshot(path=str(screenshots / f"health-{name}.png"), full_page=True)
        await context.close()


async def test_governance_list_filters_and_links(
    governed: Governed, page: Page, screenshots: Path
) -> None:
    await page.goto(governed.console.url + "/governance")
    allowed = page.locator(f"tr[data-workflow-id='{governed.allowed_id}']")
    denied = page.locator(f"tr[data-workflow-id='{governed.denied_id}']")
    assert "allow" in await allowed.inner_text()
    assert "deny" in await denied.inner_text()

    await page.select_option("select[name=decision]", "deny")
    await page.fill("input[name=initiator]", "alice")
    await page.click("form.filters button[type=submit]")
    await page.wait_for_url("**/governance?decision=deny*")
    assert await page.locator(f"tr[data-workflow-id='{governed.denied_id}']").count() == 1
    assert await page.locator(f"tr[data-workflow-id='{governed.allowed_id}']").count() == 0

    await page.goto(governed.console.url + "/governance?action=payout&initiator=nobody-" + "x")
    assert await page.locator("#empty").count() == 1


async def test_governance_pages_instead_of_listing_everything(governed: Governed) -> None:
    from ecp.console.governance import GovernanceFilter, list_executions

    queues = frozenset({governed.settings.executor_queue})
    first = await list_executions(governed.client, GovernanceFilter(), queues=queues, page_size=1)
    assert len(first.rows) == 1
    assert first.next_token
    second = await list_executions(
        governed.client,
        GovernanceFilter(),
        queues=queues,
        page_token=first.next_token,
        page_size=1,
    )
    assert len(second.rows) == 1
    assert second.rows[0].workflow_id != first.rows[0].workflow_id


async def test_execution_detail_links_its_receipt(
    governed: Governed, browser: Browser, screenshots: Path
) -> None:
    for name, viewport in (("wide", WIDE), ("narrow", NARROW)):
        context = await browser.new_context(viewport=viewport)
        page = await context.new_page()
        await page.goto(f"{governed.console.url}/governance/{governed.allowed_id}")
        assert "allow" in await page.inner_text("#decision")
        link = page.locator("#receipt-link")
        assert await link.get_attribute("href") == f"/proofs?index={governed.allowed.ledger_index}"
        assert await _no_sideways_scroll(page)
        await page.screenshot(path=str(screenshots / f"execution-{name}.png"), full_page=True)
        await context.close()


async def test_governance_at_narrow_width(
    governed: Governed, browser: Browser, screenshots: Path
) -> None:
    context = await browser.new_context(viewport=NARROW)
    page = await context.new_page()
    await page.goto(governed.console.url + "/governance")
    # The table scrolls inside its own region; the page itself does not.
    assert await _no_sideways_scroll(page)
    await context.close()


@pytest.mark.parametrize(
    ("path", "status", "sentence"),
    [
        (
            "/governance/no-such-workflow-xyz",
            404,
            "No workflow with id 'no-such-workflow-xyz' exists in namespace 'default'.",
        ),
        (
            "/governance?initiator=x%27%20OR%201%3D1",
            400,
            "The ECPInitiator filter may only hold letters, digits and . _ : @ / + -.",
        ),
        (
            "/governance?page=%%%",
            400,
            "The page token is not valid; start again from the first page.",
        ),
        ("/proofs?index=-1", 503, "A ledger index is a non-negative whole number."),
        ("/nowhere", 404, "There is no page at this address."),
    ],
)
async def test_bad_input_is_one_sentence(
    governed: Governed, page: Page, path: str, status: int, sentence: str
) -> None:
    resp = await page.goto(governed.console.url + path)
    assert resp is not None
    assert resp.status == status
    assert (await page.inner_text("#problem")).strip() == sentence
    assert "Traceback" not in await page.content()


async def test_error_page_screenshot(governed: Governed, page: Page, screenshots: Path) -> None:
    await page.goto(governed.console.url + "/governance/no-such-workflow-xyz")
    await page.screenshot(path=str(screenshots / "error-unknown-workflow.png"), full_page=True)


async def test_pages_send_a_strict_content_security_policy(governed: Governed) -> None:
    async with httpx.AsyncClient(base_url=governed.console.url) as http:
        for path in ("/governance", "/proofs", "/health", "/api/health", "/nowhere"):
            resp = await http.get(path)
            csp = resp.headers["content-security-policy"]
            assert "script-src 'self'" in csp
            assert "connect-src 'none'" in csp
            assert resp.headers["x-content-type-options"] == "nosniff"
        # Read-only: nothing accepts a write.
        assert (await http.post("/proofs")).status_code == 405


async def test_execution_detail_shows_the_grant_from_history(
    governed: Governed, page: Page
) -> None:
    await page.goto(f"{governed.console.url}/governance/{governed.allowed_id}")
    grant = page.locator("#grants dl.grant")
    assert await grant.count() == 1

    async def field(key: str) -> str:
        return (await grant.locator(f"dd[data-key='{key}']").inner_text()).strip()

    desc = await governed.client.get_workflow_handle(governed.allowed_id).describe()
    assert await field("grant_id") == governed.allowed.grant_id
    assert await field("decision_id") == governed.allowed.decision_id
    assert await field("policy_digest") == governed.allowed.policy_digest
    assert await field("workflow_id") == governed.allowed_id
    assert await field("run_id") == desc.run_id
    assert await field("namespace") == governed.settings.namespace
    assert await field("initiator") == "alice"
    assert (await field("args_digest")).startswith("sha256:")
    assert (await field("environment_digest")).startswith("sha256:")
    assert int(await field("max_attempts")) >= 1
    assert await field("activity_type")
    assert await field("activity_id")
    assert await field("not_before") != "—"
    assert await field("expires_at") != "—"
    # Parsed, not verified: the page says so and points at the cross-check.
    trust = await page.inner_text("#grant-trust")
    assert "not verified here" in trust
    assert "Lineage Explorer" in trust
    # A denied run never had a grant.
    await page.goto(f"{governed.console.url}/governance/{governed.denied_id}")
    assert await page.locator("#grants").count() == 0


def test_an_unreadable_grant_header_is_one_sentence() -> None:
    from ecp.console.governance import parse_grant_header

    view = parse_grant_header(7, "execute", b'{"payload": "x", "payload": "y"}')
    assert view.grant is None
    assert view.problem is not None
    assert view.problem.startswith("The grant header cannot be read:")
    assert "\n" not in view.problem


async def test_health_audit_flags_a_damaged_copy_and_a_capped_denial_scan(
    governed: Governed, tmp_path: Path
) -> None:
    import sqlite3
    from datetime import UTC, datetime, timedelta

    from ecp.authority._keys import load_public_key
    from ecp.console.audit import LedgerAuditor, count_denials

    src = Path(governed.settings.db_url.removeprefix("sqlite:///"))
    copy = tmp_path / "copy.db"
    with sqlite3.connect(src) as a, sqlite3.connect(copy) as b:
        a.backup(b)
    key = load_public_key(governed.keys.log.with_suffix(".pub"))
    now = datetime.now(UTC)
    with Ledger.open(f"sqlite:///{copy}", create=False) as ledger:
        ok = await LedgerAuditor(timedelta(minutes=10)).latest(ledger, key, now)
        assert ok is not None
        assert ok.ok, ok.summary
        # Only the newest entry is read when the cap is 1 and more fall in the hour.
        capped = count_denials(ledger, now, cap=1)
        assert capped.scanned == 1
        assert capped.complete is (ledger.head().size == 1)
        # Nothing is older than an hour ago from two hours ago.
        assert count_denials(ledger, now - timedelta(hours=2)).scanned == 0
    with sqlite3.connect(copy) as db:
        (env,) = db.execute("SELECT envelope FROM ledger_entry WHERE seq = 0").fetchone()
        env = bytearray(env)
        env[len(env) // 2] ^= 0x01
        db.execute("UPDATE ledger_entry SET envelope = ? WHERE seq = 0", (bytes(env),))
    with Ledger.open(f"sqlite:///{copy}", create=False) as ledger:
        bad = await LedgerAuditor(timedelta(minutes=10)).latest(ledger, key, now)
    assert bad is not None
    assert not bad.ok
    assert bad.tampered, bad.summary
