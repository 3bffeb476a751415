"""The proof viewer with a required witness: the operator's rewritten log is refused in the browser.

The honest log's receipt carries a real witness's cosignature and verifies
with that witness required; after the operator (holding log.key) replaces
the payout with a denial and re-signs, the new receipt verifies with the log
key alone but the witness refused to cosign it, so the viewer refuses it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from ecp._keyring import init_keyring
from ecp._settings import Settings
from ecp.authority._keys import Ed25519FileSigner
from ecp.lineage.ledger._ledger import DEFAULT_ORIGIN
from ecp.lineage.ledger._note import NoteVerifier
from ecp.lineage.ledger._receipt import verify_receipt
from tests.console.conftest import WIDE, ConsoleServer, free_port
from tests.witness.conftest import StartWitness, log_vkey, start_witness  # noqa: F401
from tests.witness.support import PAYOUT, build_log, rewrite_log

WORKER = Ed25519FileSigner.generate()
LOG = Ed25519FileSigner.generate()


@pytest.fixture
def log_signer() -> Ed25519FileSigner:
    return LOG


@pytest.fixture
def console(tmp_path: Path) -> Iterator[ConsoleServer]:
    init_keyring(tmp_path / "keys")
    settings = Settings(
        home=tmp_path,
        temporal_address=f"127.0.0.1:{free_port()}",  # the viewer needs no Temporal
        database_url=f"sqlite:///{tmp_path / 'console.db'}",
    )
    with ConsoleServer(settings) as server:
        yield server


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=WIDE)
    p = await context.new_page()
    yield p
    await context.close()


async def _verify(page: Page, url: str, receipt: str, witness: str, minimum: str) -> str:
    await page.goto(url + "/proofs")
    await page.wait_for_selector("body[data-verifier-ready='1']")
    await page.fill("#receipt", receipt)
    await page.fill("#log-key", NoteVerifier.for_key(DEFAULT_ORIGIN, LOG.public_key).vkey())
    await page.fill("#witness-keys", witness)
    await page.fill("#min-witnesses", minimum)
    await page.click("#verify")
    verdict = await page.wait_for_selector("#verdict[data-verdict]")
    assert verdict is not None
    return await verdict.get_attribute("data-verdict") or ""


async def test_viewer_requiring_a_witness_refuses_the_rewritten_log(
    tmp_path: Path,
    console: ConsoleServer,
    page: Page,
    start_witness: StartWitness,  # noqa: F811
) -> None:
    _, client = start_witness("witness.example/w1")
    wkey = client.verifier.vkey()
    db = tmp_path / "log.db"
    honest = build_log(db, WORKER, LOG, [client])
    good = honest.receipt(PAYOUT).to_json().decode()
    honest.close()
    assert await _verify(page, console.url, good, wkey, "1") == "ok"
    assert "witness.example/w1 at " in await page.inner_text("#steps")

    forged = rewrite_log(db, WORKER, LOG, [client])
    bad = forged.receipt(PAYOUT).to_json().decode()
    forged.close()
    # The premise: with the log key alone the forged receipt verifies, in
    # Python and in the browser.
    verify_receipt(bad, LOG.public_key)
    assert await _verify(page, console.url, bad, "", "") == "ok"
    # Requiring the witness, it does not: the witness refused to cosign.
    assert await _verify(page, console.url, bad, wkey, "1") == "fail"
    assert await page.get_attribute("#verdict", "data-step") == "missing witness cosignatures"

    # A cosignature copied from the honest checkpoint does not verify on the forged one.
    honest_cosig = json.loads(good)["checkpoint"].rstrip("\n").split("\n")[-1]
    doc = json.loads(bad)
    doc["checkpoint"] += honest_cosig + "\n"
    assert await _verify(page, console.url, json.dumps(doc), wkey, "1") == "fail"
    assert await page.get_attribute("#verdict", "data-step") == "bad signature"
