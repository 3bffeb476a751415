"""The app's governed activities: rollouts that take a while and heartbeat (or not).

Each step's side effect is appended to :data:`STEPS` *before* the step's
heartbeat, so a test sees exactly which side effects happened after an
interruption.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from temporalio import activity

from ecp.activities import governed

#: (workflow id, step) for every side effect, in order.
STEPS: list[tuple[str, int]] = []


@dataclass(frozen=True)
class Rollout:
    """Roll ``service`` out in ``steps`` steps, ``interval_ms`` apart."""

    service: str
    steps: int = 30
    interval_ms: int = 1000
    heartbeat: bool = True
    #: A badly behaved body: it swallows the cancellation and returns.
    stubborn: bool = False


def _step(step: int) -> None:
    STEPS.append((activity.info().workflow_id or "", step))


@activity.defn(name="rollout")
@governed
async def rollout(req: Rollout) -> dict[str, object]:
    """Long-running (the policy says @heartbeat): one step a second, heartbeating."""
    for step in range(req.steps):
        _step(step)
        if req.heartbeat:
            activity.heartbeat(step)
        try:
            await asyncio.sleep(req.interval_ms / 1000)
        except asyncio.CancelledError:
            if not req.stubborn:
                raise
            return {"service": req.service, "steps": step, "swallowed": True}
    return {"service": req.service, "steps": req.steps}


@activity.defn(name="rollout_sync")
@governed
def rollout_sync(req: Rollout) -> dict[str, object]:
    """The same in a worker thread: it learns of an interruption at its next heartbeat."""
    for step in range(req.steps):
        _step(step)
        activity.heartbeat(step)
        time.sleep(req.interval_ms / 1000)
    return {"service": req.service, "steps": req.steps}
