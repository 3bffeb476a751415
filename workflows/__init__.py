"""Orchestration: GovernedExecution, the grant-header interceptor, the plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ecp._lazy import lazy_exports

if TYPE_CHECKING:
    from ecp.workflows._governed import GovernedExecution as GovernedExecution
    from ecp.workflows._in_workflow import INITIATOR_MEMO as INITIATOR_MEMO
    from ecp.workflows._in_workflow import GovernedCallDenied as GovernedCallDenied
    from ecp.workflows._in_workflow import GovernedCallFailed as GovernedCallFailed
    from ecp.workflows._in_workflow import ScopeDenied as ScopeDenied
    from ecp.workflows._in_workflow import execute_governed as execute_governed
    from ecp.workflows._in_workflow import scope as scope
    from ecp.workflows._interceptor import GrantHeaderInterceptor as GrantHeaderInterceptor
    from ecp.workflows._models import ApprovalAck as ApprovalAck
    from ecp.workflows._models import GovernedRequest as GovernedRequest
    from ecp.workflows._models import GovernedResult as GovernedResult
    from ecp.workflows._models import TaskQueues as TaskQueues
    from ecp.workflows._plugin import EcpPlugin as EcpPlugin
    from ecp.workflows._plugin import sandbox_runner as sandbox_runner
    from ecp.workflows._start import initiator_memo as initiator_memo
    from ecp.workflows._start import start_governed as start_governed

__all__ = [
    "INITIATOR_MEMO",
    "ApprovalAck",
    "EcpPlugin",
    "GovernedCallDenied",
    "GovernedCallFailed",
    "GovernedExecution",
    "GovernedRequest",
    "GovernedResult",
    "GrantHeaderInterceptor",
    "ScopeDenied",
    "TaskQueues",
    "execute_governed",
    "initiator_memo",
    "sandbox_runner",
    "scope",
    "start_governed",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ApprovalAck": "ecp.workflows._models",
        "EcpPlugin": "ecp.workflows._plugin",
        "GovernedExecution": "ecp.workflows._governed",
        "INITIATOR_MEMO": "ecp.workflows._in_workflow",
        "GovernedCallDenied": "ecp.workflows._in_workflow",
        "GovernedCallFailed": "ecp.workflows._in_workflow",
        "ScopeDenied": "ecp.workflows._in_workflow",
        "execute_governed": "ecp.workflows._in_workflow",
        "scope": "ecp.workflows._in_workflow",
        "initiator_memo": "ecp.workflows._start",
        "GovernedRequest": "ecp.workflows._models",
        "GovernedResult": "ecp.workflows._models",
        "GrantHeaderInterceptor": "ecp.workflows._interceptor",
        "TaskQueues": "ecp.workflows._models",
        "sandbox_runner": "ecp.workflows._plugin",
        "start_governed": "ecp.workflows._start",
    },
)
