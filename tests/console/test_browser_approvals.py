"""Approvals signed in the approver's browser (WebCrypto Ed25519, non-extractable key).

Real Chromium signs with carol's real key file; the console relays to the
real workflow, whose update validator decides. A wrong key and a replayed
approval are refused there and leave nothing in history; the key file's
contents never leave the browser.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.async_api import Browser, Page, Request
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from ecp._keyring import init_keyring
from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp._wire import DECISION_QUERY
from ecp.activities._contracts import DecisionResult
from ecp.authority._approval import APPROVAL_PAYLOAD_TYPE, approval_payload, execution_ref
from ecp.authority._clock import system_clock
from ecp.authority._dsse import pae
from ecp.authority._keys import Ed25519FileSigner, load_private_key, write_private_key
from ecp.authority._policy import Decision
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.workflows._models import GovernedRequest, GovernedResult, TaskQueues
from ecp.workflows._start import start_governed
from tests.console.conftest import WIDE, ConsoleServer, Governed
from tests.workflows.conftest import temporal_env  # noqa: F401 (the session dev server)


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


async def _sign_in_browser(
    page: Page, governed: Governed, wf_id: str, key: Path, approver: str = "carol"
) -> list[str]:
    posted: list[str] = []

    def record(request: Request) -> None:
        if request.method == "POST":
            posted.append(request.post_data or "")

    page.on("request", record)
    await page.goto(f"{governed.console.url}/governance/{wf_id}")
    await page.set_input_files("#approve-key", str(key))
    async with page.expect_navigation():
        await page.click(f"form.browser-approve[data-approver='{approver}'] button")
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


@pytest.fixture(scope="module")
async def with_erin(
    temporal_env: WorkflowEnvironment,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Governed, Path]]:
    """A stack whose trust store also holds erin: an approver key, not in the finance group."""
    home = tmp_path_factory.mktemp("console-erin")
    files = init_keyring(home / "keys")
    erin = Ed25519FileSigner.generate()
    erin_key = home / "erin.key"
    write_private_key(erin.private_key, erin_key)
    store = TrustStore.load(files.trust_store)
    store.with_key(TrustedKey.create(erin.public_key, {KeyRole.APPROVER}, name="erin")).save(
        files.trust_store
    )
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
    async with run_workers(client, settings, plugin, role=Role.ALL):
        with ConsoleServer(settings) as console:
            yield (
                Governed(client, settings, files, "", None, "", None, console),  # type: ignore[arg-type]
                erin_key,
            )
    ledger.close()


async def test_an_approver_outside_the_role_is_refused(
    with_erin: tuple[Governed, Path], page: Page
) -> None:
    stack, erin_key = with_erin
    handle = await _waiting(stack)
    try:
        # erin's key is in the trust store as an approver, but erin is not in
        # the finance group the decision asks for: the page offers no form
        # for erin, and erin's signature on carol's approval is refused.
        await page.goto(f"{stack.console.url}/governance/{handle.id}")
        names = await page.locator("form.browser-approve").evaluate_all(
            "fs => fs.map(f => f.dataset.approver)"
        )
        assert names == ["carol"]
        csrf = await page.get_attribute("form.browser-approve input[name=csrf]", "value")
        await _sign_in_browser(page, stack, handle.id, erin_key)
        assert "The workflow refused the approval" in await page.inner_text("#problem")
        # Nor does an approval that names erin, signed by erin's own key.
        decision = await handle.query(DECISION_QUERY, result_type=DecisionResult)
        desc = await handle.describe()
        payload = approval_payload(
            Decision.from_json(decision.decision_json),
            execution=execution_ref(stack.client.namespace, handle.id, desc.run_id or ""),
            approver="erin",
            clock=system_clock,
            ttl=timedelta(minutes=5),
        )
        erin = Ed25519FileSigner(load_private_key(erin_key))
        signature = erin.sign(pae(APPROVAL_PAYLOAD_TYPE, payload))
        async with httpx.AsyncClient(base_url=stack.console.url, timeout=60) as http:
            resp = await http.post(
                f"/governance/{handle.id}/approve",
                data={
                    "csrf": csrf or "",
                    "payload": base64.b64encode(payload).decode(),
                    "signature": base64.b64encode(signature).decode(),
                },
            )
        assert resp.status_code == 400
        assert "The workflow refused the approval" in resp.text
        assert await _accepted_approvals(handle) == 0
    finally:
        await handle.terminate("test over")
