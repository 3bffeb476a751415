"""``GovernedExecution``: one governed call as a workflow of its own.

``ecp submit`` and :func:`~ecp.workflows._start.start_governed` start it; the
steps themselves are :class:`~ecp.workflows._call.GovernedCall`'s, which
``execute_governed`` also runs inside any workflow.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from ecp._wire import APPROVE_UPDATE, DECISION_QUERY, STATUS_QUERY, execute_activity_id
    from ecp.activities._contracts import DecisionResult
    from ecp.workflows._call import EXHAUSTED_TYPE, GovernedCall, from_gate
    from ecp.workflows._models import ApprovalAck, GovernedRequest, GovernedResult

__all__ = ["EXHAUSTED_TYPE", "GovernedExecution", "execute_activity_id", "from_gate"]


# Unsandboxed: the sandbox is Temporal's net against non-deterministic code,
# not a security boundary, and it never checked this code anyway: ``ecp`` is
# a pass-through module (PASSTHROUGH_MODULES), imported outside the sandbox
# with the real datetime, time and open. What keeps it deterministic is
# tests/workflows/test_replay.py (recorded histories replayed) and
# tests/workflows/test_workflow_determinism_lint.py (no clock, randomness,
# environment or file read in the workflow modules' source).
# In the sandbox every payload of every activation and completion costs the
# SDK several trips through it (compiling and running a snippet to ask the
# workflow's serialization context): about a sixth of the workers' CPU per
# governed action (docs/performance.md, "Where the time goes").
@workflow.defn(name="GovernedExecution", sandboxed=False)
class GovernedExecution:
    """Runs one governed action as verify → authorize → execute → prove."""

    def __init__(self) -> None:
        self._call = GovernedCall()

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> dict[str, object]:
        """Where the execution is and what it has established so far."""
        return self._call.status()

    @workflow.query(name=DECISION_QUERY)
    def decision(self) -> DecisionResult | None:
        """The policy decision, once made (approvers sign over it)."""
        return self._call.decision

    @workflow.update(name=APPROVE_UPDATE)
    def approve(self, approval: str) -> ApprovalAck:
        """Deliver one signed approval (a DSSE envelope, JSON)."""
        return self._call.approve(approval)

    @approve.validator
    def _validate_approval(self, approval: str) -> None:
        self._call.validate_approval(approval)

    @workflow.run
    async def run(self, req: GovernedRequest) -> GovernedResult:
        """Run ``req``; its execute step's activity id is ``execute:<action>``."""
        return await self._call.run(req, execute_activity_id(req.action))
