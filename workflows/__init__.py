"""Orchestration: GovernedExecution, the grant-header interceptor, the plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ecp._lazy import lazy_exports

if TYPE_CHECKING:
    from ecp.workflows._governed import GovernedExecution as GovernedExecution
    from ecp.workflows._interceptor import GrantHeaderInterceptor as GrantHeaderInterceptor
    from ecp.workflows._models import ApprovalAck as ApprovalAck
    from ecp.workflows._models import GovernedRequest as GovernedRequest
    from ecp.workflows._models import GovernedResult as GovernedResult
    from ecp.workflows._models import TaskQueues as TaskQueues
    from ecp.workflows._plugin import EcpPlugin as EcpPlugin
    from ecp.workflows._plugin import sandbox_runner as sandbox_runner
    from ecp.workflows._start import start_governed as start_governed

__all__ = [
    "ApprovalAck",
    "EcpPlugin",
    "GovernedExecution",
    "GovernedRequest",
    "GovernedResult",
    "GrantHeaderInterceptor",
    "TaskQueues",
    "sandbox_runner",
    "start_governed",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ApprovalAck": "ecp.workflows._models",
        "EcpPlugin": "ecp.workflows._plugin",
        "GovernedExecution": "ecp.workflows._governed",
        "GovernedRequest": "ecp.workflows._models",
        "GovernedResult": "ecp.workflows._models",
        "GrantHeaderInterceptor": "ecp.workflows._interceptor",
        "TaskQueues": "ecp.workflows._models",
        "sandbox_runner": "ecp.workflows._plugin",
        "start_governed": "ecp.workflows._start",
    },
)
