"""The prove step: evidence in the ledger, checkpointed, and a receipt.

Anyone can verify the receipt offline.

Runs on the authority queue, beside the log key. Executions were recorded
by the gate (signed by the executor's worker key); this step finds that
entry. Denials before execution (policy, approval deadline) never reached a
gate, so this step records them, signed by the authority side's recorder key.
If the gate could not record an execution (the ledger was down after the
body ran), the entry is repaired here from what the workflow knows.
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
from ecp._wire import failure_type
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

    def _statement_for(self, inp: ProveInput, args_digest: Digest, at: datetime) -> bytes:
        predicate = predicate_for(
            namespace=inp.namespace,
            workflow_id=inp.workflow_id,
            run_id=inp.run_id,
            activity_id=inp.activity_id,
            attempt=1,
            activity_type=inp.action,
            status=OutcomeStatus(inp.outcome),
            reason_code=inp.reason_code,
            reason=inp.reason,
            # Empty when the request was refused before any decision.
            decision_id=inp.decision_id,
            policy_digest=inp.policy_digest,
            grant_id=inp.grant_id,
            initiator=inp.initiator,
            # Denials recorded here happen at the decision: one instant.
            started_at=at,
            finished_at=at,
        )
        statement = build_statement(predicate, arguments=args_digest)
        return sign_evidence(statement, self.recorder).to_json()

    def _prove(self, inp: ProveInput, args_digest: Digest, at: datetime) -> ProveResult:
        index = self.ledger.find_activity(
            inp.namespace, inp.workflow_id, inp.run_id, inp.activity_id
        )
        if index is None or not self._agrees(index, inp):
            # Nothing recorded, or the newest record tells another story (an
            # earlier attempt's failure while the last one's record was lost):
            # record what the workflow observed, so the receipt proves it.
            index = self.ledger.append(self._statement_for(inp, args_digest, at)).index
        receipt = self.ledger.receipt(index, signer=self.log_signer)
        return ProveResult(
            index=index, receipt=receipt.to_json().decode(), tree_size=receipt.tree_size
        )

    def _agrees(self, index: int, inp: ProveInput) -> bool:
        pred = parse_evidence(self.ledger.entry(index).envelope).predicate
        return pred.outcome.status.value == inp.outcome and (pred.grant_id or "") == (
            inp.grant_id or ""
        )

    @activity.defn(name=ACTIVITY_PROVE)
    async def prove(self, inp: ProveInput) -> ProveResult:
        """Record (if needed) and certify the evidence of one governed action."""
        try:
            args_digest = digest_values(inp.args, activity.payload_converter())
        except AuthorityError:
            args_digest = NO_ARGUMENTS
        # The statement time must not change across retries of this activity
        # (idempotent append): use when the attempt was first scheduled.
        at = activity.info().scheduled_time
        try:
            return await asyncio.to_thread(self._prove, inp, args_digest, at)
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
