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

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from ecp._wire import (
        ACTIVITY_ATTEST,
        ACTIVITY_AUTHORIZE_SCOPE,
        APPROVE_UPDATE,
        DECISION_QUERY,
        EXECUTE_ACTIVITY_ID_PREFIX,
        INTERRUPTED_TYPE,
        SCOPE_ACTIVITY_ID_PREFIX,
        SCOPE_HEADER,
        STATUS_QUERY,
    )
    from ecp.activities._contracts import AttestResult, ScopeInput, ScopeResult
    from ecp.workflows._call import GovernedCall, from_gate
    from ecp.workflows._grant_header import attach_grant
    from ecp.workflows._interceptor import configured_queues, started_input_digest
    from ecp.workflows._models import GovernedRequest, GovernedResult, TaskQueues

__all__ = [
    "INITIATOR_MEMO",
    "GovernedCallDenied",
    "GovernedCallFailed",
    "ScopeDenied",
    "execute_governed",
    "scope",
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
    try:
        return conv.from_payloads([payload], [ret_type])[0]
    except (TypeError, ValueError, RuntimeError):
        # A return type the converter cannot decode into (``object``, say):
        # the JSON value, as workflow.execute_activity without result_type.
        return value


@dataclasses.dataclass
class _ActiveScope:
    grant: ScopeResult
    actions: frozenset[str]
    executor_queue: str
    uses: int = 0


class ScopeDenied(ApplicationError):
    """The authority refused the scope (who asks, its bounds); nothing ran."""


class _Calls:
    """The governed calls of one workflow run.

    Kept on the workflow instance, not in this module: ECP's modules are
    passed through the sandbox, so module state would be shared by every run
    on the worker (and replay would diverge).
    """

    def __init__(self) -> None:
        self.count = 0
        self.current: GovernedCall | None = None
        self.scope: _ActiveScope | None = None

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
    artifacts: Sequence[Mapping[str, object]] = (),
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
        artifacts: The artifacts the call will use (as in
            ``GovernedRequest.artifacts``). A call naming artifacts gets its
            own grant even inside a scope: a scope's artifacts are the ones
            given to ``scope(...)``, for the calls that name none.

    Raises:
        GovernedCallDenied: the call was denied (the denial is proven).
        GovernedCallFailed: the activity ran and failed (proven too).
    """
    name, ret_type = _definition(fn)
    calls = _Calls.of_this_run()
    # A scope binds the artifacts it was given, not the call's: a call that
    # names its own is decided (and they are bound into a grant) per call.
    if calls.scope is not None and name in calls.scope.actions and not artifacts:
        return await _scoped_call(calls.scope, name, ret_type, args)
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
        artifacts=[dict(a) for a in artifacts],
    )
    # One request per call: its own execute activity id (the single-use store
    # binds one grant to each (workflow, action, activity id)).
    calls.count += 1
    exec_id = f"{EXECUTE_ACTIVITY_ID_PREFIX}{name}:{calls.count}"
    call = GovernedCall()
    calls.current = call
    result = await call.run(req, exec_id, session_digest=started_input_digest())
    if result.outcome == "completed":
        return _typed(result.result, ret_type)
    if result.outcome in ("denied", "interrupted"):
        # Interrupted: the body started, and the gate stopped it because its
        # grant stopped holding (the reason code says which): refused.
        raise GovernedCallDenied(result, call.ending_code)
    raise GovernedCallFailed(result)


def _who(initiator: str | None, initiator_proof: str | None) -> tuple[str, str]:
    memo = workflow.memo_value(INITIATOR_MEMO, default=None)
    memo = memo if isinstance(memo, dict) else {}
    who = initiator if initiator is not None else str(memo.get("initiator", ""))
    proof = initiator_proof if initiator_proof is not None else str(memo.get("proof", ""))
    return who, proof


@contextlib.asynccontextmanager
async def scope(
    actions: Sequence[Callable[..., object] | str],
    *,
    max_uses: int,
    constraints: Mapping[str, Mapping[str, Mapping[str, object]]] | None = None,
    purpose: str = "",
    lifetime: timedelta = timedelta(minutes=30),
    initiator: str | None = None,
    initiator_proof: str | None = None,
    authority_queue: str | None = None,
    executor_queue: str | None = None,
    artifacts: Sequence[Mapping[str, object]] = (),
) -> AsyncIterator[ScopeResult]:
    """Authorize a bounded set of governed calls once; calls inside go straight to the gate.

    ``async with scope([payout], max_uses=50, constraints={"payout": {"amount":
    {"max": 1000}}}):`` then ``execute_governed(payout, ...)`` up to 50 times.
    Each call is still checked at the gate against the scope *and the policy
    itself* (a scope only narrows), counted durably and recorded as evidence.

    Args:
        actions: The governed activities (or their type names) the scope covers.
        max_uses: How many calls, at most 1000.
        constraints: action -> argument field -> ``{"max"|"min": int,
            "in": [values], "prefix": str}``.
        purpose: Why; what the policy sees for each call.
        lifetime: How long the scope is valid (at most a day).
        initiator: Who asks (default: the workflow's initiator memo).
        initiator_proof: Their proof (default: the memo's session).
        authority_queue: Default: the plugin's.
        executor_queue: Default: this workflow's task queue.
        artifacts: Artifacts every call under the scope may use (as in
            ``GovernedRequest.artifacts``): bound into the scope, and checked
            by the gate from their bytes before each call.

    Raises:
        ScopeDenied: the authority refused to sign the scope.
    """
    names = frozenset(_definition(a)[0] for a in actions)
    who, proof = _who(initiator, initiator_proof)
    executor = executor_queue or workflow.info().task_queue
    authority = authority_queue or (configured_queues() or TaskQueues()).authority
    att: AttestResult = await workflow.execute_activity(
        ACTIVITY_ATTEST,
        task_queue=executor,
        start_to_close_timeout=timedelta(seconds=30),
        result_type=AttestResult,
        summary="scope: attest the executor",
    )
    try:
        granted: ScopeResult = await workflow.execute_activity(
            ACTIVITY_AUTHORIZE_SCOPE,
            ScopeInput(
                actions=sorted(names),
                max_uses=max_uses,
                constraints={
                    a: {f: dict(c) for f, c in fs.items()} for a, fs in (constraints or {}).items()
                },
                lifetime_seconds=lifetime.total_seconds(),
                initiator=who,
                purpose=purpose,
                attestation=att.attestation,
                initiator_proof=proof,
                workflow_input_digest=started_input_digest(),
                artifacts=[dict(a) for a in artifacts],
            ),
            task_queue=authority,
            start_to_close_timeout=timedelta(seconds=30),
            result_type=ScopeResult,
            summary=f"scope: authorize up to {max_uses} calls of {', '.join(sorted(names))}",
        )
    except ActivityError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError) and (cause.type or "").startswith("ecp."):
            raise ScopeDenied(
                f"scope refused: {cause.message}", type=cause.type, non_retryable=True
            ) from None
        raise
    calls = _Calls.of_this_run()
    calls.scope = _ActiveScope(granted, names, executor)
    try:
        yield granted
    finally:
        calls.scope = None


async def _scoped_call(
    active: _ActiveScope, name: str, ret_type: Any, args: tuple[object, ...]
) -> Any:
    active.uses += 1
    activity_id = f"{SCOPE_ACTIVITY_ID_PREFIX}{active.grant.scope_id}:{active.uses}"
    try:
        with attach_grant(active.grant.envelope.encode("utf-8"), SCOPE_HEADER):
            raw = await workflow.execute_activity(
                name,
                args=list(args),
                task_queue=active.executor_queue,
                activity_id=activity_id,
                start_to_close_timeout=timedelta(minutes=5),
                # Outages before the body are retried; the gate lets the body
                # run at most once per call and refuses a second attempt.
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(milliseconds=500),
                    maximum_interval=timedelta(seconds=30),
                ),
                summary=f"scoped {name} #{active.uses} under scope {active.grant.scope_id}",
            )
        return _typed(raw, ret_type)
    except ActivityError as err:
        cause = err.cause
        kind = cause.type if isinstance(cause, ApplicationError) else ""
        reason = str(cause.message if isinstance(cause, ApplicationError) else cause or err)
        result = GovernedResult(
            decision="allow",
            decision_id="",
            policy_digest="",
            reasons=[reason],
            outcome=(
                "interrupted"
                if kind == INTERRUPTED_TYPE and from_gate(cause)
                else "denied"
                if kind and kind.startswith("ecp.")
                else "failed"
            ),
            reason=reason,
            grant_id=active.grant.scope_id,
            result=None,
            ledger_index=-1,
            receipt="",
        )
        if result.outcome in ("denied", "interrupted"):
            raise GovernedCallDenied(result, kind or "") from None
        raise GovernedCallFailed(result) from None
