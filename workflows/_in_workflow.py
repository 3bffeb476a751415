"""Governed calls from inside any workflow: ``await execute_governed(payout, Payout(...))``.

The four steps run in the *calling* workflow's own history (no child
workflow), with the same summaries, details, search attributes and event
group as ``GovernedExecution``. The calling workflow answers ``ecp.status``
and ``ecp.decision`` queries and takes ``ecp.approve`` updates for the call
in progress (registered here, dynamically, so an ordinary workflow needs no
code of its own for approvals).

Who asks: the initiator's proof travels with the workflow start, in the memo
key :data:`INITIATOR_MEMO` (``{"initiator": ..., "proof": ...}``, see
:func:`ecp.workflows.initiator_memo`): a *session* signed by the initiator's
key for this workflow: its namespace, id, type and input. Every governed call
inside inherits it; nobody can use it for another workflow type or input.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from ecp._wire import (
        APPROVE_UPDATE,
        DECISION_QUERY,
        EXECUTE_ACTIVITY_ID_PREFIX,
        STATUS_QUERY,
    )
    from ecp.workflows._call import GovernedCall
    from ecp.workflows._interceptor import configured_queues, started_input_digest
    from ecp.workflows._models import GovernedRequest, GovernedResult, TaskQueues

__all__ = [
    "INITIATOR_MEMO",
    "GovernedCallDenied",
    "GovernedCallFailed",
    "execute_governed",
]

#: Memo key of the initiator's proof for in-workflow governed calls.
INITIATOR_MEMO = "ecp-initiator"


class GovernedCallDenied(ApplicationError):
    """A governed call was denied (policy, approvals, authentication, the gate).

    Non-retryable; uncaught, it fails the calling workflow with type
    ``ecp.<reason code>``. Attributes: ``reason_code``, ``reasons``,
    ``receipt`` (the denial's proof) and ``result`` (the whole
    :class:`GovernedResult`).
    """

    def __init__(self, result: GovernedResult, reason_code: str) -> None:
        super().__init__(
            f"governed call denied: {result.reason or '; '.join(result.reasons)}",
            type=reason_code or "ecp.denied",
            non_retryable=True,
        )
        self.result = result
        self.reason_code = reason_code
        self.reasons = list(result.reasons)
        self.receipt = result.receipt


class GovernedCallFailed(ApplicationError):
    """The governed activity ran under its grant and failed (the failure is proven)."""

    def __init__(self, result: GovernedResult) -> None:
        super().__init__(f"governed call failed: {result.reason}", type="ecp.failed")
        self.result = result
        self.receipt = result.receipt


def _definition(fn: Callable[..., object] | str) -> tuple[str, Any]:
    if isinstance(fn, str):
        return fn, None
    defn = activity._Definition.from_callable(fn)
    if defn is None:
        raise TypeError(f"{fn!r} is not an @activity.defn activity")
    return defn.name or "", defn.ret_type


def _json_args(args: tuple[object, ...]) -> list[object]:
    # The same JSON values the executor's prepare step will decode into the
    # activity's parameter types (and the initiator's digest covers).
    payloads = workflow.payload_converter().to_payloads(list(args))
    return [json.loads(p.data) for p in payloads]


def _typed(value: object, ret_type: Any) -> Any:
    if ret_type is None:
        return value
    conv = workflow.payload_converter()
    (payload,) = conv.to_payloads([value])
    return conv.from_payloads([payload], [ret_type])[0]


class _Calls:
    """The governed calls of one workflow run.

    Kept on the workflow instance, not in this module: ECP's modules are
    passed through the sandbox, so module state would be shared by every run
    on the worker (and replay would diverge).
    """

    def __init__(self) -> None:
        self.count = 0
        self.current: GovernedCall | None = None

    @classmethod
    def of_this_run(cls) -> _Calls:
        inst = workflow.instance()
        calls = getattr(inst, "_ecp_governed_calls", None)
        if not isinstance(calls, _Calls):
            calls = cls()
            setattr(inst, "_ecp_governed_calls", calls)  # noqa: B010 - on the user's instance
            calls._register()
        return calls

    def _register(self) -> None:
        def status() -> dict[str, object]:
            return self.current.status() if self.current else {"step": "none"}

        def decision() -> object:
            return self.current.decision if self.current else None

        def approve(approval: str) -> object:
            assert self.current is not None  # the validator guarantees it
            return self.current.approve(approval)

        def validate(approval: str) -> None:
            if self.current is None:
                raise ApplicationError(
                    "no governed call is waiting for approvals", non_retryable=True
                )
            self.current.validate_approval(approval)

        workflow.set_query_handler(STATUS_QUERY, status)
        workflow.set_query_handler(DECISION_QUERY, decision)
        workflow.set_update_handler(APPROVE_UPDATE, approve, validator=validate)


async def execute_governed(
    fn: Callable[..., object] | str,
    *args: object,
    purpose: str = "",
    initiator: str | None = None,
    initiator_proof: str | None = None,
    authority_queue: str | None = None,
    executor_queue: str | None = None,
    approval_timeout: timedelta = timedelta(hours=1),
) -> Any:
    """Run one governed call from inside the calling workflow; its typed result.

    Args:
        fn: The governed activity (or its type name).
        *args: Its arguments, as for ``workflow.execute_activity``.
        purpose: Why, recorded with the decision.
        initiator: Who asks; default: the workflow's :data:`INITIATOR_MEMO`.
        initiator_proof: Their proof; default: the memo's.
        authority_queue: The authority's task queue; default: the one the
            worker's ``EcpPlugin`` is configured with.
        executor_queue: Where the governed activity runs; default: this
            workflow's task queue (its worker has the gate).
        approval_timeout: How long to wait for approvals before denying.

    Raises:
        GovernedCallDenied: the call was denied (the denial is proven).
        GovernedCallFailed: the activity ran and failed (proven too).
    """
    name, ret_type = _definition(fn)
    memo = workflow.memo_value(INITIATOR_MEMO, default=None)
    memo = memo if isinstance(memo, dict) else {}
    who = initiator if initiator is not None else str(memo.get("initiator", ""))
    proof = initiator_proof if initiator_proof is not None else str(memo.get("proof", ""))
    req = GovernedRequest(
        action=name,
        args=_json_args(args),
        initiator=who,
        purpose=purpose,
        approval_timeout_seconds=approval_timeout.total_seconds(),
        queues=TaskQueues(
            authority_queue or (configured_queues() or TaskQueues()).authority,
            executor_queue or workflow.info().task_queue,
        ),
        initiator_proof=proof,
    )
    # One request per call: its own execute activity id (the single-use store
    # binds one grant to each (workflow, action, activity id)).
    calls = _Calls.of_this_run()
    calls.count += 1
    exec_id = f"{EXECUTE_ACTIVITY_ID_PREFIX}{name}:{calls.count}"
    call = GovernedCall()
    calls.current = call
    result = await call.run(req, exec_id, session_digest=started_input_digest())
    if result.outcome == "completed":
        return _typed(result.result, ret_type)
    if result.outcome == "denied":
        raise GovernedCallDenied(result, call.ending_code)
    raise GovernedCallFailed(result)
