"""Turning what the gate saw into signed evidence in the ledger."""

from __future__ import annotations

from dataclasses import dataclass

from activities.gate import GateRecord
from authority.canonical import digest_bytes
from authority.keys import Signer
from lineage.evidence import (
    ActivityIdentity,
    EvidencePredicate,
    Outcome,
    OutcomeStatus,
    build_statement,
    format_time,
    sign_evidence,
)
from lineage.ledger import AppendResult, Ledger

__all__ = ["NO_ARGUMENTS", "LedgerEvidenceSink", "evidence_for"]

#: Subject digest used when the arguments could not even be digested.
NO_ARGUMENTS = digest_bytes(b"")


def evidence_for(rec: GateRecord, signer: Signer) -> bytes:
    """The signed evidence envelope (JSON) for one gate record.

    Raises:
        MalformedEvidenceError: the record cannot form valid evidence.
    """
    grant = rec.grant.grant if rec.grant is not None else None
    status = OutcomeStatus(rec.outcome)
    predicate = EvidencePredicate.model_validate(
        {
            "decisionId": grant.decision_id if grant else None,
            "policyDigest": grant.policy_digest if grant else None,
            "grantId": grant.grant_id if grant else None,
            "initiator": grant.initiator if grant else None,
            "activity": ActivityIdentity.model_validate(
                {
                    "namespace": rec.namespace,
                    "workflowId": rec.workflow_id,
                    "runId": rec.run_id,
                    "activityId": rec.activity_id,
                    "attempt": rec.attempt,
                    "activityType": rec.activity_type,
                }
            ),
            "outcome": Outcome.model_validate(
                {"status": status}
                if status is OutcomeStatus.COMPLETED
                else {
                    "status": status,
                    "reasonCode": rec.reason_code.lower(),
                    "reason": rec.reason.splitlines()[0][:500] if rec.reason else rec.reason_code,
                }
            ),
            "startedAt": format_time(rec.started_at),
            "finishedAt": format_time(rec.finished_at),
        }
    )
    statement = build_statement(
        predicate,
        arguments=rec.args_digest or NO_ARGUMENTS,
        result=rec.result_digest,
        grant=digest_bytes(rec.grant.envelope.payload) if rec.grant is not None else None,
    )
    return sign_evidence(statement, signer).to_json()


@dataclass
class LedgerEvidenceSink:
    """Signs gate records with the worker key and appends them to the ledger."""

    ledger: Ledger
    signer: Signer

    def record(self, record: GateRecord) -> None:
        """Append the evidence for ``record`` (idempotent).

        Raises:
            LedgerUnavailableError: the database cannot be reached (retryable).
            MalformedEvidenceError: the record cannot form valid evidence.
        """
        self.append(record)

    def append(self, record: GateRecord) -> AppendResult:
        """Like :meth:`record`, returning where the entry landed."""
        return self.ledger.append(evidence_for(record, self.signer))
