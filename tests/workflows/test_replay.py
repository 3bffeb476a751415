"""Determinism: recorded GovernedExecution histories replay without errors.

Replays both the histories made by this run and the ones committed under
``histories/`` (made by an earlier version of the code), so a change that
breaks running workflows fails here. Regenerate the committed ones with
``ECP_RECORD_HISTORIES=1 ./test tests/workflows/test_replay.py``.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from ecp._approve import approve
from ecp._keyring import DEMO_APPROVER
from ecp.authority._keys import Ed25519FileSigner
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest
from ecp.workflows._plugin import EcpPlugin
from tests.workflows.conftest import Stack

HISTORIES = Path(__file__).parent / "histories"

SCENARIOS = {
    "allowed": ("payout", {"amount": 40, "currency": "EUR", "recipient": "a"}, "alice"),
    "approved": ("payout", {"amount": 4000, "currency": "GBP", "recipient": "b"}, "alice"),
    "denied": ("payout", {"amount": 40, "currency": "EUR", "recipient": "c"}, "eve"),
    "staging": (
        "change_infrastructure",
        {"target": "web", "environment": "staging", "change": "scale"},
        "bob",
    ),
}


async def _run(stack: Stack, name: str) -> WorkflowHistory:
    action, args, who = SCENARIOS[name]
    handle = await stack.client.start_workflow(
        GovernedExecution.run,
        GovernedRequest(action, [args], who, f"replay {name}", queues=stack.queues),
        id=f"replay-{name}-{uuid.uuid4().hex[:6]}",
        task_queue=stack.queues.executor,
    )
    if name == "approved":
        for _ in range(200):
            if (await handle.query("ecp.status", result_type=dict))["step"] == "approve":
                break
            await asyncio.sleep(0.05)
        await approve(
            stack.client,
            handle.id,
            signer=Ed25519FileSigner.from_file(stack.keys.approver),
            approver=DEMO_APPROVER,
        )
    await handle.result()
    return await handle.fetch_history()


async def test_histories_replay_deterministically(stack: Stack) -> None:
    fresh = {name: await _run(stack, name) for name in SCENARIOS}
    if os.environ.get("ECP_RECORD_HISTORIES"):
        HISTORIES.mkdir(exist_ok=True)
        for name, history in fresh.items():
            (HISTORIES / f"{name}.json").write_text(history.to_json())
    committed = [
        WorkflowHistory.from_json(p.stem, p.read_text()) for p in sorted(HISTORIES.glob("*.json"))
    ]
    assert len(committed) == len(SCENARIOS)
    replayer = Replayer(workflows=[GovernedExecution], plugins=[EcpPlugin()])
    histories = [*fresh.values(), *committed]

    async def each() -> AsyncIterator[WorkflowHistory]:
        for h in histories:
            yield h

    results = await replayer.replay_workflows(each(), raise_on_replay_failure=False)
    assert {run_id: repr(err) for run_id, err in results.replay_failures.items()} == {}
    # And a history that does NOT match the code is caught (the check can fail).
    tampered = WorkflowHistory.from_json(
        "x", committed[0].to_json().replace("ecp.prove", "ecp.other")
    )
    with pytest.raises(Exception, match=r"[Nn]ondetermin"):
        await replayer.replay_workflow(tampered)
