"""Governed calls inside an ordinary workflow, the way Temporal users write them.

The example app's ``RefundOrder`` (examples/refund_app/workflows.py) is step
A → refund → step B; its refund is governed by changing that one call to
``execute_governed``. Its own worker (worker.py, in the app's directory, with
its own workflows.py and activities.py) runs against a real dev server; this
test is only the client: allowed, denied and approval cases, each proven in
the ledger and consistent in the cross-check, all four steps in the
RefundOrder's own history.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError
from temporalio.testing import WorkflowEnvironment

from ecp._approve import approve as deliver_approval
from ecp._keyring import DEMO_APPROVER, KeyFiles, init_keyring
from ecp.authority._keys import Ed25519FileSigner, load_public_key
from ecp.authority._truststore import TrustStore
from ecp.lineage._crosscheck import cross_check
from ecp.lineage.graph._history import fetch_histories
from ecp.lineage.ledger._evidence import parse_evidence
from ecp.lineage.ledger._ledger import Ledger
from ecp.workflows._start import initiator_memo

APP = Path(__file__).resolve().parents[2] / "examples" / "refund_app"


@dataclass
class App:
    client: Client
    home: Path
    keys: KeyFiles
    queue: str

    async def order(self, amount: int, initiator: str = "alice") -> WorkflowHandle[object, str]:
        wf = f"order-{uuid.uuid4().hex[:8]}"
        args: list[object] = [f"o-{amount}", amount]
        memo = (
            initiator_memo(
                Ed25519FileSigner.from_file(self.keys.initiator(initiator)),
                initiator=initiator,
                client=self.client,
                workflow_id=wf,
                workflow_type="RefundOrder",
                args=args,
            )
            if self.keys.initiator(initiator).exists()
            else {"ecp-initiator": {"initiator": initiator, "proof": ""}}
        )
        return await self.client.start_workflow(
            "RefundOrder", args=args, id=wf, task_queue=self.queue, memo=memo
        )


@pytest.fixture
async def app(temporal_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[App]:
    keys = KeyFiles(tmp_path / "keys")
    init_keyring(keys.directory, approver=DEMO_APPROVER, initiators=("alice",))
    q = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "ECP_HOME": str(tmp_path),
        "ECP_TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "ECP_AUTHORITY_QUEUE": f"a-{q}",
        "ECP_EXECUTOR_QUEUE": f"e-{q}",
        "ECP_POLICY_BUNDLE": str(APP / "policy"),
    }
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "worker.py"],
        cwd=APP,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield App(temporal_env.client, tmp_path, keys, f"e-{q}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


async def _consistent(app: App, wf_id: str) -> None:
    with Ledger.open(f"sqlite:///{app.home / 'ecp.db'}", create=False) as ledger:
        report = cross_check(
            await fetch_histories(app.client, wf_id),
            ledger=ledger,
            trust=TrustStore.load(app.keys.trust_store),
            log_key=load_public_key(app.keys.log),
        )
    assert report.ok, [f.violations for f in report.violations]
    assert report.findings


def _outcomes(app: App, wf_id: str) -> list[str]:
    with Ledger.open(f"sqlite:///{app.home / 'ecp.db'}", create=False) as ledger:
        preds = [
            parse_evidence(ledger.entry(i).envelope).predicate for i in range(ledger.head().size)
        ]
    return [p.outcome.status.value for p in preds if p.activity.workflow_id == wf_id]


async def test_allowed_refund_runs_inside_the_order_workflow(app: App) -> None:
    handle = await app.order(40)
    assert await asyncio.wait_for(handle.result(), 120) == "told o-40: refunded 40 on o-40"
    history = await handle.fetch_history()
    types = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    # A, the four governed steps, B: all in this workflow's own history.
    assert types == [
        "reserve_stock",
        "ecp.prepare",
        "ecp.evaluate",
        "ecp.authorize",
        "refund",
        "ecp.prove",
        "notify_customer",
    ]
    assert _outcomes(app, handle.id) == ["completed"]
    await _consistent(app, handle.id)
    # Replay-safe: the recorded history replays against the app's own code.
    recorded = app.home / "history.json"
    recorded.write_text(history.to_json())
    replay = subprocess.run(
        [sys.executable, "-c", _REPLAY, str(recorded)],
        cwd=APP,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert replay.returncode == 0, replay.stderr[-2000:]
    assert replay.stdout.strip() == "replayed"


_REPLAY = """
import asyncio, sys
from pathlib import Path
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from ecp import EcpPlugin
from workflows import RefundOrder

history = WorkflowHistory.from_json("order", Path(sys.argv[1]).read_text())
asyncio.run(Replayer(workflows=[RefundOrder], plugins=[EcpPlugin()]).replay_workflow(history))
print("replayed")
"""


async def test_a_denied_refund_is_a_typed_exception_the_workflow_catches(app: App) -> None:
    handle = await app.order(40, initiator="eve")  # no key: unauthenticated, not allowed
    got = await asyncio.wait_for(handle.result(), 120)
    assert got == "told o-40: refund denied (ecp.initiator_unauthenticated)"
    assert _outcomes(app, handle.id) == ["denied"]
    await _consistent(app, handle.id)


async def test_a_large_refund_waits_for_an_approval_delivered_to_the_order(app: App) -> None:
    handle = await app.order(500)
    status: dict[str, object] = {}
    for _ in range(200):
        # The handlers exist once the workflow reaches its governed call.
        with contextlib.suppress(WorkflowQueryFailedError):
            status = await handle.query("ecp.status", result_type=dict)
        if status.get("step") == "approve":
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail(f"never waited for approval: {status}")
    ack = await deliver_approval(
        app.client,
        handle.id,
        signer=Ed25519FileSigner.from_file(app.keys.approver),
        approver=DEMO_APPROVER,
    )
    assert ack.approvals == 1
    assert await asyncio.wait_for(handle.result(), 120) == "told o-500: refunded 500 on o-500"
    assert _outcomes(app, handle.id) == ["completed"]
    await _consistent(app, handle.id)


async def test_nobody_can_reuse_alices_session_for_other_work(app: App) -> None:
    """eve reads alice's session from the memo of alice's finished order, then
    (a) starts GovernedExecution under that workflow id with her own refund,
    (b) starts RefundOrder under that workflow id with other input."""
    from temporalio.common import WorkflowIDReusePolicy

    from ecp.workflows._governed import GovernedExecution
    from ecp.workflows._models import GovernedRequest, TaskQueues

    handle = await app.order(40)
    assert (await asyncio.wait_for(handle.result(), 120)).startswith("told o-40: refunded")
    memo = await (await handle.describe()).memo()
    session = memo["ecp-initiator"]["proof"]
    before = _outcomes(app, handle.id)

    stolen = GovernedRequest(
        "refund",
        [{"order_id": "EVE-ACCOUNT", "amount": 100}],
        "alice",
        queues=TaskQueues(app.queue.replace("e-", "a-", 1), app.queue),
        initiator_proof=session,
    )
    r = await app.client.execute_workflow(
        GovernedExecution.run,
        stolen,
        id=handle.id,
        task_queue=app.queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )
    assert r.outcome == "denied", r
    assert "inside its workflow only" in r.reason

    other = await app.client.start_workflow(
        "RefundOrder",
        args=["EVE-ACCOUNT", 90],
        id=handle.id,
        task_queue=app.queue,
        memo=memo,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )
    got = await asyncio.wait_for(other.result(), 120)
    assert got == "told EVE-ACCOUNT: refund denied (ecp.initiator_proof_invalid)"
    # Only alice's own refund ever ran under her name.
    after = _outcomes(app, handle.id)
    assert after.count("completed") == before.count("completed") == 1
