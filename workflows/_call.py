"""One governed call: verify → authorize → execute → prove, as durable steps.

Workflow code here only orchestrates: every decision, signature and ledger
write happens in activities on the authority or executor task queues, so the
history shows each step and replay never re-does crypto or I/O. The one
exception is the approval update's validator, which checks an approver's
signature through ``authority`` (passed through the sandbox) so that a bad
approval is rejected before it ever reaches history.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from ecp._wire import (
        INTERRUPTED_TYPE,
        OUTCOME_UNKNOWN_TYPE,
        failure_code,
        failure_type,
    )
    from ecp.activities._contracts import (
        ACTIVITY_AUTHORIZE,
        ACTIVITY_EVALUATE,
        ACTIVITY_PREPARE,
        ACTIVITY_PROVE,
        GATE_MARK,
        AuthorizeInput,
        DecisionResult,
        EvaluateInput,
        GrantResult,
        PrepareInput,
        PrepareResult,
        ProveInput,
        ProveResult,
    )
    from ecp.authority._approval import execution_ref
    from ecp.authority.errors import GrantAttemptsExhaustedError
    from ecp.workflows._approval_check import ApprovalRejected, approver_of, check_approval
    from ecp.workflows._grant_header import attach_grant
    from ecp.workflows._models import ApprovalAck, GovernedRequest, GovernedResult
    from ecp.workflows._search_attributes import (
        SA_ACTION,
        SA_DECISION,
        SA_GRANT_ID,
        SA_INITIATOR,
        SA_OUTCOME,
        SA_POLICY_DIGEST,
    )

__all__ = ["EXHAUSTED_TYPE", "GovernedCall", "from_gate"]

_STEP_TIMEOUT = timedelta(seconds=30)
_GOVERNANCE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2,
    maximum_interval=timedelta(seconds=10),
)


_EXECUTE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2,
    maximum_interval=timedelta(seconds=30),
)
#: Temporal's start-to-close timeout exceeds the grant's lifetime by this much.
_TIMEOUT_MARGIN_SECONDS = 5
#: The gate's refusal once a grant's uses are spent.
EXHAUSTED_TYPE = failure_type(GrantAttemptsExhaustedError.code)


def from_gate(err: BaseException | None) -> bool:
    """Whether ``err`` is the gate's refusal (not the body's own error)."""
    details = err.details if isinstance(err, ApplicationError) else ()
    return bool(details) and details[0] == GATE_MARK


def _this_execution() -> str:
    info = workflow.info()
    return execution_ref(info.namespace, info.workflow_id, info.run_id)


@dataclass(frozen=True)
class _Ending:
    """How a run ended: what ``_prove`` records and returns.

    Attributes:
        outcome: ``completed``, ``failed``, ``denied``, ``interrupted`` or ``unknown``.
        reason_code: The ``ApplicationError.type`` (or exception class) behind
            a failure or denial; empty on success.
        reason: Why, in words; empty on success.
        result: What the action returned (``None`` unless it completed).
        args: The arguments to prove: the prepared ones, or the raw request's
            when the executor could not prepare them.
    """

    outcome: str
    reason_code: str
    reason: str
    result: object
    args: list[object]

    @classmethod
    def denied(cls, code: str, reason: str, args: list[object]) -> _Ending:
        """A denial: nothing ran, so there is no result."""
        return cls("denied", code, reason, None, args)


def _execute_failure(err: ActivityError, args: list[object]) -> _Ending:
    """Tell a gate refusal (denied) from the body's own failure (failed)."""
    cause = err.cause
    kind = cause.type or "" if isinstance(cause, ApplicationError) else ""
    if kind == EXHAUSTED_TYPE:
        # The body ran and failed as often as the grant allows.
        outcome, reason_code = "failed", kind
    elif kind == OUTCOME_UNKNOWN_TYPE and from_gate(cause):
        # Every use was taken by attempts that never ended: a body may have
        # run. The gate recorded "unknown"; never retried, never completed.
        outcome, reason_code = "unknown", kind
    elif kind == INTERRUPTED_TYPE and from_gate(cause):
        # The body ran and the gate stopped it (halt, revocation, lifetime):
        # its own record says so, the call ends refused with that reason.
        outcome, reason_code = "interrupted", kind
    elif failure_code(kind) is not None and from_gate(cause):
        outcome, reason_code = "denied", kind
    else:
        outcome = "failed"
        reason_code = type(cause).__name__ if cause else "ActivityError"
    reason = str(cause.message if isinstance(cause, ApplicationError) else cause or err)
    return _Ending(outcome, reason_code, reason, None, args)


class GovernedCall:
    """One governed call, run as verify → authorize → execute → prove in the calling workflow.

    Holds the call's state (decision, approvals, grant, receipt) and its
    steps. ``GovernedExecution`` runs one per workflow; ``execute_governed``
    runs one per call inside any workflow. The owner exposes :meth:`status`,
    :attr:`decision`, :meth:`approve` and :meth:`validate_approval` as the
    workflow's ``ecp.status`` and ``ecp.decision`` queries and ``ecp.approve``
    update.
    """

    def __init__(self) -> None:
        self._step = "verify"
        self._decision: DecisionResult | None = None
        self._approvals: list[str] = []
        self._approvers: set[str] = set()
        self._grant: GrantResult | None = None
        self._receipt: ProveResult | None = None
        self._outcome = ""
        self._why = ""
        #: The reason code the call ended with ("" on success).
        self.ending_code = ""
        self._session_digest = ""

    # --- queries and updates ------------------------------------------------

    def status(self) -> dict[str, object]:
        """Where the execution is and what it has established so far."""
        d = self._decision
        return {
            "step": self._step,
            "decision": d.effect if d else None,
            "decision_id": d.decision_id if d else None,
            "reasons": d.reasons if d else [],
            "approvals": sorted(self._approvers),
            "approvals_required": d.approvals_required if d else 0,
            "grant_id": self._grant.grant_id if self._grant else None,
            "grant_expires_at": self._grant.expires_at if self._grant else None,
            "outcome": self._outcome or None,
            "ledger_index": self._receipt.index if self._receipt else None,
        }

    @property
    def decision(self) -> DecisionResult | None:
        """The policy decision, once made (approvers sign over it)."""
        return self._decision

    def approve(self, approval: str) -> ApprovalAck:
        """Deliver one signed approval (a DSSE envelope, JSON)."""
        assert self._decision is not None  # the validator guarantees it
        # The validator verified the signature before the update was accepted;
        # validators do not run on replay, so the handler only reads the
        # approver's name (and depends on nothing a replay could see
        # differently, like the namespace a Replayer runs in).
        approver = approver_of(approval)
        self._approvals.append(approval)
        self._approvers.add(approver)
        self._refresh_details()
        return ApprovalAck(approver, len(self._approvers), self._decision.approvals_required)

    def validate_approval(self, approval: str) -> None:
        """Reject (``ApprovalRejected``) an approval this call cannot take."""
        d = self._decision
        if d is None or d.effect != "allow_after_approval" or self._step != "approve":
            raise ApprovalRejected("this execution is not waiting for approvals")
        approver = check_approval(approval, d, workflow.now(), _this_execution())
        if approver in self._approvers:
            raise ApprovalRejected(f"{approver} has already approved")

    # --- the run --------------------------------------------------------------

    async def run(
        self, req: GovernedRequest, exec_id: str, *, session_digest: str = ""
    ) -> GovernedResult:
        """Run the four steps for ``req``, the execute step under ``exec_id``.

        ``session_digest``: for a call made inside a workflow, the digest of
        that workflow's input, which a session proof must bind ("" otherwise:
        then no session proof is accepted).

        Runs them inside one event group, so the UI shows the call's steps
        together (an experimental SDK feature; harmless where unsupported).
        """
        group = workflow.create_event_group(
            f"ecp:{req.action}", label=f"governed {req.action} by {req.initiator}"
        )
        self._session_digest = session_digest
        with group.scope():
            return await self._run(req, exec_id)

    async def _run(self, req: GovernedRequest, exec_id: str) -> GovernedResult:
        verified = await self._verify(req)
        if isinstance(verified, _Ending):
            return await self._prove(req, exec_id, verified)
        prepared, decision = verified
        refused = await self._await_approvals(req, decision, prepared.args)
        if refused is not None:
            return await self._prove(req, exec_id, refused)
        grant = await self._authorize(req, exec_id, prepared, decision)
        if isinstance(grant, _Ending):
            return await self._prove(req, exec_id, grant)
        ending = await self._execute(req, exec_id, prepared.args, grant)
        return await self._prove(req, exec_id, ending)

    # --- the steps ------------------------------------------------------------

    async def _verify(self, req: GovernedRequest) -> tuple[PrepareResult, DecisionResult] | _Ending:
        """Attest the executor, normalise the call, then decide on exactly what would run.

        Returns the denial instead when the executor cannot prepare the call
        or the policy denies it.
        """
        workflow.upsert_search_attributes(
            [SA_ACTION.value_set(req.action), SA_INITIATOR.value_set(req.initiator)]
        )
        self._refresh_details(req)
        try:
            prepared: PrepareResult = await workflow.execute_activity(
                ACTIVITY_PREPARE,
                PrepareInput(req.action, req.args),
                task_queue=req.queues.executor,
                start_to_close_timeout=_STEP_TIMEOUT,
                retry_policy=_GOVERNANCE_RETRY,
                result_type=PrepareResult,
                summary=f"verify: attest the executor and check the {req.action} arguments",
            )
        except ActivityError as err:
            cause = err.cause
            if not isinstance(cause, ApplicationError):
                raise
            return self._refuse_request(req, cause.type or failure_type("malformed"), cause.message)
        try:
            decision: DecisionResult = await workflow.execute_activity(
                ACTIVITY_EVALUATE,
                EvaluateInput(
                    req.action,
                    prepared.args,
                    req.initiator,
                    req.purpose,
                    prepared.attestation,
                    initiator_proof=req.initiator_proof,
                    request_args=req.args,
                    param_names=prepared.param_names,
                    workflow_input_digest=self._session_digest,
                    artifacts=req.artifacts,
                ),
                task_queue=req.queues.authority,
                start_to_close_timeout=_STEP_TIMEOUT,
                retry_policy=_GOVERNANCE_RETRY,
                result_type=DecisionResult,
                summary=f"verify: policy decision for {req.action}",
            )
        except ActivityError as err:
            # The authority could not establish who asked (or refused the
            # request outright): a denial, proven like any other.
            cause = err.cause
            if not isinstance(cause, ApplicationError) or failure_code(cause.type) is None:
                raise
            return self._refuse_request(req, cause.type or "", cause.message)
        self._decision = decision
        workflow.upsert_search_attributes(
            [
                SA_DECISION.value_set(decision.effect),
                SA_POLICY_DIGEST.value_set(decision.policy_digest),
            ]
        )
        self._refresh_details(req)
        if decision.effect == "deny":
            return _Ending.denied("policy_denied", "; ".join(decision.reasons), prepared.args)
        return prepared, decision

    async def _await_approvals(
        self, req: GovernedRequest, decision: DecisionResult, args: list[object]
    ) -> _Ending | None:
        """Wait for the approvals the decision asks for, if it asks for any.

        Returns the denial instead when the deadline passes first.
        """
        if decision.effect != "allow_after_approval":
            return None
        self._step = "approve"
        self._refresh_details(req)
        try:
            await workflow.wait_condition(
                lambda: len(self._approvers) >= decision.approvals_required,
                timeout=timedelta(seconds=req.approval_timeout_seconds),
                timeout_summary="approval deadline",
            )
        except TimeoutError:
            return _Ending.denied(
                "approval_deadline",
                f"approval deadline passed with {len(self._approvers)} of "
                f"{decision.approvals_required} approvals",
                args,
            )
        return None

    async def _authorize(
        self,
        req: GovernedRequest,
        exec_id: str,
        prepared: PrepareResult,
        decision: DecisionResult,
    ) -> GrantResult | _Ending:
        """Have the authority sign a grant bound to exactly this call.

        Returns the denial instead when the authority refuses to sign (an
        approval expired or was revoked meanwhile, the policy changed under
        the decision, ...): a denial like any other, and proven like one.
        """
        self._step = "authorize"
        try:
            grant: GrantResult = await workflow.execute_activity(
                ACTIVITY_AUTHORIZE,
                AuthorizeInput(
                    decision_json=decision.decision_json,
                    approvals=list(self._approvals),
                    action=req.action,
                    args=prepared.args,
                    initiator=req.initiator,
                    activity_id=exec_id,
                    purpose=req.purpose,
                    attestation=prepared.attestation,
                    initiator_proof=req.initiator_proof,
                    request_args=req.args,
                    param_names=prepared.param_names,
                    workflow_input_digest=self._session_digest,
                    artifacts=req.artifacts,
                ),
                task_queue=req.queues.authority,
                start_to_close_timeout=_STEP_TIMEOUT,
                retry_policy=_GOVERNANCE_RETRY,
                result_type=GrantResult,
                summary="authorize: sign a grant bound to the call",
            )
        except ActivityError as err:
            cause = err.cause
            if not isinstance(cause, ApplicationError) or failure_code(cause.type) is None:
                raise
            return _Ending.denied(cause.type or "", cause.message, prepared.args)
        self._grant = grant
        workflow.upsert_search_attributes([SA_GRANT_ID.value_set(grant.grant_id)])
        return grant

    async def _execute(
        self, req: GovernedRequest, exec_id: str, args: list[object], grant: GrantResult
    ) -> _Ending:
        """Run the action under the grant; how it ended, for ``_prove`` to record."""
        self._step = "execute"
        self._refresh_details(req)
        try:
            with attach_grant(grant.envelope.encode("utf-8")):
                result = await workflow.execute_activity(
                    req.action,
                    args=args,
                    task_queue=req.queues.executor,
                    activity_id=exec_id,
                    # The policy's bound, signed into the grant: a submitter
                    # cannot shorten it to get two attempts running at once.
                    # A little beyond it: at the grant's lifetime the gate
                    # itself interrupts the body and records why; Temporal's
                    # timeout stays the net for a worker that died.
                    start_to_close_timeout=timedelta(
                        seconds=grant.execute_timeout_seconds + _TIMEOUT_MARGIN_SECONDS
                    ),
                    # Long-running actions heartbeat; the gate re-checks the
                    # grant at each heartbeat and interrupts a body silent for
                    # longer than the policy allows (Temporal's net: twice that).
                    heartbeat_timeout=(
                        timedelta(seconds=2 * grant.heartbeat_seconds)
                        if grant.heartbeat_seconds
                        else None
                    ),
                    # Unlimited at the Temporal level on purpose: the gate
                    # lets the body run at most grant.max_attempts times and
                    # refuses the rest for good, while attempts refused for an
                    # outage (before any body ran) just wait and retry.
                    retry_policy=_EXECUTE_RETRY,
                    summary=f"execute: {req.action} under grant {grant.grant_id}",
                )
        except ActivityError as err:
            return _execute_failure(err, args)
        return _Ending("completed", "", "", result, args)

    # --- helpers --------------------------------------------------------------

    def _refuse_request(self, req: GovernedRequest, code: str, reason: str) -> _Ending:
        """Deny a request the executor cannot even prepare (unknown action, bad args).

        There is no policy decision to prove against, so record an empty one.
        """
        self._decision = DecisionResult(
            decision_json="",
            decision_id="",
            effect="deny",
            policy_digest="",
            request_digest="",
            reasons=[reason],
            determining_policies=[],
        )
        workflow.upsert_search_attributes([SA_DECISION.value_set("deny")])
        return _Ending.denied(code, reason, req.args)

    async def _prove(self, req: GovernedRequest, exec_id: str, ending: _Ending) -> GovernedResult:
        """Record how the run ended in the ledger; every path ends here."""
        d = self._decision
        assert d is not None
        self._step = "prove"
        self._outcome = ending.outcome
        self.ending_code = ending.reason_code
        # Why it did not complete (a halt, a revocation, an interruption...),
        # in the Temporal UI's current details.
        self._why = ending.reason
        workflow.upsert_search_attributes([SA_OUTCOME.value_set(ending.outcome)])
        self._refresh_details(req)
        try:
            receipt = await self._prove_step(req, exec_id, ending)
        except ActivityError as err:
            cause = err.cause
            if not (
                isinstance(cause, ApplicationError)
                and failure_code(cause.type) == "outcome_unrecorded"
            ):
                raise
            # The gate's record of the outcome is missing (its ledger write
            # failed after the body ran): the outcome stands, unproven, and
            # the cross-check reports it; the authority never writes it.
            receipt = ProveResult(index=-1, receipt="", tree_size=0)
            ending = dataclasses.replace(
                ending, reason=f"{ending.reason} (unproven: {cause.message})"
            )
        self._receipt = receipt
        self._step = "done"
        self._refresh_details(req)
        return GovernedResult(
            decision=d.effect,
            decision_id=d.decision_id,
            policy_digest=d.policy_digest,
            reasons=d.reasons,
            outcome=ending.outcome,
            reason=ending.reason,
            grant_id=self._grant.grant_id if self._grant else "",
            result=ending.result,
            ledger_index=receipt.index,
            receipt=receipt.receipt,
        )

    async def _prove_step(self, req: GovernedRequest, exec_id: str, ending: _Ending) -> ProveResult:
        """Schedule ``ecp.prove`` (its input's ids are informational: it reads its own)."""
        info = workflow.info()
        d = self._decision
        assert d is not None
        result: ProveResult = await workflow.execute_activity(
            ACTIVITY_PROVE,
            ProveInput(
                namespace=info.namespace,
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                activity_id=exec_id,
                action=req.action,
                initiator=req.initiator,
                decision_id=d.decision_id,
                policy_digest=d.policy_digest,
                outcome=ending.outcome,
                reason_code=ending.reason_code,
                reason=ending.reason,
                grant_id=self._grant.grant_id if self._grant else "",
                args=ending.args,
                authentication=d.authentication,
            ),
            task_queue=req.queues.authority,
            start_to_close_timeout=_STEP_TIMEOUT,
            retry_policy=_GOVERNANCE_RETRY,
            result_type=ProveResult,
            summary=f"prove: record {ending.outcome} evidence and fetch the receipt",
        )
        return result

    def _refresh_details(self, req: GovernedRequest | None = None) -> None:
        # Markdown tables do not render in the Temporal UI: use a list.
        s = self.status()
        lines = [f"**ECP governed execution** — step: `{s['step']}`"]
        if req is not None:
            lines.append(f"- action: `{req.action}` by `{req.initiator}`")
        if self._decision is not None:
            lines.append(
                f"- decision: **{self._decision.effect}** ({'; '.join(self._decision.reasons)})"
            )
            lines.append(f"- policy: `{self._decision.policy_digest[:23]}…`")
            if self._decision.approvals_required:
                lines.append(
                    f"- approvals: {len(self._approvers)} of {self._decision.approvals_required}"
                    f" ({self._decision.approval_role})"
                    + (
                        f" — pending: `ecp approve {workflow.info().workflow_id} --key FILE`"
                        if self._step == "approve"
                        else ""
                    )
                )
        if self._grant is not None:
            lines.append(f"- grant: `{self._grant.grant_id}` expires {self._grant.expires_at}")
        if self._outcome:
            lines.append(f"- outcome: **{self._outcome}**")
        if self._why:
            lines.append(f"- why: {self._why}")
        if self._receipt is not None:
            r = self._receipt
            lines.append(f"- receipt: ledger entry #{r.index} in a tree of {r.tree_size}")
        workflow.set_current_details("\n".join(lines))
