"""Runs the app's own workflow twice and one governed refund; prints JSON."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

from temporalio.client import Client

import ecp
from ecp import GovernedRequest, TaskQueues, load_settings, start_governed
from ecp.authority import Ed25519FileSigner
from workflows import OrderWorkflow


async def main() -> None:
    settings = load_settings()
    client = await Client.connect(settings.temporal_address, namespace=settings.namespace)
    queues = TaskQueues(settings.authority_queue, settings.executor_queue)
    plain = [
        await client.execute_workflow(
            OrderWorkflow.run, f"o-{i}", id=f"order-{uuid.uuid4()}", task_queue=queues.executor
        )
        for i in range(2)
    ]
    handle = await start_governed(
        client,
        GovernedRequest(
            action="refund",
            args=[{"order_id": "o-1", "amount": 40}],
            initiator="alice",
            purpose="damaged parcel",
            queues=queues,
        ),
        workflow_id=f"refund-{uuid.uuid4()}",
        # alice proves she is the one asking: her key signs the request.
        signer=Ed25519FileSigner.from_file(settings.keys / "initiator-alice.key"),
    )
    result = await handle.result()
    print(
        json.dumps(
            {
                "ecp_file": ecp.__file__,
                "plain": plain,
                "decision": result.decision,
                "outcome": result.outcome,
                "result": result.result,
                "receipt": result.receipt,
                "workflow_id": handle.id,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
