"""One Temporal plugin that governs a client and every worker built on it.

``Client.connect(..., plugins=[EcpPlugin(...)])`` is the one line a team adds.
Each worker then gets what its task queue needs: the authority queue gets the
authority's activities only (so its signing key never sits beside governed
code); every other queue gets ``GovernedExecution``, the executor activities
and the gate.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Sequence

from temporalio import activity
from temporalio.plugin import SimplePlugin
from temporalio.worker import Interceptor, WorkerConfig, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from ecp.activities._gate import RefusingGate
from ecp.activities._governed import GateMissingError, is_governed
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

log = logging.getLogger("ecp.plugin")


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
        governed_names: Activity types governed by name (besides the
            ``@governed`` ones): a worker without a gate may not register them.

    Raises:
        GateMissingError: (when a worker is built) the worker registers a
            governed activity and this plugin has no gate that verifies grants.
    """

    def __init__(
        self,
        *,
        queues: TaskQueues | None = None,
        authority_activities: Sequence[Callable[..., object]] = (),
        executor_activities: Sequence[Callable[..., object]] = (),
        gate: Interceptor | None = None,
        governed_names: Collection[str] = (),
    ) -> None:
        # Fail closed: without a gate, governed activities are refused, never run.
        queues = queues or TaskQueues()
        interceptors: list[Interceptor] = [GrantHeaderInterceptor(queues), gate or RefusingGate()]
        super().__init__(
            "ecp.governance",
            interceptors=interceptors,
            workflow_runner=sandbox_runner,
        )
        self._queues = queues
        self._authority_activities = list(authority_activities)
        self._executor_activities = list(executor_activities)
        self._verifies = bool(getattr(gate, "verifies_grants", False))
        self._governed_names = frozenset(governed_names)

    def configure_worker(self, config: WorkerConfig) -> WorkerConfig:
        if GovernedExecution in config.get("workflows", []) or any(
            a in config.get("activities", []) for a in self._all_activities()
        ):
            # Given to the client and to the worker too: the client's copy
            # already configured this worker. Say so, and do not add twice.
            log.warning(
                "EcpPlugin was given to both the client and the worker on task queue %r; "
                "give it to one of them (the client's reaches every worker built on it)",
                config.get("task_queue"),
            )
            return config
        config = super().configure_worker(config)
        if config.get("task_queue") == self._queues.authority:
            extra_activities = self._authority_activities
        else:
            extra_activities = self._executor_activities
            config["workflows"] = [*config.get("workflows", []), GovernedExecution]
        config["activities"] = [*config.get("activities", []), *extra_activities]
        if not self._verifies:
            self._refuse_governed(config)
        return config

    def _all_activities(self) -> list[Callable[..., object]]:
        return [*self._authority_activities, *self._executor_activities]

    def _refuse_governed(self, config: WorkerConfig) -> None:
        # Fail at start, in one line, rather than refuse every call later.
        names = []
        for fn in config.get("activities", []):
            defn = activity._Definition.from_callable(fn)
            name = defn.name if defn is not None else None
            if is_governed(fn) or (name is not None and name in self._governed_names):
                names.append(name or repr(fn))
        if names:
            raise GateMissingError(
                f"the worker on task queue {config.get('task_queue')!r} registers governed "
                f"activities ({', '.join(sorted(names))}) but has no gate that verifies grants; "
                "build its plugin with the executor role (ecp.build_plugin(..., role=EXECUTOR))"
            )
