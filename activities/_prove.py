"""The prove step: evidence in the ledger, checkpointed, and a receipt.

Anyone can verify the receipt offline.

Runs on the authority queue, beside the log key. It believes only Temporal
and signatures: which execution it is proving comes from ``activity.info()``
(the workflow that scheduled this step), never from its input. An outcome
(completed, failed) is certified only from the gate's own record, signed by
the executor for that execution: the authority side never writes one, so
nobody who can schedule this step can make the ledger say a body ran. What it
may write is a denial that no gate saw (policy, approval deadline, a request
refused before any decision), signed by the recorder key, whose role can sign
nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from ecp._failure import to_application_error
from ecp._wire import EXECUTE_ACTIVITY_ID_PREFIX, failure_type
from ecp.activities._contracts import ACTIVITY_PROVE, ProveInput, ProveResult
from ecp.activities._evidence import predicate_for
from ecp.activities._evidence_sink import NO_ARGUMENTS
from ecp.authority._calldigest import digest_values
from ecp.authority._canonical import Digest
from ecp.authority._clock import Clock
from ecp.authority._keys import Signer
from ecp.authority.errors import AuthorityError
from ecp.lineage.ledger._evidence import (
    OutcomeStatus,
    build_statement,
    parse_evidence,
    sign_evidence,
)
from ecp.lineage.ledger._ledger import Ledger
from ecp.lineage.ledger.errors import LineageError

__all__ = ["ProveActivities"]


#: Outcomes that mean the body started (or may have): only the gate may record them.
_BODY_RAN = frozenset(
    {
        OutcomeStatus.COMPLETED.value,
        OutcomeStatus.FAILED.value,
        OutcomeStatus.INTERRUPTED.value,
        OutcomeStatus.UNKNOWN.value,
    }
)


@dataclass(frozen=True, slots=True)
class _Execution:
    namespace: str
    workflow_id: str
    run_id: str
    activity_id: str


@dataclass
class ProveActivities:
    """Holds the log key and the recorder key of the authority side."""

    ledger: Ledger
    log_signer: Signer
    recorder: Signer
    clock: Clock

    def activities(self) -> list[Callable[..., object]]:
        """The activity callables to register on the authority queue."""
        return [self.prove]

    def _denial_for(
        self, who: _Execution, inp: ProveInput, args_digest: Digest, at: datetime
    ) -> bytes:
        predicate = predicate_for(
            namespace=who.namespace,
            workflow_id=who.workflow_id,
            run_id=who.run_id,
            activity_id=who.activity_id,
            attempt=1,
            activity_type=inp.action,
            status=OutcomeStatus.DENIED,
            reason_code=inp.reason_code,
            reason=inp.reason,
            # Empty when the request was refused before any decision.
            decision_id=inp.decision_id,
            policy_digest=inp.policy_digest,
            grant_id=inp.grant_id,
            initiator=inp.initiator,
            # As the decision in this workflow's history says (the recorder
            # key vouches for the denial, not for who asked).
            initiator_auth=inp.authentication or None,
            # Denials recorded here happen at the decision: one instant.
            started_at=at,
            finished_at=at,
        )
        statement = build_statement(predicate, arguments=args_digest)
        return sign_evidence(statement, self.recorder).to_json()

    def _prove(
        self, who: _Execution, inp: ProveInput, args_digest: Digest, at: datetime
    ) -> ProveResult:
        index = self.ledger.find_activity(
            who.namespace, who.workflow_id, who.run_id, who.activity_id
        )
        recorded = self._outcome_of(index)
        if inp.outcome == OutcomeStatus.DENIED.value:
            if recorded in _BODY_RAN:
                # The gate recorded that the body ran: the recorder must not
                # put a denial beside (and newer than) that record.
                raise ApplicationError(
                    f"the gate recorded {recorded!r} for {who.activity_id} of {who.workflow_id}; "
                    "the authority does not record a denial of what ran",
                    type=failure_type("outcome_unrecorded"),
                    non_retryable=True,
                )
            if recorded != OutcomeStatus.DENIED.value:
                # No gate saw this call (or it ran before: then the gate's
                # record stays, and this denial is recorded beside it).
                index = self.ledger.append(self._denial_for(who, inp, args_digest, at)).index
        elif index is None or recorded != inp.outcome:
            raise ApplicationError(
                f"no gate record shows {inp.outcome!r} for {who.activity_id} of "
                f"{who.workflow_id}; the authority does not record outcomes",
                type=failure_type("outcome_unrecorded"),
                non_retryable=True,
            )
        assert index is not None
        receipt = self.ledger.receipt(index, signer=self.log_signer)
        return ProveResult(
            index=index, receipt=receipt.to_json().decode(), tree_size=receipt.tree_size
        )

    def _outcome_of(self, index: int | None) -> str | None:
        if index is None:
            return None
        return parse_evidence(self.ledger.entry(index).envelope).predicate.outcome.status.value

    @activity.defn(name=ACTIVITY_PROVE)
    async def prove(self, inp: ProveInput) -> ProveResult:
        """Certify the gate's record of one governed action, or record a denial no gate saw.

        Raises:
            ApplicationError: ``ecp.outcome_unrecorded`` (no gate record shows
                the outcome the workflow reports), ``ecp.not_governed`` (the
                activity id is not an execute step's), a ledger error's type,
                or ``ecp.malformed_evidence``.
        """
        info = activity.info()
        if not inp.activity_id.startswith(EXECUTE_ACTIVITY_ID_PREFIX):
            raise ApplicationError(
                f"{inp.activity_id!r} is not the activity id of a governed execute step",
                type=failure_type("not_governed"),
                non_retryable=True,
            )
        # Which execution: as Temporal reports the caller, not as the input says.
        who = _Execution(
            info.workflow_namespace or info.namespace,
            info.workflow_id or "",
            info.workflow_run_id or "",
            inp.activity_id,
        )
        try:
            args_digest = digest_values(inp.args, activity.payload_converter())
        except AuthorityError:
            args_digest = NO_ARGUMENTS
        # The statement time must not change across retries of this activity
        # (idempotent append): use when the attempt was first scheduled.
        at = info.scheduled_time
        try:
            return await asyncio.to_thread(self._prove, who, inp, args_digest, at)
        except LineageError as exc:
            raise to_application_error(exc) from None
        except ValidationError as exc:
            # What the workflow reported cannot form evidence: retrying would
            # not change that.
            first = exc.errors()[0]
            raise ApplicationError(
                f"cannot record evidence: {'.'.join(map(str, first['loc']))}: {first['msg']}",
                type=failure_type("malformed_evidence"),
                non_retryable=True,
            ) from None
