"""One Temporal plugin that governs a client and every worker built on it.

``Client.connect(..., plugins=[EcpPlugin(...)])`` is the one line a team adds.
Each worker then gets what its task queue needs: the authority queue gets the
authority's activities only (so its signing key never sits beside governed
code); every other queue gets ``GovernedExecution``, the executor activities
and the gate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from temporalio.plugin import SimplePlugin
from temporalio.worker import Interceptor, WorkerConfig, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from ecp.activities._gate import RefusingGate
from ecp.workflows._governed import GovernedExecution
from ecp.workflows._interceptor import GrantHeaderInterceptor
from ecp.workflows._models import TaskQueues

__all__ = ["PASSTHROUGH_MODULES", "EcpPlugin", "sandbox_runner"]

#: ECP's own modules are shared by workflow code and interceptors: a second
#: copy inside the sandbox would break the grant context variable and
#: isinstance checks. ``cryptography`` cannot be imported in the sandbox at
#: all. Nothing else: a user's own workflow modules (``workflows.py``,
#: ``activities.py``, ...) keep the sandbox's per-run isolation.
PASSTHROUGH_MODULES = ("ecp", "cryptography")


def sandbox_runner(existing: WorkflowRunner | None) -> WorkflowRunner:
    """Extend (or create) a sandboxed runner with ECP's pass-through modules."""
    if isinstance(existing, SandboxedWorkflowRunner):
        return dataclasses.replace(
            existing,
            restrictions=existing.restrictions.with_passthrough_modules(*PASSTHROUGH_MODULES),
        )
    if existing is not None:
        return existing  # an unsandboxed runner needs no pass-through
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    )


class EcpPlugin(SimplePlugin):
    """Bundles ECP's interceptors, workflow, activities and sandbox settings.

    Args:
        queues: The authority and executor task queues.
        authority_activities: Registered on workers of the authority queue
            (policy evaluation, grant issuance, proof). Pass none in an
            executor-only process: then no signing key is loaded there.
        executor_activities: Registered on every other worker (attestation
            and the governed activities).
        gate: The activity gate; installed on every worker so a governed
            activity never runs ungated, whatever queue it is registered on.
    """

    def __init__(
        self,
        *,
        queues: TaskQueues | None = None,
        authority_activities: Sequence[Callable[..., object]] = (),
        executor_activities: Sequence[Callable[..., object]] = (),
        gate: Interceptor | None = None,
    ) -> None:
        # Fail closed: without a gate, governed activities are refused, never run.
        interceptors: list[Interceptor] = [GrantHeaderInterceptor(), gate or RefusingGate()]
        super().__init__(
            "ecp.governance",
            interceptors=interceptors,
            workflow_runner=sandbox_runner,
        )
        self._queues = queues or TaskQueues()
        self._authority_activities = list(authority_activities)
        self._executor_activities = list(executor_activities)

    def configure_worker(self, config: WorkerConfig) -> WorkerConfig:
        config = super().configure_worker(config)
        if config.get("task_queue") == self._queues.authority:
            extra_activities = self._authority_activities
        else:
            extra_activities = self._executor_activities
            config["workflows"] = [*config.get("workflows", []), GovernedExecution]
        config["activities"] = [*config.get("activities", []), *extra_activities]
        return config
