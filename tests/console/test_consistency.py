"""Consistency of two real checkpoints, checked in the browser; the strict receipt parser."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page

from ecp.authority._keys import load_public_key
from ecp.lineage.ledger._checkpoint import open_checkpoint
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger._merkle import verify_consistency
from tests.console.conftest import WIDE, Governed


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=WIDE)
    p = await context.new_page()
    yield p
    await context.close()


def _sizes(g: Governed) -> tuple[int, int]:
    with Ledger.open(g.settings.db_url, create=False) as ledger:
        sizes = sorted({cp.checkpoint.size for cp in ledger.checkpoints()})
    assert len(sizes) >= 2, sizes
    return sizes[0], sizes[-1]


async def _check(page: Page, g: Governed, doc: str | None, old: int, new: int) -> tuple[str, str]:
    await page.goto(f"{g.console.url}/proofs?old={old}&new={new}")
    await page.wait_for_selector("body[data-verifier-ready='1']")
    if doc is not None:
        await page.fill("#consistency", doc)
    await page.fill("#log-key", g.keys.log.with_suffix(".pub").read_text())
    await page.fill("#origin", g.settings.log_origin)
    await page.click("#verify-consistency")
    verdict = page.locator("#consistency-verdict[data-verdict]")
    await verdict.wait_for()
    return (
        await verdict.get_attribute("data-verdict") or "",
        await page.inner_text("#consistency-verdict"),
    )


async def test_real_checkpoints_are_consistent_in_the_browser(
    governed: Governed, page: Page, screenshots: Path
) -> None:
    old, new = _sizes(governed)
    async with httpx.AsyncClient(base_url=governed.console.url) as http:
        resp = await http.get("/api/consistency", params={"old": old, "new": new})
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    # The server-side reference agrees with what the browser will check.
    key = load_public_key(governed.keys.log)
    old_cp, _ = open_checkpoint(doc["oldCheckpoint"], key, origin=governed.settings.log_origin)
    new_cp, _ = open_checkpoint(doc["newCheckpoint"], key, origin=governed.settings.log_origin)
    proof = [base64.b64decode(h) for h in doc["consistencyProof"]]
    verify_consistency(old, new, old_cp.root_hash, new_cp.root_hash, proof)

    verdict, text = await _check(page, governed, None, old, new)
    assert verdict == "ok", text
    assert f"extends its tree at size {old}" in text
    await page.screenshot(path=str(screenshots / "proof-consistency.png"), full_page=True)

    # One flipped byte in one proof hash: the browser names the broken step.
    raw = bytearray(proof[0])
    raw[0] ^= 0x01
    doc["consistencyProof"][0] = base64.b64encode(bytes(raw)).decode()
    verdict, text = await _check(page, governed, json.dumps(doc), old, new)
    assert verdict == "fail"
    assert await page.get_attribute("#consistency-verdict", "data-step") == "proof mismatch"
    assert "consistency proof does not lead to the" in text


async def test_a_wrong_key_fails_at_the_signature(governed: Governed, page: Page) -> None:
    old, new = _sizes(governed)
    pem = governed.keys.authority.with_suffix(".pub").read_text()  # not the log's key
    await page.goto(f"{governed.console.url}/proofs?old={old}&new={new}")
    await page.wait_for_selector("body[data-verifier-ready='1']")
    await page.fill("#log-key", pem)
    await page.click("#verify-consistency")
    await page.locator("#consistency-verdict[data-verdict='fail']").wait_for()
    assert await page.get_attribute("#consistency-verdict", "data-step") == "bad signature"
    assert "old checkpoint" in await page.inner_text("#consistency-verdict")


@pytest.mark.parametrize(
    ("query", "status", "sentence"),
    [
        ("old=0", 400, "The old tree size must be a positive whole number."),
        ("old=abc", 400, "The old tree size must be a positive whole number."),
        ("old=1&new=999999", 404, "The ledger holds no signed checkpoint of tree size 999999."),
    ],
)
async def test_consistency_bad_input_is_one_sentence(
    governed: Governed, query: str, status: int, sentence: str
) -> None:
    async with httpx.AsyncClient(base_url=governed.console.url) as http:
        resp = await http.get(f"/api/consistency?{query}")
    assert resp.status_code == status
    assert resp.json() == {"error": sentence}


async def test_a_receipt_that_repeats_a_key_is_refused_in_the_browser(
    governed: Governed, page: Page
) -> None:
    receipt = governed.allowed.receipt.strip()
    assert receipt.endswith("}")
    # JSON.parse alone would take the last logIndex and carry on.
    doc = json.loads(receipt)
    repeated = receipt[:-1] + f',"logIndex":{doc["logIndex"]}}}'
    await page.goto(governed.console.url + "/proofs")
    await page.wait_for_selector("body[data-verifier-ready='1']")
    await page.fill("#receipt", repeated)
    await page.fill("#log-key", governed.keys.log.with_suffix(".pub").read_text())
    await page.click("#verify")
    await page.locator("#verdict[data-verdict='fail']").wait_for()
    assert await page.get_attribute("#verdict", "data-step") == "malformed receipt"
    assert 'repeats the key "logIndex"' in await page.inner_text("#verdict")
    # The untouched receipt still verifies in the same page.
    await page.fill("#receipt", receipt)
    await page.click("#verify")
    await page.locator("#verdict[data-verdict='ok']").wait_for()
