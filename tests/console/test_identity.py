"""The console shows how each initiator was established, from the run's history.

One request signed with alice's initiator key, one with no proof at all (this
deployment accepts that, marked "unauthenticated"), and one whose initiator
name is markup: the governance list and the execution page say "key
ed25519:…" or mark "⚠ unauthenticated", and never render a name as HTML.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import networkx as nx
import pytest
from playwright.async_api import Browser, Page
from temporalio.testing import WorkflowEnvironment

from ecp._keyring import init_keyring
from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp.authority._keys import Ed25519FileSigner
from ecp.console.lineage_view import lineage_view
from ecp.lineage.graph._build import NodeKind
from ecp.workflows._models import GovernedRequest, TaskQueues
from ecp.workflows._start import start_governed
from tests.console.conftest import WIDE, ConsoleServer, _visible
from tests.workflows.conftest import temporal_env  # noqa: F401 (the session dev server)

SMALL = [{"amount": 120, "currency": "EUR", "recipient": "acme"}]
MARKUP = "<b>eve</b>"


@dataclass
class Runs:
    console: ConsoleServer
    key_id: str
    signed_id: str
    unsigned_id: str
    markup_id: str
    #: A list filter that selects this module's runs (started after it).
    since: str


@pytest.fixture(scope="module")
async def runs(
    temporal_env: WorkflowEnvironment,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Runs]:
    home = tmp_path_factory.mktemp("console-identity")
    keys = init_keyring(home / "keys", initiators=("alice",))
    q = uuid.uuid4().hex[:8]
    client = temporal_env.client
    settings = Settings(
        home=home,
        temporal_address=client.service_client.config.target_host,
        namespace=client.namespace,
        authority_queue=f"auth-{q}",
        executor_queue=f"exec-{q}",
        database_url=f"sqlite:///{home / 'ecp.db'}",
        allow_unauthenticated=True,
    )
    plugin, ledger = build_plugin(settings, role=Role.ALL)
    queues = TaskQueues(settings.authority_queue, settings.executor_queue)
    alice = Ed25519FileSigner.from_file(keys.initiator("alice"))
    since = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    ids = {"signed": f"who-key-{q}", "unsigned": f"who-none-{q}", "markup": f"who-markup-{q}"}
    try:
        async with run_workers(client, settings, plugin, role=Role.ALL):
            for name, initiator, signer in (
                ("signed", "alice", alice),
                ("unsigned", "alice", None),
                ("markup", MARKUP, None),
            ):
                handle = await start_governed(
                    client,
                    GovernedRequest("payout", SMALL, initiator, "invoice", queues=queues),
                    workflow_id=ids[name],
                    signer=signer,
                )
                result = await handle.result()
                if name != "markup":
                    assert result.outcome == "completed", result.reason
            for wf in ids.values():
                await _visible(client, f"WorkflowId = '{wf}' AND ECPOutcome IS NOT NULL", 1)
            with ConsoleServer(settings) as console:
                yield Runs(
                    console,
                    alice.key_id,
                    ids["signed"],
                    ids["unsigned"],
                    ids["markup"],
                    urlencode({"from": since}),
                )
    finally:
        ledger.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=WIDE)
    p = await context.new_page()
    yield p
    await context.close()


async def _auth(page: Page, scope: str) -> tuple[str, str]:
    el = page.locator(f"{scope} .auth")
    assert await el.count() == 1, scope
    method = await el.get_attribute("data-auth")
    return str(method), (await el.inner_text()).strip()


async def test_governance_list_shows_how_each_initiator_was_established(
    runs: Runs, page: Page, screenshots: Path
) -> None:
    # Other modules share the dev server: list only the runs made here.
    await page.goto(f"{runs.console.url}/governance?{runs.since}")
    signed = f"tr[data-workflow-id='{runs.signed_id}'] td.who"
    unsigned = f"tr[data-workflow-id='{runs.unsigned_id}'] td.who"
    # The list shows the key id's start; its title holds all of it.
    short = f"key {runs.key_id[:16]}…"
    assert await _auth(page, signed) == ("key", short)
    assert (await page.inner_text(signed)).strip() == f"alice — {short}"
    assert await page.get_attribute(f"{signed} .auth", "title") == f"key {runs.key_id}"
    assert await _auth(page, unsigned) == ("unauthenticated", "⚠ unauthenticated")
    assert (await page.inner_text(unsigned)).strip() == "alice — ⚠ unauthenticated"
    # A name from history is text, never markup.
    markup = f"tr[data-workflow-id='{runs.markup_id}'] td.who"
    assert (await page.inner_text(markup)).strip() == f"{MARKUP} — ⚠ unauthenticated"
    assert await page.locator(f"{markup} b").count() == 0
    await page.screenshot(path=str(screenshots / "governance-identity.png"), full_page=True)


async def test_execution_page_shows_the_decision_and_the_grant_identity(
    runs: Runs, page: Page
) -> None:
    await page.goto(f"{runs.console.url}/governance/{runs.signed_id}")
    assert await _auth(page, "#initiator") == ("key", f"key {runs.key_id}")
    grant = "#grants dl.grant dd[data-key='initiator_auth']"
    assert await _auth(page, grant) == ("key", f"key {runs.key_id}")
    assert (await page.inner_text("#grants dd[data-key='initiator']")).strip() == "alice"

    await page.goto(f"{runs.console.url}/governance/{runs.unsigned_id}")
    assert await _auth(page, "#initiator") == ("unauthenticated", "⚠ unauthenticated")
    assert await _auth(page, grant) == ("unauthenticated", "⚠ unauthenticated")


@pytest.mark.skipif(not shutil.which("dot"), reason="Graphviz dot is not installed")
async def test_lineage_explorer_aria_labels_escape_control_characters() -> None:
    g = nx.DiGraph()
    g.add_node("grant:x", kind=NodeKind.GRANT, label="grant \x00\x1b[31m\x9b\x7f\nnext")
    view = await lineage_view(g, None, "not checked", "wf", False)
    assert 'aria-label="grant \\u0000\\u001b[31m\\u009b\\u007f next"' in view.svg
    assert not any(c in view.svg for c in "\x00\x1b\x9b\x7f")
