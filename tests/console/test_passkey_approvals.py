"""Passkey approvals in headless Chromium with a virtual authenticator.

Chromium's DevTools virtual authenticator (``WebAuthn.addVirtualAuthenticator``)
holds an ES256 passkey; the execution page asks it for an assertion over the
prepared approval's digest; the console relays it to the real workflow, whose
update validator decides against the passkeys the authority listed. A
credential the trust store does not hold, a replayed assertion, an approver
outside the role and a revoked passkey are each refused and leave nothing in
history. The console must be served from ``localhost``: browsers refuse an IP
address as a WebAuthn relying party.
"""

from __future__ import annotations

import asyncio
import shlex
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, Request
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer
from typer.testing import CliRunner

from ecp._keyring import KeyFiles, init_keyring
from ecp._runtime import build_plugin, run_workers
from ecp._settings import Role, Settings
from ecp._wire import APPROVE_UPDATE, DECISION_QUERY
from ecp.activities._contracts import DecisionResult
from ecp.authority._approval import (
    approval_payload,
    execution_ref,
    passkey_approval_json,
    passkey_challenge,
)
from ecp.authority._clock import system_clock
from ecp.authority._policy import Decision
from ecp.authority._truststore import TrustStore
from ecp.cli import app
from ecp.workflows import EcpPlugin
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import ApprovalAck, GovernedRequest, GovernedResult, TaskQueues
from ecp.workflows._start import start_governed
from tests.console.conftest import WIDE, ConsoleServer, free_port
from tests.passkeys import SoftPasskey
from tests.workflows.conftest import temporal_env  # noqa: F401 (the session dev server)


@dataclass
class Stack:
    settings: Settings
    keys: KeyFiles
    console: ConsoleServer
    url: str  # http://localhost:<port>: the passkeys' origin
    carol: SoftPasskey  # in the trust store, carol is in finance
    revoked: SoftPasskey  # carol's old passkey, revoked
    erin: SoftPasskey  # an approver's passkey; erin is in no approval group


@pytest.fixture(scope="module")
async def stack(
    temporal_env: WorkflowEnvironment,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    home = tmp_path_factory.mktemp("console-passkeys")
    files = init_keyring(home / "keys")
    port = free_port()
    url = f"http://localhost:{port}"
    carol, revoked, erin = SoftPasskey(), SoftPasskey(), SoftPasskey()
    store = (
        TrustStore.load(files.trust_store)
        .with_passkey(carol.credential("carol", (url,)))
        .with_passkey(revoked.credential("carol", (url,), revoked_at=datetime.now(UTC)))
        .with_passkey(erin.credential("erin", (url,)))
    )
    store.save(files.trust_store)
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
        with ConsoleServer(settings, port=port) as console:
            yield Stack(settings, files, console, url, carol, revoked, erin)
    ledger.close()


async def _waiting(stack: Stack, client: Client) -> WorkflowHandle[Any, GovernedResult]:
    s = stack.settings
    handle = await start_governed(
        client,
        GovernedRequest(
            action="payout",
            args=[{"amount": 5000, "currency": "EUR", "recipient": "acme"}],
            initiator="alice",
            purpose="passkey approval",
            approval_timeout_seconds=3600,
            queues=TaskQueues(s.authority_queue, s.executor_queue),
        ),
        workflow_id=f"passkey-{uuid.uuid4().hex[:8]}",
    )
    while (await handle.query("ecp.status", result_type=dict)).get("step") != "approve":
        await asyncio.sleep(0.1)
    return handle


async def _accepted_approvals(handle: WorkflowHandle[Any, GovernedResult]) -> int:
    n = 0
    async for e in handle.fetch_history_events():
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            n += 1
    return n


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(viewport=WIDE)
    yield ctx
    await ctx.close()


async def _with_authenticator(context: BrowserContext, *passkeys: SoftPasskey) -> Page:
    """A page whose virtual authenticator (user-verifying) holds ``passkeys``."""
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable", {"enableUI": False})
    created = await cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    for pk in passkeys:
        await cdp.send(
            "WebAuthn.addCredential",
            {"authenticatorId": created["authenticatorId"], "credential": pk.cdp_credential()},
        )
    return page


async def _approve_with_passkey(
    page: Page, stack: Stack, wf_id: str, approver: str = "carol"
) -> list[str]:
    """Click ``approver``'s "Approve with a passkey"; return the bodies posted."""
    posted: list[str] = []

    def record(request: Request) -> None:
        if request.method == "POST":
            posted.append(request.post_data or "")

    page.on("request", record)
    await page.goto(f"{stack.url}/governance/{wf_id}")
    async with page.expect_navigation():
        await page.click(f"form.passkey-approve[data-approver='{approver}'] button")
    return posted


async def _refused_and_absent(
    page: Page, handle: WorkflowHandle[Any, GovernedResult], why: str
) -> None:
    problem = await page.inner_text("#problem")
    assert "The workflow refused the approval" in problem
    assert why in problem
    assert await _accepted_approvals(handle) == 0
    status = await handle.query("ecp.status", result_type=dict)
    assert status.get("step") == "approve"
    assert not status.get("approvals")


async def test_carol_approves_with_her_passkey_and_a_replay_is_refused(
    stack: Stack,
    context: BrowserContext,
    temporal_env: WorkflowEnvironment,  # noqa: F811
) -> None:
    handle = await _waiting(stack, temporal_env.client)
    page = await _with_authenticator(context, stack.carol)
    posted = await _approve_with_passkey(page, stack, handle.id)
    assert await page.locator("#approved").count() == 1
    result = await handle.result()
    assert result.outcome == "completed", result.reason
    assert await _accepted_approvals(handle) == 1
    # The history (a passkey approval in an update) replays deterministically.
    replayer = Replayer(workflows=[GovernedExecution], plugins=[EcpPlugin()])
    await replayer.replay_workflow(await handle.fetch_history())
    # Only the prepared approval and the assertion went out.
    (body,) = posted
    assert set(parse_qs(body, keep_blank_values=True)) == {
        "csrf",
        "kind",
        "payload",
        "credential_id",
        "authenticator_data",
        "client_data_json",
        "signature",
        "user_handle",
    }
    # The same assertion, replayed onto another execution of the same request
    # (same decision): its challenge binds carol's approval to the first
    # execution, so the validator refuses it and history has nothing.
    other = await _waiting(stack, temporal_env.client)
    try:
        async with httpx.AsyncClient(base_url=stack.console.url, timeout=60) as http:
            replay = await http.post(
                f"/governance/{other.id}/approve",
                content=body,
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
        assert replay.status_code == 400
        assert "The workflow refused the approval" in replay.text
        assert "is for execution" in replay.text
        assert await _accepted_approvals(other) == 0
        # And onto the first execution again: it has closed, nothing is relayed.
        async with httpx.AsyncClient(base_url=stack.console.url, timeout=60) as http:
            again = await http.post(
                f"/governance/{handle.id}/approve",
                content=body,
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
        assert again.status_code == 400
        assert await _accepted_approvals(handle) == 1
    finally:
        await other.terminate("test over")


async def test_a_passkey_the_trust_store_does_not_hold_is_refused(
    stack: Stack,
    context: BrowserContext,
    temporal_env: WorkflowEnvironment,  # noqa: F811
) -> None:
    handle = await _waiting(stack, temporal_env.client)
    try:
        page = await _with_authenticator(context, SoftPasskey())  # a wrong authenticator
        await _approve_with_passkey(page, stack, handle.id)
        await _refused_and_absent(page, handle, "is not in the trust store")
    finally:
        await handle.terminate("test over")


async def test_a_revoked_passkey_is_refused(
    stack: Stack,
    context: BrowserContext,
    temporal_env: WorkflowEnvironment,  # noqa: F811
) -> None:
    handle = await _waiting(stack, temporal_env.client)
    try:
        # The authority lists no revoked credential with the decision.
        decision = await handle.query(DECISION_QUERY, result_type=DecisionResult)
        listed = {p.key_id for p in decision.approver_passkeys}
        assert stack.carol.credential("carol", (stack.url,)).key_id in listed
        assert stack.revoked.credential("carol", (stack.url,)).key_id not in listed
        page = await _with_authenticator(context, stack.revoked)
        await _approve_with_passkey(page, stack, handle.id)
        await _refused_and_absent(page, handle, "is not in the trust store")
    finally:
        await handle.terminate("test over")


async def test_an_approver_outside_the_role_is_refused(
    stack: Stack,
    context: BrowserContext,
    temporal_env: WorkflowEnvironment,  # noqa: F811
) -> None:
    handle = await _waiting(stack, temporal_env.client)
    try:
        page = await _with_authenticator(context, stack.erin)
        await page.goto(f"{stack.url}/governance/{handle.id}")
        # erin's passkey is a trusted approver credential, but erin is not in
        # finance: the page offers her no form ...
        names = await page.locator("form.passkey-approve").evaluate_all(
            "fs => fs.map(f => f.dataset.approver)"
        )
        assert "carol" in names
        assert "erin" not in names
        # ... her passkey on carol's approval is refused ...
        await _approve_with_passkey(page, stack, handle.id)
        await _refused_and_absent(page, handle, "not in the trust store")
        # ... and so is an approval naming erin, asserted by erin's own passkey,
        # sent straight to the update.
        decision = await handle.query(DECISION_QUERY, result_type=DecisionResult)
        desc = await handle.describe()
        payload = approval_payload(
            Decision.from_json(decision.decision_json),
            execution=execution_ref(temporal_env.client.namespace, handle.id, desc.run_id or ""),
            approver="erin",
            clock=system_clock,
            ttl=timedelta(minutes=5),
        )
        doc = passkey_approval_json(
            payload, stack.erin.sign_assertion(passkey_challenge(payload), stack.url)
        )
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(APPROVE_UPDATE, doc, result_type=ApprovalAck)
        assert await _accepted_approvals(handle) == 0
    finally:
        await handle.terminate("test over")


async def test_dave_registers_a_passkey_an_operator_adds_and_he_approves_with_it(
    stack: Stack,
    context: BrowserContext,
    temporal_env: WorkflowEnvironment,  # noqa: F811
) -> None:
    page = await _with_authenticator(context)  # an empty authenticator
    await page.goto(f"{stack.url}/passkeys/register")
    await page.fill("#register-name", "dave")
    await page.click("#passkey-register button")
    await page.wait_for_selector("#register-result:not([hidden])")
    command = shlex.split(await page.inner_text("#register-command"))
    assert command[:3] == ["ecp", "keys", "add-passkey"]
    # Registering alone gives no power: no form for dave yet.
    handle = await _waiting(stack, temporal_env.client)
    await page.goto(f"{stack.url}/governance/{handle.id}")
    assert await page.locator("form.passkey-approve[data-approver='dave']").count() == 0
    await handle.terminate("test over")
    # The operator runs the command the page showed, against the trust store.
    r = CliRunner().invoke(app, [*command[1:], "--dir", str(stack.keys.trust_store)])
    assert r.exit_code == 0, r.stderr
    (dave,) = [p for p in TrustStore.load(stack.keys.trust_store).passkeys() if p.name == "dave"]
    assert dave.rp_id == "localhost"
    assert dave.origins == (stack.url,)
    handle = await _waiting(stack, temporal_env.client)
    await _approve_with_passkey(page, stack, handle.id, approver="dave")
    assert await page.locator("#approved").count() == 1
    result = await handle.result()
    assert result.outcome == "completed", result.reason
    assert await _accepted_approvals(handle) == 1
