"""An ordinary (ungoverned) workflow that calls a governed activity directly.

It exists to show the gate works for *any* caller: with no grant, or with a
grant it brings itself (e.g. a forged one), the activity body never runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from ecp.workflows._grant_header import attach_grant

__all__ = ["DIRECT_CALL_ACTIVITY_ID", "DirectCall", "DirectCallInput"]

#: A JSON value as Temporal's converter decodes it. ``Any`` because the
#: converter cannot decode into ``object`` or a recursive alias.
JSON = Any

#: The activity id of the direct call (a grant for it must bind this id).
DIRECT_CALL_ACTIVITY_ID = "direct-call"


@dataclass(frozen=True)
class DirectCallInput:
    """Which governed activity to call, and how.

    Attributes:
        action: The activity type.
        args: Its arguments.
        task_queue: Where the activity runs.
        grant: A grant envelope to attach ("" for none).
        wait_for_grant: Wait for the ``grant`` signal before calling, so a
            caller can bind a grant to this run's id first.
        max_attempts: Retry budget of the call.
        start_to_close_seconds: Temporal's timeout of one attempt (the caller's
            choice: the gate does not rely on it).
    """

    action: str
    args: list[JSON]
    task_queue: str
    grant: str = ""
    wait_for_grant: bool = False
    max_attempts: int = 3
    start_to_close_seconds: float = 30.0


@workflow.defn(name="DirectCall")
class DirectCall:
    """Calls a governed activity the way any workflow could."""

    def __init__(self) -> None:
        self._grant: str | None = None

    @workflow.signal(name="grant")
    def grant(self, envelope: str) -> None:
        """Supply the grant to attach."""
        self._grant = envelope

    @workflow.run
    async def run(self, inp: DirectCallInput) -> JSON:
        """Call the governed activity with the given (or signalled) grant."""
        grant = inp.grant
        if inp.wait_for_grant:
            await workflow.wait_condition(lambda: self._grant is not None)
            grant = self._grant or ""
        call = workflow.execute_activity(
            inp.action,
            args=inp.args,
            task_queue=inp.task_queue,
            activity_id=DIRECT_CALL_ACTIVITY_ID,
            start_to_close_timeout=timedelta(seconds=inp.start_to_close_seconds),
            retry_policy=RetryPolicy(
                maximum_attempts=inp.max_attempts,
                initial_interval=timedelta(milliseconds=200),
                maximum_interval=timedelta(seconds=1),
            ),
            summary=f"direct call of governed {inp.action}",
        )
        if grant:
            with attach_grant(grant.encode("utf-8")):
                return await call
        return await call
