"""A workflow that deploys a model twice under one scope naming the model artifact."""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from ecp.activities import examples
    from ecp.workflows import GovernedCallDenied, execute_governed, scope


@workflow.defn
class ScopedDeployments:
    """Deploys, waits for the ``go`` signal, deploys again: under one scope."""

    def __init__(self) -> None:
        self._go = False
        self._results: list[Any] = []

    @workflow.signal
    def go(self) -> None:
        """Make the second deployment."""
        self._go = True

    @workflow.query
    def results(self) -> list[Any]:
        """What the deployments returned (or their denial codes), so far."""
        return self._results

    @workflow.run
    async def run(self, artifacts: list[dict[str, Any]]) -> list[Any]:
        req = examples.ModelDeployment(model_name="fraud", environment="staging")
        async with scope(
            [examples.deploy_model], max_uses=2, artifacts=artifacts, initiator="alice"
        ):
            for i in range(2):
                if i:
                    await workflow.wait_condition(lambda: self._go)
                try:
                    self._results.append(await execute_governed(examples.deploy_model, req))
                except GovernedCallDenied as denied:
                    self._results.append(denied.reason_code)
        return self._results
