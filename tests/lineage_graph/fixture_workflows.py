"""Small workflows whose recorded histories are the graph tests' fixtures.

Between them they cover activities and data flow, retries, a timer, a
signal, an update, a child workflow, continue-as-new and a failed activity.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

__all__ = [
    "ACTIVITIES",
    "WORKFLOWS",
    "LineageChild",
    "LineagePipeline",
    "PipelineInput",
]


@activity.defn(name="lg.fetch")
async def fetch(source: str) -> dict[str, Any]:
    return {"source": source, "rows": [1, 2, 3]}


@activity.defn(name="lg.transform")
async def transform(data: dict[str, Any]) -> dict[str, Any]:
    rows = data["rows"]
    assert isinstance(rows, list)
    return {"source": data["source"], "total": sum(rows)}


@activity.defn(name="lg.flaky")
async def flaky(total: int) -> int:
    # Fails its first two attempts: the history shows attempt 3 and the last failure.
    if activity.info().attempt < 3:
        raise RuntimeError(f"transient fault on attempt {activity.info().attempt}")
    return total * 2


@activity.defn(name="lg.broken")
async def broken(value: int) -> int:
    raise ApplicationError(f"cannot publish {value}", type="PublishError", non_retryable=True)


@activity.defn(name="lg.publish")
async def publish(value: int) -> str:
    return f"published {value}"


ACTIVITIES = [fetch, transform, flaky, broken, publish]
_FAST = RetryPolicy(initial_interval=timedelta(milliseconds=50), backoff_coefficient=1.0)
_T = timedelta(seconds=10)


@dataclass(frozen=True)
class PipelineInput:
    source: str
    iteration: int = 0


@workflow.defn(name="LineageChild")
class LineageChild:
    @workflow.run
    async def run(self, total: int) -> int:
        return await workflow.execute_activity(
            flaky, total, start_to_close_timeout=_T, retry_policy=_FAST
        )


@workflow.defn(name="LineagePipeline")
class LineagePipeline:
    def __init__(self) -> None:
        self._go = False
        self._approved_by = ""

    @workflow.signal(name="go")
    def go(self, note: str) -> None:
        self._go = True

    @workflow.update(name="approve")
    def approve(self, approver: str) -> str:
        self._approved_by = approver
        return f"approved by {approver}"

    @workflow.run
    async def run(self, inp: PipelineInput) -> str:
        if inp.iteration == 0:
            data = await workflow.execute_activity(fetch, inp.source, start_to_close_timeout=_T)
            summary = await workflow.execute_activity(transform, data, start_to_close_timeout=_T)
            await workflow.sleep(timedelta(milliseconds=100), summary="settle")
            await workflow.wait_condition(lambda: self._go and bool(self._approved_by))
            doubled = await workflow.execute_child_workflow(
                LineageChild.run, summary["total"], id=f"{workflow.info().workflow_id}-child"
            )
            workflow.continue_as_new(PipelineInput(str(doubled), 1))
        with contextlib.suppress(ActivityError):
            await workflow.execute_activity(
                broken, int(inp.source), start_to_close_timeout=_T, retry_policy=_FAST
            )
        return await workflow.execute_activity(publish, int(inp.source), start_to_close_timeout=_T)


WORKFLOWS = [LineagePipeline, LineageChild]
