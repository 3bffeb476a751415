"""Starting a ``GovernedExecution`` from a client, with what ops see in the UI."""

from __future__ import annotations

from temporalio.client import Client, WorkflowHandle

from ecp.workflows._governed import GovernedExecution
from ecp.workflows._models import GovernedRequest, GovernedResult

__all__ = ["start_governed"]


async def start_governed(
    client: Client, req: GovernedRequest, *, workflow_id: str
) -> WorkflowHandle[GovernedExecution, GovernedResult]:
    """Start ``req`` on the executor queue with a UI summary and details.

    Static summary and details can only be set at start, so every starter
    should come through here (the workflow itself keeps the current details
    up to date as the steps progress).
    """
    return await client.start_workflow(
        GovernedExecution.run,
        req,
        id=workflow_id,
        task_queue=req.queues.executor,
        static_summary=f"ECP: {req.action} by {req.initiator}",
        static_details=(
            f"Governed **{req.action}** requested by `{req.initiator}`"
            + (f": {req.purpose}" if req.purpose else "")
            + "\n\nSteps: verify → authorize → execute → prove."
        ),
    )
