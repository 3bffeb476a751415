"""The proof viewer verifies real receipts in the browser; every verdict is read from the DOM."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from ecp.authority._keys import load_public_key
from ecp.lineage.ledger._receipt import verify_receipt
from ecp.lineage.ledger.errors import (
    InclusionProofError,
    NoteSignatureError,
    ReceiptEntryMismatchError,
)
from tests.console.conftest import NARROW, WIDE, Governed


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=WIDE)
    p = await context.new_page()
    yield p
    await context.close()


async def _verify(page: Page, url: str, receipt: str | None, key: str, origin: str = "") -> str:
    """Open the viewer, fill it, verify; return the verdict element's data-verdict."""
    await page.goto(url + "/proofs")
    await page.wait_for_selector("body[data-verifier-ready='1']")
    if receipt is not None:
        await page.fill("#receipt", receipt)
    await page.fill("#log-key", key)
    await page.fill("#origin", origin)
    await page.click("#verify")
    verdict = await page.wait_for_selector("#verdict[data-verdict]")
    assert verdict is not None
    return await verdict.get_attribute("data-verdict") or ""


def _log_pub(g: Governed) -> str:
    return g.keys.log.with_suffix(".pub").read_text()


def _flip(doc: dict[str, object], path: str) -> str:
    """Copy of the receipt with exactly one byte of one field changed."""
    d = json.loads(json.dumps(doc))
    if path == "entry.payload":
        raw = bytearray(base64.b64decode(d["entry"]["payload"]))
        raw[len(raw) // 2] ^= 0x01
        d["entry"]["payload"] = base64.b64encode(bytes(raw)).decode()
    elif path == "proof.hash":
        raw = bytearray(base64.b64decode(d["inclusionProof"]["hashes"][0]))
        raw[0] ^= 0x01
        d["inclusionProof"]["hashes"][0] = base64.b64encode(bytes(raw)).decode()
    elif path == "checkpoint.root":
        origin, size, root, *rest = d["checkpoint"].split("\n")
        raw = bytearray(base64.b64decode(root))
        raw[0] ^= 0x01
        d["checkpoint"] = "\n".join([origin, size, base64.b64encode(bytes(raw)).decode(), *rest])
    return json.dumps(d, indent=2)


async def test_real_receipt_verifies_in_the_browser(
    governed: Governed, page: Page, screenshots: Path
) -> None:
    receipt = governed.allowed.receipt
    # The server-side verifier agrees (the reference for the browser's answer).
    ref = verify_receipt(receipt, load_public_key(governed.keys.log))
    verdict = await _verify(
        page, governed.console.url, receipt, _log_pub(governed), governed.settings.log_origin
    )
    text = await page.inner_text("#verdict")
    assert verdict == "ok", text
    assert f"entry {ref.log_index} is in log {ref.origin}" in text
    steps = await page.inner_text("#steps")
    assert ref.leaf_hash.hex() in steps
    assert ref.root_hash.hex() in steps
    assert "payout" in (await page.text_content("#statement") or "")
    hashes = json.loads(receipt)["inclusionProof"]["hashes"]
    assert await page.locator("#path li").count() == 1 + len(hashes)
    await page.screenshot(path=str(screenshots / "proof-viewer-verified.png"), full_page=True)


@pytest.mark.parametrize(
    ("field", "step", "python_error"),
    [
        ("entry.payload", "proof mismatch", ReceiptEntryMismatchError),
        ("proof.hash", "proof mismatch", InclusionProofError),
        ("checkpoint.root", "bad signature", NoteSignatureError),
    ],
)
async def test_one_byte_tampered_receipt_fails_in_the_browser(
    governed: Governed, page: Page, field: str, step: str, python_error: type[Exception]
) -> None:
    doc = json.loads(governed.allowed.receipt)
    if field == "proof.hash" and not doc["inclusionProof"]["hashes"]:
        doc = json.loads(governed.denied.receipt)  # a tree of one has no proof hashes
    tampered = _flip(doc, field)
    # The Python verifier fails at the same step (the reference for the browser).
    with pytest.raises(python_error):
        verify_receipt(tampered, load_public_key(governed.keys.log))
    verdict = await _verify(page, governed.console.url, tampered, _log_pub(governed))
    assert verdict == "fail"
    assert await page.get_attribute("#verdict", "data-step") == step
    assert step in await page.inner_text("#verdict")


async def test_wrong_log_key_fails_at_the_signature_step(
    governed: Governed, page: Page, screenshots: Path
) -> None:
    wrong = governed.keys.authority.with_suffix(".pub").read_text()
    verdict = await _verify(page, governed.console.url, governed.allowed.receipt, wrong)
    assert verdict == "fail"
    assert await page.get_attribute("#verdict", "data-step") == "bad signature"
    await page.screenshot(path=str(screenshots / "proof-viewer-bad-signature.png"), full_page=True)


async def test_another_logs_origin_fails_at_the_origin_step(governed: Governed, page: Page) -> None:
    verdict = await _verify(
        page,
        governed.console.url,
        governed.allowed.receipt,
        _log_pub(governed),
        "other.example/log",
    )
    assert verdict == "fail"
    assert await page.get_attribute("#verdict", "data-step") == "wrong origin"


@pytest.mark.parametrize(
    "bad",
    ["{not json", "[]", '{"mediaType": "x"}', ""],
    ids=["not-json", "array", "missing-fields", "empty"],
)
async def test_malformed_receipt_fails_in_one_sentence(
    governed: Governed, page: Page, bad: str
) -> None:
    verdict = await _verify(page, governed.console.url, bad, _log_pub(governed))
    assert verdict == "fail"
    assert await page.get_attribute("#verdict", "data-step") == "malformed receipt"
    text = await page.inner_text("#verdict")
    assert "\n" not in text.strip()
    assert "Error" not in text


async def test_private_key_is_refused_and_not_used(governed: Governed, page: Page) -> None:
    private = governed.keys.log.read_text()
    verdict = await _verify(page, governed.console.url, governed.allowed.receipt, private)
    assert verdict == "fail"
    assert await page.get_attribute("#verdict", "data-step") == "unusable log key"


async def test_receipt_by_ledger_index_verifies_at_narrow_width(
    governed: Governed, browser: Browser, screenshots: Path
) -> None:
    context = await browser.new_context(viewport=NARROW)
    page = await context.new_page()
    index = governed.denied.ledger_index
    await page.goto(f"{governed.console.url}/proofs?index={index}")
    await page.wait_for_selector("body[data-verifier-ready='1']")
    assert json.loads(await page.input_value("#receipt"))["logIndex"] == index
    await page.fill("#log-key", _log_pub(governed))
    await page.click("#verify")
    verdict = await page.wait_for_selector("#verdict[data-verdict]")
    assert verdict is not None
    assert await verdict.get_attribute("data-verdict") == "ok", await verdict.inner_text()
    # Usable on a phone: nothing forces sideways scrolling of the page.
    overflow = await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert overflow
    await page.screenshot(path=str(screenshots / "proof-viewer-narrow.png"), full_page=True)
    await context.close()


async def test_unknown_ledger_index_is_one_sentence(governed: Governed, page: Page) -> None:
    resp = await page.goto(f"{governed.console.url}/proofs?index=999999")
    assert resp is not None
    assert resp.status == 503
    text = (await page.inner_text("#problem")).strip()
    assert text == "The ledger has no entry at index 999999."
