"""Workflow-side interceptor: attaches the current grant to the governed call."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from temporalio import workflow
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    StartActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from ecp.workflows._grant_header import current_grant, grant_payload
from ecp.workflows._models import TaskQueues

with workflow.unsafe.imports_passed_through():
    from ecp.authority._initiator import workflow_input_digest
    from ecp.authority.errors import AuthorityError

__all__ = ["GrantHeaderInterceptor", "configured_queues", "started_input_digest"]


class _Outbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
        attached = current_grant()
        if attached is not None:
            header, envelope = attached
            input.headers = {**input.headers, header: grant_payload(envelope)}
        return super().start_activity(input)


#: The plugin's task queues, for ``execute_governed`` inside the running
#: workflow. Per workflow task context: several workers with different
#: queues can share one process.
_QUEUES: ContextVar[TaskQueues | None] = ContextVar("ecp_queues", default=None)


_INPUT_DIGEST: ContextVar[str] = ContextVar("ecp_input_digest", default="")


def started_input_digest() -> str:
    """Digest of the running workflow's input ("" if it has none that digests)."""
    return _INPUT_DIGEST.get()


def configured_queues() -> TaskQueues | None:
    """The task queues of the plugin on the worker running this workflow."""
    return _QUEUES.get()


class _Inbound(WorkflowInboundInterceptor):
    ecp_queues: TaskQueues | None = None

    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_Outbound(outbound))

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        _QUEUES.set(self.ecp_queues)
        # What a session proof binds: the input this run was started with.
        try:
            _INPUT_DIGEST.set(workflow_input_digest(input.args, workflow.payload_converter()))
        except AuthorityError:
            _INPUT_DIGEST.set("")
        return await super().execute_workflow(input)


class GrantHeaderInterceptor(Interceptor):
    """Installs the grant-attaching outbound interceptor on every workflow.

    Args:
        queues: The plugin's task queues, which ``execute_governed`` uses by
            default.
    """

    def __init__(self, queues: TaskQueues | None = None) -> None:
        self._queues = queues

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return type("_EcpInbound", (_Inbound,), {"ecp_queues": self._queues})
