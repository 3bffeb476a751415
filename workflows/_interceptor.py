"""Workflow-side interceptor: attaches the current grant to the governed call."""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.worker import (
    Interceptor,
    StartActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from ecp.workflows._grant_header import GRANT_HEADER, current_grant, grant_payload

__all__ = ["GrantHeaderInterceptor"]


class _Outbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
        grant = current_grant()
        if grant is not None:
            input.headers = {**input.headers, GRANT_HEADER: grant_payload(grant)}
        return super().start_activity(input)


class _Inbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_Outbound(outbound))


class GrantHeaderInterceptor(Interceptor):
    """Installs the grant-attaching outbound interceptor on every workflow."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _Inbound
